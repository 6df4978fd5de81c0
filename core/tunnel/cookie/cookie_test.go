package cookie_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/avonzt/avon/core/tunnel/cookie"
)

var (
	t0      = time.Unix(1_700_000_000, 0)
	gateway = [32]byte{1, 2, 3, 4, 5}
	other   = [32]byte{9, 9, 9}
	srcA    = netip.MustParseAddrPort("198.51.100.7:51820")
	srcB    = netip.MustParseAddrPort("[2001:db8::7]:51820")
)

// detRand is a deterministic generator for tests (never for real keys).
func detRand(seed byte) io.Reader {
	return rand.NewChaCha8([32]byte{seed})
}

// failAfter reads from r until n bytes were served, then fails until
// healed.
type failAfter struct {
	mu     sync.Mutex
	r      io.Reader
	n      int
	broken bool
}

func (f *failAfter) Read(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n < len(p) {
		f.broken = true
	}
	if f.broken {
		return 0, errors.New("entropy source failed")
	}
	f.n -= len(p)
	return f.r.Read(p)
}

func (f *failAfter) heal(n int) {
	f.mu.Lock()
	f.n, f.broken = n, false
	f.mu.Unlock()
}

func newChecker(t testing.TB) *cookie.Checker {
	t.Helper()
	c, err := cookie.NewChecker(gateway, detRand(1), t0)
	if err != nil {
		t.Fatalf("NewChecker: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// initiation returns a 1430-byte message with room for the MACs.
func initiation(seed byte) []byte {
	m := make([]byte, 1430)
	_, _ = detRand(seed).Read(m)
	m[0], m[1], m[2], m[3] = 1, 1, 0, 0
	return m
}

// cookieFor runs the first-contact exchange: the initiator sends without a
// cookie, the checker replies, the initiator opens the reply.
func cookieFor(t testing.TB, c *cookie.Checker, src netip.AddrPort, now time.Time) cookie.Cookie {
	t.Helper()
	msg := initiation(7)
	if err := cookie.AddMACs(msg, gateway, nil, now); err != nil {
		t.Fatal(err)
	}
	reply, err := c.Reply(msg, 77, src, now)
	if err != nil {
		t.Fatalf("Reply: %v", err)
	}
	m1, _ := cookie.MAC1(msg)
	ck, err := cookie.OpenReply(reply, gateway, m1, now)
	if err != nil {
		t.Fatalf("OpenReply: %v", err)
	}
	return ck
}

func withCookie(t testing.TB, ck *cookie.Cookie, now time.Time) []byte {
	t.Helper()
	msg := initiation(8)
	if err := cookie.AddMACs(msg, gateway, ck, now); err != nil {
		t.Fatal(err)
	}
	return msg
}

func TestRoundTrip(t *testing.T) {
	c := newChecker(t)
	msg := initiation(3)
	if err := cookie.AddMACs(msg, gateway, nil, t0); err != nil {
		t.Fatal(err)
	}
	if !c.CheckMAC1(msg) {
		t.Fatal("mac1 refused")
	}
	if !bytes.Equal(msg[len(msg)-16:], make([]byte, 16)) {
		t.Fatal("mac2 not zero without a cookie")
	}
	if c.CheckMAC2(msg, srcA, t0) {
		t.Fatal("zero mac2 accepted")
	}
	reply, err := c.Reply(msg, 0xa1b2c3d4, srcA, t0)
	if err != nil {
		t.Fatal(err)
	}
	if len(reply) != 64 || reply[0] != 5 || reply[1] != cookie.Version || reply[2] != 0 || reply[3] != 0 {
		t.Fatalf("reply % x", reply[:4])
	}
	if len(reply) > 3*len(msg) {
		t.Fatal("reply larger than 3x the request")
	}
	if idx, err := cookie.ReplyReceiver(reply); err != nil || idx != 0xa1b2c3d4 {
		t.Fatalf("ReplyReceiver %x %v", idx, err)
	}
	m1, err := cookie.MAC1(msg)
	if err != nil {
		t.Fatal(err)
	}
	ck, err := cookie.OpenReply(reply, gateway, m1, t0.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if ck.Received != t0.Add(time.Second) || ck.Value == ([16]byte{}) {
		t.Fatalf("cookie %+v", ck)
	}
	retry := initiation(3)
	if err := cookie.AddMACs(retry, gateway, &ck, t0.Add(2*time.Second)); err != nil {
		t.Fatal(err)
	}
	if !c.CheckMAC1(retry) || !c.CheckMAC2(retry, srcA, t0.Add(2*time.Second)) {
		t.Fatal("retry with the cookie refused")
	}
	// mac1 does not depend on mac2: the retry has the same mac1.
	if !bytes.Equal(msg[len(msg)-32:len(msg)-16], retry[len(retry)-32:len(retry)-16]) {
		t.Fatal("mac1 changed with the cookie")
	}
	// Two replies to the same message use different nonces.
	reply2, _ := c.Reply(msg, 0xa1b2c3d4, srcA, t0)
	if bytes.Equal(reply, reply2) {
		t.Fatal("nonce reused")
	}
}

func TestMAC1(t *testing.T) {
	c := newChecker(t)
	msg := initiation(4)
	_ = cookie.AddMACs(msg, other, nil, t0)
	if c.CheckMAC1(msg) {
		t.Fatal("mac1 for another responder accepted")
	}
	_ = cookie.AddMACs(msg, gateway, nil, t0)
	for _, i := range []int{0, 1, 4, 700, len(msg) - 33, len(msg) - 32, len(msg) - 17} {
		m := append([]byte(nil), msg...)
		m[i] ^= 0x01
		if c.CheckMAC1(m) {
			t.Fatalf("mac1 accepted with byte %d flipped", i)
		}
	}
	m := append([]byte(nil), msg...)
	m[len(m)-1] ^= 0xff // mac2 is not covered by mac1
	if !c.CheckMAC1(m) {
		t.Fatal("mac1 depends on mac2")
	}
}

func TestMAC2Source(t *testing.T) {
	c := newChecker(t)
	ck := cookieFor(t, c, srcA, t0)
	msg := withCookie(t, &ck, t0)
	tests := []struct {
		name string
		src  netip.AddrPort
		want bool
	}{
		{"same source", srcA, true},
		{"same source v4-mapped", netip.AddrPortFrom(netip.AddrFrom16(srcA.Addr().As16()), srcA.Port()), true},
		{"other port", netip.AddrPortFrom(srcA.Addr(), srcA.Port()+1), false},
		{"other address", netip.MustParseAddrPort("198.51.100.8:51820"), false},
		{"other family", srcB, false},
		{"invalid source", netip.AddrPort{}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := c.CheckMAC2(msg, tc.src, t0); got != tc.want {
				t.Fatalf("CheckMAC2 = %v, want %v", got, tc.want)
			}
		})
	}
	m := append([]byte(nil), msg...)
	m[10] ^= 1
	if c.CheckMAC2(m, srcA, t0) {
		t.Fatal("mac2 accepted over a modified message")
	}
	// Another checker (another secret) refuses it.
	c2, _ := cookie.NewChecker(gateway, detRand(2), t0)
	if c2.CheckMAC2(msg, srcA, t0) {
		t.Fatal("mac2 accepted by a checker with another secret")
	}
}

func TestRotation(t *testing.T) {
	t.Run("explicit", func(t *testing.T) {
		c := newChecker(t)
		ck := cookieFor(t, c, srcA, t0)
		msg := withCookie(t, &ck, t0)
		if err := c.Rotate(t0); err != nil {
			t.Fatal(err)
		}
		if !c.CheckMAC2(msg, srcA, t0) {
			t.Fatal("refused after one rotation")
		}
		if err := c.Rotate(t0); err != nil {
			t.Fatal(err)
		}
		if c.CheckMAC2(msg, srcA, t0) {
			t.Fatal("accepted after two rotations")
		}
	})
	t.Run("lazy", func(t *testing.T) {
		tests := []struct {
			at   time.Duration
			want bool
		}{
			{0, true},
			{119 * time.Second, true},
			{120 * time.Second, true}, // one rotation: previous secret
			{239 * time.Second, true},
			{240 * time.Second, false}, // two rotations
			{time.Hour, false},
			{-121 * time.Second, false}, // clock went back past a period: fresh secrets
		}
		for _, tc := range tests {
			c := newChecker(t)
			ck := cookieFor(t, c, srcA, t0)
			msg := withCookie(t, &ck, t0)
			if got := c.CheckMAC2(msg, srcA, t0.Add(tc.at)); got != tc.want {
				t.Errorf("at %v: CheckMAC2 = %v, want %v", tc.at, got, tc.want)
			}
		}
	})
	t.Run("stepwise", func(t *testing.T) {
		// Checks at 100 s steps: a cookie drawn just before a rotation is
		// still accepted a full lifetime later, and never past two periods
		// of its secret.
		c := newChecker(t)
		ck := cookieFor(t, c, srcA, t0.Add(119*time.Second))
		msg := withCookie(t, &ck, t0.Add(119*time.Second))
		for _, step := range []struct {
			at   time.Duration
			want bool
		}{{130, true}, {238, true}, {239, true}, {240, false}} {
			if got := c.CheckMAC2(msg, srcA, t0.Add(step.at*time.Second)); got != step.want {
				t.Fatalf("at %ds: %v, want %v", step.at, got, step.want)
			}
		}
	})
}

func TestCookieLifetime(t *testing.T) {
	c := newChecker(t)
	ck := cookieFor(t, c, srcA, t0)
	for _, tc := range []struct {
		at   time.Duration
		want bool
	}{{0, true}, {119 * time.Second, true}, {120 * time.Second, false}, {-time.Second, false}} {
		if got := ck.Valid(t0.Add(tc.at)); got != tc.want {
			t.Errorf("Valid at %v = %v", tc.at, got)
		}
	}
	msg := withCookie(t, &ck, t0.Add(120*time.Second))
	if !bytes.Equal(msg[len(msg)-16:], make([]byte, 16)) {
		t.Fatal("expired cookie used for mac2")
	}
	var zero cookie.Cookie
	if zero.Valid(t0) {
		t.Fatal("zero cookie valid")
	}
}

func TestOpenReplyRefuses(t *testing.T) {
	c := newChecker(t)
	msg := initiation(5)
	_ = cookie.AddMACs(msg, gateway, nil, t0)
	reply, _ := c.Reply(msg, 1, srcA, t0)
	m1, _ := cookie.MAC1(msg)
	if _, err := cookie.OpenReply(reply, gateway, [16]byte{1}, t0); !errors.Is(err, cookie.ErrReplyInvalid) {
		t.Fatalf("wrong mac1: %v", err)
	}
	if _, err := cookie.OpenReply(reply, other, m1, t0); !errors.Is(err, cookie.ErrReplyInvalid) {
		t.Fatalf("wrong responder: %v", err)
	}
	for i := range reply {
		r := append([]byte(nil), reply...)
		r[i] ^= 0x20
		_, err := cookie.OpenReply(r, gateway, m1, t0)
		switch {
		case i < 4 && !errors.Is(err, cookie.ErrMalformed):
			t.Fatalf("byte %d flipped: %v, want ErrMalformed", i, err)
		case i >= 8 && !errors.Is(err, cookie.ErrReplyInvalid):
			t.Fatalf("byte %d flipped: %v, want ErrReplyInvalid", i, err)
		case i >= 4 && i < 8 && err != nil:
			t.Fatalf("receiver index is not authenticated by design, got %v", err)
		}
	}
	for n := range len(reply) + 8 {
		r := append(append([]byte(nil), reply...), make([]byte, 8)...)[:n]
		if n == len(reply) {
			continue
		}
		if _, err := cookie.OpenReply(r, gateway, m1, t0); !errors.Is(err, cookie.ErrMalformed) {
			t.Fatalf("length %d: %v, want ErrMalformed", n, err)
		}
		if _, err := cookie.ReplyReceiver(r); !errors.Is(err, cookie.ErrMalformed) {
			t.Fatalf("ReplyReceiver length %d: %v", n, err)
		}
	}
}

func TestTruncatedMessages(t *testing.T) {
	c := newChecker(t)
	msg := initiation(6)
	ck := cookieFor(t, c, srcA, t0)
	_ = cookie.AddMACs(msg, gateway, &ck, t0)
	for n := range len(msg) {
		m := msg[:n]
		if c.CheckMAC1(m) || c.CheckMAC2(m, srcA, t0) {
			t.Fatalf("truncated to %d accepted", n)
		}
		if n < cookie.MinMessageLen {
			if _, err := c.Reply(m, 1, srcA, t0); !errors.Is(err, cookie.ErrMalformed) {
				t.Fatalf("Reply on %d bytes: %v", n, err)
			}
			if _, err := cookie.MAC1(m); !errors.Is(err, cookie.ErrMalformed) {
				t.Fatalf("MAC1 on %d bytes: %v", n, err)
			}
			if err := cookie.AddMACs(append([]byte(nil), m...), gateway, nil, t0); !errors.Is(err, cookie.ErrMalformed) {
				t.Fatalf("AddMACs on %d bytes: %v", n, err)
			}
		}
	}
}

func TestTokens(t *testing.T) {
	c := newChecker(t)
	ip := srcA.Addr()
	tok, err := c.IssueToken(ip, t0)
	if err != nil {
		t.Fatal(err)
	}
	if len(tok) > 96 || len(tok) != cookie.TokenLen {
		t.Fatalf("token of %d bytes", len(tok))
	}
	c2, _ := cookie.NewChecker(gateway, detRand(9), t0)
	tests := []struct {
		name string
		c    *cookie.Checker
		tok  []byte
		ip   netip.Addr
		now  time.Time
		want error
	}{
		{"valid", c, tok, ip, t0, nil},
		{"valid v4-mapped", c, tok, netip.AddrFrom16(ip.As16()), t0.Add(time.Hour), nil},
		{"valid last second", c, tok, ip, t0.Add(24*time.Hour - time.Second), nil},
		{"expired", c, tok, ip, t0.Add(24 * time.Hour), cookie.ErrTokenExpired},
		{"other ip", c, tok, netip.MustParseAddr("198.51.100.8"), t0, cookie.ErrTokenAddress},
		{"other family", c, tok, srcB.Addr(), t0, cookie.ErrTokenAddress},
		{"invalid ip", c, tok, netip.Addr{}, t0, cookie.ErrTokenAddress},
		{"other gateway", c2, tok, ip, t0, cookie.ErrTokenInvalid},
		{"empty", c, nil, ip, t0, cookie.ErrTokenInvalid},
		{"too long", c, append(append([]byte(nil), tok...), 0), ip, t0, cookie.ErrTokenInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.c.CheckToken(tc.tok, tc.ip, tc.now); !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("CheckToken: %v, want %v", err, tc.want)
			}
		})
	}
	for i := range tok {
		m := append([]byte(nil), tok...)
		m[i] ^= 0x04
		if err := c.CheckToken(m, ip, t0); !errors.Is(err, cookie.ErrTokenInvalid) {
			t.Fatalf("byte %d flipped: %v", i, err)
		}
	}
	for n := range tok {
		if err := c.CheckToken(tok[:n], ip, t0); !errors.Is(err, cookie.ErrTokenInvalid) {
			t.Fatalf("truncated to %d: %v", n, err)
		}
	}
	if _, err := c.IssueToken(netip.Addr{}, t0); !errors.Is(err, cookie.ErrInvalidArgument) {
		t.Fatalf("IssueToken(invalid): %v", err)
	}
	tok6, _ := c.IssueToken(srcB.Addr(), t0)
	if err := c.CheckToken(tok6, srcB.Addr(), t0); err != nil {
		t.Fatalf("IPv6 token: %v", err)
	}
	if tok2, _ := c.IssueToken(ip, t0); bytes.Equal(tok, tok2) {
		t.Fatal("two tokens for the same ip and time are equal")
	}
}

func TestRandomFailureFailsClosed(t *testing.T) {
	if _, err := cookie.NewChecker(gateway, &failAfter{r: detRand(1), n: 40}, t0); !errors.Is(err, cookie.ErrRandom) {
		t.Fatalf("NewChecker: %v", err)
	}
	if _, err := cookie.NewChecker(gateway, nil, t0); !errors.Is(err, cookie.ErrInvalidArgument) {
		t.Fatalf("NewChecker(nil): %v", err)
	}
	fr := &failAfter{r: detRand(1), n: 64 + 24}
	c, err := cookie.NewChecker(gateway, fr, t0)
	if err != nil {
		t.Fatal(err)
	}
	ck := cookieFor(t, c, srcA, t0) // spends the 24 nonce bytes
	msg := withCookie(t, &ck, t0)
	if _, err := c.Reply(msg, 1, srcA, t0); !errors.Is(err, cookie.ErrRandom) {
		t.Fatalf("Reply without randomness: %v", err)
	}
	if _, err := c.IssueToken(srcA.Addr(), t0); !errors.Is(err, cookie.ErrRandom) {
		t.Fatalf("IssueToken without randomness: %v", err)
	}
	// The rotation due at 120 s cannot draw: no secret is trusted.
	if c.CheckMAC2(msg, srcA, t0.Add(120*time.Second)) {
		t.Fatal("accepted a cookie while the secret could not be rotated")
	}
	fr.heal(1 << 20)
	if c.CheckMAC2(msg, srcA, t0.Add(121*time.Second)) {
		t.Fatal("old secret came back after a failed rotation")
	}
	ck2 := cookieFor(t, c, srcA, t0.Add(122*time.Second))
	if !c.CheckMAC2(withCookie(t, &ck2, t0.Add(122*time.Second)), srcA, t0.Add(122*time.Second)) {
		t.Fatal("no recovery once randomness is back")
	}
}

func TestClose(t *testing.T) {
	c, _ := cookie.NewChecker(gateway, detRand(1), t0)
	ck := cookieFor(t, c, srcA, t0)
	msg := withCookie(t, &ck, t0)
	tok, _ := c.IssueToken(srcA.Addr(), t0)
	c.Close()
	if c.CheckMAC2(msg, srcA, t0) {
		t.Fatal("mac2 accepted after Close")
	}
	if !c.CheckMAC1(msg) {
		t.Fatal("mac1 refused after Close")
	}
	if _, err := c.Reply(msg, 1, srcA, t0); !errors.Is(err, cookie.ErrClosed) {
		t.Fatalf("Reply: %v", err)
	}
	if err := c.CheckToken(tok, srcA.Addr(), t0); !errors.Is(err, cookie.ErrClosed) {
		t.Fatalf("CheckToken: %v", err)
	}
	if _, err := c.IssueToken(srcA.Addr(), t0); !errors.Is(err, cookie.ErrClosed) {
		t.Fatalf("IssueToken: %v", err)
	}
	if err := c.Rotate(t0); !errors.Is(err, cookie.ErrClosed) {
		t.Fatalf("Rotate: %v", err)
	}
}

func TestConcurrent(t *testing.T) {
	c := newChecker(t)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(g)}), 1000)
			for i := range 100 {
				now := t0.Add(time.Duration(i) * time.Second)
				msg := initiation(byte(g))
				binary.BigEndian.PutUint32(msg[4:], uint32(i))
				_ = cookie.AddMACs(msg, gateway, nil, now)
				reply, err := c.Reply(msg, uint32(i), src, now)
				if err != nil {
					errs <- err
					return
				}
				m1, _ := cookie.MAC1(msg)
				ck, err := cookie.OpenReply(reply, gateway, m1, now)
				if err != nil {
					errs <- err
					return
				}
				_ = cookie.AddMACs(msg, gateway, &ck, now)
				if !c.CheckMAC1(msg) || !c.CheckMAC2(msg, src, now) {
					errs <- errors.New("fresh cookie refused")
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}
