package redis_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/avonzt/avon/core/cache/redis"
	"github.com/avonzt/avon/internal/testsvc/redistest"
)

// Round trips to a real redis-server on loopback. Values are 256 bytes, a
// typical session record.

func benchCache(b *testing.B) *redis.Cache {
	srv := redistest.Need(b, shared, sharedErr)
	return open(b, redis.Options{Addr: srv.Addr(), KeyPrefix: uniquePrefix()})
}

func BenchmarkSessionPut(b *testing.B) {
	c := benchCache(b)
	ctx := context.Background()
	v := make([]byte, 256)
	b.Run("serial", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			if err := c.PutSession(ctx, fmt.Sprint("s", i%1024), v, time.Hour); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		var n atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := c.PutSession(ctx, fmt.Sprint("s", n.Add(1)%1024), v, time.Hour); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

func BenchmarkSessionGet(b *testing.B) {
	c := benchCache(b)
	ctx := context.Background()
	v := make([]byte, 256)
	for i := range 1024 {
		if err := c.PutSession(ctx, fmt.Sprint("s", i), v, time.Hour); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("serial", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			if _, _, err := c.GetSession(ctx, fmt.Sprint("s", i%1024)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		var n atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, _, err := c.GetSession(ctx, fmt.Sprint("s", n.Add(1)%1024)); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

func BenchmarkMarkUsed(b *testing.B) {
	c := benchCache(b)
	ctx := context.Background()
	var n atomic.Int64
	b.Run("serial", func(b *testing.B) {
		for b.Loop() {
			if first, err := c.MarkUsed(ctx, "jti", fmt.Sprint(n.Add(1)), 10*time.Second); err != nil || !first {
				b.Fatal(first, err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if first, err := c.MarkUsed(ctx, "jti", fmt.Sprint(n.Add(1)), 10*time.Second); err != nil || !first {
					b.Error(first, err)
					return
				}
			}
		})
	})
}

func BenchmarkAllow(b *testing.B) {
	c := benchCache(b)
	ctx := context.Background()
	b.Run("serial", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			if _, err := c.Allow(ctx, fmt.Sprint("k", i%1024), 1<<30, time.Hour); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		var n atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := c.Allow(ctx, fmt.Sprint("k", n.Add(1)%1024), 1<<30, time.Hour); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
