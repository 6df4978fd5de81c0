package flow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/avonzt/avon/core/gateway/flow/flowtest"
	"github.com/avonzt/avon/sdk/policy"
)

const (
	agentA = "100.96.0.5"
	agentB = "100.96.0.6"
	server = "10.20.0.10"
)

var allow443 = flowtest.Rules(
	flowtest.Rule{Resource: "tcp/10.20.0.10:443", PolicyID: "eng-https", Reason: "eng may reach https"},
	flowtest.Rule{Resource: "udp/10.20.0.10:53", PolicyID: "dns"},
	flowtest.Rule{Resource: "icmp/10.20.0.10", PolicyID: "ping"},
	flowtest.Rule{Resource: "icmpv6/fd00:20::10", PolicyID: "ping6"},
	flowtest.Rule{Resource: "tcp/10.20.0.10:22", PolicyID: "no-ssh", Deny: true, Reason: "ssh is for admins"},
)

func TestTCPLifecycle(t *testing.T) {
	f := newFixture(t, allow443, nil)
	s := f.session("laptop", agentA)
	k := key(ProtoTCP, agentA, server, 40000, 443)
	syn := v4(ProtoTCP, agentA, server, tcp(40000, 443, tcpSYN))
	// The engine holds its answer until both SYNs are in: on a loaded
	// machine the batch delay may pass between them.
	release := f.eng.Hold()
	defer release()
	if a := f.from(s, syn); a != Held {
		t.Fatalf("SYN of a new flow: %v, want held", a)
	}
	if a := f.from(s, syn); a != Held {
		t.Fatalf("retransmitted SYN while pending: %v, want held", a)
	}
	release()
	if v := f.settled(s, k); v != Allow {
		t.Fatalf("verdict %v, want allow", v)
	}
	waitFor(t, "held packets released", func() bool { return f.nReleased() == 2 })
	f.mu.Lock()
	rel := f.released[0]
	f.mu.Unlock()
	if string(rel) != string(syn) {
		t.Fatal("released packet differs from the held one")
	}
	// Return traffic needs no decision.
	if a := f.to(s, v4(ProtoTCP, server, agentA, tcp(443, 40000, tcpSYN|tcpACK)), nil); a != Forward {
		t.Fatalf("SYN-ACK: %v", a)
	}
	if a := f.from(s, v4(ProtoTCP, agentA, server, tcp(40000, 443, tcpACK))); a != Forward {
		t.Fatalf("ACK: %v", a)
	}
	if got := f.eng.Queries(); got != 1 {
		t.Fatalf("%d queries for one flow", got)
	}
	// Established: an idle hour less a second keeps it.
	f.clock.advance(DefaultTimeouts.TCPEstablished - time.Second)
	if n := f.e.Expire(f.clock.now()); n != 0 {
		t.Fatalf("established flow expired early (%d)", n)
	}
	// FIN both ways closes it; it lingers TCPClosed.
	f.from(s, v4(ProtoTCP, agentA, server, tcp(40000, 443, tcpFIN|tcpACK)))
	f.to(s, v4(ProtoTCP, server, agentA, tcp(443, 40000, tcpFIN|tcpACK)), nil)
	f.clock.advance(DefaultTimeouts.TCPClosed)
	if n := f.e.Expire(f.clock.now()); n != 1 {
		t.Fatalf("closed flow: %d expired, want 1", n)
	}
	if got := f.e.Stats().Flows.Load(); got != 0 {
		t.Fatalf("%d flows left", got)
	}
	// After teardown the reply direction is unsolicited.
	if a := f.to(s, v4(ProtoTCP, server, agentA, tcp(443, 40000, tcpACK)), nil); a != Drop {
		t.Fatalf("packet after teardown: %v", a)
	}
}

func TestTCPReset(t *testing.T) {
	f := newFixture(t, allow443, nil)
	s := f.session("laptop", agentA)
	k := key(ProtoTCP, agentA, server, 40001, 443)
	f.from(s, v4(ProtoTCP, agentA, server, tcp(40001, 443, tcpSYN)))
	f.settled(s, k)
	f.to(s, v4(ProtoTCP, server, agentA, tcp(443, 40001, tcpSYN|tcpACK)), nil)
	if a := f.to(s, v4(ProtoTCP, server, agentA, tcp(443, 40001, tcpRST)), nil); a != Forward {
		t.Fatalf("RST: %v", a)
	}
	f.clock.advance(DefaultTimeouts.TCPClosed)
	if n := f.e.Expire(f.clock.now()); n != 1 {
		t.Fatalf("reset flow: %d expired, want 1", n)
	}
}

func TestUDPTimeouts(t *testing.T) {
	f := newFixture(t, allow443, nil)
	s := f.session("laptop", agentA)
	q := v4(ProtoUDP, agentA, server, udp(5353, 53, []byte("q")))
	k := key(ProtoUDP, agentA, server, 5353, 53)
	f.from(s, q)
	f.settled(s, k)
	// Unreplied: the short timeout.
	f.clock.advance(DefaultTimeouts.UDPUnreplied)
	if n := f.e.Expire(f.clock.now()); n != 1 {
		t.Fatalf("unreplied udp: %d expired", n)
	}
	// Replied: the long one; the second flow is decided from the cache.
	if a := f.from(s, q); a != Forward {
		t.Fatalf("cached decision: %v", a)
	}
	if a := f.to(s, v4(ProtoUDP, server, agentA, udp(53, 5353, []byte("r"))), nil); a != Forward {
		t.Fatalf("reply: %v", a)
	}
	f.clock.advance(DefaultTimeouts.UDPUnreplied)
	if n := f.e.Expire(f.clock.now()); n != 0 {
		t.Fatal("replied udp flow expired at the unreplied timeout")
	}
	f.clock.advance(DefaultTimeouts.UDP)
	if n := f.e.Expire(f.clock.now()); n != 1 {
		t.Fatal("replied udp flow did not expire")
	}
}

func TestICMP(t *testing.T) {
	f := newFixture(t, allow443, nil)
	s := f.session("laptop", agentA)
	f.from(s, v4(ProtoICMP, agentA, server, icmpEcho(icmpEchoRequest, 7, 1)))
	if v := f.settled(s, key(ProtoICMP, agentA, server, 7, 0)); v != Allow {
		t.Fatalf("ping: %v", v)
	}
	if a := f.to(s, v4(ProtoICMP, server, agentA, icmpEcho(icmpEchoReply, 7, 1)), nil); a != Forward {
		t.Fatalf("echo reply: %v", a)
	}
	if a := f.to(s, v4(ProtoICMP, server, agentA, icmpEcho(icmpEchoReply, 8, 1)), nil); a != Drop {
		t.Fatalf("echo reply of another id: %v", a)
	}
	// An ICMP error quoting an allowed flow passes; one quoting nothing
	// known does not.
	udpq := v4(ProtoUDP, agentA, server, udp(5000, 53, []byte("q")))
	f.from(s, udpq)
	f.settled(s, key(ProtoUDP, agentA, server, 5000, 53))
	if a := f.to(s, v4(ProtoICMP, "10.20.0.1", agentA, icmpError(icmpUnreachable, udpq[:28])), nil); a != Forward {
		t.Fatalf("unreachable for an allowed flow: %v", a)
	}
	other := v4(ProtoUDP, agentA, server, udp(5001, 53, nil))
	if a := f.to(s, v4(ProtoICMP, "10.20.0.1", agentA, icmpError(icmpUnreachable, other)), nil); a != Drop {
		t.Fatalf("unreachable for an unknown flow: %v", a)
	}
	if f.e.Stats().DropRelated.Load() != 1 {
		t.Fatal("related drop not counted")
	}
	// ICMPv6 echo.
	f.from(s, v6(ProtoICMPv6, "fd00::5", "fd00:20::10", icmpEcho(icmp6EchoRequest, 3, 1)))
	if v := f.settled(s, key(ProtoICMPv6, "fd00::5", "fd00:20::10", 3, 0)); v != Allow {
		t.Fatalf("ping6: %v", v)
	}
	if a := f.to(s, v6(ProtoICMPv6, "fd00:20::10", "fd00::5", icmpEcho(icmp6EchoReply, 3, 1)), nil); a != Forward {
		t.Fatalf("echo6 reply: %v", a)
	}
}

func TestDenyAndUnsolicited(t *testing.T) {
	f := newFixture(t, allow443, nil)
	s := f.session("laptop", agentA)
	k := key(ProtoTCP, agentA, server, 40000, 22)
	f.from(s, v4(ProtoTCP, agentA, server, tcp(40000, 22, tcpSYN)))
	if v := f.settled(s, k); v != Deny {
		t.Fatalf("ssh: %v", v)
	}
	waitFor(t, "the denial", func() bool { return f.nDenials() == 1 })
	d := f.denial(0)
	if d.Key != k || d.Cut || d.Decision.Reason != "ssh is for admins" || len(d.Decision.PolicyIDs) != 1 || d.Decision.PolicyIDs[0] != "no-ssh" {
		t.Fatalf("denial %+v", d)
	}
	if a := f.from(s, v4(ProtoTCP, agentA, server, tcp(40000, 22, tcpSYN))); a != Drop {
		t.Fatalf("retry of a denied flow: %v", a)
	}
	if a := f.to(s, v4(ProtoTCP, server, agentA, tcp(22, 40000, tcpSYN|tcpACK)), nil); a != Drop {
		t.Fatalf("reply on a denied flow: %v", a)
	}
	if f.eng.Queries() != 1 || f.nDenials() != 1 {
		t.Fatalf("%d queries, %d denials: a denied flow must cost one of each", f.eng.Queries(), f.nDenials())
	}
	// Nothing the agent opened: dropped, no query.
	if a := f.to(s, v4(ProtoTCP, server, agentA, tcp(5555, 22, tcpSYN)), nil); a != Drop {
		t.Fatalf("unsolicited: %v", a)
	}
	if f.e.Stats().DropUnsolicited.Load() != 1 || f.eng.Queries() != 1 {
		t.Fatal("unsolicited packet not counted, or it was queried")
	}
}

func TestAgentToAgent(t *testing.T) {
	f := newFixture(t, flowtest.Rules(flowtest.Rule{Resource: "tcp/100.96.0.6:8080", PolicyID: "peer"}), nil)
	a, b := f.session("a", agentA), f.session("b", agentB)
	syn := v4(ProtoTCP, agentA, agentB, tcp(40000, 8080, tcpSYN))
	f.from(a, syn)
	if v := f.settled(a, key(ProtoTCP, agentA, agentB, 40000, 8080)); v != Allow {
		t.Fatalf("a -> b: %v", v)
	}
	// The packet reaches b through the kernel: b's side follows a's decision.
	if act := f.to(b, syn, a); act != Forward {
		t.Fatalf("a -> b at b: %v", act)
	}
	synack := v4(ProtoTCP, agentB, agentA, tcp(8080, 40000, tcpSYN|tcpACK))
	if act := f.from(b, synack); act != Forward {
		t.Fatalf("b's reply at b: %v", act)
	}
	if act := f.to(a, synack, b); act != Forward {
		t.Fatalf("b's reply at a: %v", act)
	}
	// b may not open a flow to a on the strength of a's flow to b.
	if act := f.to(a, v4(ProtoTCP, agentB, agentA, tcp(9, 22, tcpSYN)), b); act != Drop {
		t.Fatalf("b -> a unsolicited: %v", act)
	}
	if f.eng.Queries() != 1 {
		t.Fatalf("%d queries", f.eng.Queries())
	}
}

func TestTableBounds(t *testing.T) {
	f := newFixture(t, flowtest.AllowAll, func(c *Config) { c.Limits.MaxFlowsPerSession = 4; c.Limits.MaxFlows = 6 })
	a, b := f.session("a", agentA), f.session("b", agentB)
	for i := range 5 {
		act := f.from(a, v4(ProtoUDP, agentA, server, udp(uint16(1000+i), 53, nil)))
		if want := Held; i == 4 {
			if act != Drop {
				t.Fatalf("flow 5 of a session of 4: %v", act)
			}
		} else if act != want {
			t.Fatalf("flow %d: %v", i, act)
		}
	}
	for i := range 3 {
		act := f.from(b, v4(ProtoUDP, agentB, server, udp(uint16(1000+i), 53, nil)))
		if want := Held; i == 2 {
			if act != Drop {
				t.Fatalf("flow 7 of 6 globally: %v", act)
			}
		} else if act != want {
			t.Fatalf("b flow %d: %v", i, act)
		}
	}
	if got := f.e.Stats().DropTableFull.Load(); got != 2 {
		t.Fatalf("DropTableFull %d", got)
	}
	if got := f.e.Stats().Flows.Load(); got != 6 {
		t.Fatalf("%d flows", got)
	}
	f.e.RemoveSession(a)
	if got := f.e.Stats().Flows.Load(); got != 2 {
		t.Fatalf("%d flows after a session ended", got)
	}
	if act := f.from(b, v4(ProtoUDP, agentB, server, udp(2000, 53, nil))); act == Drop {
		t.Fatal("room freed by the ended session not usable")
	}
}

func TestHoldQueueBound(t *testing.T) {
	f := newFixture(t, allow443, nil)
	release := f.eng.Hold()
	defer release()
	s := f.session("laptop", agentA)
	k := key(ProtoTCP, agentA, server, 40000, 443)
	pkt := v4(ProtoTCP, agentA, server, tcp(40000, 443, tcpSYN))
	for i := range DefaultMaxHold + 2 {
		want := Held
		if i >= DefaultMaxHold {
			want = Drop
		}
		if a := f.from(s, pkt); a != want {
			t.Fatalf("packet %d of a pending flow: %v, want %v", i, a, want)
		}
	}
	// A reply cannot arrive before the request went out; if one does, it is dropped.
	if a := f.to(s, v4(ProtoTCP, server, agentA, tcp(443, 40000, tcpACK)), nil); a != Drop {
		t.Fatalf("reply to a pending flow: %v", a)
	}
	release()
	f.settled(s, k)
	waitFor(t, "the held packets", func() bool { return f.nReleased() == DefaultMaxHold })
	if got := f.e.Stats().DropHold.Load(); got != 3 {
		t.Fatalf("DropHold %d, want 3", got)
	}
}

func TestCacheHitsAndInvalidation(t *testing.T) {
	decide := func(q policy.Query) policy.Decision {
		ok := strings.Contains(string(q.Context), `"disk_encrypted":"yes"`)
		return policy.Decision{Allow: ok, DeterminingPolicies: []string{"posture"}}
	}
	f := newFixture(t, decide, nil)
	s := f.session("laptop", agentA)
	f.e.SetPosture(s, "linux", "1.0", map[string]string{"disk_encrypted": "yes"})
	open := func(port uint16) Verdict {
		t.Helper()
		f.from(s, v4(ProtoTCP, agentA, server, tcp(port, 443, tcpSYN)))
		return f.settled(s, key(ProtoTCP, agentA, server, port, 443))
	}
	if v := open(1000); v != Allow {
		t.Fatalf("first: %v", v)
	}
	// Same destination, another source port: the cache answers.
	if a := f.from(s, v4(ProtoTCP, agentA, server, tcp(1001, 443, tcpSYN))); a != Forward {
		t.Fatalf("cache hit: %v", a)
	}
	if f.eng.Queries() != 1 || f.e.Stats().CacheHits.Load() != 1 {
		t.Fatalf("%d queries, %d hits", f.eng.Queries(), f.e.Stats().CacheHits.Load())
	}
	// Another agent with the same posture is another principal: a miss.
	s2 := f.session("other", agentB)
	f.e.SetPosture(s2, "linux", "1.0", map[string]string{"disk_encrypted": "yes"})
	f.from(s2, v4(ProtoTCP, agentB, server, tcp(1000, 443, tcpSYN)))
	f.settled(s2, key(ProtoTCP, agentB, server, 1000, 443))
	if f.eng.Queries() != 2 {
		t.Fatalf("%d queries after another principal", f.eng.Queries())
	}
	// The posture changes: the cache key changes and the open flows are
	// re-evaluated and cut.
	if n := f.e.SetPosture(s, "linux", "1.0", map[string]string{"disk_encrypted": "no"}); n != 2 {
		t.Fatalf("re-checked %d flows, want 2", n)
	}
	waitFor(t, "two cuts", func() bool { return f.e.Stats().Cut.Load() == 2 })
	if a := f.from(s, v4(ProtoTCP, agentA, server, tcp(1000, 443, tcpACK))); a != Drop {
		t.Fatalf("packet of a cut flow: %v", a)
	}
	// A policy change with the same posture: ReevaluateAll empties the
	// cache and asks again.
	q := f.eng.Queries()
	f.eng.SetDecide(flowtest.AllowAll)
	if n := f.e.ReevaluateAll(); n != 3 {
		t.Fatalf("ReevaluateAll re-checked %d flows, want 3", n)
	}
	waitFor(t, "two flows restored", func() bool { return f.e.Stats().Restored.Load() == 2 })
	if f.eng.Queries() == q {
		t.Fatal("policy change answered from the cache")
	}
	if v := verdict(s, key(ProtoTCP, agentA, server, 1000, 443)); v != Allow {
		t.Fatalf("after the policy change: %v", v)
	}
}

// TestCacheEviction: a full cache drops what expired first, then the
// oldest entry; a key put again is as young as its last Put; the queue
// behind it stays bounded however many Puts pass.
func TestCacheEviction(t *testing.T) {
	c := NewCache(4, 10*time.Second)
	d := &Decision{Allow: true}
	k := func(port int) *CacheKey {
		return &CacheKey{Version: 1, Principal: "a", Dst: addr(server), Port: uint16(port), Proto: ProtoTCP}
	}
	sec := int64(time.Second)
	for i := range 4 {
		c.Put(k(i), d, int64(i)*sec)
	}
	// Port 0 is put again: now the youngest.
	c.Put(k(0), d, 4*sec)
	// Full: port 1, the oldest, makes room.
	c.Put(k(10), d, 5*sec)
	if _, ok := c.Get(k(1), 5*sec); ok {
		t.Fatal("the oldest entry was kept")
	}
	for _, p := range []int{0, 2, 3, 10} {
		if _, ok := c.Get(k(p), 5*sec); !ok {
			t.Fatalf("port %d evicted", p)
		}
	}
	// At 13.5 s ports 2 and 3 (put at 2 s and 3 s) expired: a Put drops
	// them, not a live one.
	c.Put(k(11), d, 13*sec+sec/2)
	if c.Len() != 3 {
		t.Fatalf("%d entries after the expired ones went, want 3", c.Len())
	}
	for _, p := range []int{0, 10, 11} {
		if _, ok := c.Get(k(p), 13*sec+sec/2); !ok {
			t.Fatalf("live port %d dropped", p)
		}
	}
	// Many Puts of the same few keys: the queue stays bounded.
	for i := range 100000 {
		c.Put(k(i%3), d, 13*sec+sec/2)
	}
	c.mu.Lock()
	q := len(c.q) - c.head
	c.mu.Unlock()
	if c.Len() > 4 || q > 2*4+64 {
		t.Fatalf("%d entries, %d queued", c.Len(), q)
	}
}

func TestCacheTTLAndVersion(t *testing.T) {
	c := NewCache(2, time.Second)
	k1 := CacheKey{Version: 1, Principal: "a", Dst: addr(server), Port: 443, Proto: ProtoTCP}
	d := &Decision{Allow: true}
	c.Put(&k1, d, 0)
	if got, ok := c.Get(&k1, int64(time.Second)-1); !ok || got != d {
		t.Fatal("miss within the TTL")
	}
	if _, ok := c.Get(&k1, int64(time.Second)); ok {
		t.Fatal("hit after the TTL")
	}
	k2 := k1
	k2.Version = 2
	if _, ok := c.Get(&k2, 0); ok {
		t.Fatal("hit under another version")
	}
	for i := range 10 {
		k := k1
		k.Port = uint16(i)
		c.Put(&k, d, 0)
		if c.Len() > 2 {
			t.Fatalf("cache of 2 holds %d", c.Len())
		}
	}
	c.Purge()
	if c.Len() != 0 {
		t.Fatal("purge left entries")
	}
}

func TestFailClosed(t *testing.T) {
	t.Run("no engine", func(t *testing.T) {
		f := newFixture(t, nil, nil)
		s := f.session("laptop", agentA)
		f.from(s, v4(ProtoTCP, agentA, server, tcp(1, 443, tcpSYN)))
		if v := f.settled(s, key(ProtoTCP, agentA, server, 1, 443)); v != Deny {
			t.Fatalf("without an engine: %v", v)
		}
		waitFor(t, "the denial", func() bool { return f.nDenials() == 1 })
		if d := f.denial(0); !d.Decision.FailClosed {
			t.Fatalf("denial %+v not marked fail closed", d)
		}
		if f.e.Stats().FailClosed.Load() != 1 || f.e.Cache().Len() != 0 {
			t.Fatal("fail-closed decision not counted or cached")
		}
		if n := strings.Count(f.logs.String(), "no policy engine"); n != 1 {
			t.Fatalf("logged %d times", n)
		}
	})
	t.Run("engine error and recovery", func(t *testing.T) {
		f := newFixture(t, allow443, nil)
		s := f.session("laptop", agentA)
		f.eng.SetError(flowtest.ErrDown)
		for port := range uint16(3) {
			f.from(s, v4(ProtoTCP, agentA, server, tcp(port+1, 443, tcpSYN)))
			if v := f.settled(s, key(ProtoTCP, agentA, server, port+1, 443)); v != Deny {
				t.Fatalf("engine down: %v", v)
			}
		}
		if f.e.Cache().Len() != 0 {
			t.Fatal("a fail-closed decision was cached")
		}
		if n := strings.Count(f.logs.String(), "[ERROR] policy engine unavailable"); n != 1 {
			t.Fatalf("outage logged %d times, want once:\n%s", n, f.logs.String())
		}
		if f.e.Stats().FailClosed.Load() != 3 || f.e.Stats().EngineErrors.Load() < 1 {
			t.Fatal("fail-closed decisions or engine errors not counted")
		}
		f.eng.SetError(nil)
		f.from(s, v4(ProtoTCP, agentA, server, tcp(10, 443, tcpSYN)))
		if v := f.settled(s, key(ProtoTCP, agentA, server, 10, 443)); v != Allow {
			t.Fatalf("after recovery: %v", v)
		}
		if n := strings.Count(f.logs.String(), "policy engine available again"); n != 1 {
			t.Fatalf("recovery logged %d times", n)
		}
		// Re-evaluation restores the flows denied during the outage.
		f.e.Reevaluate(s)
		waitFor(t, "restored flows", func() bool { return f.e.Stats().Restored.Load() == 3 })
	})
	t.Run("answer out of shape", func(t *testing.T) {
		f := newFixture(t, nil, func(c *Config) { c.Engine = shortEngine{} })
		s := f.session("laptop", agentA)
		f.from(s, v4(ProtoTCP, agentA, server, tcp(1, 443, tcpSYN)))
		if v := f.settled(s, key(ProtoTCP, agentA, server, 1, 443)); v != Deny {
			t.Fatalf("short answer: %v", v)
		}
	})
	t.Run("evaluation errors deny", func(t *testing.T) {
		f := newFixture(t, func(policy.Query) policy.Decision {
			return policy.Decision{Allow: true, Errors: []string{"attribute missing"}}
		}, nil)
		s := f.session("laptop", agentA)
		f.from(s, v4(ProtoTCP, agentA, server, tcp(1, 443, tcpSYN)))
		if v := f.settled(s, key(ProtoTCP, agentA, server, 1, 443)); v != Deny {
			t.Fatalf("decision with errors: %v", v)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		f := newFixture(t, allow443, func(c *Config) { c.EvalTimeout = 20 * time.Millisecond })
		release := f.eng.Hold()
		defer release()
		s := f.session("laptop", agentA)
		f.from(s, v4(ProtoTCP, agentA, server, tcp(1, 443, tcpSYN)))
		if v := f.settled(s, key(ProtoTCP, agentA, server, 1, 443)); v != Deny {
			t.Fatalf("hung engine: %v", v)
		}
	})
}

// shortEngine answers with no decisions, whatever it is asked.
type shortEngine struct{ policy.Engine }

func (shortEngine) Evaluate(context.Context, *policy.EvaluateRequest) (*policy.EvaluateResponse, error) {
	return &policy.EvaluateResponse{Version: 1}, nil
}

func TestReportOnly(t *testing.T) {
	f := newFixture(t, func(policy.Query) policy.Decision {
		return policy.Decision{Allow: true, ReportOnly: true, DeterminingPolicies: []string{"no-ssh"}, Reasons: []string{"ssh is for admins"}}
	}, nil)
	s := f.session("laptop", agentA)
	f.from(s, v4(ProtoTCP, agentA, server, tcp(1, 22, tcpSYN)))
	if v := f.settled(s, key(ProtoTCP, agentA, server, 1, 22)); v != Allow {
		t.Fatalf("report-only: %v", v)
	}
	if f.e.Stats().ReportOnly.Load() != 1 || f.nDenials() != 0 {
		t.Fatal("report-only decision not counted, or denied")
	}
	if !strings.Contains(f.logs.String(), "report-only") || !strings.Contains(f.logs.String(), "ssh is for admins") {
		t.Fatalf("would-be denial not logged: %s", f.logs.String())
	}
}

func TestReevaluateCutsOpenFlow(t *testing.T) {
	f := newFixture(t, allow443, nil)
	s := f.session("laptop", agentA)
	k := key(ProtoTCP, agentA, server, 40000, 443)
	f.from(s, v4(ProtoTCP, agentA, server, tcp(40000, 443, tcpSYN)))
	f.settled(s, k)
	f.to(s, v4(ProtoTCP, server, agentA, tcp(443, 40000, tcpSYN|tcpACK)), nil)
	f.eng.SetDecide(flowtest.Rules(flowtest.Rule{Resource: "tcp/10.20.0.10:443", PolicyID: "lockdown", Deny: true, Reason: "maintenance"}))
	if n := f.e.ReevaluateAll(); n != 1 {
		t.Fatalf("re-checked %d", n)
	}
	waitFor(t, "the cut", func() bool { return f.nDenials() == 1 })
	d := f.denial(0)
	if !d.Cut || d.Key != k || d.Decision.Reason != "maintenance" || d.Decision.PolicyIDs[0] != "lockdown" {
		t.Fatalf("denial %+v", d)
	}
	for _, pkt := range [][]byte{
		v4(ProtoTCP, agentA, server, tcp(40000, 443, tcpACK)),
	} {
		if a := f.from(s, pkt); a != Drop {
			t.Fatalf("agent packet after the cut: %v", a)
		}
	}
	if a := f.to(s, v4(ProtoTCP, server, agentA, tcp(443, 40000, tcpACK)), nil); a != Drop {
		t.Fatalf("server packet after the cut: %v", a)
	}
}

// lateEngine decides at once but answers only when released: its answer
// is of the policy in force when it was asked.
type lateEngine struct {
	policy.Engine
	mu      sync.Mutex
	decide  flowtest.DecideFunc
	entered chan struct{}
	gate    chan struct{}
}

func (l *lateEngine) Evaluate(ctx context.Context, req *policy.EvaluateRequest) (*policy.EvaluateResponse, error) {
	l.mu.Lock()
	out := &policy.EvaluateResponse{Version: 1}
	for _, q := range req.Queries {
		out.Decisions = append(out.Decisions, l.decide(q))
	}
	l.mu.Unlock()
	l.entered <- struct{}{}
	select {
	case <-l.gate:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return out, nil
}

func TestReevaluateDuringPendingAsksAgain(t *testing.T) {
	late := &lateEngine{decide: allow443, entered: make(chan struct{}, 16), gate: make(chan struct{})}
	f := newFixture(t, nil, func(c *Config) { c.Engine = late })
	s := f.session("laptop", agentA)
	k := key(ProtoTCP, agentA, server, 1, 443)
	f.from(s, v4(ProtoTCP, agentA, server, tcp(1, 443, tcpSYN)))
	<-late.entered
	// The policy changes while the first answer (an allow) is on its
	// way: that answer is stale and the flow is asked again.
	late.mu.Lock()
	late.decide = flowtest.Rules()
	late.mu.Unlock()
	f.e.ReevaluateAll()
	close(late.gate)
	if v := f.settled(s, k); v != Deny {
		t.Fatalf("pending flow across a policy change: %v", v)
	}
	// The stale allow was not cached either.
	f.from(s, v4(ProtoTCP, agentA, server, tcp(2, 443, tcpSYN)))
	if v := f.settled(s, key(ProtoTCP, agentA, server, 2, 443)); v != Deny {
		t.Fatalf("second flow: %v", v)
	}
}

func TestFragments(t *testing.T) {
	f := newFixture(t, allow443, nil)
	s := f.session("laptop", agentA)
	first := v4frag(ProtoUDP, agentA, server, 99, 0, true, udp(5353, 53, make([]byte, 16)))
	later := v4frag(ProtoUDP, agentA, server, 99, 3, false, make([]byte, 8))
	if a := f.from(s, later); a != Drop {
		t.Fatalf("later fragment before the first: %v", a)
	}
	if a := f.from(s, first); a != Held {
		t.Fatalf("first fragment: %v", a)
	}
	if a := f.from(s, later); a != Held {
		t.Fatalf("later fragment of a pending flow: %v", a)
	}
	f.settled(s, key(ProtoUDP, agentA, server, 5353, 53))
	waitFor(t, "both fragments released", func() bool { return f.nReleased() == 2 })
	if a := f.from(s, later); a != Forward {
		t.Fatalf("later fragment of an allowed flow: %v", a)
	}
	// Reply fragments follow the reply direction.
	rfirst := v4frag(ProtoUDP, server, agentA, 7, 0, true, udp(53, 5353, make([]byte, 16)))
	rlater := v4frag(ProtoUDP, server, agentA, 7, 3, false, make([]byte, 8))
	if a := f.to(s, rfirst, nil); a != Forward {
		t.Fatalf("reply first fragment: %v", a)
	}
	if a := f.to(s, rlater, nil); a != Forward {
		t.Fatalf("reply later fragment: %v", a)
	}
	// The id is forgotten after Timeouts.Fragment.
	f.clock.advance(DefaultTimeouts.Fragment)
	if a := f.from(s, later); a != Drop {
		t.Fatalf("later fragment after the id expired: %v", a)
	}
	// IPv6.
	f6 := v6frag(ProtoUDP, "fd00::5", "fd00:20::10", 5, 0, true, udp(1, 2, make([]byte, 16)))
	l6 := v6frag(ProtoUDP, "fd00::5", "fd00:20::10", 5, 3, false, make([]byte, 8))
	f.from(s, f6)
	f.settled(s, key(ProtoUDP, "fd00::5", "fd00:20::10", 1, 2))
	if a := f.from(s, l6); a != Drop {
		t.Fatalf("later v6 fragment of a denied flow: %v", a)
	}
}

func TestDenialRate(t *testing.T) {
	f := newFixture(t, flowtest.Rules(), func(c *Config) { c.DenialsPerSecond = 3 })
	s := f.session("laptop", agentA)
	for port := range uint16(10) {
		f.from(s, v4(ProtoTCP, agentA, server, tcp(port+1, 22, tcpSYN)))
	}
	waitFor(t, "ten decisions", func() bool { return f.e.Stats().Denied.Load() == 10 })
	if f.nDenials() != 3 || f.e.Stats().DenialsSuppressed.Load() != 7 {
		t.Fatalf("%d denials, %d suppressed", f.nDenials(), f.e.Stats().DenialsSuppressed.Load())
	}
	f.clock.advance(time.Second)
	f.from(s, v4(ProtoTCP, agentA, server, tcp(100, 22, tcpSYN)))
	waitFor(t, "a denial in the next second", func() bool { return f.nDenials() == 4 })
}

func TestConcurrentFlows(t *testing.T) {
	f := newFixture(t, allow443, nil)
	var wg sync.WaitGroup
	for g := range 8 {
		s := f.session(fmt.Sprint("agent", g), fmt.Sprintf("100.96.1.%d", g+1))
		wg.Go(func() {
			src := fmt.Sprintf("100.96.1.%d", g+1)
			for i := range 200 {
				f.from(s, v4(ProtoTCP, src, server, tcp(uint16(1000+i%50), 443, tcpSYN)))
				f.to(s, v4(ProtoTCP, server, src, tcp(443, uint16(1000+i%50), tcpACK)), nil)
				if i%40 == 0 {
					f.e.Reevaluate(s)
				}
			}
		})
	}
	wg.Go(func() {
		for range 5 {
			f.e.ReevaluateAll()
			f.e.Expire(f.clock.now())
		}
	})
	wg.Wait()
	waitFor(t, "every flow decided", func() bool {
		return f.e.Stats().Allowed.Load()+f.e.Stats().Denied.Load() >= f.e.Stats().FlowsCreated.Load()
	})
	if f.e.Stats().Flows.Load() != 8*50 {
		t.Fatalf("%d flows, want 400", f.e.Stats().Flows.Load())
	}
}

func TestConfigRefused(t *testing.T) {
	for _, c := range []Config{
		{},
		{Now: time.Now, Limits: Limits{MaxFlows: -1}},
		{Now: time.Now, CacheTTL: -1},
		{Now: time.Now, MaxBatch: policy.MaxBatch + 1},
	} {
		if _, err := New(c); !errors.Is(err, ErrConfig) {
			t.Fatalf("New(%+v) = %v", c, err)
		}
	}
}

func TestDefaultQuery(t *testing.T) {
	subj := Subject{AgentID: "laptop-42", Address: addr(agentA), OS: "linux \"x\"", AgentVersion: "1.0",
		Facts: map[string]string{"disk.encrypted": "true", "quote": `"\`}}
	for _, with := range []bool{false, true} {
		if with {
			subj.posture = subj.postureJSON()
		}
		q, ents := DefaultQuery(&subj, Dest{Addr: addr(server), Port: 443, Proto: ProtoTCP}, testNow)
		if q.Principal != (policy.EntityRef{Type: "Agent", ID: "laptop-42"}) || q.Action != (policy.EntityRef{Type: "Action", ID: "reach"}) ||
			q.Resource != (policy.EntityRef{Type: "Service", ID: "tcp/10.20.0.10:443"}) || len(ents) != 2 || ents[0].Ref != q.Principal ||
			ents[1].Ref != q.Resource {
			t.Fatalf("query %+v, entities %+v", q, ents)
		}
		var ctx struct {
			Posture struct {
				OS           string `json:"os"`
				AgentVersion string `json:"agent_version"`
				Tags         map[string]string
			}
			Source      struct{ IP string }
			Destination struct {
				IP       string
				Port     int
				Protocol string
			}
			Time time.Time
		}
		if err := json.Unmarshal(q.Context, &ctx); err != nil {
			t.Fatalf("context %s: %v", q.Context, err)
		}
		if ctx.Posture.OS != subj.OS || ctx.Posture.AgentVersion != "1.0" || ctx.Posture.Tags["quote"] != `"\` || ctx.Source.IP != agentA ||
			ctx.Destination.IP != server || ctx.Destination.Port != 443 || ctx.Destination.Protocol != "tcp" || !ctx.Time.Equal(testNow) {
			t.Fatalf("context %s", q.Context)
		}
		var attrs map[string]any
		if err := json.Unmarshal(ents[1].Attributes, &attrs); err != nil || attrs["port"] != float64(443) || attrs["ip"] != server {
			t.Fatalf("attributes %s: %v", ents[1].Attributes, err)
		}
	}
	q, _ := DefaultQuery(&subj, Dest{Addr: addr("fd00::1"), Proto: ProtoICMPv6}, testNow)
	if q.Resource.ID != "icmpv6/fd00::1" || !json.Valid(q.Context) {
		t.Fatalf("icmpv6 query %+v", q)
	}
}

// TestVersionChangeInvalidates: an answer under a newer policy set
// version empties the cache, so decisions of the older one are asked
// again even without ReevaluateAll.
func TestVersionChangeInvalidates(t *testing.T) {
	f := newFixture(t, allow443, nil)
	s := f.session("laptop", agentA)
	f.from(s, v4(ProtoTCP, agentA, server, tcp(1, 443, tcpSYN)))
	f.settled(s, key(ProtoTCP, agentA, server, 1, 443))
	if a := f.from(s, v4(ProtoTCP, agentA, server, tcp(2, 443, tcpSYN))); a != Forward {
		t.Fatalf("cached: %v", a)
	}
	f.eng.SetDecide(flowtest.Rules(flowtest.Rule{Resource: "udp/10.20.0.10:53", PolicyID: "dns"}))
	// Another destination: a query, answered under the new version.
	f.from(s, v4(ProtoUDP, agentA, server, udp(1, 53, nil)))
	f.settled(s, key(ProtoUDP, agentA, server, 1, 53))
	// The https decision of the old version is gone from the cache.
	q := f.eng.Queries()
	f.from(s, v4(ProtoTCP, agentA, server, tcp(3, 443, tcpSYN)))
	if v := f.settled(s, key(ProtoTCP, agentA, server, 3, 443)); v != Deny || f.eng.Queries() != q+1 {
		t.Fatalf("after the version moved: %v, %d queries (was %d)", v, f.eng.Queries(), q)
	}
}

func TestTCPReopenAfterClose(t *testing.T) {
	f := newFixture(t, allow443, nil)
	s := f.session("laptop", agentA)
	k := key(ProtoTCP, agentA, server, 40002, 443)
	f.from(s, v4(ProtoTCP, agentA, server, tcp(40002, 443, tcpSYN)))
	f.settled(s, k)
	f.to(s, v4(ProtoTCP, server, agentA, tcp(443, 40002, tcpRST)), nil)
	// A new connection on the same ports before the closed one lingered
	// out: it opens again, and an answer keeps it past TCPClosed.
	if a := f.from(s, v4(ProtoTCP, agentA, server, tcp(40002, 443, tcpSYN))); a != Forward {
		t.Fatalf("SYN on a closed flow: %v", a)
	}
	f.to(s, v4(ProtoTCP, server, agentA, tcp(443, 40002, tcpSYN|tcpACK)), nil)
	f.clock.advance(DefaultTimeouts.TCPClosed)
	if n := f.e.Expire(f.clock.now()); n != 0 {
		t.Fatal("reopened connection expired at the closed timeout")
	}
}

func TestPendingExpiresAndSessionEnd(t *testing.T) {
	f := newFixture(t, allow443, nil)
	release := f.eng.Hold()
	defer release()
	s := f.session("laptop", agentA)
	f.from(s, v4(ProtoTCP, agentA, server, tcp(1, 443, tcpSYN)))
	f.from(s, v4(ProtoTCP, agentA, server, tcp(2, 443, tcpSYN)))
	// A pending flow whose answer does not come is forgotten after
	// Timeouts.Pending, its held packets dropped.
	f.clock.advance(DefaultTimeouts.Pending)
	if n := f.e.Expire(f.clock.now()); n != 2 {
		t.Fatalf("%d pending flows expired, want 2", n)
	}
	if f.e.Stats().DropHold.Load() != 2 {
		t.Fatalf("DropHold %d", f.e.Stats().DropHold.Load())
	}
	// A session that ends with a flow pending: the late answer releases
	// nothing.
	s2 := f.session("other", agentB)
	f.from(s2, v4(ProtoTCP, agentB, server, tcp(1, 443, tcpSYN)))
	f.e.RemoveSession(s2)
	release()
	// A later flow of a live session: its answer comes after the ended
	// session's (one goroutine delivers in order).
	f.from(s, v4(ProtoUDP, agentA, server, udp(7, 53, nil)))
	waitFor(t, "the live flow's release", func() bool { return f.nReleased() >= 1 })
	if f.nReleased() != 1 || f.e.Stats().Flows.Load() != 1 {
		t.Fatalf("%d released, %d flows: the ended session's packet went out", f.nReleased(), f.e.Stats().Flows.Load())
	}
}

func TestSweepInterval(t *testing.T) {
	f := newFixture(t, allow443, nil)
	s := f.session("laptop", agentA)
	f.from(s, v4(ProtoUDP, agentA, server, udp(1, 53, nil)))
	f.settled(s, key(ProtoUDP, agentA, server, 1, 53))
	f.clock.advance(4 * time.Second)
	f.from(s, v4(ProtoUDP, agentA, server, udp(2, 53, nil)))
	f.settled(s, key(ProtoUDP, agentA, server, 2, 53))
	f.clock.advance(DefaultTimeouts.UDPUnreplied - 4*time.Second)
	if n := f.e.Sweep(f.clock.now()); n != 1 {
		t.Fatalf("first sweep: %d expired, want 1", n)
	}
	// The second flow is idle past its timeout 4 s later, within the
	// sweep interval: it waits for the next walk.
	f.clock.advance(4 * time.Second)
	if n := f.e.Sweep(f.clock.now()); n != 0 {
		t.Fatalf("a sweep within the interval walked: %d", n)
	}
	f.clock.advance(SweepInterval - 4*time.Second)
	if n := f.e.Sweep(f.clock.now()); n != 1 {
		t.Fatalf("sweep after the interval: %d", n)
	}
}
