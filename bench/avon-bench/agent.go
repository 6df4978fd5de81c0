package main

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"
	"unsafe"

	"github.com/cloudflare/circl/sign/mldsa/mldsa65"
	"golang.org/x/sys/unix"

	"github.com/avonzt/avon/core/handshake"
	"github.com/avonzt/avon/core/handshake/handshaketest"
	"github.com/avonzt/avon/core/tunnel/control"
	"github.com/avonzt/avon/core/tunnel/cookie"
	"github.com/avonzt/avon/core/tunnel/frag"
	"github.com/avonzt/avon/core/tunnel/transport"
)

// Agent-side timers: how long one step of a handshake (or a pulse, or a
// rekey) may wait for the gateway, and how many attempts a handshake gets.
const (
	stepTimeout = 5 * time.Second
	maxAttempts = 5
	maxDatagram = 2048
)

var errGatewayClosed = errors.New("gateway closed the session")

// gw is what every agent knows about the gateway (its enrollment bundle).
type gw struct {
	addr *net.UDPAddr
	pub  []byte
	id   [handshake.IDLen]byte
	// finishGSO: agents send their Finish's fragments as one UDP GSO
	// datagram (-finish-gso).
	finishGSO bool
}

// agent is one simulated agent: its own loopback source address and UDP
// socket, its credentials, and its session once connected. Its methods
// are called from one goroutine at a time.
type agent struct {
	id    string
	src   netip.Addr
	seed  [mldsa65.SeedSize]byte
	chain [][]byte

	c      *net.UDPConn
	cookie cookie.Cookie
	res    *handshake.Result
	kp     *transport.Keypair
	token  [control.TokenLen]byte
	seq    uint64
}

// loopbackAddr is the i-th agent's source address: 127.1.0.0 + i (the
// whole 127/8 is local on Linux), so each agent is its own source for the
// gateway's per-source limits.
func loopbackAddr(i int) netip.Addr {
	n := uint32(127)<<24 | 1<<16 + uint32(i)
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], n)
	return netip.AddrFrom4(b)
}

func randIndex() uint32 {
	var b [4]byte
	_, _ = crand.Read(b[:])
	return binary.BigEndian.Uint32(b[:]) | 1
}

// sendFragments sends a message's fragments (from frag.SplitForGSO): with
// gso, as one UDP GSO datagram segmented at the first fragment's size, as
// conn.StdNetBind coalesces them for avon-agent; otherwise one write each.
func (a *agent) sendFragments(frags [][]byte, gso bool) error {
	if !gso || len(frags) == 1 {
		for _, f := range frags {
			if _, err := a.c.Write(f); err != nil {
				return err
			}
		}
		return nil
	}
	buf := frags[0]
	for _, f := range frags[1:] {
		buf = append(buf, f...) // in place: SplitForGSO's layout
	}
	oob := make([]byte, unix.CmsgSpace(2))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	h.Level, h.Type = unix.SOL_UDP, unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(oob[unix.CmsgLen(0):], uint16(len(frags[0])))
	_, _, err := a.c.WriteMsgUDP(buf, oob, nil)
	return err
}

// dial opens the agent's socket (once; it is kept while the session lives).
func (a *agent) dial(g *gw) error {
	if a.c != nil {
		return nil
	}
	c, err := net.DialUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(a.src, 0)), g.addr)
	if err != nil {
		return fmt.Errorf("agent %s: %w", a.id, err)
	}
	a.c = c
	return nil
}

func (a *agent) close() {
	if a.c != nil {
		a.c.Close()
		a.c = nil
	}
	if a.kp != nil {
		a.kp.Zeroize()
		a.kp = nil
	}
	if a.res != nil {
		a.res.Zeroize()
		a.res = nil
	}
}

// recv reads one datagram before deadline.
func (a *agent) recv(buf []byte, deadline time.Time) ([]byte, error) {
	if err := a.c.SetReadDeadline(deadline); err != nil {
		return nil, err
	}
	n, err := a.c.Read(buf)
	if err != nil {
		return nil, err
	}
	return buf[:n], nil
}

func timeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

// connectResult describes one successful connect.
type connectResult struct {
	latency  time.Duration // first Initiation sent -> SessionConfig opened
	attempts int           // Initiations with a fresh key (1 when nothing was lost)
	cookies  int           // CookieReplies answered
}

// connect runs a full handshake, retrying lost ones, until the gateway's
// SessionConfig arrives.
func (a *agent) connect(ctx context.Context, g *gw) (connectResult, error) {
	var r connectResult
	if err := a.dial(g); err != nil {
		return r, err
	}
	key := handshaketest.KeyFromSeed(a.seed)
	signer, err := handshake.NewMLDSA65Signer(key.PrivateKey(), crand.Reader)
	if err != nil {
		return r, err
	}
	defer signer.Close()
	buf := make([]byte, maxDatagram)
	start := time.Now()
	var last error
	for r.attempts < maxAttempts && ctx.Err() == nil {
		r.attempts++
		err := a.attempt(ctx, g, signer, buf, &r)
		if err == nil {
			r.latency = time.Since(start)
			return r, nil
		}
		last = err
		var he *handshakeError
		if errors.As(err, &he) && he.info.Code == handshake.CodeBusy {
			// The gateway is full or behind: back off before the next try.
			select {
			case <-ctx.Done():
			case <-time.After(time.Duration(r.attempts) * 200 * time.Millisecond):
			}
		} else if !timeout(err) {
			return r, err
		}
	}
	return r, fmt.Errorf("agent %s: no session after %d attempts: %w", a.id, r.attempts, last)
}

// handshakeError is a HandshakeError the gateway sent.
type handshakeError struct{ info *handshake.HandshakeErrorInfo }

func (e *handshakeError) Error() string {
	return fmt.Sprintf("handshake error %v (authenticated %v)", e.info.Code, e.info.Authenticated)
}

// attempt is one Initiation (re-sent once with mac2 after a CookieReply),
// the Response, the Finish and the SessionConfig.
func (a *agent) attempt(ctx context.Context, g *gw, signer handshake.Signer, buf []byte, r *connectResult) error {
	in, err := handshake.NewInitiator(handshake.InitiatorConfig{Signer: signer, Chain: a.chain,
		ResponderPublicKey: g.pub, ResponderID: g.id, Rand: crand.Reader, Now: time.Now, LocalIndex: randIndex()})
	if err != nil {
		return err
	}
	defer in.Zeroize()
	init, err := in.Initiation(nil)
	if err != nil {
		return err
	}
	reasm, err := frag.NewReassembler(frag.Config{})
	if err != nil {
		return err
	}
	send := func() error {
		if err := cookie.AddMACs(init, g.id, &a.cookie, time.Now()); err != nil {
			return err
		}
		_, err := a.c.Write(init)
		return err
	}
	if err := send(); err != nil {
		return err
	}
	deadline := time.Now().Add(stepTimeout)
	var (
		resp, fin []byte
		res       *handshake.Result
	)
	for resp == nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		msg, err := a.recv(buf, deadline)
		if err != nil {
			return err
		}
		if len(msg) < handshake.HeaderLen {
			continue
		}
		switch handshake.MessageType(msg[0]) {
		case handshake.TypeCookieReply:
			mac1, _ := cookie.MAC1(init)
			c, err := cookie.OpenReply(msg, g.id, mac1, time.Now())
			if err != nil {
				continue // not for this Initiation
			}
			a.cookie = c
			r.cookies++
			if err := send(); err != nil {
				return err
			}
		case handshake.TypeHandshakeError:
			info, err := in.HandleError(msg)
			if err != nil {
				continue
			}
			return &handshakeError{info}
		case handshake.TypeFragment:
			m, done, err := reasm.Add(netip.AddrPort{}, msg, time.Now())
			if err == nil && done {
				resp = m
			}
		}
		if resp != nil {
			if fin, res, err = in.HandleResponse(resp); err != nil {
				// The late Response to an earlier attempt: keep waiting.
				resp = nil
			}
		}
	}
	frags, err := frag.SplitForGSO(fin, randIndex(), frag.DefaultMaxChunk)
	if err != nil {
		res.Zeroize()
		return err
	}
	if err := a.sendFragments(frags, g.finishGSO); err != nil {
		res.Zeroize()
		return err
	}
	kp, err := transport.NewKeypair(transport.AEADID(res.AEAD), &res.SendKey, &res.RecvKey, res.LocalIndex, res.RemoteIndex, time.Now())
	if err != nil {
		res.Zeroize()
		return err
	}
	deadline = time.Now().Add(stepTimeout)
	for {
		msg, err := a.recv(buf, deadline)
		if err != nil {
			kp.Zeroize()
			res.Zeroize()
			return err
		}
		if len(msg) >= handshake.HeaderLen && handshake.MessageType(msg[0]) == handshake.TypeHandshakeError {
			if info, err := in.HandleError(msg); err == nil {
				kp.Zeroize()
				res.Zeroize()
				return &handshakeError{info}
			}
			continue
		}
		pt, _, err := kp.Open(nil, msg)
		if err != nil {
			continue // a late fragment, or the previous session's traffic
		}
		m, err := control.Parse(pt)
		if err != nil {
			continue
		}
		sc, ok := m.(*control.SessionConfig)
		if !ok {
			continue
		}
		if a.kp != nil {
			a.kp.Zeroize()
		}
		if a.res != nil {
			a.res.Zeroize()
		}
		a.res, a.kp, a.token, a.seq = res, kp, sc.SessionToken, 0
		return nil
	}
}

// sendPlain seals pt with the session's keys and sends it.
func (a *agent) sendPlain(pt []byte) error {
	out, err := a.kp.Seal(make([]byte, 0, transport.HeaderSize+len(pt)+2*transport.PadBlock+transport.TagSize), pt)
	if err != nil {
		return err
	}
	_, err = a.c.Write(out)
	return err
}

// beat sends one pulse and waits for its acknowledgement; it returns the
// round trip.
func (a *agent) beat() (time.Duration, error) {
	a.seq++
	b, err := control.Marshal(&control.Pulse{Seq: a.seq, SessionToken: a.token, AgentTime: time.Now().UnixNano(),
		OS: "linux", AgentVersion: "avon-bench"})
	if err != nil {
		return 0, err
	}
	start := time.Now()
	if err := a.sendPlain(b); err != nil {
		return 0, err
	}
	buf := make([]byte, maxDatagram)
	deadline := start.Add(stepTimeout)
	for {
		msg, err := a.recv(buf, deadline)
		if err != nil {
			return 0, err
		}
		pt, _, err := a.kp.Open(nil, msg)
		if err != nil || len(pt) == 0 {
			continue // keepalive, or not ours
		}
		m, err := control.Parse(pt)
		if err != nil {
			continue
		}
		switch m := m.(type) {
		case *control.PulseAck:
			if m.Seq != a.seq {
				continue
			}
			a.token = m.NextToken
			return time.Since(start), nil
		case *control.Close:
			return 0, fmt.Errorf("agent %s: %w: code %d %q", a.id, errGatewayClosed, m.Code, m.Reason)
		}
	}
}

// rekey runs one signature-free rekey and switches to the new keys; the
// gateway promotes them when the next packet (a keepalive here) uses them.
func (a *agent) rekey() (time.Duration, error) {
	ri, err := handshake.NewRekeyInitiator(a.res, crand.Reader, time.Now, randIndex())
	if err != nil {
		return 0, err
	}
	defer ri.Zeroize()
	msg, err := ri.RekeyInit()
	if err != nil {
		return 0, err
	}
	start := time.Now()
	if _, err := a.c.Write(msg); err != nil {
		return 0, err
	}
	buf := make([]byte, maxDatagram)
	deadline := start.Add(stepTimeout)
	for {
		b, err := a.recv(buf, deadline)
		if err != nil {
			return 0, err
		}
		if len(b) != handshake.RekeyRespLen || handshake.MessageType(b[0]) != handshake.TypeRekeyResp {
			continue
		}
		res, err := ri.HandleRekeyResp(b)
		if err != nil {
			continue
		}
		rtt := time.Since(start)
		kp, err := transport.NewKeypair(transport.AEADID(res.AEAD), &res.SendKey, &res.RecvKey, res.LocalIndex, res.RemoteIndex, time.Now())
		if err != nil {
			res.Zeroize()
			return 0, err
		}
		a.kp.Zeroize()
		a.res.Zeroize()
		a.kp, a.res = kp, res
		return rtt, a.sendPlain(nil)
	}
}
