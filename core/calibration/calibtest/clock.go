// Package calibtest holds in-memory doubles for tests of code that uses
// core/calibration: a fake clock whose wall clock can be stepped apart from
// its monotonic clock, sources driven by a function or by the fake clock,
// and an ML-DSA-65 signer and verifier. It must not be imported by
// production code.
package calibtest

import (
	"fmt"
	"sync"
	"time"
	"unsafe"
)

// FakeClock is a calibration.Clock under test control. It keeps two
// timelines, as a real host does: a monotonic one that only Advance moves,
// and a wall clock that Advance moves too and StepWall moves alone, as an
// NTP step or `date -s` would. Values from Now carry a real Go monotonic
// reading, so t.Sub between them measures the monotonic timeline exactly
// as it does for time.Now.
type FakeClock struct {
	mu      sync.Mutex
	base    time.Time     // a time.Now() value: wall and monotonic reading
	elapsed time.Duration // monotonic time advanced since base
	step    time.Duration // sum of wall steps
}

// NewFakeClock returns a clock whose wall reads start (which must lie
// between 1885 and 2157, the range Go keeps monotonic readings for).
func NewFakeClock(start time.Time) *FakeClock {
	now := time.Now()
	c := &FakeClock{base: now.Add(start.Sub(now.Round(0)))}
	// Prove at construction that the monotonic splice below works with this
	// Go's time.Time, so no test silently measures wall differences.
	a := c.Now()
	c.StepWall(time.Hour)
	b := c.Now()
	c.StepWall(-time.Hour)
	if b.Sub(a) != 0 || b.Round(0).Sub(a.Round(0)) != time.Hour || !a.Round(0).Equal(start.Round(0)) {
		panic("calibtest: cannot fake monotonic readings with this Go version's time.Time")
	}
	return c
}

// Now returns the current wall time with the current monotonic reading.
func (c *FakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	mono := c.base.Add(c.elapsed)
	wall := c.base.Add(c.elapsed + c.step)
	return splice(wall, mono)
}

// Advance moves both clocks forward by d (d must not be negative: a
// monotonic clock never goes back).
func (c *FakeClock) Advance(d time.Duration) {
	if d < 0 {
		panic(fmt.Sprintf("calibtest: Advance(%s): monotonic time cannot go back", d))
	}
	c.mu.Lock()
	c.elapsed += d
	c.mu.Unlock()
}

// StepWall moves the wall clock alone by d (either sign).
func (c *FakeClock) StepWall(d time.Duration) {
	c.mu.Lock()
	c.step += d
	c.mu.Unlock()
}

// WallError is the sum of all wall steps: how far the wall clock is from
// the undisturbed timeline that ReferenceSource treats as true time.
func (c *FakeClock) WallError() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.step
}

// timeLayout mirrors time.Time's fields. With the hasMonotonic bit set in
// wall, ext is the monotonic reading and wall holds the wall seconds and
// nanoseconds; NewFakeClock verifies this holds before any use.
type timeLayout struct {
	wall uint64
	ext  int64
	loc  *time.Location
}

const hasMonotonic = 1 << 63

// splice returns wall's wall-clock reading with mono's monotonic reading.
func splice(wall, mono time.Time) time.Time {
	w := (*timeLayout)(unsafe.Pointer(&wall))
	m := (*timeLayout)(unsafe.Pointer(&mono))
	if w.wall&hasMonotonic == 0 || m.wall&hasMonotonic == 0 {
		panic("calibtest: fake time outside the range Go keeps monotonic readings for")
	}
	w.ext = m.ext
	return wall
}
