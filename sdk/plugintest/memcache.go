package plugintest

import (
	"context"
	"fmt"
	"time"

	"github.com/avonzt/avon/sdk/host"
)

// memCache is MemHost's host.Cache: the core cache's semantics (TTLs on
// the host clock, atomic consume and put-if-absent, fixed-window counters)
// in one map under the host's lock.
type memCache MemHost

type cacheEntry struct {
	value   []byte
	count   int // rate-limit counters
	expires time.Time
}

// SetCacheFailure makes every later cache call fail with
// host.ErrCacheUnavailable (or succeed again), to test how a plugin treats
// a cache outage.
func (h *MemHost) SetCacheFailure(fail bool) {
	h.mu.Lock()
	h.failCache = fail
	h.mu.Unlock()
}

// liveLocked returns the live entry under k, dropping it if it expired.
// The caller must hold mu.
func (c *memCache) liveLocked(k string) (*cacheEntry, bool) {
	e, ok := c.cache[k]
	if !ok {
		return nil, false
	}
	if !c.now().Before(e.expires) {
		delete(c.cache, k)
		return nil, false
	}
	return e, true
}

func ms(d time.Duration) time.Duration { return time.Duration(host.CacheMillis(d)) * time.Millisecond }

func (c *memCache) begin(ctx context.Context, op, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if c.failCache {
		return fmt.Errorf("cache %s %q: test failure: %w", op, key, host.ErrCacheUnavailable)
	}
	return nil
}

func (c *memCache) Put(ctx context.Context, key string, value []byte, o host.CachePutOptions) (bool, error) {
	if err := host.CheckCachePut(key, value, o.TTL); err != nil {
		return false, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.begin(ctx, "put", key); err != nil {
		return false, err
	}
	k := "v" + key
	if _, ok := c.liveLocked(k); ok && o.IfAbsent {
		return false, nil
	}
	c.cache[k] = &cacheEntry{value: append([]byte{}, value...), expires: c.now().Add(ms(o.TTL))}
	return true, nil
}

func (c *memCache) Get(ctx context.Context, key string) ([]byte, time.Duration, error) {
	if err := host.CheckCacheKey(key); err != nil {
		return nil, 0, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.begin(ctx, "get", key); err != nil {
		return nil, 0, err
	}
	e, ok := c.liveLocked("v" + key)
	if !ok {
		return nil, 0, fmt.Errorf("cache get %q: %w", key, host.ErrCacheMiss)
	}
	return append([]byte{}, e.value...), e.expires.Sub(c.now()), nil
}

func (c *memCache) Delete(ctx context.Context, key string) error {
	if err := host.CheckCacheKey(key); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.begin(ctx, "delete", key); err != nil {
		return err
	}
	delete(c.cache, "v"+key)
	return nil
}

func (c *memCache) Consume(ctx context.Context, key string) ([]byte, error) {
	if err := host.CheckCacheKey(key); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.begin(ctx, "consume", key); err != nil {
		return nil, err
	}
	e, ok := c.liveLocked("v" + key)
	if !ok {
		return nil, fmt.Errorf("cache consume %q: %w", key, host.ErrCacheMiss)
	}
	delete(c.cache, "v"+key)
	return e.value, nil
}

func (c *memCache) Count(ctx context.Context, key string, limit int, window time.Duration) (host.RateDecision, error) {
	if err := host.CheckCacheCount(key, limit, window); err != nil {
		return host.RateDecision{}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.begin(ctx, "count", key); err != nil {
		return host.RateDecision{}, err
	}
	k := "r" + key
	e, ok := c.liveLocked(k)
	if !ok {
		e = &cacheEntry{expires: c.now().Add(ms(window))}
		c.cache[k] = e
	}
	if e.count >= limit {
		return host.RateDecision{RetryAfter: e.expires.Sub(c.now())}, nil
	}
	e.count++
	return host.RateDecision{Allowed: true, Remaining: limit - e.count}, nil
}
