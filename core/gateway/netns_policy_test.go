package gateway

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/avonzt/avon/core/gateway/flow/flowtest"
	"github.com/avonzt/avon/core/gateway/ipam"
	"github.com/avonzt/avon/core/store/memstore"
	"github.com/avonzt/avon/internal/testsvc/netns"
)

// TestKernelTunnelPolicy is TestKernelTunnel with flow enforcement: over
// a real TUN device and real UDP in network namespaces, the agent reaches
// the service it is allowed to (and gets its answer back), does not reach
// the one it is denied (and is told why), and its open flow is cut when
// the policy changes.
func TestKernelTunnelPolicy(t *testing.T) {
	gwNS, agNS, pki, clock, verifier, signer := kernelSetup(t)
	pool, err := ipam.New(memstore.New(), tunnelPrefix)
	if err != nil {
		t.Fatal(err)
	}
	gwAddr := pool.Gateway()
	allowed := fmt.Sprintf("udp/%s:9000", gwAddr)
	eng := flowtest.New(flowtest.Rules(
		flowtest.Rule{Resource: allowed, PolicyID: "svc"},
		flowtest.Rule{Resource: fmt.Sprintf("udp/%s:9001", gwAddr), PolicyID: "no-admin", Deny: true, Reason: "admin port"}))

	g, svc, admin, a := startPolicyKernel(t, gwNS, agNS, pki, Config{TunnelPrefix: tunnelPrefix, Now: clock.now, Rand: crand.Reader,
		Signer: signer, Verifier: verifier, IPAM: pool, Policy: PolicyConfig{Mode: PolicyEnforce, Engine: eng, BatchDelay: time.Millisecond}},
		[]netip.Prefix{netip.PrefixFrom(gwAddr, tunnelPrefix.Bits())}, gwAddr, "agent-kernel-policy")
	ctx := testCtx(t)
	fs := g.FlowStats()

	// Allowed: agent -> TUN -> kernel -> service, and the answer back.
	msg := []byte("allowed through the tunnel")
	a.send(ipv4UDP(a.addr(), gwAddr, 5555, 9000, msg))
	buf := make([]byte, 2048)
	_ = svc.SetReadDeadline(time.Now().Add(15 * time.Second))
	n, from, err := svc.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("service read: %v (flow stats: held %d, released %d, denied %d)", err, fs.Held.Load(), fs.Released.Load(), fs.Denied.Load())
	}
	if !bytes.Equal(buf[:n], msg) || from != netip.AddrPortFrom(a.addr(), 5555) {
		t.Fatalf("service got %q from %v", buf[:n], from)
	}
	if _, err := svc.WriteToUDPAddrPort([]byte("answer"), from); err != nil {
		t.Fatal(err)
	}
	for {
		pt := a.recvPlain(ctx, false)
		if pt[0]>>4 != 4 {
			continue
		}
		if in, err := parseInnerForTest(pt); err != nil || string(in.payload) != "answer" {
			t.Fatalf("agent got %+v %v", in, err)
		}
		break
	}

	// Denied: the admin port never sees it; the agent is told why.
	a.send(ipv4UDP(a.addr(), gwAddr, 5556, 9001, []byte("let me in")))
	d := a.recvDenial(ctx, 8)
	if d.Dst != netip.AddrPortFrom(gwAddr, 9001) || d.Reason != "admin port" || d.PolicyIDs[0] != "no-admin" {
		t.Fatalf("denial %+v", d)
	}
	wantSilent(t, admin)

	// The policy changes: the open flow is cut, the agent is told, and its
	// next datagram is dropped at the gateway.
	eng.SetDecide(flowtest.Rules())
	start := time.Now()
	g.PolicyChanged()
	d = a.recvDenial(ctx, 8)
	t.Logf("open flow cut %v after the policy change", time.Since(start))
	if d.Dst != netip.AddrPortFrom(gwAddr, 9000) || d.Reason != "open flow cut: no policy allows "+allowed {
		t.Fatalf("cut denial %+v", d)
	}
	dropped := fs.DropDenied.Load()
	a.send(ipv4UDP(a.addr(), gwAddr, 5555, 9000, []byte("after the cut")))
	waitFor(t, "the datagram dropped", func() bool { return fs.DropDenied.Load() == dropped+1 })
}

// wantSilent checks that nothing arrived on c: the denied datagram went
// out before the denial the agent read, so by now it would be there.
func wantSilent(t *testing.T, c *net.UDPConn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	buf := make([]byte, 2048)
	if n, from, err := c.ReadFromUDPAddrPort(buf); err == nil {
		t.Fatalf("the denied port got %q from %v", buf[:n], from)
	}
}

// startPolicyKernel is where the kernel flow-policy tests start: avtun0 in
// gwNS with addrs (IPv6 ones added nodad), a gateway made of cfg on it,
// started, a service (UDP 9000) and an admin port (UDP 9001) on svcAddr
// in gwNS, and an agent in agNS (198.18.0.2) connected as agentName.
func startPolicyKernel(t *testing.T, gwNS, agNS *netns.NS, pki *testPKI, cfg Config, addrs []netip.Prefix, svcAddr netip.Addr,
	agentName string) (g *Gateway, svc, admin *net.UDPConn, a *testAgent) {
	t.Helper()
	var dev tun.Device
	if err := gwNS.Do(func() (err error) {
		dev, err = tun.CreateTUN("avtun0", DefaultMTU)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	cmds := make([][]string, 0, len(addrs)+1)
	for _, p := range addrs {
		cmd := []string{"ip", "addr", "add", p.String(), "dev", "avtun0"}
		if p.Addr().Is6() {
			cmd = append(cmd, "nodad")
		}
		cmds = append(cmds, cmd)
	}
	for _, args := range append(cmds, []string{"ip", "link", "set", "avtun0", "up"}) {
		if _, err := gwNS.Run(t, args...); err != nil {
			dev.Close()
			t.Fatal(err)
		}
	}
	g, err := New(cfg, dev, conn.NewStdNetBind())
	if err != nil {
		dev.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	network := "udp4"
	if svcAddr.Is6() {
		network = "udp6"
	}
	if err := gwNS.Do(func() (err error) {
		if err = g.Start(context.Background()); err != nil {
			return err
		}
		if svc, err = net.ListenUDP(network, &net.UDPAddr{IP: svcAddr.AsSlice(), Port: 9000}); err != nil {
			return err
		}
		admin, err = net.ListenUDP(network, &net.UDPAddr{IP: svcAddr.AsSlice(), Port: 9001})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close(); admin.Close() })

	sock := agentSocket(t, agNS)
	a = &testAgent{t: t, w: &udpWire{c: sock, dst: netip.MustParseAddrPort("198.18.0.1:4600")},
		cred: pki.agent(t, agentName), gwPub: pki.gw.Raw(), gwID: g.ResponderID(), now: cfg.Now}
	a.mustConnect(testCtx(t))
	return g, svc, admin, a
}
