package server

import (
	"context"
	"crypto/rand"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/avonzt/avon/sdk/host"
	"github.com/avonzt/avon/sdk/plugintest"
)

// countingCache counts the calls to a cache and fails them all with fail
// when set.
type countingCache struct {
	host.Cache
	calls atomic.Int64
	fail  atomic.Bool
}

var errCacheDown = errors.New("cache unreachable")

func (c *countingCache) Put(ctx context.Context, key string, value []byte, opts host.CachePutOptions) (bool, error) {
	c.calls.Add(1)
	if c.fail.Load() {
		return false, errCacheDown
	}
	return c.Cache.Put(ctx, key, value, opts)
}

func (c *countingCache) Consume(ctx context.Context, key string) ([]byte, error) {
	c.calls.Add(1)
	if c.fail.Load() {
		return nil, errCacheDown
	}
	return c.Cache.Consume(ctx, key)
}

// nonceServer is a Server with only what nonces need.
func nonceServer(h *plugintest.MemHost, cache host.Cache) *Server {
	return &Server{cfg: Config{NonceTTL: time.Hour}, deps: Deps{Storage: h.Storage(), Cache: cache, Rand: rand.Reader}}
}

// TestNonces: a nonce is good once, on any replica sharing the cache; one
// the cache does not hold (never issued, used, or lost with the cache) is
// refused; what cannot be a nonce costs no cache call; a failing cache
// fails closed.
func TestNonces(t *testing.T) {
	ctx := context.Background()
	h := plugintest.NewHost()
	cache := &countingCache{Cache: h.Cache()}
	s := nonceServer(h, cache)

	n, err := s.newNonce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.useNonce(ctx, n); err != nil {
		t.Fatalf("first use: %v", err)
	}
	if err := s.useNonce(ctx, n); !errors.Is(err, errNonceUnknown) {
		t.Fatalf("second use: %v, want errNonceUnknown", err)
	}

	// A replica sharing the cache accepts it, once.
	other := nonceServer(h, cache)
	n2, err := other.newNonce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.useNonce(ctx, n2); err != nil {
		t.Fatalf("nonce of another replica: %v", err)
	}
	if err := other.useNonce(ctx, n2); !errors.Is(err, errNonceUnknown) {
		t.Fatalf("reuse on the replica that made it: %v", err)
	}

	// A cache that lost its entries (a restart, a flush): the nonces it
	// held are refused, not accepted again.
	n3, err := s.newNonce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	restarted := nonceServer(h, plugintest.NewHost().Cache())
	if err := restarted.useNonce(ctx, n3); !errors.Is(err, errNonceUnknown) {
		t.Fatalf("nonce after the cache was lost: %v, want errNonceUnknown", err)
	}

	// Not nonces: refused without a cache call.
	before := cache.calls.Load()
	for _, bad := range []string{"", strings.Repeat("A", 65), "a/b", "a b", "n\x00", "é"} {
		if err := s.useNonce(ctx, bad); !errors.Is(err, errNonceMalformed) {
			t.Fatalf("%q: %v, want errNonceMalformed", bad, err)
		}
	}
	if d := cache.calls.Load() - before; d != 0 {
		t.Fatalf("%d cache calls for strings that cannot be nonces", d)
	}
	if err := s.useNonce(ctx, "bm90LWZyb20tdGhpcy1zZXJ2ZXI"); !errors.Is(err, errNonceUnknown) {
		t.Fatalf("a nonce never issued: %v", err)
	}

	// The cache fails: no nonce is issued, none is accepted, and the one
	// that was good is good again after the outage.
	fresh, err := s.newNonce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cache.fail.Store(true)
	if _, err := s.newNonce(ctx); !errors.Is(err, errCacheDown) {
		t.Fatalf("issue with the cache down: %v", err)
	}
	if err := s.useNonce(ctx, fresh); !errors.Is(err, errCacheDown) || errors.Is(err, errNonceUnknown) {
		t.Fatalf("use with the cache down: %v, want the cache's error", err)
	}
	cache.fail.Store(false)
	if err := s.useNonce(ctx, fresh); err != nil {
		t.Fatalf("after the outage: %v", err)
	}
}

// FuzzCheckNonce: no string panics the nonce check, and what passes it is
// a usable cache key.
func FuzzCheckNonce(f *testing.F) {
	for _, s := range []string{"", "bm90LWZyb20tdGhpcy1zZXJ2ZXI", strings.Repeat("A", 64), "a/b", "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, n string) {
		if checkNonce(n) == nil {
			if err := host.CheckCacheKey(nonceKey(n)); err != nil || len(n) > 64 {
				t.Fatalf("%q passed but is no nonce key: %v", n, err)
			}
		}
	})
}
