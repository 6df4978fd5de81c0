package embedded

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"sync"
	"testing"

	"github.com/avonzt/avon/core/store"
	"github.com/avonzt/avon/core/store/storetest"
)

// TestGroupItemsAllOrNothing commits one group holding single writes and
// batches, one batch failing a check and one failing inside the database
// halfway through its writes (a trigger refuses the key "boom"): each
// failing item is undone whole, and only it; the others commit with
// versions in queue order.
func TestGroupItemsAllOrNothing(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, filepath.Join(t.TempDir(), "avon.db"))
	if _, err := s.w.ExecContext(ctx, `CREATE TRIGGER boom BEFORE INSERT ON kv WHEN NEW.key = 'boom'
		BEGIN SELECT RAISE(ABORT, 'boom refused'); END`); err != nil {
		t.Fatal(err)
	}
	vx, err := s.Put(ctx, "x", []byte("x"), store.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	put := func(k string) writeOp { return writeOp{key: k, value: []byte("v-" + k)} }
	items := []*writeItem{
		{ctx: ctx, name: "put", ops: []writeOp{put("a")}},
		{ctx: ctx, name: "apply", batch: true, ops: []writeOp{put("b1"), put("b2"), {key: "x", del: true}, put("boom")}},
		{ctx: ctx, name: "apply", batch: true, ops: []writeOp{put("c1"), {key: "x", value: []byte{}, check: true}}},
		{ctx: ctx, name: "apply", batch: true, ops: []writeOp{put("d1"), {key: "x", del: true, check: true, version: vx}, put("d2")}},
		{ctx: ctx, name: "delete", ops: []writeOp{{key: "d1", del: true}}},
	}
	for _, it := range items {
		it.done = make(chan struct{})
	}
	s.commitGroup(items)
	for i, it := range items {
		select {
		case <-it.done:
		default:
			t.Fatalf("item %d not released", i)
		}
	}

	if err := items[0].err; err != nil || items[0].vs[0] <= vx {
		t.Fatalf("put a: %v %v", items[0].vs, err)
	}
	if err := items[1].err; !errors.Is(err, store.ErrUnavailable) || items[1].vs != nil {
		t.Fatalf("batch with a refused insert: %v %v, want ErrUnavailable", items[1].vs, err)
	}
	var be *store.BatchError
	if err := items[2].err; !errors.As(err, &be) || be.Index != 1 || be.Key != "x" || !errors.Is(err, store.ErrVersionConflict) || items[2].vs != nil {
		t.Fatalf("batch with a failed check: %v %v", items[2].vs, err)
	}
	d := items[3]
	if d.err != nil || len(d.vs) != 3 || d.vs[0] <= items[0].vs[0] || d.vs[1] != 0 || d.vs[2] != d.vs[0]+1 {
		t.Fatalf("good batch: %v %v", d.vs, d.err)
	}
	if items[4].err != nil {
		t.Fatalf("delete after the batch: %v", items[4].err)
	}

	want := map[string]string{"a": "v-a", "d2": "v-d2"}
	es, err := s.List(ctx, store.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != len(want) {
		t.Fatalf("after the group: %v, want the keys of %v", es, want)
	}
	for _, e := range es {
		if want[e.Key] != string(e.Value) {
			t.Fatalf("after the group: %s=%q", e.Key, e.Value)
		}
	}
	// The sequence moved on past the undone items without reuse.
	if v, err := s.Put(ctx, "after", nil, store.PutOptions{}); err != nil || v <= d.vs[2] {
		t.Fatalf("Put after the group: %d, %v (group reached %d)", v, err, d.vs[2])
	}
}

func TestGroupSize(t *testing.T) {
	items := func(sizes ...int) []*writeItem {
		q := make([]*writeItem, len(sizes))
		for i, n := range sizes {
			q[i] = &writeItem{ops: make([]writeOp, n)}
		}
		return q
	}
	ones := make([]int, maxGroup+5)
	for i := range ones {
		ones[i] = 1
	}
	for _, c := range []struct {
		name  string
		queue []*writeItem
		want  int
	}{
		{"one", items(1), 1},
		{"few", items(1, 3, 1), 3},
		{"item bound", items(ones...), maxGroup},
		{"op bound", items(1000, 1000, 1000, 1000, 1000), 4},
		{"op bound exact", items(1024, 1024, 1024, 1024, 1), 4},
		{"a first item above the op bound goes alone", items(maxGroupOps+1, 1), 1},
		{"a large item waits for the next group", items(1, maxGroupOps, 1), 1},
	} {
		if got := groupSize(c.queue); got != c.want {
			t.Errorf("%s: groupSize = %d, want %d", c.name, got, c.want)
		}
	}
}

// TestManyConcurrentBatches: hundreds of concurrent batches of different
// sizes and one of MaxBatchOps all land, each with consecutive versions.
func TestManyConcurrentBatches(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, filepath.Join(t.TempDir(), "avon.db"))
	const writers = 2 * maxGroup
	var wg sync.WaitGroup
	errs := make(chan error, writers+1)
	apply := func(ops []store.Op) {
		defer wg.Done()
		vs, err := s.Apply(ctx, ops)
		if err != nil {
			errs <- err
			return
		}
		for i := 1; i < len(vs); i++ {
			if vs[i] != vs[i-1]+1 {
				errs <- fmt.Errorf("batch versions %v not consecutive", vs)
				return
			}
		}
	}
	total := 0
	for w := range writers {
		ops := make([]store.Op, 1+w%7)
		for i := range ops {
			ops[i] = store.Op{Key: fmt.Sprintf("g/%03d/%d", w, i), Value: []byte(strconv.Itoa(w))}
		}
		total += len(ops)
		wg.Add(1)
		go apply(ops)
	}
	big := make([]store.Op, store.MaxBatchOps)
	for i := range big {
		big[i] = store.Op{Key: fmt.Sprintf("big/%04d", i)}
	}
	wg.Add(1)
	go apply(big)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for prefix, want := range map[string]int{"g/": total, "big/": store.MaxBatchOps} {
		es, err := s.List(ctx, store.ListOptions{Prefix: prefix, Limit: store.MaxLimit})
		if err != nil || len(es) != want {
			t.Fatalf("%s: %d keys, want %d (%v)", prefix, len(es), want, err)
		}
	}
}

// BenchmarkApply runs storetest.BenchApply: 10 writes as one Apply
// against the same 10 writes as sequential Puts.
func BenchmarkApply(b *testing.B) {
	storetest.BenchApply(b, func(b *testing.B) store.KV { return benchStore(b) })
}
