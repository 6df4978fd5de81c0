package main

import (
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/avonzt/avon/core/server"
)

const caUsage = `Usage:
  avon ca info [-json] -config config.hcl             issuers: name, generation, algorithm, KMS, subject, expiry
  avon ca init [-kms NAME] -config ...                  create the hierarchy of a CA with init = "manual"
  avon ca rotate [-issuer issuing] [-kms NAME] [-algorithm ML-DSA-65] -config ...
                                                        a new generation of an issuing CA, its key in that kms plugin
  avon cert list [-status good|revoked] [-profile agent] [-issuer NAME] [-limit N] [-json] -config ...
                                                        certificates by serial (all pages, or the first N)
  avon cert show [-json] [-pem] SERIAL -config ...      one certificate and its status
  avon cert revoke [-reason keyCompromise] SERIAL -config ...
  avon crl [-issuer NAME] [-o FILE] -config ...         the current CRL (DER)

They talk to the running core over data_dir/admin.sock (0600): run them as the
core's user, where the core runs. Revocations, rotations and init are audited
with your uid.
`

func cmdCA(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, caUsage)
		return 2
	}
	switch args[0] {
	case "info":
	case "init":
		return cmdCAInit(args[1:], stdout, stderr)
	case "rotate":
		return cmdCARotate(args[1:], stdout, stderr)
	default:
		fmt.Fprint(stderr, caUsage)
		return 2
	}
	fs := flag.NewFlagSet("ca info", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "config.hcl", "configuration file")
	asJSON := fs.Bool("json", false, "JSON output")
	if err := fs.Parse(args[1:]); err != nil || fs.NArg() > 0 {
		return 2
	}
	c, ok := adminClient(*path, stderr)
	if !ok {
		return 1
	}
	var issuers []server.IssuerInfo
	if err := adminDo(c, "GET", "/v1/ca/issuers", nil, &issuers); err != nil {
		fmt.Fprintln(stderr, "avon ca info:", err)
		return 1
	}
	if *asJSON {
		_ = json.NewEncoder(stdout).Encode(issuers)
		return 0
	}
	w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tGEN\tSTATE\tALGORITHM\tKMS\tSUBJECT\tNOT AFTER\tDEFAULT")
	for _, is := range issuers {
		fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%v\n", is.Name, is.Generation, issuerState(is), is.Algorithm, kmsName(is.KMS),
			is.Subject, is.NotAfter.Format(time.RFC3339), is.Default)
	}
	_ = w.Flush()
	return 0
}

func issuerState(is server.IssuerInfo) string {
	if is.Active {
		return "active"
	}
	return "retired" // signs CRLs and OCSP for what it issued
}

func kmsName(n string) string {
	if n == "" {
		return "(default)"
	}
	return n
}

func cmdCAInit(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ca init", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "config.hcl", "configuration file")
	kmsFlag := fs.String("kms", "", "the wired kms plugin to hold the CA keys (default: the CA's default kms)")
	asJSON := fs.Bool("json", false, "JSON output")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		return 2
	}
	c, ok := adminClient(*path, stderr)
	if !ok {
		return 1
	}
	var out server.InitResult
	if err := adminDo(c, "POST", "/v1/ca/init", map[string]string{"kms": *kmsFlag}, &out); err != nil {
		fmt.Fprintln(stderr, "avon ca init:", err)
		return 1
	}
	if *asJSON {
		_ = json.NewEncoder(stdout).Encode(out)
		return 0
	}
	fmt.Fprintf(stdout, "CA initialized (keys in kms %s)\nroot subject  %s\nroot SHA-256  %s\n", kmsName(*kmsFlag), out.RootSubject, out.RootSHA256)
	fmt.Fprintf(stdout, "gateway certificate: %s\n", out.GatewayCertificate)
	return 0
}

func cmdCARotate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ca rotate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "config.hcl", "configuration file")
	issuer := fs.String("issuer", "issuing", "the issuing CA to rotate")
	kmsFlag := fs.String("kms", "", "the wired kms plugin to hold the new key (default: the CA's default kms)")
	alg := fs.String("algorithm", "", "key algorithm of the new generation (default: the current one's)")
	asJSON := fs.Bool("json", false, "JSON output")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		return 2
	}
	c, ok := adminClient(*path, stderr)
	if !ok {
		return 1
	}
	var out server.RotateResult
	if err := adminDo(c, "POST", "/v1/ca/rotate", server.RotateRequest{Issuer: *issuer, KMS: *kmsFlag, Algorithm: *alg}, &out); err != nil {
		fmt.Fprintln(stderr, "avon ca rotate:", err)
		return 1
	}
	if *asJSON {
		_ = json.NewEncoder(stdout).Encode(out)
		return 0
	}
	fmt.Fprintf(stdout, "issuer %s rotated: generation %d is active\nkms        %s\nalgorithm  %s\nsubject    %s\nserial     %s\nnot after  %s\n",
		out.Issuer, out.Generation, kmsName(out.KMS), out.Algorithm, out.Subject, out.Serial, out.NotAfter.Format(time.RFC3339))
	fmt.Fprintf(stdout, "generation %d keeps signing CRLs and OCSP for what it issued; distribute the new chain (avon ca info -json)\n", out.Generation-1)
	return 0
}

func cmdCertList(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("cert list", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "config.hcl", "configuration file")
	status := fs.String("status", "", "good or revoked (default: any)")
	profile := fs.String("profile", "", "agent, gateway, server, client (default: any)")
	issuer := fs.String("issuer", "", "an issuer (all its generations) or one generation, e.g. issuing.1 (default: any)")
	limit := fs.Int("limit", 0, "at most this many certificates (default: all)")
	pageSize := fs.Int("page-size", 1000, "certificates per request to the core (1 to 1000)")
	asJSON := fs.Bool("json", false, "JSON output (one array)")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 || *limit < 0 || *pageSize < 1 || *pageSize > 1000 {
		return 2
	}
	c, ok := adminClient(*path, stderr)
	if !ok {
		return 1
	}
	var all []server.CertListEntry
	after := ""
	for range maxPages {
		page := *pageSize
		if *limit > 0 {
			page = min(page, *limit-len(all))
		}
		q := url.Values{"status": {*status}, "profile": {*profile}, "issuer": {*issuer}, "page_token": {after}, "page_size": {fmt.Sprint(page)}}
		var out server.CertList
		if err := adminDo(c, "GET", "/v1/certs?"+q.Encode(), nil, &out); err != nil {
			fmt.Fprintln(stderr, "avon cert list:", err)
			return 1
		}
		all = append(all, out.Certificates...)
		if out.NextPageToken == "" || (*limit > 0 && len(all) >= *limit) {
			break
		}
		after = out.NextPageToken
	}
	if *asJSON {
		if all == nil {
			all = []server.CertListEntry{}
		}
		_ = json.NewEncoder(stdout).Encode(all)
		return 0
	}
	w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "SERIAL\tSTATUS\tPROFILE\tSUBJECT\tNAMES\tISSUER\tNOT AFTER")
	for _, e := range all {
		st := e.Status
		if st == "revoked" {
			st += " " + e.RevokedAt.Format(time.DateOnly)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Serial, st, e.Profile, e.Subject, strings.Join(e.SANs, ","), e.Issuer,
			e.NotAfter.Format(time.RFC3339))
	}
	_ = w.Flush()
	fmt.Fprintf(stderr, "%d certificates\n", len(all))
	return 0
}

func cmdCert(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "list" {
		return cmdCertList(args[1:], stdout, stderr)
	}
	if len(args) == 0 || (args[0] != "show" && args[0] != "revoke") {
		fmt.Fprint(stderr, caUsage)
		return 2
	}
	fs := flag.NewFlagSet("cert "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "config.hcl", "configuration file")
	asJSON := fs.Bool("json", false, "JSON output")
	asPEM := fs.Bool("pem", false, "print the certificate as PEM")
	reason := fs.String("reason", "unspecified", "RFC 5280 reason: keyCompromise, superseded, cessationOfOperation, affiliationChanged, ...")
	// The serial may come before or after the flags.
	rest := args[1:]
	var serial string
	if len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
		serial, rest = rest[0], rest[1:]
	}
	if err := fs.Parse(rest); err != nil {
		return 2
	}
	if serial == "" && fs.NArg() == 1 {
		serial = fs.Arg(0)
	} else if fs.NArg() > 0 || serial == "" {
		fmt.Fprint(stderr, caUsage)
		return 2
	}
	c, ok := adminClient(*path, stderr)
	if !ok {
		return 1
	}
	if args[0] == "revoke" {
		var out map[string]any
		if err := adminDo(c, "POST", "/v1/certs/"+url.PathEscape(serial)+"/revoke", map[string]string{"reason": *reason}, &out); err != nil {
			fmt.Fprintln(stderr, "avon cert revoke:", err)
			return 1
		}
		fmt.Fprintf(stdout, "certificate %s revoked (%s)\n", serial, *reason)
		return 0
	}
	var info server.CertInfo
	if err := adminDo(c, "GET", "/v1/certs/"+url.PathEscape(serial), nil, &info); err != nil {
		fmt.Fprintln(stderr, "avon cert show:", err)
		return 1
	}
	switch {
	case *asJSON:
		_ = json.NewEncoder(stdout).Encode(info)
	case *asPEM:
		_ = pem.Encode(stdout, &pem.Block{Type: "CERTIFICATE", Bytes: info.DER})
	default:
		fmt.Fprintf(stdout, "serial     %s\nstatus     %s\nsubject    %s\nissuer     %s\nnames      %s\nalgorithm  %s\nvalid      %s to %s\n",
			info.Serial, info.Status, info.Subject, info.Issuer, strings.Join(info.Names, ", "), info.Algorithm,
			info.NotBefore.Format(time.RFC3339), info.NotAfter.Format(time.RFC3339))
		if info.Status == "revoked" {
			fmt.Fprintf(stdout, "revoked    %s (reason %d)\n", info.RevokedAt.Format(time.RFC3339), info.Reason)
		}
	}
	return 0
}

func cmdCRL(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("crl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "config.hcl", "configuration file")
	issuer := fs.String("issuer", "", "issuer name (default: the default issuer)")
	out := fs.String("o", "-", "output file (DER); - for stdout")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		return 2
	}
	c, ok := adminClient(*path, stderr)
	if !ok {
		return 1
	}
	var der []byte
	if err := adminDo(c, "GET", "/v1/crl?issuer="+url.QueryEscape(*issuer), nil, &der); err != nil {
		fmt.Fprintln(stderr, "avon crl:", err)
		return 1
	}
	if *out == "-" {
		_, _ = stdout.Write(der)
		return 0
	}
	if err := os.WriteFile(*out, der, 0o644); err != nil {
		fmt.Fprintln(stderr, "avon crl:", err)
		return 1
	}
	return 0
}
