package calibtest

import (
	"context"
	"time"

	"github.com/avonzt/avon/core/calibration"
)

// SourceFunc is a calibration.Source whose Sample calls F.
type SourceFunc struct {
	SourceName string
	F          func(ctx context.Context) (calibration.Sample, error)
}

// Name returns SourceName.
func (s SourceFunc) Name() string { return s.SourceName }

// Sample calls F.
func (s SourceFunc) Sample(ctx context.Context) (calibration.Sample, error) { return s.F(ctx) }

// ReferenceSource measures a FakeClock against its undisturbed timeline,
// as a perfect NTP server would: after StepWall(+1h) it reports an offset
// of -1h.
type ReferenceSource struct {
	SourceName  string // "reference" if empty
	Clock       *FakeClock
	Uncertainty time.Duration
	Stratum     int
}

// Name returns SourceName or "reference".
func (s ReferenceSource) Name() string {
	if s.SourceName == "" {
		return "reference"
	}
	return s.SourceName
}

// Sample returns minus the clock's wall error.
func (s ReferenceSource) Sample(ctx context.Context) (calibration.Sample, error) {
	if err := ctx.Err(); err != nil {
		return calibration.Sample{}, err
	}
	return calibration.Sample{Offset: -s.Clock.WallError(), Uncertainty: s.Uncertainty, Stratum: s.Stratum, Source: s.Name()}, nil
}

var (
	_ calibration.Source = SourceFunc{}
	_ calibration.Source = ReferenceSource{}
	_ calibration.Clock  = (*FakeClock)(nil)
)
