// Package storetest is the conformance suite every store.KV backend runs:
// embedded, PostgreSQL, and the in-memory double. A backend is correct when
// Run passes against it.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/avonzt/avon/core/store"
)

// Run runs the suite. open must return a fresh, empty store each call; Run
// closes it.
func Run(t *testing.T, open func(t *testing.T) store.KV) {
	ctx := context.Background()
	fresh := func(t *testing.T) store.KV {
		kv := open(t)
		t.Cleanup(func() { _ = kv.Close() })
		return kv
	}
	mustPut := func(t *testing.T, kv store.KV, k, v string, o store.PutOptions) int64 {
		t.Helper()
		ver, err := kv.Put(ctx, k, []byte(v), o)
		if err != nil {
			t.Fatalf("put %q: %v", k, err)
		}
		if ver <= 0 {
			t.Fatalf("put %q returned version %d", k, ver)
		}
		return ver
	}

	t.Run("GetMissing", func(t *testing.T) {
		kv := fresh(t)
		if _, err := kv.Get(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("want ErrNotFound, got %v", err)
		}
	})

	t.Run("PutGetRoundTrip", func(t *testing.T) {
		kv := fresh(t)
		for _, v := range [][]byte{{}, []byte("x"), bytes.Repeat([]byte{0, 255, 7}, 1000)} {
			ver, err := kv.Put(ctx, "k", v, store.PutOptions{})
			if err != nil {
				t.Fatal(err)
			}
			e, err := kv.Get(ctx, "k")
			if err != nil {
				t.Fatal(err)
			}
			if e.Key != "k" || !bytes.Equal(e.Value, v) || e.Version != ver || e.Value == nil {
				t.Fatalf("got %+v, want value %x version %d", e, v, ver)
			}
		}
	})

	t.Run("VersionsIncrease", func(t *testing.T) {
		kv := fresh(t)
		v1 := mustPut(t, kv, "a", "1", store.PutOptions{})
		v2 := mustPut(t, kv, "a", "2", store.PutOptions{})
		v3 := mustPut(t, kv, "b", "1", store.PutOptions{})
		if !(v1 < v2 && v2 < v3) {
			t.Fatalf("versions not strictly increasing: %d %d %d", v1, v2, v3)
		}
		if err := kv.Delete(ctx, "a", store.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		v4 := mustPut(t, kv, "a", "again", store.PutOptions{})
		if v4 <= v3 {
			t.Fatalf("re-created key reused an old version: %d <= %d", v4, v3)
		}
	})

	t.Run("CompareAndSet", func(t *testing.T) {
		kv := fresh(t)
		v1 := mustPut(t, kv, "k", "one", store.PutOptions{Check: true, Version: 0})
		if _, err := kv.Put(ctx, "k", []byte("dup"), store.PutOptions{Check: true, Version: 0}); !errors.Is(err, store.ErrVersionConflict) {
			t.Fatalf("create over existing: want conflict, got %v", err)
		}
		if _, err := kv.Put(ctx, "k", []byte("stale"), store.PutOptions{Check: true, Version: v1 + 1000}); !errors.Is(err, store.ErrVersionConflict) {
			t.Fatalf("wrong version: want conflict, got %v", err)
		}
		if _, err := kv.Put(ctx, "absent", []byte("x"), store.PutOptions{Check: true, Version: v1}); !errors.Is(err, store.ErrVersionConflict) {
			t.Fatalf("update of absent key: want conflict, got %v", err)
		}
		e, _ := kv.Get(ctx, "k")
		if string(e.Value) != "one" || e.Version != v1 {
			t.Fatalf("failed CAS changed the entry: %+v", e)
		}
		if _, err := kv.Get(ctx, "absent"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("failed CAS created a key: %v", err)
		}
		v2 := mustPut(t, kv, "k", "two", store.PutOptions{Check: true, Version: v1})
		if err := kv.Delete(ctx, "k", store.DeleteOptions{Check: true, Version: v1}); !errors.Is(err, store.ErrVersionConflict) {
			t.Fatalf("delete with stale version: want conflict, got %v", err)
		}
		if err := kv.Delete(ctx, "k", store.DeleteOptions{Check: true, Version: v2}); err != nil {
			t.Fatal(err)
		}
		if err := kv.Delete(ctx, "k", store.DeleteOptions{}); err != nil {
			t.Fatalf("unchecked delete of absent key: %v", err)
		}
		if err := kv.Delete(ctx, "k", store.DeleteOptions{Check: true, Version: v2}); !errors.Is(err, store.ErrVersionConflict) {
			t.Fatalf("checked delete of absent key: want conflict, got %v", err)
		}
	})

	t.Run("List", func(t *testing.T) {
		kv := fresh(t)
		keys := []string{"a/1", "a/2", "a/10", "a/b/1", "ab", "b/1", "a", "a/\u00e9"}
		for _, k := range keys {
			mustPut(t, kv, k, "v-"+k, store.PutOptions{})
		}
		list := func(o store.ListOptions) string {
			t.Helper()
			es, err := kv.List(ctx, o)
			if err != nil {
				t.Fatal(err)
			}
			var ks []string
			for _, e := range es {
				if string(e.Value) != "v-"+e.Key || e.Version <= 0 {
					t.Fatalf("bad entry %+v", e)
				}
				ks = append(ks, e.Key)
			}
			return strings.Join(ks, ",")
		}
		cases := []struct {
			o    store.ListOptions
			want string
		}{
			{store.ListOptions{}, "a,a/1,a/10,a/2,a/b/1,a/\u00e9,ab,b/1"},
			{store.ListOptions{Prefix: "a/"}, "a/1,a/10,a/2,a/b/1,a/\u00e9"},
			{store.ListOptions{Prefix: "a/", After: "a/10"}, "a/2,a/b/1,a/\u00e9"},
			{store.ListOptions{Prefix: "a/", Limit: 2}, "a/1,a/10"},
			{store.ListOptions{Prefix: "a/", After: "a/\u00e9"}, ""},
			{store.ListOptions{Prefix: "zzz"}, ""},
			{store.ListOptions{After: "a/2"}, "a/b/1,a/\u00e9,ab,b/1"},
			{store.ListOptions{Prefix: "b/", After: "a"}, "b/1"},
		}
		for _, c := range cases {
			if got := list(c.o); got != c.want {
				t.Errorf("List(%+v) = %q, want %q", c.o, got, c.want)
			}
		}
		if _, err := kv.List(ctx, store.ListOptions{Limit: -1}); err == nil {
			t.Error("negative limit accepted")
		}
		if _, err := kv.List(ctx, store.ListOptions{Limit: store.MaxLimit + 1}); err == nil {
			t.Error("limit above MaxLimit accepted")
		}
	})

	t.Run("Paging", func(t *testing.T) {
		kv := fresh(t)
		const n = 257
		for i := 0; i < n; i++ {
			mustPut(t, kv, fmt.Sprintf("p/%04d", i), "v-"+strconv.Itoa(i), store.PutOptions{})
		}
		seen, after := 0, ""
		for pages := 0; pages < 100; pages++ {
			es, err := kv.List(ctx, store.ListOptions{Prefix: "p/", After: after, Limit: 50})
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range es {
				if want := fmt.Sprintf("p/%04d", seen); e.Key != want {
					t.Fatalf("page order: got %s want %s", e.Key, want)
				}
				seen++
			}
			if len(es) < 50 {
				break
			}
			after = es[len(es)-1].Key
		}
		if seen != n {
			t.Fatalf("paged over %d keys, want %d", seen, n)
		}
	})

	t.Run("InvalidKeys", func(t *testing.T) {
		kv := fresh(t)
		for _, k := range []string{"", "a\x00b", "a\nb", strings.Repeat("k", store.MaxKeySize+1), "bad\xffutf8"} {
			if _, err := kv.Put(ctx, k, []byte("x"), store.PutOptions{}); !errors.Is(err, store.ErrInvalidKey) {
				t.Errorf("Put(%q): want ErrInvalidKey, got %v", k, err)
			}
			if _, err := kv.Get(ctx, k); !errors.Is(err, store.ErrInvalidKey) {
				t.Errorf("Get(%q): want ErrInvalidKey, got %v", k, err)
			}
			if err := kv.Delete(ctx, k, store.DeleteOptions{}); !errors.Is(err, store.ErrInvalidKey) {
				t.Errorf("Delete(%q): want ErrInvalidKey, got %v", k, err)
			}
		}
		es, err := kv.List(ctx, store.ListOptions{})
		if err != nil || len(es) != 0 {
			t.Fatalf("invalid puts wrote something: %v %v", es, err)
		}
		if _, err := kv.Put(ctx, strings.Repeat("k", store.MaxKeySize), nil, store.PutOptions{}); err != nil {
			t.Fatalf("key of exactly MaxKeySize refused: %v", err)
		}
	})

	t.Run("ValueTooLarge", func(t *testing.T) {
		kv := fresh(t)
		if _, err := kv.Put(ctx, "big", make([]byte, store.MaxValueSize+1), store.PutOptions{}); !errors.Is(err, store.ErrValueTooLarge) {
			t.Fatalf("want ErrValueTooLarge, got %v", err)
		}
		if _, err := kv.Get(ctx, "big"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("oversized value was stored: %v", err)
		}
	})

	t.Run("ValuesAreCopied", func(t *testing.T) {
		kv := fresh(t)
		in := []byte("original")
		mustPut(t, kv, "k", string(in), store.PutOptions{})
		if _, err := kv.Put(ctx, "k2", in, store.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		in[0] = 'X'
		e, _ := kv.Get(ctx, "k2")
		if string(e.Value) != "original" {
			t.Fatalf("store kept a reference to the caller's slice: %q", e.Value)
		}
		e.Value[0] = 'Y'
		e2, _ := kv.Get(ctx, "k2")
		if string(e2.Value) != "original" {
			t.Fatalf("store handed out its own slice: %q", e2.Value)
		}
	})

	t.Run("CancelledContext", func(t *testing.T) {
		kv := fresh(t)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := kv.Put(cctx, "k", []byte("x"), store.PutOptions{}); err == nil {
			t.Fatal("put with cancelled context succeeded")
		}
		if _, err := kv.Get(ctx, "k"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("cancelled put wrote: %v", err)
		}
		if _, err := kv.Get(cctx, "k"); err == nil || errors.Is(err, store.ErrNotFound) {
			t.Fatalf("get with cancelled context: %v", err)
		}
	})

	t.Run("ConcurrentCAS", func(t *testing.T) {
		kv := fresh(t)
		const workers, incs = 8, 25
		mustPut(t, kv, "counter", "0", store.PutOptions{})
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for done, tries := 0, 0; done < incs; tries++ {
					if tries > 10000 {
						errs <- errors.New("too many CAS retries")
						return
					}
					e, err := kv.Get(ctx, "counter")
					if err != nil {
						errs <- err
						return
					}
					n, _ := strconv.Atoi(string(e.Value))
					_, err = kv.Put(ctx, "counter", []byte(strconv.Itoa(n+1)), store.PutOptions{Check: true, Version: e.Version})
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
		e, _ := kv.Get(ctx, "counter")
		if string(e.Value) != strconv.Itoa(workers*incs) {
			t.Fatalf("counter = %s, want %d: lost updates", e.Value, workers*incs)
		}
	})

	t.Run("Closed", func(t *testing.T) {
		kv := open(t)
		mustPut(t, kv, "k", "v", store.PutOptions{})
		if err := kv.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Get(ctx, "k"); !errors.Is(err, store.ErrClosed) {
			t.Errorf("Get after Close: %v", err)
		}
		if _, err := kv.Put(ctx, "k", nil, store.PutOptions{}); !errors.Is(err, store.ErrClosed) {
			t.Errorf("Put after Close: %v", err)
		}
		if err := kv.Ping(ctx); !errors.Is(err, store.ErrClosed) {
			t.Errorf("Ping after Close: %v", err)
		}
	})

	t.Run("Namespace", func(t *testing.T) {
		kv := fresh(t)
		mustPut(t, kv, "outside", "secret", store.PutOptions{})
		mustPut(t, kv, "plugins/kms/soft-other/k", "other", store.PutOptions{})
		ns, err := store.NewNamespace(kv, "plugins/kms/soft/")
		if err != nil {
			t.Fatal(err)
		}
		for _, bad := range []string{"", "no-slash", "a\x00/"} {
			if _, err := store.NewNamespace(kv, bad); !errors.Is(err, store.ErrInvalidKey) {
				t.Errorf("NewNamespace(%q): %v", bad, err)
			}
		}
		v := mustPut(t, ns, "k", "mine", store.PutOptions{})
		e, err := ns.Get(ctx, "k")
		if err != nil || e.Key != "k" || string(e.Value) != "mine" || e.Version != v {
			t.Fatalf("namespaced get: %+v %v", e, err)
		}
		if e, err := kv.Get(ctx, "plugins/kms/soft/k"); err != nil || string(e.Value) != "mine" {
			t.Fatalf("namespaced key not under prefix: %+v %v", e, err)
		}
		for _, k := range []string{"../outside", "/outside", "outside"} {
			if _, err := ns.Get(ctx, k); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("namespace reached %q: %v", k, err)
			}
		}
		es, err := ns.List(ctx, store.ListOptions{})
		if err != nil || len(es) != 1 || es[0].Key != "k" {
			t.Fatalf("namespace list leaked or lost keys: %+v %v", es, err)
		}
		if err := ns.Delete(ctx, "../outside", store.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Get(ctx, "outside"); err != nil {
			t.Fatalf("namespace deleted outside its prefix: %v", err)
		}
		if err := ns.Close(); err != nil {
			t.Fatal(err)
		}
		if err := kv.Ping(ctx); err != nil {
			t.Fatalf("closing a view closed the store: %v", err)
		}
	})
}
