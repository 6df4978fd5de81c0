package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
)

// cmdACME is `avon acme eab create`: an external account binding key for
// an ACME client, made by the running core's acme plugin.
func cmdACME(args []string, stdout, stderr io.Writer) int {
	if len(args) < 2 || args[0] != "eab" || args[1] != "create" {
		fmt.Fprint(stderr, "Usage: avon acme eab create [-config FILE] [-note TEXT] [-json]\n")
		return 2
	}
	fs := flag.NewFlagSet("acme eab create", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "config.hcl", "configuration file")
	note := fs.String("note", "", "who the key is for (kept with it, audited)")
	asJSON := fs.Bool("json", false, "JSON output")
	if err := fs.Parse(args[2:]); err != nil || fs.NArg() > 0 {
		return 2
	}
	c, ok := adminClient(*path, stderr)
	if !ok {
		return 1
	}
	var out struct {
		KID     string `json:"kid"`
		HMACKey string `json:"hmac_key"`
		Note    string `json:"note,omitempty"`
	}
	if err := adminDo(c, "POST", "/v1/acme/eab", map[string]string{"note": *note}, &out); err != nil {
		fmt.Fprintln(stderr, "avon acme eab create:", err)
		return 1
	}
	if *asJSON {
		_ = json.NewEncoder(stdout).Encode(out)
		return 0
	}
	fmt.Fprintf(stdout, "kid       %s\nhmac key  %s\n\nlego:    --eab --kid %s --hmac %s\ncertbot: --eab-kid %s --eab-hmac-key %s\n",
		out.KID, out.HMACKey, out.KID, out.HMACKey, out.KID, out.HMACKey)
	return 0
}
