package cookie

import "errors"

// Errors returned by this package, wrapped with context; match with errors.Is.
var (
	// ErrMalformed: a message too short to carry the MACs, or a cookie
	// reply of the wrong length, type, version or reserved bytes.
	ErrMalformed = errors.New("cookie: malformed message")
	// ErrReplyInvalid: a cookie reply that does not open (another
	// responder, another initiation's mac1, tampered bytes).
	ErrReplyInvalid = errors.New("cookie: invalid cookie reply")
	// ErrTokenInvalid: an address token of the wrong size or that does not
	// open under this checker's token key (forged, tampered, issued by
	// another gateway or before a restart).
	ErrTokenInvalid = errors.New("cookie: invalid address token")
	// ErrTokenExpired: a genuine address token past its expiry.
	ErrTokenExpired = errors.New("cookie: address token expired")
	// ErrTokenAddress: a genuine address token issued to another IP.
	ErrTokenAddress = errors.New("cookie: address token for another address")
	// ErrRandom: the random source failed; nothing was produced (fail
	// closed: no cookie is accepted until a fresh secret is drawn).
	ErrRandom = errors.New("cookie: random source failed")
	// ErrClosed: the checker was closed and its secrets wiped.
	ErrClosed = errors.New("cookie: checker closed")
	// ErrInvalidArgument: an address that is not valid.
	ErrInvalidArgument = errors.New("cookie: invalid argument")
)
