package gateway

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"

	"github.com/avonzt/avon/core/gateway/gatewaytest"
	"github.com/avonzt/avon/core/gateway/ipam"
	"github.com/avonzt/avon/core/handshake"
	"github.com/avonzt/avon/core/pulse"
	"github.com/avonzt/avon/core/store/memstore"
	"github.com/avonzt/avon/core/tunnel/transport"
)

var (
	tunnelPrefix6 = netip.MustParsePrefix("fd00:96::/64")
	route6        = netip.MustParsePrefix("fd00:20::/64")
)

// dualStack makes an env's gateway dual stack: tunnel_cidr6 with its pool
// (over its own store: the pools are independent) and an IPv6 route.
func dualStack(t testing.TB) func(*Config) {
	return func(c *Config) {
		pool, err := ipam.New(memstore.New(), tunnelPrefix6)
		if err != nil {
			t.Fatal(err)
		}
		c.TunnelPrefix6, c.IPAM6 = tunnelPrefix6, pool
		c.Routes = append(c.Routes, route6)
	}
}

// addr6 is the agent's IPv6 tunnel address from its SessionConfig.
func (a *testAgent) addr6() netip.Addr {
	for _, p := range a.config.Addresses {
		if p.Addr().Is6() {
			return p.Addr()
		}
	}
	a.t.Fatalf("no IPv6 address in %v", a.config.Addresses)
	return netip.Addr{}
}

// ipv6UDP builds an IPv6/UDP packet with a valid checksum.
func ipv6UDP(src, dst netip.Addr, sport, dport uint16, payload []byte) []byte {
	b := make([]byte, 48+len(payload))
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:], uint16(8+len(payload)))
	b[6], b[7] = transport.ProtoUDP, 64
	s16, d16 := src.As16(), dst.As16()
	copy(b[8:], s16[:])
	copy(b[24:], d16[:])
	u := b[40:]
	binary.BigEndian.PutUint16(u[0:], sport)
	binary.BigEndian.PutUint16(u[2:], dport)
	binary.BigEndian.PutUint16(u[4:], uint16(len(u)))
	copy(u[8:], payload)
	var pseudo [40]byte
	copy(pseudo[0:], s16[:])
	copy(pseudo[16:], d16[:])
	binary.BigEndian.PutUint32(pseudo[32:], uint32(len(u)))
	pseudo[39] = transport.ProtoUDP
	c := ^checksum(u, uint32(checksum(pseudo[:], 0)))
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(u[6:], c)
	return b
}

func TestDualStackSession(t *testing.T) {
	e := newEnv(t, dualStack(t))
	ctx := testCtx(t)
	a := e.agent("agent-dual", nil)
	a.mustConnect(ctx)
	b := e.agent("agent-dual-peer", nil)
	b.mustConnect(ctx)
	st := e.gw.Stats()

	sc := a.config
	if len(sc.Addresses) != 2 || sc.Addresses[0].Bits() != 32 || !tunnelPrefix.Contains(sc.Addresses[0].Addr()) ||
		sc.Addresses[1].Bits() != 128 || !tunnelPrefix6.Contains(sc.Addresses[1].Addr()) ||
		sc.Addresses[1].Addr() == e.cfg.IPAM6.Gateway() || sc.Addresses[1].Addr() == tunnelPrefix6.Addr() {
		t.Fatalf("addresses %v", sc.Addresses)
	}
	want := []netip.Prefix{tunnelPrefix, tunnelPrefix6, netip.MustParsePrefix("10.20.0.0/16"), route6}
	if len(sc.Routes) != len(want) {
		t.Fatalf("routes %v, want %v", sc.Routes, want)
	}
	for i := range want {
		if sc.Routes[i] != want[i] {
			t.Fatalf("routes %v, want %v", sc.Routes, want)
		}
	}
	a6, b6 := a.addr6(), b.addr6()
	if a6 == b6 {
		t.Fatalf("both agents got %v", a6)
	}
	if got, ok, err := e.cfg.IPAM6.Lookup(ctx, "agent-dual"); err != nil || !ok || got != a6 {
		t.Fatalf("ipam6 holds %v %v %v for the agent, told %v", got, ok, err, a6)
	}

	// Agent -> TUN over IPv6, and over IPv4 on the same session.
	server := netip.MustParseAddr("fd00:20::53")
	up := ipv6UDP(a6, server, 5000, 53, []byte("query over v6"))
	a.send(up)
	if got := e.tunIn(ctx); !bytes.Equal(got, up) {
		t.Fatalf("tun got %x, want %x", got, up)
	}
	up4 := ipv4UDP(a.addr(), netip.MustParseAddr("10.20.1.1"), 5000, 53, []byte("query over v4"))
	a.send(up4)
	if got := e.tunIn(ctx); !bytes.Equal(got, up4) {
		t.Fatalf("tun got %x, want %x", got, up4)
	}

	// Cryptokey routing over IPv6: the peer's address, the gateway's, an
	// address outside the tunnel and the agent's own IPv4 address mapped
	// into IPv6 are all someone else's.
	for _, src := range []netip.Addr{b6, e.cfg.IPAM6.Gateway(), netip.MustParseAddr("2001:db8::1"),
		netip.AddrFrom16(a.addr().As16())} {
		a.send(ipv6UDP(src, server, 1, 2, []byte("spoofed")))
	}
	waitFor(t, "v6 spoof drops", func() bool { return st.DropSpoofed.Load() == 4 })
	genuine := ipv6UDP(a6, server, 1, 2, []byte("genuine"))
	a.send(genuine)
	if got := e.tunIn(ctx); !bytes.Equal(got, genuine) {
		t.Fatal("a spoofed IPv6 packet reached the tun")
	}

	// TUN -> agent, looked up by the IPv6 destination.
	down := ipv6UDP(server, a6, 53, 5000, []byte("answer over v6"))
	e.tun.Outbound <- down
	if got := a.recvPlain(ctx, false); len(got) < len(down) || !bytes.Equal(got[:len(down)], down) {
		t.Fatalf("agent got %x, want %x padded", got, down)
	}
	// Agent to agent: what the kernel routes back into the TUN for b's
	// IPv6 address reaches b.
	a2b := ipv6UDP(a6, b6, 7000, 7001, []byte("peer to peer"))
	a.send(a2b)
	e.tun.Outbound <- e.tunIn(ctx)
	if got := b.recvPlain(ctx, false); len(got) < len(a2b) || !bytes.Equal(got[:len(a2b)], a2b) {
		t.Fatalf("peer got %x, want %x padded", got, a2b)
	}
	// An IPv6 address of the tunnel without a session goes nowhere.
	e.tun.Outbound <- ipv6UDP(server, netip.MustParseAddr("fd00:96::dead"), 53, 5000, nil)
	waitFor(t, "no-route count", func() bool { return st.TunNoRoute.Load() == 1 })

	var si SessionInfo
	for _, s := range e.gw.Sessions() {
		if s.AgentID == "agent-dual" {
			si = s
		}
	}
	if si.Address != a.addr() || si.Address6 != a6 {
		t.Fatalf("session info addresses %v %v, want %v %v", si.Address, si.Address6, a.addr(), a6)
	}

	// A reconnect replaces the session under both addresses, and the end
	// of a session frees both lookups.
	a2 := e.agent("agent-dual", nil)
	a2.mustConnect(ctx)
	if a2.addr6() != a6 || a2.addr() != a.addr() {
		t.Fatalf("reconnect got %v, %v; had %v, %v", a2.addr(), a2.addr6(), a.addr(), a6)
	}
	waitFor(t, "replacement", func() bool { return st.SessionsReplaced.Load() == 1 })
	e.tun.Outbound <- ipv6UDP(server, a6, 53, 5000, []byte("to the new session"))
	if got := a2.recvPlain(ctx, false); !bytes.Contains(got, []byte("to the new session")) {
		t.Fatalf("new session got %x", got)
	}
	e.gw.table.RLock()
	n := len(e.gw.table.byAddr)
	e.gw.table.RUnlock()
	if n != 4 {
		t.Fatalf("%d addresses routed, want 4 (two agents, two families)", n)
	}
	e.gw.Terminate(pulse.ID(a2.res.SessionID), "done")
	e.gw.table.RLock()
	_, has4 := e.gw.table.byAddr[a.addr()]
	_, has6 := e.gw.table.byAddr[a6]
	e.gw.table.RUnlock()
	if has4 || has6 {
		t.Fatalf("ended session still routed: v4 %v v6 %v", has4, has6)
	}
}

// TestIPv6OnlySession runs a gateway with an IPv6 tunnel network only.
func TestIPv6OnlySession(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		dualStack(t)(c)
		c.TunnelPrefix, c.IPAM, c.Routes = netip.Prefix{}, nil, []netip.Prefix{route6}
	})
	ctx := testCtx(t)
	a := e.agent("agent-v6only", nil)
	a.mustConnect(ctx)
	if len(a.config.Addresses) != 1 || !a.config.Addresses[0].Addr().Is6() {
		t.Fatalf("addresses %v", a.config.Addresses)
	}
	if len(a.config.Routes) != 2 || a.config.Routes[0] != tunnelPrefix6 || a.config.Routes[1] != route6 {
		t.Fatalf("routes %v", a.config.Routes)
	}
	up := ipv6UDP(a.addr6(), netip.MustParseAddr("fd00:20::1"), 1, 2, []byte("v6 only"))
	a.send(up)
	if got := e.tunIn(ctx); !bytes.Equal(got, up) {
		t.Fatalf("tun got %x", got)
	}
	// Any IPv4 packet is spoofed: the session has no IPv4 address.
	a.send(ipv4UDP(netip.MustParseAddr("100.96.0.5"), netip.MustParseAddr("10.20.0.1"), 1, 2, nil))
	waitFor(t, "v4 spoof drop", func() bool { return e.gw.Stats().DropSpoofed.Load() == 1 })
}

func TestConfigTunnelFamilies(t *testing.T) {
	kv := memstore.New()
	pool4, _ := ipam.New(kv, tunnelPrefix)
	pool6, _ := ipam.New(kv, tunnelPrefix6)
	other6, _ := ipam.New(kv, netip.MustParsePrefix("fd00:97::/64"))
	pki := thePKI(t)
	signer, err := handshake.NewMLDSA65Signer(pki.gw.PrivateKey(), cryptoRand())
	if err != nil {
		t.Fatal(err)
	}
	verifier, err := handshake.NewChainVerifier(pki.Roots(), handshake.ChainVerifierOptions{})
	if err != nil {
		t.Fatal(err)
	}
	base := func() Config {
		return Config{Now: newClock().now, Rand: cryptoRand(), Signer: signer, Verifier: verifier,
			TunnelPrefix: tunnelPrefix, IPAM: pool4, TunnelPrefix6: tunnelPrefix6, IPAM6: pool6}
	}
	for name, mod := range map[string]func(*Config){
		"no pool at all":           func(c *Config) { *c = Config{Now: c.Now, Rand: c.Rand, Signer: c.Signer, Verifier: c.Verifier} },
		"v6 prefix in the v4 slot": func(c *Config) { c.TunnelPrefix, c.IPAM = tunnelPrefix6, pool6 },
		"v4 prefix in the v6 slot": func(c *Config) { c.TunnelPrefix6, c.IPAM6 = tunnelPrefix, pool4 },
		"v6 prefix without pool":   func(c *Config) { c.IPAM6 = nil },
		"v6 pool without prefix":   func(c *Config) { c.TunnelPrefix6 = netip.Prefix{} },
		"v6 prefix differs":        func(c *Config) { c.IPAM6 = other6 },
		"v6 prefix not masked":     func(c *Config) { c.TunnelPrefix6 = netip.MustParsePrefix("fd00:96::1/64") },
		"v6 route without v6":      func(c *Config) { c.TunnelPrefix6, c.IPAM6, c.Routes = netip.Prefix{}, nil, []netip.Prefix{route6} },
		"v4 route without v4": func(c *Config) {
			c.TunnelPrefix, c.IPAM, c.Routes = netip.Prefix{}, nil, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
		},
		"link-local v6 route":     func(c *Config) { c.Routes = []netip.Prefix{netip.MustParsePrefix("fe80::/64")} },
		"link-local v4 route":     func(c *Config) { c.Routes = []netip.Prefix{netip.MustParsePrefix("169.254.0.0/16")} },
		"multicast v6 route":      func(c *Config) { c.Routes = []netip.Prefix{netip.MustParsePrefix("ff00::/8")} },
		"mapped route":            func(c *Config) { c.Routes = []netip.Prefix{netip.MustParsePrefix("::ffff:10.0.0.0/104")} },
		"v6 mtu below 1280":       func(c *Config) { c.MTU = 1279 },
		"too many routes dual":    func(c *Config) { c.Routes = manyRoutes(63) },
		"v6 route with host bits": func(c *Config) { c.Routes = []netip.Prefix{netip.MustParsePrefix("fd00:20::1/64")} },
	} {
		c := base()
		mod(&c)
		if _, err := c.withDefaults(); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: %v", name, err)
		}
	}
	for name, mod := range map[string]func(*Config){
		"dual stack":     func(*Config) {},
		"v4 only":        func(c *Config) { c.TunnelPrefix6, c.IPAM6 = netip.Prefix{}, nil },
		"v6 only":        func(c *Config) { c.TunnelPrefix, c.IPAM = netip.Prefix{}, nil },
		"v6 route":       func(c *Config) { c.Routes = []netip.Prefix{route6, netip.MustParsePrefix("2001:db8::/32")} },
		"62 routes dual": func(c *Config) { c.Routes = manyRoutes(62) },
		"mtu 1280":       func(c *Config) { c.MTU = 1280 },
	} {
		c := base()
		mod(&c)
		if _, err := c.withDefaults(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// manyRoutes returns n distinct IPv4 /24 routes.
func manyRoutes(n int) []netip.Prefix {
	out := make([]netip.Prefix, n)
	for i := range out {
		out[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 30, byte(i), 0}), 24)
	}
	return out
}

// BenchmarkReceiveTransportIPv6 is BenchmarkReceiveTransport for a
// 1420-byte IPv6 packet from a dual-stack session's IPv6 address (the
// cryptokey check compares against both addresses).
func BenchmarkReceiveTransportIPv6(b *testing.B) {
	base := newEnv(b, dualStack(b))
	g, err := New(base.cfg, newNullTUN(), gatewaytest.NewNetwork(1).Bind())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { g.Close() })
	addr6 := netip.MustParseAddr("fd00:96::7:7")
	src := netip.MustParseAddrPort("198.51.100.7:5555")
	agKP := installSession(b, g, netip.MustParseAddr("100.96.7.7"), src, 0x01020304, 0x0a0b0c0d, addr6)
	pkt := ipv6UDP(addr6, netip.MustParseAddr("fd00:20::1"), 1000, 2000, make([]byte, 1420-48))
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
