package host_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/avonzt/avon/sdk/host"
)

// TestReusedClock: a calibrated reading is reused, aged by the local
// clock, within the reuse period and read again after it; an
// uncalibrated or failed reading never is; reuse 0 reads every time.
func TestReusedClock(t *testing.T) {
	ctx := context.Background()
	base := time.Date(2026, 12, 2, 3, 4, 5, 0, time.UTC)
	var reads atomic.Int64
	var calibrated atomic.Bool
	var fail atomic.Bool
	calibrated.Store(true)
	now := func(context.Context) (host.Time, error) {
		reads.Add(1)
		if fail.Load() {
			return host.Time{}, errors.New("core gone")
		}
		return host.Time{Time: base, Calibrated: calibrated.Load()}, nil
	}

	c := host.NewReusedClock(now, time.Hour)
	var last time.Time
	for i := range 5 {
		got, err := c.Now(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got.Before(base) || got.Sub(base) > time.Minute || (i > 0 && got.Before(last)) {
			t.Fatalf("read %d: %v (base %v, last %v)", i, got, base, last)
		}
		last = got
	}
	if n := reads.Load(); n != 1 {
		t.Fatalf("%d reads of the core's clock for 5 within the period, want 1", n)
	}

	short := host.NewReusedClock(now, 20*time.Millisecond)
	reads.Store(0)
	if _, err := short.Now(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(30 * time.Millisecond)
	if _, err := short.Now(ctx); err != nil || reads.Load() != 2 {
		t.Fatalf("after the period: %v, %d reads, want 2", err, reads.Load())
	}

	calibrated.Store(false)
	unc := host.NewReusedClock(now, time.Hour)
	reads.Store(0)
	for i := range 3 {
		if _, err := unc.Now(ctx); !errors.Is(err, host.ErrNotCalibrated) {
			t.Fatalf("read %d uncalibrated: %v, want ErrNotCalibrated", i, err)
		}
	}
	if reads.Load() != 3 {
		t.Fatalf("%d reads, want 3: an uncalibrated reading was reused", reads.Load())
	}
	calibrated.Store(true)
	fail.Store(true)
	bad := host.NewReusedClock(now, time.Hour)
	for range 2 {
		if _, err := bad.Now(ctx); err == nil || errors.Is(err, host.ErrNotCalibrated) {
			t.Fatalf("failed read: %v", err)
		}
	}
	fail.Store(false)
	if _, err := bad.Now(ctx); err != nil {
		t.Fatalf("after the core came back: %v", err)
	}

	every := host.NewReusedClock(now, 0)
	reads.Store(0)
	for range 3 {
		if _, err := every.Now(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if reads.Load() != 3 {
		t.Fatalf("reuse 0: %d reads for 3, want 3", reads.Load())
	}
}
