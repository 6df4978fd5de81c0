// Package storetest is the conformance suite for store.KV and
// store.Batcher. Every backend (embedded, PostgreSQL, Redis, the in-memory
// double memstore) calls Run from its own tests; a backend is correct when
// Run passes against it, and a new rule of the store.KV or store.Batcher
// contract gets its test here, once, for all of them. Every backend of this
// module implements store.Batcher, so Run fails a store that does not.
//
// It must not depend on any backend, and it measures no time: nothing here
// passes or fails on speed. Benchmarks live with each backend; BenchApply
// is the one body they share.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/avonzt/avon/core/store"
)

// Run runs the suite. open must return a new, empty store on each call; Run
// closes every store it opens (through t.Cleanup), and the subtests may run
// in any order. The store must also implement store.Batcher.
func Run(t *testing.T, open func(t *testing.T) store.KV) {
	t.Helper()
	t.Run("ImplementsBatcher", func(t *testing.T) {
		kv := open(t)
		t.Cleanup(func() { _ = kv.Close() })
		mustBatcher(t, kv)
	})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			kv := open(t)
			t.Cleanup(func() { _ = kv.Close() })
			c.fn(t, kv)
		})
	}
}

var cases = []struct {
	name string
	fn   func(t *testing.T, kv store.KV)
}{
	{"GetMissing", testGetMissing},
	{"PutGetRoundTrip", testRoundTrip},
	{"OverwriteBumpsVersion", testOverwrite},
	{"VersionsGlobalAndNeverReused", testVersionsNeverReused},
	{"CASCreate", testCASCreate},
	{"CASUpdate", testCASUpdate},
	{"Delete", testDelete},
	{"DeleteChecked", testDeleteChecked},
	{"ListSelection", testListSelection},
	{"ListBytewiseOrder", testListBytewiseOrder},
	{"ListPaging", testListPaging},
	{"ListLimits", testListLimits},
	{"InvalidKeys", testInvalidKeys},
	{"KeyBoundaries", testKeyBoundaries},
	{"ValueSize", testValueSize},
	{"ValuesAreCopied", testValuesCopied},
	{"ContextDone", testContextDone},
	{"ConcurrentCASCounter", testConcurrentCAS},
	{"ConcurrentCreateOneWinner", testConcurrentCreate},
	{"ConcurrentVersionsUnique", testConcurrentVersionsUnique},
	{"Closed", testClosed},
	{"NamespaceIsolation", testNamespaceIsolation},
	{"NamespaceOperations", testNamespaceOperations},
	{"NamespacePrefixRules", testNamespacePrefixRules},
	{"NamespaceClose", testNamespaceClose},
	{"BatchApply", testBatchApply},
	{"BatchConflictWritesNothing", testBatchConflict},
	{"BatchChecks", testBatchChecks},
	{"BatchRefused", testBatchRefused},
	{"BatchValuesAreCopied", testBatchValuesCopied},
	{"BatchContextDone", testBatchContextDone},
	{"BatchClosed", testBatchClosed},
	{"BatchConcurrentCAS", testBatchConcurrentCAS},
	{"BatchRacingPuts", testBatchRacingPuts},
	{"BatchWriteSkew", testBatchWriteSkew},
	{"NamespaceBatch", testNamespaceBatch},
}

func bg() context.Context { return context.Background() }

func mustPut(t *testing.T, kv store.KV, k, v string, o store.PutOptions) int64 {
	t.Helper()
	ver, err := kv.Put(bg(), k, []byte(v), o)
	if err != nil {
		t.Fatalf("Put(%q): %v", k, err)
	}
	if ver <= 0 {
		t.Fatalf("Put(%q) returned version %d, want > 0", k, ver)
	}
	return ver
}

func mustGet(t *testing.T, kv store.KV, k string) store.Entry {
	t.Helper()
	e, err := kv.Get(bg(), k)
	if err != nil {
		t.Fatalf("Get(%q): %v", k, err)
	}
	if e.Key != k {
		t.Fatalf("Get(%q) returned key %q", k, e.Key)
	}
	return e
}

// wantEntry checks k holds value at version (version 0: any).
func wantEntry(t *testing.T, kv store.KV, k, value string, version int64) {
	t.Helper()
	e := mustGet(t, kv, k)
	if string(e.Value) != value || (version != 0 && e.Version != version) {
		t.Fatalf("Get(%q) = %q@%d, want %q@%d", k, e.Value, e.Version, value, version)
	}
}

func wantMissing(t *testing.T, kv store.KV, k string) {
	t.Helper()
	if e, err := kv.Get(bg(), k); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get(%q) = %+v, %v; want ErrNotFound", k, e, err)
	}
}

func mustList(t *testing.T, kv store.KV, o store.ListOptions) []store.Entry {
	t.Helper()
	es, err := kv.List(bg(), o)
	if err != nil {
		t.Fatalf("List(%+v): %v", o, err)
	}
	return es
}

func keysOf(es []store.Entry) []string {
	ks := make([]string, 0, len(es))
	for _, e := range es {
		ks = append(ks, e.Key)
	}
	return ks
}

func testGetMissing(t *testing.T, kv store.KV) {
	wantMissing(t, kv, "nope")
	mustPut(t, kv, "nope/child", "x", store.PutOptions{})
	wantMissing(t, kv, "nope")
	wantMissing(t, kv, "nop")
}

func testRoundTrip(t *testing.T, kv store.KV) {
	values := []struct {
		name string
		in   []byte
		want []byte
	}{
		{"nil", nil, []byte{}},
		{"empty", []byte{}, []byte{}},
		{"text", []byte("hello"), []byte("hello")},
		{"binary", bytes.Repeat([]byte{0, 255, 7, '\n'}, 1000), bytes.Repeat([]byte{0, 255, 7, '\n'}, 1000)},
		{"1MiB", bytes.Repeat([]byte{0xa5}, 1<<20), bytes.Repeat([]byte{0xa5}, 1<<20)},
	}
	for _, v := range values {
		t.Run(v.name, func(t *testing.T) {
			k := "round/" + v.name
			ver, err := kv.Put(bg(), k, v.in, store.PutOptions{})
			if err != nil {
				t.Fatal(err)
			}
			e := mustGet(t, kv, k)
			if e.Value == nil || !bytes.Equal(e.Value, v.want) || e.Version != ver {
				t.Fatalf("Get = %d bytes (nil %v) @%d; want %d bytes @%d", len(e.Value), e.Value == nil, e.Version, len(v.want), ver)
			}
		})
	}
}

func testOverwrite(t *testing.T, kv store.KV) {
	v1 := mustPut(t, kv, "k", "one", store.PutOptions{})
	v2 := mustPut(t, kv, "k", "two", store.PutOptions{})
	if v2 <= v1 {
		t.Fatalf("overwrite returned version %d after %d", v2, v1)
	}
	wantEntry(t, kv, "k", "two", v2)
	// Same bytes again still count as a write.
	v3 := mustPut(t, kv, "k", "two", store.PutOptions{})
	if v3 <= v2 {
		t.Fatalf("identical overwrite returned version %d after %d", v3, v2)
	}
	// Check false ignores Version.
	v4 := mustPut(t, kv, "k", "three", store.PutOptions{Version: 12345})
	wantEntry(t, kv, "k", "three", v4)
}

func testVersionsNeverReused(t *testing.T, kv store.KV) {
	var last int64
	step := func(v int64) {
		t.Helper()
		if v <= last {
			t.Fatalf("version %d not above previous %d", v, last)
		}
		last = v
	}
	step(mustPut(t, kv, "a", "1", store.PutOptions{}))
	step(mustPut(t, kv, "b", "1", store.PutOptions{}))
	va := mustPut(t, kv, "a", "2", store.PutOptions{})
	step(va)
	if err := kv.Delete(bg(), "a", store.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// Re-created, with and without a check: never an old version (no ABA).
	va2 := mustPut(t, kv, "a", "again", store.PutOptions{Check: true})
	step(va2)
	if _, err := kv.Put(bg(), "a", []byte("stale"), store.PutOptions{Check: true, Version: va}); !errors.Is(err, store.ErrVersionConflict) {
		t.Fatalf("CAS with the version of a deleted incarnation: want ErrVersionConflict, got %v", err)
	}
	if err := kv.Delete(bg(), "b", store.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	step(mustPut(t, kv, "b", "again", store.PutOptions{}))
	step(mustPut(t, kv, "c", "1", store.PutOptions{}))
}

func testCASCreate(t *testing.T, kv store.KV) {
	v1 := mustPut(t, kv, "k", "one", store.PutOptions{Check: true, Version: 0})
	if _, err := kv.Put(bg(), "k", []byte("dup"), store.PutOptions{Check: true, Version: 0}); !errors.Is(err, store.ErrVersionConflict) {
		t.Fatalf("create over an existing key: want ErrVersionConflict, got %v", err)
	}
	wantEntry(t, kv, "k", "one", v1)
	// An existing empty value is still an existing key.
	mustPut(t, kv, "empty", "", store.PutOptions{})
	if _, err := kv.Put(bg(), "empty", []byte("x"), store.PutOptions{Check: true}); !errors.Is(err, store.ErrVersionConflict) {
		t.Fatalf("create over an empty value: want ErrVersionConflict, got %v", err)
	}
	wantEntry(t, kv, "empty", "", 0)
}

func testCASUpdate(t *testing.T, kv store.KV) {
	v1 := mustPut(t, kv, "k", "one", store.PutOptions{})
	other := mustPut(t, kv, "other", "x", store.PutOptions{})
	for _, c := range []struct {
		name    string
		key     string
		version int64
	}{
		{"future version", "k", v1 + 1000},
		{"another key's version", "k", other},
		{"negative version", "k", -1},
		{"absent key", "absent", v1},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := kv.Put(bg(), c.key, []byte("bad"), store.PutOptions{Check: true, Version: c.version}); !errors.Is(err, store.ErrVersionConflict) {
				t.Fatalf("want ErrVersionConflict, got %v", err)
			}
		})
	}
	wantEntry(t, kv, "k", "one", v1)
	wantMissing(t, kv, "absent")
	v2 := mustPut(t, kv, "k", "two", store.PutOptions{Check: true, Version: v1})
	wantEntry(t, kv, "k", "two", v2)
	if _, err := kv.Put(bg(), "k", []byte("stale"), store.PutOptions{Check: true, Version: v1}); !errors.Is(err, store.ErrVersionConflict) {
		t.Fatalf("CAS with a superseded version: want ErrVersionConflict, got %v", err)
	}
	wantEntry(t, kv, "k", "two", v2)
}

func testDelete(t *testing.T, kv store.KV) {
	if err := kv.Delete(bg(), "absent", store.DeleteOptions{}); err != nil {
		t.Fatalf("unchecked delete of an absent key: %v", err)
	}
	mustPut(t, kv, "k", "v", store.PutOptions{})
	mustPut(t, kv, "k/child", "v", store.PutOptions{})
	if err := kv.Delete(bg(), "k", store.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	wantMissing(t, kv, "k")
	wantEntry(t, kv, "k/child", "v", 0) // no prefix deletes
	if err := kv.Delete(bg(), "k", store.DeleteOptions{}); err != nil {
		t.Fatalf("second delete: %v", err)
	}
	if ks := keysOf(mustList(t, kv, store.ListOptions{})); !slices.Equal(ks, []string{"k/child"}) {
		t.Fatalf("List after delete = %q", ks)
	}
}

func testDeleteChecked(t *testing.T, kv store.KV) {
	v1 := mustPut(t, kv, "k", "one", store.PutOptions{})
	v2 := mustPut(t, kv, "k", "two", store.PutOptions{})
	for _, c := range []struct {
		name string
		key  string
		o    store.DeleteOptions
	}{
		{"superseded version", "k", store.DeleteOptions{Check: true, Version: v1}},
		{"future version", "k", store.DeleteOptions{Check: true, Version: v2 + 1000}},
		{"must be absent but exists", "k", store.DeleteOptions{Check: true, Version: 0}},
		{"absent key with version", "absent", store.DeleteOptions{Check: true, Version: v2}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := kv.Delete(bg(), c.key, c.o); !errors.Is(err, store.ErrVersionConflict) {
				t.Fatalf("want ErrVersionConflict, got %v", err)
			}
		})
	}
	wantEntry(t, kv, "k", "two", v2)
	if err := kv.Delete(bg(), "absent", store.DeleteOptions{Check: true, Version: 0}); err != nil {
		t.Fatalf("checked delete of an absent key expected absent: %v", err)
	}
	if err := kv.Delete(bg(), "k", store.DeleteOptions{Check: true, Version: v2}); err != nil {
		t.Fatalf("checked delete at the current version: %v", err)
	}
	wantMissing(t, kv, "k")
	if err := kv.Delete(bg(), "k", store.DeleteOptions{Check: true, Version: v2}); !errors.Is(err, store.ErrVersionConflict) {
		t.Fatalf("checked delete of a deleted key: want ErrVersionConflict, got %v", err)
	}
}

func testListSelection(t *testing.T, kv store.KV) {
	keys := []string{"a/1", "a/2", "a/10", "a/b/1", "ab", "b/1", "a", "a/\u00e9", "a0"}
	versions := map[string]int64{}
	for _, k := range keys {
		versions[k] = mustPut(t, kv, k, "v-"+k, store.PutOptions{})
	}
	for _, c := range []struct {
		name string
		o    store.ListOptions
		want string
	}{
		{"all", store.ListOptions{}, "a,a/1,a/10,a/2,a/b/1,a/\u00e9,a0,ab,b/1"},
		{"prefix", store.ListOptions{Prefix: "a/"}, "a/1,a/10,a/2,a/b/1,a/\u00e9"},
		{"prefix is a key", store.ListOptions{Prefix: "a"}, "a,a/1,a/10,a/2,a/b/1,a/\u00e9,a0,ab"},
		{"prefix and after", store.ListOptions{Prefix: "a/", After: "a/10"}, "a/2,a/b/1,a/\u00e9"},
		{"after not a key", store.ListOptions{Prefix: "a/", After: "a/11"}, "a/2,a/b/1,a/\u00e9"},
		{"prefix and limit", store.ListOptions{Prefix: "a/", Limit: 2}, "a/1,a/10"},
		{"after the last", store.ListOptions{Prefix: "a/", After: "a/\u00e9"}, ""},
		{"after beyond the prefix", store.ListOptions{Prefix: "a/", After: "b"}, ""},
		{"after before the prefix", store.ListOptions{Prefix: "b/", After: "a"}, "b/1"},
		{"no match", store.ListOptions{Prefix: "zzz"}, ""},
		{"after only", store.ListOptions{After: "a/2"}, "a/b/1,a/\u00e9,a0,ab,b/1"},
		{"after equals prefix", store.ListOptions{Prefix: "a", After: "a"}, "a/1,a/10,a/2,a/b/1,a/\u00e9,a0,ab"},
		{"limit 1", store.ListOptions{Limit: 1}, "a"},
	} {
		t.Run(c.name, func(t *testing.T) {
			es := mustList(t, kv, c.o)
			for _, e := range es {
				if string(e.Value) != "v-"+e.Key || e.Version != versions[e.Key] {
					t.Fatalf("entry %q = %q@%d, want %q@%d", e.Key, e.Value, e.Version, "v-"+e.Key, versions[e.Key])
				}
			}
			if got := strings.Join(keysOf(es), ","); got != c.want {
				t.Fatalf("List(%+v) = %q, want %q", c.o, got, c.want)
			}
		})
	}
}

// testListBytewiseOrder checks List against Go's string order (bytewise) on
// keys mixing ASCII, multi-byte UTF-8 and characters past the BMP, which
// UTF-16 or locale collations order differently.
func testListBytewiseOrder(t *testing.T, kv store.KV) {
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []string{"a", "B", "z", "~", " ", "/", "0", "\u00e9", "\u00ff", "\u0100", "\u20ac", "\uff5e", "\U0001f600", "\U00010000"}
	set := map[string]bool{}
	for len(set) < 60 {
		var b strings.Builder
		b.WriteString("o/")
		for n := 1 + rng.IntN(4); n > 0; n-- {
			b.WriteString(alphabet[rng.IntN(len(alphabet))])
		}
		set[b.String()] = true
	}
	want := make([]string, 0, len(set))
	for k := range set {
		want = append(want, k)
		mustPut(t, kv, k, k, store.PutOptions{})
	}
	slices.Sort(want)
	if got := keysOf(mustList(t, kv, store.ListOptions{Prefix: "o/"})); !slices.Equal(got, want) {
		t.Fatalf("List order\n got %q\nwant %q", got, want)
	}
	// After an arbitrary bound, still bytewise.
	after := want[len(want)/2]
	if got := keysOf(mustList(t, kv, store.ListOptions{Prefix: "o/", After: after})); !slices.Equal(got, want[len(want)/2+1:]) {
		t.Fatalf("List after %q\n got %q\nwant %q", after, got, want[len(want)/2+1:])
	}
}

func testListPaging(t *testing.T, kv store.KV) {
	const n, page = 257, 50
	for i := range n {
		mustPut(t, kv, fmt.Sprintf("p/%04d", i), strconv.Itoa(i), store.PutOptions{})
	}
	mustPut(t, kv, "p0", "outside", store.PutOptions{})
	mustPut(t, kv, "o", "outside", store.PutOptions{})
	seen, after := 0, ""
	for pages := 0; ; pages++ {
		if pages > n/page+1 {
			t.Fatalf("paging did not end after %d pages", pages)
		}
		es := mustList(t, kv, store.ListOptions{Prefix: "p/", After: after, Limit: page})
		if len(es) > page {
			t.Fatalf("page of %d entries, limit %d", len(es), page)
		}
		for _, e := range es {
			if want := fmt.Sprintf("p/%04d", seen); e.Key != want || string(e.Value) != strconv.Itoa(seen) {
				t.Fatalf("paging: got %s=%q, want %s", e.Key, e.Value, want)
			}
			seen++
		}
		if len(es) < page {
			break
		}
		after = es[len(es)-1].Key
	}
	if seen != n {
		t.Fatalf("paged over %d keys, want %d", seen, n)
	}
}

func testListLimits(t *testing.T, kv store.KV) {
	for _, lim := range []int{-1, store.MaxLimit + 1} {
		if _, err := kv.List(bg(), store.ListOptions{Limit: lim}); !errors.Is(err, store.ErrInvalidArgument) {
			t.Errorf("List limit %d: want ErrInvalidArgument, got %v", lim, err)
		}
	}
	for _, o := range []store.ListOptions{{Prefix: "a\x00"}, {After: "\xff"}, {Prefix: strings.Repeat("p", store.MaxKeySize+1)}} {
		if _, err := kv.List(bg(), o); !errors.Is(err, store.ErrInvalidKey) {
			t.Errorf("List(%+v): want ErrInvalidKey, got %v", o, err)
		}
	}
	// Limit 0 means DefaultLimit.
	for i := range store.DefaultLimit + 1 {
		mustPut(t, kv, fmt.Sprintf("d/%05d", i), "", store.PutOptions{})
	}
	if es := mustList(t, kv, store.ListOptions{Prefix: "d/"}); len(es) != store.DefaultLimit {
		t.Fatalf("List with limit 0 returned %d entries, want DefaultLimit %d", len(es), store.DefaultLimit)
	}
	if es := mustList(t, kv, store.ListOptions{Prefix: "d/", Limit: store.MaxLimit}); len(es) != store.DefaultLimit+1 {
		t.Fatalf("List with limit MaxLimit returned %d entries, want %d", len(es), store.DefaultLimit+1)
	}
}

var invalidKeys = []struct{ name, key string }{
	{"empty", ""},
	{"NUL", "a\x00b"},
	{"trailing NUL", "ab\x00"},
	{"newline", "a\nb"},
	{"tab", "a\tb"},
	{"DEL", "a\x7fb"},
	{"C1 control", "a\u0085b"},
	{"too long", strings.Repeat("k", store.MaxKeySize+1)},
	{"too long multibyte", strings.Repeat("\u00e9", store.MaxKeySize/2) + "x"},
	{"invalid UTF-8", "bad\xffutf8"},
	{"truncated UTF-8", "a\xc3"},
	{"surrogate half", "a\xed\xa0\x80"},
}

func testInvalidKeys(t *testing.T, kv store.KV) {
	v := mustPut(t, kv, "keep", "v", store.PutOptions{})
	for _, c := range invalidKeys {
		t.Run(c.name, func(t *testing.T) {
			if err := store.ValidateKey(c.key); !errors.Is(err, store.ErrInvalidKey) {
				t.Errorf("ValidateKey: want ErrInvalidKey, got %v", err)
			}
			if _, err := kv.Put(bg(), c.key, []byte("x"), store.PutOptions{}); !errors.Is(err, store.ErrInvalidKey) {
				t.Errorf("Put: want ErrInvalidKey, got %v", err)
			}
			if _, err := kv.Put(bg(), c.key, []byte("x"), store.PutOptions{Check: true}); !errors.Is(err, store.ErrInvalidKey) {
				t.Errorf("checked Put: want ErrInvalidKey, got %v", err)
			}
			if _, err := kv.Get(bg(), c.key); !errors.Is(err, store.ErrInvalidKey) {
				t.Errorf("Get: want ErrInvalidKey, got %v", err)
			}
			if err := kv.Delete(bg(), c.key, store.DeleteOptions{}); !errors.Is(err, store.ErrInvalidKey) {
				t.Errorf("Delete: want ErrInvalidKey, got %v", err)
			}
		})
	}
	es := mustList(t, kv, store.ListOptions{})
	if len(es) != 1 || es[0].Key != "keep" || es[0].Version != v {
		t.Fatalf("refused calls changed the store: %q", keysOf(es))
	}
	// Nothing was written, so no version was spent either.
	if v2 := mustPut(t, kv, "next", "", store.PutOptions{}); v2 <= v {
		t.Fatalf("version %d after %d", v2, v)
	}
}

func testKeyBoundaries(t *testing.T, kv store.KV) {
	for _, k := range []string{
		strings.Repeat("k", store.MaxKeySize),
		strings.Repeat("\u00e9", store.MaxKeySize/2),
		strings.Repeat("\U0001f600", store.MaxKeySize/4),
		"../x", "/", "//", "a//b", " ", "%00", "\\", "'; DROP TABLE kv; --", "\u200b", "\ufffd",
	} {
		if err := store.ValidateKey(k); err != nil {
			t.Fatalf("ValidateKey(%q): %v", k, err)
		}
		v := mustPut(t, kv, k, "v:"+k, store.PutOptions{})
		wantEntry(t, kv, k, "v:"+k, v)
	}
	es := mustList(t, kv, store.ListOptions{})
	if len(es) != 13 {
		t.Fatalf("listed %d keys, want 13", len(es))
	}
}

func testValueSize(t *testing.T, kv store.KV) {
	v := mustPut(t, kv, "k", "small", store.PutOptions{})
	if _, err := kv.Put(bg(), "k", make([]byte, store.MaxValueSize+1), store.PutOptions{}); !errors.Is(err, store.ErrValueTooLarge) {
		t.Fatalf("overwrite with MaxValueSize+1 bytes: want ErrValueTooLarge, got %v", err)
	}
	if _, err := kv.Put(bg(), "big", make([]byte, store.MaxValueSize+1), store.PutOptions{Check: true}); !errors.Is(err, store.ErrValueTooLarge) {
		t.Fatalf("create with MaxValueSize+1 bytes: want ErrValueTooLarge, got %v", err)
	}
	wantEntry(t, kv, "k", "small", v)
	wantMissing(t, kv, "big")
	full := bytes.Repeat([]byte("0123456789abcdef"), store.MaxValueSize/16)
	vm, err := kv.Put(bg(), "max", full, store.PutOptions{})
	if err != nil {
		t.Fatalf("value of exactly MaxValueSize: %v", err)
	}
	e := mustGet(t, kv, "max")
	if e.Version != vm || !bytes.Equal(e.Value, full) {
		t.Fatalf("value of MaxValueSize did not round-trip (%d bytes back)", len(e.Value))
	}
}

func testValuesCopied(t *testing.T, kv store.KV) {
	in := []byte("original")
	if _, err := kv.Put(bg(), "k", in, store.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	in[0] = 'X'
	wantEntry(t, kv, "k", "original", 0)

	e := mustGet(t, kv, "k")
	e.Value[0] = 'Y'
	wantEntry(t, kv, "k", "original", 0)

	es := mustList(t, kv, store.ListOptions{})
	es[0].Value[0] = 'Z'
	wantEntry(t, kv, "k", "original", 0)

	// Two reads never share a slice.
	a, b := mustGet(t, kv, "k"), mustGet(t, kv, "k")
	a.Value[1] = '!'
	if string(b.Value) != "original" {
		t.Fatalf("two Gets share a slice: %q", b.Value)
	}
}

func testContextDone(t *testing.T, kv store.KV) {
	v := mustPut(t, kv, "k", "v", store.PutOptions{})
	cancelled, cancel := context.WithCancel(bg())
	cancel()
	expired, cancel2 := context.WithTimeout(bg(), -1)
	defer cancel2()
	for _, c := range []struct {
		name string
		ctx  context.Context
		want error
	}{
		{"cancelled", cancelled, context.Canceled},
		{"deadline", expired, context.DeadlineExceeded},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := c.ctx
			check := func(op string, err error) {
				t.Helper()
				if !errors.Is(err, c.want) {
					t.Errorf("%s: want an error wrapping %v, got %v", op, c.want, err)
				}
			}
			_, err := kv.Put(ctx, "new", []byte("x"), store.PutOptions{})
			check("Put", err)
			_, err = kv.Put(ctx, "k", []byte("x"), store.PutOptions{Check: true, Version: v})
			check("checked Put", err)
			_, err = kv.Get(ctx, "k")
			check("Get", err)
			check("Delete", kv.Delete(ctx, "k", store.DeleteOptions{}))
			_, err = kv.List(ctx, store.ListOptions{})
			check("List", err)
			check("Ping", kv.Ping(ctx))
			wantMissing(t, kv, "new")
			wantEntry(t, kv, "k", "v", v)
		})
	}
	if err := kv.Ping(bg()); err != nil {
		t.Fatalf("store unusable after calls with done contexts: %v", err)
	}
}

// testConcurrentCAS races read-modify-write increments of one counter: with
// a correct compare-and-set none is lost. Retries are bounded so a broken
// backend fails instead of spinning.
func testConcurrentCAS(t *testing.T, kv store.KV) {
	const workers, incs, maxTries = 8, 25, 100000
	mustPut(t, kv, "counter", "0", store.PutOptions{})
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for done, tries := 0, 0; done < incs; tries++ {
				if tries > maxTries {
					errs <- errors.New("too many CAS retries")
					return
				}
				e, err := kv.Get(bg(), "counter")
				if err != nil {
					errs <- err
					return
				}
				n, err := strconv.Atoi(string(e.Value))
				if err != nil {
					errs <- fmt.Errorf("counter holds %q", e.Value)
					return
				}
				_, err = kv.Put(bg(), "counter", []byte(strconv.Itoa(n+1)), store.PutOptions{Check: true, Version: e.Version})
				if errors.Is(err, store.ErrVersionConflict) {
					continue
				}
				if err != nil {
					errs <- err
					return
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
	wantEntry(t, kv, "counter", strconv.Itoa(workers*incs), 0)
}

// testConcurrentCreate races creates of one key: exactly one wins.
func testConcurrentCreate(t *testing.T, kv store.KV) {
	const workers, rounds = 8, 5
	for r := range rounds {
		key := "lock/" + strconv.Itoa(r)
		var wg sync.WaitGroup
		var mu sync.Mutex
		var winners []int
		var failures []error
		start := make(chan struct{})
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				_, err := kv.Put(bg(), key, []byte(strconv.Itoa(w)), store.PutOptions{Check: true})
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					winners = append(winners, w)
				case !errors.Is(err, store.ErrVersionConflict):
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
			t.Fatalf("round %d: %d creates won, want exactly 1", r, len(winners))
		}
		wantEntry(t, kv, key, strconv.Itoa(winners[0]), 0)
	}
}

// testConcurrentVersionsUnique: concurrent unconditional writes get distinct
// versions, and each key ends at the highest version written to it.
func testConcurrentVersionsUnique(t *testing.T, kv store.KV) {
	const workers, puts = 6, 20
	var wg sync.WaitGroup
	var mu sync.Mutex
	seen := map[int64]string{}
	maxOf := map[string]int64{}
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range puts {
				key := "shared/" + strconv.Itoa(i%3)
				v, err := kv.Put(bg(), key, []byte(fmt.Sprintf("%d-%d", w, i)), store.PutOptions{})
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				if prev, dup := seen[v]; dup {
					mu.Unlock()
					errs <- fmt.Errorf("version %d returned twice (%s and %s)", v, prev, key)
					return
				}
				seen[v] = key
				maxOf[key] = max(maxOf[key], v)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for key, v := range maxOf {
		if e := mustGet(t, kv, key); e.Version != v {
			t.Fatalf("%s ends at version %d, want the last written %d", key, e.Version, v)
		}
	}
}

func testClosed(t *testing.T, kv store.KV) {
	mustPut(t, kv, "k", "v", store.PutOptions{})
	if err := kv.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	check := func(op string, err error) {
		t.Helper()
		if !errors.Is(err, store.ErrClosed) {
			t.Errorf("%s after Close: want ErrClosed, got %v", op, err)
		}
	}
	_, err := kv.Get(bg(), "k")
	check("Get", err)
	_, err = kv.Put(bg(), "k", nil, store.PutOptions{})
	check("Put", err)
	check("Delete", kv.Delete(bg(), "k", store.DeleteOptions{}))
	_, err = kv.List(bg(), store.ListOptions{})
	check("List", err)
	check("Ping", kv.Ping(bg()))
	if err := kv.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func newNamespace(t *testing.T, kv store.KV, prefix string) store.KV {
	t.Helper()
	ns, err := store.NewNamespace(kv, prefix)
	if err != nil {
		t.Fatalf("NewNamespace(%q): %v", prefix, err)
	}
	return ns
}

func testNamespaceIsolation(t *testing.T, kv store.KV) {
	outside := []string{"outside", "plugins/kms/soft", "plugins/kms/soft-other/k", "plugins/kms/softk", "plugins/kms/", "plugins/kms/sof", "plugins/kms/soft0"}
	for _, k := range outside {
		mustPut(t, kv, k, "secret", store.PutOptions{})
	}
	ns := newNamespace(t, kv, "plugins/kms/soft/")
	mustPut(t, ns, "k", "mine", store.PutOptions{})
	mustPut(t, ns, "../outside", "mine", store.PutOptions{})
	mustPut(t, ns, "/outside", "mine", store.PutOptions{})

	// "../x" and "/x" are ordinary keys under the prefix.
	wantEntry(t, kv, "plugins/kms/soft/../outside", "mine", 0)
	wantEntry(t, kv, "plugins/kms/soft//outside", "mine", 0)
	for _, k := range []string{"outside", "../../../outside", "../soft-other/k", "../../kms/soft-other/k", "soft-other/k", "plugins/kms/soft-other/k"} {
		if _, err := ns.Get(bg(), k); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("view Get(%q) reached outside its prefix: %v", k, err)
		}
		if err := ns.Delete(bg(), k, store.DeleteOptions{}); err != nil {
			t.Errorf("view Delete(%q): %v", k, err)
		}
	}
	for _, o := range []store.ListOptions{{}, {Prefix: "../"}, {After: "../"}, {Prefix: "/"}, {After: "\U0010ffff"}} {
		for _, e := range mustList(t, ns, o) {
			if string(e.Value) != "mine" {
				t.Errorf("view List(%+v) leaked %q", o, e.Key)
			}
		}
	}
	got := keysOf(mustList(t, ns, store.ListOptions{}))
	if want := []string{"../outside", "/outside", "k"}; !slices.Equal(got, want) {
		t.Fatalf("view List = %q, want %q", got, want)
	}
	for _, k := range outside {
		wantEntry(t, kv, k, "secret", 0)
	}
}

func testNamespaceOperations(t *testing.T, kv store.KV) {
	ns := newNamespace(t, kv, "plugins/ca/dilithium/")
	v1 := mustPut(t, ns, "k", "one", store.PutOptions{Check: true})
	e := mustGet(t, ns, "k")
	if e.Version != v1 || string(e.Value) != "one" {
		t.Fatalf("view Get = %+v", e)
	}
	if pe := mustGet(t, kv, "plugins/ca/dilithium/k"); pe.Version != v1 {
		t.Fatalf("parent sees version %d, view wrote %d", pe.Version, v1)
	}
	if _, err := ns.Put(bg(), "k", []byte("dup"), store.PutOptions{Check: true}); !errors.Is(err, store.ErrVersionConflict) {
		t.Fatalf("view CAS create over existing: %v", err)
	}
	v2 := mustPut(t, ns, "k", "two", store.PutOptions{Check: true, Version: v1})
	if err := ns.Delete(bg(), "k", store.DeleteOptions{Check: true, Version: v1}); !errors.Is(err, store.ErrVersionConflict) {
		t.Fatalf("view checked delete with stale version: %v", err)
	}
	if err := ns.Delete(bg(), "k", store.DeleteOptions{Check: true, Version: v2}); err != nil {
		t.Fatal(err)
	}
	wantMissing(t, kv, "plugins/ca/dilithium/k")

	// Paged listing with a prefix inside the view.
	for i := range 25 {
		mustPut(t, ns, fmt.Sprintf("serial/%03d", i), "", store.PutOptions{})
	}
	mustPut(t, ns, "serials", "", store.PutOptions{})
	var got []string
	after := ""
	for range 10 {
		es := mustList(t, ns, store.ListOptions{Prefix: "serial/", After: after, Limit: 10})
		got = append(got, keysOf(es)...)
		if len(es) < 10 {
			break
		}
		after = es[len(es)-1].Key
	}
	if len(got) != 25 || got[0] != "serial/000" || got[24] != "serial/024" {
		t.Fatalf("view paging = %q", got)
	}

	// Views nest: the inner prefix is the concatenation.
	inner := newNamespace(t, ns, "sub/")
	vi := mustPut(t, inner, "x", "nested", store.PutOptions{})
	wantEntry(t, kv, "plugins/ca/dilithium/sub/x", "nested", vi)
	if ks := keysOf(mustList(t, inner, store.ListOptions{})); !slices.Equal(ks, []string{"x"}) {
		t.Fatalf("nested view List = %q", ks)
	}

	// A key valid on its own but too long with the prefix is refused.
	long := strings.Repeat("k", store.MaxKeySize-len("plugins/ca/dilithium/")+1)
	if _, err := ns.Put(bg(), long, nil, store.PutOptions{}); !errors.Is(err, store.ErrInvalidKey) {
		t.Fatalf("view Put of a key too long with the prefix: %v", err)
	}
	mustPut(t, ns, long[1:], "", store.PutOptions{})
	for _, c := range invalidKeys {
		if _, err := ns.Put(bg(), c.key, nil, store.PutOptions{}); !errors.Is(err, store.ErrInvalidKey) {
			t.Errorf("view Put(%s): want ErrInvalidKey, got %v", c.name, err)
		}
	}
}

func testNamespacePrefixRules(t *testing.T, kv store.KV) {
	for _, bad := range []string{"", "no-slash", "a\x00/", "\xff/", strings.Repeat("p", store.MaxKeySize) + "/"} {
		if ns, err := store.NewNamespace(kv, bad); !errors.Is(err, store.ErrInvalidKey) || ns != nil {
			t.Errorf("NewNamespace(%q) = %v, %v; want nil, ErrInvalidKey", bad, ns, err)
		}
	}
	for _, good := range []string{"/", "a/", "plugins/kms/soft/", "../"} {
		newNamespace(t, kv, good)
	}
}

func testNamespaceClose(t *testing.T, kv store.KV) {
	ns := newNamespace(t, kv, "v/")
	mustPut(t, ns, "k", "v", store.PutOptions{})
	if err := ns.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := ns.Get(bg(), "k"); !errors.Is(err, store.ErrClosed) {
		t.Errorf("closed view Get: want ErrClosed, got %v", err)
	}
	if _, err := ns.List(bg(), store.ListOptions{}); !errors.Is(err, store.ErrClosed) {
		t.Errorf("closed view List: want ErrClosed, got %v", err)
	}
	if err := kv.Ping(bg()); err != nil {
		t.Fatalf("closing a view closed the store: %v", err)
	}
	wantEntry(t, kv, "v/k", "v", 0)
	// Another view of the same prefix still works.
	wantEntry(t, newNamespace(t, kv, "v/"), "k", "v", 0)
	// Closing the store closes its views.
	other := newNamespace(t, kv, "w/")
	if err := kv.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Get(bg(), "k"); !errors.Is(err, store.ErrClosed) {
		t.Errorf("view of a closed store: want ErrClosed, got %v", err)
	}
}
