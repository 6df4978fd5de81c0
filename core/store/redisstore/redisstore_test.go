package redisstore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	goredis "github.com/redis/go-redis/v9"

	"github.com/avonzt/avon/core/store"
	"github.com/avonzt/avon/core/store/storetest"
	"github.com/avonzt/avon/internal/testsvc/redistest"
)

// One redis-server (no persistence) serves the package; each test gets its
// own key prefix on it. Tests that pause, stop or kill a server start
// their own.
var (
	shared    *redistest.Server
	sharedErr error
	prefixes  atomic.Int64
)

// quiet drops go-redis's own log lines (dial failures during the fault
// tests); the errors they describe reach the tests through the API.
type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}

func TestMain(m *testing.M) {
	goredis.SetLogger(quiet{})
	var stop func()
	shared, stop, sharedErr = redistest.StartMain()
	code := m.Run()
	stop()
	os.Exit(code)
}

func server(t testing.TB) *redistest.Server {
	t.Helper()
	return redistest.Need(t, shared, sharedErr)
}

// uniquePrefix isolates one test's keys on the shared server.
func uniquePrefix() string { return fmt.Sprintf("t%d:", prefixes.Add(1)) }

func openTest(t testing.TB, opts Options) *Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := Open(ctx, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", opts.Addr, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// openShared opens a store with a fresh prefix on the shared server.
func openShared(t testing.TB) *Store {
	t.Helper()
	return openTest(t, Options{Addr: server(t).Addr(), KeyPrefix: uniquePrefix()})
}

// rawClient is a plain connection for looking at (and damaging) what the
// store wrote.
func rawClient(t testing.TB, addr string) *goredis.Client {
	t.Helper()
	c := goredis.NewClient(&goredis.Options{Addr: addr, Protocol: 2, DisableIdentity: true, MaxRetries: -1})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestConformance(t *testing.T) {
	srv := server(t)
	storetest.Run(t, func(t *testing.T) store.KV {
		return openTest(t, Options{Addr: srv.Addr(), KeyPrefix: uniquePrefix()})
	})
}

// TestConformanceDefaultPrefix runs the suite once more with the default
// prefix, on a DB of its own flushed before each case.
func TestConformanceDefaultPrefix(t *testing.T) {
	srv := server(t)
	const db = 1
	raw := goredis.NewClient(&goredis.Options{Addr: srv.Addr(), DB: db, Protocol: 2, DisableIdentity: true})
	t.Cleanup(func() { _ = raw.Close() })
	storetest.Run(t, func(t *testing.T) store.KV {
		if err := raw.FlushDB(context.Background()).Err(); err != nil {
			t.Fatal(err)
		}
		return openTest(t, Options{Addr: srv.Addr(), DB: db})
	})
}

func TestOptions(t *testing.T) {
	ctx := context.Background()
	for _, o := range []Options{
		{},
		{Addr: "no-port"},
		{Addr: "127.0.0.1:1", KeyPrefix: "a\x00"},
		{Addr: "127.0.0.1:1", KeyPrefix: "bad\xff"},
		{Addr: "127.0.0.1:1", KeyPrefix: strings.Repeat("p", MaxKeyPrefix+1)},
		{Addr: "127.0.0.1:1", DB: -1},
		{Addr: "127.0.0.1:1", DialTimeout: -time.Second},
		{Addr: "127.0.0.1:1", ReadTimeout: -time.Second},
		{Addr: "127.0.0.1:1", WriteTimeout: -time.Second},
		{Addr: "127.0.0.1:1", PoolSize: -1},
	} {
		if s, err := Open(ctx, o); !errors.Is(err, store.ErrInvalidArgument) {
			if s != nil {
				_ = s.Close()
			}
			t.Errorf("Open(%+v) = %v; want ErrInvalidArgument", o, err)
		}
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if s, err := Open(cancelled, Options{Addr: server(t).Addr()}); !errors.Is(err, context.Canceled) {
		if s != nil {
			_ = s.Close()
		}
		t.Errorf("Open with a cancelled ctx = %v; want context.Canceled", err)
	}
}

func TestOpenUnreachable(t *testing.T) {
	srv := redistest.Start(t)
	addr := srv.Addr()
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := Open(ctx, Options{Addr: addr})
	if s != nil || !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), addr) || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("Open of a stopped server = %v; want ErrUnavailable naming %s and the cause", err, addr)
	}
}

func TestWrongPassword(t *testing.T) {
	const password = "not-the-password-4f1c"
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := Open(ctx, Options{Addr: server(t).Addr(), Username: "nobody", Password: password})
	if s != nil {
		_ = s.Close()
	}
	if !errors.Is(err, store.ErrUnavailable) || strings.Contains(err.Error(), password) {
		t.Fatalf("Open with a wrong password = %v; want ErrUnavailable without the password", err)
	}
}

// TestKeyLayout checks the keys the package documentation promises.
func TestKeyLayout(t *testing.T) {
	srv := server(t)
	prefix := uniquePrefix()
	s := openTest(t, Options{Addr: srv.Addr(), KeyPrefix: prefix})
	raw := rawClient(t, srv.Addr())
	ctx := context.Background()
	v1, err := s.Put(ctx, "a/é", []byte{0, 1, 2}, store.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	v2, err := s.Put(ctx, "b", nil, store.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := raw.Keys(ctx, prefix+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(keys)
	want := []string{prefix + "index", prefix + "k:a/é", prefix + "k:b", prefix + "version"}
	if !slices.Equal(keys, want) {
		t.Fatalf("keys %q, want %q", keys, want)
	}
	if h, err := raw.HGetAll(ctx, prefix+"k:a/é").Result(); err != nil || h["v"] != fmt.Sprint(v1) || h["d"] != "\x00\x01\x02" || len(h) != 2 {
		t.Fatalf("entry hash = %q, %v", h, err)
	}
	if c, err := raw.Get(ctx, prefix+"version").Int64(); err != nil || c != v2 {
		t.Fatalf("counter = %d, %v; want %d", c, err, v2)
	}
	zs, err := raw.ZRangeWithScores(ctx, prefix+"index", 0, -1).Result()
	if err != nil || len(zs) != 2 || zs[0].Member != "a/é" || zs[1].Member != "b" || zs[0].Score != 0 || zs[1].Score != 0 {
		t.Fatalf("index = %+v, %v", zs, err)
	}
	for _, k := range []string{prefix + "k:a/é", prefix + "index", prefix + "version"} {
		if ttl, err := raw.TTL(ctx, k).Result(); err != nil || ttl != -1 {
			t.Fatalf("%s has TTL %v (%v); want none", k, ttl, err)
		}
	}
	if err := s.Delete(ctx, "a/é", store.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if n, err := raw.Exists(ctx, prefix+"k:a/é").Result(); err != nil || n != 0 {
		t.Fatalf("entry after Delete: exists=%d, %v", n, err)
	}
	if ms, err := raw.ZRange(ctx, prefix+"index", 0, -1).Result(); err != nil || !slices.Equal(ms, []string{"b"}) {
		t.Fatalf("index after Delete = %q, %v", ms, err)
	}
	// A batch keeps the same layout: entries and index change together.
	vs, err := s.Apply(ctx, []store.Op{{Key: "c", Value: []byte("x")}, {Key: "b", Delete: true}, {Key: "a/é", Value: []byte{}}, {Key: "z", Delete: true, Check: true}})
	if err != nil {
		t.Fatal(err)
	}
	if h, err := raw.HGetAll(ctx, prefix+"k:c").Result(); err != nil || h["v"] != fmt.Sprint(vs[0]) || h["d"] != "x" || len(h) != 2 {
		t.Fatalf("entry hash written by Apply = %q, %v", h, err)
	}
	if h, err := raw.HGetAll(ctx, prefix+"k:a/é").Result(); err != nil || h["v"] != fmt.Sprint(vs[2]) || h["d"] != "" || len(h) != 2 {
		t.Fatalf("empty entry written by Apply = %q, %v", h, err)
	}
	if n, err := raw.Exists(ctx, prefix+"k:b", prefix+"k:z").Result(); err != nil || n != 0 {
		t.Fatalf("entries after Apply's deletes: exists=%d, %v", n, err)
	}
	if ms, err := raw.ZRange(ctx, prefix+"index", 0, -1).Result(); err != nil || !slices.Equal(ms, []string{"a/é", "c"}) {
		t.Fatalf("index after Apply = %q, %v", ms, err)
	}
	if c, err := raw.Get(ctx, prefix+"version").Int64(); err != nil || c != vs[2] {
		t.Fatalf("counter after Apply = %d, %v; want %d", c, err, vs[2])
	}
	// Another prefix on the same DB sees nothing of it.
	other := openShared(t)
	if _, err := other.Get(ctx, "b"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("prefixes not isolated: %v", err)
	}
}

// TestNoScript: after SCRIPT FLUSH the scripts are sent again (EVALSHA
// answered NOSCRIPT, then EVAL), and nothing runs twice.
func TestNoScript(t *testing.T) {
	srv := server(t)
	s := openShared(t)
	raw := rawClient(t, srv.Addr())
	ctx := context.Background()
	v1, err := s.Put(ctx, "k", []byte("one"), store.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := raw.ScriptFlush(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		v2, err := s.Put(ctx, "k", []byte("two"), store.PutOptions{Check: true, Version: v1})
		if err != nil {
			t.Fatalf("CAS after SCRIPT FLUSH: %v", err)
		}
		if v2 != v1+1 {
			t.Fatalf("CAS after SCRIPT FLUSH returned %d after %d: the write ran twice or not once", v2, v1)
		}
		v1 = v2
		if err := raw.ScriptFlush(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		if es, err := s.List(ctx, store.ListOptions{}); err != nil || len(es) != 1 || es[0].Version != v1 {
			t.Fatalf("List after SCRIPT FLUSH = %+v, %v", es, err)
		}
		if err := raw.ScriptFlush(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		if err := s.Delete(ctx, "absent", store.DeleteOptions{Check: true}); err != nil {
			t.Fatalf("Delete after SCRIPT FLUSH: %v", err)
		}
		if err := raw.ScriptFlush(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		vs, err := s.Apply(ctx, []store.Op{{Key: "k", Value: []byte("three"), Check: true, Version: v1}, {Key: "absent", Delete: true, Check: true}})
		if err != nil {
			t.Fatalf("Apply after SCRIPT FLUSH: %v", err)
		}
		if vs[0] != v1+1 {
			t.Fatalf("Apply after SCRIPT FLUSH returned %d after %d: the batch ran twice or not once", vs[0], v1)
		}
		v1 = vs[0]
	}
}

// TestCorruptData damages what the store wrote, in every way the layout
// allows, and checks each call answers ErrCorrupt (with ErrUnavailable)
// and changes nothing.
func TestCorruptData(t *testing.T) {
	srv := server(t)
	ctx := context.Background()
	raw := rawClient(t, srv.Addr())
	// Which calls must report the damage: Get and List of the damaged
	// data, checked writes (which read the stored version), any write to
	// the damaged key (which must find keys of the right types), any Put
	// at all (the damage is to a key every Put uses).
	type calls struct{ get, list, checked, any, put bool }
	for _, c := range []struct {
		name   string
		damage func(p string) error
		calls
	}{
		{"entry is a string", func(p string) error { return raw.Set(ctx, p+"k:k", "x", 0).Err() }, calls{true, true, true, true, false}},
		{"entry is a list", func(p string) error {
			if err := raw.Del(ctx, p+"k:k").Err(); err != nil {
				return err
			}
			return raw.RPush(ctx, p+"k:k", "x").Err()
		}, calls{true, true, true, true, false}},
		{"version missing", func(p string) error { return raw.HDel(ctx, p+"k:k", "v").Err() }, calls{true, true, true, false, false}},
		{"value missing", func(p string) error { return raw.HDel(ctx, p+"k:k", "d").Err() }, calls{true, true, false, false, false}},
		{"version not a number", func(p string) error { return raw.HSet(ctx, p+"k:k", "v", "12a").Err() }, calls{true, true, true, false, false}},
		{"version zero", func(p string) error { return raw.HSet(ctx, p+"k:k", "v", "0").Err() }, calls{true, true, true, false, false}},
		{"version negative", func(p string) error { return raw.HSet(ctx, p+"k:k", "v", "-3").Err() }, calls{true, true, true, false, false}},
		{"version leading zero", func(p string) error { return raw.HSet(ctx, p+"k:k", "v", "07").Err() }, calls{true, true, true, false, false}},
		{"version overflows", func(p string) error { return raw.HSet(ctx, p+"k:k", "v", "99999999999999999999").Err() }, calls{true, true, true, false, false}},
		{"index member without entry", func(p string) error { return raw.ZAdd(ctx, p+"index", goredis.Z{Member: "ghost"}).Err() }, calls{false, true, false, false, false}},
		{"index member not a key", func(p string) error { return raw.ZAdd(ctx, p+"index", goredis.Z{Member: "a\x00"}).Err() }, calls{false, true, false, false, false}},
		{"index out of order", func(p string) error {
			return raw.ZAdd(ctx, p+"index", goredis.Z{Member: "k", Score: -1}).Err()
		}, calls{false, true, false, false, false}},
		{"index is a string", func(p string) error { return raw.Set(ctx, p+"index", "x", 0).Err() }, calls{false, true, false, true, true}},
		{"counter not a number", func(p string) error { return raw.Set(ctx, p+"version", "x", 0).Err() }, calls{false, false, false, false, true}},
		{"counter is a hash", func(p string) error {
			if err := raw.Del(ctx, p+"version").Err(); err != nil {
				return err
			}
			return raw.HSet(ctx, p+"version", "x", "1").Err()
		}, calls{false, false, false, false, true}},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := uniquePrefix()
			s := openTest(t, Options{Addr: srv.Addr(), KeyPrefix: p})
			v, err := s.Put(ctx, "k", []byte("v"), store.PutOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Put(ctx, "j", []byte("v"), store.PutOptions{}); err != nil {
				t.Fatal(err)
			}
			if err := c.damage(p); err != nil {
				t.Fatal(err)
			}
			before := dump(t, raw, p)
			wantCorrupt := func(op string, err error) {
				t.Helper()
				if !errors.Is(err, ErrCorrupt) || !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), srv.Addr()) {
					t.Errorf("%s: want ErrCorrupt and ErrUnavailable naming the server, got %v", op, err)
				}
				t.Logf("%s: %v", op, err)
			}
			if c.get {
				_, err := s.Get(ctx, "k")
				wantCorrupt("Get", err)
			}
			if c.list {
				_, err := s.List(ctx, store.ListOptions{})
				wantCorrupt("List", err)
			}
			if c.checked || c.any {
				_, err := s.Put(ctx, "k", []byte("new"), store.PutOptions{Check: true, Version: v})
				wantCorrupt("checked Put", err)
				_, err = s.Put(ctx, "k", []byte("new"), store.PutOptions{Check: true})
				wantCorrupt("create", err)
				wantCorrupt("checked Delete", s.Delete(ctx, "k", store.DeleteOptions{Check: true, Version: v}))
				wantCorrupt("checked Delete of an absent key", s.Delete(ctx, "k", store.DeleteOptions{Check: true}))
			}
			if c.any || c.put {
				_, err := s.Put(ctx, "k", []byte("new"), store.PutOptions{})
				wantCorrupt("Put", err)
				if !strings.Contains(fmt.Sprint(err), "nothing was written") {
					t.Errorf("Put: message does not say nothing was written: %v", err)
				}
			}
			if c.put {
				_, err := s.Put(ctx, "new", []byte("new"), store.PutOptions{Check: true})
				wantCorrupt("create of another key", err)
			}
			if c.any {
				wantCorrupt("Delete", s.Delete(ctx, "k", store.DeleteOptions{}))
			}
			// Batches: the same rules, and the good ops of a batch are
			// not written either.
			apply := func(ops ...store.Op) error {
				_, err := s.Apply(ctx, ops)
				return err
			}
			if c.checked || c.any {
				wantCorrupt("Apply checked put", apply(store.Op{Key: "j", Value: []byte("new")}, store.Op{Key: "k", Value: []byte("new"), Check: true, Version: v}))
				wantCorrupt("Apply create", apply(store.Op{Key: "j", Delete: true}, store.Op{Key: "k", Value: []byte("new"), Check: true}))
				wantCorrupt("Apply checked delete", apply(store.Op{Key: "k", Delete: true, Check: true, Version: v}, store.Op{Key: "j", Value: []byte("new")}))
				wantCorrupt("Apply delete of an absent key", apply(store.Op{Key: "n", Value: []byte("new")}, store.Op{Key: "k", Delete: true, Check: true}))
			}
			if c.any || c.put {
				err := apply(store.Op{Key: "n", Value: []byte("new")}, store.Op{Key: "k", Value: []byte("new")})
				wantCorrupt("Apply put", err)
				if !strings.Contains(fmt.Sprint(err), "nothing was written") {
					t.Errorf("Apply: message does not say nothing was written: %v", err)
				}
			}
			if c.put {
				wantCorrupt("Apply of other keys", apply(store.Op{Key: "n", Value: []byte("new"), Check: true}, store.Op{Key: "j", Delete: true}))
			}
			if c.any {
				wantCorrupt("Apply delete", apply(store.Op{Key: "j", Delete: true}, store.Op{Key: "k", Delete: true}))
			}
			if after := dump(t, raw, p); after != before {
				t.Fatalf("a refused call changed the data:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

// dump renders every key under prefix p with its type and content.
func dump(t *testing.T, raw *goredis.Client, p string) string {
	t.Helper()
	ctx := context.Background()
	keys, err := raw.Keys(ctx, p+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		typ, err := raw.Type(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		var content any
		switch typ {
		case "string":
			content, err = raw.Get(ctx, k).Result()
		case "hash":
			content, err = raw.HGetAll(ctx, k).Result()
		case "zset":
			content, err = raw.ZRangeWithScores(ctx, k, 0, -1).Result()
		case "list":
			content, err = raw.LRange(ctx, k, 0, -1).Result()
		}
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s=%s:%v ", k, typ, content)
	}
	return b.String()
}

// TestListSnapshot: while a writer moves a token from key to key (create
// the next, then delete the current), every List sees one or two adjacent
// keys, never none and never a key without its entry. A List that read the
// index and the entries separately would see a deleted entry.
func TestListSnapshot(t *testing.T) {
	s := openShared(t)
	ctx := context.Background()
	const moves = 300
	if _, err := s.Put(ctx, "tok/0000", []byte("0"), store.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		for i := range moves {
			next := fmt.Sprintf("tok/%04d", i+1)
			if _, err := s.Put(ctx, next, []byte(fmt.Sprint(i+1)), store.PutOptions{Check: true}); err != nil {
				done <- err
				return
			}
			if err := s.Delete(ctx, fmt.Sprintf("tok/%04d", i), store.DeleteOptions{}); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	lists := 0
	for finished := false; !finished; lists++ {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			finished = true
		default:
		}
		es, err := s.List(ctx, store.ListOptions{Prefix: "tok/"})
		if err != nil {
			t.Fatalf("List during writes: %v", err)
		}
		if len(es) < 1 || len(es) > 2 {
			t.Fatalf("List saw %d tokens: %q", len(es), keysOf(es))
		}
		if len(es) == 2 && es[1].Key != fmt.Sprintf("tok/%04d", mustAtoi(t, string(es[0].Value))+1) {
			t.Fatalf("List saw tokens that never coexisted: %q", keysOf(es))
		}
		if lists > 100000 {
			t.Fatalf("writer did not finish")
		}
	}
	t.Logf("%d lists during %d moves", lists, moves)
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	var n int
	if _, err := fmt.Sscan(s, &n); err != nil {
		t.Fatalf("value %q: %v", s, err)
	}
	return n
}

func keysOf(es []store.Entry) []string {
	ks := make([]string, 0, len(es))
	for _, e := range es {
		ks = append(ks, e.Key)
	}
	return ks
}

// TestVersionsSharedByStores: two stores on one prefix (two replicas)
// draw from one counter and see each other's writes; CAS across them holds.
func TestVersionsSharedByStores(t *testing.T) {
	srv := server(t)
	p := uniquePrefix()
	a := openTest(t, Options{Addr: srv.Addr(), KeyPrefix: p})
	b := openTest(t, Options{Addr: srv.Addr(), KeyPrefix: p})
	ctx := context.Background()
	va, err := a.Put(ctx, "k", []byte("a"), store.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	vb, err := b.Put(ctx, "k", []byte("b"), store.PutOptions{Check: true, Version: va})
	if err != nil || vb <= va {
		t.Fatalf("b's CAS on a's write = %d, %v", vb, err)
	}
	if _, err := a.Put(ctx, "k", []byte("stale"), store.PutOptions{Check: true, Version: va}); !errors.Is(err, store.ErrVersionConflict) {
		t.Fatalf("a's stale CAS = %v; want ErrVersionConflict", err)
	}
	if e, err := a.Get(ctx, "k"); err != nil || e.Version != vb || string(e.Value) != "b" {
		t.Fatalf("a sees %+v, %v", e, err)
	}
}

// TestConflictMessages: a conflict says what the key holds.
func TestConflictMessages(t *testing.T) {
	s := openShared(t)
	ctx := context.Background()
	v, err := s.Put(ctx, "k", nil, store.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		err  error
		want string
	}{
		{func() error { _, err := s.Put(ctx, "k", nil, store.PutOptions{Check: true}); return err }(), fmt.Sprintf("key exists at version %d", v)},
		{func() error {
			_, err := s.Put(ctx, "k", nil, store.PutOptions{Check: true, Version: v + 5})
			return err
		}(), fmt.Sprintf("key at version %d, not %d", v, v+5)},
		{func() error { _, err := s.Put(ctx, "x", nil, store.PutOptions{Check: true, Version: v}); return err }(), fmt.Sprintf("key absent, not at version %d", v)},
		{s.Delete(ctx, "k", store.DeleteOptions{Check: true}), fmt.Sprintf("key exists at version %d", v)},
	} {
		if !errors.Is(c.err, store.ErrVersionConflict) || !strings.Contains(c.err.Error(), c.want) {
			t.Errorf("got %v; want ErrVersionConflict saying %q", c.err, c.want)
		}
	}
}

func TestNoGoroutineLeak(t *testing.T) {
	srv := server(t)
	before := runtime.NumGoroutine()
	ctx := context.Background()
	s, err := Open(ctx, Options{Addr: srv.Addr(), KeyPrefix: uniquePrefix()})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = s.Put(ctx, fmt.Sprint("k", i), nil, store.PutOptions{})
			_, _ = s.List(ctx, store.ListOptions{})
		}()
	}
	wg.Wait()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines after Close, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestOpenLogs: Open logs the server and the prefix, never the password.
func TestOpenLogs(t *testing.T) {
	logs := &syncBuffer{}
	log := hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Trace})
	s := openTest(t, Options{Addr: server(t).Addr(), KeyPrefix: uniquePrefix(), Logger: log})
	if out := logs.String(); !strings.Contains(out, "redis store open") || !strings.Contains(out, s.Addr()) {
		t.Fatalf("open not logged: %q", out)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
