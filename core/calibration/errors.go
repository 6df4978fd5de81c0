package calibration

import (
	"errors"
	"fmt"
	"time"
)

// Sentinels of the calibration package. Every error it returns matches one
// of them with errors.Is; the typed errors below carry the numbers.
var (
	// ErrNotCalibrated: no calibration has succeeded yet, so there is no
	// trusted time; time-dependent decisions must fail closed.
	ErrNotCalibrated = errors.New("clock not calibrated")
	// ErrStale: the last calibration is older than MaxAge (the core's own,
	// or the one an attestation was issued under).
	ErrStale = errors.New("clock calibration stale")
	// ErrSkew: a time (a claimed timestamp, an attestation's time, or the
	// core's own wall clock) is farther from calibrated time than allowed.
	ErrSkew = errors.New("time skew beyond limit")
	// ErrExpired: an attestation is past its expiry or older than MaxAge.
	ErrExpired = errors.New("time attestation expired")
	// ErrBadSignature: an attestation's signature does not verify.
	ErrBadSignature = errors.New("time attestation signature invalid")
	// ErrMalformed: bytes or a header value are not a well-formed
	// attestation or timestamp.
	ErrMalformed = errors.New("malformed time input")
	// ErrUnsupportedVersion: an attestation of a version this core does not
	// know. It also matches ErrMalformed.
	ErrUnsupportedVersion = errors.New("unsupported time attestation version")
	// ErrNoSamples: a calibration round got no usable sample from any source.
	ErrNoSamples = errors.New("no time source gave a usable sample")
	// ErrNoSigner: Attest was called on a calibrator built without a Signer.
	ErrNoSigner = errors.New("no time attestation signer configured")
	// ErrInvalidConfig: New was given a configuration it cannot run.
	ErrInvalidConfig = errors.New("invalid calibration config")
)

// StaleError says how old the calibration is. It matches ErrStale.
type StaleError struct {
	Age    time.Duration // monotonic age of the calibration
	MaxAge time.Duration
	What   string // "clock calibration" or "attestation calibration"
}

func (e *StaleError) Error() string {
	w := e.What
	if w == "" {
		w = "clock calibration"
	}
	return fmt.Sprintf("%s is %s old (max age %s)", w, roundDur(e.Age), e.MaxAge)
}

// Unwrap matches ErrStale.
func (e *StaleError) Unwrap() error { return ErrStale }

// SkewError reports a time too far from calibrated time. It matches ErrSkew.
type SkewError struct {
	What    string    // "timestamp", "attestation time" or "local clock"
	Claimed time.Time // the time being judged
	Now     time.Time // calibrated time it was judged against
	Skew    time.Duration
	Limit   time.Duration
}

// Error reads e.g. "timestamp is 7.2s ahead of calibrated time (limit 5s)".
func (e *SkewError) Error() string {
	w := e.What
	if w == "" {
		w = "timestamp"
	}
	dir, d := "ahead of", e.Skew
	if d < 0 {
		dir, d = "behind", -d
	}
	return fmt.Sprintf("%s is %s %s calibrated time (limit %s)", w, roundDur(d), dir, e.Limit)
}

// Unwrap matches ErrSkew.
func (e *SkewError) Unwrap() error { return ErrSkew }

// ExpiredError reports an attestation past its validity. It matches ErrExpired.
type ExpiredError struct {
	Expiry time.Time // attestation expiry, or time + MaxAge
	Now    time.Time // calibrated time
	Reason string    // "expired" or "exceeded max age"
}

func (e *ExpiredError) Error() string {
	r := e.Reason
	if r == "" {
		r = "expired"
	}
	return fmt.Sprintf("time attestation %s %s ago", r, roundDur(e.Now.Sub(e.Expiry)))
}

// Unwrap matches ErrExpired.
func (e *ExpiredError) Unwrap() error { return ErrExpired }

// FormatError names what is wrong with malformed input. It matches
// ErrMalformed, and ErrUnsupportedVersion for a version mismatch.
type FormatError struct {
	Field  string
	Reason string
	err    error // ErrUnsupportedVersion or nil
}

func (e *FormatError) Error() string {
	return fmt.Sprintf("malformed time attestation: %s: %s", e.Field, e.Reason)
}

// Unwrap matches ErrMalformed (and ErrUnsupportedVersion where it applies).
func (e *FormatError) Unwrap() []error {
	if e.err != nil {
		return []error{ErrMalformed, e.err}
	}
	return []error{ErrMalformed}
}

// SourceError records one source's failure in a calibration round.
type SourceError struct {
	Source string
	Err    error
}

func (e *SourceError) Error() string { return fmt.Sprintf("time source %s: %v", e.Source, e.Err) }

// Unwrap returns the source's error.
func (e *SourceError) Unwrap() error { return e.Err }

// roundDur shortens a duration for messages: milliseconds below a minute,
// tenths of a second above.
func roundDur(d time.Duration) time.Duration {
	switch a := max(d, -d); {
	case a >= time.Minute:
		return d.Round(100 * time.Millisecond)
	case a >= 10*time.Millisecond:
		return d.Round(time.Millisecond)
	default:
		return d.Round(time.Microsecond)
	}
}
