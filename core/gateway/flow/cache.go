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
//
// Every entry lives for the same TTL, so the order of insertion is the
// order of expiry: a FIFO queue of the keys gives both the entries that
// expired (at its head, dropped as Put passes by) and, when the cache is
// full, the oldest entry to evict, in O(1) per Put whatever the size.
type Cache struct {
	max int
	ttl int64

	mu  sync.Mutex
	m   map[CacheKey]cacheEntry
	seq uint64
	// q holds the keys in the order they were put, from q[head]; an item
	// whose seq no longer matches its entry's is stale (the key was put
	// again, or evicted) and skipped.
	q    []queued
	head int
}

type cacheEntry struct {
	d       *Decision
	expires int64
	seq     uint64
}

type queued struct {
	k   CacheKey
	seq uint64
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

// Put caches d for k from now (unix ns). Entries that expired are
// dropped first; when the cache is still full the oldest entry makes
// room.
func (c *Cache) Put(k *CacheKey, d *Decision, now int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	// Drop what expired from the head (a few per Put at most, amortized).
	for c.head < len(c.q) {
		it := &c.q[c.head]
		if e, ok := c.m[it.k]; ok && e.seq == it.seq && now < e.expires {
			break
		}
		c.popLocked()
	}
	if _, ok := c.m[*k]; !ok {
		for len(c.m) >= c.max && c.popLocked() {
		}
	}
	c.seq++
	c.m[*k] = cacheEntry{d: d, expires: now + c.ttl, seq: c.seq}
	c.q = append(c.q, queued{k: *k, seq: c.seq})
	if c.head > len(c.q)/2 || len(c.q)-c.head > 2*c.max+64 {
		c.compactLocked()
	}
}

// popLocked removes the queue's head item and, when it is live, its
// entry; false when the queue is empty.
func (c *Cache) popLocked() bool {
	if c.head >= len(c.q) {
		return false
	}
	it := c.q[c.head]
	c.q[c.head] = queued{} // let the principal's string go
	c.head++
	if e, ok := c.m[it.k]; ok && e.seq == it.seq {
		delete(c.m, it.k)
	}
	return true
}

// compactLocked keeps only the live items of the queue, from index 0: the
// queue stays within a small multiple of the entries.
func (c *Cache) compactLocked() {
	n := 0
	for _, it := range c.q[c.head:] {
		if e, ok := c.m[it.k]; ok && e.seq == it.seq {
			c.q[n] = it
			n++
		}
	}
	clear(c.q[n:])
	c.q, c.head = c.q[:n], 0
}

// Purge empties the cache.
func (c *Cache) Purge() {
	c.mu.Lock()
	clear(c.m)
	clear(c.q)
	c.q, c.head = c.q[:0], 0
	c.mu.Unlock()
}

// Len is the number of entries.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
