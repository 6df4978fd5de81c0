package flow

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/avonzt/avon/sdk/plugin"
	"github.com/avonzt/avon/sdk/plugintest"
	"github.com/avonzt/avon/sdk/policy/policyrpc"
)

func TestMain(m *testing.M) { plugintest.Main(m) }

const allowPlugin = "github.com/avonzt/avon/core/gateway/flow/flowtest/allowplugin"

// TestThroughPluginProcess decides flows through a real policy plugin
// process; when the process dies, new flows fail closed, and open flows
// stay as decided until re-checked (then they fail closed too).
func TestThroughPluginProcess(t *testing.T) {
	bin := plugintest.Build(t, allowPlugin)
	st := plugintest.Start(t, bin, plugin.KindPolicy, plugintest.Options{Config: []byte(`{}`)})
	f := newFixture(t, nil, func(c *Config) { c.Engine = policyrpc.NewClient(st.Conn.Conn); c.EvalTimeout = 5 * time.Second })
	s := f.session("laptop", agentA)
	for port := range uint16(50) {
		f.from(s, v4(ProtoTCP, agentA, fmt.Sprintf("10.20.1.%d", port+1), tcp(1000, 443, tcpSYN)))
	}
	waitFor(t, "fifty decisions", func() bool { return f.e.Stats().Allowed.Load() == 50 })
	waitFor(t, "fifty releases", func() bool { return f.nReleased() >= 50 }) // counted before Release runs
	if f.nReleased() != 50 {
		t.Fatalf("%d released", f.nReleased())
	}
	if calls := f.e.Stats().EngineCalls.Load(); calls > 50 {
		t.Fatalf("%d calls", calls)
	}

	// The plugin process dies.
	st.Client.Kill()
	f.from(s, v4(ProtoTCP, agentA, "10.20.2.1", tcp(1000, 443, tcpSYN)))
	if v := f.settled(s, key(ProtoTCP, agentA, "10.20.2.1", 1000, 443)); v != Deny {
		t.Fatalf("with the plugin dead: %v", v)
	}
	if f.e.Stats().FailClosed.Load() != 1 {
		t.Fatal("fail closed not counted")
	}
	// A policy change re-checks the open flows: they fail closed too.
	f.e.ReevaluateAll()
	waitFor(t, "open flows cut", func() bool { return f.e.Stats().Cut.Load() == 50 })
}

// BenchmarkDecisionsThroughPlugin is new-flow decisions per second through
// a real plugin process (gRPC, AutoMTLS) with batching: every flow has
// its own destination, so every decision is a query.
func BenchmarkDecisionsThroughPlugin(b *testing.B) {
	bin := plugintest.Build(b, allowPlugin)
	st := plugintest.Start(b, bin, plugin.KindPolicy, plugintest.Options{Config: []byte(`{}`)})
	f := newFixture(b, nil, func(c *Config) {
		c.Engine = policyrpc.NewClient(st.Conn.Conn)
		c.Limits.MaxFlowsPerSession, c.Limits.MaxFlows = 1<<22, 1<<22
		c.EvalTimeout = 30 * time.Second
	})
	s := f.session("laptop", agentA)
	pkts := make([][]byte, b.N)
	for i := range pkts {
		pkts[i] = v4(ProtoTCP, agentA, fmt.Sprintf("10.%d.%d.%d", 40+i>>16&0xff, i>>8&0xff, i&0xff), tcp(1, 443, tcpSYN))
	}
	now := f.clock.now()
	var ru0 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru0)
	b.ResetTimer()
	cpu := startCPU(b)
	for i := range b.N {
		// Sustained load: the batcher fails a query closed when
		// DefaultMaxPending already wait (a burst larger than that is
		// refused, not queued), so the sender keeps at most half of that
		// in flight.
		if i%1024 == 0 && i >= DefaultMaxPending/2 {
			waitBench(b, "room in the queue", func() bool {
				return uint64(i)-f.e.Stats().Allowed.Load() <= DefaultMaxPending/2
			})
		}
		f.e.FromAgent(s, pkts[i], f.inner(pkts[i]), now)
	}
	waitBench(b, "every decision", func() bool { return f.e.Stats().Allowed.Load() >= uint64(b.N) })
	if fc := f.e.Stats().FailClosed.Load(); fc != 0 {
		b.Fatalf("%d decisions failed closed", fc)
	}
	b.StopTimer()
	cpu.report(b)
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
	b.ReportMetric(float64(b.N)/float64(f.e.Stats().EngineCalls.Load()), "queries/call")
}
