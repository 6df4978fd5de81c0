package server

import "errors"

// Errors of the package, for what is not an ACME problem: a server that
// cannot be built or cannot answer at all.
var (
	// ErrConfig: an invalid Config.
	ErrConfig = errors.New("acme: invalid configuration")
	// ErrNotCalibrated: the core's clock is not calibrated; time-dependent
	// requests are refused (served as serverInternal).
	ErrNotCalibrated = errors.New("acme: core clock not calibrated")
)
