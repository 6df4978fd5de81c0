package ratelimit_test

import (
	"errors"
	"testing"
	"time"

	"github.com/avonzt/avon/core/tunnel/ratelimit"
)

func newLoad(t testing.TB, cfg ratelimit.LoadConfig) *ratelimit.Load {
	t.Helper()
	l, err := ratelimit.NewLoad(cfg)
	if err != nil {
		t.Fatalf("NewLoad: %v", err)
	}
	return l
}

// observe records n messages spread evenly over d starting at start and
// returns start+d, where the next contiguous batch would begin.
func observe(l *ratelimit.Load, start time.Time, n int, d time.Duration) time.Time {
	step := d / time.Duration(n)
	for i := range n {
		l.Observe(start.Add(time.Duration(i) * step))
	}
	return start.Add(d)
}

func TestLoadEnterAndLeave(t *testing.T) {
	l := newLoad(t, ratelimit.LoadConfig{Threshold: 100}) // release 50
	for i := range 99 {
		l.Observe(t0.Add(time.Duration(i) * 9 * time.Millisecond))
	}
	now := t0.Add(98 * 9 * time.Millisecond)
	if l.UnderLoad(now) {
		t.Fatal("under load below the threshold")
	}
	l.Observe(now)
	if !l.UnderLoad(now) {
		t.Fatal("not under load at the threshold within a second")
	}
	// Hysteresis: at 60/s (above release, below threshold) it stays.
	next := now.Add(10 * time.Millisecond)
	for s := range 5 {
		next = observe(l, next, 60, time.Second)
		if !l.UnderLoad(next) {
			t.Fatalf("left load at 60/s in second %d", s)
		}
	}
	// At 40/s (at most release within any second) it leaves.
	next = observe(l, next, 40, time.Second)
	if l.UnderLoad(next) {
		t.Fatal("still under load at 40/s")
	}
	// And stays out at 60/s: re-entering needs the full threshold.
	for range 3 {
		next = observe(l, next, 60, time.Second)
		if l.UnderLoad(next) {
			t.Fatal("re-entered load below the threshold")
		}
	}
}

func TestLoadSlidingWindow(t *testing.T) {
	tests := []struct {
		name string
		n    int
		over time.Duration
		want bool
	}{
		{"100 in 999 ms", 100, 999 * time.Millisecond, true},
		{"100 over 2 s", 100, 2 * time.Second, false},
		{"100 in one instant", 100, 0, true},
		{"99 in one instant", 99, 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := newLoad(t, ratelimit.LoadConfig{Threshold: 100})
			step := time.Duration(0)
			if tc.n > 1 {
				step = tc.over / time.Duration(tc.n-1)
			}
			var now time.Time
			for i := range tc.n {
				now = t0.Add(time.Duration(i) * step)
				l.Observe(now)
			}
			if got := l.UnderLoad(now); got != tc.want {
				t.Fatalf("UnderLoad = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestLoadQuietEnds(t *testing.T) {
	l := newLoad(t, ratelimit.LoadConfig{Threshold: 10, Release: 2})
	observe(l, t0, 10, 0)
	if !l.UnderLoad(t0) {
		t.Fatal("not under load")
	}
	if !l.UnderLoad(t0.Add(999 * time.Millisecond)) {
		t.Fatal("left load while the burst is in the window")
	}
	if l.UnderLoad(t0.Add(time.Second)) {
		t.Fatal("still under load after a quiet second")
	}
	// A clock going back does not corrupt the window.
	l.Observe(t0.Add(-time.Hour))
	if l.UnderLoad(t0.Add(time.Second)) {
		t.Fatal("one message put it under load")
	}
}

func TestLoadConfig(t *testing.T) {
	bad := []ratelimit.LoadConfig{
		{Threshold: -1}, {Threshold: 1<<20 + 1}, {Threshold: 10, Release: 10}, {Threshold: 10, Release: -1},
	}
	for _, c := range bad {
		if _, err := ratelimit.NewLoad(c); !errors.Is(err, ratelimit.ErrInvalidConfig) {
			t.Errorf("%+v: err %v", c, err)
		}
	}
	if got := newLoad(t, ratelimit.LoadConfig{}).Config(); got != (ratelimit.LoadConfig{Threshold: 1000, Release: 500}) {
		t.Fatalf("defaults %+v", got)
	}
	if got := newLoad(t, ratelimit.LoadConfig{Threshold: 1}).Config(); got.Release != 0 {
		t.Fatalf("threshold 1: %+v", got)
	}
}

func BenchmarkLoadObserve(b *testing.B) {
	l := newLoad(b, ratelimit.LoadConfig{})
	now := t0
	for b.Loop() {
		now = now.Add(100 * time.Microsecond)
		l.Observe(now)
		_ = l.UnderLoad(now)
	}
}
