package calibration_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/avonzt/avon/core/calibration"
	"github.com/avonzt/avon/core/calibration/calibtest"
)

var t0 = time.Date(2026, 12, 2, 7, 0, 0, 0, time.UTC)

// fixture is a calibrator on a fake clock with a reference source.
type fixture struct {
	clock *calibtest.FakeClock
	cal   *calibration.Calibrator
	key   *calibtest.MLDSA65
}

func newFixture(t testing.TB, cfg calibration.Config, opts ...calibration.Option) *fixture {
	t.Helper()
	f := &fixture{clock: calibtest.NewFakeClock(t0), key: testKey(t)}
	if cfg.Sources == nil {
		cfg.Sources = []calibration.Source{calibtest.ReferenceSource{Clock: f.clock, Uncertainty: time.Millisecond, Stratum: 1}}
	}
	opts = append([]calibration.Option{calibration.WithClock(f.clock), calibration.WithSigner(f.key)}, opts...)
	cal, err := calibration.New(cfg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	f.cal = cal
	return f
}

func (f *fixture) calibrate(t testing.TB) {
	t.Helper()
	if err := f.cal.Calibrate(context.Background()); err != nil {
		t.Fatalf("Calibrate: %v", err)
	}
}

func (f *fixture) now(t testing.TB) time.Time {
	t.Helper()
	now, err := f.cal.Now()
	if err != nil {
		t.Fatalf("Now: %v", err)
	}
	return now
}

// trueNow is the fake clock's undisturbed timeline.
func (f *fixture) trueNow() time.Time {
	return f.clock.Now().Round(0).Add(-f.clock.WallError())
}

func testKey(t testing.TB) *calibtest.MLDSA65 {
	t.Helper()
	var seed [32]byte
	copy(seed[:], "calibration test key seed 000001")
	k, err := calibtest.NewMLDSA65("attest/1", &seed)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func wantIs(t testing.TB, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error %v (%T), want errors.Is %v", err, err, target)
	}
}

// failing is a source that fails with err.
func failing(name string, err error) calibration.Source {
	return calibtest.SourceFunc{SourceName: name, F: func(context.Context) (calibration.Sample, error) {
		return calibration.Sample{}, err
	}}
}

// fixed is a source that reports a fixed offset.
func fixed(name string, off, unc time.Duration) calibration.Source {
	return calibtest.SourceFunc{SourceName: name, F: func(context.Context) (calibration.Sample, error) {
		return calibration.Sample{Offset: off, Uncertainty: unc}, nil
	}}
}
