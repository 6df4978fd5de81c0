package flow

import (
	"net/netip"
	"sync"
	"time"
)

// CacheKey is exactly what a decision depends on: the policy set version,
// the principal, the hash of the session's subject (posture facts, OS,
// agent version: everything of the session the query carries), and the
// destination. Anything else a query carries (the time) is covered by
// the cache's TTL.
type CacheKey struct {
	Version   uint64
	Principal string
	Subject   uint64
	Dst       netip.Addr
	Port      uint16 // 0 for protocols without ports (ICMP)
	Proto     uint8
}

// Decision is a policy decision for a flow.
type Decision struct {
	Allow bool
	// ReportOnly: the policy set is in report-only mode and would have
	// denied; Allow is true.
	ReportOnly bool
	// PolicyIDs decided; Reason says why, for people.
	PolicyIDs []string
	Reason    string
	// FailClosed: the engine failed or is absent; Allow is false and the
	// decision is not cached.
	FailClosed bool
}

// Cache is the decision cache: bounded, with a TTL, safe for concurrent
// use. It is pure: the time is an argument. Entries of an older policy set
// version are unreachable (the version is in the key) and Purge drops them
// all when the version moves.
type Cache struct {
	max int
	ttl int64

	mu sync.Mutex
	m  map[CacheKey]cacheEntry
}

type cacheEntry struct {
	d       *Decision
	expires int64
}

// NewCache returns a cache of at most size entries (at least 1), each
// valid for ttl (at least 1 ns).
func NewCache(size int, ttl time.Duration) *Cache {
	return &Cache{max: max(size, 1), ttl: int64(max(ttl, 1)), m: make(map[CacheKey]cacheEntry)}
}

// Get returns the decision cached for k at now (unix ns).
func (c *Cache) Get(k *CacheKey, now int64) (*Decision, bool) {
	c.mu.Lock()
	e, ok := c.m[*k]
	c.mu.Unlock()
	if !ok || now >= e.expires {
		return nil, false
	}
	return e.d, true
}

// Put caches d for k from now (unix ns). When the cache is full an
// arbitrary entry makes room (expired ones first when one is at hand).
func (c *Cache) Put(k *CacheKey, d *Decision, now int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[*k]; !ok && len(c.m) >= c.max {
		evicted := 0
		for ek, e := range c.m {
			if now >= e.expires || evicted == 0 {
				delete(c.m, ek)
				evicted++
			}
			if evicted >= 8 {
				break
			}
		}
	}
	c.m[*k] = cacheEntry{d: d, expires: now + c.ttl}
}

// Purge empties the cache.
func (c *Cache) Purge() {
	c.mu.Lock()
	clear(c.m)
	c.mu.Unlock()
}

// Len is the number of entries.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
