// Package errdef defines errors that keep their identity across the plugin
// boundary.
//
// A plugin returns ordinary Go errors that wrap a sentinel made with New (for
// example kms.ErrKeyNotFound). The server shim turns the error into a gRPC
// status carrying the sentinel's stable code; the client shim on the host
// turns it back into an error for which errors.Is(err, kms.ErrKeyNotFound)
// holds and whose message is the plugin's full message. Codes are part of the
// protocol: never rename one, only add.
//
// The package holds no state but the registry of sentinels, filled at init
// time; it must not do I/O.
package errdef

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Domain is the ErrorInfo domain that marks statuses made by this package.
const Domain = "avon.plugin"

// Sentinel is an error with a stable code that survives the plugin boundary.
// Compare with errors.Is; never construct one except through New.
type Sentinel struct {
	code  string
	msg   string
	grpcc codes.Code
}

func (s *Sentinel) Error() string { return s.msg }

// Code returns the sentinel's stable wire code, for example "kms.key_not_found".
func (s *Sentinel) Code() string { return s.code }

// GRPCCode returns the gRPC status code used on the wire.
func (s *Sentinel) GRPCCode() codes.Code { return s.grpcc }

var (
	registryMu sync.RWMutex
	registry   = map[string]*Sentinel{}
)

// New registers and returns a sentinel error. code must be unique process-wide
// ("<kind>.<snake_case>"); registering a code twice is a programming error and
// panics at init time. c is the gRPC code used on the wire, which lets callers
// that know nothing of AVON still classify the failure.
func New(code string, c codes.Code, msg string) *Sentinel {
	registryMu.Lock()
	defer registryMu.Unlock()
	if _, dup := registry[code]; dup {
		panic("errdef: duplicate error code " + code)
	}
	s := &Sentinel{code: code, msg: msg, grpcc: c}
	registry[code] = s
	return s
}

// Lookup returns the sentinel registered under code.
func Lookup(code string) (*Sentinel, bool) {
	registryMu.RLock()
	defer registryMu.RUnlock()
	s, ok := registry[code]
	return s, ok
}

// Errors every plugin kind shares.
var (
	// ErrNotImplemented: the plugin does not implement an optional capability
	// or RPC (older plugin, or a capability it does not offer). Hosts use it
	// for feature detection.
	ErrNotImplemented = New("plugin.not_implemented", codes.Unimplemented, "not implemented by plugin")
	// ErrInvalidArgument: the request is malformed; nothing was changed.
	ErrInvalidArgument = New("plugin.invalid_argument", codes.InvalidArgument, "invalid argument")
	// ErrNotConfigured: a call arrived before Configure succeeded.
	ErrNotConfigured = New("plugin.not_configured", codes.FailedPrecondition, "plugin not configured")
	// ErrPluginUnavailable: the plugin process is not running (crashed,
	// restarting or stopped). Returned on the host without a round trip.
	ErrPluginUnavailable = New("plugin.unavailable", codes.Unavailable, "plugin unavailable")
	// ErrPermissionDenied: the caller may not do this (for example a plugin
	// asking for a plugin it is not wired to).
	ErrPermissionDenied = New("plugin.permission_denied", codes.PermissionDenied, "permission denied")
	// ErrInternal: the plugin failed in a way it did not classify.
	ErrInternal = New("plugin.internal", codes.Internal, "internal plugin error")
)

// Error is an error received from the other side of the boundary.
type Error struct {
	// Code is the wire code; it may be unknown to this process (a newer peer).
	Code string
	// Msg is the full message produced by the peer.
	Msg string
	// Sentinel is the registered sentinel for Code, nil if unknown.
	Sentinel *Sentinel
}

func (e *Error) Error() string { return e.Msg }

// Unwrap lets errors.Is match the sentinel.
func (e *Error) Unwrap() error {
	if e.Sentinel == nil {
		return nil
	}
	return e.Sentinel
}

// ToStatus converts an error returned by an implementation into a gRPC status
// error. nil stays nil. Context errors map to Canceled/DeadlineExceeded.
// Errors that wrap no sentinel become codes.Unknown with their message.
func ToStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok && !isSentinelChain(err) {
		return err
	}
	var s *Sentinel
	if !errors.As(err, &s) {
		var remote *Error
		if errors.As(err, &remote) && remote.Code != "" {
			// A peer's code this process does not know: pass it on intact.
			st := status.New(codes.Unknown, err.Error())
			if withInfo, derr := st.WithDetails(&errdetails.ErrorInfo{Reason: remote.Code, Domain: Domain}); derr == nil {
				st = withInfo
			}
			return st.Err()
		}
		switch {
		case errors.Is(err, context.Canceled):
			return status.Error(codes.Canceled, err.Error())
		case errors.Is(err, context.DeadlineExceeded):
			return status.Error(codes.DeadlineExceeded, err.Error())
		}
		return status.Error(codes.Unknown, err.Error())
	}
	st := status.New(s.grpcc, err.Error())
	if withInfo, derr := st.WithDetails(&errdetails.ErrorInfo{Reason: s.code, Domain: Domain}); derr == nil {
		st = withInfo
	}
	return st.Err()
}

func isSentinelChain(err error) bool {
	var s *Sentinel
	return errors.As(err, &s)
}

// FromStatus converts an error returned by a gRPC client stub back into a Go
// error. Errors that are not gRPC statuses (for example one produced by the
// host before any round trip) pass through unchanged.
func FromStatus(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	for _, d := range st.Details() {
		info, ok := d.(*errdetails.ErrorInfo)
		if !ok || info.GetDomain() != Domain {
			continue
		}
		s, _ := Lookup(info.GetReason())
		return &Error{Code: info.GetReason(), Msg: st.Message(), Sentinel: s}
	}
	switch st.Code() {
	case codes.Canceled:
		return fmt.Errorf("%s: %w", st.Message(), context.Canceled)
	case codes.DeadlineExceeded:
		return fmt.Errorf("%s: %w", st.Message(), context.DeadlineExceeded)
	case codes.Unimplemented:
		return &Error{Code: ErrNotImplemented.code, Msg: "not implemented by plugin: " + st.Message(), Sentinel: ErrNotImplemented}
	case codes.Unavailable:
		return &Error{Code: ErrPluginUnavailable.code, Msg: "plugin unavailable: " + st.Message(), Sentinel: ErrPluginUnavailable}
	}
	return &Error{Code: "", Msg: st.Message()}
}
