package redisstore

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/avonzt/avon/core/store"
)

// Benchmarks run against the package's shared redis-server on loopback
// (no persistence: they measure the store and the round trip, not the
// disk; with appendfsync always every write also waits for an fsync).
// Values are 256 bytes; each benchmark has a serial and a parallel form
// (four goroutines per P).

func benchStore(b *testing.B) *Store {
	b.Helper()
	return openTest(b, Options{Addr: server(b).Addr(), KeyPrefix: uniquePrefix()})
}

func opsPerSec(b *testing.B) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

func fill(b *testing.B, s *Store, n int) {
	b.Helper()
	val := make([]byte, 256)
	for i := range n {
		if _, err := s.Put(context.Background(), "bench/"+strconv.Itoa(i), val, store.PutOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRedisStorePut: unconditional writes over 1000 keys.
func BenchmarkRedisStorePut(b *testing.B) {
	s := benchStore(b)
	ctx := context.Background()
	val := make([]byte, 256)
	b.Run("serial", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			if _, err := s.Put(ctx, "bench/"+strconv.Itoa(i%1000), val, store.PutOptions{}); err != nil {
				b.Fatal(err)
			}
		}
		opsPerSec(b)
	})
	b.Run("parallel", func(b *testing.B) {
		var n atomic.Int64
		b.SetParallelism(4)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := s.Put(ctx, "bench/"+strconv.FormatInt(n.Add(1)%1000, 10), val, store.PutOptions{}); err != nil {
					b.Error(err)
					return
				}
			}
		})
		opsPerSec(b)
	})
}

// BenchmarkRedisStoreGet: point reads among 1000 keys.
func BenchmarkRedisStoreGet(b *testing.B) {
	s := benchStore(b)
	fill(b, s, 1000)
	ctx := context.Background()
	b.Run("serial", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			if _, err := s.Get(ctx, "bench/"+strconv.Itoa(i%1000)); err != nil {
				b.Fatal(err)
			}
		}
		opsPerSec(b)
	})
	b.Run("parallel", func(b *testing.B) {
		var n atomic.Int64
		b.SetParallelism(4)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := s.Get(ctx, "bench/"+strconv.FormatInt(n.Add(1)%1000, 10)); err != nil {
					b.Error(err)
					return
				}
			}
		})
		opsPerSec(b)
	})
}

// BenchmarkRedisStoreCASUpdate: checked updates carrying the version of the
// previous Put; one key serially, a key per goroutine in parallel.
func BenchmarkRedisStoreCASUpdate(b *testing.B) {
	s := benchStore(b)
	ctx := context.Background()
	val := make([]byte, 256)
	b.Run("serial", func(b *testing.B) {
		v, err := s.Put(ctx, "bench/cas", val, store.PutOptions{})
		if err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if v, err = s.Put(ctx, "bench/cas", val, store.PutOptions{Check: true, Version: v}); err != nil {
				b.Fatal(err)
			}
		}
		opsPerSec(b)
	})
	b.Run("parallel", func(b *testing.B) {
		var id atomic.Int64
		b.SetParallelism(4)
		b.RunParallel(func(pb *testing.PB) {
			key := "bench/cas/" + strconv.FormatInt(id.Add(1), 10)
			v, err := s.Put(ctx, key, val, store.PutOptions{})
			if err != nil {
				b.Error(err)
				return
			}
			for pb.Next() {
				if v, err = s.Put(ctx, key, val, store.PutOptions{Check: true, Version: v}); err != nil {
					b.Error(err)
					return
				}
			}
		})
		opsPerSec(b)
	})
}

// BenchmarkRedisStoreList: pages of 100 entries out of 1000.
func BenchmarkRedisStoreList(b *testing.B) {
	s := benchStore(b)
	fill(b, s, 1000)
	ctx := context.Background()
	b.Run("serial", func(b *testing.B) {
		for b.Loop() {
			es, err := s.List(ctx, store.ListOptions{Prefix: "bench/", Limit: 100})
			if err != nil || len(es) != 100 {
				b.Fatal(len(es), err)
			}
		}
		opsPerSec(b)
	})
	b.Run("parallel", func(b *testing.B) {
		b.SetParallelism(4)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				es, err := s.List(ctx, store.ListOptions{Prefix: "bench/", Limit: 100})
				if err != nil || len(es) != 100 {
					b.Error(len(es), err)
					return
				}
			}
		})
		opsPerSec(b)
	})
}

// BenchmarkRedisStorePutDurable: unconditional writes on a server of its
// own with appendonly yes and appendfsync always, so each write waits for
// an fsync of the append-only file (parallel writers share fsyncs).
func BenchmarkRedisStorePutDurable(b *testing.B) {
	p := startProc(b, aofArgs...)
	s := openTest(b, Options{Addr: p.Addr(), RequireDurable: true})
	ctx := context.Background()
	val := make([]byte, 256)
	b.Run("serial", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			if _, err := s.Put(ctx, "bench/"+strconv.Itoa(i%1000), val, store.PutOptions{}); err != nil {
				b.Fatal(err)
			}
		}
		opsPerSec(b)
	})
	b.Run("parallel", func(b *testing.B) {
		var n atomic.Int64
		b.SetParallelism(4)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := s.Put(ctx, "bench/"+strconv.FormatInt(n.Add(1)%1000, 10), val, store.PutOptions{}); err != nil {
					b.Error(err)
					return
				}
			}
		})
		opsPerSec(b)
	})
}
