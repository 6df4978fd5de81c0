package main

import (
	"fmt"
	"io"
	"net/url"
	"text/tabwriter"
	"time"

	"github.com/avonzt/avon/core/enroll"
	"github.com/avonzt/avon/core/server"
)

const tokenUsage = `Usage: avon token <command> [flags]

Enrollment tokens: one use each, shown once, only their hash is stored.
The commands talk to the running core over its admin socket; every change
is audited with your uid.

Commands:
  create   avon token create -group eng [-ttl 1h] [-o json] -config config.hcl
  list     avon token list [-used] [-o json] -config config.hcl
  revoke   avon token revoke ID -config config.hcl
`

func cmdToken(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, tokenUsage)
		return 2
	}
	fs, of := newFlags("token "+args[0], stderr)
	group := fs.String("group", "", "group the enrolled agent joins (create)")
	ttl := fs.Duration("ttl", time.Hour, "how long the token can be used (create)")
	id := fs.String("id", "", "token id (revoke; or as the argument)")
	used := fs.Bool("used", false, "list used tokens too")
	switch args[0] {
	case "create", "list", "revoke":
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, tokenUsage)
		return 0
	default:
		fmt.Fprintf(stderr, "avon token: unknown command %q\n\n%s", args[0], tokenUsage)
		return 2
	}
	arg, ok := parseWithArg(fs, args[1:])
	if !ok || !of.valid(stderr) {
		return 2
	}
	if *id == "" {
		*id = arg
	}
	if args[0] == "create" && *group == "" {
		fmt.Fprintln(stderr, "avon token create: -group is required")
		return 2
	}
	if args[0] == "revoke" && *id == "" {
		fmt.Fprintln(stderr, "avon token revoke: the token id is required")
		return 2
	}
	c, ok := adminClient(*of.path, stderr)
	if !ok {
		return 1
	}
	switch args[0] {
	case "create":
		var out server.TokenCreated
		if err := adminDo(c, "POST", "/v1/tokens", server.TokenCreateRequest{Group: *group, TTL: ttl.String()}, &out); err != nil {
			fmt.Fprintln(stderr, "avon token create:", err)
			return 1
		}
		if of.json() {
			printJSON(stdout, out)
			return 0
		}
		fmt.Fprintln(stdout, out.Token)
		fmt.Fprintf(stderr, "id %s, group %s, expires %s; shown once, only its hash is stored\n", out.ID, out.Group, ts(out.ExpiresAt))
		return 0
	case "list":
		all, err := listAll(c, "/v1/tokens", url.Values{"used": {fmt.Sprint(*used)}}, 0,
			func(p *server.TokenList) ([]enroll.Token, string) { return p.Tokens, p.NextPageToken })
		if err != nil {
			fmt.Fprintln(stderr, "avon token list:", err)
			return 1
		}
		if of.json() {
			printJSON(stdout, all)
			return 0
		}
		w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "ID\tGROUP\tEXPIRES\tCREATED BY\tUSED BY")
		for _, t := range all {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", t.ID, t.Group, ts(t.ExpiresAt), t.CreatedBy, dash(t.UsedBy))
		}
		_ = w.Flush()
		return 0
	default: // revoke: read the record's ETag, then delete at it
		var rec enroll.Token
		hdr, err := c.call("GET", "/v1/tokens/"+url.PathEscape(*id), nil, nil, &rec)
		if err == nil {
			_, err = c.call("DELETE", "/v1/tokens/"+url.PathEscape(*id), map[string]string{"If-Match": hdr.Get("ETag")}, nil, nil)
		}
		if err != nil {
			fmt.Fprintln(stderr, "avon token revoke:", err)
			return 1
		}
		fmt.Fprintf(stdout, "token %s revoked\n", *id)
		return 0
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
