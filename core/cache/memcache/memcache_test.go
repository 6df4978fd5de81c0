package memcache_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/avonzt/avon/core/cache"
	"github.com/avonzt/avon/core/cache/cachetest"
	"github.com/avonzt/avon/core/cache/memcache"
)

func TestConformance(t *testing.T) {
	cachetest.Run(t, func(t *testing.T) (cache.Cache, cache.Cache) {
		b := memcache.NewBackend(memcache.Options{})
		return b.Open(), b.Open()
	})
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func newClock() *fakeClock { return &fakeClock{now: time.Unix(1_700_000_000, 0)} }

var bg = context.Background()

func TestTTLWithClock(t *testing.T) {
	clk := newClock()
	c := memcache.New(memcache.Options{Now: clk.Now})
	defer c.Close()

	if err := c.PutSession(bg, "s", []byte("v"), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	clk.Advance(4 * time.Second)
	if _, left, err := c.GetSession(bg, "s"); err != nil || left != 6*time.Second {
		t.Fatalf("GetSession after 4s = %v, %v; want 6s left", left, err)
	}
	if err := c.TouchSession(bg, "s", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	clk.Advance(9999 * time.Millisecond)
	if _, left, err := c.GetSession(bg, "s"); err != nil || left != time.Millisecond {
		t.Fatalf("GetSession 1ms before expiry = %v, %v", left, err)
	}
	clk.Advance(time.Millisecond)
	if _, _, err := c.GetSession(bg, "s"); !errors.Is(err, cache.ErrNotFound) {
		t.Fatalf("GetSession at expiry = %v, want ErrNotFound", err)
	}

	// Sub-millisecond parts round up.
	if err := c.PutSession(bg, "r", nil, 1500*time.Microsecond); err != nil {
		t.Fatal(err)
	}
	if _, left, err := c.GetSession(bg, "r"); err != nil || left != 2*time.Millisecond {
		t.Fatalf("1.5ms TTL: %v left, %v; want 2ms", left, err)
	}

	if first, _ := c.MarkUsed(bg, "jti", "x", time.Minute); !first {
		t.Fatal("MarkUsed: not first")
	}
	clk.Advance(time.Minute - time.Millisecond)
	if first, _ := c.MarkUsed(bg, "jti", "x", time.Minute); first {
		t.Fatal("MarkUsed before expiry: first")
	}
	clk.Advance(time.Millisecond)
	if first, _ := c.MarkUsed(bg, "jti", "x", time.Minute); !first {
		t.Fatal("MarkUsed at expiry: not first")
	}

	if err := c.PutToken(bg, "t", "x", []byte("v"), time.Second); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Second)
	if _, err := c.ConsumeToken(bg, "t", "x"); !errors.Is(err, cache.ErrNotFound) {
		t.Fatalf("ConsumeToken at expiry = %v", err)
	}
}

func TestAllowWithClock(t *testing.T) {
	clk := newClock()
	c := memcache.New(memcache.Options{Now: clk.Now})
	defer c.Close()
	for i := range 3 {
		d, err := c.Allow(bg, "k", 3, time.Minute)
		if err != nil || !d.Allowed || d.Remaining != 2-i {
			t.Fatalf("call %d: %+v, %v", i, d, err)
		}
		clk.Advance(10 * time.Second)
	}
	d, err := c.Allow(bg, "k", 3, time.Minute)
	if err != nil || d.Allowed || d.RetryAfter != 30*time.Second {
		t.Fatalf("denied call: %+v, %v; want RetryAfter 30s", d, err)
	}
	// A longer window passed later does not stretch the running one.
	clk.Advance(29 * time.Second)
	if d, _ := c.Allow(bg, "k", 3, time.Hour); d.Allowed || d.RetryAfter != time.Second {
		t.Fatalf("1s before reset: %+v", d)
	}
	clk.Advance(time.Second)
	if d, _ := c.Allow(bg, "k", 3, time.Minute); !d.Allowed || d.Remaining != 2 {
		t.Fatalf("after reset: %+v", d)
	}
}

func TestSweepBoundsMemory(t *testing.T) {
	clk := newClock()
	b := memcache.NewBackend(memcache.Options{Now: clk.Now, SweepInterval: time.Minute, MaxEntries: 100})
	c := b.Open()
	defer c.Close()
	for i := range 100 {
		if first, err := c.MarkUsed(bg, "jti", fmt.Sprint(i), time.Second); err != nil || !first {
			t.Fatalf("MarkUsed %d: %v, %v", i, first, err)
		}
	}
	// Full of live entries: the next write is refused, fail-closed for
	// MarkUsed.
	first, err := c.MarkUsed(bg, "jti", "one-more", time.Second)
	if first || !errors.Is(err, cache.ErrUnavailable) {
		t.Fatalf("MarkUsed on a full cache = %v, %v; want false, ErrUnavailable", first, err)
	}
	// Once they expire, a write sweeps them.
	clk.Advance(time.Second)
	if first, err := c.MarkUsed(bg, "jti", "one-more", time.Second); err != nil || !first {
		t.Fatalf("MarkUsed after expiry = %v, %v", first, err)
	}
	if n := b.Len(); n != 1 {
		t.Fatalf("%d entries after the sweep, want 1", n)
	}
	// The periodic sweep runs on writes even when not full.
	for i := range 50 {
		if _, err := c.MarkUsed(bg, "jti", fmt.Sprint("p", i), time.Second); err != nil {
			t.Fatal(err)
		}
	}
	clk.Advance(time.Minute)
	if err := c.PutSession(bg, "s", nil, time.Hour); err != nil {
		t.Fatal(err)
	}
	if n := b.Len(); n != 1 {
		t.Fatalf("%d entries after the periodic sweep, want 1", n)
	}
}

func TestMaxBytes(t *testing.T) {
	c := memcache.New(memcache.Options{MaxBytes: 3<<20 + 64})
	defer c.Close()
	v := make([]byte, cache.MaxValueSize)
	for i := range 2 {
		if err := c.PutSession(bg, fmt.Sprint(i), v, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.PutSession(bg, "2", v, time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := c.PutSession(bg, "3", v, time.Hour); !errors.Is(err, cache.ErrUnavailable) {
		t.Fatalf("PutSession beyond MaxBytes = %v, want ErrUnavailable", err)
	}
	// Replacing a value within the limit still works.
	if err := c.PutSession(bg, "2", v, time.Hour); err != nil {
		t.Fatalf("overwrite at the limit: %v", err)
	}
	if err := c.DeleteSession(bg, "2"); err != nil {
		t.Fatal(err)
	}
	if err := c.PutSession(bg, "3", v, time.Hour); err != nil {
		t.Fatalf("PutSession after a delete freed space: %v", err)
	}
}

func TestSlowSubscriberDropsAndSignalsGap(t *testing.T) {
	b := memcache.NewBackend(memcache.Options{SubscriberBuffer: 4})
	pub, subc := b.Open(), b.Open()
	defer pub.Close()
	defer subc.Close()
	slow, err := subc.Subscribe(bg, "ev")
	if err != nil {
		t.Fatal(err)
	}
	fast, err := subc.Subscribe(bg, "ev")
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-slow.Gaps():
		t.Fatal("gap signalled before any loss")
	default:
	}
	var got []string
	for i := range 10 {
		// Publish never blocks, whatever the subscribers do.
		if err := pub.Publish(bg, "ev", []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
		m := cachetest.Receive(t, fast, time.Second)
		got = append(got, string(m.Payload))
	}
	if fmt.Sprint(got) != "[0 1 2 3 4 5 6 7 8 9]" {
		t.Fatalf("fast subscriber got %v", got)
	}
	select {
	case <-slow.Gaps():
	default:
		t.Fatal("no gap signalled after drops")
	}
	// The buffer kept the oldest messages; newer ones were dropped.
	for i := range 4 {
		if m := cachetest.Receive(t, slow, time.Second); string(m.Payload) != fmt.Sprint(i) {
			t.Fatalf("slow subscriber message %d = %q", i, m.Payload)
		}
	}
	if d := slow.(interface{ Dropped() uint64 }).Dropped(); d != 6 {
		t.Fatalf("Dropped = %d, want 6", d)
	}
}

func TestConcurrentSubscribeClose(t *testing.T) {
	// Subscribe, Publish and Close racing must not panic (send on a closed
	// channel) or deadlock.
	for range 50 {
		b := memcache.NewBackend(memcache.Options{SubscriberBuffer: 1})
		c, p := b.Open(), b.Open()
		var wg sync.WaitGroup
		var stop atomic.Bool
		wg.Add(2)
		go func() {
			defer wg.Done()
			for i := 0; i < 1000 && !stop.Load(); i++ {
				_ = p.Publish(bg, "ev", []byte("x"))
			}
		}()
		go func() {
			defer wg.Done()
			for range 20 {
				s, err := c.Subscribe(bg, "ev")
				if err != nil {
					return
				}
				if time.Now().UnixNano()%2 == 0 {
					_ = s.Close()
				}
			}
		}()
		_ = c.Close()
		stop.Store(true)
		wg.Wait()
		_ = p.Close()
	}
}

func benchCache(b *testing.B) cache.Cache {
	c := memcache.New(memcache.Options{})
	b.Cleanup(func() { _ = c.Close() })
	return c
}

func BenchmarkSessionPut(b *testing.B) {
	c := benchCache(b)
	v := make([]byte, 256)
	b.Run("serial", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			if err := c.PutSession(bg, fmt.Sprint("s", i%1024), v, time.Hour); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		var n atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := c.PutSession(bg, fmt.Sprint("s", n.Add(1)%1024), v, time.Hour); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

func BenchmarkSessionGet(b *testing.B) {
	c := benchCache(b)
	v := make([]byte, 256)
	for i := range 1024 {
		if err := c.PutSession(bg, fmt.Sprint("s", i), v, time.Hour); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("serial", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			if _, _, err := c.GetSession(bg, fmt.Sprint("s", i%1024)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		var n atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, _, err := c.GetSession(bg, fmt.Sprint("s", n.Add(1)%1024)); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

func BenchmarkMarkUsed(b *testing.B) {
	c := benchCache(b)
	var n atomic.Int64
	b.Run("serial", func(b *testing.B) {
		for b.Loop() {
			if first, err := c.MarkUsed(bg, "jti", fmt.Sprint(n.Add(1)), time.Second); err != nil || !first {
				b.Fatal(first, err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if first, err := c.MarkUsed(bg, "jti", fmt.Sprint(n.Add(1)), time.Second); err != nil || !first {
					b.Error(first, err)
					return
				}
			}
		})
	})
}

func BenchmarkAllow(b *testing.B) {
	c := benchCache(b)
	b.Run("serial", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			if _, err := c.Allow(bg, fmt.Sprint("k", i%1024), 1<<30, time.Hour); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		var n atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := c.Allow(bg, fmt.Sprint("k", n.Add(1)%1024), 1<<30, time.Hour); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
