package calibration

import "time"

// Clock reads the local clock.
//
// Now returns the local wall-clock time together with a monotonic reading,
// as time.Now does. The calibrator measures every age and interval as
// b.Sub(a) on two values returned by the same Clock, which Go computes from
// the monotonic readings, so a stepped wall clock (an NTP step, an operator
// running `date -s`) never makes an age negative or huge. The wall part is
// used only where the local wall clock itself is being measured (offsets).
// Implementations must be safe for concurrent use.
type Clock interface {
	Now() time.Time
}

// SystemClock is the process clock (time.Now).
type SystemClock struct{}

// Now returns time.Now(), which carries a monotonic reading.
func (SystemClock) Now() time.Time { return time.Now() }

var _ Clock = SystemClock{}
