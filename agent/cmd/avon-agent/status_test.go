package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/avonzt/avon/agent/tunnel"
)

// TestPrintStatusDenials: the last denials show with their reason and the
// policies that decided.
func TestPrintStatusDenials(t *testing.T) {
	var b bytes.Buffer
	printStatus(&b, &tunnel.Status{State: tunnel.StateUp, Denials: []tunnel.Denial{
		{Time: time.Unix(0, 0), Proto: 6, Src: "100.96.0.5:40000", Dst: "10.20.0.10:22", Reason: "ssh is for admins", PolicyIDs: []string{"no-ssh"}},
		{Time: time.Unix(0, 0), Proto: 6, Src: "100.96.0.5:40001", Dst: "10.20.0.10:443", Reason: "the policy engine could not decide: denied (fail closed)"},
	}})
	out := b.String()
	for _, want := range []string{
		"proto 6 100.96.0.5:40000 -> 10.20.0.10:22: ssh is for admins (policy no-ssh)\n",
		"-> 10.20.0.10:443: the policy engine could not decide: denied (fail closed)\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
}

// TestPrintStatusDelegatedKey: the gateway's delegated key expiry shows
// when the last handshake used one, and nothing when the pinned key signed.
func TestPrintStatusDelegatedKey(t *testing.T) {
	exp := time.Date(2026, 12, 2, 20, 0, 0, 0, time.UTC)
	var b bytes.Buffer
	printStatus(&b, &tunnel.Status{State: tunnel.StateUp, DelegatedKeyExpires: exp})
	if !strings.Contains(b.String(), "gateway key:    delegated, credential expires ") {
		t.Errorf("status lacks the credential expiry:\n%s", b.String())
	}
	b.Reset()
	printStatus(&b, &tunnel.Status{State: tunnel.StateUp})
	if strings.Contains(b.String(), "delegated") {
		t.Errorf("status shows a delegated key without one:\n%s", b.String())
	}
	// The field survives the status file.
	raw, err := json.Marshal(tunnel.Status{State: tunnel.StateUp, Since: exp, Updated: exp, DelegatedKeyExpires: exp})
	if err != nil {
		t.Fatal(err)
	}
	st, err := tunnel.ParseStatus(raw)
	if err != nil || !st.DelegatedKeyExpires.Equal(exp) {
		t.Fatalf("parsed %v, %v", st, err)
	}
}
