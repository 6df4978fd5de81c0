package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"

	"github.com/avonzt/avon/core/adminapi"
	"github.com/avonzt/avon/core/server"
	"github.com/avonzt/avon/sdk/policy"
)

const policyUsage = `Usage (the core's policy plugin, over the admin socket):
  avon policy get [-set default] [-o json] -config config.hcl       the policy set as the engine keeps it
  avon policy apply FILE [-set default] [-schema FILE] [-report-only] -config ...
                                                                     validate and replace the set (its version read first)
  avon policy validate FILE [-set default] [-schema FILE] -config ...
  avon policy dry-run -principal Agent::a1 -resource Service::10.1.2.3:443 [-action reach] [-context '{"posture":"ok"}'] -config ...
                                                                     the decision and why, enforcing nothing
`

func cmdPolicy(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || (args[0] != "get" && args[0] != "apply" && args[0] != "validate" && args[0] != "dry-run") {
		fmt.Fprint(stderr, policyUsage)
		return 2
	}
	fs, of := newFlags("policy "+args[0], stderr)
	set := fs.String("set", "default", "policy set")
	schemaFile := fs.String("schema", "", "schema file (apply, validate)")
	reportOnly := fs.Bool("report-only", false, "log what would be denied, allow it (apply)")
	principal := fs.String("principal", "", "TYPE::ID (dry-run)")
	action := fs.String("action", "reach", "action id (dry-run)")
	resource := fs.String("resource", "", "TYPE::ID (dry-run)")
	ctxJSON := fs.String("context", "", "a JSON object (dry-run)")
	file, ok := parseWithArg(fs, args[1:])
	needFile := args[0] == "apply" || args[0] == "validate"
	if !ok || !of.valid(stderr) || needFile != (file != "") {
		fmt.Fprint(stderr, policyUsage)
		return 2
	}
	c, ok := adminClient(*of.path, stderr)
	if !ok {
		return 1
	}
	base := "/v1/policies/" + url.PathEscape(*set)
	switch args[0] {
	case "get":
		var ps server.PolicySet
		if err := adminDo(c, "GET", base, nil, &ps); err != nil {
			fmt.Fprintln(stderr, "avon policy get:", err)
			return 1
		}
		if of.json() {
			printJSON(stdout, ps)
			return 0
		}
		fmt.Fprintf(stderr, "policy set %s, version %d, report-only %v\n", ps.ID, ps.Version, ps.ReportOnly)
		fmt.Fprint(stdout, ps.Policies)
		return 0
	case "dry-run":
		p, perr := entityRef(*principal)
		r, rerr := entityRef(*resource)
		if perr != nil || rerr != nil {
			fmt.Fprintln(stderr, "avon policy dry-run: -principal and -resource are TYPE::ID, e.g. Agent::a1 and Service::10.1.2.3:443")
			return 2
		}
		req := server.DryRunRequest{Principal: p, Action: server.EntityRef{Type: "Action", ID: *action}, Resource: r}
		if *ctxJSON != "" {
			req.Context = json.RawMessage(*ctxJSON)
		}
		var d server.DryRunResult
		if err := adminDo(c, "POST", base+"/dry-run", req, &d); err != nil {
			fmt.Fprintln(stderr, "avon policy dry-run:", err)
			return 1
		}
		if of.json() {
			printJSON(stdout, d)
			return 0
		}
		verdict := "DENY"
		if d.Allow {
			verdict = "ALLOW"
		}
		if d.ReportOnly {
			verdict = "ALLOW (report-only: would be denied)"
		}
		fmt.Fprintf(stdout, "%s  %s %s %s (policy version %d)\n", verdict, *principal, *action, *resource, d.Version)
		for _, id := range d.DeterminingPolicies {
			fmt.Fprintln(stdout, "  determined by", id)
		}
		for _, why := range d.Reasons {
			fmt.Fprintln(stdout, "  reason:", why)
		}
		for _, e := range d.Errors {
			fmt.Fprintln(stdout, "  error:", e)
		}
		return 0
	}
	text, err := os.ReadFile(file)
	if err != nil {
		fmt.Fprintf(stderr, "avon policy %s: %v\n", args[0], err)
		return 1
	}
	body := server.PolicySetBody{Policies: string(text), ReportOnly: *reportOnly}
	if *schemaFile != "" {
		sc, err := os.ReadFile(*schemaFile)
		if err != nil {
			fmt.Fprintf(stderr, "avon policy %s: %v\n", args[0], err)
			return 1
		}
		body.Schema = string(sc)
	}
	if args[0] == "validate" {
		var v server.PolicyValidation
		if err := adminDo(c, "POST", base+"/validate", body, &v); err != nil {
			fmt.Fprintln(stderr, "avon policy validate:", err)
			return 1
		}
		printDiagnostics(stderr, file, v.Diagnostics)
		if !v.Valid {
			return 1
		}
		fmt.Fprintf(stdout, "%s: valid\n", file)
		return 0
	}
	// apply: the set's version first, so a change made meanwhile by
	// someone else is refused rather than overwritten.
	ifMatch := "*"
	hdr, err := c.call("GET", base, nil, nil, nil)
	var pe *problemError
	switch {
	case err == nil:
		ifMatch = hdr.Get("ETag")
	case errors.As(err, &pe) && pe.Status == 404:
	default:
		fmt.Fprintln(stderr, "avon policy apply:", err)
		return 1
	}
	var ps server.PolicySet
	_, err = c.call("PUT", base, map[string]string{"If-Match": ifMatch}, body, &ps)
	if errors.As(err, &pe) && pe.Type == adminapi.TypeInvalidPolicy.URI() {
		b, _ := json.Marshal(pe.Diagnostics)
		var diags []policy.Diagnostic
		_ = json.Unmarshal(b, &diags)
		printDiagnostics(stderr, file, diags)
		fmt.Fprintf(stderr, "avon policy apply: %s is not valid; nothing was applied\n", file)
		return 1
	}
	if err != nil {
		fmt.Fprintln(stderr, "avon policy apply:", err)
		return 1
	}
	fmt.Fprintf(stdout, "policy set %s is at version %d\n", *set, ps.Version)
	return 0
}

func printDiagnostics(w io.Writer, file string, ds []policy.Diagnostic) {
	for _, d := range ds {
		fmt.Fprintf(w, "%s:%d:%d: %s: %s", file, d.Line, d.Column, d.Severity, d.Message)
		if d.PolicyID != "" {
			fmt.Fprintf(w, " (policy %s)", d.PolicyID)
		}
		fmt.Fprintln(w)
	}
}

func entityRef(s string) (server.EntityRef, error) {
	t, id, ok := strings.Cut(s, "::")
	if !ok || t == "" || id == "" {
		return server.EntityRef{}, fmt.Errorf("%q is not TYPE::ID", s)
	}
	return server.EntityRef{Type: t, ID: id}, nil
}
