package abacplugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/avonzt/avon/plugins/policy-abac/abac"
	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/host"
	"github.com/avonzt/avon/sdk/plugin"
	"github.com/avonzt/avon/sdk/plugintest"
	"github.com/avonzt/avon/sdk/policy"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// uncalibrated is a host whose clock lost its calibration.
type uncalibrated struct{ *plugintest.MemHost }

func (uncalibrated) Now(context.Context) (host.Time, error) {
	return host.Time{Time: time.Now(), Calibrated: false}, nil
}

func configured(t *testing.T, h host.Host, extra map[string]any) (*Plugin, *fakeClock) {
	t.Helper()
	clk := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	p := New(WithClock(clk.now), WithLogger(hclog.NewNullLogger()))
	c := map[string]any{"policy_dir": "", "default_set": "default", "report_only": false, "decision_log_sample_rate": 0.0, "refresh_interval": "1s"}
	for k, v := range extra {
		c[k] = v
	}
	b, _ := json.Marshal(c)
	if err := p.Configure(context.Background(), &plugin.ConfigureRequest{Config: b, Host: h}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := p.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return p, clk
}

const open = `@id("open") permit (principal, action == Action::"reach", resource);`
const closed = `@id("closed") @reason("closed") forbid (principal, action, resource);`

func query(withTime bool) policy.Query {
	ctx := `{"calibration_skew_ms":0,"posture":{"os":"linux","agent_version":"1","clock_offset_ms":0,"skew_ms":0},
"source":{"ip":"192.0.2.1","port":1},"location":{"country":"","region":"","city":""},"destination":{"ip":"10.0.0.1","port":443,"protocol":"tcp"}}`
	if withTime {
		ctx = strings.Replace(ctx, "{", `{"time":"2026-12-02T10:00:00Z",`, 1)
	}
	return policy.Query{Principal: policy.EntityRef{Type: "Agent", ID: "a"}, Action: policy.EntityRef{Type: "Action", ID: "reach"},
		Resource: policy.EntityRef{Type: "Network", ID: "n"}, Context: []byte(ctx)}
}

func eval(t *testing.T, p *Plugin) *policy.EvaluateResponse {
	t.Helper()
	r, err := p.Evaluate(context.Background(), &policy.EvaluateRequest{Queries: []policy.Query{query(false)}})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestRefreshInterval: a change another replica wrote to the storage is
// seen once the cached set is older than refresh_interval, not before; a
// stored set that no longer compiles keeps the last good one in force.
func TestRefreshInterval(t *testing.T) {
	h := plugintest.NewHost()
	p, clk := configured(t, h, nil)
	ctx := context.Background()
	r, err := p.SetPolicies(ctx, &policy.SetPoliciesRequest{Policies: open})
	if err != nil || !r.Applied {
		t.Fatalf("%+v %v", r, err)
	}
	if d := eval(t, p); !d.Decisions[0].Allow || d.Version != r.Version {
		t.Fatalf("%+v", d)
	}
	// Another replica writes.
	b, _ := json.Marshal(record{Policies: closed})
	v2, err := h.Storage().Put(ctx, setPrefix+"default", b, host.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	clk.add(500 * time.Millisecond)
	if d := eval(t, p); !d.Decisions[0].Allow || d.Version != r.Version {
		t.Fatalf("refreshed early: %+v", d)
	}
	clk.add(600 * time.Millisecond)
	if d := eval(t, p); d.Decisions[0].Allow || d.Version != uint64(v2) {
		t.Fatalf("not refreshed: %+v", d)
	}
	// A stored set that does not compile: the last good one stays.
	b, _ = json.Marshal(record{Policies: "permit ("})
	if _, err := h.Storage().Put(ctx, setPrefix+"default", b, host.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	for range 3 { // refreshes that find the same broken version
		clk.add(2 * time.Second)
		if d := eval(t, p); d.Decisions[0].Allow || d.Version != uint64(v2) {
			t.Fatalf("after a broken write: %+v", d)
		}
	}
	// A replica without a good version fails closed with the reason.
	p2, _ := configured(t, h, nil)
	if _, err := p2.Evaluate(ctx, &policy.EvaluateRequest{Queries: []policy.Query{query(false)}}); !errors.Is(err, policy.ErrInvalidPolicy) {
		t.Fatalf("broken set on a fresh replica: %v", err)
	}
	// SetPolicies repairs it, and the first replica follows.
	r3, err := p2.SetPolicies(ctx, &policy.SetPoliciesRequest{Policies: open})
	if err != nil || !r3.Applied || r3.Version <= uint64(v2) {
		t.Fatalf("%+v %v", r3, err)
	}
	clk.add(2 * time.Second)
	if d := eval(t, p); !d.Decisions[0].Allow || d.Version != r3.Version {
		t.Fatalf("after the repair: %+v", d)
	}
}

// TestUncalibratedClock: a context without time is denied when the core's
// clock is not calibrated; one with its own time is decided.
func TestUncalibratedClock(t *testing.T) {
	p, _ := configured(t, uncalibrated{plugintest.NewHost()}, nil)
	ctx := context.Background()
	if r, err := p.SetPolicies(ctx, &policy.SetPoliciesRequest{Policies: open}); err != nil || !r.Applied {
		t.Fatalf("%+v %v", r, err)
	}
	r, err := p.Evaluate(ctx, &policy.EvaluateRequest{Queries: []policy.Query{query(false), query(true)}})
	if err != nil {
		t.Fatal(err)
	}
	if d := r.Decisions[0]; d.Allow || len(d.Errors) != 1 || !strings.Contains(d.Errors[0], abac.ErrNoTime.Error()) {
		t.Fatalf("%+v", d)
	}
	if !r.Decisions[1].Allow {
		t.Fatalf("%+v", r.Decisions[1])
	}
}

func TestNotConfigured(t *testing.T) {
	p := New(WithLogger(hclog.NewNullLogger()))
	ctx := context.Background()
	if _, err := p.Evaluate(ctx, &policy.EvaluateRequest{}); !errors.Is(err, errdef.ErrNotConfigured) {
		t.Fatal(err)
	}
	if _, err := p.SetPolicies(ctx, &policy.SetPoliciesRequest{}); !errors.Is(err, errdef.ErrNotConfigured) {
		t.Fatal(err)
	}
	if err := p.Health(ctx); !errors.Is(err, errdef.ErrNotConfigured) {
		t.Fatal(err)
	}
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestBadSetIDs: set ids are storage keys; anything but a short name is
// refused before it reaches the storage.
func TestBadSetIDs(t *testing.T) {
	p, _ := configured(t, plugintest.NewHost(), nil)
	for _, id := range []string{"../x", "a/b", "-x", strings.Repeat("a", 65), "a b", "é"} {
		if _, err := p.SetPolicies(context.Background(), &policy.SetPoliciesRequest{PolicySetID: id, Policies: open}); !errors.Is(err, policy.ErrUnknownPolicySet) {
			t.Errorf("%q: %v", id, err)
		}
	}
}

// TestDecisionLogAuditFailure: a failing audit log drops entries, counted,
// and never blocks or changes decisions.
func TestDecisionLogAuditFailure(t *testing.T) {
	h := plugintest.NewHost()
	p, _ := configured(t, h, nil)
	ctx := context.Background()
	if r, err := p.SetPolicies(ctx, &policy.SetPoliciesRequest{Policies: closed}); err != nil || !r.Applied {
		t.Fatalf("%+v %v", r, err)
	}
	h.SetAuditFailure(true)
	if d := eval(t, p); d.Decisions[0].Allow {
		t.Fatalf("%+v", d)
	}
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if p.Dropped() != 1 {
		t.Fatalf("dropped %d", p.Dropped())
	}
}

// TestAuditFailureRollsBack: a new set the audit log refuses does not
// exist afterwards, on this replica or any other.
func TestAuditFailureRollsBack(t *testing.T) {
	h := plugintest.NewHost()
	p, _ := configured(t, h, nil)
	ctx := context.Background()
	h.SetAuditFailure(true)
	if _, err := p.SetPolicies(ctx, &policy.SetPoliciesRequest{PolicySetID: "new", Policies: open}); !errors.Is(err, host.ErrAuditFailed) {
		t.Fatalf("%v", err)
	}
	h.SetAuditFailure(false)
	if _, err := h.Storage().Get(ctx, setPrefix+"new"); !errors.Is(err, host.ErrNotFound) {
		t.Fatalf("stored: %v", err)
	}
	if _, err := p.Evaluate(ctx, &policy.EvaluateRequest{PolicySetID: "new", Queries: []policy.Query{query(true)}}); !errors.Is(err, policy.ErrUnknownPolicySet) {
		t.Fatalf("evaluate: %v", err)
	}
}

// TestConditionalSetPolicies: Check makes SetPolicies a compare-and-set on
// the set's version (0: create); a mismatch changes nothing, and of
// writers racing at one version exactly one applies.
func TestConditionalSetPolicies(t *testing.T) {
	h := plugintest.NewHost()
	p, _ := configured(t, h, nil)
	ctx := context.Background()
	set := func(text string, ifVersion uint64) (*policy.SetPoliciesResponse, error) {
		return p.SetPolicies(ctx, &policy.SetPoliciesRequest{PolicySetID: "c", Policies: text, Check: true, IfVersion: ifVersion})
	}
	r, err := set(open, 0)
	if err != nil || !r.Applied || !r.Checked || r.Version == 0 {
		t.Fatalf("create: %+v %v", r, err)
	}
	v1 := r.Version
	if _, err := set(closed, 0); !errors.Is(err, policy.ErrVersionConflict) {
		t.Fatalf("create over an existing set: %v", err)
	}
	if _, err := set(closed, v1+7); !errors.Is(err, policy.ErrVersionConflict) {
		t.Fatalf("wrong version: %v", err)
	}
	if _, err := p.SetPolicies(ctx, &policy.SetPoliciesRequest{PolicySetID: "none", Policies: open, Check: true, IfVersion: 3}); !errors.Is(err, policy.ErrVersionConflict) {
		t.Fatalf("update of a set that does not exist: %v", err)
	}
	g, err := p.GetPolicies(ctx, &policy.GetPoliciesRequest{PolicySetID: "c"})
	if err != nil || g.Version != v1 || g.Policies != open {
		t.Fatalf("after refusals: %+v %v", g, err)
	}

	const n = 8
	var wg sync.WaitGroup
	var mu sync.Mutex
	won, lost := 0, 0
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := set(fmt.Sprintf("%s\n@id(\"w%d\") permit (principal, action == Action::\"reach\", resource);", open, i), v1)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil && r.Applied:
				won++
			case errors.Is(err, policy.ErrVersionConflict):
				lost++
			default:
				t.Errorf("racing write: %+v %v", r, err)
			}
		}()
	}
	wg.Wait()
	if won != 1 || lost != n-1 {
		t.Fatalf("%d won, %d lost; want 1 and %d", won, lost, n-1)
	}
	if g, err := p.GetPolicies(ctx, &policy.GetPoliciesRequest{PolicySetID: "c"}); err != nil || g.Version == v1 {
		t.Fatalf("after the race: %+v %v", g, err)
	}
}
