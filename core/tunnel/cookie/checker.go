package cookie

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"hash"
	"io"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
)

// Checker is the responder side: it checks mac1 and mac2, sends cookie
// replies and issues and checks address tokens for one responder identity.
//
// It is safe for concurrent use. The responder identity keys are fixed at
// construction and need no lock; the cookie secrets, the token key and the
// random source are guarded by one mutex (so rand is only ever read by one
// goroutine at a time).
type Checker struct {
	responderID [32]byte
	mac1Key     [32]byte
	cookieKey   [32]byte
	tokenAD     []byte
	// mac1Pool holds HMAC states keyed with mac1Key; Reset brings one back
	// to its keyed state without rehashing the key.
	mac1Pool sync.Pool

	mu struct {
		sync.Mutex
		rand io.Reader
		// cur and prev are the cookie secrets; a false ok flag means the
		// slot holds no secret (never drawn, dropped, or a draw failed).
		cur, prev     [32]byte
		curOK, prevOK bool
		// epoch is when cur's rotation period began.
		epoch    time.Time
		tokenKey [32]byte
		closed   bool
	}
}

// NewChecker returns a Checker for the responder named responderID, drawing
// its first cookie secret and its token key from rand. rand must be a
// cryptographic generator (the core's DRBG).
func NewChecker(responderID [32]byte, rand io.Reader, now time.Time) (*Checker, error) {
	if rand == nil {
		return nil, fmt.Errorf("new checker: nil rand: %w", ErrInvalidArgument)
	}
	c := &Checker{
		responderID: responderID,
		mac1Key:     labelKey(labelMAC1, responderID),
		cookieKey:   labelKey(labelCookie, responderID),
		tokenAD:     append([]byte(labelToken), responderID[:]...),
	}
	c.mac1Pool.New = func() any { return hmac.New(sha256.New, c.mac1Key[:]) }
	c.mu.rand = rand
	if _, err := io.ReadFull(rand, c.mu.tokenKey[:]); err != nil {
		return nil, fmt.Errorf("new checker: token key: %w: %w", ErrRandom, err)
	}
	if _, err := io.ReadFull(rand, c.mu.cur[:]); err != nil {
		clear(c.mu.tokenKey[:])
		return nil, fmt.Errorf("new checker: cookie secret: %w: %w", ErrRandom, err)
	}
	c.mu.curOK = true
	c.mu.epoch = now
	return c, nil
}

// CheckMAC1 reports whether msg carries a valid mac1 for this responder.
// It takes no lock and no time: call it first on every Initiation and drop
// the message silently when it fails.
func (c *Checker) CheckMAC1(msg []byte) bool {
	if len(msg) < MinMessageLen {
		return false
	}
	n := len(msg)
	h := c.mac1Pool.Get().(hash.Hash)
	h.Reset()
	h.Write(msg[:n-2*MACLen])
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	c.mac1Pool.Put(h)
	return hmac.Equal(sum[:MACLen], msg[n-2*MACLen:n-MACLen])
}

// CheckMAC2 reports whether msg carries a valid mac2 made with a cookie for
// src from the current or the previous cookie secret. It does not check
// mac1 (call CheckMAC1 first). An all-zero mac2 (no cookie) is false.
func (c *Checker) CheckMAC2(msg []byte, src netip.AddrPort, now time.Time) bool {
	if len(msg) < MinMessageLen || !src.IsValid() {
		return false
	}
	n := len(msg)
	got := msg[n-MACLen:]
	if subtle.ConstantTimeCompare(got, make([]byte, MACLen)) == 1 {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rotateLocked(now) != nil {
		return false
	}
	ok := false
	for _, s := range []struct {
		secret *[32]byte
		valid  bool
	}{{&c.mu.cur, c.mu.curOK}, {&c.mu.prev, c.mu.prevOK}} {
		if !s.valid {
			continue
		}
		ck := cookieFor(s.secret, src)
		want := mac(ck[:], msg[:n-MACLen])
		clear(ck[:])
		if hmac.Equal(want[:], got) {
			ok = true
		}
	}
	return ok
}

// cookieFor computes HMAC-SHA-256(secret, IP (16 bytes, v4-mapped) || port)
// cut to MACLen bytes.
func cookieFor(secret *[32]byte, src netip.AddrPort) [MACLen]byte {
	var in [18]byte
	ip := src.Addr().Unmap().As16()
	copy(in[:16], ip[:])
	binary.BigEndian.PutUint16(in[16:], src.Port())
	return mac(secret[:], in[:])
}

// Reply builds the 64-byte CookieReply to the Initiation msg from src: the
// cookie for src under the current secret, sealed with msg's mac1 as
// associated data, under a fresh nonce from rand. receiverIndex is the
// initiation's sender_index. Reply does not check mac1; the caller does,
// and sends no reply for a message that fails it.
func (c *Checker) Reply(msg []byte, receiverIndex uint32, src netip.AddrPort, now time.Time) ([]byte, error) {
	if len(msg) < MinMessageLen {
		return nil, fmt.Errorf("reply: %d bytes: %w", len(msg), ErrMalformed)
	}
	if !src.IsValid() {
		return nil, fmt.Errorf("reply: source %v: %w", src, ErrInvalidArgument)
	}
	out := make([]byte, ReplyLen)
	nonce := out[8 : 8+chacha20poly1305.NonceSizeX]

	c.mu.Lock()
	if err := c.rotateLocked(now); err != nil {
		c.mu.Unlock()
		return nil, fmt.Errorf("reply: %w", err)
	}
	ck := cookieFor(&c.mu.cur, src)
	_, err := io.ReadFull(c.mu.rand, nonce)
	c.mu.Unlock()
	if err != nil {
		clear(ck[:])
		return nil, fmt.Errorf("reply: nonce: %w: %w", ErrRandom, err)
	}

	aead, err := chacha20poly1305.NewX(c.cookieKey[:])
	if err != nil {
		return nil, fmt.Errorf("reply: %w", err)
	}
	out[0], out[1] = ReplyType, Version
	binary.BigEndian.PutUint32(out[4:8], receiverIndex)
	n := len(msg)
	aead.Seal(out[8+chacha20poly1305.NonceSizeX:8+chacha20poly1305.NonceSizeX], nonce, ck[:], msg[n-2*MACLen:n-MACLen])
	clear(ck[:])
	return out, nil
}

// Rotate replaces the cookie secret now: the current one becomes the
// previous (still accepted by CheckMAC2), the previous one is wiped. Secrets
// also rotate lazily every RotationPeriod on any call that passes a time.
func (c *Checker) Rotate(now time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mu.closed {
		return fmt.Errorf("rotate: %w", ErrClosed)
	}
	if err := c.shiftLocked(1); err != nil {
		return fmt.Errorf("rotate: %w", err)
	}
	c.mu.epoch = now
	return nil
}

// rotateLocked brings the secrets up to date for now. Rotation periods are
// counted from the current secret's epoch, so a secret is accepted at most
// two periods after it was drawn however irregular the calls are. A time
// more than one period before the epoch (the clock went back) replaces
// both secrets. The caller must hold c.mu.
func (c *Checker) rotateLocked(now time.Time) error {
	if c.mu.closed {
		return ErrClosed
	}
	elapsed := now.Sub(c.mu.epoch)
	switch {
	case !c.mu.curOK || elapsed < -RotationPeriod:
		c.mu.epoch = now
		return c.shiftLocked(2)
	case elapsed < RotationPeriod:
		return nil
	}
	periods := elapsed / RotationPeriod
	c.mu.epoch = c.mu.epoch.Add(periods * RotationPeriod)
	return c.shiftLocked(min(int(periods), 2))
}

// shiftLocked rotates the secrets by n (1 or 2) periods, drawing a new
// current one. On a failed draw both slots are emptied: fail closed, and the
// next call tries again. The caller must hold c.mu.
func (c *Checker) shiftLocked(n int) error {
	if n >= 2 || !c.mu.curOK {
		clear(c.mu.prev[:])
		c.mu.prevOK = false
	} else {
		c.mu.prev, c.mu.prevOK = c.mu.cur, true
	}
	if _, err := io.ReadFull(c.mu.rand, c.mu.cur[:]); err != nil {
		clear(c.mu.cur[:])
		clear(c.mu.prev[:])
		c.mu.curOK, c.mu.prevOK = false, false
		return fmt.Errorf("cookie secret: %w: %w", ErrRandom, err)
	}
	c.mu.curOK = true
	return nil
}

// Close wipes the cookie secrets and the token key. Afterwards CheckMAC2 and
// CheckToken refuse everything and Reply, IssueToken and Rotate return
// ErrClosed. CheckMAC1 keeps working (its key is public).
func (c *Checker) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.mu.cur[:])
	clear(c.mu.prev[:])
	clear(c.mu.tokenKey[:])
	c.mu.curOK, c.mu.prevOK = false, false
	c.mu.closed = true
}
