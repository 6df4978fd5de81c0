package gateway

import (
	"io"
	mrand "math/rand/v2"
	"net/netip"
	"os"
	"sync"
	"testing"

	"golang.zx2c4.com/wireguard/tun"

	"github.com/avonzt/avon/core/gateway/gatewaytest"
	"github.com/avonzt/avon/core/handshake"
	"github.com/avonzt/avon/core/pulse"
	"github.com/avonzt/avon/core/tunnel/control"
	"github.com/avonzt/avon/core/tunnel/frag"
	"github.com/avonzt/avon/core/tunnel/transport"
)

// nullTUN is a tun.Device that discards writes and never yields a packet.
type nullTUN struct {
	events chan tun.Event
	closed chan struct{}
}

func newNullTUN() *nullTUN {
	return &nullTUN{events: make(chan tun.Event), closed: make(chan struct{})}
}

func (*nullTUN) File() *os.File { return nil }
func (n *nullTUN) Read([][]byte, []int, int) (int, error) {
	<-n.closed
	return 0, os.ErrClosed
}
func (*nullTUN) Write(bufs [][]byte, _ int) (int, error) { return len(bufs), nil }
func (*nullTUN) MTU() (int, error)                       { return DefaultMTU, nil }
func (*nullTUN) Name() (string, error)                   { return "null", nil }
func (n *nullTUN) Events() <-chan tun.Event              { return n.events }
func (n *nullTUN) Close() error {
	select {
	case <-n.closed:
	default:
		close(n.closed)
	}
	return nil
}
func (*nullTUN) BatchSize() int { return 1 }

// installSession puts a session with fixed keys into g's tables (no
// handshake) and returns the agent's keypair for it.
// An optional addr6 is the session's IPv6 tunnel address.
func installSession(t testing.TB, g *Gateway, addr netip.Addr, ep netip.AddrPort, localIdx, remoteIdx uint32, addr6 ...netip.Addr) *transport.Keypair {
	t.Helper()
	k1, k2 := [32]byte{1}, [32]byte{2}
	now := g.cfg.Now()
	gwKP, err := transport.NewKeypair(transport.AES256GCM, &k1, &k2, localIdx, remoteIdx, now)
	if err != nil {
		t.Fatal(err)
	}
	agKP, err := transport.NewKeypair(transport.AES256GCM, &k2, &k1, remoteIdx, localIdx, now)
	if err != nil {
		t.Fatal(err)
	}
	s := &session{id: pulse.ID{byte(localIdx), byte(localIdx >> 8), 0xaa}, agentID: "fuzz-agent", serial: "abc",
		addr: addr, established: now}
	if len(addr6) > 0 {
		s.addr6 = addr6[0]
	}
	s.keys.Store(&keySet{current: &keyState{res: &handshake.Result{}, kp: gwKP}})
	s.endpoint.Store(&epRef{ep: gatewaytest.Endpoint{AddrPort: ep}, addr: ep})
	if _, err := g.tracker.Add(pulse.SessionInfo{ID: s.id, AgentID: s.agentID, CertSerial: s.serial, Established: now}); err != nil {
		t.Fatal(err)
	}
	g.table.Lock()
	g.table.byIndex[localIdx] = &indexEntry{sess: s}
	g.table.byAddr[addr] = s
	if s.addr6.IsValid() {
		g.table.byAddr[s.addr6] = s
	}
	g.table.byID[s.id] = s
	g.table.Unlock()
	return agKP
}

// FuzzHandleDatagram feeds arbitrary datagrams to the receive path of a
// gateway holding one session and checks that nothing panics, no state
// grows past its caps, and the session survives (nothing but a genuine
// Close can end it, and no seed carries one).
func FuzzHandleDatagram(f *testing.F) {
	e := &env{t: f, pki: thePKI(f), clock: newClock(), net: gatewaytest.NewNetwork(1)}
	base := newEnv(f, dualStack(f)) // for a valid config (PKI, verifier, both pools)
	cfg := base.cfg
	cfg.MaxPending = 8
	cfg.QueueLen = 4
	cfg.Now = e.clock.now
	// A deterministic random source (the cookie checker serializes its
	// reads); it also keeps the fuzz worker off the getrandom path.
	cfg.Rand = &lockedReader{r: mrand.NewChaCha8([32]byte{7})}
	g, err := New(cfg, newNullTUN(), e.net.Bind())
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { g.Close() })
	addr := netip.MustParseAddr("100.96.7.7")
	src := netip.MustParseAddrPort("198.51.100.7:5555")
	addr6 := netip.MustParseAddr("fd00:96::7:7")
	agKP := installSession(f, g, addr, src, 0x01020304, 0x0a0b0c0d, addr6)

	// Seeds: transport packets of every kind, an Initiation with a valid
	// mac1, fragments, a RekeyInit-sized message, a HandshakeError.
	seal := func(pt []byte) []byte { b, _ := agKP.Seal(nil, pt); return b }
	pulseMsg, _ := control.Marshal(&control.Pulse{Seq: 1, OS: "linux"})
	f.Add(seal(nil))
	f.Add(seal(ipv4UDP(addr, netip.MustParseAddr("10.20.0.1"), 1, 2, []byte("payload"))))
	f.Add(seal(ipv4UDP(netip.MustParseAddr("100.96.9.9"), netip.MustParseAddr("10.20.0.1"), 1, 2, nil)))
	f.Add(seal(ipv6UDP(addr6, netip.MustParseAddr("fd00:20::1"), 1, 2, []byte("payload"))))
	f.Add(seal(ipv6UDP(netip.MustParseAddr("fd00:96::9:9"), netip.MustParseAddr("fd00:20::1"), 1, 2, nil)))
	f.Add(seal(pulseMsg))
	f.Add(seal([]byte{0x3f, 0, 1, 0}))
	a := &testAgent{t: f, cred: e.pki.agent(f, "fuzz"), gwPub: e.pki.gw.Raw(), gwID: g.ResponderID(), now: e.clock.now}
	init := a.initiation(f, nil)
	f.Add(init)
	frags, _ := frag.Split(make([]byte, 4000), 5, frag.DefaultMaxChunk)
	for _, fr := range frags {
		f.Add(fr)
	}
	f.Add(append([]byte{6, 1, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4}, make([]byte, handshake.RekeyInitLen-12)...))
	f.Add([]byte{8, 1, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0})
	f.Add([]byte{4, 1, 0, 0})

	rx := &rxBatch{tun: make([][]byte, 0, 1)}
	ep := gatewaytest.Endpoint{AddrPort: src}
	buf := make([]byte, bufSize) // the fuzz function runs sequentially
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > maxSegment {
			return
		}
		n := copy(buf, b)
		g.handleDatagram(buf[:n], ep, e.clock.now(), rx)
		g.flushTUN(rx)
		for {
			select {
			case <-g.jobs: // the workers do not run here: discard
				continue
			default:
			}
			break
		}
		pe, _, s, _ := func() (int, int, int, int) {
			g.table.RLock()
			defer g.table.RUnlock()
			return g.table.pending, len(g.table.byIndex), len(g.table.byID), len(g.table.pendingBySrc)
		}()
		if pe > cfg.MaxPending || s != 1 || g.reasm.Len() > frag.DefaultGlobal {
			t.Fatalf("pending %d, sessions %d, reassemblies %d", pe, s, g.reasm.Len())
		}
	})
}

// lockedReader makes a reader safe for concurrent use.
type lockedReader struct {
	mu sync.Mutex
	r  io.Reader
}

func (l *lockedReader) Read(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.r.Read(b)
}
