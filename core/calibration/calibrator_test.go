package calibration_test

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/avonzt/avon/core/calibration"
	"github.com/avonzt/avon/core/calibration/calibtest"
)

func TestNewDefaultsAndValidation(t *testing.T) {
	c, err := calibration.New(calibration.Config{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := c.Config()
	if cfg.MaxAge != 30*time.Second || cfg.MaxSkew != 5*time.Second || cfg.Interval != 10*time.Second || cfg.SourceTimeout != 5*time.Second {
		t.Fatalf("defaults %+v", cfg)
	}
	if len(cfg.Sources) != 1 || cfg.Sources[0].Name() != "system" {
		t.Fatalf("default sources %v", cfg.Sources)
	}
	bad := map[string]calibration.Config{
		"interval not below max age": {MaxAge: time.Second, Interval: time.Second},
		"negative max age":           {MaxAge: -time.Second},
		"negative skew":              {MaxSkew: -1},
		"nil source":                 {Sources: []calibration.Source{nil}},
		"duplicate names":            {Sources: []calibration.Source{calibration.SystemSource{}, calibration.SystemSource{}}},
		"empty name":                 {Sources: []calibration.Source{fixed("", 0, 0)}},
	}
	for name, cfg := range bad {
		t.Run(name, func(t *testing.T) {
			_, err := calibration.New(cfg)
			wantIs(t, err, calibration.ErrInvalidConfig)
		})
	}
}

func TestNotCalibratedFailsClosed(t *testing.T) {
	f := newFixture(t, calibration.Config{})
	_, err := f.cal.Now()
	wantIs(t, err, calibration.ErrNotCalibrated)
	detail, err := f.cal.Ready(context.Background())
	wantIs(t, err, calibration.ErrNotCalibrated)
	if !strings.Contains(detail, "never calibrated") {
		t.Fatalf("detail %q", detail)
	}
	wantIs(t, f.cal.CheckTimestamp(t0), calibration.ErrNotCalibrated)
	_, err = f.cal.Attest(context.Background(), "agent", nil)
	wantIs(t, err, calibration.ErrNotCalibrated)
	if st := f.cal.Status(); st.Calibrated || st.Fresh {
		t.Fatalf("status %+v", st)
	}
}

func TestCalibratedNowAppliesOffset(t *testing.T) {
	for _, off := range []time.Duration{2500 * time.Millisecond, -7 * time.Second, 0} {
		f := newFixture(t, calibration.Config{MaxSkew: 10 * time.Second, Sources: []calibration.Source{fixed("s", off, 3*time.Millisecond)}})
		f.calibrate(t)
		f.clock.Advance(4 * time.Second)
		got := f.now(t)
		if want := f.clock.Now().Round(0).Add(off); !got.Equal(want) {
			t.Fatalf("offset %s: Now %s, want %s", off, got, want)
		}
		st := f.cal.Status()
		if !st.Calibrated || !st.Fresh || st.Offset != off || st.Age != 4*time.Second || st.Source != "s" || st.LocalSkew != -off {
			t.Fatalf("status %+v", st)
		}
		if want := 3*time.Millisecond + 400*time.Microsecond; st.Uncertainty != want {
			t.Fatalf("uncertainty %s, want %s (source plus 4s of drift bound)", st.Uncertainty, want)
		}
		detail, err := f.cal.Ready(context.Background())
		if err != nil {
			t.Fatalf("Ready: %v", err)
		}
		if !strings.Contains(detail, "from s, age 4s (max 30s), local clock skew") {
			t.Fatalf("Ready detail %q", detail)
		}
	}
}

func TestStaleAfterMaxAgeAndRecovery(t *testing.T) {
	var broken atomic.Bool
	clock := calibtest.NewFakeClock(t0)
	ref := calibtest.ReferenceSource{Clock: clock, Uncertainty: time.Millisecond}
	src := calibtest.SourceFunc{SourceName: "ntp-a", F: func(ctx context.Context) (calibration.Sample, error) {
		if broken.Load() {
			return calibration.Sample{}, errors.New("i/o timeout")
		}
		return ref.Sample(ctx)
	}}
	cal, err := calibration.New(calibration.Config{Sources: []calibration.Source{src}}, calibration.WithClock(clock))
	if err != nil {
		t.Fatal(err)
	}
	if err := cal.Calibrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	clock.Advance(30 * time.Second) // exactly MaxAge: still usable
	if _, err := cal.Now(); err != nil {
		t.Fatalf("at MaxAge: %v", err)
	}

	broken.Store(true)
	err = cal.Calibrate(context.Background())
	wantIs(t, err, calibration.ErrNoSamples)
	var se *calibration.SourceError
	if !errors.As(err, &se) || se.Source != "ntp-a" {
		t.Fatalf("round error %v does not name the source", err)
	}
	clock.Advance(1500 * time.Millisecond)
	_, err = cal.Now()
	var stale *calibration.StaleError
	if !errors.As(err, &stale) || !errors.Is(err, calibration.ErrStale) || stale.Age != 31500*time.Millisecond {
		t.Fatalf("Now after MaxAge: %v", err)
	}
	detail, err := cal.Ready(context.Background())
	wantIs(t, err, calibration.ErrStale)
	if want := "clock calibration is 31.5s old (max age 30s); ntp-a: i/o timeout"; detail != want {
		t.Fatalf("Ready detail %q, want %q", detail, want)
	}
	if st := cal.Status(); !st.Calibrated || st.Fresh || st.Sources[0].Err == nil {
		t.Fatalf("status %+v", st)
	}

	broken.Store(false)
	if err := cal.Calibrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := cal.Now(); err != nil {
		t.Fatalf("after recalibration: %v", err)
	}
	if _, err := cal.Ready(context.Background()); err != nil {
		t.Fatalf("Ready after recalibration: %v", err)
	}
}

// TestWallClockStep: a ±1h step of the local wall clock moves neither the
// calibrated time nor the age; Ready names the skew; nothing stays locked.
func TestWallClockStep(t *testing.T) {
	for _, step := range []time.Duration{time.Hour, -time.Hour} {
		t.Run(step.String(), func(t *testing.T) {
			f := newFixture(t, calibration.Config{})
			f.calibrate(t)
			f.clock.Advance(2 * time.Second)
			before := f.now(t)

			f.clock.StepWall(step)
			if got := f.now(t); !got.Equal(before) {
				t.Fatalf("calibrated time moved with the wall clock: %s -> %s", before, got)
			}
			st := f.cal.Status()
			if st.Age != 2*time.Second || st.LocalSkew != step {
				t.Fatalf("after step: age %s skew %s", st.Age, st.LocalSkew)
			}
			_, err := f.cal.Ready(context.Background())
			var skew *calibration.SkewError
			if !errors.As(err, &skew) {
				t.Fatalf("Ready after a %s step: %v", step, err)
			}
			dir := "ahead of"
			if step < 0 {
				dir = "behind"
			}
			if want := "local clock is 1h0m0s " + dir + " calibrated time (limit 5s)"; err.Error() != want {
				t.Fatalf("Ready error %q, want %q", err, want)
			}
			// Peers with correct clocks are still accepted; the stepped
			// local wall time is not.
			if err := f.cal.CheckTimestamp(f.trueNow()); err != nil {
				t.Fatalf("correct peer refused: %v", err)
			}
			wantIs(t, f.cal.CheckTimestamp(f.clock.Now()), calibration.ErrSkew)

			// Rounds keep the calibration fresh well past MaxAge and
			// measure the step.
			for range 10 {
				f.clock.Advance(10 * time.Second)
				f.calibrate(t)
			}
			st = f.cal.Status()
			if st.Offset != -step || st.Age != 0 || !st.Fresh {
				t.Fatalf("after recalibration: %+v", st)
			}
			if got := f.now(t); !got.Equal(f.trueNow()) {
				t.Fatalf("calibrated %s, true %s", got, f.trueNow())
			}

			// The operator fixes the host clock: ready again at once.
			f.clock.StepWall(-step)
			if d, err := f.cal.Ready(context.Background()); err != nil {
				t.Fatalf("Ready after the fix: %v (%s)", err, d)
			}
			f.calibrate(t)
			if st := f.cal.Status(); st.Offset != 0 || st.Age < 0 {
				t.Fatalf("after fix: %+v", st)
			}
		})
	}
}

// TestWallClockStepSystemSource: with the default source the next round
// adopts the stepped clock, so nothing is locked out.
func TestWallClockStepSystemSource(t *testing.T) {
	for _, step := range []time.Duration{time.Hour, -time.Hour} {
		f := newFixture(t, calibration.Config{Sources: []calibration.Source{calibration.SystemSource{}}})
		f.calibrate(t)
		f.clock.StepWall(step)
		f.clock.Advance(time.Second)
		if _, err := f.cal.Ready(context.Background()); err == nil {
			t.Fatalf("step %s not reported before the next round", step)
		}
		f.calibrate(t)
		if d, err := f.cal.Ready(context.Background()); err != nil {
			t.Fatalf("step %s: not ready after recalibration: %v (%s)", step, err, d)
		}
		if got, want := f.now(t), f.clock.Now().Round(0); !got.Equal(want) {
			t.Fatalf("Now %s, want the stepped wall %s", got, want)
		}
		if st := f.cal.Status(); st.Age != 0 {
			t.Fatalf("age %s", st.Age)
		}
	}
}

func TestCombine(t *testing.T) {
	ms := time.Millisecond
	s := func(name string, off, unc time.Duration) calibration.Sample {
		return calibration.Sample{Source: name, Offset: off, Uncertainty: unc}
	}
	cases := []struct {
		name    string
		samples []calibration.Sample
		want    string
	}{
		{"one", []calibration.Sample{s("a", 5*ms, 9*ms)}, "a"},
		{"two disagree: lowest uncertainty", []calibration.Sample{s("a", 0, 9*ms), s("b", time.Second, 2*ms)}, "b"},
		{"falseticker loses to a majority", []calibration.Sample{s("a", 0, 20*ms), s("liar", 10*time.Second, ms), s("c", 5*ms, 10*ms)}, "c"},
		{"all agree: lowest uncertainty", []calibration.Sample{s("a", 0, 20*ms), s("b", ms, 5*ms), s("c", 2*ms, 10*ms)}, "b"},
		{"tie keeps source order", []calibration.Sample{s("a", 0, 5*ms), s("b", ms, 5*ms)}, "a"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := calibration.Combine(tc.samples); got.Source != tc.want {
				t.Fatalf("chose %s, want %s", got.Source, tc.want)
			}
		})
	}
}

func TestSourceErrorsRecorded(t *testing.T) {
	f := newFixture(t, calibration.Config{Sources: []calibration.Source{
		failing("down", errors.New("connection refused")),
		fixed("up", 20*time.Millisecond, 5*time.Millisecond),
		fixed("negative", 0, -time.Millisecond),
	}})
	f.calibrate(t)
	st := f.cal.Status()
	if st.Source != "up" || st.Offset != 20*time.Millisecond {
		t.Fatalf("chose %s %s", st.Source, st.Offset)
	}
	if st.Sources[0].Err == nil || st.Sources[1].Err != nil || st.Sources[2].Err == nil || !st.Sources[1].HasSample {
		t.Fatalf("per-source results %+v", st.Sources)
	}
	if st.Sources[0].Attempted.IsZero() {
		t.Fatal("attempt time not recorded")
	}
	detail, err := f.cal.Ready(context.Background())
	if err != nil || !strings.Contains(detail, "down: connection refused") || !strings.Contains(detail, "negative: sample uncertainty") {
		t.Fatalf("Ready %q %v", detail, err)
	}
}

func TestSourceTimeout(t *testing.T) {
	hang := calibtest.SourceFunc{SourceName: "hang", F: func(ctx context.Context) (calibration.Sample, error) {
		<-ctx.Done()
		return calibration.Sample{}, ctx.Err()
	}}
	cal, err := calibration.New(calibration.Config{MaxAge: time.Second, Interval: 200 * time.Millisecond, SourceTimeout: 50 * time.Millisecond, Sources: []calibration.Source{hang}})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = cal.Calibrate(context.Background())
	if !errors.Is(err, calibration.ErrNoSamples) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Calibrate: %v", err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("round took %s despite a 50ms source timeout", el)
	}
}

func TestRunRecalibratesAndStops(t *testing.T) {
	before := runtime.NumGoroutine()
	var rounds atomic.Int64
	src := calibtest.SourceFunc{SourceName: "count", F: func(context.Context) (calibration.Sample, error) {
		rounds.Add(1)
		return calibration.Sample{Uncertainty: time.Millisecond}, nil
	}}
	cal, err := calibration.New(calibration.Config{MaxAge: 300 * time.Millisecond, Interval: 10 * time.Millisecond, Sources: []calibration.Source{src}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); cal.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for rounds.Load() < 3 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := rounds.Load(); n < 3 {
		t.Fatalf("%d rounds in 10s at a 10ms interval", n)
	}
	if _, err := cal.Now(); err != nil {
		t.Fatalf("Now while running: %v", err)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	n := rounds.Load()
	time.Sleep(50 * time.Millisecond)
	if rounds.Load() != n {
		t.Fatal("rounds continued after Run returned")
	}
	for i := 0; i < 100 && runtime.NumGoroutine() > before; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if g := runtime.NumGoroutine(); g > before {
		t.Fatalf("%d goroutines after Run, %d before", g, before)
	}
}

func TestConcurrentUse(t *testing.T) {
	f := newFixture(t, calibration.Config{})
	f.calibrate(t)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				switch i % 4 {
				case 0:
					_ = f.cal.Calibrate(context.Background())
				case 1:
					_, _ = f.cal.Now()
				case 2:
					_ = f.cal.Status()
				default:
					f.clock.Advance(time.Millisecond)
					_, _ = f.cal.Ready(context.Background())
				}
			}
		}()
	}
	wg.Wait()
	if _, err := f.cal.Now(); err != nil {
		t.Fatal(err)
	}
}
