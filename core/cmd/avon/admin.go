package main

import (
	"fmt"
	"io"
	"net/url"
	"strings"
	"text/tabwriter"

	"github.com/avonzt/avon/core/agents"
	"github.com/avonzt/avon/core/audit"
	"github.com/avonzt/avon/core/server"
)

// The operator commands over the Admin API: agents, sessions, keys,
// plugins and the audit query.

const agentUsage = `Usage:
  avon agent list [-group eng] [-disabled] [-o json] -config config.hcl
  avon agent get ID [-o json] -config ...
  avon agent disable ID [-reason "lost laptop"] -config ...   end every session of the agent, on every replica, and refuse it
  avon agent enable ID [-reason ...] -config ...
`

const sessionUsage = `Usage:
  avon session list [-agent ID] [-o json] -config config.hcl   live sessions on the core that answers
  avon session kill ID [-reason ...] -config ...                end a session on whichever replica holds it
`

const keyUsage = `Usage:
  avon key list [-kms NAME] [-o json] -config config.hcl   keys of the KMS plugins (metadata only)
  avon key rotate KMS/ID -config ...                      a new primary version, in the KMS plugin
`

func cmdAgent(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || (args[0] != "list" && args[0] != "get" && args[0] != "disable" && args[0] != "enable") {
		fmt.Fprint(stderr, agentUsage)
		return 2
	}
	fs, of := newFlags("agent "+args[0], stderr)
	group := fs.String("group", "", "only agents of this group (list)")
	disabledOnly := fs.Bool("disabled", false, "only disabled agents (list)")
	reason := fs.String("reason", "", "why (disable, enable; recorded)")
	id, ok := parseWithArg(fs, args[1:])
	if !ok || !of.valid(stderr) || (args[0] == "list") != (id == "") {
		fmt.Fprint(stderr, agentUsage)
		return 2
	}
	c, ok := adminClient(*of.path, stderr)
	if !ok {
		return 1
	}
	switch args[0] {
	case "list":
		q := url.Values{"group": {*group}}
		if *disabledOnly {
			q.Set("disabled", "true")
		}
		all, err := listAll(c, "/v1/agents", q, 0, func(p *server.AgentList) ([]agents.Agent, string) { return p.Agents, p.NextPageToken })
		if err != nil {
			fmt.Fprintln(stderr, "avon agent list:", err)
			return 1
		}
		if of.json() {
			printJSON(stdout, all)
			return 0
		}
		w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "ID\tGROUP\tSTATE\tENROLLED\tCERT SERIAL\tCERT EXPIRES")
		for _, a := range all {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", a.ID, a.Group, agentState(a), ts(a.EnrolledAt), a.CertSerial, ts(a.CertNotAfter))
		}
		_ = w.Flush()
		return 0
	case "get":
		var a agents.Agent
		if err := adminDo(c, "GET", "/v1/agents/"+url.PathEscape(id), nil, &a); err != nil {
			fmt.Fprintln(stderr, "avon agent get:", err)
			return 1
		}
		if of.json() {
			printJSON(stdout, a)
			return 0
		}
		printAgent(stdout, a)
		return 0
	}
	// disable, enable: read the record's ETag, then change it at that
	// version (a concurrent change makes this fail with 412, not be lost).
	disabled := args[0] == "disable"
	var a agents.Agent
	hdr, err := c.call("GET", "/v1/agents/"+url.PathEscape(id), nil, nil, &a)
	if err == nil {
		_, err = c.call("PATCH", "/v1/agents/"+url.PathEscape(id), map[string]string{"If-Match": hdr.Get("ETag")},
			server.AgentPatch{Disabled: &disabled, Reason: *reason}, &a)
	}
	if err != nil {
		fmt.Fprintf(stderr, "avon agent %s: %v\n", args[0], err)
		return 1
	}
	if of.json() {
		printJSON(stdout, a)
		return 0
	}
	if disabled {
		fmt.Fprintf(stdout, "agent %s disabled: its sessions end on every replica and it cannot connect or renew\n", id)
	} else {
		fmt.Fprintf(stdout, "agent %s enabled\n", id)
	}
	return 0
}

func agentState(a agents.Agent) string {
	if a.Disabled {
		return "disabled"
	}
	return "enabled"
}

func printAgent(w io.Writer, a agents.Agent) {
	fmt.Fprintf(w, "id            %s\ngroup         %s\nstate         %s\nenrolled      %s\ncert serial   %s\ncert expires  %s\n",
		a.ID, a.Group, agentState(a), ts(a.EnrolledAt), a.CertSerial, ts(a.CertNotAfter))
	if !a.RenewedAt.IsZero() {
		fmt.Fprintf(w, "renewed       %s\n", ts(a.RenewedAt))
	}
	if a.ChangedBy != "" {
		fmt.Fprintf(w, "changed       %s by %s (%s)\n", ts(a.ChangedAt), a.ChangedBy, dash(a.ChangeReason))
	}
}

func cmdSession(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || (args[0] != "list" && args[0] != "kill") {
		fmt.Fprint(stderr, sessionUsage)
		return 2
	}
	fs, of := newFlags("session "+args[0], stderr)
	agent := fs.String("agent", "", "only sessions of this agent (list)")
	reason := fs.String("reason", "", "why (kill; recorded and shown to the agent)")
	id, ok := parseWithArg(fs, args[1:])
	if !ok || !of.valid(stderr) || (args[0] == "list") != (id == "") {
		fmt.Fprint(stderr, sessionUsage)
		return 2
	}
	c, ok := adminClient(*of.path, stderr)
	if !ok {
		return 1
	}
	if args[0] == "kill" {
		var out server.KillResult
		if err := adminDo(c, "POST", "/v1/sessions/"+url.PathEscape(id)+"/kill", server.KillRequest{Reason: *reason}, &out); err != nil {
			fmt.Fprintln(stderr, "avon session kill:", err)
			return 1
		}
		if of.json() {
			printJSON(stdout, out)
			return 0
		}
		where := "it was not live on this replica"
		if out.EndedHere {
			where = "ended on this replica"
		}
		fmt.Fprintf(stdout, "session %s killed (%s; every replica told: %v)\n", out.Session, where, out.Published)
		return 0
	}
	all, err := listAll(c, "/v1/sessions", url.Values{"agent": {*agent}}, 0,
		func(p *server.SessionList) ([]server.SessionInfo, string) { return p.Sessions, p.NextPageToken })
	if err != nil {
		fmt.Fprintln(stderr, "avon session list:", err)
		return 1
	}
	if of.json() {
		printJSON(stdout, all)
		return 0
	}
	w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tAGENT\tADDRESS\tENDPOINT\tSINCE\tRX BYTES\tTX BYTES\tREPLICA")
	for _, s := range all {
		addr := s.Address
		if s.Address6 != "" { // dual stack: both tunnel addresses
			addr = strings.Trim(addr+","+s.Address6, ",")
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n", s.ID, s.AgentID, addr, s.Endpoint, ts(s.Since), s.RxBytes, s.TxBytes, s.Replica)
	}
	_ = w.Flush()
	return 0
}

func cmdKey(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || (args[0] != "list" && args[0] != "rotate") {
		fmt.Fprint(stderr, keyUsage)
		return 2
	}
	fs, of := newFlags("key "+args[0], stderr)
	only := fs.String("kms", "", "only this KMS plugin (list)")
	arg, ok := parseWithArg(fs, args[1:])
	if !ok || !of.valid(stderr) || (args[0] == "list") != (arg == "") {
		fmt.Fprint(stderr, keyUsage)
		return 2
	}
	c, ok := adminClient(*of.path, stderr)
	if !ok {
		return 1
	}
	if args[0] == "rotate" {
		plugin, id, found := strings.Cut(arg, "/")
		if !found || plugin == "" || id == "" {
			fmt.Fprintln(stderr, "avon key rotate: want KMS/ID, e.g. soft/avon-gateway")
			return 2
		}
		var k server.KeyInfo
		if err := adminDo(c, "POST", "/v1/keys/"+url.PathEscape(plugin)+"/"+url.PathEscape(id)+"/rotate", nil, &k); err != nil {
			fmt.Fprintln(stderr, "avon key rotate:", err)
			return 1
		}
		if of.json() {
			printJSON(stdout, k)
			return 0
		}
		fmt.Fprintf(stdout, "key %s/%s rotated: version %d is primary (%s); older versions still verify and decrypt\n", k.KMS, k.ID, k.PrimaryVersion, k.Algorithm)
		return 0
	}
	all, err := listAll(c, "/v1/keys", url.Values{"kms": {*only}}, 0,
		func(p *server.KeyList) ([]server.KeyInfo, string) { return p.Keys, p.NextPageToken })
	if err != nil {
		fmt.Fprintln(stderr, "avon key list:", err)
		return 1
	}
	if of.json() {
		printJSON(stdout, all)
		return 0
	}
	w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "KMS\tID\tALGORITHM\tPRIMARY\tVERSIONS\tCREATED")
	for _, k := range all {
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%d\t%s\n", k.KMS, k.ID, k.Algorithm, k.PrimaryVersion, len(k.Versions), ts(k.CreatedAt))
	}
	_ = w.Flush()
	return 0
}

func cmdPlugin(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "list" {
		fmt.Fprint(stderr, "Usage: avon plugin list [-o json] -config config.hcl\n")
		return 2
	}
	fs, of := newFlags("plugin list", stderr)
	if err := fs.Parse(args[1:]); err != nil || fs.NArg() > 0 || !of.valid(stderr) {
		return 2
	}
	c, ok := adminClient(*of.path, stderr)
	if !ok {
		return 1
	}
	var out server.PluginList
	if err := adminDo(c, "GET", "/v1/plugins", nil, &out); err != nil {
		fmt.Fprintln(stderr, "avon plugin list:", err)
		return 1
	}
	if of.json() {
		printJSON(stdout, out.Plugins)
		return 0
	}
	w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "KIND\tNAME\tVERSION\tSTATE\tHEALTHY\tRESTARTS\tPID\tMESSAGE")
	for _, p := range out.Plugins {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%v\t%d\t%d\t%s\n", p.Kind, p.Name, dash(p.Version), p.State, p.Healthy, p.Restarts, p.PID, dash(p.Message))
	}
	_ = w.Flush()
	return 0
}

// cmdAuditQuery is `avon audit query`.
func cmdAuditQuery(args []string, stdout, stderr io.Writer) int {
	fs, of := newFlags("audit query", stderr)
	since := fs.String("since", "", "records at or after (RFC 3339)")
	until := fs.String("until", "", "records before (RFC 3339)")
	action := fs.String("action", "", "action, or a prefix ending in * (cert.*)")
	actor := fs.String("actor", "", "actor, or a prefix ending in *")
	target := fs.String("target", "", "target, or a prefix ending in *")
	outcome := fs.String("outcome", "", "success, failure, denied or requested")
	limit := fs.Int("n", 100, "at most this many records (0: all)")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 || !of.valid(stderr) || *limit < 0 {
		return 2
	}
	c, ok := adminClient(*of.path, stderr)
	if !ok {
		return 1
	}
	q := url.Values{"since": {*since}, "until": {*until}, "action": {*action}, "actor": {*actor}, "target": {*target}, "outcome": {*outcome}}
	all, err := listAll(c, "/v1/audit/records", q, *limit,
		func(p *server.AuditList) ([]audit.Record, string) { return p.Records, p.NextPageToken })
	if err != nil {
		fmt.Fprintln(stderr, "avon audit query:", err)
		return 1
	}
	if of.json() {
		printJSON(stdout, all)
		return 0
	}
	w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "SEQ\tTIME\tACTOR\tACTION\tTARGET\tOUTCOME\tREASON")
	for _, r := range all {
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Seq, ts(r.Time), dash(r.Actor), r.Action, dash(r.Target), dash(r.Outcome), r.Reason)
	}
	_ = w.Flush()
	return 0
}

// cmdAuditVerifyRemote is `avon audit verify -via-core`: the running core
// walks its own log.
func cmdAuditVerifyRemote(path string, asJSON bool, stdout, stderr io.Writer) int {
	c, ok := adminClient(path, stderr)
	if !ok {
		return 1
	}
	var out server.AuditVerification
	if err := adminDo(c, "GET", "/v1/audit/verify", nil, &out); err != nil {
		fmt.Fprintln(stderr, "avon audit verify:", err)
		return 1
	}
	if asJSON {
		printJSON(stdout, out)
	} else {
		fmt.Fprintf(stdout, "%d records, head %d, %d/%d checkpoints verified (last %d), %d records after it\n", out.Records, out.Head,
			out.CheckpointsVerified, out.Checkpoints, out.LastCheckpoint, out.Unsigned)
		for _, p := range out.Problems {
			fmt.Fprintln(stdout, "PROBLEM", p.String())
		}
	}
	if !out.OK {
		return 1
	}
	return 0
}
