package tunnel_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/conn/bindtest"
	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/avonzt/avon/agent/tunnel"
	"github.com/avonzt/avon/agent/tunnel/tunneltest"
	"github.com/avonzt/avon/core/handshake"
	"github.com/avonzt/avon/core/tunnel/control"
)

var (
	agentAddr = netip.MustParsePrefix("100.64.0.5/10")
	agentIP   = agentAddr.Addr()
	routeNet  = netip.MustParsePrefix("10.99.0.0/16")
	remoteIP  = netip.MustParseAddr("10.99.0.1")
	// gatewayAP is where bindtest's first bind sends to reach the second.
	gatewayAP = netip.MustParseAddrPort("127.0.0.1:3")
)

type rig struct {
	t      testing.TB
	pki    *tunneltest.PKI
	gw     *tunneltest.Gateway
	gwBind conn.Bind
	eng    *tunnel.Engine
	tun    *tuntest.ChannelTUN
	dir    string
	cancel context.CancelFunc
	done   chan error

	mu      sync.Mutex
	configs []control.SessionConfig
}

type rigOpt func(*tunnel.Config, *tunneltest.Config)

func newRig(t testing.TB, opts ...rigOpt) *rig {
	t.Helper()
	now := time.Now()
	pki, err := tunneltest.NewPKI("agent-0001", now, now.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	binds := bindtest.NewChannelBinds()
	r := &rig{t: t, pki: pki, gwBind: binds[1], tun: tuntest.NewChannelTUN(), dir: t.TempDir(), done: make(chan error, 1)}
	gcfg := tunneltest.Config{Bind: binds[1], PKI: pki, Addresses: []netip.Prefix{agentAddr},
		Routes: []netip.Prefix{routeNet}, PulseInterval: time.Second}
	signer, err := handshake.NewMLDSA65Signer(pki.AgentKey.PrivateKey(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cfg := tunnel.Config{Gateway: gatewayAP, Signer: signer, Chain: pki.AgentChain, GatewayPublicKey: pki.GatewayKey.Raw(),
		Rand: rand.Reader, StateDir: r.dir, AgentVersion: "test-1", Logger: testLogger(t),
		Facts: func() map[string]string { return map[string]string{"disk.encrypted": "true"} },
		OnConfig: func(sc control.SessionConfig) error {
			r.mu.Lock()
			r.configs = append(r.configs, sc)
			r.mu.Unlock()
			return nil
		},
		Timers: tunnel.Timers{HandshakeTimeout: 2 * time.Second, BackoffMin: 50 * time.Millisecond,
			BackoffMax: 400 * time.Millisecond, Tick: 20 * time.Millisecond, StatusInterval: 50 * time.Millisecond}}
	for _, o := range opts {
		o(&cfg, &gcfg)
	}
	if r.gw, err = tunneltest.New(gcfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.gw.Close)
	if r.eng, err = tunnel.New(cfg, r.tun.TUN(), binds[0]); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- r.eng.Run(ctx) }()
	t.Cleanup(r.stop)
	return r
}

func (r *rig) stop() {
	r.cancel()
	select {
	case err := <-r.done:
		if err != nil {
			r.t.Errorf("Run: %v", err)
		}
		r.done <- nil
	case <-time.After(30 * time.Second):
		r.t.Fatal("Run did not return after cancel")
	}
}

// waitFor polls cond for at most 30 s (a safety net, not a timing check).
func (r *rig) waitFor(what string, cond func() bool) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if !tunneltest.Wait(ctx, cond) {
		r.t.Fatalf("waiting for %s: status %+v, gateway %+v", what, r.eng.Status(), r.gw.Stats())
	}
}

func (r *rig) waitUp() {
	r.t.Helper()
	r.waitFor("state up", func() bool { return r.eng.Status().State == tunnel.StateUp })
}

// ipv4 builds a UDP/IPv4 packet.
func ipv4(src, dst netip.Addr, payload string) []byte {
	b := make([]byte, 28+len(payload))
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	b[8] = 64
	b[9] = 17
	s, d := src.As4(), dst.As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	binary.BigEndian.PutUint16(b[20:], 40000)
	binary.BigEndian.PutUint16(b[22:], 53)
	binary.BigEndian.PutUint16(b[24:], uint16(8+len(payload)))
	copy(b[28:], payload)
	return b
}

// roundTrip sends one packet each way and checks both arrive intact. Like
// UDP, the tunnel may drop a packet (while the bind is reopened), so each
// is sent again until it arrives, a bounded number of times.
func (r *rig) roundTrip(tag string) {
	r.t.Helper()
	out := ipv4(agentIP, remoteIP, "to gateway "+tag)
	r.deliver(func() error {
		select {
		case r.tun.Outbound <- out:
			return nil
		case <-time.After(10 * time.Second):
			return errors.New("the engine does not read the tun")
		}
	}, r.gw.Inbound(), out, "gateway")
	in := ipv4(remoteIP, agentIP, "to agent "+tag)
	r.deliver(func() error { return r.gw.SendIP(in) }, r.tun.Inbound, in, "tun")
}

func (r *rig) deliver(send func() error, ch <-chan []byte, want []byte, where string) {
	r.t.Helper()
	for try := 0; try < 100; try++ {
		if err := send(); err != nil {
			r.t.Fatal(err)
		}
		wait := time.After(300 * time.Millisecond)
	drain:
		for {
			select {
			case got := <-ch:
				if string(got) == string(want) {
					return
				}
			case <-wait:
				break drain
			}
		}
	}
	r.t.Fatalf("%s: packet %q never arrived", where, want[28:])
}

func TestConnectDataAndStatus(t *testing.T) {
	r := newRig(t)
	r.waitUp()
	r.roundTrip("1")

	st := r.gw.Stats()
	if st.CookieReplies != 1 || st.Responses != 1 || st.Sessions != 1 {
		t.Errorf("first contact: %d cookie replies, %d responses, %d sessions; want 1, 1, 1", st.CookieReplies, st.Responses, st.Sessions)
	}
	r.mu.Lock()
	if len(r.configs) != 1 || r.configs[0].Addresses[0] != agentAddr || r.configs[0].Routes[0] != routeNet {
		t.Errorf("OnConfig got %+v", r.configs)
	}
	r.mu.Unlock()

	// A packet not addressed to our tunnel address is never injected.
	if err := r.gw.SendIP(ipv4(remoteIP, netip.MustParseAddr("100.64.0.6"), "not ours")); err != nil {
		t.Fatal(err)
	}
	in := ipv4(remoteIP, agentIP, "ours")
	if err := r.gw.SendIP(in); err != nil {
		t.Fatal(err)
	}
	if got := <-r.tun.Inbound; string(got) != string(in) {
		t.Errorf("tun got %q, want only the packet for our address", got[28:])
	}

	s := r.eng.Status()
	if s.Gateway != gatewayAP.String() || len(s.Addresses) != 1 || s.Addresses[0] != agentAddr.String() ||
		s.RxBytes == 0 || s.TxBytes == 0 || s.LastHandshake.IsZero() || s.Interface != "avon0" {
		t.Errorf("status %+v", s)
	}
	r.waitFor("status file up", func() bool {
		b, err := os.ReadFile(filepath.Join(r.dir, tunnel.StatusFile))
		if err != nil {
			return false
		}
		fs, err := tunnel.ParseStatus(b)
		return err == nil && fs.State == tunnel.StateUp && fs.TxBytes > 0
	})
	if _, err := os.Stat(filepath.Join(r.dir, tunnel.TokenFile)); err != nil {
		t.Errorf("address token not stored: %v", err)
	}

	r.stop()
	if got := r.gw.Stats().Closes; got != 1 {
		t.Errorf("gateway saw %d Close messages on shutdown, want 1", got)
	}
	b, err := os.ReadFile(filepath.Join(r.dir, tunnel.StatusFile))
	if err != nil {
		t.Fatal(err)
	}
	if fs, err := tunnel.ParseStatus(b); err != nil || fs.State != tunnel.StateStopped {
		t.Errorf("final status %+v, %v", fs, err)
	}
}

func TestPulsesRotateTokens(t *testing.T) {
	r := newRig(t)
	r.waitUp()
	r.waitFor("4 pulses accepted", func() bool { return r.gw.Stats().Pulses >= 4 })
	st := r.gw.Stats()
	if st.Errors != 0 {
		t.Errorf("gateway refusals: %v", st.Refusals)
	}
	p := st.LastPulse
	if !strings.HasPrefix(p.OS, runtime.GOOS) || p.AgentVersion != "test-1" || p.Facts["disk.encrypted"] != "true" || p.AgentTime == 0 {
		t.Errorf("pulse %+v", p)
	}
	r.waitFor("acks counted", func() bool { return r.eng.Status().Pulses >= 3 })
}

func TestRekey(t *testing.T) {
	r := newRig(t, func(c *tunnel.Config, _ *tunneltest.Config) { c.Timers.RekeyAfter = 200 * time.Millisecond })
	r.waitUp()
	r.waitFor("3 rekeys", func() bool { return r.gw.Stats().Rekeys >= 3 && r.eng.Status().Rekeys >= 3 })
	r.roundTrip("after rekeys")
	if st := r.gw.Stats(); st.Sessions != 1 || st.Errors != 0 {
		t.Errorf("rekeys must keep the session: %+v", st)
	}
}

func TestReconnectAfterGatewayRestart(t *testing.T) {
	r := newRig(t)
	r.waitUp()
	r.roundTrip("before")
	if err := r.gw.Restart(); err != nil {
		t.Fatal(err)
	}
	r.waitFor("a second session", func() bool { return r.gw.Stats().Sessions >= 2 && r.eng.Status().State == tunnel.StateUp })
	if s := r.eng.Status(); !strings.Contains(s.LastError, "stopped answering") {
		t.Errorf("last error %q, want the silence reason", s.LastError)
	}
	r.roundTrip("after")
}

func TestCloseReconnectsWithToken(t *testing.T) {
	r := newRig(t)
	r.waitUp()
	if err := r.gw.SendControl(&control.Close{Code: control.CloseKilled, Reason: "operator said so"}); err != nil {
		t.Fatal(err)
	}
	r.waitFor("a second session", func() bool { return r.gw.Stats().Sessions >= 2 && r.eng.Status().State == tunnel.StateUp })
	if s := r.eng.Status(); !strings.Contains(s.LastError, "operator said so") {
		t.Errorf("last error %q, want the gateway's reason", s.LastError)
	}
	// The reconnect proved the address with the token: no second cookie.
	if st := r.gw.Stats(); st.CookieReplies != 1 {
		t.Errorf("%d cookie replies, want 1 (the reconnect carries the address token)", st.CookieReplies)
	}
	r.roundTrip("after close")
}

func TestClockSkewSurfacedThenRecovers(t *testing.T) {
	r := newRig(t, func(_ *tunnel.Config, g *tunneltest.Config) { g.NoTokens = true })
	r.gw.SetSkew(time.Hour)
	r.waitFor("clock skew in status", func() bool {
		s := r.eng.Status()
		return strings.Contains(s.LastError, "clock skew") && strings.Contains(s.LastError, "behind")
	})
	// The reported skew is the hour give or take the time the messages
	// took (on a loaded machine, "59m59.97s" as often as "1h0m0.01s").
	s := r.eng.Status()
	m := regexp.MustCompile(`our clock is (\S+) behind`).FindStringSubmatch(s.LastError)
	if s.State == tunnel.StateUp || m == nil {
		t.Fatalf("status %+v", s)
	}
	if d, err := time.ParseDuration(m[1]); err != nil || d < time.Hour-5*time.Second || d > time.Hour+5*time.Second {
		t.Errorf("reported skew %q, want about 1h (%v)", m[1], err)
	}
	r.gw.SetSkew(0)
	r.waitUp() // no lockout once the clocks agree
	r.roundTrip("after skew")
}

func TestDenialsInStatus(t *testing.T) {
	r := newRig(t)
	r.waitUp()
	d := &control.Denial{Proto: 6, Src: netip.AddrPortFrom(agentIP, 40000), Dst: netip.AddrPortFrom(remoteIP, 22),
		Reason: "ssh not allowed", PolicyIDs: []string{"p-ssh"}}
	for range tunnel.MaxDenials + 3 {
		if err := r.gw.SendControl(d); err != nil {
			t.Fatal(err)
		}
	}
	r.waitFor("denials", func() bool { return len(r.eng.Status().Denials) == tunnel.MaxDenials })
	got := r.eng.Status().Denials[0]
	if got.Reason != "ssh not allowed" || got.Dst != "10.99.0.1:22" || got.PolicyIDs[0] != "p-ssh" {
		t.Errorf("denial %+v", got)
	}
}

func TestGarbageIgnored(t *testing.T) {
	r := newRig(t)
	ep, err := r.gwBind.ParseEndpoint("127.0.0.1:4")
	if err != nil {
		t.Fatal(err)
	}
	garbage := func() {
		t.Helper()
		msgs := [][]byte{{}, {4}, {4, 1, 0, 0}, {9, 1, 0, 0, 1, 2, 3, 4, 0, 1, 0, 5, 1, 2, 3, 4, 5}, {0, 0, 0, 0, 0}}
		for typ := byte(0); typ < 12; typ++ {
			for _, n := range []int{4, 12, 64, 200, 1212, 1400} {
				b := make([]byte, n)
				_, _ = rand.Read(b)
				b[0], b[1], b[2], b[3] = typ, 1, 0, 0
				msgs = append(msgs, b)
			}
		}
		for _, m := range msgs {
			if err := r.gwBind.Send([][]byte{m}, ep); err != nil {
				t.Fatal(err)
			}
		}
	}
	garbage() // during the handshake
	r.waitUp()
	garbage()
	r.roundTrip("after garbage")
	if st := r.gw.Stats(); st.Sessions != 1 {
		t.Errorf("garbage made the agent reconnect: %d sessions", st.Sessions)
	}
}

func TestRebind(t *testing.T) {
	var mu sync.Mutex
	local := []netip.Addr{netip.MustParseAddr("192.0.2.10")}
	r := newRig(t, func(c *tunnel.Config, _ *tunneltest.Config) {
		c.Timers.RoamCheck = 20 * time.Millisecond
		c.LocalAddrs = func() ([]netip.Addr, error) {
			mu.Lock()
			defer mu.Unlock()
			return append([]netip.Addr(nil), local...), nil
		}
	})
	r.waitUp()
	r.eng.Rebind()
	r.roundTrip("after rebind")
	mu.Lock()
	local = []netip.Addr{netip.MustParseAddr("198.51.100.7")}
	mu.Unlock()
	r.roundTrip("after address change")
	if st := r.gw.Stats(); st.Sessions != 1 {
		t.Errorf("roaming needs no new handshake: %d sessions", st.Sessions)
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	pki, err := tunneltest.NewPKI("agent-x", time.Now(), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	signer, err := handshake.NewMLDSA65Signer(pki.AgentKey.PrivateKey(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	good := tunnel.Config{Gateway: gatewayAP, Signer: signer, Chain: pki.AgentChain, GatewayPublicKey: pki.GatewayKey.Raw(), Rand: rand.Reader}
	tests := []struct {
		name string
		mod  func(*tunnel.Config)
	}{
		{"no gateway", func(c *tunnel.Config) { c.Gateway = netip.AddrPort{} }},
		{"port 0", func(c *tunnel.Config) { c.Gateway = netip.AddrPortFrom(gatewayAP.Addr(), 0) }},
		{"no signer", func(c *tunnel.Config) { c.Signer = nil }},
		{"no chain", func(c *tunnel.Config) { c.Chain = nil }},
		{"short gateway key", func(c *tunnel.Config) { c.GatewayPublicKey = c.GatewayPublicKey[:100] }},
		{"no rand", func(c *tunnel.Config) { c.Rand = nil }},
		{"bad aead", func(c *tunnel.Config) { c.AEAD = 9 }},
		{"tiny mtu", func(c *tunnel.Config) { c.MTU = 100 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := good
			tc.mod(&c)
			binds := bindtest.NewChannelBinds()
			if _, err := tunnel.New(c, tuntest.NewChannelTUN().TUN(), binds[0]); !errors.Is(err, tunnel.ErrConfig) {
				t.Errorf("New: %v, want ErrConfig", err)
			}
		})
	}
	binds := bindtest.NewChannelBinds()
	if _, err := tunnel.New(good, nil, binds[0]); !errors.Is(err, tunnel.ErrConfig) {
		t.Errorf("New without a device: %v", err)
	}
	e, err := tunnel.New(good, tuntest.NewChannelTUN().TUN(), binds[0])
	if err != nil {
		t.Fatalf("New with a good config: %v", err)
	}
	if s := e.Status(); s.State != tunnel.StateStopped {
		t.Errorf("state before Run %q", s.State)
	}
}

func TestRunTwiceAndNoLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	r := newRig(t)
	r.waitUp()
	if err := r.eng.Run(context.Background()); !errors.Is(err, tunnel.ErrRunning) {
		t.Errorf("second Run: %v", err)
	}
	r.stop()
	r.gw.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if !tunneltest.Wait(ctx, func() bool { return runtime.NumGoroutine() <= before }) {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines before, %d after:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
	}
}

func testLogger(t testing.TB) hclog.Logger {
	if os.Getenv("AVON_TEST_LOG") == "" {
		return nil
	}
	return hclog.New(&hclog.LoggerOptions{Level: hclog.Debug, Output: os.Stderr, Name: t.Name()})
}

// TestDelegatedCredentialCached: the first handshake receives the
// gateway's delegated credential, the agent keeps it (memory, StateDir,
// status) and the reconnect's Response leaves it out; after a gateway
// restart (a new delegated key) the hint no longer matches and the new
// credential comes in full.
func TestDelegatedCredentialCached(t *testing.T) {
	r := newRig(t)
	r.waitUp()
	st := r.eng.Status()
	if r.gw.Stats().CredentialsSent != 1 || st.DelegatedKeyExpires.IsZero() {
		t.Fatalf("first handshake: %d credentials sent, status expiry %v", r.gw.Stats().CredentialsSent, st.DelegatedKeyExpires)
	}
	if b, err := os.ReadFile(filepath.Join(r.dir, tunnel.CredentialFile)); err != nil || len(b) != handshake.CredentialLen {
		t.Fatalf("credential file: %d bytes, %v", len(b), err)
	}
	first := st.DelegatedKeyExpires
	if err := r.gw.SendControl(&control.Close{Code: control.CloseKilled, Reason: "again"}); err != nil {
		t.Fatal(err)
	}
	r.waitFor("a second session", func() bool { return r.gw.Stats().Sessions >= 2 && r.eng.Status().State == tunnel.StateUp })
	if n := r.gw.Stats().CredentialsSent; n != 1 {
		t.Fatalf("%d credentials sent after the reconnect, want 1 (the agent hinted at the one it has)", n)
	}
	if err := r.gw.Restart(); err != nil {
		t.Fatal(err)
	}
	r.waitFor("a session with the new key", func() bool {
		return r.gw.Stats().Sessions >= 1 && r.eng.Status().State == tunnel.StateUp &&
			r.gw.Stats().CredentialsSent >= 2
	})
	r.waitFor("the new expiry in the status", func() bool { return r.eng.Status().DelegatedKeyExpires.After(first) })
	r.roundTrip("with the new delegated key")
}

// TestDualStackConfig: a dual-stack SessionConfig reaches OnConfig whole,
// and IPv6 packets for the agent's IPv6 address are injected; with the
// agent's MTU below 1280 the IPv6 part is left out.
func TestDualStackConfig(t *testing.T) {
	addr6 := netip.MustParsePrefix("fd00:96::5/128")
	tunnel6 := netip.MustParsePrefix("fd00:96::/64")
	route6 := netip.MustParsePrefix("fd00:99::/64")
	dual := func(mtu int) rigOpt {
		return func(c *tunnel.Config, g *tunneltest.Config) {
			c.MTU = mtu
			g.Addresses = []netip.Prefix{agentAddr, addr6}
			g.Routes = []netip.Prefix{routeNet, tunnel6, route6}
		}
	}
	t.Run("mtu 1420", func(t *testing.T) {
		r := newRig(t, dual(1420))
		r.waitUp()
		r.mu.Lock()
		sc := r.configs[0]
		r.mu.Unlock()
		if !slices.Equal(sc.Addresses, []netip.Prefix{agentAddr, addr6}) || !slices.Equal(sc.Routes, []netip.Prefix{routeNet, tunnel6, route6}) {
			t.Fatalf("OnConfig got %v, %v", sc.Addresses, sc.Routes)
		}
		if s := r.eng.Status(); len(s.Addresses) != 2 || s.Addresses[1] != addr6.String() {
			t.Fatalf("status addresses %v", s.Addresses)
		}
		other := ipv6Packet(netip.MustParseAddr("fd00:99::1"), netip.MustParseAddr("fd00:96::6"), "not ours")
		ours := ipv6Packet(netip.MustParseAddr("fd00:99::1"), addr6.Addr(), "ours over v6")
		for _, p := range [][]byte{other, ours} {
			if err := r.gw.SendIP(p); err != nil {
				t.Fatal(err)
			}
		}
		if got := <-r.tun.Inbound; !bytes.Equal(got, ours) {
			t.Fatalf("tun got %x, want only the packet for our IPv6 address", got)
		}
	})
	t.Run("mtu 1200", func(t *testing.T) {
		r := newRig(t, dual(1200))
		r.waitUp()
		r.mu.Lock()
		sc := r.configs[0]
		r.mu.Unlock()
		if sc.MTU != 1200 || !slices.Equal(sc.Addresses, []netip.Prefix{agentAddr}) || !slices.Equal(sc.Routes, []netip.Prefix{routeNet}) {
			t.Fatalf("OnConfig got mtu %d, %v, %v", sc.MTU, sc.Addresses, sc.Routes)
		}
	})
}

// ipv6Packet builds a UDP/IPv6 packet (checksum left zero: the engine
// does not read it).
func ipv6Packet(src, dst netip.Addr, payload string) []byte {
	b := make([]byte, 48+len(payload))
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:], uint16(8+len(payload)))
	b[6], b[7] = 17, 64
	s, d := src.As16(), dst.As16()
	copy(b[8:], s[:])
	copy(b[24:], d[:])
	binary.BigEndian.PutUint16(b[40:], 53)
	binary.BigEndian.PutUint16(b[42:], 40000)
	binary.BigEndian.PutUint16(b[44:], uint16(8+len(payload)))
	copy(b[48:], payload)
	return b
}
