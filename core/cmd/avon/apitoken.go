package main

import (
	"fmt"
	"io"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/avonzt/avon/core/oauth"
	"github.com/avonzt/avon/core/server"
)

const apitokenUsage = `Usage:
  avon apitoken create NAME -scope admin:read [-scope admin:write] [-ttl 2160h] [-o json]
      a scoped API token for automation; printed once on stdout, only its hash is stored
  avon apitoken list [-o json]
  avon apitoken revoke ID

API tokens call the Admin API on the core's HTTPS listener:
  curl -H "Authorization: Bearer $TOKEN" https://core:8443/v1/agents
or this CLI from anywhere:
  AVON_SERVER=https://core:8443 AVON_API_FINGERPRINT=HEX AVON_API_TOKEN=$TOKEN avon agent list
A token holds admin:read, admin:write or both; it never changes operator users
or API tokens. Every call is audited with the actor apitoken:NAME/ID.
Making and revoking tokens needs the admin socket or an operator with the
admin role. -ttl defaults to 90 days, at most 366 days.
`

func cmdAPIToken(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, apitokenUsage)
		return 2
	}
	fs, of := newFlags("apitoken "+args[0], stderr)
	var scopes multiFlag
	fs.Var(&scopes, "scope", "admin:read or admin:write (repeat, or comma-separated) (create)")
	ttl := fs.Duration("ttl", oauth.DefaultAPITokenTTL, "lifetime (create)")
	switch args[0] {
	case "create", "list", "revoke":
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, apitokenUsage)
		return 0
	default:
		fmt.Fprintf(stderr, "avon apitoken: unknown command %q\n\n%s", args[0], apitokenUsage)
		return 2
	}
	arg, ok := parseWithArg(fs, args[1:])
	if !ok || !of.valid(stderr) {
		fmt.Fprint(stderr, apitokenUsage)
		return 2
	}
	var sc []string
	for _, s := range scopes {
		for p := range strings.SplitSeq(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				sc = append(sc, p)
			}
		}
	}
	switch {
	case args[0] == "create" && arg == "":
		fmt.Fprintln(stderr, "avon apitoken create: the token's name is required")
		return 2
	case args[0] == "create" && len(sc) == 0:
		fmt.Fprintln(stderr, "avon apitoken create: at least one -scope is required (admin:read, admin:write)")
		return 2
	case args[0] == "revoke" && arg == "":
		fmt.Fprintln(stderr, "avon apitoken revoke: the token id is required")
		return 2
	case args[0] == "list" && arg != "":
		fmt.Fprintf(stderr, "avon apitoken list: unexpected argument %s\n", arg)
		return 2
	}
	c, ok := adminClient(*of.path, stderr)
	if !ok {
		return 1
	}
	switch args[0] {
	case "create":
		var out server.APITokenCreated
		if err := adminDo(c, "POST", "/v1/api-tokens", server.APITokenRequest{Name: arg, Scopes: sc, TTL: ttl.String()}, &out); err != nil {
			fmt.Fprintln(stderr, "avon apitoken create:", err)
			return 1
		}
		if of.json() {
			printJSON(stdout, out)
			return 0
		}
		fmt.Fprintln(stdout, out.Token)
		fmt.Fprintf(stderr, "API token %s (id %s), scopes %s, expires %s; shown once, only its hash is stored\n",
			out.Name, out.ID, strings.Join(out.Scopes, " "), ts(out.ExpiresAt))
		return 0
	case "list":
		var list []oauth.APITokenInfo
		if err := adminDo(c, "GET", "/v1/api-tokens", nil, &list); err != nil {
			fmt.Fprintln(stderr, "avon apitoken list:", err)
			return 1
		}
		if of.json() {
			printJSON(stdout, list)
			return 0
		}
		w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "ID\tNAME\tSCOPES\tEXPIRES\tLAST USED\tCREATED BY\tSTATE")
		now := time.Now()
		for _, t := range list {
			state := "active"
			switch {
			case t.Revoked:
				state = "revoked " + ts(t.RevokedAt) + " by " + t.RevokedBy
			case !now.Before(t.ExpiresAt):
				state = "expired"
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, t.Name, strings.Join(t.Scopes, ","), ts(t.ExpiresAt),
				ts(t.LastUsedAt), t.CreatedBy, state)
		}
		_ = w.Flush()
		return 0
	default: // revoke
		var out oauth.APITokenInfo
		if err := adminDo(c, "DELETE", "/v1/api-tokens/"+url.PathEscape(arg), nil, &out); err != nil {
			fmt.Fprintln(stderr, "avon apitoken revoke:", err)
			return 1
		}
		fmt.Fprintf(stdout, "API token %s (%s) revoked\n", out.ID, out.Name)
		return 0
	}
}
