package server

import (
	"context"
	"testing"
	"time"

	"github.com/avonzt/avon/core/calibration"
	"github.com/avonzt/avon/core/calibration/calibtest"
)

// TestCalibratedClockForPlugins checks what the host Now service reports:
// uncalibrated before the calibrator exists, then the local clock corrected
// by the calibrated offset, with its uncertainty.
func TestCalibratedClockForPlugins(t *testing.T) {
	s := &Server{}
	if now := (calibratedClock{s}).Now(); now.Calibrated || time.Since(now.Time).Abs() > time.Second {
		t.Fatalf("before calibration: %+v", now)
	}
	src := calibtest.SourceFunc{SourceName: "ahead", F: func(context.Context) (calibration.Sample, error) {
		return calibration.Sample{Offset: 90 * time.Second, Uncertainty: 20 * time.Millisecond, Stratum: 1, Source: "ahead"}, nil
	}}
	cal, err := calibration.New(calibration.Config{Sources: []calibration.Source{src}})
	if err != nil {
		t.Fatal(err)
	}
	if err := cal.Calibrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	s.calib = cal
	now := (calibratedClock{s}).Now()
	if !now.Calibrated || now.Uncertainty < 20*time.Millisecond {
		t.Fatalf("after calibration: %+v", now)
	}
	if d := now.Time.Sub(time.Now()) - 90*time.Second; d.Abs() > time.Second {
		t.Fatalf("calibrated time is %s off the +90s source", d)
	}
}
