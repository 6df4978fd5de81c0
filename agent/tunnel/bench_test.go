package tunnel_test

import (
	"testing"
	"time"
)

// BenchmarkTunToGateway measures the agent's send path: packets read from
// the (channel) TUN, sealed and sent through a channel bind, opened by the
// test gateway. 1400-byte packets.
func BenchmarkTunToGateway(b *testing.B) {
	r := newRig(b)
	r.waitUp()
	pkt := ipv4(agentIP, remoteIP, string(make([]byte, 1372)))
	b.SetBytes(int64(len(pkt)))
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-r.gw.Inbound():
			case <-stop:
				return
			}
		}
	}()
	base := r.gw.Stats().IPPackets
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		r.tun.Outbound <- pkt
	}
	recv := 0
	for try := 0; try < 200; try++ {
		if recv = r.gw.Stats().IPPackets - base; recv >= b.N {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	el := time.Since(start).Seconds()
	b.ReportMetric(float64(recv)/el, "pkt/s")
	b.ReportMetric(float64(recv*len(pkt)*8)/el/1e9, "Gbit/s")
}

// BenchmarkGatewayToTun measures the agent's receive path: packets sealed
// by the gateway, opened by the engine, written to the (channel) TUN.
func BenchmarkGatewayToTun(b *testing.B) {
	r := newRig(b)
	r.waitUp()
	pkt := ipv4(remoteIP, agentIP, string(make([]byte, 1372)))
	b.SetBytes(int64(len(pkt)))
	done := make(chan int)
	go func() {
		n := 0
		for n < b.N {
			select {
			case <-r.tun.Inbound:
				n++
			case <-time.After(2 * time.Second):
				done <- n
				return
			}
		}
		done <- n
	}()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if err := r.gw.SendIP(pkt); err != nil {
			b.Fatal(err)
		}
	}
	n := <-done
	el := time.Since(start).Seconds()
	b.ReportMetric(float64(n)/el, "pkt/s")
	b.ReportMetric(float64(n*len(pkt)*8)/el/1e9, "Gbit/s")
}
