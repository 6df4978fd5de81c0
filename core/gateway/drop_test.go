package gateway

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	mrand "math/rand/v2"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/avonzt/avon/core/handshake"
	"github.com/avonzt/avon/core/tunnel/control"
	"github.com/avonzt/avon/core/tunnel/cookie"
	"github.com/avonzt/avon/core/tunnel/frag"
)

// settle waits until the gateway received n datagrams in all.
func (e *env) settle(n uint64) {
	e.t.Helper()
	waitFor(e.t, fmt.Sprintf("%d datagrams", n), func() bool { return e.gw.Stats().RxDatagrams.Load() >= n })
}

func (e *env) tableSizes() (pending, indexes, sessions, bySrc int) {
	e.gw.table.RLock()
	defer e.gw.table.RUnlock()
	return e.gw.table.pending, len(e.gw.table.byIndex), len(e.gw.table.byID), len(e.gw.table.pendingBySrc)
}

func TestTruncatedInitiationsDropped(t *testing.T) {
	e := newEnv(t, nil)
	p := e.port()
	a := e.agent("agent-trunc", p)
	init := a.initiation(t, nil)
	st := e.gw.Stats()
	sent := uint64(0)
	for n := 1; n < len(init); n++ { // an empty datagram is no datagram (the bind reports size 0)
		p.Send(init[:n])
		sent++
	}
	// One byte too many, and a token length that disagrees with the size.
	p.Send(append(bytes.Clone(init), 0))
	bad := bytes.Clone(init)
	binary.BigEndian.PutUint16(bad[initTokenLenOff:], 5)
	p.Send(bad)
	sent += 2
	e.settle(sent)
	if st.HandshakesStarted.Load() != 0 || st.CookieReplies.Load() != 0 || p.Pending() != 0 {
		t.Fatalf("handshakes %d, cookie replies %d, answers %d", st.HandshakesStarted.Load(), st.CookieReplies.Load(), p.Pending())
	}
	if got := st.DropShort.Load() + st.DropLength.Load() + st.DropMAC1.Load(); got != sent {
		t.Fatalf("counted %d drops of %d", got, sent)
	}
	// The whole message still works.
	p.Send(init)
	waitFor(t, "cookie reply", func() bool { return st.CookieReplies.Load() == 1 })
}

func TestTruncatedFragmentsDropped(t *testing.T) {
	e := newEnv(t, nil)
	ctx := testCtx(t)
	p := e.port()
	a := e.agent("agent-fragtrunc", p)

	// Drive the handshake by hand up to the Finish.
	signer, _ := handshake.NewMLDSA65Signer(a.cred.Key.PrivateKey(), cryptoRand())
	in, err := handshake.NewInitiator(handshake.InitiatorConfig{Signer: signer, Chain: a.cred.Chain,
		ResponderPublicKey: a.gwPub, ResponderID: a.gwID, Rand: cryptoRand(), Now: a.now, LocalIndex: 7})
	if err != nil {
		t.Fatal(err)
	}
	init, _ := in.Initiation(nil)
	cookie.AddMACs(init, a.gwID, nil, a.now())
	p.Send(init)
	reply, _ := p.Recv(ctx)
	mac1, _ := cookie.MAC1(init)
	ck, err := cookie.OpenReply(reply, a.gwID, mac1, a.now())
	if err != nil {
		t.Fatal(err)
	}
	cookie.AddMACs(init, a.gwID, &ck, a.now())
	p.Send(init)
	r, _ := frag.NewReassembler(frag.Config{})
	var resp []byte
	for resp == nil {
		b, err := p.Recv(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if m, done, _ := r.Add(netip.AddrPort{}, b, a.now()); done {
			resp = m
		}
	}
	fin, res, err := in.HandleResponse(resp)
	if err != nil {
		t.Fatal(err)
	}
	frags, _ := frag.Split(fin, 99, frag.DefaultMaxChunk)
	st := e.gw.Stats()
	before := st.RxDatagrams.Load()
	// Every truncation of the first fragment, under another msg_id so the
	// genuine message is unaffected: refused or held, never a session.
	for n := 1; n < len(frags[0]); n++ {
		b := bytes.Clone(frags[0][:n])
		if n >= 8 {
			binary.BigEndian.PutUint32(b[4:], 1234)
		}
		p.Send(b)
	}
	e.settle(before + uint64(len(frags[0])-1))
	if st.SessionsEstablished.Load() != 0 || st.FinishRefused.Load() != 0 {
		t.Fatal("a truncated fragment did something")
	}
	// A stranger's fragments make no state at all.
	stranger := e.port()
	for _, f := range frags {
		stranger.Send(f)
	}
	waitFor(t, "stranger's fragments dropped", func() bool { return st.FragNoState.Load() == uint64(len(frags)) })
	for _, f := range frags {
		p.Send(f)
	}
	if err := a.finish(ctx, in, res); err != nil {
		t.Fatal(err)
	}
}

func TestGarbageDropped(t *testing.T) {
	e := newEnv(t, nil)
	p := e.port()
	rnd := mrand.New(mrand.NewPCG(1, 2))
	var sent uint64
	send := func(b []byte) { p.Send(b); sent++ }
	for _, n := range []int{1, 3, 4, 15, 16, 31, 32, 64, 100, 1200, 1334, 1430, 1500, 4493, 9000, 65000} {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rnd.Uint32())
		}
		send(b)
		for typ := byte(0); typ <= 10; typ++ {
			if n >= 4 {
				c := bytes.Clone(b)
				c[0], c[1], c[2], c[3] = typ, 1, 0, 0
				send(c)
				c[2] = 1 // reserved bytes set
				send(c)
				c[1], c[2] = 2, 0 // another version
				send(c)
			}
		}
	}
	e.settle(sent)
	st := e.gw.Stats()
	if st.HandshakesStarted.Load() != 0 || st.CookieReplies.Load() != 0 || p.Pending() != 0 || st.HandshakeErrors.Load() != 0 {
		t.Fatalf("garbage was answered: %d handshakes, %d cookies, %d datagrams", st.HandshakesStarted.Load(),
			st.CookieReplies.Load(), p.Pending())
	}
	drops := st.DropShort.Load() + st.DropHeader.Load() + st.DropType.Load() + st.DropLength.Load() + st.DropMAC1.Load() +
		st.DropNoSession.Load() + st.FragNoState.Load()
	if drops != sent {
		t.Fatalf("%d drops counted for %d datagrams", drops, sent)
	}
	if pe, idx, s, src := e.tableSizes(); pe+idx+s+src != 0 || e.gw.reasm.Len() != 0 {
		t.Fatal("garbage left state")
	}
}

func TestSpoofedInnerSourceDropped(t *testing.T) {
	e := newEnv(t, nil)
	ctx := testCtx(t)
	a := e.agent("agent-spoof", nil)
	a.mustConnect(ctx)
	b := e.agent("agent-victim", nil)
	b.mustConnect(ctx)
	st := e.gw.Stats()
	dst := netip.MustParseAddr("10.20.0.9")
	for _, src := range []netip.Addr{b.addr(), e.cfg.IPAM.Gateway(), netip.MustParseAddr("8.8.8.8")} {
		a.send(ipv4UDP(src, dst, 1, 2, []byte("spoofed")))
	}
	// An IPv6 packet and an unparsable one.
	v6 := make([]byte, 40)
	v6[0], v6[6] = 0x60, 59 // no next header
	a.send(v6)
	a.send([]byte{0x45, 0, 0, 1})
	waitFor(t, "spoof drops", func() bool { return st.DropSpoofed.Load() == 4 && st.DropInner.Load() == 1 })
	genuine := ipv4UDP(a.addr(), dst, 1, 2, []byte("genuine"))
	a.send(genuine)
	if got := e.tunIn(ctx); !bytes.Equal(got, genuine) {
		t.Fatal("a spoofed packet reached the tun")
	}
}

func TestTransportReplayAndForgery(t *testing.T) {
	e := newEnv(t, nil)
	ctx := testCtx(t)
	a := e.agent("agent-replay", nil)
	a.mustConnect(ctx)
	st := e.gw.Stats()
	dst := netip.MustParseAddr("10.20.0.9")

	first := a.seal(ipv4UDP(a.addr(), dst, 1, 2, []byte("one")))
	a.w.Send(first)
	if got := e.tunIn(ctx); !bytes.Contains(got, []byte("one")) {
		t.Fatal("first packet lost")
	}
	a.w.Send(first)
	waitFor(t, "replay drop", func() bool { return st.DropReplay.Load() == 1 })

	second := a.seal(ipv4UDP(a.addr(), dst, 1, 2, []byte("two")))
	for _, pos := range []int{20, len(second) - 1} {
		forged := bytes.Clone(second)
		forged[pos] ^= 0x80
		a.w.Send(forged)
	}
	// A forged header (another counter) fails too.
	forged := bytes.Clone(second)
	forged[15]++
	a.w.Send(forged)
	waitFor(t, "forgery drops", func() bool { return st.DropAuth.Load() == 3 })
	// The window did not move: the genuine packet with that counter passes.
	a.w.Send(second)
	if got := e.tunIn(ctx); !bytes.Contains(got, []byte("two")) {
		t.Fatal("genuine packet refused after forgeries")
	}
	if st.TunTxPackets.Load() != 2 {
		t.Fatalf("%d packets on the tun", st.TunTxPackets.Load())
	}
}

func TestRoamingAfterAuthenticationOnly(t *testing.T) {
	e := newEnv(t, nil)
	ctx := testCtx(t)
	a := e.agent("agent-roam", nil)
	a.mustConnect(ctx)
	st := e.gw.Stats()
	dst := netip.MustParseAddr("10.20.0.9")
	orig := a.w
	// A forged packet from elsewhere does not move the endpoint.
	pkt := a.seal(ipv4UDP(a.addr(), dst, 1, 2, []byte("x")))
	bad := bytes.Clone(pkt)
	bad[len(bad)-1] ^= 1
	other := e.port()
	other.Send(bad)
	waitFor(t, "forgery", func() bool { return st.DropAuth.Load() == 1 })
	if ep := e.gw.Sessions()[0].Endpoint; ep != orig.(interface{ Addr() netip.AddrPort }).Addr() {
		t.Fatalf("endpoint moved to %v on a forgery", ep)
	}
	// The genuine packet from the new address moves it.
	other.Send(pkt)
	e.tunIn(ctx)
	if ep := e.gw.Sessions()[0].Endpoint; ep != other.Addr() {
		t.Fatalf("endpoint %v, want %v", ep, other.Addr())
	}
	e.tun.Outbound <- ipv4UDP(dst, a.addr(), 2, 1, []byte("to the new address"))
	a.w = other
	if got := a.recvPlain(ctx, false); !bytes.Contains(got, []byte("new address")) {
		t.Fatal("reply not at the new endpoint")
	}
}

func TestBogusInitiationsBounded(t *testing.T) {
	const maxPending = 16
	e := newEnv(t, func(c *Config) { c.MaxPending = maxPending; c.QueueLen = 2048 })
	ctx := testCtx(t)
	st := e.gw.Stats()
	a := e.agent("agent-flood", nil)
	template := a.initiation(t, nil)

	// 1000 sources without proof: CookieReplies only, no state.
	for i := range 1000 {
		src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{203, 0, byte(i >> 8), byte(i)}), uint16(1000+i))
		e.net.Inject(src, template)
	}
	e.settle(1000)
	waitFor(t, "cookie replies", func() bool { return st.CookieReplies.Load() == 1000 })
	if pe, idx, s, src := e.tableSizes(); pe+idx+s+src != 0 || st.HandshakesStarted.Load() != 0 {
		t.Fatalf("unproven sources left state: pending %d, indexes %d", pe, idx)
	}

	// 1000 proven sources (each fetched its cookie) that never finish:
	// at most MaxPending half-open handshakes, the rest refused as busy.
	ports := make([]*testAgent, 1000)
	inits := make([][]byte, 1000)
	for i := range ports {
		ports[i] = e.agent("agent-flood", nil)
		inits[i] = ports[i].initiation(t, nil)
		ports[i].w.Send(inits[i])
	}
	for i := range ports {
		reply, err := ports[i].w.Recv(ctx)
		if err != nil {
			t.Fatal(err)
		}
		mac1, _ := cookie.MAC1(inits[i])
		ck, err := cookie.OpenReply(reply, a.gwID, mac1, e.clock.now())
		if err != nil {
			t.Fatal(err)
		}
		cookie.AddMACs(inits[i], a.gwID, &ck, e.clock.now())
		ports[i].w.Send(inits[i])
	}
	waitFor(t, "all proven initiations handled", func() bool {
		return st.Responses.Load()+st.Busy.Load()+st.HandshakeQueueFull.Load() == 1000
	})
	pe, _, _, _ := e.tableSizes()
	if pe > maxPending || st.Responses.Load() != maxPending {
		t.Fatalf("pending %d, responses %d, cap %d", pe, st.Responses.Load(), maxPending)
	}
	// Fragments from every source: only the ones with a half-open handshake
	// reach the reassembler, which stays within its own caps.
	junk := []byte{9, 1, 0, 0, 0, 0, 0, 1, 0, 2, 0x10, 0}
	junk = append(junk, make([]byte, 1200)...)
	for _, p := range ports {
		p.w.Send(junk)
	}
	e.settle(3000)
	if n := e.gw.reasm.Len(); n > maxPending {
		t.Fatalf("%d reassemblies", n)
	}
	// Expiry empties the table.
	e.clock.advance(PendingTimeout + time.Second)
	e.gw.tick(e.clock.now())
	if pe, idx, _, src := e.tableSizes(); pe+idx+src != 0 || e.gw.reasm.Len() != 0 {
		t.Fatalf("after expiry: pending %d, indexes %d, sources %d", pe, idx, src)
	}
}

func TestTimers(t *testing.T) {
	t.Run("keepalive then dead", func(t *testing.T) {
		e := newEnv(t, func(c *Config) { c.PulseInterval = 10 * time.Second; c.MissedPulses = 3 })
		ctx := testCtx(t)
		a := e.agent("agent-idle", nil)
		a.mustConnect(ctx)
		e.clock.advance(KeepaliveAfter)
		e.gw.tick(e.clock.now())
		if pt := a.recvPlain(ctx, true); len(pt) != 0 {
			t.Fatalf("expected a keepalive, got %d bytes", len(pt))
		}
		e.clock.advance(21 * time.Second) // 31 s without a pulse
		e.gw.tick(e.clock.now())
		m := a.recvControl(ctx)
		if c, ok := m.(*control.Close); !ok || c.Code != control.ClosePulseFailed {
			t.Fatalf("got %#v", m)
		}
		if len(e.gw.Sessions()) != 0 || e.gw.Stats().SessionsDead.Load() != 1 {
			t.Fatal("dead session kept")
		}
	})
	t.Run("keys expire without rekey", func(t *testing.T) {
		e := newEnv(t, func(c *Config) { c.PulseInterval = 10 * time.Minute })
		ctx := testCtx(t)
		a := e.agent("agent-norekey", nil)
		a.mustConnect(ctx)
		e.clock.advance(179 * time.Second)
		e.gw.tick(e.clock.now())
		if len(e.gw.Sessions()) != 1 {
			t.Fatal("session ended before the reject time")
		}
		e.clock.advance(2 * time.Second)
		e.gw.tick(e.clock.now())
		if len(e.gw.Sessions()) != 0 || e.gw.Stats().SessionsExpired.Load() != 1 {
			t.Fatal("session with expired keys kept")
		}
	})
	t.Run("pending handshake expires", func(t *testing.T) {
		e := newEnv(t, nil)
		ctx := testCtx(t)
		p := e.port()
		a := e.agent("agent-halfopen", p)
		init := a.initiation(t, nil)
		p.Send(init)
		reply, _ := p.Recv(ctx)
		mac1, _ := cookie.MAC1(init)
		ck, _ := cookie.OpenReply(reply, a.gwID, mac1, e.clock.now())
		cookie.AddMACs(init, a.gwID, &ck, e.clock.now())
		p.Send(init)
		waitFor(t, "response", func() bool { return e.gw.Stats().Responses.Load() == 1 })
		e.clock.advance(PendingTimeout - time.Second)
		e.gw.tick(e.clock.now())
		if pe, _, _, _ := e.tableSizes(); pe != 1 {
			t.Fatal("pending dropped early")
		}
		e.clock.advance(2 * time.Second)
		e.gw.tick(e.clock.now())
		if pe, idx, _, src := e.tableSizes(); pe+idx+src != 0 {
			t.Fatal("pending kept")
		}
	})
}

func TestConfigValidation(t *testing.T) {
	e := newEnv(t, nil)
	base := e.cfg
	cases := []struct {
		name string
		mod  func(*Config)
		ok   bool
	}{
		{"valid", func(*Config) {}, true},
		{"no clock", func(c *Config) { c.Now = nil }, false},
		{"no ipam", func(c *Config) { c.IPAM = nil }, false},
		{"prefix not the pool's", func(c *Config) { c.TunnelPrefix = netip.MustParsePrefix("100.97.0.0/16") }, false},
		{"unmasked prefix", func(c *Config) { c.TunnelPrefix = netip.MustParsePrefix("100.96.0.1/16") }, false},
		{"unmasked route", func(c *Config) { c.Routes = []netip.Prefix{netip.MustParsePrefix("10.0.0.1/8")} }, false},
		{"tiny mtu", func(c *Config) { c.MTU = 100 }, false},
		{"bad aead", func(c *Config) { c.AEAD = 9 }, false},
		{"negative", func(c *Config) { c.MaxPending = -1 }, false},
		{"pulse too fast", func(c *Config) { c.PulseInterval = time.Millisecond }, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := base
			tc.mod(&cfg)
			g, err := New(cfg, e.tun.TUN(), e.net.Bind())
			if (err == nil) != tc.ok {
				t.Fatalf("New: %v", err)
			}
			if g != nil {
				g.cookies.Close()
				g.tracker.Close()
			}
		})
	}
	if _, err := New(base, nil, e.net.Bind()); err == nil {
		t.Fatal("nil device accepted")
	}
}

func TestLifecycleNoLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	e := newEnv(t, nil)
	ctx := testCtx(t)
	a := e.agent("agent-life", nil)
	a.mustConnect(ctx)
	if err := e.gw.Start(context.Background()); err == nil {
		t.Fatal("second Start accepted")
	}
	done := make(chan error, 1)
	go func() { done <- e.gw.Run(context.Background()) }()
	if err := <-done; err == nil {
		t.Fatal("Run on a started gateway accepted")
	}
	if err := e.gw.Close(); err != nil {
		t.Fatal(err)
	}
	m := a.recvControl(ctx)
	if c, ok := m.(*control.Close); !ok || c.Code != control.CloseShutdown {
		t.Fatalf("got %#v", m)
	}
	if _, idx, s, _ := e.tableSizes(); idx+s != 0 {
		t.Fatal("state kept after Close")
	}
	waitFor(t, "goroutines to end", func() bool { return runtime.NumGoroutine() <= before })
}
