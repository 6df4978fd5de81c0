package gateway

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/avonzt/avon/core/gateway/gatewaytest"
	"github.com/avonzt/avon/core/gateway/ipam"
	"github.com/avonzt/avon/core/handshake"
	"github.com/avonzt/avon/core/handshake/handshaketest"
	"github.com/avonzt/avon/core/store/memstore"
	"github.com/avonzt/avon/core/tunnel/control"
	"github.com/avonzt/avon/core/tunnel/cookie"
	"github.com/avonzt/avon/core/tunnel/frag"
	"github.com/avonzt/avon/core/tunnel/transport"
)

// testNow is the calibrated time every test starts at.
var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

var tunnelPrefix = netip.MustParsePrefix("100.96.0.0/16")

// testClock is a settable calibrated clock shared by the gateway and the
// test agents.
type testClock struct{ ns atomic.Int64 }

func newClock() *testClock { c := &testClock{}; c.ns.Store(testNow.UnixNano()); return c }

func (c *testClock) now() time.Time          { return time.Unix(0, c.ns.Load()).UTC() }
func (c *testClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// testPKI is a handshaketest PKI (root -> agents CA -> agent leaves) plus
// the gateway's key.
type testPKI struct {
	*handshaketest.PKI
	gw *handshaketest.Key

	mu    sync.Mutex
	leafs map[string]*handshaketest.Leaf
}

var (
	pkiOnce   sync.Once
	sharedPKI *testPKI
	pkiErr    error
)

// keyPrefix starts the label of every key of the test PKI.
const keyPrefix = "avon gateway test key: "

// thePKI returns the test PKI, built once per test binary (certificates
// are valid for years around testNow).
func thePKI(t testing.TB) *testPKI {
	t.Helper()
	pkiOnce.Do(func() {
		var ca *handshaketest.PKI
		ca, pkiErr = handshaketest.New(handshaketest.Options{Name: "AVON Gateway Test", Now: testNow,
			Keys: handshaketest.LabelKeys(keyPrefix)})
		sharedPKI = &testPKI{PKI: ca, gw: handshaketest.KeyFromLabel(keyPrefix + "gateway"),
			leafs: map[string]*handshaketest.Leaf{}}
	})
	if pkiErr != nil {
		t.Fatal(pkiErr)
	}
	return sharedPKI
}

// agent returns the credentials of agent id (issued on first use).
func (p *testPKI) agent(t testing.TB, id string) *handshaketest.Leaf {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.leafs[id]; ok {
		return c
	}
	c, err := p.IssueAgent(id, handshaketest.KeyFromLabel(keyPrefix+"agent "+id), testNow.Add(-time.Hour), testNow.Add(30*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	p.leafs[id] = c
	return c
}

// env is a gateway over an in-memory network and a channel TUN.
type env struct {
	t       testing.TB
	pki     *testPKI
	clock   *testClock
	net     *gatewaytest.Network
	tun     *tuntest.ChannelTUN
	gw      *Gateway
	cfg     Config
	revoked handshaketest.Revocations
	nextIP  atomic.Uint32
}

// newEnv starts a gateway; mod may change the config first.
func newEnv(t testing.TB, mod func(*Config)) *env {
	t.Helper()
	e := &env{t: t, pki: thePKI(t), clock: newClock(), net: gatewaytest.NewNetwork(16), tun: tuntest.NewChannelTUN()}
	verifier, err := handshake.NewChainVerifier(e.pki.Roots(), handshake.ChainVerifierOptions{Revoked: e.revoked.Revoked})
	if err != nil {
		t.Fatal(err)
	}
	signer, err := handshake.NewMLDSA65Signer(e.pki.gw.PrivateKey(), crand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := ipam.New(memstore.New(), tunnelPrefix)
	if err != nil {
		t.Fatal(err)
	}
	e.cfg = Config{
		TunnelPrefix: tunnelPrefix, Routes: []netip.Prefix{netip.MustParsePrefix("10.20.0.0/16")},
		HandshakeRate: 1000, HandshakeBurst: 1000, Now: e.clock.now, Rand: crand.Reader,
		Signer: signer, Verifier: verifier, IPAM: pool,
	}
	if mod != nil {
		mod(&e.cfg)
	}
	if e.gw, err = New(e.cfg, e.tun.TUN(), e.net.Bind()); err != nil {
		t.Fatal(err)
	}
	if err := e.gw.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.gw.Close() })
	return e
}

// port returns a new client port with a fresh source address.
func (e *env) port() *gatewaytest.Port {
	n := e.nextIP.Add(1)
	return e.net.Port(netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, byte(n >> 8), byte(n)}), 40000+uint16(n%1000)))
}

// waitFor polls cond until it holds; it fails t after a generous bound
// (the engine's goroutines are asynchronous, nothing here measures time).
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for range 20000 {
		if cond() {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// waitUntil polls cond every millisecond for at most d and reports
// whether it held (for callers that explain a failure themselves).
func waitUntil(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for range 1_000_000 {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return cond()
}

// wire is how a test agent reaches the gateway.
type wire interface {
	Send([]byte) error
	Recv(ctx context.Context) ([]byte, error)
}

// testAgent plays the agent side by hand: handshake.Initiator, cookies,
// fragments and transport.
type testAgent struct {
	t     testing.TB
	w     wire
	cred  *handshaketest.Leaf
	gwPub []byte
	gwID  [32]byte
	now   func() time.Time

	cookie cookie.Cookie
	token  []byte
	res    *handshake.Result
	kp     *transport.Keypair
	config *control.SessionConfig
	seq    uint64
	stoken [32]byte
}

func (e *env) agent(id string, w wire) *testAgent {
	if w == nil {
		w = e.port()
	}
	return &testAgent{t: e.t, w: w, cred: e.pki.agent(e.t, id), gwPub: e.pki.gw.Raw(), gwID: e.gw.ResponderID(), now: e.clock.now}
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// errHandshake is a HandshakeError the agent received.
type errHandshake struct{ info *handshake.HandshakeErrorInfo }

func (e *errHandshake) Error() string {
	return fmt.Sprintf("handshake error %v (authenticated %v)", e.info.Code, e.info.Authenticated)
}

// errClose is a Close the agent received instead of its SessionConfig.
type errClose struct{ c *control.Close }

func (e *errClose) Error() string { return fmt.Sprintf("closed: code %d: %s", e.c.Code, e.c.Reason) }

func randIndex() uint32 {
	var b [4]byte
	_, _ = crand.Read(b[:])
	return binary.BigEndian.Uint32(b[:]) | 1
}

// connect runs a whole handshake and waits for the SessionConfig.
func (a *testAgent) connect(ctx context.Context) error {
	signer, err := handshake.NewMLDSA65Signer(a.cred.Key.PrivateKey(), crand.Reader)
	if err != nil {
		return err
	}
	in, err := handshake.NewInitiator(handshake.InitiatorConfig{Signer: signer, Chain: a.cred.Chain,
		ResponderPublicKey: a.gwPub, ResponderID: a.gwID, Rand: crand.Reader, Now: a.now, LocalIndex: randIndex()})
	if err != nil {
		return err
	}
	defer in.Zeroize()
	init, err := in.Initiation(a.token)
	if err != nil {
		return err
	}
	reasm, err := frag.NewReassembler(frag.Config{})
	if err != nil {
		return err
	}
	var resp []byte
	for attempt := 0; resp == nil; attempt++ {
		if attempt == 3 {
			return errors.New("no response after 3 initiations")
		}
		if err := cookie.AddMACs(init, a.gwID, &a.cookie, a.now()); err != nil {
			return err
		}
		if err := a.w.Send(init); err != nil {
			return err
		}
		for resp == nil {
			msg, err := a.w.Recv(ctx)
			if err != nil {
				return err
			}
			switch handshake.MessageType(msg[0]) {
			case handshake.TypeCookieReply:
				mac1, _ := cookie.MAC1(init)
				if a.cookie, err = cookie.OpenReply(msg, a.gwID, mac1, a.now()); err != nil {
					return err
				}
			case handshake.TypeHandshakeError:
				info, err := in.HandleError(msg)
				if err != nil {
					return err
				}
				return &errHandshake{info}
			case handshake.TypeFragment:
				m, done, err := reasm.Add(netip.AddrPort{}, msg, a.now())
				if err != nil {
					return err
				}
				if done {
					resp = m
				}
				continue
			case handshake.TypeTransport:
				continue // from an older session of this agent
			default:
				return fmt.Errorf("unexpected message type %d during handshake", msg[0])
			}
			break
		}
	}
	fin, res, err := in.HandleResponse(resp)
	if err != nil {
		return err
	}
	frags, err := frag.Split(fin, randIndex(), frag.DefaultMaxChunk)
	if err != nil {
		return err
	}
	for _, f := range frags {
		if err := a.w.Send(f); err != nil {
			return err
		}
	}
	return a.finish(ctx, in, res)
}

// finish installs res and waits for the SessionConfig (or an
// authenticated refusal).
func (a *testAgent) finish(ctx context.Context, in *handshake.Initiator, res *handshake.Result) error {
	kp, err := transport.NewKeypair(transport.AEADID(res.AEAD), &res.SendKey, &res.RecvKey, res.LocalIndex, res.RemoteIndex, a.now())
	if err != nil {
		return err
	}
	for {
		msg, err := a.w.Recv(ctx)
		if err != nil {
			return err
		}
		if handshake.MessageType(msg[0]) == handshake.TypeHandshakeError {
			info, err := in.HandleError(msg)
			if err != nil {
				return err
			}
			return &errHandshake{info}
		}
		pt, _, err := kp.Open(nil, msg)
		if err != nil {
			continue // the Close of the session this one replaces, under its keys
		}
		m, err := control.Parse(pt)
		if err != nil {
			return err
		}
		if c, ok := m.(*control.Close); ok {
			return &errClose{c}
		}
		sc, ok := m.(*control.SessionConfig)
		if !ok {
			return fmt.Errorf("first packet is %v, not a SessionConfig", m.Type())
		}
		a.res, a.kp, a.config, a.token, a.stoken, a.seq = res, kp, sc, sc.AddressToken, sc.SessionToken, 0
		return nil
	}
}

func (a *testAgent) mustConnect(ctx context.Context) {
	a.t.Helper()
	if err := a.connect(ctx); err != nil {
		a.t.Fatalf("connect: %v", err)
	}
}

func (a *testAgent) addr() netip.Addr { return a.config.Addresses[0].Addr() }

// seal returns a transport packet carrying pt.
func (a *testAgent) seal(pt []byte) []byte {
	a.t.Helper()
	out, err := a.kp.Seal(nil, pt)
	if err != nil {
		a.t.Fatal(err)
	}
	return out
}

func (a *testAgent) send(pt []byte) {
	a.t.Helper()
	if err := a.w.Send(a.seal(pt)); err != nil {
		a.t.Fatal(err)
	}
}

func (a *testAgent) sendControl(m control.Message) {
	a.t.Helper()
	b, err := control.Marshal(m)
	if err != nil {
		a.t.Fatal(err)
	}
	a.send(b)
}

// recvPlain returns the next transport plaintext (padding included) and
// skips keepalives unless keep is set.
func (a *testAgent) recvPlain(ctx context.Context, keep bool) []byte {
	a.t.Helper()
	for {
		msg, err := a.w.Recv(ctx)
		if err != nil {
			a.t.Fatalf("recv: %v", err)
		}
		pt, _, err := a.kp.Open(nil, msg)
		if err != nil {
			a.t.Fatalf("open a packet of type %d: %v", msg[0], err)
		}
		if len(pt) == 0 && !keep {
			continue
		}
		return pt
	}
}

func (a *testAgent) recvControl(ctx context.Context) control.Message {
	a.t.Helper()
	m, err := control.Parse(a.recvPlain(ctx, false))
	if err != nil {
		a.t.Fatal(err)
	}
	return m
}

// pulse sends a pulse with the current token and returns the ack.
func (a *testAgent) pulse(tok [32]byte) {
	a.seq++
	a.sendControl(&control.Pulse{Seq: a.seq, SessionToken: tok, AgentTime: a.now().UnixNano(), OS: "linux",
		AgentVersion: "test"})
}

// ipv4UDP builds an IPv4/UDP packet with valid checksums.
func ipv4UDP(src, dst netip.Addr, sport, dport uint16, payload []byte) []byte {
	b := make([]byte, 28+len(payload))
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	b[8] = 64
	b[9] = transport.ProtoUDP
	s4, d4 := src.As4(), dst.As4()
	copy(b[12:], s4[:])
	copy(b[16:], d4[:])
	binary.BigEndian.PutUint16(b[10:], ^checksum(b[:20], 0))
	u := b[20:]
	binary.BigEndian.PutUint16(u[0:], sport)
	binary.BigEndian.PutUint16(u[2:], dport)
	binary.BigEndian.PutUint16(u[4:], uint16(8+len(payload)))
	copy(u[8:], payload)
	var pseudo [12]byte
	copy(pseudo[0:], s4[:])
	copy(pseudo[4:], d4[:])
	pseudo[9] = transport.ProtoUDP
	binary.BigEndian.PutUint16(pseudo[10:], uint16(len(u)))
	c := ^checksum(u, uint32(checksum(pseudo[:], 0)))
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(u[6:], c)
	return b
}

func checksum(b []byte, init uint32) uint16 {
	sum := init
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return uint16(sum)
}

func cryptoRand() io.Reader { return crand.Reader }

func mustKeypair(t testing.TB, res *handshake.Result, now time.Time) *transport.Keypair {
	t.Helper()
	kp, err := transport.NewKeypair(transport.AEADID(res.AEAD), &res.SendKey, &res.RecvKey, res.LocalIndex, res.RemoteIndex, now)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// initiation returns a fresh Initiation with a.token and the MACs (mac2
// with c when valid).
func (a *testAgent) initiation(t testing.TB, c *cookie.Cookie) []byte {
	t.Helper()
	signer, err := handshake.NewMLDSA65Signer(a.cred.Key.PrivateKey(), crand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	in, err := handshake.NewInitiator(handshake.InitiatorConfig{Signer: signer, Chain: a.cred.Chain,
		ResponderPublicKey: a.gwPub, ResponderID: a.gwID, Rand: crand.Reader, Now: a.now, LocalIndex: randIndex()})
	if err != nil {
		t.Fatal(err)
	}
	init, err := in.Initiation(a.token)
	if err != nil {
		t.Fatal(err)
	}
	if err := cookie.AddMACs(init, a.gwID, c, a.now()); err != nil {
		t.Fatal(err)
	}
	return init
}
