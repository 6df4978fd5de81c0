package cookie

import (
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"io"
	"net/netip"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
)

const (
	// TokenLen is the exact size of an address token (nonce, sealed IP and
	// expiry, tag); the protocol allows up to 96.
	TokenLen = chacha20poly1305.NonceSizeX + tokenPlain + chacha20poly1305.Overhead
	// TokenLifetime is how long an address token is valid after issue.
	TokenLifetime = 24 * time.Hour

	tokenPlain = 16 + 8
)

// IssueToken seals an address token for ip, valid until now+TokenLifetime
// (whole seconds). The gateway sends it inside an established tunnel.
func (c *Checker) IssueToken(ip netip.Addr, now time.Time) ([]byte, error) {
	if !ip.IsValid() {
		return nil, fmt.Errorf("issue token: address %v: %w", ip, ErrInvalidArgument)
	}
	var plain [tokenPlain]byte
	a := ip.Unmap().As16()
	copy(plain[:16], a[:])
	binary.BigEndian.PutUint64(plain[16:], uint64(now.Add(TokenLifetime).Unix()))

	out := make([]byte, chacha20poly1305.NonceSizeX, TokenLen)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mu.closed {
		return nil, fmt.Errorf("issue token: %w", ErrClosed)
	}
	if _, err := io.ReadFull(c.mu.rand, out); err != nil {
		return nil, fmt.Errorf("issue token: nonce: %w: %w", ErrRandom, err)
	}
	aead, err := chacha20poly1305.NewX(c.mu.tokenKey[:])
	if err != nil {
		return nil, fmt.Errorf("issue token: %w", err)
	}
	return aead.Seal(out, out, plain[:], c.tokenAD), nil
}

// CheckToken checks that tok is an address token this checker issued to ip
// and that it has not expired at now. Errors: ErrTokenInvalid (wrong size,
// forged, tampered, from another gateway or before a restart),
// ErrTokenAddress (another IP; the port does not matter), ErrTokenExpired,
// ErrClosed.
func (c *Checker) CheckToken(tok []byte, ip netip.Addr, now time.Time) error {
	if len(tok) != TokenLen {
		return fmt.Errorf("check token: %d bytes: %w", len(tok), ErrTokenInvalid)
	}
	var plain [tokenPlain]byte
	c.mu.Lock()
	if c.mu.closed {
		c.mu.Unlock()
		return fmt.Errorf("check token: %w", ErrClosed)
	}
	aead, err := chacha20poly1305.NewX(c.mu.tokenKey[:])
	c.mu.Unlock()
	if err != nil {
		return fmt.Errorf("check token: %w", err)
	}
	nonce := tok[:chacha20poly1305.NonceSizeX]
	if _, err := aead.Open(plain[:0], nonce, tok[chacha20poly1305.NonceSizeX:], c.tokenAD); err != nil {
		return fmt.Errorf("check token: %w", ErrTokenInvalid)
	}
	want := ip.Unmap().As16()
	if !ip.IsValid() || subtle.ConstantTimeCompare(plain[:16], want[:]) != 1 {
		return fmt.Errorf("check token: %w", ErrTokenAddress)
	}
	if expiry := int64(binary.BigEndian.Uint64(plain[16:])); now.Unix() >= expiry {
		return fmt.Errorf("check token: expired at %d: %w", expiry, ErrTokenExpired)
	}
	return nil
}
