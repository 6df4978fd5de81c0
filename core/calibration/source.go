package calibration

import (
	"context"
	"time"
)

// Sample is one measurement of the local wall clock against a time source.
type Sample struct {
	// Offset is true time minus the local wall clock: add it to the local
	// wall clock to get true time. Negative means the local clock is ahead.
	Offset time.Duration
	// Uncertainty bounds |true offset - Offset| as the source sees it: half
	// the round trip plus the server's own dispersion and the like. It is
	// never negative.
	Uncertainty time.Duration
	// Delay is the measured round-trip delay, if the source has one.
	Delay time.Duration
	// Stratum is the source's distance from a reference clock (1 = a
	// reference clock itself; 0 when the notion does not apply).
	Stratum int
	// Source names the source that produced the sample.
	Source string
}

// Source measures the local clock against some notion of true time.
//
// Name returns a short stable name used in Status, logs and attestations;
// it must be unique among a calibrator's sources.
//
// Sample takes one measurement. It must honour ctx's deadline and
// cancellation, must not retain ctx, and must be safe for concurrent use
// with itself. An error means no usable measurement; it should be typed so
// the operator can tell a timeout from a refusal.
type Source interface {
	Name() string
	Sample(ctx context.Context) (Sample, error)
}

// DefaultSystemUncertainty is the uncertainty SystemSource claims when none
// is configured.
const DefaultSystemUncertainty = 10 * time.Millisecond

// SystemSource trusts the local clock: offset 0, a fixed configured
// uncertainty. It is the default source when none is configured, for
// single-node setups whose host already runs an NTP daemon.
type SystemSource struct {
	// Uncertainty claimed for the local clock (DefaultSystemUncertainty if 0).
	Uncertainty time.Duration
}

// Name returns "system".
func (SystemSource) Name() string { return "system" }

// Sample returns offset 0.
func (s SystemSource) Sample(ctx context.Context) (Sample, error) {
	if err := ctx.Err(); err != nil {
		return Sample{}, err
	}
	u := s.Uncertainty
	if u <= 0 {
		u = DefaultSystemUncertainty
	}
	return Sample{Uncertainty: u, Source: "system"}, nil
}

var _ Source = SystemSource{}
