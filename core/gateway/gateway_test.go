package gateway

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/avonzt/avon/core/handshake"
	"github.com/avonzt/avon/core/pulse"
	"github.com/avonzt/avon/core/tunnel/control"
)

// tunIn returns the next packet the gateway wrote to the TUN.
func (e *env) tunIn(ctx context.Context) []byte {
	e.t.Helper()
	select {
	case b := <-e.tun.Inbound:
		return b
	case <-ctx.Done():
		e.t.Fatal("no packet on the tun")
		return nil
	}
}

func TestSessionEndToEnd(t *testing.T) {
	e := newEnv(t, nil)
	ctx := testCtx(t)
	a := e.agent("agent-e2e", nil)
	a.mustConnect(ctx)

	st := e.gw.Stats()
	if st.CookieReplies.Load() != 1 || st.ProofCookie.Load() != 1 || st.SessionsEstablished.Load() != 1 {
		t.Fatalf("first contact: cookie replies %d, cookie proofs %d, sessions %d", st.CookieReplies.Load(),
			st.ProofCookie.Load(), st.SessionsEstablished.Load())
	}
	sc := a.config
	if len(sc.Addresses) != 1 || sc.Addresses[0].Bits() != 32 || !tunnelPrefix.Contains(sc.Addresses[0].Addr()) ||
		sc.Addresses[0].Addr() == e.cfg.IPAM.Gateway() {
		t.Fatalf("addresses %v", sc.Addresses)
	}
	want := []netip.Prefix{tunnelPrefix, netip.MustParsePrefix("10.20.0.0/16")}
	if len(sc.Routes) != 2 || sc.Routes[0] != want[0] || sc.Routes[1] != want[1] {
		t.Fatalf("routes %v", sc.Routes)
	}
	if sc.MTU != DefaultMTU || sc.PulseInterval != DefaultPulseInterval || len(sc.AddressToken) == 0 {
		t.Fatalf("mtu %d, pulse %v, token %d bytes", sc.MTU, sc.PulseInterval, len(sc.AddressToken))
	}

	// Agent -> TUN.
	up := ipv4UDP(a.addr(), netip.MustParseAddr("10.20.1.1"), 5000, 53, []byte("query"))
	a.send(up)
	if got := e.tunIn(ctx); !bytes.Equal(got, up) {
		t.Fatalf("tun got %x, want %x", got, up)
	}
	// TUN -> agent.
	down := ipv4UDP(netip.MustParseAddr("10.20.1.1"), a.addr(), 53, 5000, []byte("answer, somewhat longer"))
	e.tun.Outbound <- down
	if got := a.recvPlain(ctx, false); !bytes.Equal(got[:len(down)], down) || len(got)%16 != 0 {
		t.Fatalf("agent got %x, want %x padded", got, down)
	}
	// A packet for an address without a session is not sent anywhere.
	e.tun.Outbound <- ipv4UDP(netip.MustParseAddr("10.20.1.1"), netip.MustParseAddr("100.96.200.200"), 53, 5000, nil)
	waitFor(t, "no-route count", func() bool { return st.TunNoRoute.Load() == 1 })

	ss := e.gw.Sessions()
	if len(ss) != 1 {
		t.Fatalf("%d sessions", len(ss))
	}
	si := ss[0]
	if si.AgentID != "agent-e2e" || si.Address != a.addr() || si.Endpoint != a.w.(interface{ Addr() netip.AddrPort }).Addr() ||
		si.RxBytes != uint64(len(up)) || si.TxBytes == 0 || si.ID != pulse.ID(a.res.SessionID) || si.CertSerial == "" {
		t.Fatalf("session info %+v", si)
	}
}

func TestReconnectWithTokenReplacesSession(t *testing.T) {
	e := newEnv(t, nil)
	ctx := testCtx(t)
	first := e.agent("agent-re", nil)
	first.mustConnect(ctx)
	oldAddr := first.addr()

	// The same agent from another port of the same IP with its token: no
	// cookie round trip, same address, the old session is told to go.
	second := e.agent("agent-re", e.net.Port(netip.AddrPortFrom(first.w.(interface{ Addr() netip.AddrPort }).Addr().Addr(), 1)))
	second.token = first.token
	second.mustConnect(ctx)
	st := e.gw.Stats()
	if st.ProofToken.Load() != 1 || st.CookieReplies.Load() != 1 || st.SessionsReplaced.Load() != 1 {
		t.Fatalf("token proofs %d, cookie replies %d, replaced %d", st.ProofToken.Load(), st.CookieReplies.Load(), st.SessionsReplaced.Load())
	}
	if second.addr() != oldAddr {
		t.Fatalf("address changed %v -> %v", oldAddr, second.addr())
	}
	m := first.recvControl(ctx)
	if c, ok := m.(*control.Close); !ok || c.Code != control.CloseReplaced {
		t.Fatalf("old session got %#v", m)
	}
	if n := len(e.gw.Sessions()); n != 1 {
		t.Fatalf("%d sessions", n)
	}
	// A token from another IP is no proof.
	third := e.agent("agent-re", nil)
	third.token = first.token
	third.mustConnect(ctx)
	if st.CookieReplies.Load() != 2 {
		t.Fatalf("cookie replies %d", st.CookieReplies.Load())
	}
}

func TestPulseAndTokenRotation(t *testing.T) {
	e := newEnv(t, nil)
	ctx := testCtx(t)
	a := e.agent("agent-pulse", nil)
	a.mustConnect(ctx)
	st := e.gw.Stats()

	tok0 := a.stoken
	a.pulse(tok0)
	ack, ok := a.recvControl(ctx).(*control.PulseAck)
	if !ok || ack.Seq != 1 || ack.NextToken == tok0 || len(ack.AddressToken) == 0 || ack.ServerTime != e.clock.now().UnixNano() {
		t.Fatalf("ack %#v", ack)
	}
	// A wrong token gets no ack and changes nothing.
	a.pulse([32]byte{1, 2, 3})
	waitFor(t, "refused pulse", func() bool { return st.PulsesRefused.Load() == 1 })
	a.pulse(ack.NextToken)
	ack2, ok := a.recvControl(ctx).(*control.PulseAck)
	if !ok || ack2.Seq != 3 || ack2.NextToken == ack.NextToken {
		t.Fatalf("second ack %#v", ack2)
	}
	if st.PulsesAccepted.Load() != 2 {
		t.Fatalf("accepted %d", st.PulsesAccepted.Load())
	}
	// Unknown control types are counted and ignored.
	a.send([]byte{0x3f, 0, 0})
	waitFor(t, "unknown control", func() bool { return st.ControlUnknown.Load() == 1 })
}

func TestRekey(t *testing.T) {
	e := newEnv(t, nil)
	ctx := testCtx(t)
	a := e.agent("agent-rekey", nil)
	a.mustConnect(ctx)
	st := e.gw.Stats()

	oldKP := a.kp
	ri, err := handshake.NewRekeyInitiator(a.res, cryptoRand(), e.clock.now, randIndex())
	if err != nil {
		t.Fatal(err)
	}
	// A lost RekeyResp: the retry (new counter, new key) wins.
	for range 2 {
		msg, err := ri.RekeyInit()
		if err != nil {
			t.Fatal(err)
		}
		if err := a.w.Send(msg); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "rekey", func() bool { return st.Rekeys.Load() >= 1 })
	}
	var res *handshake.Result
	for range 2 {
		resp, err := a.w.Recv(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if r, err := ri.HandleRekeyResp(resp); err == nil {
			res = r
		}
	}
	if res == nil || st.Rekeys.Load() != 2 {
		t.Fatalf("rekey result %v, rekeys %d", res, st.Rekeys.Load())
	}
	old := a.kp
	a.res = res
	a.kp = mustKeypair(t, res, e.clock.now())

	// The gateway still sends with the old keys until it sees the new ones.
	e.tun.Outbound <- ipv4UDP(netip.MustParseAddr("10.20.1.1"), a.addr(), 1, 2, []byte("before"))
	msg, _ := a.w.Recv(ctx)
	if _, _, err := old.Open(nil, msg); err != nil {
		t.Fatalf("before confirmation: %v", err)
	}
	up := ipv4UDP(a.addr(), netip.MustParseAddr("10.20.1.1"), 1, 2, []byte("new keys"))
	a.send(up)
	if got := e.tunIn(ctx); !bytes.Equal(got, up) {
		t.Fatal("packet under new keys not delivered")
	}
	e.tun.Outbound <- ipv4UDP(netip.MustParseAddr("10.20.1.1"), a.addr(), 1, 2, []byte("after"))
	if got := a.recvPlain(ctx, false); !bytes.Contains(got, []byte("after")) {
		t.Fatal("gateway did not switch to the new keys")
	}
	// Packets in flight under the old keys still arrive for 10 s.
	inflight := ipv4UDP(a.addr(), netip.MustParseAddr("10.20.1.1"), 1, 2, []byte("in flight"))
	pkt, _ := oldKP.Seal(nil, inflight)
	a.w.Send(pkt)
	if got := e.tunIn(ctx); !bytes.Equal(got, inflight) {
		t.Fatal("in-flight packet under old keys lost")
	}
	e.clock.advance(OldKeyLifetime + time.Second)
	e.gw.tick(e.clock.now())
	pkt, _ = oldKP.Seal(nil, inflight)
	drops := st.DropNoSession.Load()
	a.w.Send(pkt)
	waitFor(t, "old keys retired", func() bool { return st.DropNoSession.Load() == drops+1 })
	if e.gw.Sessions()[0].Rekeys != 2 {
		t.Fatalf("rekeys %d", e.gw.Sessions()[0].Rekeys)
	}
}

func TestCookieRoundTripUnderLoad(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.LoadThreshold = 1 })
	ctx := testCtx(t)
	st := e.gw.Stats()
	first := e.agent("agent-load", nil)
	first.mustConnect(ctx)

	// Cookie-less Initiations, even with a valid address token, only get
	// CookieReplies; none reaches HandleInitiation.
	started := st.HandshakesStarted.Load()
	replies := st.CookieReplies.Load()
	p := e.net.Port(first.w.(interface{ Addr() netip.AddrPort }).Addr())
	a := e.agent("agent-load", p)
	a.token = first.token
	init := a.initiation(t, nil)
	for range 20 {
		p.Send(init)
	}
	waitFor(t, "cookie replies", func() bool { return st.CookieReplies.Load() == replies+20 })
	if st.HandshakesStarted.Load() != started {
		t.Fatalf("HandleInitiation ran %d times for cookie-less messages", st.HandshakesStarted.Load()-started)
	}
	for p.Pending() > 0 {
		b, _ := p.TryRecv()
		if len(b) != 64 || b[0] != byte(handshake.TypeCookieReply) {
			t.Fatalf("got %d bytes of type %d", len(b), b[0])
		}
	}
	// With the cookie it goes through.
	b := e.agent("agent-load", nil)
	b.token = first.token
	b.mustConnect(ctx)
	if st.HandshakesStarted.Load() != started+1 {
		t.Fatalf("handshakes %d", st.HandshakesStarted.Load()-started)
	}
}

func TestRefusedAtFinish(t *testing.T) {
	cases := []struct {
		name  string
		setup func(*env, *testAgent)
		mod   func(*Config)
		code  handshake.ErrorCode
	}{
		{"revoked", func(e *env, a *testAgent) { e.revoked.Revoke(a.cred.Serial) }, nil, handshake.CodeCertificateRevoked},
		{"not authorized", nil, func(c *Config) {
			c.Authorize = func(_ context.Context, p handshake.Peer) error {
				if p.ID == "agent-refused-not-authorized" {
					return errors.New("agent disabled")
				}
				return nil
			}
		}, handshake.CodeNotAuthorized},
		// A full session table refuses already at the Initiation, with an
		// unauthenticated hint and no public-key work.
		{"session table full", nil, func(c *Config) { c.MaxSessions = 1 }, handshake.CodeBusy},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.mod)
			ctx := testCtx(t)
			before := 0
			if tc.code == handshake.CodeBusy {
				e.agent("agent-other", nil).mustConnect(ctx)
				before = 1
			}
			a := e.agent("agent-refused-"+strings.ReplaceAll(tc.name, " ", "-"), nil)
			if tc.setup != nil {
				tc.setup(e, a)
			}
			err := a.connect(ctx)
			var he *errHandshake
			busy := tc.code == handshake.CodeBusy
			if !errors.As(err, &he) || he.info.Code != tc.code || he.info.Authenticated == busy {
				t.Fatalf("connect: %v", err)
			}
			st := e.gw.Stats()
			refused := uint64(1)
			if busy {
				refused = 0
				if st.Busy.Load() != 1 || st.HandshakesStarted.Load() != 1 {
					t.Fatalf("busy %d, handshakes %d", st.Busy.Load(), st.HandshakesStarted.Load())
				}
			}
			if len(e.gw.Sessions()) != before || st.FinishRefused.Load() != refused || e.gw.Tracker().Len() != before {
				t.Fatalf("sessions %d, refused %d", len(e.gw.Sessions()), st.FinishRefused.Load())
			}
			waitFor(t, "pending cleared", func() bool {
				e.gw.table.RLock()
				defer e.gw.table.RUnlock()
				return e.gw.table.pending == 0 && len(e.gw.table.byIndex) == before && len(e.gw.table.pendingBySrc) == 0
			})
		})
	}
}

func TestTerminate(t *testing.T) {
	e := newEnv(t, nil)
	ctx := testCtx(t)
	a := e.agent("agent-kill-1", nil)
	a.mustConnect(ctx)
	b := e.agent("agent-kill-2", nil)
	b.mustConnect(ctx)
	c := e.agent("agent-kill-3", nil)
	c.mustConnect(ctx)
	st := e.gw.Stats()

	cases := []struct {
		name string
		ag   *testAgent
		kill func() int
		code uint16
	}{
		{"by id", a, func() int { e.gw.Terminate(pulse.ID(a.res.SessionID), "operator kill"); return 1 }, control.CloseKilled},
		{"by agent", b, func() int { return e.gw.TerminateAgent("agent-kill-2", "agent disabled") }, control.CloseRevoked},
		{"by serial", c, func() int { return e.gw.TerminateSerial(c.cred.Serial.Text(16), "revoked") }, control.CloseRevoked},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if n := tc.kill(); n != 1 {
				t.Fatalf("ended %d", n)
			}
			m := tc.ag.recvControl(ctx)
			if cl, ok := m.(*control.Close); !ok || cl.Code != tc.code {
				t.Fatalf("got %#v", m)
			}
			if n := len(e.gw.Sessions()); n != len(cases)-i-1 {
				t.Fatalf("%d sessions left", n)
			}
			drops := st.DropNoSession.Load()
			tc.ag.send(ipv4UDP(tc.ag.addr(), netip.MustParseAddr("10.20.1.1"), 1, 2, nil))
			waitFor(t, "drop", func() bool { return st.DropNoSession.Load() == drops+1 })
		})
	}
	// Idempotent and tolerant of unknown ids.
	e.gw.Terminate(pulse.ID(a.res.SessionID), "again")
	e.gw.Terminate(pulse.ID{9}, "unknown")
	if e.gw.Tracker().Len() != 0 || st.SessionsEnded.Load() != 3 {
		t.Fatalf("tracker %d, ended %d", e.gw.Tracker().Len(), st.SessionsEnded.Load())
	}
}

func TestCloseFromAgent(t *testing.T) {
	e := newEnv(t, nil)
	ctx := testCtx(t)
	a := e.agent("agent-bye", nil)
	a.mustConnect(ctx)
	a.sendControl(&control.Close{Code: control.CloseShutdown, Reason: "bye"})
	waitFor(t, "session end", func() bool { return len(e.gw.Sessions()) == 0 })
	if e.gw.Stats().ClosesRx.Load() != 1 {
		t.Fatal("close not counted")
	}
}
