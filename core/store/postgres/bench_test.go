package postgres

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/avonzt/avon/core/store"
)

// Benchmarks run against the package's real local server (loopback TCP,
// fsync on, one durable commit per write).

func benchStore(b *testing.B) *Store {
	b.Helper()
	return openTest(b, server(b).CreateDatabase(b, b.Name()), WithMaxConns(16))
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

// BenchmarkPostgresPut: unconditional 256-byte writes over 1000 keys.
func BenchmarkPostgresPut(b *testing.B) {
	s := benchStore(b)
	ctx := context.Background()
	val := make([]byte, 256)
	i := 0
	for b.Loop() {
		if _, err := s.Put(ctx, "bench/"+strconv.Itoa(i%1000), val, store.PutOptions{}); err != nil {
			b.Fatal(err)
		}
		i++
	}
	opsPerSec(b)
}

// BenchmarkPostgresPutParallel: writers from every P (commits group under
// load).
func BenchmarkPostgresPutParallel(b *testing.B) {
	s := benchStore(b)
	ctx := context.Background()
	val := make([]byte, 256)
	var n atomic.Int64
	b.SetParallelism(4)
	b.ResetTimer() // setup (database, migration, fill) is not measured
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Put(ctx, "bench/"+strconv.FormatInt(n.Add(1)%1000, 10), val, store.PutOptions{}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	opsPerSec(b)
}

// BenchmarkPostgresCASUpdate: checked updates of one key, the version
// carried from the previous Put.
func BenchmarkPostgresCASUpdate(b *testing.B) {
	s := benchStore(b)
	ctx := context.Background()
	val := make([]byte, 256)
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
}

// BenchmarkPostgresCASUpdateParallel: checked updates of distinct keys,
// one per goroutine.
func BenchmarkPostgresCASUpdateParallel(b *testing.B) {
	s := benchStore(b)
	ctx := context.Background()
	val := make([]byte, 256)
	var id atomic.Int64
	b.SetParallelism(4)
	b.ResetTimer() // setup (database, migration, fill) is not measured
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
}

// BenchmarkPostgresGet: point reads of 256-byte values among 1000 keys.
func BenchmarkPostgresGet(b *testing.B) {
	s := benchStore(b)
	fill(b, s, 1000)
	ctx := context.Background()
	i := 0
	for b.Loop() {
		if _, err := s.Get(ctx, "bench/"+strconv.Itoa(i%1000)); err != nil {
			b.Fatal(err)
		}
		i++
	}
	opsPerSec(b)
}

// BenchmarkPostgresGetParallel: point reads from several goroutines per P.
func BenchmarkPostgresGetParallel(b *testing.B) {
	s := benchStore(b)
	fill(b, s, 1000)
	ctx := context.Background()
	var n atomic.Int64
	b.SetParallelism(4)
	b.ResetTimer() // setup (database, migration, fill) is not measured
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Get(ctx, "bench/"+strconv.FormatInt(n.Add(1)%1000, 10)); err != nil {
				b.Error(err)
				return
			}
		}
	})
	opsPerSec(b)
}

// BenchmarkPostgresList: pages of 100 entries of 256 bytes.
func BenchmarkPostgresList(b *testing.B) {
	s := benchStore(b)
	fill(b, s, 1000)
	ctx := context.Background()
	for b.Loop() {
		es, err := s.List(ctx, store.ListOptions{Prefix: "bench/", Limit: 100})
		if err != nil || len(es) != 100 {
			b.Fatal(len(es), err)
		}
	}
	opsPerSec(b)
}

// BenchmarkPostgresListParallel: pages of 100 from several goroutines per P.
func BenchmarkPostgresListParallel(b *testing.B) {
	s := benchStore(b)
	fill(b, s, 1000)
	ctx := context.Background()
	b.SetParallelism(4)
	b.ResetTimer() // setup (database, migration, fill) is not measured
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
}
