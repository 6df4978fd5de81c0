package server

import (
	"context"
	"errors"
	"fmt"

	"github.com/avonzt/avon/sdk/host"
)

// Nonces (RFC 8555 6.5) live in the host cache: a nonce is 128 bits from
// the host RNG, stored under "nonce/<nonce>" for NonceTTL, and used up by
// an atomic Consume, so it is good once on whichever replica (Redis when
// configured). A cache that loses entries (a restart, a flush) makes the
// nonces it held unknown: they are refused, never accepted twice.
//
// Both cache calls ride on the request's one round trip for its reads
// (readAhead's host.Gather): the use of the request's nonce, and the
// storing of the fresh nonce its answer carries. So a nonce is used up as
// soon as the request arrives, whatever the request's fate; its verdict
// is taken where Boulder's order puts the nonce check.

// Errors of a nonce that is not good; each is a badNonce problem.
var (
	errNonceMalformed = errors.New("not a nonce of this server")
	errNonceUnknown   = errors.New("unknown, expired or already used")
)

// nonceKey is the cache key of a nonce.
func nonceKey(n string) string { return "nonce/" + n }

// checkNonce refuses, without a cache call, what cannot be a nonce.
func checkNonce(n string) error {
	if n == "" || len(n) > 64 || !validID(n) || host.CheckCacheKey(nonceKey(n)) != nil {
		return errNonceMalformed
	}
	return nil
}

// freshNonce draws a nonce and returns the cache call that stores it.
func (s *Server) freshNonce() (string, *host.CachePutCall, error) {
	n, err := s.randomID()
	if err != nil {
		return "", nil, err
	}
	return n, &host.CachePutCall{Key: nonceKey(n), Opts: host.CachePutOptions{TTL: s.cfg.NonceTTL}}, nil
}

// newNonce issues a nonce good once for NonceTTL.
func (s *Server) newNonce(ctx context.Context) (string, error) {
	n, put, err := s.freshNonce()
	if err != nil {
		return "", err
	}
	host.Gather(ctx, s.deps.Storage, s.deps.Cache, put)
	if put.Err != nil {
		return "", fmt.Errorf("store nonce: %w", put.Err)
	}
	return n, nil
}

// nonceUse is the cache call that uses up n.
func nonceUse(n string) *host.CacheConsumeCall { return &host.CacheConsumeCall{Key: nonceKey(n)} }

// nonceVerdict is the outcome of a nonceUse call: nil once for each nonce
// this server issued that is still good.
func nonceVerdict(use *host.CacheConsumeCall) error {
	switch {
	case use.Err == nil:
		return nil
	case errors.Is(use.Err, host.ErrCacheMiss):
		return errNonceUnknown
	}
	return fmt.Errorf("nonce check: %w", use.Err)
}

// useNonce checks n and uses it up.
func (s *Server) useNonce(ctx context.Context, n string) error {
	if err := checkNonce(n); err != nil {
		return err
	}
	use := nonceUse(n)
	host.Gather(ctx, s.deps.Storage, s.deps.Cache, use)
	return nonceVerdict(use)
}
