package host

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// ErrNotCalibrated is ReusedClock's answer when the core's clock is not
// calibrated: time-dependent decisions must fail closed.
var ErrNotCalibrated = errors.New("host: the core's clock is not calibrated")

// ReusedClock reads the core's calibrated clock (Host.Now) and reuses a
// calibrated reading for up to a set age, aged by the plugin's monotonic
// clock (which drifts by parts per million over that time): a busy plugin
// asks the core about once per reuse period instead of on every request,
// and notices a core that lost its calibration within that period. An
// uncalibrated reading, or a failed one, is never reused. Safe for
// concurrent use.
type ReusedClock struct {
	now   func(context.Context) (Time, error)
	reuse time.Duration

	mu   sync.Mutex
	ok   bool      // core and read hold a calibrated reading
	core time.Time // the core's time when read
	read time.Time // the local clock then (monotonic)
}

// NewReusedClock reuses readings of now for up to reuse (0 or less: it
// asks now every time).
func NewReusedClock(now func(context.Context) (Time, error), reuse time.Duration) *ReusedClock {
	return &ReusedClock{now: now, reuse: reuse}
}

// Now returns the core's calibrated time; ErrNotCalibrated when the core
// answered uncalibrated, the core's error when it did not answer.
func (c *ReusedClock) Now(ctx context.Context) (time.Time, error) {
	if c.reuse > 0 {
		c.mu.Lock()
		if c.ok {
			if age := time.Since(c.read); age >= 0 && age < c.reuse {
				t := c.core.Add(age)
				c.mu.Unlock()
				return t, nil
			}
		}
		c.mu.Unlock()
	}
	t, err := c.now(ctx)
	read := time.Now()
	if err == nil && !t.Calibrated {
		err = ErrNotCalibrated
	}
	c.mu.Lock()
	c.ok = err == nil
	c.core, c.read = t.Time, read
	c.mu.Unlock()
	switch {
	case errors.Is(err, ErrNotCalibrated):
		return time.Time{}, err
	case err != nil:
		return time.Time{}, fmt.Errorf("clock: %w", err)
	}
	return t.Time, nil
}
