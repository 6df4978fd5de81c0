package flow

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/avonzt/avon/core/gateway/flow/flowtest"
	"github.com/avonzt/avon/core/tunnel/transport"
	"github.com/avonzt/avon/sdk/policy"
)

var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

type clock struct{ ns atomic.Int64 }

func newClock() *clock                   { c := &clock{}; c.ns.Store(testNow.UnixNano()); return c }
func (c *clock) now() time.Time          { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) advance(d time.Duration) { c.ns.Add(int64(d)) }
func addr(s string) netip.Addr           { return netip.MustParseAddr(s) }
func put16(b []byte, v uint16)           { binary.BigEndian.PutUint16(b, v) }
func put32(b []byte, v uint32)           { binary.BigEndian.PutUint32(b, v) }
func cat(parts ...[]byte) []byte         { return bytes.Join(parts, nil) }
func key(p uint8, s, d string, sp, dp uint16) Key {
	return Key{Src: addr(s), Dst: addr(d), SrcPort: sp, DstPort: dp, Proto: p}
}

// Packet builders (checksums are not checked by the tracker).

func tcp(sport, dport uint16, flags uint8) []byte {
	b := make([]byte, 20)
	put16(b[0:], sport)
	put16(b[2:], dport)
	b[12] = 5 << 4
	b[13] = flags
	return b
}

func udp(sport, dport uint16, payload []byte) []byte {
	b := make([]byte, 8+len(payload))
	put16(b[0:], sport)
	put16(b[2:], dport)
	put16(b[4:], uint16(len(b)))
	copy(b[8:], payload)
	return b
}

func icmpEcho(typ uint8, id, seq uint16) []byte {
	b := make([]byte, 8)
	b[0] = typ
	put16(b[4:], id)
	put16(b[6:], seq)
	return b
}

func icmpError(typ uint8, quoted []byte) []byte { return cat([]byte{typ, 0, 0, 0, 0, 0, 0, 0}, quoted) }

func v4(proto uint8, src, dst string, l4 []byte) []byte {
	return v4frag(proto, src, dst, 0, 0, false, l4)
}

func v4frag(proto uint8, src, dst string, id, off8 uint16, more bool, payload []byte) []byte {
	b := make([]byte, 20+len(payload))
	b[0] = 0x45
	put16(b[2:], uint16(len(b)))
	put16(b[4:], id)
	f := off8
	if more {
		f |= 0x2000
	}
	put16(b[6:], f)
	b[8] = 64
	b[9] = proto
	s, d := addr(src).As4(), addr(dst).As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	copy(b[20:], payload)
	return b
}

func v6(next uint8, src, dst string, l4 []byte) []byte {
	b := make([]byte, 40+len(l4))
	b[0] = 0x60
	put16(b[4:], uint16(len(l4)))
	b[6] = next
	b[7] = 64
	s, d := addr(src).As16(), addr(dst).As16()
	copy(b[8:], s[:])
	copy(b[24:], d[:])
	copy(b[40:], l4)
	return b
}

func v6frag(next uint8, src, dst string, id uint32, off8 uint16, more bool, payload []byte) []byte {
	fh := make([]byte, 8)
	fh[0] = next
	f := off8 << 3
	if more {
		f |= 1
	}
	put16(fh[2:], f)
	put32(fh[4:], id)
	return v6(44, src, dst, cat(fh, payload))
}

// fixture is an Enforcer over a flowtest engine with recorded callbacks.
type fixture struct {
	t     testing.TB
	eng   *flowtest.Engine
	e     *Enforcer
	clock *clock
	logs  *syncBuffer

	mu       sync.Mutex
	released [][]byte
	denials  []Denial
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func newFixture(t testing.TB, decide flowtest.DecideFunc, mod func(*Config)) *fixture {
	t.Helper()
	f := &fixture{t: t, clock: newClock(), logs: &syncBuffer{}}
	if decide != nil {
		f.eng = flowtest.New(decide)
	}
	cfg := Config{Now: f.clock.now, BatchDelay: time.Millisecond,
		Logger: hclog.New(&hclog.LoggerOptions{Output: f.logs, Level: hclog.Debug}),
		Release: func(s *Session, pkts [][]byte) {
			f.mu.Lock()
			f.released = append(f.released, pkts...)
			f.mu.Unlock()
		},
		Denied: func(s *Session, d Denial) {
			f.mu.Lock()
			f.denials = append(f.denials, d)
			f.mu.Unlock()
		},
	}
	if f.eng != nil {
		cfg.Engine = f.eng
	}
	if mod != nil {
		mod(&cfg)
	}
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.e = e
	t.Cleanup(e.Close)
	return f
}

func (f *fixture) session(agent, address string) *Session {
	return f.e.AddSession(Subject{SessionID: "s-" + agent, AgentID: agent, Address: addr(address)}, agent)
}

func (f *fixture) inner(pkt []byte) transport.Inner {
	f.t.Helper()
	in, err := transport.ParseInner(pkt)
	if err != nil {
		f.t.Fatalf("test packet unparsable: %v", err)
	}
	return in
}

func (f *fixture) from(s *Session, pkt []byte) Action {
	f.t.Helper()
	return f.e.FromAgent(s, pkt, f.inner(pkt), f.clock.now())
}

func (f *fixture) to(s *Session, pkt []byte, peer *Session) Action {
	f.t.Helper()
	return f.e.ToAgent(s, pkt, f.inner(pkt), peer, f.clock.now())
}

func (f *fixture) nReleased() int { f.mu.Lock(); defer f.mu.Unlock(); return len(f.released) }
func (f *fixture) nDenials() int  { f.mu.Lock(); defer f.mu.Unlock(); return len(f.denials) }
func (f *fixture) denial(i int) Denial {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.denials[i]
}

// verdict returns the verdict of the flow opened with k in s (0: none).
func verdict(s *Session, k Key) Verdict {
	for _, fi := range s.Flows() {
		if fi.Key == k {
			return fi.Verdict
		}
	}
	return 0
}

// waitFor polls cond with a generous bound; the batcher is asynchronous,
// nothing here measures time.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for range 10000 {
		if cond() {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// waitBench is waitFor with a bound for benchmarks of many operations.
func waitBench(b *testing.B, what string, cond func() bool) {
	b.Helper()
	for range 600000 {
		if cond() {
			return
		}
		time.Sleep(100 * time.Microsecond)
	}
	b.Fatalf("timed out waiting for %s", what)
}

// settled waits until the flow k of s has a verdict other than Pending.
func (f *fixture) settled(s *Session, k Key) Verdict {
	f.t.Helper()
	var v Verdict
	waitFor(f.t, "a decision for "+k.String(), func() bool { v = verdict(s, k); return v != Pending && v != 0 })
	return v
}

type (
	policyQuery    = policy.Query
	policyDecision = policy.Decision
)

func parseInner(b []byte) (transport.Inner, error) { return transport.ParseInner(b) }
