package tunnel

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/avonzt/avon/core/handshake"
	"github.com/avonzt/avon/core/tunnel/transport"
)

// keys is one installed transport keypair with the session it belongs to.
type keys struct {
	kp  *transport.Keypair
	res *handshake.Result // kept for rekeys; its transport keys are cleared
}

func (k *keys) zeroize() {
	if k == nil {
		return
	}
	k.kp.Zeroize()
	k.res.Zeroize()
}

// inbound is a datagram or control plaintext for the main loop.
type inbound struct {
	typ byte // a message type, or 0 for a decrypted control message
	b   []byte
	k   *keys // for a control message: the keys that opened it
}

const (
	inboxSize    = 256
	recvBufSize  = 65535 // a bind may hand over coalesced datagrams
	sendBufSize  = 65535 // a bind may coalesce the datagrams after the first into it (UDP GSO)
	maxReadFails = 100   // consecutive TUN or bind read errors before a reader gives up
)

// Engine is the agent's tunnel to one gateway. Create it with New and
// call Run once; Status and Rebind are safe for concurrent use at any time.
type Engine struct {
	cfg   Config
	dev   tun.Device
	bind  conn.Bind
	log   hclog.Logger
	rid   [handshake.IDLen]byte
	start time.Time // base of the monotonic timestamps below
	ran   atomic.Bool

	// bindMu guards the bind's lifecycle: Send runs under RLock, Open and
	// Close under Lock, so no Send races a reopen.
	bindMu struct {
		sync.RWMutex
		open bool
		ep   conn.Endpoint
	}

	recvWG sync.WaitGroup // the receivers of the open bind

	cur, prev atomic.Pointer[keys]
	// addrs are the tunnel addresses from the SessionConfig: packets from
	// the gateway must be addressed to one of them.
	addrs atomic.Pointer[[]netip.Addr]

	lastRecv, lastSent atomic.Int64 // nanoseconds since start
	rx, tx             atomic.Uint64

	inbox    chan inbound
	rebindCh chan struct{}
	rehandCh chan struct{}
	statusCh chan struct{}
	closing  atomic.Bool

	// cred is the gateway's last verified delegated credential (nil: none
	// yet, or not loaded from CredentialFile); handshake goroutine only.
	cred *handshake.Credential

	mu        sync.Mutex // guards status and rehandWhy
	status    Status
	rehandWhy string // the reason given to the pending Rehandshake
}

// New checks cfg and returns an Engine over dev and bind. Run takes
// ownership of both and closes them when it returns.
func New(cfg Config, dev tun.Device, bind conn.Bind) (*Engine, error) {
	if dev == nil || bind == nil {
		return nil, fmt.Errorf("tun device and bind are required: %w", ErrConfig)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	rid, err := handshake.ResponderID(cfg.GatewayPublicKey)
	if err != nil {
		return nil, fmt.Errorf("%v: %w", err, ErrConfig)
	}
	ep, err := bind.ParseEndpoint(cfg.Gateway.String())
	if err != nil {
		return nil, fmt.Errorf("gateway endpoint %s: %v: %w", cfg.Gateway, err, ErrConfig)
	}
	e := &Engine{cfg: cfg, dev: dev, bind: bind, log: cfg.Logger, rid: rid, start: time.Now(),
		inbox: make(chan inbound, inboxSize), rebindCh: make(chan struct{}, 1), rehandCh: make(chan struct{}, 1),
		statusCh: make(chan struct{}, 1)}
	e.bindMu.ep = ep
	e.status = Status{State: StateStopped, Since: time.Now().UTC(), PID: os.Getpid(), Gateway: cfg.Gateway.String(),
		Interface: cfg.Interface}
	return e, nil
}

// Status returns a snapshot of the engine's state.
func (e *Engine) Status() Status {
	e.mu.Lock()
	s := e.status.clone()
	e.mu.Unlock()
	s.RxBytes, s.TxBytes = e.rx.Load(), e.tx.Load()
	s.Updated = time.Now().UTC()
	return s
}

// Rebind asks the engine to reopen its bind (the local address changed);
// the next packet goes out from the new address and the gateway follows
// it. It does not block.
func (e *Engine) Rebind() {
	select {
	case e.rebindCh <- struct{}{}:
	default:
	}
}

// Rehandshake asks the engine to replace its session by a fresh full
// handshake (for example: the certificate was renewed), the old session
// carrying traffic until the new one is up; reason goes into the status.
// Without a session it does nothing: the next handshake, fresh anyway,
// consults Config.Credentials. It does not block; of several calls before
// the engine acts, the last reason is kept.
func (e *Engine) Rehandshake(reason string) {
	e.mu.Lock()
	e.rehandWhy = truncate(reason, maxStatusText)
	e.mu.Unlock()
	select {
	case e.rehandCh <- struct{}{}:
	default:
	}
}

// Run runs the tunnel until ctx ends, then sends the gateway a Close,
// closes the bind and the TUN device, waits for its goroutines and writes
// the final status. It returns nil when ctx ended, ErrRunning on a second
// call, or an error opening the bind.
func (e *Engine) Run(ctx context.Context) error {
	if !e.ran.CompareAndSwap(false, true) {
		return ErrRunning
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	if err := e.openBind(); err != nil {
		_ = e.dev.Close()
		return err
	}
	wg.Add(2)
	go e.tunReader(&wg)
	go e.statusWriter(ctx, &wg)
	if e.cfg.LocalAddrs != nil {
		wg.Add(1)
		go e.roamWatcher(ctx, &wg)
	}
	e.loop(ctx)
	cancel()

	e.closing.Store(true)
	e.dropKeys()
	e.closeBind()
	e.recvWG.Wait()
	_ = e.dev.Close()
	wg.Wait()
	e.setState(StateStopped, time.Time{})
	e.persistStatus()
	return nil
}

// openBind opens the bind and starts one receiver per receive function.
func (e *Engine) openBind() error {
	e.bindMu.Lock()
	defer e.bindMu.Unlock()
	fns, _, err := e.bind.Open(0)
	if err != nil {
		return fmt.Errorf("open the bind: %w", err)
	}
	e.bindMu.open = true
	for _, fn := range fns {
		e.recvWG.Add(1)
		go e.receiver(fn)
	}
	return nil
}

func (e *Engine) closeBind() {
	e.bindMu.Lock()
	defer e.bindMu.Unlock()
	if e.bindMu.open {
		_ = e.bind.Close()
		e.bindMu.open = false
	}
}

// rebind closes and reopens the bind: new sockets, a new source address.
func (e *Engine) rebind() error {
	e.closeBind()
	e.recvWG.Wait()
	if err := e.openBind(); err != nil {
		return err
	}
	e.log.Info("bind reopened (local address changed)")
	return nil
}

// send sends packets to the gateway in batches of the bind's size.
func (e *Engine) send(bufs [][]byte) error {
	e.bindMu.RLock()
	defer e.bindMu.RUnlock()
	if !e.bindMu.open {
		return errBindClosed
	}
	bs := max(e.bind.BatchSize(), 1)
	for len(bufs) > 0 {
		n := min(len(bufs), bs)
		if err := e.bind.Send(bufs[:n], e.bindMu.ep); err != nil {
			return err
		}
		bufs = bufs[n:]
	}
	e.lastSent.Store(e.mono())
	return nil
}

var errBindClosed = errors.New("bind closed")

func (e *Engine) sendOne(b []byte) error { return e.send([][]byte{b}) }

func (e *Engine) mono() int64 { return int64(time.Since(e.start)) }

func (e *Engine) since(t int64) time.Duration { return time.Duration(e.mono() - t) }

// deliver hands a copy of b to the main loop, dropping it when the loop
// is behind (the protocol retries); k is the keys that opened a control
// message.
func (e *Engine) deliver(typ byte, b []byte, k *keys) {
	select {
	case e.inbox <- inbound{typ: typ, b: slices.Clone(b), k: k}:
	default:
		e.log.Debug("main loop busy: datagram dropped", "type", typ)
	}
}

// receiver reads datagrams from one receive function until the bind is
// closed: transport packets are opened here (IP packets go to the TUN in
// batches, control messages to the main loop); handshake messages from
// the gateway go to the main loop; everything else is dropped.
func (e *Engine) receiver(fn conn.ReceiveFunc) {
	defer e.recvWG.Done()
	bs := max(e.bind.BatchSize(), 1)
	bufs := make([][]byte, bs)
	for i := range bufs {
		bufs[i] = make([]byte, recvBufSize)
	}
	sizes := make([]int, bs)
	eps := make([]conn.Endpoint, bs)
	out := make([][]byte, 0, bs)
	for fails := 0; fails < maxReadFails; {
		n, err := fn(bufs, sizes, eps)
		if err != nil {
			if e.closing.Load() || isClosed(err) {
				e.log.Debug("receiver stopped", "error", err)
				return
			}
			fails++
			e.log.Debug("receive", "error", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		fails = 0
		out = out[:0]
		for i := 0; i < n && i < bs; i++ {
			pkt := bufs[i][:sizes[i]]
			if len(pkt) < handshake.HeaderLen {
				continue
			}
			switch handshake.MessageType(pkt[0]) {
			case handshake.TypeTransport:
				if p, ok := e.openTransport(pkt); ok {
					out = append(out, p)
				}
			case handshake.TypeCookieReply, handshake.TypeRekeyResp, handshake.TypeHandshakeError, handshake.TypeFragment:
				if e.fromGateway(eps[i]) {
					e.deliver(pkt[0], pkt, nil)
				}
			}
		}
		if len(out) > 0 {
			if _, err := e.dev.Write(out, transport.HeaderSize); err != nil && !e.closing.Load() {
				e.log.Debug("tun write", "error", err)
			}
		}
	}
	e.log.Error("receiving stopped after repeated errors")
}

func isClosed(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed) || errors.Is(err, io.EOF) || errors.Is(err, errBindClosed)
}

// fromGateway reports whether a datagram came from the gateway's address.
func (e *Engine) fromGateway(ep conn.Endpoint) bool {
	if ep == nil {
		return false
	}
	ap, err := netip.ParseAddrPort(ep.DstToString())
	if err != nil {
		return false
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()) == netip.AddrPortFrom(e.cfg.Gateway.Addr().Unmap(), e.cfg.Gateway.Port())
}

// openTransport opens a transport packet in place with the current or the
// previous keys. It returns the packet to write to the TUN (the inner IP
// packet at offset HeaderSize), or false when there is none: dropped,
// keepalive, or a control message handed to the main loop.
func (e *Engine) openTransport(pkt []byte) ([]byte, bool) {
	now := time.Now()
	var (
		pt     []byte
		opener *keys
	)
	err := transport.ErrIndex
	for _, k := range []*keys{e.cur.Load(), e.prev.Load()} {
		if k == nil || k.kp.Expired(now) {
			continue
		}
		pt, _, err = k.kp.Open(pkt[transport.HeaderSize:transport.HeaderSize], pkt)
		if err != transport.ErrIndex {
			opener = k
			break
		}
	}
	if err != nil {
		return nil, false
	}
	e.lastRecv.Store(e.mono())
	if len(pt) == 0 {
		return nil, false // keepalive
	}
	if pt[0] < 0x40 {
		e.deliver(0, pt, opener)
		return nil, false
	}
	in, err := transport.ParseInner(pt)
	if err != nil {
		return nil, false
	}
	if a := e.addrs.Load(); a == nil || !slices.Contains(*a, in.Dst.Unmap()) {
		return nil, false // not for us: never inject it
	}
	e.rx.Add(uint64(in.Length))
	return pkt[:transport.HeaderSize+in.Length], true
}

// tunReader reads packets from the TUN device, seals them in place with
// the current keys and sends them in batches until the device is closed.
func (e *Engine) tunReader(wg *sync.WaitGroup) {
	defer wg.Done()
	bs := max(e.dev.BatchSize(), 1)
	// Each buffer holds one sealed packet, but has room for a whole UDP
	// GSO super-datagram: the bind coalesces the packets that follow into
	// the spare capacity of the first one of a run to the same endpoint, and
	// without that room every packet crosses the kernel's UDP stack alone.
	bufs := make([][]byte, bs)
	for i := range bufs {
		bufs[i] = make([]byte, sendBufSize)
	}
	sizes := make([]int, bs)
	out := make([][]byte, 0, bs)
	for fails := 0; fails < maxReadFails; {
		n, err := e.dev.Read(bufs, sizes, transport.HeaderSize)
		if err != nil && n == 0 {
			if e.closing.Load() || isClosed(err) {
				return
			}
			if errors.Is(err, tun.ErrTooManySegments) {
				continue
			}
			fails++
			e.log.Debug("tun read", "error", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		fails = 0
		k := e.cur.Load()
		if k == nil || k.kp.Expired(time.Now()) {
			continue // no session: the packets are dropped
		}
		out = out[:0]
		var bytes uint64
		for i := 0; i < n && i < bs; i++ {
			sz := sizes[i]
			if sz <= 0 {
				continue
			}
			b := bufs[i]
			p, err := k.kp.Seal(b[:0], b[transport.HeaderSize:transport.HeaderSize+sz])
			if err != nil {
				continue
			}
			out = append(out, p)
			bytes += uint64(sz)
		}
		if len(out) == 0 {
			continue
		}
		// Counted before the send, so whoever sees the packet arrive also
		// sees it in the status; a failed send takes the count back.
		e.tx.Add(bytes)
		if e.send(out) != nil {
			e.tx.Add(^(bytes - 1))
		}
	}
	if !e.closing.Load() {
		e.log.Error("reading the tun device stopped after repeated errors")
	}
}

// randUint32 draws a random index or message id from Config.Rand.
func (e *Engine) randUint32() uint32 {
	var b [4]byte
	if _, err := io.ReadFull(e.cfg.Rand, b[:]); err != nil {
		// The DRBG failed: crypto/rand for a non-secret id keeps us going;
		// the handshake itself fails closed on the same reader.
		_, _ = rand.Read(b[:])
	}
	return binary.BigEndian.Uint32(b[:])
}
