package main_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/avonzt/avon/plugins/policy-abac/abac"
	"github.com/avonzt/avon/plugins/policy-abac/policytest"
	"github.com/avonzt/avon/sdk/host"
	"github.com/avonzt/avon/sdk/plugin"
	"github.com/avonzt/avon/sdk/plugintest"
	"github.com/avonzt/avon/sdk/policy"
	"github.com/avonzt/avon/sdk/policy/policyrpc"
)

func TestMain(m *testing.M) { plugintest.Main(m) }

const pkg = "github.com/avonzt/avon/plugins/policy-abac"

func cfg(t testing.TB, v map[string]any) []byte {
	t.Helper()
	def := map[string]any{"policy_dir": "", "default_set": "default", "report_only": false,
		"decision_log_sample_rate": 0.0, "refresh_interval": "1s"}
	for k, x := range v {
		def[k] = x
	}
	b, err := json.Marshal(def)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// engPolicies: group eng reaches 10.20.0.10:443 and not :22.
const engPolicies = `@id("eng-web")
@reason("engineering reaches the web tier over HTTPS")
permit (principal in Group::"eng", action == Action::"reach", resource in Network::"corp")
when { context.destination.port == 443 };

@id("eng-any")
permit (principal in Group::"eng", action == Action::"reach", resource in Network::"corp")
when { context.destination.port == 22 };

@id("no-ssh")
@reason("SSH is closed to everyone")
forbid (principal, action == Action::"reach", resource)
when { context.destination.port == 22 };
`

func ref(typ, id string) policy.EntityRef { return policy.EntityRef{Type: typ, ID: id} }

var entities = []policy.Entity{
	{Ref: ref("Group", "eng"), Attributes: []byte(`{"name":"Engineering"}`)},
	{Ref: ref("Agent", "laptop"), Attributes: []byte(`{"name":"laptop","os":"linux"}`), Parents: []policy.EntityRef{ref("Group", "eng")}},
	{Ref: ref("Agent", "kiosk"), Attributes: []byte(`{"name":"kiosk","os":"linux"}`)},
	{Ref: ref("Network", "corp"), Attributes: []byte(`{"name":"corp","cidr":"10.20.0.0/16"}`)},
}

func flow(agent string, port int) policy.Query {
	ctx := fmt.Sprintf(`{"calibration_skew_ms":2,
 "posture":{"os":"linux","agent_version":"0.3.0","clock_offset_ms":0,"skew_ms":0,"tags":{"disk.encrypted":"true"}},
 "source":{"ip":"203.0.113.7","port":40000},"location":{"country":"DE","region":"","city":""},
 "destination":{"ip":"10.20.0.10","port":%d,"protocol":"tcp"}}`, port)
	return policy.Query{Principal: ref("Agent", agent), Action: ref("Action", "reach"), Resource: ref("Network", "corp"), Context: []byte(ctx)}
}

func writeDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func start(t *testing.T, h *plugintest.MemHost, c []byte) *policyrpc.Client {
	t.Helper()
	s := plugintest.Start(t, plugintest.Build(t, pkg), plugin.KindPolicy, plugintest.Options{Config: c, Host: h})
	return policyrpc.NewClient(s.Conn.Conn)
}

func evaluate(t *testing.T, e policy.Engine, set string, qs ...policy.Query) *policy.EvaluateResponse {
	t.Helper()
	r, err := e.Evaluate(context.Background(), &policy.EvaluateRequest{PolicySetID: set, Entities: entities, Queries: qs})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Decisions) != len(qs) {
		t.Fatalf("%d decisions for %d queries", len(r.Decisions), len(qs))
	}
	return r
}

// waitEvents polls the host's audit events (the decision log is written
// asynchronously) until pred holds, for at most 10 s.
func waitEvents(t *testing.T, h *plugintest.MemHost, pred func([]host.Event) bool) []host.Event {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		evs := h.Events()
		if pred(evs) {
			return evs
		}
		if time.Now().After(deadline) {
			t.Fatalf("audit events never matched: %+v", evs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func decisions(evs []host.Event) []host.Event {
	var out []host.Event
	for _, e := range evs {
		if e.Action == abac.DecisionAction {
			out = append(out, e)
		}
	}
	return out
}

// TestThroughPlugin: a real plugin process, policies from policy_dir:
// allow, default deny, forbid overriding a permit, a denial in the
// decision log, errors crossing the boundary.
func TestThroughPlugin(t *testing.T) {
	h := plugintest.NewHost()
	dir := writeDir(t, map[string]string{"default.cedar": engPolicies})
	e := start(t, h, cfg(t, map[string]any{"policy_dir": dir}))

	r := evaluate(t, e, "", flow("laptop", 443), flow("laptop", 22), flow("kiosk", 443), flow("laptop", 8443))
	if r.Version == 0 {
		t.Fatal("version 0")
	}
	want := []struct {
		allow    bool
		policies []string
		reason   string
	}{
		{true, []string{"eng-web"}, "engineering reaches the web tier over HTTPS"},
		{false, []string{"no-ssh"}, "SSH is closed to everyone"},
		{false, nil, `no policy permits Agent::"kiosk" to reach Network::"corp"`},
		{false, nil, "no policy permits"},
	}
	for i, w := range want {
		d := r.Decisions[i]
		if d.Allow != w.allow || d.ReportOnly || !slices.Equal(d.DeterminingPolicies, w.policies) || !strings.Contains(strings.Join(d.Reasons, ";"), w.reason) {
			t.Errorf("query %d: %+v", i, d)
		}
	}
	// Every denial is logged (sample rate 0: no allow is).
	evs := waitEvents(t, h, func(evs []host.Event) bool { return len(decisions(evs)) >= 3 })
	ds := decisions(evs)
	if len(ds) != 3 {
		t.Fatalf("%d decision log entries, want 3: %+v", len(ds), ds)
	}
	if ds[0].Outcome != "denied" || ds[0].Actor != `Agent::"laptop"` || ds[0].Fields["policies"] != "no-ssh" || ds[0].Reason != "SSH is closed to everyone" {
		t.Fatalf("log entry %+v", ds[0])
	}
	if !slices.ContainsFunc(evs, func(ev host.Event) bool {
		return ev.Action == "policy.set" && ev.Target == "policy_set/default" && ev.Fields["via"] == "policy_dir"
	}) {
		t.Fatalf("no policy.set event for the file: %+v", evs)
	}

	ctx := context.Background()
	if _, err := e.Evaluate(ctx, &policy.EvaluateRequest{PolicySetID: "nope", Queries: []policy.Query{flow("laptop", 443)}}); !errors.Is(err, policy.ErrUnknownPolicySet) {
		t.Fatalf("unknown set: %v", err)
	}
	if _, err := e.Evaluate(ctx, &policy.EvaluateRequest{Entities: []policy.Entity{{Ref: ref("Robot", "x")}}, Queries: []policy.Query{flow("laptop", 443)}}); !errors.Is(err, abac.ErrInvalidEntity) {
		t.Fatalf("invalid entity: %v", err)
	}
	big := make([]policy.Query, policy.MaxBatch+1)
	if _, err := e.Evaluate(ctx, &policy.EvaluateRequest{Queries: big}); !errors.Is(err, policy.ErrBatchTooLarge) {
		t.Fatalf("batch too large: %v", err)
	}
	g, err := e.GetPolicies(ctx, &policy.GetPoliciesRequest{})
	if err != nil || g.Policies != engPolicies || g.Version != r.Version || g.ReportOnly {
		t.Fatalf("get: %+v %v", g, err)
	}
}

// TestSetPolicies: an invalid set changes nothing and says where it is
// wrong; a valid one raises the Version; the same text again does not;
// report-only allows what it would deny, and logs it.
func TestSetPolicies(t *testing.T) {
	h := plugintest.NewHost()
	e := start(t, h, cfg(t, nil))
	ctx := context.Background()

	if _, err := e.Evaluate(ctx, &policy.EvaluateRequest{Queries: []policy.Query{flow("laptop", 443)}}); !errors.Is(err, policy.ErrUnknownPolicySet) {
		t.Fatalf("no set yet: %v", err)
	}
	r, err := e.SetPolicies(ctx, &policy.SetPoliciesRequest{Policies: engPolicies})
	if err != nil || !r.Applied || r.Version == 0 {
		t.Fatalf("set: %+v %v", r, err)
	}
	v1 := r.Version

	bad := engPolicies + "\n@id(\"colour\")\npermit (principal is Agent, action == Action::\"reach\", resource)\nwhen { principal.colour == \"red\" };\n"
	r, err = e.SetPolicies(ctx, &policy.SetPoliciesRequest{Policies: bad})
	if err != nil || r.Applied || r.Version != v1 || len(r.Diagnostics) != 1 {
		t.Fatalf("invalid set: %+v %v", r, err)
	}
	if d := r.Diagnostics[0]; d.Severity != "error" || d.PolicyID != "colour" || d.Line != 17 || d.Column != 18 || !strings.Contains(d.Message, "`colour`") {
		t.Fatalf("diagnostic %+v", d)
	}
	malformed := "permit (principal, action, resource) when { principal. };"
	if r, err = e.SetPolicies(ctx, &policy.SetPoliciesRequest{Policies: malformed}); err != nil || r.Applied || r.Version != v1 || r.Diagnostics[0].Line != 1 {
		t.Fatalf("malformed set: %+v %v", r, err)
	}
	vr, err := e.ValidatePolicies(ctx, &policy.SetPoliciesRequest{Policies: bad})
	if err != nil || len(vr.Diagnostics) != 1 || vr.Diagnostics[0].Line != 17 {
		t.Fatalf("validate: %+v %v", vr, err)
	}
	if g, err := e.GetPolicies(ctx, &policy.GetPoliciesRequest{PolicySetID: "default"}); err != nil || g.Policies != engPolicies || g.Version != v1 {
		t.Fatalf("after invalid sets: %+v %v", g, err)
	}
	if d := evaluate(t, e, "", flow("laptop", 443)); d.Version != v1 || !d.Decisions[0].Allow {
		t.Fatalf("after invalid sets: %+v", d)
	}

	// The same text again: no change, same version.
	if r, err = e.SetPolicies(ctx, &policy.SetPoliciesRequest{Policies: engPolicies}); err != nil || !r.Applied || r.Version != v1 {
		t.Fatalf("same text: %+v %v", r, err)
	}

	// Report-only.
	r, err = e.SetPolicies(ctx, &policy.SetPoliciesRequest{Policies: engPolicies, ReportOnly: true})
	if err != nil || !r.Applied || r.Version <= v1 {
		t.Fatalf("report-only set: %+v %v", r, err)
	}
	v2 := r.Version
	d := evaluate(t, e, "", flow("laptop", 22), flow("kiosk", 443), flow("laptop", 443))
	if d.Version != v2 {
		t.Fatalf("version %d, want %d", d.Version, v2)
	}
	for i, want := range []bool{true, true, false} {
		if x := d.Decisions[i]; !x.Allow || x.ReportOnly != want {
			t.Fatalf("query %d: %+v", i, x)
		}
	}
	if !slices.Equal(d.Decisions[0].DeterminingPolicies, []string{"no-ssh"}) {
		t.Fatalf("would-deny %+v", d.Decisions[0])
	}
	evs := waitEvents(t, h, func(evs []host.Event) bool { return len(decisions(evs)) >= 2 })
	for _, ev := range decisions(evs) {
		if ev.Outcome != "success" || ev.Fields["would_deny"] != "true" || ev.Fields["version"] != fmt.Sprint(v2) {
			t.Fatalf("report-only log entry %+v", ev)
		}
	}
	if g, err := e.GetPolicies(ctx, &policy.GetPoliciesRequest{}); err != nil || !g.ReportOnly || g.Version != v2 {
		t.Fatalf("get: %+v %v", g, err)
	}

	// An audit failure refuses the change: it is rolled back.
	h.SetAuditFailure(true)
	if _, err := e.SetPolicies(ctx, &policy.SetPoliciesRequest{Policies: engPolicies}); !errors.Is(err, host.ErrAuditFailed) {
		t.Fatalf("audit failure: %v", err)
	}
	h.SetAuditFailure(false)
	if g, err := e.GetPolicies(ctx, &policy.GetPoliciesRequest{}); err != nil || !g.ReportOnly || g.Policies != engPolicies {
		t.Fatalf("after a refused change: %+v %v", g, err)
	}
	if d := evaluate(t, e, "", flow("laptop", 22)); !d.Decisions[0].ReportOnly {
		t.Fatalf("after a refused change: %+v", d)
	}
}

// TestDecisionLogMasksSecrets: a context key naming a secret never reaches
// the audit log, even in a denial the log must keep.
func TestDecisionLogMasksSecrets(t *testing.T) {
	h := plugintest.NewHost()
	schema := abac.DefaultSchema + "\naction probe appliesTo { principal: [Agent], resource: [Network], context: { session_token: String, note: String } };\n"
	e := start(t, h, cfg(t, map[string]any{"decision_log_sample_rate": 1.0}))
	ctx := context.Background()
	r, err := e.SetPolicies(ctx, &policy.SetPoliciesRequest{PolicySetID: "probe", Schema: schema,
		Policies: `@id("p") permit (principal, action == Action::"probe", resource) when { context.note == "ok" };`})
	if err != nil || !r.Applied {
		t.Fatalf("%+v %v", r, err)
	}
	q := func(note string) policy.Query {
		return policy.Query{Principal: ref("Agent", "laptop"), Action: ref("Action", "probe"), Resource: ref("Network", "corp"),
			Context: []byte(`{"session_token":"tok-DO-NOT-LOG","note":"` + note + `"}`)}
	}
	d := evaluate(t, e, "probe", q("ok"), q("no"))
	if !d.Decisions[0].Allow || d.Decisions[1].Allow {
		t.Fatalf("%+v", d.Decisions)
	}
	evs := waitEvents(t, h, func(evs []host.Event) bool { return len(decisions(evs)) >= 2 })
	for _, ev := range evs {
		b, _ := json.Marshal(ev)
		if strings.Contains(string(b), "tok-DO-NOT-LOG") {
			t.Fatalf("secret in the audit log: %s", b)
		}
	}
	if c := decisions(evs)[0].Fields["context"]; !strings.Contains(c, `"session_token":"(masked)"`) || !strings.Contains(c, `"note":"ok"`) {
		t.Fatalf("context %s", c)
	}
}

// TestConfigureReportsFilePositions: a broken policy file refuses the
// configuration, naming file, line and column.
func TestConfigureReportsFilePositions(t *testing.T) {
	dir := writeDir(t, map[string]string{
		"default.cedar": engPolicies,
		"lab.cedar":     "@id(\"x\")\npermit (principal == Robot::\"r\", action, resource);",
	})
	s := plugintest.StartUnconfigured(t, plugintest.Build(t, pkg), plugin.KindPolicy)
	ps, err := s.Configure(t, plugintest.Options{Config: cfg(t, map[string]any{"policy_dir": dir})})
	if err != nil || len(ps) == 0 {
		t.Fatalf("%+v %v", ps, err)
	}
	want := filepath.Join(dir, "lab.cedar") + ":2:22: unrecognized entity type `Robot`"
	if ps[0].Attribute != "policy_dir" || ps[0].Summary != want || ps[0].Detail != "in policy x" {
		t.Fatalf("%+v, want %q", ps[0], want)
	}
	ps, err = s.Configure(t, plugintest.Options{Config: cfg(t, map[string]any{"policy_dir": dir, "decision_log_sample_rate": 2.0, "default_set": "a b"})})
	if err != nil || len(ps) != 2 {
		t.Fatalf("%+v %v", ps, err)
	}
}

// TestFilesAndAPI: a set from policy_dir is applied at start; a change
// through the API survives a restart (Configure again) until the file
// itself changes.
func TestFilesAndAPI(t *testing.T) {
	h := plugintest.NewHost()
	dir := writeDir(t, map[string]string{"default.cedar": engPolicies})
	c := cfg(t, map[string]any{"policy_dir": dir})
	e := start(t, h, c)
	ctx := context.Background()
	g1, err := e.GetPolicies(ctx, &policy.GetPoliciesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	api := `@id("none") forbid (principal, action, resource);`
	r, err := e.SetPolicies(ctx, &policy.SetPoliciesRequest{Policies: api})
	if err != nil || !r.Applied || r.Version <= g1.Version {
		t.Fatalf("%+v %v", r, err)
	}
	// A restart with the same file: the API's set stays.
	e2 := start(t, h, c)
	if g, err := e2.GetPolicies(ctx, &policy.GetPoliciesRequest{}); err != nil || g.Policies != api || g.Version != r.Version {
		t.Fatalf("after restart: %+v %v", g, err)
	}
	// The file changes: it is applied.
	changed := engPolicies + "\n// reviewed\n"
	if err := os.WriteFile(filepath.Join(dir, "default.cedar"), []byte(changed), 0o600); err != nil {
		t.Fatal(err)
	}
	e3 := start(t, h, c)
	if g, err := e3.GetPolicies(ctx, &policy.GetPoliciesRequest{}); err != nil || g.Policies != changed || g.Version <= r.Version {
		t.Fatalf("after file change: %+v %v", g, err)
	}
}

// TestReplicas: two plugin processes share the host storage as two core
// replicas do. A change through one is seen by the other on GetPolicies
// at once, and by Evaluate within refresh_interval ("0s" here: at once).
func TestReplicas(t *testing.T) {
	h := plugintest.NewHost()
	a := start(t, h, cfg(t, map[string]any{"refresh_interval": "0s"}))
	b := start(t, h, cfg(t, map[string]any{"refresh_interval": "0s"}))
	ctx := context.Background()
	r1, err := a.SetPolicies(ctx, &policy.SetPoliciesRequest{Policies: engPolicies})
	if err != nil || !r1.Applied {
		t.Fatalf("%+v %v", r1, err)
	}
	if d := evaluate(t, b, "", flow("laptop", 443)); d.Version != r1.Version || !d.Decisions[0].Allow {
		t.Fatalf("replica b: %+v", d)
	}
	r2, err := b.SetPolicies(ctx, &policy.SetPoliciesRequest{Policies: `@id("none") @reason("closed") forbid (principal, action, resource);`})
	if err != nil || !r2.Applied || r2.Version <= r1.Version {
		t.Fatalf("%+v %v", r2, err)
	}
	if d := evaluate(t, a, "", flow("laptop", 443)); d.Version != r2.Version || d.Decisions[0].Allow || d.Decisions[0].Reasons[0] != "closed" {
		t.Fatalf("replica a: %+v", d)
	}
}

// TestEvaluateDuringSetPolicies: parallel Evaluate calls while the set
// flips between two versions; every decision must be the one its
// response's Version implies, never a mix.
func TestEvaluateDuringSetPolicies(t *testing.T) {
	h := plugintest.NewHost()
	e := start(t, h, cfg(t, nil))
	ctx := context.Background()
	open := engPolicies
	closed := `@id("none") @reason("closed") forbid (principal, action, resource);`
	var mu sync.Mutex
	allowAt := map[uint64]bool{}
	set := func(text string, allow bool) {
		r, err := e.SetPolicies(ctx, &policy.SetPoliciesRequest{Policies: text})
		if err != nil || !r.Applied {
			t.Errorf("set: %+v %v", r, err)
			return
		}
		mu.Lock()
		allowAt[r.Version] = allow
		mu.Unlock()
	}
	set(open, true)
	const (
		workers = 4
		rounds  = 50
		flips   = 40
	)
	type seen struct {
		version uint64
		allow   []bool
	}
	results := make(chan seen, workers*rounds)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			qs := []policy.Query{flow("laptop", 443), flow("laptop", 443), flow("laptop", 443)}
			for range rounds {
				r, err := e.Evaluate(ctx, &policy.EvaluateRequest{Entities: entities, Queries: qs})
				if err != nil {
					t.Errorf("evaluate: %v", err)
					return
				}
				s := seen{version: r.Version}
				for _, d := range r.Decisions {
					s.allow = append(s.allow, d.Allow)
				}
				results <- s
			}
		}()
	}
	for i := range flips {
		if i%2 == 0 {
			set(closed, false)
		} else {
			set(open, true)
		}
	}
	wg.Wait()
	close(results)
	n := 0
	for s := range results {
		n++
		mu.Lock()
		want, ok := allowAt[s.version]
		mu.Unlock()
		if !ok {
			t.Fatalf("version %d was never returned by SetPolicies", s.version)
		}
		for _, a := range s.allow {
			if a != want {
				t.Fatalf("version %d: allow %v, want %v", s.version, s.allow, want)
			}
		}
	}
	if n != workers*rounds {
		t.Fatalf("%d results", n)
	}
}

// TestPolicyTestFileThroughPlugin: the example test file passes against
// the example set applied to a real plugin process, as `avon policy test`
// runs it through the core.
func TestPolicyTestFileThroughPlugin(t *testing.T) {
	text, err := os.ReadFile("policytest/testdata/corp.cedar")
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile("policytest/testdata/corp_test.json")
	if err != nil {
		t.Fatal(err)
	}
	f, err := policytest.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	e := start(t, plugintest.NewHost(), cfg(t, nil))
	r, err := e.SetPolicies(context.Background(), &policy.SetPoliciesRequest{PolicySetID: "corp", Policies: string(text)})
	if err != nil || !r.Applied {
		t.Fatalf("%+v %v", r, err)
	}
	rep, err := f.Run(context.Background(), e, "corp")
	if err != nil {
		t.Fatal(err)
	}
	if rep.Failed != 0 || rep.Passed != len(f.Cases) || rep.Version != r.Version {
		t.Fatalf("version %d: %s", rep.Version, rep)
	}
}

// selfCPU is this process's user and system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPU is the user and system CPU time of process pid from
// /proc/<pid>/stat (clock ticks of 10 ms), or 0 when it cannot be read.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The fields after the command name, which is in parentheses and may
	// hold spaces: state is field 3, utime 14 and stime 15.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	return time.Duration(u+st) * 10 * time.Millisecond
}

// BenchmarkEvaluatePlugin: decisions through a real plugin process (gRPC,
// AutoMTLS), batches of 1 and 256, with AVON's full flow context.
func BenchmarkEvaluatePlugin(b *testing.B) {
	s := plugintest.Start(b, plugintest.Build(b, pkg), plugin.KindPolicy, plugintest.Options{Config: cfg(b, nil)})
	e := policyrpc.NewClient(s.Conn.Conn)
	ctx := context.Background()
	if r, err := e.SetPolicies(ctx, &policy.SetPoliciesRequest{Policies: engPolicies}); err != nil || !r.Applied {
		b.Fatalf("%+v %v", r, err)
	}
	for _, n := range []int{1, 256} {
		b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) {
			// As a gateway batches new flows: each to its own destination,
			// from 16 sessions; the core sends the time.
			qs := make([]policy.Query, n)
			for i := range qs {
				qs[i] = flow("laptop", 443)
				c := strings.Replace(string(qs[i].Context), "{", `{"time":"2026-12-02T10:00:00Z",`, 1)
				c = strings.Replace(c, `"10.20.0.10"`, fmt.Sprintf(`"10.20.%d.%d"`, i/250, 1+i%250), 1)
				c = strings.Replace(c, `"0.3.0"`, fmt.Sprintf(`"0.3.%d"`, i%16), 1)
				qs[i].Context = []byte(c)
			}
			req := &policy.EvaluateRequest{Entities: entities, Queries: qs}
			b.ReportAllocs()
			pid := s.Client.ReattachConfig().Pid
			self0, plug0 := selfCPU(), procCPU(pid)
			for b.Loop() {
				r, err := e.Evaluate(ctx, req)
				if err != nil || !r.Decisions[0].Allow {
					b.Fatalf("%v", err)
				}
			}
			self, plug := selfCPU()-self0, procCPU(pid)-plug0
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "decisions/s")
			if plug > 0 {
				// Both processes' CPU time: what a decision costs whatever
				// else the machine runs.
				b.ReportMetric(float64(plug)/float64(b.N*n), "plugin-cpu-ns/decision")
				b.ReportMetric(float64(self+plug)/float64(b.N*n), "cpu-ns/decision")
			}
		})
	}
}
