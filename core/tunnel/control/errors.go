package control

import "errors"

// Errors of this package, wrapped with context; match with errors.Is. Every
// one of them means "drop this control message"; ErrUnknownType is the one
// a receiver counts and ignores without suspicion (a newer peer).
var (
	// ErrTruncated: the bytes end before the header, the body the header
	// announces, or a field of the body.
	ErrTruncated = errors.New("control: truncated message")
	// ErrTooLarge: a body longer than MaxBody, or a count, string or token
	// longer than its limit.
	ErrTooLarge = errors.New("control: message too large")
	// ErrMalformed: a field out of range (address family, prefix bits, MTU,
	// interval), invalid UTF-8, unsorted or duplicate fact keys, bytes after
	// the body's last field, padding that is not zeros or is too long, a
	// first byte that is not a control type, or a nil message.
	ErrMalformed = errors.New("control: malformed message")
	// ErrUnknownType: a well-framed control message of a type this version
	// does not define.
	ErrUnknownType = errors.New("control: unknown control message type")
)
