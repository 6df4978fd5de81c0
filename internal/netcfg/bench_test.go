package netcfg

import (
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkParseRouteDump parses a dump datagram of 100 routes, as Routes
// does for every datagram the kernel sends.
func BenchmarkParseRouteDump(b *testing.B) {
	var dgram []byte
	for i := range 100 {
		rt := Route{Dst: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), 0, 0}), 16),
			Via: netip.MustParseAddr("198.18.0.254"), Metric: i}
		dgram = append(dgram, nlmsg(unix.RTM_NEWROUTE, unix.NLM_F_MULTI, testSeq, testPid,
			routePayload(rt, 3, unix.RT_TABLE_MAIN, Protocol))...)
	}
	b.SetBytes(int64(len(dgram)))
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		st := replyState{seq: testSeq, pid: testPid, dump: true, each: func(m message) error {
			ri, err := parseRoute(m.data)
			if err == nil && ours(ri, 3) {
				n++
			}
			return err
		}}
		if _, err := st.datagram(dgram); err != nil {
			b.Fatal(err)
		}
	}
	if n != 100*b.N {
		b.Fatalf("%d routes parsed, want %d", n, 100*b.N)
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "routes/s")
}

// BenchmarkLinkIndex is one request/reply round trip with the kernel.
func BenchmarkLinkIndex(b *testing.B) {
	e := newEnv(b)
	for b.Loop() {
		if _, err := e.c.LinkIndex(tunDev); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

// BenchmarkAddDelRoute adds and deletes one route on the TUN device (each
// change looks the link up first: 4 round trips).
func BenchmarkAddDelRoute(b *testing.B) {
	e := newEnv(b)
	if err := e.c.SetLinkUp(tunDev, true); err != nil {
		b.Fatal(err)
	}
	r := Route{Dst: netip.MustParsePrefix("10.8.0.0/16"), Dev: tunDev}
	for b.Loop() {
		if err := e.c.AddRoute(r); err != nil {
			b.Fatal(err)
		}
		if err := e.c.DelRoute(r); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pairs/s")
}

// BenchmarkRoutes lists 200 routes of ours (100 per family) among the
// kernel's own.
func BenchmarkRoutes(b *testing.B) {
	e := newEnv(b)
	if err := e.c.SetLinkUp(tunDev, true); err != nil {
		b.Fatal(err)
	}
	for i := range 100 {
		for _, p := range []netip.Prefix{
			netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), 0, 0}), 16),
			netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 0, byte(i)}), 24),
		} {
			if err := e.c.AddRoute(Route{Dst: p, Dev: tunDev}); err != nil {
				b.Fatal(err)
			}
		}
	}
	for b.Loop() {
		routes, err := e.c.Routes(tunDev)
		if err != nil || len(routes) != 200 {
			b.Fatalf("Routes = %d routes, %v", len(routes), err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "dumps/s")
}

// BenchmarkApplyUndo applies and undoes an agent's plan: MTU, two
// addresses, up, four routes.
func BenchmarkApplyUndo(b *testing.B) {
	e := newEnv(b)
	p := Plan{Dev: tunDev, MTU: 1380, Up: true,
		Addrs: []netip.Prefix{netip.MustParsePrefix("10.77.0.2/32"), netip.MustParsePrefix("fd00:77::2/128")},
		Routes: []Route{
			{Dst: netip.MustParsePrefix("10.0.0.0/8")}, {Dst: netip.MustParsePrefix("172.16.0.0/12")},
			{Dst: netip.MustParsePrefix("fd00:100::/40")}, {Dst: netip.MustParsePrefix("fd00:200::/40")},
		}}
	for b.Loop() {
		a, err := e.c.Apply(p)
		if err != nil {
			b.Fatal(err)
		}
		if err := a.Undo(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "cycles/s")
}
