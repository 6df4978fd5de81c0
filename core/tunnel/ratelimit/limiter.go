package ratelimit

import (
	"fmt"
	"math"
	"net/netip"
	"sync"
	"time"
)

// Defaults of a Limiter.
const (
	DefaultPerSecond  = 20
	DefaultBurst      = 5
	DefaultMaxEntries = 65536

	// minSweepEvery bounds how often a full table triggers a sweep.
	minSweepEvery = 100 * time.Millisecond
	maxEntries    = 1 << 24
)

// Config holds the limits of a Limiter. A zero field takes its default; a
// negative one is an error.
type Config struct {
	// PerSecond is the sustained handshake rate per source prefix
	// (default 20; may be fractional, at most 1e9).
	PerSecond float64
	// Burst is how many handshakes a source may send at once (default 5).
	Burst int
	// MaxEntries bounds the number of source prefixes tracked (default
	// 65536, at most 1<<24).
	MaxEntries int
}

func (c Config) withDefaults() (Config, error) {
	if c.PerSecond == 0 {
		c.PerSecond = DefaultPerSecond
	}
	if c.Burst == 0 {
		c.Burst = DefaultBurst
	}
	if c.MaxEntries == 0 {
		c.MaxEntries = DefaultMaxEntries
	}
	switch {
	case !(c.PerSecond > 0 && c.PerSecond <= 1e9): // also refuses NaN
		return c, fmt.Errorf("per second %v: %w", c.PerSecond, ErrInvalidConfig)
	case c.Burst < 1 || c.Burst > 1<<20:
		return c, fmt.Errorf("burst %d: %w", c.Burst, ErrInvalidConfig)
	case c.MaxEntries < 1 || c.MaxEntries > maxEntries:
		return c, fmt.Errorf("max entries %d: %w", c.MaxEntries, ErrInvalidConfig)
	}
	return c, nil
}

// Stats counts a Limiter's decisions.
type Stats struct {
	// Allowed handshakes.
	Allowed uint64
	// Limited: refused because the source's bucket was empty.
	Limited uint64
	// Full: refused because the table was full and the source new.
	Full uint64
	// Invalid: refused because the address was not valid.
	Invalid uint64
}

// prefix is a source's key: the v4-mapped 16 bytes of an IPv4 address, or
// the first 8 bytes of an IPv6 address with the rest zero (the two cannot
// collide: a masked IPv6 key has zeros where a v4-mapped one has 0xffff).
type prefix [16]byte

func prefixOf(a netip.Addr) prefix {
	a = a.Unmap()
	p := prefix(a.As16())
	if a.Is6() {
		clear(p[8:])
	}
	return p
}

// Limiter is a per-source-prefix token bucket for handshakes.
//
// Each entry stores only the bucket's theoretical arrival time (GCRA): the
// time at which the bucket would be full again. A request at t is allowed
// when that time is at most (Burst-1) intervals after t, and moves it one
// interval on. It is safe for concurrent use; one mutex guards the table.
type Limiter struct {
	cfg        Config
	interval   int64 // ns per handshake
	tolerance  int64 // (Burst-1)*interval
	sweepEvery time.Duration

	mu struct {
		sync.Mutex
		table     map[prefix]int64 // theoretical arrival time, unix ns
		lastSweep time.Time
		stats     Stats
	}
}

// New returns a Limiter with cfg's limits (zero fields take the defaults).
func New(cfg Config) (*Limiter, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("new limiter: %w", err)
	}
	interval := int64(math.Ceil(float64(time.Second) / c.PerSecond))
	l := &Limiter{
		cfg:       c,
		interval:  interval,
		tolerance: int64(c.Burst-1) * interval,
	}
	l.sweepEvery = max(time.Duration(int64(c.Burst)*interval), minSweepEvery)
	l.mu.table = make(map[prefix]int64)
	return l, nil
}

// Config returns the limits in force (defaults filled in).
func (l *Limiter) Config() Config { return l.cfg }

// Allow reports whether a handshake from addr may proceed at now, and
// spends one token when it does. An invalid address, a source over its
// rate, and a new source while the table is full are refused.
func (l *Limiter) Allow(addr netip.Addr, now time.Time) bool {
	if !addr.IsValid() {
		l.mu.Lock()
		l.mu.stats.Invalid++
		l.mu.Unlock()
		return false
	}
	k := prefixOf(addr)
	t := now.UnixNano()

	l.mu.Lock()
	defer l.mu.Unlock()
	tat, ok := l.mu.table[k]
	if !ok && len(l.mu.table) >= l.cfg.MaxEntries {
		if now.Sub(l.mu.lastSweep) >= l.sweepEvery || now.Before(l.mu.lastSweep) {
			l.sweepLocked(now)
		}
		if len(l.mu.table) >= l.cfg.MaxEntries {
			l.mu.stats.Full++
			return false
		}
	}
	tat = max(tat, t)
	if tat-t > l.tolerance {
		l.mu.stats.Limited++
		return false
	}
	l.mu.table[k] = tat + l.interval
	l.mu.stats.Allowed++
	return true
}

// Sweep drops every source whose bucket is full again at now (forgetting it
// changes no decision) and returns how many it dropped.
func (l *Limiter) Sweep(now time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sweepLocked(now)
}

// sweepLocked is Sweep; the caller must hold l.mu.
func (l *Limiter) sweepLocked(now time.Time) int {
	t := now.UnixNano()
	n := 0
	for k, tat := range l.mu.table {
		if tat <= t {
			delete(l.mu.table, k)
			n++
		}
	}
	l.mu.lastSweep = now
	return n
}

// Len returns the number of sources tracked.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.mu.table)
}

// Stats returns a snapshot of the counters.
func (l *Limiter) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mu.stats
}
