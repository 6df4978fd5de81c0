package server

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/avonzt/avon/plugins/acme/jose"
	"github.com/avonzt/avon/sdk/host"
)

// Nonces (RFC 8555 6.5) are made without a round trip to the core and used
// up with one.
//
// A nonce is base64url of
//
//	version (1 byte, 1) || expiry (8 bytes, Unix seconds, big endian) ||
//	random (12 bytes) || tag (16 bytes)
//
// where tag is HMAC-SHA256 under the nonce key of
// "AVON-ACME-NONCE-v1" || 0x00 || the 21 bytes before it, cut to 16
// bytes. The nonce key is 32 random bytes kept in the plugin's storage
// (nonceKeyName), made by the first replica that needs it and read by the
// others, so every replica accepts every replica's nonces.
//
// A nonce is good when its tag verifies, it has not expired and it was
// not used before: using it puts "nonce-used/<nonce>" into the cache only
// if absent (atomic on every replica; Redis when configured) for as long
// as the nonce would still be good. A nonce the server did not make, or
// made under another key, is refused without asking the cache.
//
// So issuing a nonce costs nothing but the host RNG, and a request's
// nonce is used up by one cache call, started as soon as the request
// arrives (readAhead) together with the request's reads.

const (
	nonceVersion  = 1
	nonceRandLen  = 12
	nonceTagLen   = 16
	nonceBodyLen  = 1 + 8 + nonceRandLen
	nonceLen      = nonceBodyLen + nonceTagLen
	nonceLabel    = "AVON-ACME-NONCE-v1\x00"
	nonceKeyName  = "nonce-key"
	nonceKeyLen   = 32
	nonceUsedPfx  = "nonce-used/"
	nonceUsedTail = time.Minute // kept in the used set past expiry, for clock steps
)

// Errors of a nonce that is not good; each is a badNonce problem.
var (
	errNonceMalformed = errors.New("not a nonce of this server")
	errNonceExpired   = errors.New("expired")
	errNonceUsed      = errors.New("already used")
)

// nonces makes and checks nonces under the storage's nonce key.
type nonces struct {
	mu  sync.Mutex
	key []byte // nil until loaded
	now func() time.Time
}

// nonceKey returns the nonce key, reading it from storage (or making it)
// the first time.
func (s *Server) nonceKey(ctx context.Context) ([]byte, error) {
	n := &s.nonces
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.key != nil {
		return n.key, nil
	}
	for range 3 {
		e, err := s.deps.Storage.Get(ctx, nonceKeyName)
		switch {
		case err == nil:
			if len(e.Value) != nonceKeyLen {
				return nil, fmt.Errorf("stored nonce key has %d bytes, want %d", len(e.Value), nonceKeyLen)
			}
			n.key = e.Value
			return n.key, nil
		case !isNotFound(err):
			return nil, fmt.Errorf("read nonce key: %w", err)
		}
		k := make([]byte, nonceKeyLen)
		if _, err := io.ReadFull(s.deps.Rand, k); err != nil {
			return nil, fmt.Errorf("random: %w", err)
		}
		// Create only: of replicas making it at once, one wins and the
		// others read the winner's.
		_, err = s.deps.Storage.Put(ctx, nonceKeyName, k, host.PutOptions{Check: true})
		switch {
		case err == nil:
			n.key = k
			return n.key, nil
		case !isConflict(err):
			return nil, fmt.Errorf("store nonce key: %w", err)
		}
	}
	return nil, errors.New("nonce key: storage keeps changing")
}

func nonceTag(key, body []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(nonceLabel))
	m.Write(body)
	return m.Sum(nil)[:nonceTagLen]
}

// newNonce issues a nonce good once until NonceTTL from now.
func (s *Server) newNonce(ctx context.Context) (string, error) {
	key, err := s.nonceKey(ctx)
	if err != nil {
		return "", err
	}
	var b [nonceLen]byte
	b[0] = nonceVersion
	binary.BigEndian.PutUint64(b[1:9], uint64(s.nonces.now().Add(s.cfg.NonceTTL).Unix()))
	if _, err := io.ReadFull(s.deps.Rand, b[9:nonceBodyLen]); err != nil {
		return "", fmt.Errorf("random: %w", err)
	}
	copy(b[nonceBodyLen:], nonceTag(key, b[:nonceBodyLen]))
	return jose.Encode(b[:]), nil
}

// parseNonce checks a nonce's form, tag and expiry and returns how long
// it is still good. It needs no cache call.
func (s *Server) parseNonce(ctx context.Context, n string) (time.Duration, error) {
	if len(n) != (nonceLen*8+5)/6 {
		return 0, errNonceMalformed
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(n)
	if err != nil || len(b) != nonceLen || b[0] != nonceVersion {
		return 0, errNonceMalformed
	}
	key, err := s.nonceKey(ctx)
	if err != nil {
		return 0, err
	}
	if !hmac.Equal(b[nonceBodyLen:], nonceTag(key, b[:nonceBodyLen])) {
		return 0, errNonceMalformed
	}
	exp := binary.BigEndian.Uint64(b[1:9])
	now := s.nonces.now()
	if exp > uint64(now.Add(s.cfg.NonceTTL).Unix())+60 {
		// Made under this key but good for longer than any nonce is:
		// the key leaked, or the clock was far ahead. Refused.
		return 0, errNonceMalformed
	}
	left := time.Unix(int64(exp), 0).Sub(now)
	if left <= 0 {
		return 0, errNonceExpired
	}
	return left, nil
}

// useNonce checks n and uses it up: nil once for each nonce this server
// made that is still good, on whichever replica.
func (s *Server) useNonce(ctx context.Context, n string) error {
	left, err := s.parseNonce(ctx, n)
	if err != nil {
		return err
	}
	use := nonceUse(n, left)
	host.Gather(ctx, s.deps.Storage, s.deps.Cache, use)
	return nonceVerdict(use)
}

// nonceUse is the cache call that uses up a nonce good for left more:
// it enters the used set if absent, for as long as it would be good.
func nonceUse(n string, left time.Duration) *host.CachePutCall {
	ttl := min(left+nonceUsedTail, host.MaxCacheTTL)
	return &host.CachePutCall{Key: nonceUsedPfx + n, Opts: host.CachePutOptions{TTL: ttl, IfAbsent: true}}
}

// nonceVerdict is the outcome of a nonceUse call.
func nonceVerdict(use *host.CachePutCall) error {
	if use.Err != nil {
		return fmt.Errorf("nonce check: %w", use.Err)
	}
	if !use.Stored {
		return errNonceUsed
	}
	return nil
}
