package flow

import (
	"fmt"
	"testing"
	"time"

	"github.com/avonzt/avon/core/gateway/flow/flowtest"
)

// BenchmarkEstablished is the per-packet cost of a packet of an allowed
// flow (the inner packet already parsed by transport.ParseInner, as on
// the gateway's data path).
func BenchmarkEstablished(b *testing.B) {
	f := newFixture(b, flowtest.AllowAll, nil)
	s := f.session("laptop", agentA)
	// Some other flows in the table.
	for i := range 1000 {
		f.from(s, v4(ProtoUDP, agentA, server, udp(uint16(2000+i), 53, nil)))
	}
	pkt := v4(ProtoTCP, agentA, server, tcp(40000, 443, tcpACK))
	f.from(s, pkt)
	f.settled(s, key(ProtoTCP, agentA, server, 40000, 443))
	in := f.inner(pkt)
	now := f.clock.now()
	b.ReportAllocs()
	b.ResetTimer()
	cpu := startCPU(b)
	for b.Loop() {
		if f.e.FromAgent(s, pkt, in, now) != Forward {
			b.Fatal("not forwarded")
		}
	}
	cpu.report(b)
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pkt/s")
}

// BenchmarkEstablishedParallel is the same from every core at once, on
// separate sessions.
func BenchmarkEstablishedParallel(b *testing.B) {
	f := newFixture(b, flowtest.AllowAll, nil)
	type sp struct {
		s   *Session
		pkt []byte
	}
	var ss []sp
	for i := range 64 {
		src := fmt.Sprintf("100.96.2.%d", i+1)
		s := f.session(src, src)
		pkt := v4(ProtoTCP, src, server, tcp(40000, 443, tcpACK))
		f.from(s, pkt)
		f.settled(s, key(ProtoTCP, src, server, 40000, 443))
		ss = append(ss, sp{s, pkt})
	}
	now := f.clock.now()
	var next int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := int(next) % len(ss)
		next++
		x := ss[i]
		in := f.inner(x.pkt)
		for pb.Next() {
			f.e.FromAgent(x.s, x.pkt, in, now)
		}
	})
}

// BenchmarkNewFlowCacheHit is a new flow decided from the cache: the
// flow is created, allowed and forwarded without the engine.
func BenchmarkNewFlowCacheHit(b *testing.B) {
	f := newFixture(b, flowtest.AllowAll, func(c *Config) { c.CacheTTL = time.Hour })
	s := f.session("laptop", agentA)
	f.from(s, v4(ProtoTCP, agentA, server, tcp(1, 443, tcpSYN)))
	f.settled(s, key(ProtoTCP, agentA, server, 1, 443))
	pkts := make([][]byte, DefaultMaxFlowsPerSession-1) // a full session table, then a fresh session
	for i := range pkts {
		pkts[i] = v4(ProtoTCP, agentA, server, tcp(uint16(i+2), 443, tcpSYN))
	}
	now := f.clock.now()
	b.ReportAllocs()
	b.ResetTimer()
	cpu := startCPU(b)
	i := 0
	for b.Loop() {
		if i == len(pkts) {
			b.StopTimer()
			f.e.RemoveSession(s)
			s = f.session("laptop", agentA)
			i = 0
			b.StartTimer()
		}
		p := pkts[i]
		i++
		if f.e.FromAgent(s, p, f.inner(p), now) != Forward {
			b.Fatal("not forwarded")
		}
	}
	cpu.report(b)
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "flows/s")
}

// BenchmarkCacheGet is one decision cache lookup that hits.
func BenchmarkCacheGet(b *testing.B) {
	c := NewCache(DefaultCacheSize, time.Hour)
	k := CacheKey{Version: 3, Principal: "laptop-42", Subject: 0x1234, Dst: addr(server), Port: 443, Proto: ProtoTCP}
	c.Put(&k, &Decision{Allow: true}, 0)
	b.ReportAllocs()
	cpu := startCPU(b)
	for b.Loop() {
		if _, ok := c.Get(&k, 1); !ok {
			b.Fatal("miss")
		}
	}
	cpu.report(b)
}

// BenchmarkCachePutFull is one Put into a full decision cache (each a new
// key, so each evicts): constant whatever the cache's size.
func BenchmarkCachePutFull(b *testing.B) {
	for _, size := range []int{1 << 10, DefaultCacheSize, 1 << 20} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			c := NewCache(size, time.Hour)
			d := &Decision{Allow: true}
			k := CacheKey{Version: 3, Principal: "laptop-42", Subject: 0x1234, Dst: addr(server), Proto: ProtoTCP}
			i := 0
			put := func() {
				k.Port, k.Subject = uint16(i), uint64(i>>16)
				c.Put(&k, d, int64(i))
				i++
			}
			for range size {
				put()
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				put()
			}
		})
	}
}

// BenchmarkDecisionsThroughBatcher is new-flow decisions per second with
// every query going to an in-process engine through the batcher (distinct
// destinations, no cache hits).
func BenchmarkDecisionsThroughBatcher(b *testing.B) {
	f := newFixture(b, flowtest.AllowAll, func(c *Config) { c.Limits.MaxFlowsPerSession = 1 << 20; c.Limits.MaxFlows = 1 << 22 })
	s := f.session("laptop", agentA)
	now := f.clock.now()
	b.ReportAllocs()
	b.ResetTimer()
	cpu := startCPU(b)
	n := 0
	for b.Loop() {
		p := v4(ProtoTCP, agentA, fmt.Sprintf("10.%d.%d.%d", 40+n>>16&0xff, n>>8&0xff, n&0xff), tcp(1, 443, tcpSYN))
		n++
		f.e.FromAgent(s, p, f.inner(p), now)
	}
	waitBench(b, "every decision", func() bool { return f.e.Stats().Allowed.Load() >= uint64(n) })
	cpu.report(b)
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "decisions/s")
}

// BenchmarkCutAfterPolicyChange is the time from ReevaluateAll to the last
// cut of 10,000 open flows (1,000 sessions of 10 flows, distinct
// destinations per session) when the new policy denies them all: what the
// "cut within one second" bound rests on (engine in process).
func BenchmarkCutAfterPolicyChange(b *testing.B) {
	const sessions, perSession = 1000, 10
	for b.Loop() {
		b.StopTimer()
		f := newFixture(b, flowtest.AllowAll, func(c *Config) { c.DenialsPerSecond = perSession })
		var ss []*Session
		for i := range sessions {
			src := fmt.Sprintf("100.97.%d.%d", i/250, i%250+1)
			s := f.session(src, src)
			ss = append(ss, s)
			for j := range perSession {
				f.from(s, v4(ProtoTCP, src, fmt.Sprintf("10.21.%d.%d", j, i%250+1), tcp(1000, 443, tcpSYN)))
			}
		}
		waitBench(b, "flows allowed", func() bool { return f.e.Stats().Allowed.Load() == sessions*perSession })
		f.eng.SetDecide(flowtest.Rules())
		b.StartTimer()
		start := time.Now()
		f.e.ReevaluateAll()
		waitBench(b, "every flow cut", func() bool { return f.e.Stats().Cut.Load() == sessions*perSession })
		b.ReportMetric(float64(time.Since(start).Microseconds())/1000, "ms-to-cut-all")
		b.StopTimer()
		f.e.Close()
		b.StartTimer()
	}
}
