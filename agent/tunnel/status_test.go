package tunnel_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/avonzt/avon/agent/tunnel"
)

func TestParseStatus(t *testing.T) {
	good := tunnel.Status{State: tunnel.StateUp, Gateway: "192.0.2.1:4600", Interface: "avon0", Addresses: []string{"100.64.0.5/10"},
		RxBytes: 10, TxBytes: 20, Updated: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	gb, _ := json.Marshal(good)
	tests := []struct {
		name string
		in   string
		ok   bool
	}{
		{"written by an engine", string(gb), true},
		{"minimal", `{"state":"stopped"}`, true},
		{"unknown field from a newer engine", `{"state":"up","future":1}`, true},
		{"empty", ``, false},
		{"not json", `state: up`, false},
		{"unknown state", `{"state":"exploded"}`, false},
		{"no state", `{"gateway":"x"}`, false},
		{"trailing data", `{"state":"up"} {"state":"up"}`, false},
		{"negative pid", `{"state":"up","pid":-1}`, false},
		{"too many denials", `{"state":"up","denials":[` + strings.Repeat(`{},`, tunnel.MaxDenials) + `{}]}`, false},
		{"long text", `{"state":"up","last_error":"` + strings.Repeat("x", 2000) + `"}`, false},
		{"bad utf8", "{\"state\":\"up\",\"gateway\":\"\xff\"}", false},
		{"too large", `{"state":"up","last_error":"` + strings.Repeat("x", tunnel.MaxStatusSize) + `"}`, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := tunnel.ParseStatus([]byte(tc.in))
			if tc.ok != (err == nil) {
				t.Fatalf("ParseStatus: %v, want ok=%v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, tunnel.ErrStatus) {
				t.Errorf("error %v does not wrap ErrStatus", err)
			}
			if tc.name == "written by an engine" && (s.Gateway != good.Gateway || s.TxBytes != 20 || !s.Updated.Equal(good.Updated)) {
				t.Errorf("round trip: %+v", s)
			}
		})
	}
}

func FuzzParseStatus(f *testing.F) {
	gb, _ := json.Marshal(tunnel.Status{State: tunnel.StateBackoff, Gateway: "[2001:db8::1]:4600", LastError: "clock skew",
		Denials: []tunnel.Denial{{Proto: 6, Src: "a", Dst: "b", Reason: "r", PolicyIDs: []string{"p"}}}})
	for _, s := range []string{string(gb), `{"state":"up"}`, `{"state":"up","denials":[{}]}`, `[]`, `null`, `{"state":"up","pid":-1}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := tunnel.ParseStatus(b)
		if err != nil {
			return
		}
		// What it accepts must survive a round trip.
		out, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tunnel.ParseStatus(out); err != nil {
			t.Fatalf("re-parse of %s: %v", out, err)
		}
	})
}

func TestPrettyName(t *testing.T) {
	tests := []struct{ in, want string }{
		{"NAME=Debian\nPRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\n", "Debian GNU/Linux 13 (trixie)"},
		{"PRETTY_NAME='Alpine Linux v3.20'", "Alpine Linux v3.20"},
		{"PRETTY_NAME=Plain", "Plain"},
		{"  PRETTY_NAME=\"tab\\tand\\nnewline\"", "taband\x6eewline"},
		{"NAME=x", ""},
		{"", ""},
		{"PRETTY_NAME=\"\x01ctl\"", "ctl"},
	}
	for _, tc := range tests {
		if got := tunnel.PrettyName([]byte(tc.in)); got != tc.want {
			t.Errorf("PrettyName(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func FuzzPrettyName(f *testing.F) {
	f.Add([]byte("PRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\n"))
	f.Add([]byte("PRETTY_NAME='x'"))
	f.Add([]byte("PRETTY_NAME=\"\\xff\""))
	f.Fuzz(func(t *testing.T, b []byte) {
		s := tunnel.PrettyName(b)
		for _, r := range s {
			if r < 0x20 || r == 0x7f {
				t.Fatalf("control character in %q", s)
			}
		}
	})
}
