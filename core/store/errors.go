package store

import "errors"

// Errors every backend returns, wrapped with context; match with errors.Is.
var (
	// ErrNotFound: Get of a key that does not exist.
	ErrNotFound = errors.New("store: key not found")
	// ErrVersionConflict: a checked Put or Delete whose condition did not
	// hold; nothing was written.
	ErrVersionConflict = errors.New("store: version conflict")
	// ErrInvalidKey: a key, namespace prefix or list bound that breaks the
	// key rules (see ValidateKey); nothing was written.
	ErrInvalidKey = errors.New("store: invalid key")
	// ErrInvalidArgument: other refused options, such as a List limit out
	// of range.
	ErrInvalidArgument = errors.New("store: invalid argument")
	// ErrValueTooLarge: a value above MaxValueSize; nothing was written.
	ErrValueTooLarge = errors.New("store: value too large")
	// ErrClosed: the store (or the view) was closed.
	ErrClosed = errors.New("store: closed")
	// ErrUnavailable: the backend cannot be reached or failed (a database
	// down, a disk error). Retrying later may succeed.
	ErrUnavailable = errors.New("store: backend unavailable")
)
