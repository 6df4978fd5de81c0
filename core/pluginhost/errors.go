package pluginhost

import (
	"errors"
	"fmt"

	"github.com/avonzt/avon/sdk/errdef"
)

// Errors of the plugin host.
var (
	// ErrUnavailable: the plugin is not running. It wraps
	// errdef.ErrPluginUnavailable so callers that know only the SDK match it.
	ErrUnavailable = fmt.Errorf("plugin unavailable: %w", errdef.ErrPluginUnavailable)
	// ErrChecksumMismatch: the binary's SHA-256 differs from the pin.
	ErrChecksumMismatch = errors.New("plugin binary checksum mismatch")
	// ErrChecksumRequired: plugins { require_checksums = true } and no pin.
	ErrChecksumRequired = errors.New("plugin checksum required")
	// ErrKindMismatch: the binary serves another kind than configured.
	ErrKindMismatch = errors.New("plugin serves another kind")
	// ErrConfigRejected: the plugin refused its configuration.
	ErrConfigRejected = errors.New("plugin rejected its configuration")
	// ErrDependency: a `uses` entry names no plugin, or the graph has a cycle.
	ErrDependency = errors.New("plugin dependency error")
	// ErrStopped: the host is stopped.
	ErrStopped = errors.New("plugin host stopped")
)

// UnavailableError names the plugin a call could not reach.
type UnavailableError struct {
	Plugin string // "<kind>.<name>"
	State  State
	Cause  error // the transport error, if any
}

func (e *UnavailableError) Error() string {
	s := fmt.Sprintf("plugin %s unavailable (%s)", e.Plugin, e.State)
	if e.Cause != nil {
		s += ": " + e.Cause.Error()
	}
	return s
}

// Unwrap matches ErrUnavailable and errdef.ErrPluginUnavailable.
func (e *UnavailableError) Unwrap() []error {
	return []error{ErrUnavailable, errdef.ErrPluginUnavailable}
}

// ChecksumError reports both hashes of a refused binary.
type ChecksumError struct {
	Path     string
	Expected string
	Actual   string
}

func (e *ChecksumError) Error() string {
	return fmt.Sprintf("plugin binary %s: sha256 is %s, config pins %s; refusing to start it", e.Path, e.Actual, e.Expected)
}

// Unwrap matches ErrChecksumMismatch.
func (e *ChecksumError) Unwrap() error { return ErrChecksumMismatch }
