package cache

import "errors"

// Errors every backend returns, wrapped with context; match with errors.Is.
var (
	// ErrNotFound: a session or token that does not exist, has expired or
	// (for a token) was already consumed.
	ErrNotFound = errors.New("cache: not found")
	// ErrInvalidArgument: a name, set, TTL, window, limit or value that
	// breaks the rules of this package; nothing was touched.
	ErrInvalidArgument = errors.New("cache: invalid argument")
	// ErrUnavailable: the backend cannot be reached, timed out or failed.
	// For a write the outcome is unknown. Replay checks and token
	// consumption must refuse on it; rate limits may fail open (see
	// AllowFailOpen).
	ErrUnavailable = errors.New("cache unavailable")
	// ErrClosed: the cache (or the subscription) was closed.
	ErrClosed = errors.New("cache: closed")
)
