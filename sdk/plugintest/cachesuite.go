package plugintest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/avonzt/avon/sdk/host"
)

// CacheSuite checks a host.Cache implementation: a and b are two views of
// one plugin's namespace, as two core replicas serve it (they may be the
// same view). Hosts run it against their cache (the core's over memcache
// and Redis, MemHost, and either through the gRPC shim).
func CacheSuite(t *testing.T, a, b host.Cache) {
	t.Helper()
	ctx := context.Background()
	pfx := fmt.Sprintf("suite-%d/", time.Now().UnixNano())
	k := func(s string) string { return pfx + s }

	t.Run("PutGetConsume", func(t *testing.T) {
		if ok, err := a.Put(ctx, k("n1"), []byte("v1"), host.CachePutOptions{TTL: time.Hour}); err != nil || !ok {
			t.Fatalf("Put = %v, %v", ok, err)
		}
		v, left, err := b.Get(ctx, k("n1"))
		if err != nil || string(v) != "v1" || left <= 0 || left > time.Hour {
			t.Fatalf("Get = %q, %v, %v", v, left, err)
		}
		if v, err := b.Consume(ctx, k("n1")); err != nil || string(v) != "v1" {
			t.Fatalf("Consume = %q, %v", v, err)
		}
		if _, err := a.Consume(ctx, k("n1")); !errors.Is(err, host.ErrCacheMiss) {
			t.Fatalf("second Consume = %v, want ErrCacheMiss", err)
		}
		if _, _, err := a.Get(ctx, k("n1")); !errors.Is(err, host.ErrCacheMiss) {
			t.Fatalf("Get after Consume = %v, want ErrCacheMiss", err)
		}
		// An empty value is a value.
		if _, err := a.Put(ctx, k("empty"), nil, host.CachePutOptions{TTL: time.Hour}); err != nil {
			t.Fatal(err)
		}
		if v, err := b.Consume(ctx, k("empty")); err != nil || v == nil || len(v) != 0 {
			t.Fatalf("Consume(empty) = %q (nil %v), %v", v, v == nil, err)
		}
	})
	t.Run("IfAbsent", func(t *testing.T) {
		if ok, err := a.Put(ctx, k("once"), []byte("first"), host.CachePutOptions{TTL: time.Hour, IfAbsent: true}); err != nil || !ok {
			t.Fatalf("Put IfAbsent (absent) = %v, %v", ok, err)
		}
		if ok, err := b.Put(ctx, k("once"), []byte("second"), host.CachePutOptions{TTL: time.Hour, IfAbsent: true}); err != nil || ok {
			t.Fatalf("Put IfAbsent (present) = %v, %v; want not stored", ok, err)
		}
		if v, _, err := a.Get(ctx, k("once")); err != nil || string(v) != "first" {
			t.Fatalf("Get = %q, %v; want first", v, err)
		}
		// Without IfAbsent, a put replaces.
		if ok, err := b.Put(ctx, k("once"), []byte("third"), host.CachePutOptions{TTL: time.Hour}); err != nil || !ok {
			t.Fatalf("Put = %v, %v", ok, err)
		}
		if v, _, err := a.Get(ctx, k("once")); err != nil || string(v) != "third" {
			t.Fatalf("Get = %q, %v; want third", v, err)
		}
		if err := a.Delete(ctx, k("once")); err != nil {
			t.Fatal(err)
		}
		if err := a.Delete(ctx, k("never")); err != nil {
			t.Fatalf("Delete(absent) = %v", err)
		}
		if _, _, err := b.Get(ctx, k("once")); !errors.Is(err, host.ErrCacheMiss) {
			t.Fatalf("Get after Delete = %v, want ErrCacheMiss", err)
		}
	})
	t.Run("Expiry", func(t *testing.T) {
		if _, err := a.Put(ctx, k("short"), []byte("v"), host.CachePutOptions{TTL: 50 * time.Millisecond}); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(3 * time.Second)
		for {
			_, _, err := b.Get(ctx, k("short"))
			if errors.Is(err, host.ErrCacheMiss) {
				break
			}
			if err != nil || time.Now().After(deadline) {
				t.Fatalf("a 50ms value still there after 3s (%v)", err)
			}
			time.Sleep(10 * time.Millisecond)
		}
		if _, err := b.Consume(ctx, k("short")); !errors.Is(err, host.ErrCacheMiss) {
			t.Fatalf("Consume of an expired value = %v", err)
		}
	})
	t.Run("ConcurrentConsumeOneWins", func(t *testing.T) {
		for round := range 5 {
			key := k(fmt.Sprintf("race-%d", round))
			if _, err := a.Put(ctx, key, []byte("x"), host.CachePutOptions{TTL: time.Hour}); err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			wins, others := 0, []error(nil)
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i := range 16 {
				c := a
				if i%2 == 1 {
					c = b
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					_, err := c.Consume(ctx, key)
					mu.Lock()
					defer mu.Unlock()
					switch {
					case err == nil:
						wins++
					case !errors.Is(err, host.ErrCacheMiss):
						others = append(others, err)
					}
				}()
			}
			close(start)
			wg.Wait()
			if wins != 1 || len(others) > 0 {
				t.Fatalf("round %d: %d of 16 concurrent Consumes won (errors %v); want 1", round, wins, others)
			}
		}
	})
	t.Run("ConcurrentIfAbsentOneStores", func(t *testing.T) {
		var mu sync.Mutex
		stored := 0
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range 16 {
			c := a
			if i%2 == 1 {
				c = b
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				ok, err := c.Put(ctx, k("lock"), []byte{byte(i)}, host.CachePutOptions{TTL: time.Hour, IfAbsent: true})
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					t.Errorf("Put IfAbsent: %v", err)
				}
				if ok {
					stored++
				}
			}()
		}
		close(start)
		wg.Wait()
		if stored != 1 {
			t.Fatalf("%d of 16 concurrent IfAbsent puts stored; want 1", stored)
		}
	})
	t.Run("Count", func(t *testing.T) {
		for i := range 3 {
			c := a
			if i == 1 {
				c = b
			}
			d, err := c.Count(ctx, k("rl"), 3, time.Hour)
			if err != nil || !d.Allowed || d.Remaining != 2-i {
				t.Fatalf("Count %d = %+v, %v", i, d, err)
			}
		}
		d, err := a.Count(ctx, k("rl"), 3, time.Hour)
		if err != nil || d.Allowed || d.RetryAfter <= 0 || d.RetryAfter > time.Hour {
			t.Fatalf("Count over the limit = %+v, %v; want denied with a RetryAfter", d, err)
		}
		// Counters and values are separate.
		if _, _, err := a.Get(ctx, k("rl")); !errors.Is(err, host.ErrCacheMiss) {
			t.Fatalf("a counter is visible as a value: %v", err)
		}
	})
	t.Run("InvalidArguments", func(t *testing.T) {
		if _, err := a.Put(ctx, k("keep"), []byte("keep"), host.CachePutOptions{TTL: time.Hour}); err != nil {
			t.Fatal(err)
		}
		long := strings.Repeat("k", host.MaxCacheKeySize+1)
		var errs []error
		for _, key := range []string{"", long, "a\x00b", "a\nb", "\xff"} {
			_, err := a.Put(ctx, key, nil, host.CachePutOptions{TTL: time.Hour})
			errs = append(errs, err)
			_, _, err = a.Get(ctx, key)
			errs = append(errs, err)
			_, err = a.Consume(ctx, key)
			errs = append(errs, err, a.Delete(ctx, key))
			_, err = a.Count(ctx, key, 1, time.Hour)
			errs = append(errs, err)
		}
		for _, ttl := range []time.Duration{0, -time.Second, host.MaxCacheTTL + time.Millisecond} {
			_, err := a.Put(ctx, k("keep"), []byte("changed"), host.CachePutOptions{TTL: ttl})
			errs = append(errs, err)
			_, err = a.Count(ctx, k("rl2"), 1, ttl)
			errs = append(errs, err)
		}
		_, err := a.Put(ctx, k("keep"), make([]byte, host.MaxCacheValueSize+1), host.CachePutOptions{TTL: time.Hour})
		errs = append(errs, err)
		for _, l := range []int{0, -1, host.MaxCacheLimit + 1} {
			_, err := a.Count(ctx, k("rl2"), l, time.Hour)
			errs = append(errs, err)
		}
		for i, err := range errs {
			if !errors.Is(err, host.ErrCacheInvalid) {
				t.Errorf("refused call %d: %v; want ErrCacheInvalid", i, err)
			}
		}
		if v, _, err := b.Get(ctx, k("keep")); err != nil || string(v) != "keep" {
			t.Fatalf("a refused Put changed the value: %q, %v", v, err)
		}
		if d, err := b.Count(ctx, k("rl2"), 1, time.Hour); err != nil || !d.Allowed {
			t.Fatalf("a refused Count was counted: %+v, %v", d, err)
		}
	})
}
