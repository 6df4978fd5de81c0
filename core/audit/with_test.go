package audit

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/avonzt/avon/core/store"
	"github.com/avonzt/avon/core/store/embedded"
	"github.com/avonzt/avon/core/store/memstore"
	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/host"
)

func openEmbedded(t testing.TB) *embedded.Store {
	t.Helper()
	kv, err := embedded.Open(bg, filepath.Join(t.TempDir(), "a.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kv.Close() })
	return kv
}

// headReads counts the reads of the audit head that reach the store.
type headReads struct {
	store.KV
	n atomic.Int64
}

func (h *headReads) Get(ctx context.Context, key string) (store.Entry, error) {
	if key == headKey {
		h.n.Add(1)
	}
	return h.KV.Get(ctx, key)
}

func (h *headReads) Apply(ctx context.Context, ops []store.Op) ([]int64, error) {
	return h.KV.(store.Batcher).Apply(ctx, ops)
}

// recordsWith lists the records whose target is target.
func recordsWith(t *testing.T, kv store.KV, target string) []Record {
	t.Helper()
	recs, err := List(bg, kv, 0, store.MaxLimit)
	if err != nil {
		t.Fatal(err)
	}
	var out []Record
	for _, r := range recs {
		if r.Target == target {
			out = append(out, r)
		}
	}
	return out
}

// TestAppendWith: the ops and the record are one store batch; the versions
// returned are the stored ones; the chain verifies.
func TestAppendWith(t *testing.T) {
	cb := &countingBatcher{KV: openEmbedded(t)}
	l := New(cb, nil, nil)
	fill(t, l, 2)
	before := cb.batches
	ops := []store.Op{
		{Key: "plugins/ca/x/cert/1", Value: []byte("c1"), Check: true},
		{Key: "plugins/ca/x/idx/1", Value: []byte("i1")},
	}
	rec, vs, err := l.AppendWith(bg, "ca.x", host.Event{Action: "ca.issue", Target: "cert/1", Outcome: "success"}, ops)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Seq != 3 || len(vs) != 2 {
		t.Fatalf("record %d, versions %v", rec.Seq, vs)
	}
	if cb.batches-before != 1 {
		t.Fatalf("%d store batches for one audited write, want 1", cb.batches-before)
	}
	for i, op := range ops {
		e, err := cb.Get(bg, op.Key)
		if err != nil || string(e.Value) != string(op.Value) || e.Version != vs[i] {
			t.Fatalf("op %d: %+v %v, want version %d", i, e, err, vs[i])
		}
	}
	r := mustVerify(t, cb, VerifyOptions{})
	if !r.OK() || r.Records != 3 || r.Head != 3 {
		t.Fatalf("%+v", r)
	}
	// A check on the version just returned passes, in the next batch.
	if _, _, err := l.AppendWith(bg, "ca.x", host.Event{Action: "ca.revoke", Target: "cert/1"},
		[]store.Op{{Key: "plugins/ca/x/cert/1", Value: []byte("c1'"), Check: true, Version: vs[0]}}); err != nil {
		t.Fatal(err)
	}
}

// TestAppendWithConflict: a failed check of the first, a middle or the
// last op writes nothing of the ops, leaves no record of the event, and
// names the op; the chain goes on after it.
func TestAppendWithConflict(t *testing.T) {
	for name, kv := range map[string]store.KV{"embedded": openEmbedded(t), "memstore": memstore.New()} {
		t.Run(name, func(t *testing.T) {
			l := New(kv, nil, nil)
			held, err := kv.Put(bg, "p/held", []byte("v"), store.PutOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for i, bad := range []int{0, 1, 2} {
				ops := []store.Op{
					{Key: fmt.Sprintf("p/%d/a", i), Value: []byte("a"), Check: true},
					{Key: fmt.Sprintf("p/%d/b", i), Value: []byte("b")},
					{Key: fmt.Sprintf("p/%d/c", i), Value: []byte("c"), Check: true},
				}
				ops[bad] = store.Op{Key: "p/held", Value: []byte("w"), Check: true, Version: held + 1000}
				target := fmt.Sprintf("conflict-%d", i)
				_, vs, err := l.AppendWith(bg, "core", host.Event{Action: "test.write", Target: target}, ops)
				var be *store.BatchError
				if !errors.As(err, &be) || !errors.Is(err, store.ErrVersionConflict) || be.Index != bad || be.Key != "p/held" || vs != nil {
					t.Fatalf("op %d stale: %v (versions %v), want a *BatchError at %d", bad, err, vs, bad)
				}
				for _, op := range ops {
					if e, err := kv.Get(bg, op.Key); op.Key == "p/held" && (err != nil || e.Version != held) || op.Key != "p/held" && !errors.Is(err, store.ErrNotFound) {
						t.Fatalf("op %q after a failed batch: %+v %v", op.Key, e, err)
					}
				}
				if recs := recordsWith(t, kv, target); len(recs) != 0 {
					t.Fatalf("the event of a failed batch is in the chain: %+v", recs)
				}
				if err := l.Emit(bg, "core", ev(i)); err != nil {
					t.Fatal(err)
				}
			}
			r := mustVerify(t, kv, VerifyOptions{})
			if !r.OK() || r.Records != 3 || r.Head != 3 {
				t.Fatalf("%+v", r)
			}
		})
	}
}

// TestAppendWithRefused: what AppendWith refuses is refused before
// anything is written.
func TestAppendWithRefused(t *testing.T) {
	kv := memstore.New()
	l := New(kv, nil, nil)
	ok := []store.Op{{Key: "p/a", Value: []byte("a")}}
	many := make([]store.Op, MaxOpsWith+1)
	for i := range many {
		many[i] = store.Op{Key: fmt.Sprintf("p/%d", i)}
	}
	for _, tc := range []struct {
		name string
		ev   host.Event
		ops  []store.Op
		want error
	}{
		{"no action", host.Event{}, ok, ErrInvalidEvent},
		{"long reason", host.Event{Action: "a", Reason: strings.Repeat("r", MaxFieldLen+1)}, ok, ErrInvalidEvent},
		{"no ops", host.Event{Action: "a"}, nil, store.ErrInvalidArgument},
		{"too many ops", host.Event{Action: "a"}, many, store.ErrInvalidArgument},
		{"a key twice", host.Event{Action: "a"}, []store.Op{{Key: "p/a"}, {Key: "p/a"}}, store.ErrInvalidArgument},
		{"invalid key", host.Event{Action: "a"}, []store.Op{{Key: "p/\x00"}}, store.ErrInvalidKey},
		{"audit key", host.Event{Action: "a"}, []store.Op{{Key: "p/a"}, {Key: headKey, Value: []byte("{}")}}, store.ErrInvalidKey},
		{"audit record", host.Event{Action: "a"}, []store.Op{{Key: RecordKey(1), Delete: true}}, store.ErrInvalidKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := l.AppendWith(bg, "core", tc.ev, tc.ops); !errors.Is(err, tc.want) {
				t.Fatalf("AppendWith: %v, want %v", err, tc.want)
			}
		})
	}
	if es, _ := kv.List(bg, store.ListOptions{}); len(es) != 0 {
		t.Fatalf("refused calls wrote %d rows", len(es))
	}
	sw := New(singleWrites{memstore.New()}, nil, nil)
	if _, _, err := sw.AppendWith(bg, "core", host.Event{Action: "a"}, ok); !errors.Is(err, errdef.ErrNotImplemented) {
		t.Fatalf("a store without batches: %v", err)
	}
}

// gatedBatcher holds every batch until the test opens the gate, so the
// test can queue appends behind the batch in flight.
type gatedBatcher struct {
	store.KV
	gate    chan struct{}
	batches atomic.Int64
}

func (g *gatedBatcher) Apply(ctx context.Context, ops []store.Op) ([]int64, error) {
	g.batches.Add(1)
	select {
	case <-g.gate:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return g.KV.(store.Batcher).Apply(ctx, ops)
}

// queued is the number of appends waiting for the lead.
func (l *Log) queued() int {
	l.queue.mu.Lock()
	defer l.queue.mu.Unlock()
	return len(l.queue.items)
}

// TestAppendWithIsolation: appends grouped in one batch with an AppendWith
// whose check fails all land; the failing one alone fails, with nothing of
// it written and no record.
func TestAppendWithIsolation(t *testing.T) {
	kv := openEmbedded(t)
	g := &gatedBatcher{KV: kv, gate: make(chan struct{})}
	var open sync.Once
	release := func() { open.Do(func() { close(g.gate) }) }
	t.Cleanup(release) // a failed test leaves no append waiting
	l := New(g, nil, nil)
	first := make(chan error, 1)
	go func() { first <- l.Emit(bg, "core", ev(0)) }() // leads; held at the gate

	type result struct {
		i   int
		err error
		vs  []int64
	}
	const n = 12
	bad := map[int]bool{0: true, 5: true, n - 1: true} // first, middle, last of the group
	held := map[int]int64{}
	for i := range bad {
		v, err := kv.Put(bg, fmt.Sprintf("p/held/%d", i), []byte("v"), store.PutOptions{})
		if err != nil {
			t.Fatal(err)
		}
		held[i] = v
	}
	deadline := time.Now().Add(10 * time.Second)
	for l.queued() > 0 || g.batches.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the first append never reached the store")
		}
		time.Sleep(time.Millisecond)
	}
	results := make(chan result, n)
	for i := range n {
		go func() {
			switch {
			case bad[i]:
				_, vs, err := l.AppendWith(bg, "core", host.Event{Action: "test.write", Target: fmt.Sprintf("bad-%d", i)},
					[]store.Op{{Key: fmt.Sprintf("p/bad/%d", i), Value: []byte("x")},
						{Key: fmt.Sprintf("p/held/%d", i), Value: []byte("w"), Check: true, Version: held[i] + 1000}})
				results <- result{i, err, vs}
			case i%2 == 0:
				_, vs, err := l.AppendWith(bg, "core", host.Event{Action: "test.write", Target: fmt.Sprintf("good-%d", i)},
					[]store.Op{{Key: fmt.Sprintf("p/good/%d", i), Value: []byte("x"), Check: true}})
				results <- result{i, err, vs}
			default:
				results <- result{i, l.Emit(bg, "core", ev(i)), nil}
			}
		}()
		// Queue them in order, so the failing ones are the group's
		// first, a middle one and its last.
		for l.queued() < i+1 {
			if time.Now().After(deadline) {
				t.Fatalf("%d appends queued, want %d", l.queued(), i+1)
			}
			time.Sleep(100 * time.Microsecond)
		}
	}
	release()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	for range n {
		r := <-results
		var be *store.BatchError
		switch {
		case bad[r.i]:
			if !errors.As(r.err, &be) || be.Index != 1 || be.Key != fmt.Sprintf("p/held/%d", r.i) {
				t.Errorf("append %d with a stale check: %v, want a *BatchError at op 1", r.i, r.err)
			}
			if _, err := kv.Get(bg, fmt.Sprintf("p/bad/%d", r.i)); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("append %d: its first op was written: %v", r.i, err)
			}
		case r.err != nil:
			t.Errorf("append %d grouped with failing ones: %v", r.i, r.err)
		case r.vs != nil:
			if e, err := kv.Get(bg, fmt.Sprintf("p/good/%d", r.i)); err != nil || e.Version != r.vs[0] {
				t.Errorf("append %d: %+v %v, want version %d", r.i, e, err, r.vs[0])
			}
		}
	}
	for i := range bad {
		if recs := recordsWith(t, kv, fmt.Sprintf("bad-%d", i)); len(recs) != 0 {
			t.Fatalf("a failed append is in the chain: %+v", recs)
		}
	}
	r := mustVerify(t, kv, VerifyOptions{})
	if !r.OK() || r.Records != uint64(1+n-len(bad)) || r.Head != r.Records {
		t.Fatalf("%+v", r)
	}
	// One batch for the leader; the queued group in one more batch, plus
	// one retry per failing append dropped from it.
	if b := g.batches.Load(); b != int64(2+len(bad)) {
		t.Fatalf("%d store batches, want %d", b, 2+len(bad))
	}
}

// TestTakeBatch: a group never writes one key twice, stays within a store
// batch, and keeps the queue's order.
func TestTakeBatch(t *testing.T) {
	op := func(k string) []store.Op { return []store.Op{{Key: k}} }
	big := make([]store.Op, MaxOpsWith)
	for i := range big {
		big[i] = store.Op{Key: fmt.Sprintf("big/%d", i)}
	}
	for _, tc := range []struct {
		name  string
		items [][]store.Op
		want  int
	}{
		{"plain", [][]store.Op{nil, nil, nil}, 3},
		{"disjoint", [][]store.Op{op("a"), nil, op("b")}, 3},
		{"same key", [][]store.Op{op("a"), nil, op("a"), op("b")}, 2},
		{"same key first", [][]store.Op{op("a"), op("a")}, 1},
		{"full", [][]store.Op{big, nil}, 1},
		{"full later", [][]store.Op{nil, big}, 1},
		{"large values", [][]store.Op{
			{{Key: "a", Value: make([]byte, maxBatchValues/2)}},
			{{Key: "b", Value: make([]byte, maxBatchValues/2)}},
			{{Key: "c", Value: []byte("x")}}, nil}, 2},
		{"one too large", [][]store.Op{{{Key: "a", Value: make([]byte, maxBatchValues+1)}}, nil}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			items := make([]*pendingAppend, len(tc.items))
			for i, ops := range tc.items {
				items[i] = &pendingAppend{ops: ops}
			}
			if n := takeBatch(items); n != tc.want {
				t.Fatalf("takeBatch: %d, want %d", n, tc.want)
			}
		})
	}
	many := make([]*pendingAppend, maxAppendBatch+5)
	for i := range many {
		many[i] = &pendingAppend{}
	}
	if n := takeBatch(many); n != maxAppendBatch {
		t.Fatalf("takeBatch of %d plain appends: %d", len(many), n)
	}
}

// TestHeadCached: appends of one Log read the head once, not once per
// batch.
func TestHeadCached(t *testing.T) {
	hr := &headReads{KV: openEmbedded(t)}
	l := New(hr, nil, nil)
	fill(t, l, 10)
	if _, _, err := l.AppendWith(bg, "core", ev(11), []store.Op{{Key: "p/a", Value: []byte("a")}}); err != nil {
		t.Fatal(err)
	}
	if n := hr.n.Load(); n != 1 {
		t.Fatalf("%d reads of the head for 11 appends, want 1", n)
	}
	if r := mustVerify(t, hr, VerifyOptions{}); !r.OK() || r.Records != 11 {
		t.Fatalf("%+v", r)
	}
}

// TestCachedHeadGoesStale: two Logs on one store take turns; each finds
// its remembered head stale after the other's append, re-reads it, and
// links after the other's records: the chain stays whole and gapless.
func TestCachedHeadGoesStale(t *testing.T) {
	kv := openEmbedded(t)
	ha, hb := &headReads{KV: kv}, &headReads{KV: kv}
	a, b := New(ha, nil, nil), New(hb, nil, nil)
	var seqs []uint64
	for round := range 5 {
		for i, l := range []*Log{a, a, b} {
			target := fmt.Sprintf("r%d/%d", round, i)
			rec, vs, err := l.AppendWith(bg, fmt.Sprintf("replica-%d", i/2), host.Event{Action: "test.write", Target: target},
				[]store.Op{{Key: "p/" + target, Value: []byte(target), Check: true}})
			if err != nil {
				t.Fatalf("round %d append %d: %v", round, i, err)
			}
			if e, err := kv.Get(bg, "p/"+target); err != nil || e.Version != vs[0] {
				t.Fatalf("%s: %+v %v", target, e, err)
			}
			seqs = append(seqs, rec.Seq)
		}
	}
	for i, s := range seqs {
		if s != uint64(i+1) {
			t.Fatalf("seqs %v: not gapless", seqs)
		}
	}
	r := mustVerify(t, kv, VerifyOptions{})
	if !r.OK() || r.Records != 15 || r.Head != 15 {
		t.Fatalf("%+v", r)
	}
	// a reads the head at its first append and after each of b's; b at
	// each of its appends, its head always stale.
	if ra, rb := ha.n.Load(), hb.n.Load(); ra != 5 || rb != 5 {
		t.Fatalf("head reads: a %d, b %d; want 5 and 5", ra, rb)
	}
}

// TestAppendWithConcurrent: many audited writes and plain emits from
// several goroutines all land once; the chain verifies, seqs gapless.
func TestAppendWithConcurrent(t *testing.T) {
	kv := openEmbedded(t)
	l := New(kv, nil, nil)
	const workers, each = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	seqs := make(chan uint64, workers*each)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range each {
				target := fmt.Sprintf("w%d/%d", w, j)
				var rec Record
				var err error
				if (w+j)%2 == 0 {
					rec, _, err = l.AppendWith(bg, "core", host.Event{Action: "test.write", Target: target},
						[]store.Op{{Key: "p/" + target, Value: []byte(target), Check: true}, {Key: fmt.Sprintf("p/last/%d", w), Value: []byte(target)}})
				} else {
					rec, err = l.Append(bg, "core", host.Event{Action: "test.emit", Target: target})
				}
				if err != nil {
					errs <- err
					return
				}
				seqs <- rec.Seq
			}
		}()
	}
	wg.Wait()
	close(errs)
	close(seqs)
	for err := range errs {
		t.Fatal(err)
	}
	seen := map[uint64]bool{}
	for s := range seqs {
		if seen[s] || s == 0 || s > workers*each {
			t.Fatalf("seq %d twice or out of range", s)
		}
		seen[s] = true
	}
	r := mustVerify(t, kv, VerifyOptions{})
	if !r.OK() || r.Records != workers*each || r.Head != workers*each {
		t.Fatalf("%+v", r)
	}
	es, err := kv.List(bg, store.ListOptions{Prefix: "p/w"})
	if err != nil || len(es) != workers*each/2 {
		t.Fatalf("%d audited writes stored, want %d: %v", len(es), workers*each/2, err)
	}
}

// BenchmarkAppendWith compares an audited write as one batch with the
// same write as a store batch and a concurrent separate append (what a
// plugin did before AppendWith), on the embedded store (one fsync per
// batch): serial is one caller's latency, parallel 8 callers sharing
// group commits.
func BenchmarkAppendWith(b *testing.B) {
	for _, par := range []int{0, 4} {
		for _, mode := range []string{"one-batch", "apply+append"} {
			name := map[int]string{0: "serial/", 4: "parallel/"}[par] + mode
			b.Run(name, func(b *testing.B) {
				kv := openEmbedded(b)
				l := New(kv, nil, nil)
				var n atomic.Int64
				write := func() error {
					i := n.Add(1)
					ops := []store.Op{{Key: fmt.Sprintf("p/cert/%d", i), Value: make([]byte, 2048), Check: true},
						{Key: fmt.Sprintf("p/order/%d", i), Value: make([]byte, 512)}}
					e := host.Event{Action: "test.write", Target: fmt.Sprintf("cert/%d", i)}
					if mode == "one-batch" {
						_, _, err := l.AppendWith(bg, "core", e, ops)
						return err
					}
					var wg sync.WaitGroup
					var aerr error
					wg.Add(1)
					go func() { defer wg.Done(); aerr = l.Emit(bg, "core", e) }()
					_, err := kv.Apply(bg, ops)
					wg.Wait()
					return errors.Join(err, aerr)
				}
				b.ResetTimer()
				if par == 0 {
					for range b.N {
						if err := write(); err != nil {
							b.Fatal(err)
						}
					}
				} else {
					b.SetParallelism(par)
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							if err := write(); err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "writes/s")
			})
		}
	}
}
