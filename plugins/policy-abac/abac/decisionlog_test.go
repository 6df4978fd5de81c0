package abac

import (
	"strings"
	"testing"

	"github.com/avonzt/avon/sdk/policy"
)

func TestMaskContext(t *testing.T) {
	in := `{"source":{"ip":"192.0.2.1","port":1},"session_token":"tok-SECRET-1","nested":{"Password":"hunter2","list":[{"apiKey":"k-SECRET-2"}]},"posture":{"tags":{"vpn.secret":"s-SECRET-3","disk.encrypted":"true"}}}`
	out := MaskContext([]byte(in))
	if strings.Contains(out, "SECRET") || strings.Contains(out, "hunter2") {
		t.Fatalf("secret logged: %s", out)
	}
	for _, want := range []string{`"session_token":"(masked)"`, `"Password":"(masked)"`, `"apiKey":"(masked)"`, `"vpn.secret":"(masked)"`, `"disk.encrypted":"true"`, `"ip":"192.0.2.1"`} {
		if !strings.Contains(out, want) {
			t.Fatalf("%s lacks %s", out, want)
		}
	}
	if got := MaskContext([]byte(`{"password":`)); strings.Contains(got, "password") {
		t.Fatalf("unparseable context copied: %s", got)
	}
	long := `{"a":"` + strings.Repeat("é", 3000) + `"}`
	if got := MaskContext([]byte(long)); len(got) > maxLoggedContext+20 || !strings.HasSuffix(got, "...(truncated)") || !strings.Contains(got, "é") {
		t.Fatalf("truncation: %d bytes", len(got))
	}
}

func TestShouldLogAndEvent(t *testing.T) {
	allow := policy.Decision{Allow: true, DeterminingPolicies: []string{"p"}, Reasons: []string{"ok"}}
	deny := policy.Decision{DeterminingPolicies: []string{"f"}, Reasons: []string{"no"}}
	would := policy.Decision{Allow: true, ReportOnly: true, DeterminingPolicies: []string{"f"}, Reasons: []string{"no"}}
	cases := []struct {
		d       policy.Decision
		rate, u float64
		want    bool
	}{
		{allow, 0, 0, false}, {allow, 0.5, 0.49, true}, {allow, 0.5, 0.5, false}, {allow, 1, 0.999, true},
		{deny, 0, 0.999, true}, {would, 0, 0.999, true},
	}
	for i, c := range cases {
		if got := ShouldLog(c.d, c.rate, c.u); got != c.want {
			t.Errorf("case %d: %v", i, got)
		}
	}
	q := reach("laptop", 22, true)
	ev := DecisionEvent("default", 7, q, would)
	if ev.Action != DecisionAction || ev.Outcome != "success" || ev.Actor != `Agent::"laptop"` || ev.Target != `Network::"corp"` ||
		ev.Fields["would_deny"] != "true" || ev.Fields["policies"] != "f" || ev.Fields["version"] != "7" || ev.Reason != "no" {
		t.Fatalf("%+v", ev)
	}
	if ev := DecisionEvent("default", 7, q, deny); ev.Outcome != "denied" || ev.Fields["report_only"] != "" {
		t.Fatalf("%+v", ev)
	}
}
