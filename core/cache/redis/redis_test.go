package redis_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/avonzt/avon/core/cache"
	"github.com/avonzt/avon/core/cache/cachetest"
	"github.com/avonzt/avon/core/cache/redis"
	"github.com/avonzt/avon/internal/testsvc/redistest"
)

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

// uniquePrefix isolates one test's keys and channels on the shared server.
func uniquePrefix() string { return fmt.Sprintf("t%d:", prefixes.Add(1)) }

func open(t testing.TB, opts redis.Options) *redis.Cache {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := redis.Open(ctx, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", opts.Addr, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestConformance(t *testing.T) {
	srv := redistest.Need(t, shared, sharedErr)
	cachetest.Run(t, func(t *testing.T) (cache.Cache, cache.Cache) {
		opts := redis.Options{Addr: srv.Addr(), KeyPrefix: uniquePrefix()}
		return open(t, opts), open(t, opts)
	})
}

func TestOptions(t *testing.T) {
	ctx := context.Background()
	for _, o := range []redis.Options{
		{},
		{Addr: "no-port"},
		{Addr: "127.0.0.1:1", KeyPrefix: "a\x00"},
		{Addr: "127.0.0.1:1", KeyPrefix: strings.Repeat("p", redis.MaxKeyPrefix+1)},
		{Addr: "127.0.0.1:1", DB: -1},
		{Addr: "127.0.0.1:1", ReadTimeout: -time.Second},
		{Addr: "127.0.0.1:1", PoolSize: -1},
	} {
		if c, err := redis.Open(ctx, o); !errors.Is(err, cache.ErrInvalidArgument) {
			if c != nil {
				_ = c.Close()
			}
			t.Errorf("Open(%+v) = %v; want ErrInvalidArgument", o, err)
		}
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
	c, err := redis.Open(ctx, redis.Options{Addr: addr})
	if c != nil || !errors.Is(err, cache.ErrUnavailable) || !strings.Contains(err.Error(), addr) {
		t.Fatalf("Open of a stopped server = %v; want ErrUnavailable naming %s", err, addr)
	}
}

func TestKeyLayout(t *testing.T) {
	srv := redistest.Need(t, shared, sharedErr)
	c := open(t, redis.Options{Addr: srv.Addr(), KeyPrefix: "layout:"})
	raw := open(t, redis.Options{Addr: srv.Addr(), KeyPrefix: "other:"})
	ctx := context.Background()
	if err := c.PutSession(ctx, "abc", []byte("v"), time.Hour); err != nil {
		t.Fatal(err)
	}
	// Same id, other prefix: invisible.
	if _, _, err := raw.GetSession(ctx, "abc"); !errors.Is(err, cache.ErrNotFound) {
		t.Fatalf("prefixes not isolated: %v", err)
	}
	// Two clients with one prefix on different DBs do not share keys.
	db1 := open(t, redis.Options{Addr: srv.Addr(), KeyPrefix: "layout:", DB: 1})
	if _, _, err := db1.GetSession(ctx, "abc"); !errors.Is(err, cache.ErrNotFound) {
		t.Fatalf("DBs not isolated: %v", err)
	}
}

func TestDefaultPrefixAndDB(t *testing.T) {
	srv := redistest.Need(t, shared, sharedErr)
	ctx := context.Background()
	// DB 2 keeps this test's default-prefix keys away from other tests.
	c := open(t, redis.Options{Addr: srv.Addr(), DB: 2})
	if first, err := c.MarkUsed(ctx, "jti", "default-prefix", time.Minute); err != nil || !first {
		t.Fatalf("MarkUsed = %v, %v", first, err)
	}
	d := open(t, redis.Options{Addr: srv.Addr(), DB: 2, KeyPrefix: redis.DefaultKeyPrefix})
	if first, err := d.MarkUsed(ctx, "jti", "default-prefix", time.Minute); err != nil || first {
		t.Fatalf("explicit default prefix does not see the mark: %v, %v", first, err)
	}
}

func TestNoGoroutineLeak(t *testing.T) {
	srv := redistest.Need(t, shared, sharedErr)
	before := runtime.NumGoroutine()
	ctx := context.Background()
	c, err := redis.Open(ctx, redis.Options{Addr: srv.Addr(), KeyPrefix: uniquePrefix()})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		sub, err := c.Subscribe(ctx, fmt.Sprint("ch", i))
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			_ = sub.Close()
		}
	}
	if err := c.Close(); err != nil {
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
