package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/avonzt/avon/core/gateway/flow/flowtest"
	"github.com/avonzt/avon/core/tunnel/control"
	"github.com/avonzt/avon/sdk/policy"
)

// connectRecorder decides connect queries with decide (flows are allowed)
// and keeps every connect query it saw.
type connectRecorder struct {
	mu      sync.Mutex
	decide  func(q policy.Query) policy.Decision
	queries []policy.Query
}

func (r *connectRecorder) Decide(q policy.Query) policy.Decision {
	if q.Action.ID != "connect" {
		return policy.Decision{Allow: true}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.queries = append(r.queries, q)
	return r.decide(q)
}

func (r *connectRecorder) connects() []policy.Query {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]policy.Query(nil), r.queries...)
}

// denyAgent denies connect to the agents named, allowing the others.
func denyAgent(names ...string) func(q policy.Query) policy.Decision {
	return func(q policy.Query) policy.Decision {
		for _, n := range names {
			if q.Principal.ID == n {
				return policy.Decision{DeterminingPolicies: []string{"quarantine", "lab-only"}, Reasons: []string{"device quarantined"}}
			}
		}
		return policy.Decision{Allow: true, DeterminingPolicies: []string{"agents-connect"}}
	}
}

// wantConnectDenied checks err is the Close of a connect denial with reason.
func wantConnectDenied(t *testing.T, err error, reason string) {
	t.Helper()
	var ec *errClose
	if !errors.As(err, &ec) || ec.c.Code != control.CloseConnectDenied || !strings.Contains(ec.c.Reason, reason) {
		t.Fatalf("connect: %v, want a connect denial saying %q", err, reason)
	}
}

func TestConnectAskedAtHandshake(t *testing.T) {
	rec := &connectRecorder{decide: denyAgent("agent-quarantined")}
	eng := flowtest.New(rec.Decide)
	e := newEnv(t, func(c *Config) {
		enforce(eng)(c)
		c.Policy.GatewayID = "gw-berlin"
		c.Policy.Groups = func(_ context.Context, id string) ([]string, error) { return []string{"eng", "staff"}, nil }
	})
	ctx := testCtx(t)
	a := e.agent("agent-ok", nil)
	a.mustConnect(ctx)
	qs := rec.connects()
	if len(qs) != 1 {
		t.Fatalf("%d connect queries, want 1", len(qs))
	}
	q := qs[0]
	if q.Principal != (policy.EntityRef{Type: "Agent", ID: "agent-ok"}) || q.Resource != (policy.EntityRef{Type: "Gateway", ID: "gw-berlin"}) {
		t.Fatalf("query %+v", q)
	}
	var c struct {
		Time    string `json:"time"`
		Skew    *int64 `json:"calibration_skew_ms"`
		Posture struct {
			OS   *string           `json:"os"`
			Tags map[string]string `json:"tags"`
		} `json:"posture"`
		Source struct {
			IP   string `json:"ip"`
			Port uint16 `json:"port"`
		} `json:"source"`
		Location map[string]string `json:"location"`
	}
	if err := json.Unmarshal(q.Context, &c); err != nil {
		t.Fatalf("context %s: %v", q.Context, err)
	}
	if c.Time != testNow.Format("2006-01-02T15:04:05.000Z07:00") || c.Skew == nil || *c.Skew != 0 || c.Posture.OS == nil ||
		*c.Posture.OS != "" || c.Posture.Tags == nil || c.Source.Port == 0 || c.Source.IP == "" || len(c.Location) != 3 {
		t.Fatalf("context %s", q.Context)
	}
	if len(e.gw.Sessions()) != 1 || e.gw.FlowStats().ConnectAllowed.Load() != 1 {
		t.Fatal("the allowed agent has no session")
	}

	// Denied: no session, the reason and policies reach the agent.
	b := e.agent("agent-quarantined", nil)
	wantConnectDenied(t, b.connect(ctx), "device quarantined (policy quarantine, lab-only)")
	if n := len(e.gw.Sessions()); n != 1 {
		t.Fatalf("%d sessions after a denied connect, want 1", n)
	}
	if e.gw.Stats().ConnectRefused.Load() != 1 || e.gw.FlowStats().ConnectDenied.Load() != 1 {
		t.Fatal("the refusal was not counted")
	}
	// Nothing of the refused handshake is left.
	e.gw.table.RLock()
	pending, halfOpen := e.gw.table.pending, len(e.gw.table.pendings)
	e.gw.table.RUnlock()
	if pending != 0 || halfOpen != 0 {
		t.Fatalf("pending %d, half-open %d after the refusal", pending, halfOpen)
	}
}

func TestConnectFailClosedAndReportOnly(t *testing.T) {
	eng := flowtest.New(flowtest.Rules())
	logs := &lockedBuffer{}
	e := newEnv(t, func(c *Config) {
		enforce(eng)(c)
		c.Logger = hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Info})
	})
	ctx := testCtx(t)
	eng.SetError(flowtest.ErrDown)
	wantConnectDenied(t, e.agent("agent-1", nil).connect(ctx), "fail closed")
	if e.gw.FlowStats().ConnectFailClosed.Load() != 1 || len(e.gw.Sessions()) != 0 {
		t.Fatal("fail closed connect not counted, or a session left")
	}
	if !strings.Contains(logs.String(), "session refused: connect denied by policy") {
		t.Fatalf("refusal not logged:\n%s", logs)
	}

	// Report-only: the session is admitted, the would-be denial logged.
	eng.SetError(nil)
	eng.SetDecide(func(q policy.Query) policy.Decision {
		return policy.Decision{Allow: true, ReportOnly: true, DeterminingPolicies: []string{"strict"}, Reasons: []string{"not on the list"}}
	})
	a := e.agent("agent-1", nil)
	a.mustConnect(ctx)
	if !strings.Contains(logs.String(), "session allowed in report-only mode; the policy would deny connect") ||
		e.gw.FlowStats().ConnectReportOnly.Load() != 1 {
		t.Fatalf("report-only connect not logged or counted:\n%s", logs)
	}
}

// TestConnectDoesNotHoldWorkers: while the engine sits on a connect
// decision, the only handshake worker goes on serving other handshakes.
func TestConnectDoesNotHoldWorkers(t *testing.T) {
	eng := flowtest.New(flowtest.Rules())
	e := newEnv(t, func(c *Config) {
		enforce(eng)(c)
		c.Workers = 1
		c.Policy.EvalTimeout = time.Minute
	})
	ctx := testCtx(t)
	release := eng.Hold()
	defer release()
	errs := make(chan error, 2)
	a, b := e.agent("agent-held-1", nil), e.agent("agent-held-2", nil)
	go func() { errs <- a.connect(ctx) }()
	select {
	case <-eng.Entered():
	case <-ctx.Done():
		t.Fatal("the first connect never reached the engine")
	}
	// The worker is free: the second handshake completes up to its own
	// connect query, which waits behind the held call.
	go func() { errs <- b.connect(ctx) }()
	waitFor(t, "the second connect query queued", func() bool { return e.gw.flows.Batcher().Pending() == 1 })
	if len(e.gw.Sessions()) != 0 {
		t.Fatal("a session before its connect decision")
	}
	release()
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if len(e.gw.Sessions()) != 2 {
		t.Fatalf("%d sessions", len(e.gw.Sessions()))
	}
}

// TestConnectRechecked: a pulse whose posture the policy refuses, and a
// policy change, end sessions with the reason; an engine that cannot
// answer a re-check leaves sessions up.
func TestConnectRechecked(t *testing.T) {
	rec := &connectRecorder{decide: func(q policy.Query) policy.Decision {
		if strings.Contains(string(q.Context), `"jailbroken":"true"`) {
			return policy.Decision{DeterminingPolicies: []string{"posture"}, Reasons: []string{"jailbroken device"}}
		}
		return policy.Decision{Allow: true}
	}}
	eng := flowtest.New(rec.Decide)
	e := newEnv(t, enforce(eng))
	ctx := testCtx(t)
	a := e.agent("agent-pulse", nil)
	a.mustConnect(ctx)
	pulse := func(a *testAgent, jb string) {
		a.seq++
		a.sendControl(&control.Pulse{Seq: a.seq, SessionToken: a.stoken, AgentTime: a.now().UnixNano(), OS: "ios",
			AgentVersion: "test", Facts: map[string]string{"jailbroken": jb}})
	}
	pulse(a, "false")
	ack, ok := a.recvControl(ctx).(*control.PulseAck)
	if !ok {
		t.Fatal("no pulse ack")
	}
	a.stoken = ack.NextToken
	waitFor(t, "the pulse's connect re-check", func() bool { return len(rec.connects()) == 2 })
	if q := rec.connects()[1]; !strings.Contains(string(q.Context), `"os":"ios"`) {
		t.Fatalf("re-check context %s lacks the pulse's posture", q.Context)
	}
	pulse(a, "true")
	var cl *control.Close
	for range 4 {
		if c, ok := a.recvControl(ctx).(*control.Close); ok {
			cl = c
			break
		}
	}
	if cl == nil || cl.Code != control.CloseConnectDenied || cl.Reason != "jailbroken device (policy posture)" {
		t.Fatalf("close %+v", cl)
	}
	if len(e.gw.Sessions()) != 0 || e.gw.Stats().ConnectCut.Load() != 1 {
		t.Fatal("session not cut, or the cut not counted")
	}

	// A policy change: b is cut, c stays.
	b, c := e.agent("agent-b", nil), e.agent("agent-c", nil)
	b.mustConnect(ctx)
	c.mustConnect(ctx)
	eng.SetDecide(func(q policy.Query) policy.Decision {
		if q.Action.ID == "connect" && q.Principal.ID == "agent-b" {
			return policy.Decision{DeterminingPolicies: []string{"offboarded"}, Reasons: []string{"left the company"}}
		}
		return policy.Decision{Allow: true}
	})
	start := time.Now()
	e.gw.PolicyChanged()
	if m, ok := b.recvControl(ctx).(*control.Close); !ok || m.Code != control.CloseConnectDenied || m.Reason != "left the company (policy offboarded)" {
		t.Fatalf("agent-b got %+v", m)
	}
	t.Logf("session cut %v after the policy change", time.Since(start))
	waitFor(t, "agent-b's session gone", func() bool { return len(e.gw.Sessions()) == 1 })
	if e.gw.Sessions()[0].AgentID != "agent-c" {
		t.Fatal("the wrong session was cut")
	}

	// The engine fails: the re-check cannot be answered, c stays.
	eng.SetError(flowtest.ErrDown)
	failed := e.gw.FlowStats().ConnectFailClosed.Load()
	e.gw.PolicyChanged()
	waitFor(t, "the failed re-check", func() bool { return e.gw.FlowStats().ConnectFailClosed.Load() == failed+1 })
	if len(e.gw.Sessions()) != 1 || e.gw.Stats().ConnectCut.Load() != 2 {
		t.Fatal("a session was cut by a re-check the engine could not answer")
	}
}
