package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/avonzt/avon/core/store"
)

// The cases for store.Batcher. Every backend of this module implements it,
// so a backend that does not fails them.

// mustBatcher returns kv's Batcher, failing the test when it has none.
func mustBatcher(t *testing.T, kv store.KV) store.Batcher {
	t.Helper()
	b, ok := kv.(store.Batcher)
	if !ok {
		t.Fatalf("%T does not implement store.Batcher", kv)
	}
	return b
}

func mustApply(t *testing.T, b store.Batcher, ops []store.Op) []int64 {
	t.Helper()
	vs, err := b.Apply(bg(), ops)
	if err != nil {
		t.Fatalf("Apply(%d ops): %v", len(ops), err)
	}
	if len(vs) != len(ops) {
		t.Fatalf("Apply(%d ops) returned %d versions", len(ops), len(vs))
	}
	for i, op := range ops {
		if op.Delete && vs[i] != 0 {
			t.Fatalf("Apply: delete op %d returned version %d, want 0", i, vs[i])
		}
		if !op.Delete && vs[i] <= 0 {
			t.Fatalf("Apply: put op %d returned version %d, want > 0", i, vs[i])
		}
	}
	return vs
}

// snapshot is every entry of kv, for checking that a refused call changed
// nothing.
func snapshot(t *testing.T, kv store.KV) []store.Entry {
	t.Helper()
	return mustList(t, kv, store.ListOptions{Limit: store.MaxLimit})
}

func wantUnchanged(t *testing.T, kv store.KV, before []store.Entry) {
	t.Helper()
	after := snapshot(t, kv)
	if !slices.EqualFunc(before, after, func(a, b store.Entry) bool {
		return a.Key == b.Key && a.Version == b.Version && bytes.Equal(a.Value, b.Value)
	}) {
		t.Fatalf("a refused batch changed the store:\nbefore %s\n after %s", describe(before), describe(after))
	}
}

func describe(es []store.Entry) string {
	parts := make([]string, 0, len(es))
	for _, e := range es {
		parts = append(parts, fmt.Sprintf("%s=%q@%d", e.Key, e.Value, e.Version))
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// wantBatchConflict checks err is a *store.BatchError for op index of
// ops, wrapping ErrVersionConflict.
func wantBatchConflict(t *testing.T, err error, ops []store.Op, index int) {
	t.Helper()
	var be *store.BatchError
	switch {
	case !errors.As(err, &be):
		t.Fatalf("want a *store.BatchError for op %d, got %v", index, err)
	case !errors.Is(err, store.ErrVersionConflict):
		t.Fatalf("BatchError does not wrap ErrVersionConflict: %v", err)
	case be.Index != index || be.Key != ops[index].Key:
		t.Fatalf("BatchError names op %d (%q), want op %d (%q): %v", be.Index, be.Key, index, ops[index].Key, err)
	}
}

// testBatchApply: puts and deletes in one batch all take effect, with
// versions in op order above every earlier version.
func testBatchApply(t *testing.T, kv store.KV) {
	b := mustBatcher(t, kv)
	vOld := mustPut(t, kv, "b/old", "old", store.PutOptions{})
	mustPut(t, kv, "b/gone", "gone", store.PutOptions{})
	vGone2 := mustPut(t, kv, "b/gone2", "gone", store.PutOptions{})
	last := mustPut(t, kv, "b/untouched", "u", store.PutOptions{})
	ops := []store.Op{
		{Key: "b/new", Value: []byte("new")},
		{Key: "b/gone", Delete: true},
		{Key: "b/old", Value: []byte("updated"), Check: true, Version: vOld},
		{Key: "b/absent", Delete: true}, // an unchecked delete of nothing
		{Key: "b/created", Value: nil, Check: true},
		{Key: "b/gone2", Delete: true, Check: true, Version: vGone2},
		{Key: "b/ignored-version", Value: []byte("x"), Version: 777}, // Check false: ignored
	}
	vs := mustApply(t, b, ops)
	prev := last
	for i, op := range ops {
		if op.Delete {
			continue
		}
		if vs[i] <= prev {
			t.Fatalf("versions %v not increasing in op order above %d", vs, last)
		}
		prev = vs[i]
	}
	wantEntry(t, kv, "b/new", "new", vs[0])
	wantMissing(t, kv, "b/gone")
	wantEntry(t, kv, "b/old", "updated", vs[2])
	wantMissing(t, kv, "b/absent")
	wantEntry(t, kv, "b/created", "", vs[4])
	if e := mustGet(t, kv, "b/created"); e.Value == nil {
		t.Fatal("a nil value in a batch was stored as nil, want empty")
	}
	wantMissing(t, kv, "b/gone2")
	wantEntry(t, kv, "b/ignored-version", "x", vs[6])
	wantEntry(t, kv, "b/untouched", "u", last)
	if got := keysOf(mustList(t, kv, store.ListOptions{Prefix: "b/"})); !slices.Equal(got, []string{"b/created", "b/ignored-version", "b/new", "b/old", "b/untouched"}) {
		t.Fatalf("List after batch = %q", got)
	}
	// Later writes, single or batched, go on above the batch.
	if v := mustPut(t, kv, "b/after", "", store.PutOptions{}); v <= vs[6] {
		t.Fatalf("Put after the batch got version %d, batch reached %d", v, vs[6])
	}
	// A batch of one op, and a batch of deletes only.
	one := mustApply(t, b, []store.Op{{Key: "b/one", Value: []byte("1")}})
	wantEntry(t, kv, "b/one", "1", one[0])
	mustApply(t, b, []store.Op{{Key: "b/one", Delete: true}, {Key: "b/new", Delete: true, Check: true, Version: vs[0]}})
	wantMissing(t, kv, "b/one")
	wantMissing(t, kv, "b/new")
}

// testBatchConflict: one failed check, wherever it is, writes nothing and
// names its op.
func testBatchConflict(t *testing.T, kv store.KV) {
	b := mustBatcher(t, kv)
	vA := mustPut(t, kv, "c/a", "a", store.PutOptions{})
	vA2 := mustPut(t, kv, "c/a", "a2", store.PutOptions{})
	vB := mustPut(t, kv, "c/b", "b", store.PutOptions{})
	mustPut(t, kv, "c/c", "c", store.PutOptions{})
	good := []store.Op{
		{Key: "c/a", Value: []byte("A"), Check: true, Version: vA2},
		{Key: "c/new", Value: []byte("N"), Check: true},
		{Key: "c/c", Delete: true},
		{Key: "c/free", Value: []byte("F")},
		{Key: "c/b", Delete: true, Check: true, Version: vB},
	}
	bad := []struct {
		name string
		op   store.Op
	}{
		{"create over existing", store.Op{Key: "c/b", Value: []byte("x"), Check: true}},
		{"create over existing empty", store.Op{Key: "c/empty", Value: []byte("x"), Check: true}},
		{"superseded version", store.Op{Key: "c/a", Value: []byte("x"), Check: true, Version: vA}},
		{"future version", store.Op{Key: "c/a", Value: []byte("x"), Check: true, Version: vA2 + 1000}},
		{"another key's version", store.Op{Key: "c/a", Value: []byte("x"), Check: true, Version: vB}},
		{"absent with version", store.Op{Key: "c/absent", Value: []byte("x"), Check: true, Version: vA2}},
		{"delete at superseded version", store.Op{Key: "c/a", Delete: true, Check: true, Version: vA}},
		{"delete must be absent but exists", store.Op{Key: "c/b", Delete: true, Check: true}},
		{"delete absent at version", store.Op{Key: "c/absent", Delete: true, Check: true, Version: vB}},
	}
	mustPut(t, kv, "c/empty", "", store.PutOptions{})
	before := snapshot(t, kv)
	for _, c := range bad {
		for _, pos := range []int{0, 2, len(good)} {
			t.Run(fmt.Sprintf("%s at %d", c.name, pos), func(t *testing.T) {
				var ops []store.Op
				for _, op := range good {
					if op.Key != c.op.Key {
						ops = append(ops, op)
					}
				}
				at := min(pos, len(ops))
				ops = slices.Insert(ops, at, c.op)
				_, err := b.Apply(bg(), ops)
				wantBatchConflict(t, err, ops, at)
				wantUnchanged(t, kv, before)
			})
		}
	}
	// Two failing ops: the first is named.
	ops := []store.Op{good[0], bad[0].op, good[1], bad[2].op}
	ops[3].Key = "c/empty"
	_, err := b.Apply(bg(), ops)
	wantBatchConflict(t, err, ops, 1)
	wantUnchanged(t, kv, before)
	// The same batch without the bad op goes through.
	vs := mustApply(t, b, good)
	wantEntry(t, kv, "c/a", "A", vs[0])
	wantEntry(t, kv, "c/new", "N", vs[1])
	wantMissing(t, kv, "c/c")
	wantMissing(t, kv, "c/b")
	// Replaying it now fails on its first check, and changes nothing.
	before = snapshot(t, kv)
	_, err = b.Apply(bg(), good)
	wantBatchConflict(t, err, good, 0)
	wantUnchanged(t, kv, before)
}

// testBatchChecks: create-only, update-at-version and checked deletes
// succeed exactly when their condition holds.
func testBatchChecks(t *testing.T, kv store.KV) {
	b := mustBatcher(t, kv)
	vs := mustApply(t, b, []store.Op{
		{Key: "k/1", Value: []byte("one"), Check: true},
		{Key: "k/2", Value: []byte("two"), Check: true},
	})
	_, err := b.Apply(bg(), []store.Op{{Key: "k/1", Value: []byte("dup"), Check: true}})
	wantBatchConflict(t, err, []store.Op{{Key: "k/1"}}, 0)
	up := mustApply(t, b, []store.Op{
		{Key: "k/1", Value: []byte("one'"), Check: true, Version: vs[0]},
		{Key: "k/2", Value: []byte("two'"), Check: true, Version: vs[1]},
	})
	wantEntry(t, kv, "k/1", "one'", up[0])
	wantEntry(t, kv, "k/2", "two'", up[1])
	// The old versions are stale now, for puts and deletes.
	for _, op := range []store.Op{
		{Key: "k/1", Value: []byte("stale"), Check: true, Version: vs[0]},
		{Key: "k/2", Delete: true, Check: true, Version: vs[1]},
	} {
		_, err := b.Apply(bg(), []store.Op{op})
		wantBatchConflict(t, err, []store.Op{op}, 0)
	}
	mustApply(t, b, []store.Op{
		{Key: "k/1", Delete: true, Check: true, Version: up[0]},
		{Key: "k/absent", Delete: true, Check: true}, // must be absent, is
		{Key: "k/2", Value: []byte("three"), Check: true, Version: up[1]},
	})
	wantMissing(t, kv, "k/1")
	wantMissing(t, kv, "k/absent")
	wantEntry(t, kv, "k/2", "three", 0)
	// A deleted key is re-created by a checked create, never with an old
	// version (no ABA), and the old version does not match it.
	re := mustApply(t, b, []store.Op{{Key: "k/1", Value: []byte("again"), Check: true}})
	if re[0] <= up[1] {
		t.Fatalf("re-created at version %d, not above %d", re[0], up[1])
	}
	op := store.Op{Key: "k/1", Value: []byte("aba"), Check: true, Version: up[0]}
	_, err = b.Apply(bg(), []store.Op{op})
	wantBatchConflict(t, err, []store.Op{op}, 0)
	// Single writes see the batch's versions.
	if _, err := kv.Put(bg(), "k/1", []byte("single"), store.PutOptions{Check: true, Version: re[0]}); err != nil {
		t.Fatalf("Put at the version a batch returned: %v", err)
	}
}

// testBatchRefused: batches breaking the argument rules are refused before
// anything is written.
func testBatchRefused(t *testing.T, kv store.KV) {
	b := mustBatcher(t, kv)
	mustPut(t, kv, "r/keep", "v", store.PutOptions{})
	before := snapshot(t, kv)
	ok := store.Op{Key: "r/ok", Value: []byte("v")}
	many := make([]store.Op, store.MaxBatchOps+1)
	for i := range many {
		many[i] = store.Op{Key: fmt.Sprintf("r/many/%05d", i)}
	}
	cases := []struct {
		name string
		ops  []store.Op
		want error
	}{
		{"nil", nil, store.ErrInvalidArgument},
		{"empty", []store.Op{}, store.ErrInvalidArgument},
		{"too many", many, store.ErrInvalidArgument},
		{"duplicate keys", []store.Op{ok, {Key: "r/x"}, {Key: "r/ok", Delete: true}}, store.ErrInvalidArgument},
		{"duplicate put", []store.Op{{Key: "r/x"}, {Key: "r/x"}}, store.ErrInvalidArgument},
		{"oversized value", []store.Op{ok, {Key: "r/big", Value: make([]byte, store.MaxValueSize+1)}}, store.ErrValueTooLarge},
		{"oversized checked value", []store.Op{{Key: "r/big", Value: make([]byte, store.MaxValueSize+1), Check: true}, ok}, store.ErrValueTooLarge},
	}
	for _, k := range invalidKeys {
		cases = append(cases, struct {
			name string
			ops  []store.Op
			want error
		}{"invalid key " + k.name, []store.Op{ok, {Key: k.key, Value: []byte("x")}}, store.ErrInvalidKey},
			struct {
				name string
				ops  []store.Op
				want error
			}{"invalid delete key " + k.name, []store.Op{{Key: k.key, Delete: true}, ok}, store.ErrInvalidKey})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			vs, err := b.Apply(bg(), c.ops)
			if !errors.Is(err, c.want) || vs != nil {
				t.Fatalf("Apply = %v, %v; want nil, %v", vs, err, c.want)
			}
			var be *store.BatchError
			if errors.As(err, &be) {
				t.Fatalf("a refused batch reported a failed check: %v", err)
			}
			wantUnchanged(t, kv, before)
		})
	}
	// Nothing was written, so the next version is above the last one.
	if v := mustPut(t, kv, "r/next", "", store.PutOptions{}); v <= before[0].Version {
		t.Fatalf("version %d after %d", v, before[0].Version)
	}
	// The largest batch allowed goes through whole.
	vs := mustApply(t, b, many[:store.MaxBatchOps])
	if es := mustList(t, kv, store.ListOptions{Prefix: "r/many/", Limit: store.MaxLimit}); len(es) != store.MaxBatchOps {
		t.Fatalf("a batch of MaxBatchOps wrote %d keys", len(es))
	}
	for i := 1; i < len(vs); i++ {
		if vs[i] <= vs[i-1] {
			t.Fatalf("versions not increasing at op %d: %d after %d", i, vs[i], vs[i-1])
		}
	}
	// A delete's Value is not checked (it is not stored).
	mustApply(t, b, []store.Op{{Key: "r/many/00000", Delete: true, Value: make([]byte, store.MaxValueSize+1)}})
	wantMissing(t, kv, "r/many/00000")
}

// testBatchValuesCopied: the store keeps no reference to a batch's values.
func testBatchValuesCopied(t *testing.T, kv store.KV) {
	b := mustBatcher(t, kv)
	v1, v2 := []byte("first"), []byte("second")
	ops := []store.Op{{Key: "v/1", Value: v1}, {Key: "v/2", Value: v2}}
	mustApply(t, b, ops)
	v1[0], v2[0] = 'X', 'Y'
	ops[0].Key = "v/changed"
	wantEntry(t, kv, "v/1", "first", 0)
	wantEntry(t, kv, "v/2", "second", 0)
	wantMissing(t, kv, "v/changed")
}

func testBatchContextDone(t *testing.T, kv store.KV) {
	b := mustBatcher(t, kv)
	v := mustPut(t, kv, "k", "v", store.PutOptions{})
	cancelled, cancel := context.WithCancel(bg())
	cancel()
	expired, cancel2 := context.WithTimeout(bg(), -1)
	defer cancel2()
	before := snapshot(t, kv)
	for _, c := range []struct {
		name string
		ctx  context.Context
		want error
	}{
		{"cancelled", cancelled, context.Canceled},
		{"deadline", expired, context.DeadlineExceeded},
	} {
		t.Run(c.name, func(t *testing.T) {
			vs, err := b.Apply(c.ctx, []store.Op{
				{Key: "new", Value: []byte("x")},
				{Key: "k", Value: []byte("x"), Check: true, Version: v},
			})
			if !errors.Is(err, c.want) || vs != nil {
				t.Fatalf("Apply = %v, %v; want an error wrapping %v", vs, err, c.want)
			}
			wantUnchanged(t, kv, before)
		})
	}
	if err := kv.Ping(bg()); err != nil {
		t.Fatalf("store unusable after batches with done contexts: %v", err)
	}
}

func testBatchClosed(t *testing.T, kv store.KV) {
	b := mustBatcher(t, kv)
	mustApply(t, b, []store.Op{{Key: "k", Value: []byte("v")}})
	if err := kv.Close(); err != nil {
		t.Fatal(err)
	}
	vs, err := b.Apply(bg(), []store.Op{{Key: "k", Value: []byte("w")}, {Key: "j", Delete: true}})
	if !errors.Is(err, store.ErrClosed) || vs != nil {
		t.Fatalf("Apply after Close = %v, %v; want ErrClosed", vs, err)
	}
}

// testBatchConcurrentCAS races batches from 8 goroutines, round after
// round, each batch a CAS on one shared key (at the version of the round),
// an unconditional write of a mirror key and a create of the worker's own
// key. Exactly one batch wins each round, only the winner's own key
// exists, and a reader never sees the shared and mirror keys apart: a
// batch is never partly visible.
func testBatchConcurrentCAS(t *testing.T, kv store.KV) {
	const workers, rounds = 8, 12
	b := mustBatcher(t, kv)
	v := mustApply(t, b, []store.Op{{Key: "pair/mirror", Value: []byte("init")}, {Key: "pair/shared", Value: []byte("init")}})[1]

	var stop atomic.Bool
	readerErr := make(chan error, 1)
	var reads atomic.Int64
	go func() {
		defer close(readerErr)
		for n := 0; !stop.Load() && n < 1_000_000; n++ {
			es, err := kv.List(bg(), store.ListOptions{Prefix: "pair/"})
			if err != nil {
				readerErr <- err
				return
			}
			if len(es) != 2 || !bytes.Equal(es[0].Value, es[1].Value) {
				readerErr <- fmt.Errorf("a batch was partly visible: %s", describe(es))
				return
			}
			reads.Add(1)
		}
	}()
	defer func() {
		stop.Store(true)
		for err := range readerErr {
			t.Error(err)
		}
	}()

	for r := range rounds {
		var wg sync.WaitGroup
		var mu sync.Mutex
		var winners []int
		var winVersions []int64
		var failures []error
		start := make(chan struct{})
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				val := []byte(fmt.Sprintf("%d:%d", r, w))
				ops := []store.Op{
					{Key: fmt.Sprintf("own/%d/%d", r, w), Value: val, Check: true},
					{Key: "pair/shared", Value: val, Check: true, Version: v},
					{Key: "pair/mirror", Value: val},
				}
				vs, err := b.Apply(bg(), ops)
				mu.Lock()
				defer mu.Unlock()
				var be *store.BatchError
				switch {
				case err == nil:
					winners = append(winners, w)
					winVersions = vs
				case errors.As(err, &be) && be.Index == 1 && errors.Is(err, store.ErrVersionConflict):
				default:
					failures = append(failures, err)
				}
			}()
		}
		close(start)
		wg.Wait()
		if len(failures) > 0 {
			t.Fatalf("round %d: %v", r, failures)
		}
		if len(winners) != 1 {
			t.Fatalf("round %d: %d batches won the CAS, want exactly 1", r, len(winners))
		}
		want := fmt.Sprintf("%d:%d", r, winners[0])
		wantEntry(t, kv, "pair/shared", want, winVersions[1])
		wantEntry(t, kv, "pair/mirror", want, winVersions[2])
		own := keysOf(mustList(t, kv, store.ListOptions{Prefix: fmt.Sprintf("own/%d/", r)}))
		if !slices.Equal(own, []string{fmt.Sprintf("own/%d/%d", r, winners[0])}) {
			t.Fatalf("round %d: own keys %q, want only the winner's (%d)", r, own, winners[0])
		}
		v = winVersions[1]
	}
	stop.Store(true)
	for err := range readerErr {
		t.Fatal(err)
	}
	if reads.Load() == 0 {
		t.Fatal("the reader never read")
	}
}

// testBatchRacingPuts races batches with single Puts on the same keys:
// every version handed out is distinct, CAS increments through either path
// are never lost, each key ends at the highest version written to it, and
// the batches' log keys exist exactly for the batches that won.
func testBatchRacingPuts(t *testing.T, kv store.KV) {
	const workers, incs, maxTries = 4, 15, 100000
	b := mustBatcher(t, kv)
	mustPut(t, kv, "race/ctr", "0", store.PutOptions{})
	var mu sync.Mutex
	seen := map[int64]string{}
	maxOf := map[string]int64{}
	record := func(key string, v int64) error {
		mu.Lock()
		defer mu.Unlock()
		if prev, dup := seen[v]; dup {
			return fmt.Errorf("version %d returned twice (%s and %s)", v, prev, key)
		}
		seen[v] = key
		maxOf[key] = max(maxOf[key], v)
		return nil
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2*workers)
	for w := range 2 * workers {
		batch := w%2 == 0
		wg.Add(1)
		go func() {
			defer wg.Done()
			for done, tries := 0, 0; done < incs; tries++ {
				if tries > maxTries {
					errs <- errors.New("too many CAS retries")
					return
				}
				e, err := kv.Get(bg(), "race/ctr")
				if err != nil {
					errs <- err
					return
				}
				n, err := strconv.Atoi(string(e.Value))
				if err != nil {
					errs <- fmt.Errorf("counter holds %q", e.Value)
					return
				}
				next := []byte(strconv.Itoa(n + 1))
				shared := fmt.Sprintf("race/shared/%d", tries%3)
				if !batch {
					v, err := kv.Put(bg(), "race/ctr", next, store.PutOptions{Check: true, Version: e.Version})
					if errors.Is(err, store.ErrVersionConflict) {
						continue
					}
					if err == nil {
						err = record("race/ctr", v)
					}
					if err == nil {
						v, err = kv.Put(bg(), shared, next, store.PutOptions{})
					}
					if err == nil {
						err = record(shared, v)
					}
					if err != nil {
						errs <- err
						return
					}
					done++
					continue
				}
				ops := []store.Op{
					{Key: shared, Value: next},
					{Key: "race/ctr", Value: next, Check: true, Version: e.Version},
					{Key: fmt.Sprintf("race/log/%d/%03d", w, done), Value: next, Check: true},
				}
				vs, err := b.Apply(bg(), ops)
				var be *store.BatchError
				if errors.As(err, &be) && be.Index == 1 {
					continue
				}
				if err != nil {
					errs <- err
					return
				}
				if !(vs[0] < vs[1] && vs[1] < vs[2]) {
					errs <- fmt.Errorf("batch versions %v not in op order", vs)
					return
				}
				for i, op := range ops {
					if err := record(op.Key, vs[i]); err != nil {
						errs <- err
						return
					}
				}
				done++
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	wantEntry(t, kv, "race/ctr", strconv.Itoa(2*workers*incs), maxOf["race/ctr"])
	for key, v := range maxOf {
		if e := mustGet(t, kv, key); e.Version != v {
			t.Fatalf("%s ends at version %d, want the last written %d", key, e.Version, v)
		}
	}
	if logs := mustList(t, kv, store.ListOptions{Prefix: "race/log/", Limit: store.MaxLimit}); len(logs) != workers*incs {
		t.Fatalf("%d log keys, want one per winning batch (%d)", len(logs), workers*incs)
	}
}

// testBatchWriteSkew races pairs of batches that each require the other's
// key to be absent and create their own. Run one after the other, the
// second always fails; so must they when they race: exactly one wins.
func testBatchWriteSkew(t *testing.T, kv store.KV) {
	const rounds = 20
	b := mustBatcher(t, kv)
	for r := range rounds {
		keys := [2]string{fmt.Sprintf("skew/%d/a", r), fmt.Sprintf("skew/%d/b", r)}
		var wg sync.WaitGroup
		errs := make([]error, 2)
		start := make(chan struct{})
		for i := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				_, errs[i] = b.Apply(bg(), []store.Op{
					{Key: keys[1-i], Delete: true, Check: true},
					{Key: keys[i], Value: []byte("mine"), Check: true},
				})
			}()
		}
		close(start)
		wg.Wait()
		won := 0
		for i, err := range errs {
			var be *store.BatchError
			switch {
			case err == nil:
				won++
			case errors.As(err, &be) && be.Index == 0 && be.Key == keys[1-i]:
			default:
				t.Fatalf("round %d, batch %d: %v", r, i, err)
			}
		}
		if won != 1 {
			t.Fatalf("round %d: %d of two exclusive batches won, want exactly 1", r, won)
		}
		if es := mustList(t, kv, store.ListOptions{Prefix: fmt.Sprintf("skew/%d/", r)}); len(es) != 1 {
			t.Fatalf("round %d: keys %q, want one", r, keysOf(es))
		}
	}
}

// hideBatcher is a KV without Apply, whatever the KV under it has.
type hideBatcher struct{ store.KV }

// testNamespaceBatch: a view of a Batcher is a Batcher confined to its
// prefix.
func testNamespaceBatch(t *testing.T, kv store.KV) {
	mustBatcher(t, kv)
	if ns, _ := store.NewNamespace(hideBatcher{kv}, "p/"); ns != nil {
		if _, ok := ns.(store.Batcher); ok {
			t.Fatal("the view of a KV without Apply claims to be a Batcher")
		}
	}
	mustPut(t, kv, "plugins/acme/outside", "secret", store.PutOptions{})
	ns := newNamespace(t, kv, "plugins/acme/main/")
	b := mustBatcher(t, ns)
	vs := mustApply(t, b, []store.Op{
		{Key: "order/1", Value: []byte("o1"), Check: true},
		{Key: "../outside", Value: []byte("mine")},
		{Key: "nonce/1", Value: []byte("n")},
	})
	wantEntry(t, kv, "plugins/acme/main/order/1", "o1", vs[0])
	wantEntry(t, kv, "plugins/acme/main/../outside", "mine", vs[1])
	wantEntry(t, kv, "plugins/acme/outside", "secret", 0)
	wantEntry(t, ns, "nonce/1", "n", vs[2])

	// A failed check names the view's key, and writes nothing.
	before := snapshot(t, kv)
	ops := []store.Op{
		{Key: "order/2", Value: []byte("o2"), Check: true},
		{Key: "order/1", Value: []byte("again"), Check: true},
		{Key: "nonce/1", Delete: true},
	}
	_, err := b.Apply(bg(), ops)
	wantBatchConflict(t, err, ops, 1)
	wantUnchanged(t, kv, before)
	mustApply(t, b, []store.Op{{Key: "order/1", Value: []byte("o1'"), Check: true, Version: vs[0]}, {Key: "nonce/1", Delete: true, Check: true, Version: vs[2]}})
	wantMissing(t, kv, "plugins/acme/main/nonce/1")

	// Keys are checked like the view's Put: too long with the prefix,
	// invalid, duplicate.
	before = snapshot(t, kv)
	long := strings.Repeat("k", store.MaxKeySize-len("plugins/acme/main/")+1)
	for _, c := range []struct {
		name string
		ops  []store.Op
		want error
	}{
		{"too long with the prefix", []store.Op{{Key: "ok"}, {Key: long}}, store.ErrInvalidKey},
		{"invalid", []store.Op{{Key: "ok"}, {Key: "a\x00"}}, store.ErrInvalidKey},
		{"duplicate", []store.Op{{Key: "ok"}, {Key: "ok", Delete: true}}, store.ErrInvalidArgument},
		{"empty", nil, store.ErrInvalidArgument},
	} {
		if _, err := b.Apply(bg(), c.ops); !errors.Is(err, c.want) {
			t.Errorf("view Apply %s: want %v, got %v", c.name, c.want, err)
		}
	}
	wantUnchanged(t, kv, before)
	mustApply(t, b, []store.Op{{Key: long[1:]}})

	// Views nest.
	inner := newNamespace(t, ns, "sub/")
	ib := mustBatcher(t, inner)
	iv := mustApply(t, ib, []store.Op{{Key: "x", Value: []byte("nested")}})
	wantEntry(t, kv, "plugins/acme/main/sub/x", "nested", iv[0])
	iops := []store.Op{{Key: "y"}, {Key: "x", Check: true}}
	_, err = ib.Apply(bg(), iops)
	wantBatchConflict(t, err, iops, 1)

	// A closed view refuses; the store and other views go on.
	if err := ns.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Apply(bg(), []store.Op{{Key: "late"}}); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("closed view Apply: want ErrClosed, got %v", err)
	}
	wantMissing(t, kv, "plugins/acme/main/late")
	mustApply(t, mustBatcher(t, newNamespace(t, kv, "plugins/acme/main/")), []store.Op{{Key: "late"}})
}
