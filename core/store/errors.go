package store

import "errors"

// Errors every backend returns (wrapped with context).
var (
	ErrNotFound        = errors.New("store: key not found")
	ErrVersionConflict = errors.New("store: version conflict")
	ErrInvalidKey      = errors.New("store: invalid key")
	ErrInvalidArgument = errors.New("store: invalid argument")
	ErrValueTooLarge   = errors.New("store: value too large")
	ErrClosed          = errors.New("store: closed")
	// ErrUnavailable: the backend cannot be reached (a database down).
	ErrUnavailable = errors.New("store: backend unavailable")
)
