package gateway

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"math/big"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/avonzt/avon/core/gateway/ipam"
	"github.com/avonzt/avon/core/handshake"
	"github.com/avonzt/avon/core/store/memstore"
	"github.com/avonzt/avon/internal/testsvc/netns"
)

// udpWire is a test agent's real UDP socket to the gateway.
type udpWire struct {
	c   *net.UDPConn
	dst netip.AddrPort
}

func (w *udpWire) Send(b []byte) error {
	_, err := w.c.WriteToUDPAddrPort(b, w.dst)
	return err
}

func (w *udpWire) Recv(ctx context.Context) ([]byte, error) {
	buf := make([]byte, 65535)
	for ctx.Err() == nil {
		_ = w.c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, _, err := w.c.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			return nil, err
		}
		return append([]byte(nil), buf[:n]...), nil
	}
	return nil, ctx.Err()
}

// TestKernelTunnel runs the gateway with a real TUN device and a real UDP
// bind in one network namespace and a test agent over real UDP in another:
// a datagram from the agent reaches a socket in the gateway's namespace
// through the TUN, and the socket's answer comes back through the tunnel.
// kernelSetup is where every kernel-tunnel test starts: a gateway and an
// agent namespace linked by veth (198.18.0.1 and .2), the test PKI, a
// clock, and the gateway's chain verifier (nothing revoked) and signer.
func kernelSetup(t *testing.T) (gwNS, agNS *netns.NS, pki *testPKI, clock *testClock, verifier *handshake.ChainVerifier, signer *handshake.MLDSA65Signer) {
	t.Helper()
	gwNS = netns.New(t, "gw")
	agNS = netns.New(t, "agent")
	netns.Link(t, gwNS, "198.18.0.1/24", agNS, "198.18.0.2/24")
	pki = thePKI(t)
	clock = newClock()
	verifier, err := handshake.NewChainVerifier(pki.Roots(), handshake.ChainVerifierOptions{
		Revoked: func(*big.Int) (bool, error) { return false, nil }})
	if err != nil {
		t.Fatal(err)
	}
	if signer, err = handshake.NewMLDSA65Signer(pki.gw.PrivateKey(), crand.Reader); err != nil {
		t.Fatal(err)
	}
	return gwNS, agNS, pki, clock, verifier, signer
}

func TestKernelTunnel(t *testing.T) {
	gwNS, agNS, pki, clock, verifier, signer := kernelSetup(t)
	pool, err := ipam.New(memstore.New(), tunnelPrefix)
	if err != nil {
		t.Fatal(err)
	}

	var dev tun.Device
	if err := gwNS.Do(func() (err error) {
		dev, err = tun.CreateTUN("avtun0", DefaultMTU)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	gwAddr := pool.Gateway()
	for _, args := range [][]string{
		{"ip", "addr", "add", netip.PrefixFrom(gwAddr, tunnelPrefix.Bits()).String(), "dev", "avtun0"},
		{"ip", "link", "set", "avtun0", "up"},
	} {
		if _, err := gwNS.Run(t, args...); err != nil {
			dev.Close()
			t.Fatal(err)
		}
	}
	g, err := New(Config{TunnelPrefix: tunnelPrefix, Now: clock.now, Rand: crand.Reader, Signer: signer,
		Verifier: verifier, IPAM: pool}, dev, conn.NewStdNetBind())
	if err != nil {
		dev.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	var service *net.UDPConn
	if err := gwNS.Do(func() (err error) {
		if err = g.Start(context.Background()); err != nil {
			return err
		}
		service, err = net.ListenUDP("udp4", &net.UDPAddr{IP: gwAddr.AsSlice(), Port: 9000})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { service.Close() })

	sock := agentSocket(t, agNS)

	ctx := testCtx(t)
	a := &testAgent{t: t, w: &udpWire{c: sock, dst: netip.MustParseAddrPort("198.18.0.1:4600")},
		cred: pki.agent(t, "agent-kernel"), gwPub: pki.gw.Raw(), gwID: g.ResponderID(), now: clock.now}
	a.mustConnect(ctx)

	// Agent -> TUN -> kernel -> socket.
	msg := []byte("hello through the tunnel")
	a.send(ipv4UDP(a.addr(), gwAddr, 5555, 9000, msg))
	buf := make([]byte, 2048)
	_ = service.SetReadDeadline(time.Now().Add(15 * time.Second))
	n, from, err := service.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("service read: %v (stats: tun tx %d, spoofed %d, inner %d)", err, g.Stats().TunTxPackets.Load(),
			g.Stats().DropSpoofed.Load(), g.Stats().DropInner.Load())
	}
	if !bytes.Equal(buf[:n], msg) || from != netip.AddrPortFrom(a.addr(), 5555) {
		t.Fatalf("service got %q from %v", buf[:n], from)
	}

	// Socket -> kernel -> TUN -> agent.
	reply := []byte("and back again")
	if _, err := service.WriteToUDPAddrPort(reply, from); err != nil {
		t.Fatal(err)
	}
	for {
		pt := a.recvPlain(ctx, false)
		if pt[0]>>4 != 4 {
			continue // a control message
		}
		in, err := parseInnerForTest(pt)
		if err != nil {
			t.Fatal(err)
		}
		if in.src != gwAddr || in.dst != a.addr() || !bytes.Equal(in.payload, reply) {
			t.Fatalf("agent got %v -> %v %q", in.src, in.dst, in.payload)
		}
		break
	}
}

type innerUDP struct {
	src, dst netip.Addr
	payload  []byte
}

// parseInnerForTest reads an IPv4/UDP packet (no options).
func parseInnerForTest(b []byte) (innerUDP, error) {
	var in innerUDP
	if len(b) < 28 || b[0] != 0x45 || b[9] != 17 {
		return in, net.InvalidAddrError("not an ipv4/udp packet")
	}
	total := int(b[2])<<8 | int(b[3])
	if total > len(b) || total < 28 {
		return in, net.InvalidAddrError("bad length")
	}
	in.src = netip.AddrFrom4([4]byte(b[12:16]))
	in.dst = netip.AddrFrom4([4]byte(b[16:20]))
	in.payload = b[28:total]
	return in, nil
}

// agentSocket opens the agent's UDP socket on 198.18.0.2 in its namespace,
// closed when the test ends.
func agentSocket(t *testing.T, agNS *netns.NS) *net.UDPConn {
	t.Helper()
	var sock *net.UDPConn
	if err := agNS.Do(func() (err error) {
		sock, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(198, 18, 0, 2)})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sock.Close() })
	return sock
}
