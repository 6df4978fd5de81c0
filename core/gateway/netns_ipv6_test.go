package gateway

import (
	"bytes"
	crand "crypto/rand"
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/avonzt/avon/core/gateway/flow/flowtest"
	"github.com/avonzt/avon/core/gateway/ipam"
	"github.com/avonzt/avon/core/store/memstore"
)

// TestKernelTunnelPolicyIPv6 is TestKernelTunnelPolicy over IPv6 inside
// the tunnel: a dual-stack gateway with a real TUN (its IPv6 address added
// nodad) and flow enforcement; the agent's IPv6 datagram reaches the
// service it is allowed to over the kernel's IPv6 stack and the answer
// comes back by the IPv6 destination, the denied port never sees its
// datagram and the agent is told, and a forged IPv6 source is dropped.
func TestKernelTunnelPolicyIPv6(t *testing.T) {
	gwNS, agNS, pki, clock, verifier, signer := kernelSetup(t)
	kv := memstore.New()
	pool, err := ipam.New(kv, tunnelPrefix)
	if err != nil {
		t.Fatal(err)
	}
	pool6, err := ipam.New(kv, tunnelPrefix6)
	if err != nil {
		t.Fatal(err)
	}
	gw6 := pool6.Gateway()
	allowed := fmt.Sprintf("udp/%s", netip.AddrPortFrom(gw6, 9000))
	eng := flowtest.New(flowtest.Rules(
		flowtest.Rule{Resource: allowed, PolicyID: "svc6"},
		flowtest.Rule{Resource: fmt.Sprintf("udp/%s", netip.AddrPortFrom(gw6, 9001)), PolicyID: "no-admin6", Deny: true, Reason: "admin port"}))

	g, svc, admin, a := startPolicyKernel(t, gwNS, agNS, pki, Config{TunnelPrefix: tunnelPrefix, IPAM: pool, TunnelPrefix6: tunnelPrefix6,
		IPAM6: pool6, Now: clock.now, Rand: crand.Reader, Signer: signer, Verifier: verifier,
		Policy: PolicyConfig{Mode: PolicyEnforce, Engine: eng, BatchDelay: time.Millisecond}},
		[]netip.Prefix{netip.PrefixFrom(pool.Gateway(), tunnelPrefix.Bits()), netip.PrefixFrom(gw6, tunnelPrefix6.Bits())}, gw6, "agent-kernel-v6")
	ctx := testCtx(t)
	a6 := a.addr6()
	fs, st := g.FlowStats(), g.Stats()

	// A forged IPv6 source first: dropped before policy or the TUN.
	a.send(ipv6UDP(netip.MustParseAddr("fd00:96::bad"), gw6, 5555, 9000, []byte("forged")))
	// Allowed: agent -> TUN -> kernel (IPv6) -> service, and back.
	msg := []byte("allowed over IPv6")
	a.send(ipv6UDP(a6, gw6, 5555, 9000, msg))
	buf := make([]byte, 2048)
	_ = svc.SetReadDeadline(time.Now().Add(15 * time.Second))
	n, from, err := svc.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("service read: %v (spoofed %d, tun tx %d, held %d, released %d, denied %d)", err, st.DropSpoofed.Load(),
			st.TunTxPackets.Load(), fs.Held.Load(), fs.Released.Load(), fs.Denied.Load())
	}
	if !bytes.Equal(buf[:n], msg) || from != netip.AddrPortFrom(a6, 5555) {
		t.Fatalf("service got %q from %v", buf[:n], from)
	}
	if st.DropSpoofed.Load() != 1 {
		t.Fatalf("spoofed drops %d, want 1", st.DropSpoofed.Load())
	}
	if _, err := svc.WriteToUDPAddrPort([]byte("answer over v6"), from); err != nil {
		t.Fatal(err)
	}
	for {
		pt := a.recvPlain(ctx, false)
		if pt[0]>>4 != 6 {
			continue // a control message
		}
		if len(pt) < 48 || pt[6] != 17 || netip.AddrFrom16([16]byte(pt[8:24])) != gw6 ||
			netip.AddrFrom16([16]byte(pt[24:40])) != a6 {
			t.Fatalf("agent got %x", pt)
		}
		plen := int(binary.BigEndian.Uint16(pt[4:6]))
		if plen < 8 || 40+plen > len(pt) || string(pt[48:40+plen]) != "answer over v6" {
			t.Fatalf("agent got payload %x", pt)
		}
		break
	}

	// Denied: the admin port never sees it; the agent is told why.
	a.send(ipv6UDP(a6, gw6, 5556, 9001, []byte("let me in")))
	d := a.recvDenial(ctx, 8)
	if d.Dst != netip.AddrPortFrom(gw6, 9001) || d.Src != netip.AddrPortFrom(a6, 5556) || d.Reason != "admin port" ||
		len(d.PolicyIDs) != 1 || d.PolicyIDs[0] != "no-admin6" {
		t.Fatalf("denial %+v", d)
	}
	wantSilent(t, admin)
	if fs.Denied.Load() == 0 {
		t.Fatal("no denied flow counted")
	}
}
