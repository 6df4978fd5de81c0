package policytest

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/avonzt/avon/plugins/policy-abac/abac"
)

func load(t *testing.T) (*File, abac.Source) {
	t.Helper()
	data, err := os.ReadFile("testdata/corp_test.json")
	if err != nil {
		t.Fatal(err)
	}
	f, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	text, err := os.ReadFile("testdata/corp.cedar")
	if err != nil {
		t.Fatal(err)
	}
	return f, abac.Source{ID: "corp", Policies: string(text)}
}

func TestRunSourcePasses(t *testing.T) {
	f, src := load(t)
	rep, diags, err := f.RunSource(src)
	if err != nil {
		t.Fatalf("%v %+v", err, diags)
	}
	if rep.Failed != 0 || rep.Passed != len(f.Cases) || rep.Passed != 9 {
		t.Fatalf("%s", rep)
	}
}

// TestRunSourceCatchesRegressions: the same cases against a set missing
// its SSH forbid fail, naming the case and why; in report-only mode the
// verdicts are judged as if enforced.
func TestRunSourceCatchesRegressions(t *testing.T) {
	f, src := load(t)
	src.Policies = strings.Replace(src.Policies, `when { context.destination.port == 22 };`, `when { false };`, 1)
	rep, _, err := f.RunSource(src)
	if err != nil {
		t.Fatal(err)
	}
	want := "FAIL eng does not reach SSH: determining policies [], want [\"no-ssh\"]; reasons [\"no policy permits Agent::\\\"laptop\\\" to reach Network::\\\"corp\\\"\"] do not contain \"SSH is closed\"\n8 passed, 1 failed\n"
	if rep.Failed != 1 || rep.String() != want {
		t.Fatalf("%s", rep)
	}
	f, src = load(t)
	src.ReportOnly = true
	if rep, _, err := f.RunSource(src); err != nil || rep.Failed != 0 {
		t.Fatalf("report-only: %v %s", err, rep)
	}
}

func TestInvalidCaseFailsEvenWhenDenyExpected(t *testing.T) {
	f, src := load(t)
	f.Cases = f.Cases[1:2]
	f.Cases[0].Query.Context = []byte(`{"destinaton":{}}`)
	rep, _, err := f.RunSource(src)
	if err != nil || rep.Failed != 1 || !strings.Contains(rep.Results[0].Problems[0], "errors:") {
		t.Fatalf("%v %s", err, rep)
	}
}

func TestParseErrors(t *testing.T) {
	cases := []struct{ name, in, want string }{
		{"not json", `{`, "unexpected EOF"},
		{"unknown field", `{"tests":[],"x":1}`, `unknown field "x"`},
		{"no tests", `{}`, "no tests"},
		{"bad uid", `{"tests":[{"principal":"laptop","action":"reach","resource":"Network::\"n\"","expect":"allow"}]}`, `test 0: principal: "laptop" is not an entity UID`},
		{"bad expect", `{"tests":[{"name":"t","principal":"Agent::\"a\"","action":"reach","resource":"Network::\"n\"","expect":"maybe"}]}`, `t: expect "maybe"`},
		{"bad time", `{"time":"noon","tests":[]}`, "not RFC 3339"},
		{"bad context", `{"context":[1],"tests":[{"principal":"Agent::\"a\"","action":"reach","resource":"Network::\"n\"","expect":"allow"}]}`, "context: want an object"},
		{"trailing", `{"tests":[{"principal":"Agent::\"a\"","action":"reach","resource":"Network::\"n\"","expect":"allow"}]} {}`, "trailing data"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.in))
			if !errors.Is(err, ErrInvalidFile) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want %q", err, c.want)
			}
		})
	}
}

func TestParseUID(t *testing.T) {
	for in, want := range map[string][2]string{
		`Agent::"laptop"`:        {"Agent", "laptop"},
		`Ns::Agent::"a::\"b\""`:  {"Ns::Agent", `a::"b"`},
		`Action::"admin:policy"`: {"Action", "admin:policy"},
		`Group::""`:              {"Group", ""},
	} {
		r, err := ParseUID(in)
		if err != nil || r.Type != want[0] || r.ID != want[1] {
			t.Errorf("%s: %+v %v", in, r, err)
		}
	}
	for _, in := range []string{``, `Agent`, `::"x"`, `Agent::"x`, `Agent::x`} {
		if _, err := ParseUID(in); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
}
