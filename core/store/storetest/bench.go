package storetest

import (
	"context"
	"strconv"
	"testing"

	"github.com/avonzt/avon/core/store"
)

// BenchApply is the batch benchmark every backend runs from its own
// Benchmark function: 10 writes of 256 bytes made as one Apply
// ("Apply10") against the same 10 writes made as sequential Puts
// ("Put10"). One iteration is 10 writes either way, reported as writes/s.
// open must return a new store for each sub-benchmark and close it through
// b.Cleanup; the store must implement store.Batcher. Nothing here passes or
// fails on speed.
func BenchApply(b *testing.B, open func(b *testing.B) store.KV) {
	const n = 10
	val := make([]byte, 256)
	b.Run("Apply10", func(b *testing.B) {
		kv := open(b)
		bt, ok := kv.(store.Batcher)
		if !ok {
			b.Fatalf("%T does not implement store.Batcher", kv)
		}
		ctx := context.Background()
		ops := make([]store.Op, n)
		i := 0
		for b.Loop() {
			for j := range ops {
				ops[j] = store.Op{Key: "bench/" + strconv.Itoa((i*n+j)%1000), Value: val}
			}
			if _, err := bt.Apply(ctx, ops); err != nil {
				b.Fatal(err)
			}
			i++
		}
		b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "writes/s")
	})
	b.Run("Put10", func(b *testing.B) {
		kv := open(b)
		ctx := context.Background()
		i := 0
		for b.Loop() {
			for j := range n {
				if _, err := kv.Put(ctx, "bench/"+strconv.Itoa((i*n+j)%1000), val, store.PutOptions{}); err != nil {
					b.Fatal(err)
				}
			}
			i++
		}
		b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "writes/s")
	})
}
