package flow

import (
	"net/netip"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/avonzt/avon/core/gateway/flow/flowtest"
	"github.com/avonzt/avon/sdk/policy"
)

// TestEngineFailurePurgesCache: an allow cached while the engine answered
// does not answer once an Evaluate call failed: the next flow to the same
// destination is asked for and fails closed. Flows already open stay as
// decided until re-checked.
func TestEngineFailurePurgesCache(t *testing.T) {
	f := newFixture(t, allow443, nil)
	s := f.session("laptop", agentA)
	k1 := key(ProtoTCP, agentA, server, 40000, 443)
	f.from(s, v4(ProtoTCP, agentA, server, tcp(40000, 443, tcpSYN)))
	if v := f.settled(s, k1); v != Allow {
		t.Fatalf("first flow %v", v)
	}
	// Cached: a second flow to :443 is answered at once.
	if a := f.from(s, v4(ProtoTCP, agentA, server, tcp(40001, 443, tcpSYN))); a != Forward {
		t.Fatalf("cached flow: %v", a)
	}
	f.eng.SetError(flowtest.ErrDown)
	f.from(s, v4(ProtoTCP, agentA, server, tcp(40002, 53, tcpSYN)))
	if v := f.settled(s, key(ProtoTCP, agentA, server, 40002, 53)); v != Deny {
		t.Fatalf("flow with the engine down: %v", v)
	}
	if f.e.Cache().Len() != 0 || f.e.Stats().CachePurges.Load() == 0 {
		t.Fatalf("cache %d entries after the engine failed", f.e.Cache().Len())
	}
	k3 := key(ProtoTCP, agentA, server, 40003, 443)
	if a := f.from(s, v4(ProtoTCP, agentA, server, tcp(40003, 443, tcpSYN))); a != Held {
		t.Fatalf("flow to a destination cached before the failure: %v, want held for the engine", a)
	}
	if v := f.settled(s, k3); v != Deny {
		t.Fatalf("flow to a destination cached before the failure: %v, want deny", v)
	}
	if verdict(s, k1) != Allow {
		t.Fatal("an open flow changed without a re-check")
	}
}

// TestEngineUnavailablePurges: the supervisor's word empties the cache
// before any call fails.
func TestEngineUnavailablePurges(t *testing.T) {
	f := newFixture(t, allow443, nil)
	s := f.session("laptop", agentA)
	f.from(s, v4(ProtoTCP, agentA, server, tcp(40000, 443, tcpSYN)))
	f.settled(s, key(ProtoTCP, agentA, server, 40000, 443))
	if f.e.Cache().Len() != 1 {
		t.Fatalf("cache %d", f.e.Cache().Len())
	}
	f.e.EngineUnavailable(flowtest.ErrDown)
	if f.e.Cache().Len() != 0 {
		t.Fatal("cache kept")
	}
	if a := f.from(s, v4(ProtoTCP, agentA, server, tcp(40001, 443, tcpSYN))); a != Held {
		t.Fatalf("flow after the engine went: %v, want held for the engine", a)
	}
}

// TestConnectBatched: ten thousand connect re-checks (a policy change on a
// busy gateway) go to the engine in full batches, each answered once.
func TestConnectBatched(t *testing.T) {
	const n = 10000
	f := newFixture(t, func(q policy.Query) policy.Decision {
		return policy.Decision{Allow: q.Principal.ID != "agent-13", DeterminingPolicies: []string{"p"}}
	}, nil)
	var allowed, denied atomic.Int64
	now := f.clock.now()
	for i := range n {
		subj := &Subject{AgentID: "agent-" + itoa(i), Groups: []string{"eng"}}
		f.e.AskConnect(subj, Connect{GatewayID: "gw", Source: netip.MustParseAddrPort("203.0.113.7:4000")}, now, func(d *Decision) {
			if d.Allow {
				allowed.Add(1)
			} else {
				denied.Add(1)
			}
		})
	}
	f.e.Batcher().Flush()
	waitFor(t, "every connect decision", func() bool { return allowed.Load()+denied.Load() == n })
	if denied.Load() != 1 {
		t.Fatalf("%d denied, want 1", denied.Load())
	}
	// Batches: full ones while queries wait, else what gathered during
	// the batch delay; never one call per query.
	calls := f.eng.Calls()
	if calls > n/10 {
		t.Fatalf("%d engine calls for %d queries", calls, n)
	}
	t.Logf("%d connect queries in %d engine calls", n, calls)
	if f.e.Cache().Len() != 0 {
		t.Fatal("a connect decision was cached")
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// BenchmarkConnectRecheckAll is a policy change on a gateway of 10k
// sessions: the time from the first connect re-check submitted to the
// last decision delivered (in-memory engine: the batching and delivery
// cost, not the engine's).
func BenchmarkConnectRecheckAll(b *testing.B) {
	const n = 10000
	f := newFixture(b, flowtest.AllowAll, nil)
	subjects := make([]*Subject, n)
	for i := range subjects {
		subjects[i] = ConnectSubject(Subject{AgentID: "agent-" + itoa(i), Groups: []string{"eng"}})
	}
	c := Connect{GatewayID: "gw", Source: netip.MustParseAddrPort("203.0.113.7:4000")}
	var done atomic.Int64
	cb := func(*Decision) { done.Add(1) }
	b.ResetTimer()
	for i := range b.N {
		now := f.clock.now()
		for _, s := range subjects {
			f.e.AskConnect(s, c, now, cb)
		}
		f.e.Batcher().Flush()
		waitBench(b, "every decision", func() bool { return done.Load() == int64(n*(i+1)) })
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "decisions/s")
}

// TestFailClosedRetried: a flow denied because the engine could not decide
// is asked again by the agent's next packet once FailClosedRetry passed
// (a retransmitted SYN gets in when the engine is back); before that, and
// for a policy denial at any time, the packet is dropped.
func TestFailClosedRetried(t *testing.T) {
	f := newFixture(t, allow443, nil)
	s := f.session("laptop", agentA)
	syn := v4(ProtoTCP, agentA, server, tcp(40000, 443, tcpSYN))
	k := key(ProtoTCP, agentA, server, 40000, 443)
	f.eng.SetError(flowtest.ErrDown)
	f.from(s, syn)
	if v := f.settled(s, k); v != Deny {
		t.Fatalf("with the engine down: %v", v)
	}
	f.eng.SetError(nil)
	f.clock.advance(FailClosedRetry - time.Millisecond)
	if a := f.from(s, syn); a != Drop {
		t.Fatalf("SYN retransmitted before FailClosedRetry: %v, want drop", a)
	}
	f.clock.advance(time.Millisecond)
	if a := f.from(s, syn); a != Held {
		t.Fatalf("SYN retransmitted after FailClosedRetry: %v, want held for the engine", a)
	}
	if v := f.settled(s, k); v != Allow {
		t.Fatalf("with the engine back: %v", v)
	}
	if n := f.e.Stats().FailClosedRetries.Load(); n != 1 {
		t.Fatalf("%d retries counted", n)
	}
	if n := f.e.Stats().FlowsExpired.Load(); n != 0 {
		t.Fatalf("the retry counted as %d expired flows", n)
	}
	// The verdict is visible before follow hands the held packets to
	// Release: wait for the hand-over.
	waitFor(t, "the retransmitted SYN's release", func() bool { return f.nReleased() >= 1 })
	if n := f.nReleased(); n != 1 {
		t.Fatalf("%d packets released, want the retransmitted SYN", n)
	}

	// A policy denial is not retried: it stands until a re-evaluation.
	k22 := key(ProtoTCP, agentA, server, 40001, 22)
	syn22 := v4(ProtoTCP, agentA, server, tcp(40001, 22, tcpSYN))
	f.from(s, syn22)
	if v := f.settled(s, k22); v != Deny {
		t.Fatalf("port 22: %v", v)
	}
	calls := f.eng.Calls()
	f.clock.advance(10 * FailClosedRetry)
	if a := f.from(s, syn22); a != Drop {
		t.Fatalf("policy-denied SYN retransmitted: %v, want drop", a)
	}
	if f.eng.Calls() != calls || f.e.Stats().FailClosedRetries.Load() != 1 {
		t.Fatal("a policy denial was asked again")
	}
}
