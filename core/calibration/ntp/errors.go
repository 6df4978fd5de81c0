package ntp

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Errors of the NTP source. Every error Sample returns matches one of them
// (or a dial error from the network stack).
var (
	// ErrShortPacket: a reply shorter than the 48-byte NTP header.
	ErrShortPacket = errors.New("ntp: reply shorter than 48 bytes")
	// ErrBadMode: the reply is not in server mode (4).
	ErrBadMode = errors.New("ntp: reply not in server mode")
	// ErrBadVersion: the reply's version is not 3 or 4.
	ErrBadVersion = errors.New("ntp: unsupported reply version")
	// ErrOriginMismatch: the reply's origin timestamp is not the transmit
	// timestamp we sent, so it does not answer our request.
	ErrOriginMismatch = errors.New("ntp: reply origin timestamp does not match request")
	// ErrKissOfDeath: the server sent a kiss-of-death (stratum 0); the
	// *KissError names the code.
	ErrKissOfDeath = errors.New("ntp: kiss-of-death")
	// ErrUnsynchronized: the server says its clock is unsynchronized
	// (leap indicator 3).
	ErrUnsynchronized = errors.New("ntp: server clock unsynchronized")
	// ErrBadStratum: stratum outside 1..15.
	ErrBadStratum = errors.New("ntp: reply stratum out of range")
	// ErrZeroTimestamp: the reply's receive or transmit timestamp is zero.
	ErrZeroTimestamp = errors.New("ntp: reply timestamp is zero")
	// ErrBadTimestamps: the server's transmit timestamp precedes its
	// receive timestamp.
	ErrBadTimestamps = errors.New("ntp: reply timestamps out of order")
	// ErrRootDistance: root delay or root dispersion above 16 s.
	ErrRootDistance = errors.New("ntp: root delay or dispersion out of range")
	// ErrTimeout: no acceptable reply before the deadline.
	ErrTimeout = errors.New("ntp: no acceptable reply before the deadline")
	// ErrInvalidConfig: New was given an unusable address or option.
	ErrInvalidConfig = errors.New("ntp: invalid source config")
)

// KissError is a kiss-of-death reply: the server asks us to stop (DENY,
// RSTR) or slow down (RATE). It matches ErrKissOfDeath.
type KissError struct {
	Code string // the four-character kiss code, e.g. "RATE"
}

func (e *KissError) Error() string {
	return fmt.Sprintf("ntp: kiss-of-death %q from server", e.Code)
}

// Unwrap matches ErrKissOfDeath.
func (e *KissError) Unwrap() error { return ErrKissOfDeath }

// kissCode renders a reference id as a kiss code: printable ASCII with
// trailing NULs and spaces trimmed, or hex otherwise.
func kissCode(id [4]byte) string {
	s := strings.TrimRight(string(id[:]), "\x00 ")
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return fmt.Sprintf("0x%x", id[:])
		}
	}
	return s
}

// TimeoutError reports a query that got no acceptable reply. It matches
// ErrTimeout and, when replies were rejected, the last rejection's error.
type TimeoutError struct {
	Server string
	After  time.Duration
	// LastReject is why the last reply that did arrive was discarded (nil
	// when nothing arrived).
	LastReject error
}

func (e *TimeoutError) Error() string {
	s := fmt.Sprintf("ntp: no acceptable reply from %s within %s", e.Server, e.After.Round(time.Millisecond))
	if e.LastReject != nil {
		s += " (last reply rejected: " + e.LastReject.Error() + ")"
	}
	return s
}

// Unwrap matches ErrTimeout and the last rejection.
func (e *TimeoutError) Unwrap() []error {
	if e.LastReject != nil {
		return []error{ErrTimeout, e.LastReject}
	}
	return []error{ErrTimeout}
}
