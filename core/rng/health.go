package rng

import (
	"math"
)

// SP 800-90B §4.4 parameters shared by every source.
const (
	// AlphaLog2 is -log2 of the false-positive probability alpha = 2^-20
	// the cutoffs are computed for.
	AlphaLog2 = 20
	// APTWindow is the Adaptive Proportion Test window for non-binary
	// (byte) samples.
	APTWindow = 512
	// StartupSamples is how many samples each source must pass through both
	// tests before its output is first used.
	StartupSamples = 1024
	// DefaultMinEntropy is the assessed min-entropy, in bits per byte
	// sample, credited to a source that does not state its own (see the
	// package documentation for why the OS source is credited 4 and not 8).
	DefaultMinEntropy = 4.0
)

// RCTCutoff returns the Repetition Count Test cutoff C = 1 + ceil(20/H) for
// min-entropy h bits per sample (SP 800-90B §4.4.1, alpha = 2^-20): C
// identical consecutive samples is a failure.
func RCTCutoff(h float64) int {
	return 1 + int(math.Ceil(AlphaLog2/h))
}

// APTCutoff returns the Adaptive Proportion Test cutoff for min-entropy h
// bits per sample with a window of APTWindow samples (SP 800-90B §4.4.2):
// C = 1 + CRITBINOM(W, 2^-h, 1 - alpha), the smallest C such that a window
// in which the first sample's value occurs C or more times has probability
// at most alpha for a source of exactly h bits.
func APTCutoff(h float64) int {
	return 1 + critBinom(APTWindow, math.Exp2(-h), math.Exp2(-AlphaLog2))
}

// critBinom returns the smallest k with P(X > k) <= alpha for
// X ~ Binomial(n, p), i.e. the inverse CDF at 1 - alpha. The upper tail is
// summed from the top down, smallest terms first, so no precision is lost
// to 1 - alpha rounding.
func critBinom(n int, p, alpha float64) int {
	if p >= 1 {
		return n
	}
	tail := 0.0 // P(X > k)
	for k := n; k >= 0; k-- {
		pk := binomPMF(n, k, p)
		if tail+pk > alpha {
			return k
		}
		tail += pk
	}
	return 0
}

// binomPMF is P(X = k) for X ~ Binomial(n, p), computed in log space.
func binomPMF(n, k int, p float64) float64 {
	if p <= 0 {
		if k == 0 {
			return 1
		}
		return 0
	}
	lg := func(x int) float64 { v, _ := math.Lgamma(float64(x) + 1); return v }
	logC := lg(n) - lg(k) - lg(n-k)
	return math.Exp(logC + float64(k)*math.Log(p) + float64(n-k)*math.Log1p(-p))
}

// healthTests runs the continuous Repetition Count and Adaptive Proportion
// tests over a stream of byte samples. Its zero value is not usable; use
// newHealthTests. It is not safe for concurrent use (the owning source's
// lock guards it).
type healthTests struct {
	rctCutoff, aptCutoff int

	rctLast  byte
	rctCount int // 0 before the first sample

	aptRef   byte
	aptCount int
	aptPos   int // position in the current window; 0 starts a new window

	samples uint64
}

func newHealthTests(h float64) healthTests {
	return healthTests{rctCutoff: RCTCutoff(h), aptCutoff: APTCutoff(h)}
}

// feed passes samples through both tests and returns the first failure
// (test name, count reached); "" when all samples passed. Samples after a
// failure are not examined.
func (t *healthTests) feed(samples []byte) (test string, count int) {
	for _, x := range samples {
		t.samples++
		// Repetition Count Test.
		if t.rctCount > 0 && x == t.rctLast {
			t.rctCount++
			if t.rctCount >= t.rctCutoff {
				return TestRepetitionCount, t.rctCount
			}
		} else {
			t.rctLast, t.rctCount = x, 1
		}
		// Adaptive Proportion Test.
		if t.aptPos == 0 {
			t.aptRef, t.aptCount = x, 1
		} else if x == t.aptRef {
			t.aptCount++
			if t.aptCount >= t.aptCutoff {
				return TestAdaptiveProportion, t.aptCount
			}
		}
		t.aptPos++
		if t.aptPos == APTWindow {
			t.aptPos = 0
		}
	}
	return "", 0
}
