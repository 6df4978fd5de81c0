package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/avonzt/avon/agent/tunnel"
)

func cmdStatus(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var dir string
	stateFlag(fs, &dir)
	asJSON := fs.Bool("json", false, "print the status as JSON")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		return 2
	}
	b, err := os.ReadFile(filepath.Join(dir, tunnel.StatusFile))
	if err != nil {
		fmt.Fprintf(stderr, "avon-agent status: no status (%v): is avon-agent up running?\n", err)
		return 1
	}
	s, err := tunnel.ParseStatus(b)
	if err != nil {
		fmt.Fprintln(stderr, "avon-agent status:", err)
		return 1
	}
	_, alive := running(dir)
	if !alive && s.State != tunnel.StateStopped {
		s.State = tunnel.StateStopped
		s.LastError = strings.TrimSpace("avon-agent up is not running; " + s.LastError)
	}
	if *asJSON {
		out, _ := json.MarshalIndent(s, "", "  ")
		fmt.Fprintln(stdout, string(out))
		return 0
	}
	printStatus(stdout, s)
	return 0
}

func printStatus(w io.Writer, s *tunnel.Status) {
	ts := func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return fmt.Sprintf("%s (%s ago)", t.Local().Format(time.RFC3339), time.Since(t).Round(time.Second))
	}
	fmt.Fprintf(w, "state:          %s since %s\n", s.State, ts(s.Since))
	fmt.Fprintf(w, "gateway:        %s\n", s.Gateway)
	fmt.Fprintf(w, "interface:      %s\n", s.Interface)
	if len(s.Addresses) > 0 {
		fmt.Fprintf(w, "addresses:      %s\n", strings.Join(s.Addresses, ", "))
	}
	if len(s.Routes) > 0 {
		fmt.Fprintf(w, "routes:         %s\n", strings.Join(s.Routes, ", "))
	}
	fmt.Fprintf(w, "last handshake: %s\n", ts(s.LastHandshake))
	if !s.DelegatedKeyExpires.IsZero() {
		fmt.Fprintf(w, "gateway key:    delegated, credential expires %s\n", ts(s.DelegatedKeyExpires))
	}
	if !s.NextAttempt.IsZero() && s.State == tunnel.StateBackoff {
		fmt.Fprintf(w, "next attempt:   %s\n", s.NextAttempt.Local().Format(time.RFC3339))
	}
	fmt.Fprintf(w, "traffic:        %d bytes received, %d bytes sent\n", s.RxBytes, s.TxBytes)
	fmt.Fprintf(w, "handshakes:     %d, rekeys %d, pulses acknowledged %d\n", s.Handshakes, s.Rekeys, s.Pulses)
	if s.Rehandshakes > 0 {
		fmt.Fprintf(w, "re-handshakes:  %d, last %s: %s\n", s.Rehandshakes, ts(s.LastRehandshake), s.RehandshakeReason)
	}
	if s.ServerTimeOffset != "" {
		fmt.Fprintf(w, "gateway clock:  %s relative to ours\n", s.ServerTimeOffset)
	}
	if s.LastError != "" {
		fmt.Fprintf(w, "last error:     %s (%s)\n", s.LastError, ts(s.LastErrorAt))
	}
	for _, d := range s.Denials {
		policies := ""
		if len(d.PolicyIDs) > 0 {
			policies = " (policy " + strings.Join(d.PolicyIDs, ", ") + ")"
		}
		fmt.Fprintf(w, "denied:         %s proto %d %s -> %s: %s%s\n", d.Time.Local().Format(time.RFC3339), d.Proto, d.Src, d.Dst, d.Reason, policies)
	}
	fmt.Fprintf(w, "updated:        %s\n", ts(s.Updated))
}
