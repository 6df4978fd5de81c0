package ratelimit

import (
	"fmt"
	"sync"
	"time"
)

// DefaultThreshold is the default handshake rate (per second) at which the
// gateway counts as under load. A full handshake costs the gateway about
// 0.3 ms of CPU (one X-Wing encapsulation, one ML-DSA-65 signature, two
// verifications), so 1000/s is about a third of a two-core machine.
const DefaultThreshold = 1000

const maxThreshold = 1 << 20

// LoadConfig holds the limits of a Load.
type LoadConfig struct {
	// Threshold is the count of handshake messages within one second at
	// which the gateway is under load (default 1000, at most 1<<20).
	Threshold int
	// Release is the count within one second at or below which it stops
	// being under load (default Threshold/2; must be below Threshold).
	Release int
}

func (c LoadConfig) withDefaults() (LoadConfig, error) {
	if c.Threshold == 0 {
		c.Threshold = DefaultThreshold
	}
	if c.Threshold < 1 || c.Threshold > maxThreshold {
		return c, fmt.Errorf("threshold %d: %w", c.Threshold, ErrInvalidConfig)
	}
	if c.Release == 0 {
		c.Release = c.Threshold / 2
	}
	if c.Release < 0 || c.Release >= c.Threshold {
		return c, fmt.Errorf("release %d with threshold %d: %w", c.Release, c.Threshold, ErrInvalidConfig)
	}
	return c, nil
}

// Load detects that the gateway receives handshakes faster than it wants to
// answer without address proof.
//
// It keeps the times of the last Threshold messages in a ring, so the count
// over the last second is exact up to Threshold and the memory is fixed
// (8 bytes per unit of Threshold). Times are clamped to be non-decreasing.
// It is safe for concurrent use; one mutex guards it.
type Load struct {
	cfg LoadConfig

	mu struct {
		sync.Mutex
		ring  []int64 // unix ns, ring[head-1] the newest
		head  int
		n     int
		last  int64
		under bool
	}
}

// NewLoad returns a Load with cfg's limits.
func NewLoad(cfg LoadConfig) (*Load, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("new load: %w", err)
	}
	l := &Load{cfg: c}
	l.mu.ring = make([]int64, c.Threshold)
	return l, nil
}

// Config returns the limits in force (defaults filled in).
func (l *Load) Config() LoadConfig { return l.cfg }

// Observe records one handshake message at now.
func (l *Load) Observe(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	t := max(now.UnixNano(), l.mu.last)
	l.mu.last = t
	l.mu.ring[l.mu.head] = t
	l.mu.head = (l.mu.head + 1) % len(l.mu.ring)
	l.mu.n = min(l.mu.n+1, len(l.mu.ring))
	l.updateLocked(t)
}

// UnderLoad reports whether the gateway is under load at now: it becomes so
// when Threshold messages fall within one second and stays so until at most
// Release do.
func (l *Load) UnderLoad(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.updateLocked(now.UnixNano())
	return l.mu.under
}

// atLeastLocked reports whether at least k messages were observed in the
// second before t. The caller must hold l.mu.
func (l *Load) atLeastLocked(k int, t int64) bool {
	if k <= 0 {
		return true
	}
	if k > l.mu.n {
		return false
	}
	kth := l.mu.ring[(l.mu.head-k+len(l.mu.ring))%len(l.mu.ring)]
	return t-kth < int64(time.Second)
}

func (l *Load) updateLocked(t int64) {
	if !l.mu.under {
		l.mu.under = l.atLeastLocked(l.cfg.Threshold, t)
	} else if !l.atLeastLocked(l.cfg.Release+1, t) {
		l.mu.under = false
	}
}
