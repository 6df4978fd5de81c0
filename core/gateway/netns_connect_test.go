package gateway

import (
	"context"
	crand "crypto/rand"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/avonzt/avon/agent/tunnel"
	"github.com/avonzt/avon/core/gateway/flow/flowtest"
	"github.com/avonzt/avon/core/gateway/ipam"
	"github.com/avonzt/avon/core/handshake"
	"github.com/avonzt/avon/core/store/memstore"
	"github.com/avonzt/avon/sdk/policy"
)

// TestKernelTunnelConnect runs the real agent engine against a gateway
// over a real TUN and real UDP in network namespaces: policy denies the
// agent a session, and its status says "connect denied: <reason> (policy
// <ids>)" while it backs off; once policy allows it the agent's next
// attempt comes up; a policy change that denies it again ends the live
// session with the reason.
func TestKernelTunnelConnect(t *testing.T) {
	gwNS, agNS, pki, clock, verifier, signer := kernelSetup(t)
	pool, err := ipam.New(memstore.New(), tunnelPrefix)
	if err != nil {
		t.Fatal(err)
	}
	quarantine := func(q policy.Query) policy.Decision {
		if q.Action.ID == "connect" {
			return policy.Decision{DeterminingPolicies: []string{"quarantine"}, Reasons: []string{"device quarantined"}}
		}
		return policy.Decision{Allow: true}
	}
	eng := flowtest.New(quarantine)

	var dev tun.Device
	if err := gwNS.Do(func() (err error) {
		dev, err = tun.CreateTUN("avtun0", DefaultMTU)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := gwNS.Run(t, "ip", "link", "set", "avtun0", "up"); err != nil {
		dev.Close()
		t.Fatal(err)
	}
	g, err := New(Config{TunnelPrefix: tunnelPrefix, Now: clock.now, Rand: crand.Reader, Signer: signer,
		Verifier: verifier, IPAM: pool, Policy: PolicyConfig{Mode: PolicyEnforce, Engine: eng, BatchDelay: time.Millisecond,
			GatewayID: "gw-netns"}},
		dev, conn.NewStdNetBind())
	if err != nil {
		dev.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	if err := gwNS.Do(func() error { return g.Start(context.Background()) }); err != nil {
		t.Fatal(err)
	}

	leaf := pki.agent(t, "agent-kernel-connect")
	asigner, err := handshake.NewMLDSA65Signer(leaf.Key.PrivateKey(), crand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ae, err := tunnel.New(tunnel.Config{Gateway: netip.MustParseAddrPort("198.18.0.1:4600"), Signer: asigner, Chain: leaf.Chain,
		GatewayPublicKey: pki.gw.Raw(), Rand: crand.Reader, Now: clock.now, StateDir: t.TempDir(), AgentVersion: "test",
		Logger: hclog.NewNullLogger(),
		Timers: tunnel.Timers{HandshakeTimeout: 5 * time.Second, BackoffMin: 50 * time.Millisecond, BackoffMax: 400 * time.Millisecond,
			Tick: 20 * time.Millisecond, StatusInterval: 50 * time.Millisecond}}, tuntest.NewChannelTUN().TUN(), conn.NewStdNetBind())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	// The agent's UDP socket is opened by Run on this goroutine: in the
	// agent's namespace.
	go func() { done <- agNS.Do(func() error { return ae.Run(ctx) }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent Run: %v", err)
		}
	})

	const want = "connect denied: device quarantined (policy quarantine)"
	waitFor(t, "the connect denial in the agent's status", func() bool { return strings.Contains(ae.Status().LastError, want) })
	if st := ae.Status(); st.State == tunnel.StateUp || len(g.Sessions()) != 0 {
		t.Fatalf("state %s with %d gateway sessions while connect is denied", st.State, len(g.Sessions()))
	}
	if g.Stats().ConnectRefused.Load() == 0 {
		t.Fatal("refusal not counted")
	}

	// Allowed: the agent's next attempt after its backoff comes up.
	eng.SetDecide(func(q policy.Query) policy.Decision { return policy.Decision{Allow: true} })
	waitFor(t, "the agent up", func() bool { return ae.Status().State == tunnel.StateUp })
	if len(g.Sessions()) != 1 {
		t.Fatalf("%d sessions", len(g.Sessions()))
	}

	// Denied again by a policy change: the live session ends with the reason.
	handshakes := ae.Status().Handshakes
	eng.SetDecide(quarantine)
	g.PolicyChanged()
	waitFor(t, "the session cut", func() bool { return g.Stats().ConnectCut.Load() == 1 })
	waitFor(t, "the agent told", func() bool {
		st := ae.Status()
		return st.State != tunnel.StateUp && strings.Contains(st.LastError, want)
	})
	if ae.Status().Handshakes != handshakes {
		t.Fatal("the agent got a new session while denied")
	}
}
