package gateway

import (
	"fmt"
	"net/netip"
	"sync/atomic"
	"testing"

	"github.com/avonzt/avon/core/gateway/gatewaytest"
)

// BenchmarkGatewayHandshake runs full handshakes (cookie already held,
// Initiation -> fragmented Response -> fragmented Finish -> SessionConfig)
// through the engine over the in-memory network. The agents' side runs on
// the same CPUs, so this is a lower bound of the gateway's rate.
func BenchmarkGatewayHandshake(b *testing.B) {
	e := newEnv(b, func(c *Config) { c.HandshakeRate = 1e9; c.HandshakeBurst = 1 << 20 })
	ctx := testCtx(b)
	var n atomic.Int32
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		a := e.agent(fmt.Sprintf("agent-bench-%d", n.Add(1)), nil)
		for pb.Next() {
			if err := a.connect(ctx); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "handshakes/s")
}

// BenchmarkTransportRoundTrip sends 1420-byte inner packets sealed by an
// agent through the bind into the engine (open, cryptokey routing) and out
// of the TUN, in windows so no queue overflows.
func BenchmarkTransportRoundTrip(b *testing.B) {
	e := newEnv(b, nil)
	ctx := testCtx(b)
	a := e.agent("agent-bench-transport", nil)
	a.mustConnect(ctx)
	payload := make([]byte, 1420-28)
	pkt := ipv4UDP(a.addr(), netip.MustParseAddr("10.20.0.1"), 1000, 2000, payload)
	const window = 512
	b.SetBytes(int64(len(pkt)))
	b.ReportAllocs()
	b.ResetTimer()
	for sent := 0; sent < b.N; {
		n := min(window, b.N-sent)
		for range n {
			out, err := a.kp.Seal(nil, pkt)
			if err != nil {
				b.Fatal(err)
			}
			a.w.Send(out)
		}
		for range n {
			select {
			case got := <-e.tun.Inbound:
				if len(got) != len(pkt) {
					b.Fatalf("tun got %d bytes", len(got))
				}
			case <-ctx.Done():
				b.Fatal("packets lost")
			}
		}
		sent += n
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pkt/s")
	b.ReportMetric(float64(b.N)*float64(len(pkt))*8/b.Elapsed().Seconds()/1e9, "Gbit/s")
}

// BenchmarkReceiveTransport is the engine's receive path alone for one
// 1420-byte packet: header, session lookup, Open in place, cryptokey
// routing, TUN batch (a device that discards). Sealing is outside the
// timer.
func BenchmarkReceiveTransport(b *testing.B) {
	base := newEnv(b, nil)
	cfg := base.cfg
	net := gatewaytest.NewNetwork(1)
	g, err := New(cfg, newNullTUN(), net.Bind())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { g.Close() })
	addr := netip.MustParseAddr("100.96.7.7")
	src := netip.MustParseAddrPort("198.51.100.7:5555")
	agKP := installSession(b, g, addr, src, 0x01020304, 0x0a0b0c0d)
	pkt := ipv4UDP(addr, netip.MustParseAddr("10.20.0.1"), 1000, 2000, make([]byte, 1420-28))
	ep := gatewaytest.Endpoint{AddrPort: src}
	rx := &rxBatch{tun: make([][]byte, 0, 1)}
	buf := make([]byte, bufSize)
	b.SetBytes(int64(len(pkt)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		out, _ := agKP.Seal(buf[:0], pkt)
		b.StartTimer()
		g.handleDatagram(out, ep, testNow, rx)
		g.flushTUN(rx)
	}
	b.StopTimer()
	if g.stats.TunTxPackets.Load() != uint64(b.N) {
		b.Fatalf("%d of %d packets reached the tun", g.stats.TunTxPackets.Load(), b.N)
	}
}
