package server

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"strings"
	"sync"
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
	fail  error
}

func (c *countingCache) Put(ctx context.Context, key string, value []byte, opts host.CachePutOptions) (bool, error) {
	c.calls.Add(1)
	if c.fail != nil {
		return false, c.fail
	}
	return c.Cache.Put(ctx, key, value, opts)
}

// nonceServer is a Server with only what nonces need, its clock at *now.
func nonceServer(h *plugintest.MemHost, cache host.Cache, now *time.Time) *Server {
	return &Server{cfg: Config{NonceTTL: time.Hour}, deps: Deps{Storage: h.Storage(), Cache: cache, Rand: rand.Reader},
		nonces: nonces{now: func() time.Time { return *now }}}
}

func TestNonces(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	h := plugintest.NewHost()
	cache := &countingCache{Cache: h.Cache()}
	s := nonceServer(h, cache, &now)

	n, err := s.newNonce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(n) != 50 || cache.calls.Load() != 0 {
		t.Fatalf("nonce %q (%d chars), %d cache calls to make it", n, len(n), cache.calls.Load())
	}
	if err := s.useNonce(ctx, n); err != nil {
		t.Fatalf("first use: %v", err)
	}
	if err := s.useNonce(ctx, n); !errors.Is(err, errNonceUsed) {
		t.Fatalf("second use: %v, want errNonceUsed", err)
	}

	// A replica on the same storage and cache accepts it, once.
	other := nonceServer(h, cache, &now)
	n2, err := other.newNonce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.useNonce(ctx, n2); err != nil {
		t.Fatalf("nonce of another replica: %v", err)
	}
	if err := other.useNonce(ctx, n2); !errors.Is(err, errNonceUsed) {
		t.Fatalf("reuse on the replica that made it: %v", err)
	}

	// Every byte changed, and every truncation, is refused without a
	// cache call.
	good, err := s.newNonce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := base64.RawURLEncoding.DecodeString(good)
	before := cache.calls.Load()
	for i := range raw {
		b := append([]byte(nil), raw...)
		b[i] ^= 0x40
		if err := s.useNonce(ctx, base64.RawURLEncoding.EncodeToString(b)); !errors.Is(err, errNonceMalformed) {
			t.Fatalf("byte %d flipped: %v", i, err)
		}
	}
	for i := range len(good) {
		if err := s.useNonce(ctx, good[:i]); !errors.Is(err, errNonceMalformed) {
			t.Fatalf("cut to %d: %v", i, err)
		}
	}
	for _, bad := range []string{good + "A", strings.ToUpper(good), good[:49] + "=", "bm90LWZyb20tdGhpcy1zZXJ2ZXI"} {
		if err := s.useNonce(ctx, bad); !errors.Is(err, errNonceMalformed) {
			t.Fatalf("%q: %v", bad, err)
		}
	}
	if d := cache.calls.Load() - before; d != 0 {
		t.Fatalf("%d cache calls for nonces that are not ours", d)
	}
	// The untouched one is still good.
	if err := s.useNonce(ctx, good); err != nil {
		t.Fatal(err)
	}

	// Another server's key: refused.
	foreign := nonceServer(plugintest.NewHost(), cache, &now)
	fn, err := foreign.newNonce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.useNonce(ctx, fn); !errors.Is(err, errNonceMalformed) {
		t.Fatalf("foreign nonce: %v", err)
	}

	// Expiry, and a clock stepped back far enough that a nonce is good for
	// longer than any nonce is.
	late, err := s.newNonce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Hour)
	if err := s.useNonce(ctx, late); !errors.Is(err, errNonceExpired) {
		t.Fatalf("expired: %v", err)
	}
	ahead, err := s.newNonce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	now = now.Add(-2 * time.Minute)
	if err := s.useNonce(ctx, ahead); !errors.Is(err, errNonceMalformed) {
		t.Fatalf("nonce good for longer than the TTL: %v", err)
	}
	now = now.Add(2 * time.Minute)
	if err := s.useNonce(ctx, ahead); err != nil {
		t.Fatal(err)
	}

	// A cache that fails: the nonce is not accepted, and not used up.
	fresh, err := s.newNonce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cache.fail = errors.New("cache unreachable")
	if err := s.useNonce(ctx, fresh); err == nil || errors.Is(err, errNonceUsed) || errors.Is(err, errNonceMalformed) {
		t.Fatalf("cache down: %v, want the cache's error", err)
	}
	cache.fail = nil
	if err := s.useNonce(ctx, fresh); err != nil {
		t.Fatalf("after the outage: %v", err)
	}
}

// TestNonceKeyOnce: replicas starting together on one storage agree on
// one nonce key.
func TestNonceKeyOnce(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	h := plugintest.NewHost()
	const n = 8
	keys := make([][]byte, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k, err := nonceServer(h, h.Cache(), &now).nonceKey(ctx)
			if err != nil {
				t.Error(err)
			}
			keys[i] = k
		}()
	}
	wg.Wait()
	for i := 1; i < n; i++ {
		if string(keys[i]) != string(keys[0]) || len(keys[i]) != nonceKeyLen {
			t.Fatalf("replica %d has another nonce key", i)
		}
	}
	// A stored key of the wrong size is refused, never used.
	h2 := plugintest.NewHost()
	if _, err := h2.Storage().Put(ctx, nonceKeyName, []byte("short"), host.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := nonceServer(h2, h2.Cache(), &now).newNonce(ctx); err == nil {
		t.Fatal("a 5-byte nonce key was used")
	}
}

// FuzzNonce: no string panics the nonce check, and none but the nonces
// the server made is accepted.
func FuzzNonce(f *testing.F) {
	ctx := context.Background()
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	h := plugintest.NewHost()
	s := nonceServer(h, h.Cache(), &now)
	made := map[string]bool{}
	for range 3 {
		n, err := s.newNonce(ctx)
		if err != nil {
			f.Fatal(err)
		}
		made[n] = true
		f.Add(n)
	}
	f.Add("")
	f.Add(strings.Repeat("A", 50))
	f.Add("bm90LWZyb20tdGhpcy1zZXJ2ZXI")
	f.Fuzz(func(t *testing.T, n string) {
		_, err := s.parseNonce(ctx, n)
		if err == nil && !made[n] {
			t.Fatalf("accepted %q, which the server did not make", n)
		}
	})
}
