// Package memcache is the in-process cache.Cache for a single node: sessions,
// replay sets, one-time tokens, rate-limit counters and pub/sub, all in one
// map and one bus inside the process. It is also the fast double beside the
// Redis backend in tests; both pass core/cache/cachetest.
//
// A Backend is the state; every Cache opened on it (Backend.Open) sees the
// same entries and the same bus, the way core replicas on one Redis do, so
// the conformance suite can publish on one view and receive on another. New
// is a Backend with a single view.
//
// Memory is bounded: expired entries are swept on writes (at most once per
// SweepInterval, and always before a write would exceed the limits), and a
// write that would still exceed MaxEntries or MaxBytes fails with
// cache.ErrUnavailable. Subscribers get a buffer of SubscriberBuffer
// messages each; Publish never blocks: a message that does not fit is
// dropped for that subscriber, counted, and signalled on its Gaps channel.
//
// It starts no goroutine, does no I/O and must not be used to share state
// between processes. Time comes from Options.Now, so TTL tests need not
// sleep.
package memcache

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/avonzt/avon/core/cache"
)

// Defaults of Options.
const (
	DefaultMaxEntries       = 1 << 20
	DefaultMaxBytes         = 256 << 20
	DefaultSweepInterval    = time.Minute
	DefaultSubscriberBuffer = 256
)

// Options configures a Backend. The zero value is usable.
type Options struct {
	// Now is the clock (default time.Now).
	Now func() time.Time
	// MaxEntries bounds the number of entries of all kinds
	// (default DefaultMaxEntries).
	MaxEntries int
	// MaxBytes bounds the sum of the sizes of keys and values
	// (default DefaultMaxBytes).
	MaxBytes int
	// SweepInterval is the least time between two sweeps of expired
	// entries done on writes (default DefaultSweepInterval).
	SweepInterval time.Duration
	// SubscriberBuffer is each subscription's buffer, in messages
	// (default DefaultSubscriberBuffer).
	SubscriberBuffer int
}

// entry kinds, the first byte of a map key; the rest is the name, or
// set + ":" + id (sets never contain ':').
const (
	kindSession = 's'
	kindUsed    = 'u'
	kindToken   = 't'
	kindRate    = 'r'
)

type entry struct {
	value   []byte    // sessions and tokens
	count   int       // rate-limit counter
	expires time.Time // the entry does not exist from this instant on
}

func (e *entry) size(key string) int { return len(key) + len(e.value) }

// Backend is the shared in-process state. Its methods are safe for
// concurrent use.
type Backend struct {
	opts Options

	// mu guards the entries and the accounting below.
	mu struct {
		sync.Mutex
		entries   map[string]*entry
		bytes     int
		lastSweep time.Time
	}

	// bus guards the subscribers.
	bus struct {
		sync.Mutex
		subs map[string]map[*subscription]struct{} // channel -> subscribers
	}
}

// NewBackend returns an empty backend.
func NewBackend(opts Options) *Backend {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MaxEntries <= 0 {
		opts.MaxEntries = DefaultMaxEntries
	}
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = DefaultMaxBytes
	}
	if opts.SweepInterval <= 0 {
		opts.SweepInterval = DefaultSweepInterval
	}
	if opts.SubscriberBuffer <= 0 {
		opts.SubscriberBuffer = DefaultSubscriberBuffer
	}
	b := &Backend{opts: opts}
	b.mu.entries = make(map[string]*entry)
	b.mu.lastSweep = opts.Now()
	b.bus.subs = make(map[string]map[*subscription]struct{})
	return b
}

// Len returns the number of entries held, expired ones not yet swept
// included.
func (b *Backend) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.mu.entries)
}

// Open returns a new view of the backend. Closing the view closes its
// subscriptions and leaves the backend and other views as they are.
func (b *Backend) Open() *Cache {
	c := &Cache{b: b}
	c.subs.set = make(map[*subscription]struct{})
	return c
}

// New returns a Cache on a backend of its own.
func New(opts Options) *Cache { return NewBackend(opts).Open() }

// Cache is one view of a Backend; it implements cache.Cache.
type Cache struct {
	b      *Backend
	closed atomic.Bool

	// subs guards this view's subscriptions.
	subs struct {
		sync.Mutex
		set map[*subscription]struct{}
	}
}

// Backend returns the backend the view was opened on.
func (c *Cache) Backend() *Backend { return c.b }

// begin checks that the view is open and ctx is not done; call it after the
// arguments are checked.
func (c *Cache) begin(ctx context.Context) error {
	if c.closed.Load() {
		return fmt.Errorf("memcache: %w", cache.ErrClosed)
	}
	return cache.CheckContext(ctx)
}

// getLocked returns the live entry under key, removing it if it expired.
// The caller must hold b.mu.
func (b *Backend) getLocked(key string, now time.Time) *entry {
	e, ok := b.mu.entries[key]
	if !ok {
		return nil
	}
	if !now.Before(e.expires) {
		b.deleteLocked(key, e)
		return nil
	}
	return e
}

// deleteLocked removes e, stored under key. The caller must hold b.mu.
func (b *Backend) deleteLocked(key string, e *entry) {
	delete(b.mu.entries, key)
	b.mu.bytes -= e.size(key)
}

// sweepLocked removes every expired entry. The caller must hold b.mu.
func (b *Backend) sweepLocked(now time.Time) {
	for k, e := range b.mu.entries {
		if !now.Before(e.expires) {
			b.deleteLocked(k, e)
		}
	}
	b.mu.lastSweep = now
}

// putLocked stores e under key, replacing what is there, within the
// limits. The caller must hold b.mu.
func (b *Backend) putLocked(key string, e *entry, now time.Time) error {
	if now.Sub(b.mu.lastSweep) >= b.opts.SweepInterval {
		b.sweepLocked(now)
	}
	if !b.fitsLocked(key, e) {
		b.sweepLocked(now)
		if !b.fitsLocked(key, e) {
			return fmt.Errorf("memcache: full (%d entries, %d bytes; limits %d, %d): %w",
				len(b.mu.entries), b.mu.bytes, b.opts.MaxEntries, b.opts.MaxBytes, cache.ErrUnavailable)
		}
	}
	if cur, ok := b.mu.entries[key]; ok {
		b.mu.bytes -= cur.size(key)
	}
	b.mu.entries[key] = e
	b.mu.bytes += e.size(key)
	return nil
}

// fitsLocked reports whether storing e under key stays within the limits.
// The caller must hold b.mu.
func (b *Backend) fitsLocked(key string, e *entry) bool {
	n, bytes := len(b.mu.entries)+1, b.mu.bytes+e.size(key)
	if cur, ok := b.mu.entries[key]; ok {
		n, bytes = n-1, bytes-cur.size(key)
	}
	return n <= b.opts.MaxEntries && bytes <= b.opts.MaxBytes
}

func ttlDuration(d time.Duration) time.Duration {
	return time.Duration(cache.Millis(d)) * time.Millisecond
}

func clone(v []byte) []byte {
	out := make([]byte, len(v))
	copy(out, v)
	return out
}

func sessionKey(id string) string          { return string(kindSession) + id }
func setKey(k byte, set, id string) string { return string(k) + set + ":" + id }

// PutSession implements cache.Cache.
func (c *Cache) PutSession(ctx context.Context, id string, value []byte, ttl time.Duration) error {
	if err := checkPut("session id", id, value, ttl); err != nil {
		return err
	}
	if err := c.begin(ctx); err != nil {
		return err
	}
	b := c.b
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.opts.Now()
	key := sessionKey(id)
	return b.putLocked(key, &entry{value: clone(value), expires: now.Add(ttlDuration(ttl))}, now)
}

func checkPut(what, id string, value []byte, ttl time.Duration) error {
	if err := cache.ValidateName(what, id); err != nil {
		return err
	}
	if err := cache.CheckValue(value); err != nil {
		return err
	}
	return cache.CheckTTL("ttl", ttl)
}

// GetSession implements cache.Cache.
func (c *Cache) GetSession(ctx context.Context, id string) ([]byte, time.Duration, error) {
	if err := cache.ValidateName("session id", id); err != nil {
		return nil, 0, err
	}
	if err := c.begin(ctx); err != nil {
		return nil, 0, err
	}
	b := c.b
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.opts.Now()
	e := b.getLocked(sessionKey(id), now)
	if e == nil {
		return nil, 0, fmt.Errorf("session %q: %w", id, cache.ErrNotFound)
	}
	return clone(e.value), e.expires.Sub(now), nil
}

// TouchSession implements cache.Cache.
func (c *Cache) TouchSession(ctx context.Context, id string, ttl time.Duration) error {
	if err := cache.ValidateName("session id", id); err != nil {
		return err
	}
	if err := cache.CheckTTL("ttl", ttl); err != nil {
		return err
	}
	if err := c.begin(ctx); err != nil {
		return err
	}
	b := c.b
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.opts.Now()
	e := b.getLocked(sessionKey(id), now)
	if e == nil {
		return fmt.Errorf("session %q: %w", id, cache.ErrNotFound)
	}
	e.expires = now.Add(ttlDuration(ttl))
	return nil
}

// DeleteSession implements cache.Cache.
func (c *Cache) DeleteSession(ctx context.Context, id string) error {
	if err := cache.ValidateName("session id", id); err != nil {
		return err
	}
	if err := c.begin(ctx); err != nil {
		return err
	}
	b := c.b
	b.mu.Lock()
	defer b.mu.Unlock()
	key := sessionKey(id)
	if e, ok := b.mu.entries[key]; ok {
		b.deleteLocked(key, e)
	}
	return nil
}

func checkSetID(set, id string) error {
	if err := cache.ValidateSet(set); err != nil {
		return err
	}
	return cache.ValidateName("id", id)
}

// MarkUsed implements cache.Cache.
func (c *Cache) MarkUsed(ctx context.Context, set, id string, ttl time.Duration) (bool, error) {
	if err := checkSetID(set, id); err != nil {
		return false, err
	}
	if err := cache.CheckTTL("ttl", ttl); err != nil {
		return false, err
	}
	if err := c.begin(ctx); err != nil {
		return false, err
	}
	b := c.b
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.opts.Now()
	key := setKey(kindUsed, set, id)
	if b.getLocked(key, now) != nil {
		return false, nil
	}
	if err := b.putLocked(key, &entry{expires: now.Add(ttlDuration(ttl))}, now); err != nil {
		return false, err
	}
	return true, nil
}

// PutToken implements cache.Cache.
func (c *Cache) PutToken(ctx context.Context, set, id string, value []byte, ttl time.Duration) error {
	if err := cache.ValidateSet(set); err != nil {
		return err
	}
	if err := checkPut("token id", id, value, ttl); err != nil {
		return err
	}
	if err := c.begin(ctx); err != nil {
		return err
	}
	b := c.b
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.opts.Now()
	key := setKey(kindToken, set, id)
	return b.putLocked(key, &entry{value: clone(value), expires: now.Add(ttlDuration(ttl))}, now)
}

// ConsumeToken implements cache.Cache.
func (c *Cache) ConsumeToken(ctx context.Context, set, id string) ([]byte, error) {
	if err := checkSetID(set, id); err != nil {
		return nil, err
	}
	if err := c.begin(ctx); err != nil {
		return nil, err
	}
	b := c.b
	b.mu.Lock()
	defer b.mu.Unlock()
	key := setKey(kindToken, set, id)
	e := b.getLocked(key, b.opts.Now())
	if e == nil {
		return nil, fmt.Errorf("token %s/%q: %w", set, id, cache.ErrNotFound)
	}
	b.deleteLocked(key, e)
	return e.value, nil // the stored copy is the caller's now
}

// AddToken implements cache.Cache.
func (c *Cache) AddToken(ctx context.Context, set, id string, value []byte, ttl time.Duration) (bool, error) {
	if err := cache.ValidateSet(set); err != nil {
		return false, err
	}
	if err := checkPut("token id", id, value, ttl); err != nil {
		return false, err
	}
	if err := c.begin(ctx); err != nil {
		return false, err
	}
	b := c.b
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.opts.Now()
	key := setKey(kindToken, set, id)
	if b.getLocked(key, now) != nil {
		return false, nil
	}
	if err := b.putLocked(key, &entry{value: clone(value), expires: now.Add(ttlDuration(ttl))}, now); err != nil {
		return false, err
	}
	return true, nil
}

// PeekToken implements cache.Cache.
func (c *Cache) PeekToken(ctx context.Context, set, id string) ([]byte, time.Duration, error) {
	if err := checkSetID(set, id); err != nil {
		return nil, 0, err
	}
	if err := c.begin(ctx); err != nil {
		return nil, 0, err
	}
	b := c.b
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.opts.Now()
	e := b.getLocked(setKey(kindToken, set, id), now)
	if e == nil {
		return nil, 0, fmt.Errorf("token %s/%q: %w", set, id, cache.ErrNotFound)
	}
	return clone(e.value), e.expires.Sub(now), nil
}

// DeleteToken implements cache.Cache.
func (c *Cache) DeleteToken(ctx context.Context, set, id string) error {
	if err := checkSetID(set, id); err != nil {
		return err
	}
	if err := c.begin(ctx); err != nil {
		return err
	}
	b := c.b
	b.mu.Lock()
	defer b.mu.Unlock()
	key := setKey(kindToken, set, id)
	if e, ok := b.mu.entries[key]; ok {
		b.deleteLocked(key, e)
	}
	return nil
}

// Allow implements cache.Cache.
func (c *Cache) Allow(ctx context.Context, key string, limit int, window time.Duration) (cache.Decision, error) {
	if err := cache.CheckAllow(key, limit, window); err != nil {
		return cache.Decision{}, err
	}
	if err := c.begin(ctx); err != nil {
		return cache.Decision{}, err
	}
	b := c.b
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.opts.Now()
	k := string(kindRate) + key
	e := b.getLocked(k, now)
	if e == nil {
		e = &entry{expires: now.Add(ttlDuration(window))}
		if err := b.putLocked(k, e, now); err != nil {
			return cache.Decision{}, err
		}
	}
	if e.count >= limit {
		return cache.Decision{RetryAfter: e.expires.Sub(now)}, nil
	}
	e.count++
	return cache.Decision{Allowed: true, Remaining: limit - e.count}, nil
}

// Ping implements cache.Cache.
func (c *Cache) Ping(ctx context.Context) error { return c.begin(ctx) }

// Close implements cache.Cache.
func (c *Cache) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	c.subs.Lock()
	subs := c.subs.set
	c.subs.set = nil
	c.subs.Unlock()
	for s := range subs {
		s.close()
	}
	return nil
}

var _ cache.Cache = (*Cache)(nil)
