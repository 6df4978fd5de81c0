package rng

import (
	"errors"
	"fmt"
)

// Sentinel errors; match with errors.Is. Concrete errors carry detail
// (*HealthError, *InputError, *FailedError).
var (
	// ErrHealth: an SP 800-90B health test (start-up, repetition count or
	// adaptive proportion) failed on raw entropy samples.
	ErrHealth = errors.New("rng: entropy health test failed")
	// ErrFailed: the generator is in the failed state; it returns no bytes
	// until Reinstantiate succeeds or the process restarts.
	ErrFailed = errors.New("rng: generator failed")
	// ErrClosed: the generator (or DRBG) was closed / uninstantiated.
	ErrClosed = errors.New("rng: closed")
	// ErrNotInstantiated: a DRBG operation before Instantiate.
	ErrNotInstantiated = errors.New("rng: drbg not instantiated")
	// ErrReseedRequired: the DRBG's reseed counter passed its reseed
	// interval; Generate refuses until Reseed.
	ErrReseedRequired = errors.New("rng: reseed required")
	// ErrInputLength: an entropy input, nonce, personalization string,
	// additional input or request length outside the permitted range;
	// nothing changed.
	ErrInputLength = errors.New("rng: input length out of range")
	// ErrEntropySource: an entropy source returned an error or too few bytes.
	ErrEntropySource = errors.New("rng: entropy source failed")
	// ErrConfig: a Config or Option that cannot be used.
	ErrConfig = errors.New("rng: invalid configuration")
)

// Names of the health tests, as found in HealthError.Test.
const (
	TestRepetitionCount    = "repetition-count"
	TestAdaptiveProportion = "adaptive-proportion"
)

// HealthError reports a health test failure on one entropy source.
type HealthError struct {
	Source  string // Source.Name() of the failing source
	Test    string // TestRepetitionCount or TestAdaptiveProportion
	Startup bool   // failed during the start-up tests
	Count   int    // the count that reached the cutoff
	Cutoff  int    // the cutoff in force
}

func (e *HealthError) Error() string {
	phase := "continuous"
	if e.Startup {
		phase = "start-up"
	}
	return fmt.Sprintf("rng: entropy health test failed: source %q, %s %s test: count %d reached cutoff %d",
		e.Source, phase, e.Test, e.Count, e.Cutoff)
}

// Is makes errors.Is(err, ErrHealth) hold.
func (e *HealthError) Is(target error) bool { return target == ErrHealth }

// InputError reports an input whose length is out of range.
type InputError struct {
	Field    string // "entropy", "nonce", "personalization", "additional", "request"
	Len      int
	Min, Max int
}

func (e *InputError) Error() string {
	return fmt.Sprintf("rng: %s length %d outside [%d, %d]", e.Field, e.Len, e.Min, e.Max)
}

// Is makes errors.Is(err, ErrInputLength) hold.
func (e *InputError) Is(target error) bool { return target == ErrInputLength }

// FailedError is what Read returns once the generator has failed: it wraps
// the cause (often a *HealthError), so errors.Is(err, ErrFailed) holds and
// errors.Is(err, ErrHealth) holds when a health test was the cause.
type FailedError struct {
	Err error
}

func (e *FailedError) Error() string { return "rng: generator failed: " + e.Err.Error() }

// Unwrap returns the cause.
func (e *FailedError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrFailed) hold.
func (e *FailedError) Is(target error) bool { return target == ErrFailed }
