package server_test

import (
	"context"
	"crypto/rand"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/avonzt/avon/plugins/acme/server"
	"github.com/avonzt/avon/sdk/host"
	"github.com/avonzt/avon/sdk/plugintest"
)

// countingClock is the core's clock as the plugin sees it: a fixed time,
// calibrated or not, counting the reads.
type countingClock struct {
	reads        atomic.Int64
	uncalibrated atomic.Bool
	t            time.Time
}

func (c *countingClock) now(context.Context) (host.Time, error) {
	c.reads.Add(1)
	return host.Time{Time: c.t, Calibrated: !c.uncalibrated.Load()}, nil
}

func clockServer(t *testing.T, reuse time.Duration, c *countingClock) *server.Server {
	t.Helper()
	h := plugintest.NewHost()
	s, err := server.New(server.Config{ClockReuse: reuse}, server.Deps{Storage: h.Storage(), Cache: h.Cache(), CA: refusingCA{}, Rand: rand.Reader,
		Clock: c.now, Validator: noValidator{}})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestClockReuse: a calibrated reading is reused, aged by the local
// clock, within ClockReuse; an uncalibrated one never is, and a negative
// ClockReuse asks the core every time.
func TestClockReuse(t *testing.T) {
	ctx := context.Background()
	base := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

	c := &countingClock{t: base}
	s := clockServer(t, time.Hour, c)
	for i := range 5 {
		got, err := s.Now(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got.Before(base) || got.Sub(base) > time.Minute {
			t.Fatalf("read %d: %v, want the core's %v aged by the local clock", i, got, base)
		}
	}
	if n := c.reads.Load(); n != 1 {
		t.Fatalf("%d reads of the core's clock for 5 within ClockReuse; want 1", n)
	}

	c = &countingClock{t: base}
	s = clockServer(t, -1, c)
	for range 3 {
		if _, err := s.Now(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := c.reads.Load(); n != 3 {
		t.Fatalf("%d reads with reuse off; want 3", n)
	}

	c = &countingClock{t: base}
	c.uncalibrated.Store(true)
	s = clockServer(t, time.Hour, c)
	for i := range 2 {
		if _, err := s.Now(ctx); !errors.Is(err, server.ErrNotCalibrated) {
			t.Fatalf("read %d of an uncalibrated clock: %v, want ErrNotCalibrated", i, err)
		}
	}
	if n := c.reads.Load(); n != 2 {
		t.Fatalf("%d reads of an uncalibrated clock; want 2 (a failure is never reused)", n)
	}
	c.uncalibrated.Store(false)
	if _, err := s.Now(ctx); err != nil {
		t.Fatalf("read once calibrated again: %v", err)
	}
}
