package gateway

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.zx2c4.com/wireguard/conn/bindtest"
	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/avonzt/avon/agent/tunnel"
	"github.com/avonzt/avon/core/gateway/flow"
	"github.com/avonzt/avon/core/gateway/flow/flowtest"
	"github.com/avonzt/avon/core/gateway/ipam"
	"github.com/avonzt/avon/core/handshake"
	"github.com/avonzt/avon/core/pulse"
	"github.com/avonzt/avon/core/store/memstore"
	"github.com/avonzt/avon/core/tunnel/control"
	"github.com/avonzt/avon/core/tunnel/transport"
	"github.com/avonzt/avon/sdk/policy"
)

var policyServer = netip.MustParseAddr("10.20.0.10")

// policyRules allow https and dns to the server and deny ssh.
var policyRules = flowtest.Rules(
	flowtest.Rule{Resource: "tcp/10.20.0.10:443", PolicyID: "eng-https"},
	flowtest.Rule{Resource: "udp/10.20.0.10:53", PolicyID: "dns"},
	flowtest.Rule{Resource: "tcp/10.20.0.10:22", PolicyID: "no-ssh", Deny: true, Reason: "ssh is for admins"},
)

func enforce(eng *flowtest.Engine) func(*Config) {
	return func(c *Config) {
		c.Policy = PolicyConfig{Mode: PolicyEnforce, BatchDelay: time.Millisecond}
		if eng != nil { // a typed nil would not be "absent"
			c.Policy.Engine = eng
		}
	}
}

// ipv4TCP builds an IPv4/TCP packet (checksums are not checked on this
// path).
func ipv4TCP(src, dst netip.Addr, sport, dport uint16, flags uint8) []byte {
	b := make([]byte, 40)
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], 40)
	b[8] = 64
	b[9] = transport.ProtoTCP
	s4, d4 := src.As4(), dst.As4()
	copy(b[12:], s4[:])
	copy(b[16:], d4[:])
	binary.BigEndian.PutUint16(b[20:], sport)
	binary.BigEndian.PutUint16(b[22:], dport)
	b[32] = 5 << 4
	b[33] = flags
	return b
}

// noTunPacket checks that nothing waits on the TUN.
func (e *env) noTunPacket() {
	e.t.Helper()
	select {
	case b := <-e.tun.Inbound:
		e.t.Fatalf("unexpected packet on the tun: %x", b)
	default:
	}
}

// recvDenial reads control messages until a Denial (at most n).
func (a *testAgent) recvDenial(ctx context.Context, n int) *control.Denial {
	a.t.Helper()
	for range n {
		if d, ok := a.recvControl(ctx).(*control.Denial); ok {
			return d
		}
	}
	a.t.Fatalf("no denial in %d control messages", n)
	return nil
}

func TestPolicyEnforced(t *testing.T) {
	eng := flowtest.New(policyRules)
	e := newEnv(t, enforce(eng))
	ctx := testCtx(t)
	a := e.agent("agent-policy", nil)
	a.mustConnect(ctx)
	fs := e.gw.FlowStats()

	// Allowed: the first packet waits for the decision, then reaches the TUN.
	syn := ipv4TCP(a.addr(), policyServer, 40000, 443, 0x02)
	a.send(syn)
	if got := e.tunIn(ctx); !bytes.Equal(got, syn) {
		t.Fatalf("tun got %x, want %x", got, syn)
	}
	// Return traffic needs no decision.
	synack := ipv4TCP(policyServer, a.addr(), 443, 40000, 0x12)
	e.tun.Outbound <- synack
	if got := a.recvPlain(ctx, false); !bytes.Equal(got[:len(synack)], synack) {
		t.Fatalf("agent got %x", got)
	}
	ack := ipv4TCP(a.addr(), policyServer, 40000, 443, 0x10)
	a.send(ack)
	if got := e.tunIn(ctx); !bytes.Equal(got, ack) {
		t.Fatal("established packet not forwarded")
	}
	if eng.Queries() != 2 {
		t.Fatalf("%d queries for the session's connect and one flow, want 2", eng.Queries())
	}

	// Denied: nothing reaches the TUN, the agent learns why.
	a.send(ipv4TCP(a.addr(), policyServer, 40001, 22, 0x02))
	d := a.recvDenial(ctx, 4)
	want := &control.Denial{Proto: transport.ProtoTCP, Src: netip.AddrPortFrom(a.addr(), 40001),
		Dst: netip.AddrPortFrom(policyServer, 22), Reason: "ssh is for admins", PolicyIDs: []string{"no-ssh"}}
	if d.Proto != want.Proto || d.Src != want.Src || d.Dst != want.Dst || d.Reason != want.Reason ||
		len(d.PolicyIDs) != 1 || d.PolicyIDs[0] != "no-ssh" {
		t.Fatalf("denial %+v, want %+v", d, want)
	}
	e.noTunPacket()

	// Unsolicited packets to the agent are dropped.
	e.tun.Outbound <- ipv4TCP(policyServer, a.addr(), 5555, 80, 0x02)
	waitFor(t, "unsolicited drop", func() bool { return fs.DropUnsolicited.Load() == 1 })

	// A policy change cuts the open flow; the agent is told.
	eng.SetDecide(flowtest.Rules(flowtest.Rule{Resource: "tcp/10.20.0.10:443", PolicyID: "lockdown", Deny: true, Reason: "maintenance"}))
	start := time.Now()
	if n := e.gw.PolicyChanged(); n != 2 {
		t.Fatalf("re-checked %d flows, want 2", n)
	}
	d = a.recvDenial(ctx, 4)
	t.Logf("open flow cut and agent told %v after the policy change", time.Since(start))
	if d.Reason != "open flow cut: maintenance" || d.Dst != netip.AddrPortFrom(policyServer, 443) || d.PolicyIDs[0] != "lockdown" {
		t.Fatalf("cut denial %+v", d)
	}
	dropped := fs.DropDenied.Load()
	a.send(ack)
	e.tun.Outbound <- ipv4TCP(policyServer, a.addr(), 443, 40000, 0x10)
	waitFor(t, "both directions dropped", func() bool { return fs.DropDenied.Load() == dropped+2 })
	e.noTunPacket()
	if len(e.gw.SessionFlows(pulseID(a))) != 2 {
		t.Fatalf("flows %+v", e.gw.SessionFlows(pulseID(a)))
	}
}

func TestPolicyPulseReevaluation(t *testing.T) {
	eng := flowtest.New(func(q policy.Query) policy.Decision {
		if q.Action.ID == "connect" {
			return policy.Decision{Allow: true}
		}
		if strings.Contains(string(q.Context), `"disk.encrypted":"true"`) {
			return policy.Decision{Allow: true, DeterminingPolicies: []string{"encrypted-only"}}
		}
		return policy.Decision{DeterminingPolicies: []string{"encrypted-only"}, Reasons: []string{"disk not encrypted"}}
	})
	e := newEnv(t, enforce(eng))
	ctx := testCtx(t)
	a := e.agent("agent-posture", nil)
	a.mustConnect(ctx)
	pulse := func(encrypted string) {
		a.seq++
		a.sendControl(&control.Pulse{Seq: a.seq, SessionToken: a.stoken, AgentTime: a.now().UnixNano(), OS: "linux",
			AgentVersion: "test", Facts: map[string]string{"disk.encrypted": encrypted}})
	}
	pulse("true")
	ack, ok := a.recvControl(ctx).(*control.PulseAck)
	if !ok {
		t.Fatal("no pulse ack")
	}
	a.stoken = ack.NextToken
	q := ipv4UDP(a.addr(), policyServer, 5000, 53, []byte("q"))
	a.send(q)
	if got := e.tunIn(ctx); !bytes.Equal(got, q) {
		t.Fatal("allowed flow not forwarded")
	}
	// The posture changes on the next pulse: the flow is cut.
	pulse("false")
	d := a.recvDenial(ctx, 4)
	if d.Reason != "open flow cut: disk not encrypted" || d.Dst != netip.AddrPortFrom(policyServer, 53) {
		t.Fatalf("denial %+v", d)
	}
	if e.gw.FlowStats().Cut.Load() != 1 {
		t.Fatal("cut not counted")
	}
}

func TestPolicyFailClosed(t *testing.T) {
	// Without an engine not even a session is admitted.
	e := newEnv(t, enforce(nil))
	ctx := testCtx(t)
	var ec *errClose
	if err := e.agent("agent-noengine", nil).connect(ctx); !errors.As(err, &ec) || ec.c.Code != control.CloseConnectDenied ||
		!strings.Contains(ec.c.Reason, "fail closed") {
		t.Fatalf("connect without an engine: %v, want a connect denial that fails closed", err)
	}
	if len(e.gw.Sessions()) != 0 || e.gw.Stats().ConnectRefused.Load() != 1 {
		t.Fatalf("sessions %v, refused %d", e.gw.Sessions(), e.gw.Stats().ConnectRefused.Load())
	}
	// An engine that admitted the session, then fails: new flows fail closed.
	eng := flowtest.New(flowtest.Rules())
	e = newEnv(t, enforce(eng))
	a := e.agent("agent-engine-fails", nil)
	a.mustConnect(ctx)
	eng.SetError(flowtest.ErrDown)
	a.send(ipv4TCP(a.addr(), policyServer, 40000, 443, 0x02))
	d := a.recvDenial(ctx, 4)
	if !strings.Contains(d.Reason, "fail closed") {
		t.Fatalf("denial %+v", d)
	}
	e.noTunPacket()
	if e.gw.FlowStats().FailClosed.Load() != 1 {
		t.Fatal("fail closed not counted")
	}
}

func TestPolicyAgentToAgent(t *testing.T) {
	eng := flowtest.New(func(q policy.Query) policy.Decision {
		return policy.Decision{Allow: q.Action.ID == "connect" || strings.HasSuffix(q.Resource.ID, ":8080")}
	})
	e := newEnv(t, enforce(eng))
	ctx := testCtx(t)
	a, b := e.agent("agent-a2a-1", nil), e.agent("agent-a2a-2", nil)
	a.mustConnect(ctx)
	b.mustConnect(ctx)
	// kernel plays the host's routing: what the gateway writes to its TUN
	// for a tunnel address comes back to be read.
	kernel := func() []byte {
		p := e.tunIn(ctx)
		e.tun.Outbound <- p
		return p
	}
	syn := ipv4TCP(a.addr(), b.addr(), 40000, 8080, 0x02)
	a.send(syn)
	kernel()
	if got := b.recvPlain(ctx, false); !bytes.Equal(got[:len(syn)], syn) {
		t.Fatal("a -> b not delivered")
	}
	synack := ipv4TCP(b.addr(), a.addr(), 8080, 40000, 0x12)
	b.send(synack)
	kernel()
	if got := a.recvPlain(ctx, false); !bytes.Equal(got[:len(synack)], synack) {
		t.Fatal("b's reply not delivered")
	}
	// b cannot open a flow to a that policy does not allow b.
	b.send(ipv4TCP(b.addr(), a.addr(), 40001, 22, 0x02))
	b.recvDenial(ctx, 4)
	e.noTunPacket()
	if eng.Queries() != 4 {
		t.Fatalf("%d queries, want 4 (two connects, two flows)", eng.Queries())
	}
}

func TestPolicyModeRefused(t *testing.T) {
	e := newEnv(t, nil)
	cfg := e.cfg
	cfg.Policy.Mode = "audit"
	if _, err := New(cfg, tuntest.NewChannelTUN().TUN(), e.net.Bind()); !errors.Is(err, ErrConfig) {
		t.Fatalf("mode audit: %v", err)
	}
	if e.gw.FlowStats() != nil || e.gw.PolicyChanged() != 0 {
		t.Fatal("enforcement on by default")
	}
}

func TestDenialMessageLimits(t *testing.T) {
	ids := make([]string, 20)
	for i := range ids {
		ids[i] = strings.Repeat("p", 200)
	}
	ids[0] = ""
	m := denialMessage(flow.Denial{Key: flow.Key{Src: netip.MustParseAddr("100.96.0.5"), Dst: policyServer, SrcPort: 7,
		Proto: transport.ProtoICMP}, Decision: flow.Decision{Reason: strings.Repeat("é", 300) + "\xff", PolicyIDs: ids}})
	b, err := control.Marshal(m)
	if err != nil {
		t.Fatalf("denial not encodable: %v", err)
	}
	back, err := control.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	d := back.(*control.Denial)
	if len(d.PolicyIDs) == 0 || d.Src.Port() != 0 || len(d.Reason) > control.MaxReason || d.PolicyIDs[0] != ids[1][:control.MaxPolicyID] {
		t.Fatalf("denial %d ids, src %v, reason %d bytes", len(d.PolicyIDs), d.Src, len(d.Reason))
	}
}

// TestDenialReachesAgentStatus runs the real agent engine against the
// real gateway: a denied flow shows in the agent's status ("last
// denials", what avon-agent status prints).
func TestDenialReachesAgentStatus(t *testing.T) {
	pki := thePKI(t)
	clk := newClock()
	eng := flowtest.New(policyRules)
	binds := bindtest.NewChannelBinds()
	gwTun := tuntest.NewChannelTUN()
	verifier, err := handshake.NewChainVerifier(pki.Roots(), handshake.ChainVerifierOptions{})
	if err != nil {
		t.Fatal(err)
	}
	signer, err := handshake.NewMLDSA65Signer(pki.gw.PrivateKey(), crand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := ipam.New(memstore.New(), tunnelPrefix)
	if err != nil {
		t.Fatal(err)
	}
	gw, err := New(Config{TunnelPrefix: tunnelPrefix, Routes: []netip.Prefix{netip.MustParsePrefix("10.20.0.0/16")},
		Now: clk.now, Rand: crand.Reader, Signer: signer, Verifier: verifier, IPAM: pool,
		Policy: PolicyConfig{Mode: PolicyEnforce, Engine: eng, BatchDelay: time.Millisecond}}, gwTun.TUN(), binds[1])
	if err != nil {
		t.Fatal(err)
	}
	if err := gw.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Close() })

	leaf := pki.agent(t, "agent-status")
	asigner, err := handshake.NewMLDSA65Signer(leaf.Key.PrivateKey(), crand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	agentTun := tuntest.NewChannelTUN()
	ae, err := tunnel.New(tunnel.Config{Gateway: netip.MustParseAddrPort("127.0.0.1:3"), Signer: asigner, Chain: leaf.Chain,
		GatewayPublicKey: pki.gw.Raw(), Rand: crand.Reader, Now: clk.now, StateDir: t.TempDir(), AgentVersion: "test",
		Logger: hclog.NewNullLogger(),
		Timers: tunnel.Timers{HandshakeTimeout: 5 * time.Second, BackoffMin: 50 * time.Millisecond, BackoffMax: 400 * time.Millisecond,
			Tick: 20 * time.Millisecond, StatusInterval: 50 * time.Millisecond}}, agentTun.TUN(), binds[0])
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ae.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent Run: %v", err)
		}
	})
	waitFor(t, "the agent up", func() bool { return ae.Status().State == tunnel.StateUp })
	self := netip.MustParsePrefix(ae.Status().Addresses[0]).Addr()

	agentTun.Outbound <- ipv4TCP(self, policyServer, 40000, 22, 0x02)
	waitFor(t, "the denial in the agent's status", func() bool { return len(ae.Status().Denials) == 1 })
	d := ae.Status().Denials[0]
	if d.Proto != transport.ProtoTCP || d.Dst != "10.20.0.10:22" || d.Reason != "ssh is for admins" ||
		len(d.PolicyIDs) != 1 || d.PolicyIDs[0] != "no-ssh" {
		t.Fatalf("status denial %+v", d)
	}
	// An allowed flow passes end to end.
	https := ipv4TCP(self, policyServer, 40001, 443, 0x02)
	agentTun.Outbound <- https
	select {
	case got := <-gwTun.Inbound:
		if !bytes.Equal(got, https) {
			t.Fatalf("gateway tun got %x", got)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("allowed flow did not reach the gateway's tun")
	}
}

func pulseID(a *testAgent) pulse.ID { return pulse.ID(a.res.SessionID) }
