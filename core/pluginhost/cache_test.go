package pluginhost

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/avonzt/avon/core/cache"
	"github.com/avonzt/avon/core/cache/memcache"
	"github.com/avonzt/avon/core/cache/redis"
	"github.com/avonzt/avon/core/store/memstore"
	"github.com/avonzt/avon/internal/testsvc/redistest"
	"github.com/avonzt/avon/sdk/host"
	"github.com/avonzt/avon/sdk/plugintest"
)

// replicaHost is the host one plugin sees on a core replica whose cache is c.
func replicaHost(id string, c cache.Cache) *pluginHost {
	return newPluginHost(id, Services{Cache: c}, memstore.New())
}

// overGRPC serves h with the host shim on loopback and returns the
// plugin's client view of it.
func overGRPC(t *testing.T, h host.Host) host.Host {
	t.Helper()
	return host.NewClient(plugintest.ServeHost(t, h), nil)
}

func TestHostCacheMemcache(t *testing.T) {
	b := memcache.NewBackend(memcache.Options{})
	a1, a2 := b.Open(), b.Open()
	t.Cleanup(func() { _ = a1.Close(); _ = a2.Close() })
	t.Run("direct", func(t *testing.T) {
		plugintest.CacheSuite(t, replicaHost("acme.acme", a1).Cache(), replicaHost("acme.acme", a2).Cache())
	})
	t.Run("grpc", func(t *testing.T) {
		plugintest.CacheSuite(t, overGRPC(t, replicaHost("acme.acme", a1)).Cache(), overGRPC(t, replicaHost("acme.acme", a2)).Cache())
	})
}

func TestHostCacheRedis(t *testing.T) {
	srv := redistest.Start(t)
	open := func() cache.Cache {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := redis.Open(ctx, redis.Options{Addr: srv.Addr(), KeyPrefix: "hostcache:"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	// Two replicas, each with its own connection to one Redis.
	plugintest.CacheSuite(t, overGRPC(t, replicaHost("acme.acme", open())).Cache(), overGRPC(t, replicaHost("acme.acme", open())).Cache())
}

// Plugins share the cache backend but not their keys.
func TestHostCacheNamespaces(t *testing.T) {
	c := memcache.New(memcache.Options{})
	t.Cleanup(func() { _ = c.Close() })
	acme, other := replicaHost("acme.acme", c).Cache(), replicaHost("acme.other", c).Cache()
	ctx := context.Background()
	if _, err := acme.Put(ctx, "nonce/x", []byte("a"), host.CachePutOptions{TTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Consume(ctx, "nonce/x"); !errors.Is(err, host.ErrCacheMiss) {
		t.Fatalf("another plugin consumed acme's value: %v", err)
	}
	if ok, err := other.Put(ctx, "nonce/x", []byte("b"), host.CachePutOptions{TTL: time.Hour, IfAbsent: true}); err != nil || !ok {
		t.Fatalf("another plugin's IfAbsent put saw acme's key: %v, %v", ok, err)
	}
	for range 2 {
		if d, err := acme.Count(ctx, "rl", 2, time.Hour); err != nil || !d.Allowed {
			t.Fatalf("acme Count = %+v, %v", d, err)
		}
	}
	if d, err := other.Count(ctx, "rl", 2, time.Hour); err != nil || !d.Allowed || d.Remaining != 1 {
		t.Fatalf("another plugin's counter shared acme's: %+v, %v", d, err)
	}
	if v, err := acme.Consume(ctx, "nonce/x"); err != nil || string(v) != "a" {
		t.Fatalf("acme Consume = %q, %v", v, err)
	}
}

func TestHostCacheFailures(t *testing.T) {
	ctx := context.Background()
	none := overGRPC(t, replicaHost("acme.acme", nil)).Cache()
	if _, err := none.Consume(ctx, "n"); !errors.Is(err, host.ErrCacheUnavailable) {
		t.Fatalf("Consume without a cache = %v, want ErrCacheUnavailable", err)
	}
	c := memcache.New(memcache.Options{})
	view := overGRPC(t, replicaHost("acme.acme", c)).Cache()
	_ = c.Close()
	if _, err := view.Put(ctx, "n", nil, host.CachePutOptions{TTL: time.Second}); !errors.Is(err, host.ErrCacheUnavailable) {
		t.Fatalf("Put on a closed cache = %v, want ErrCacheUnavailable", err)
	}
}
