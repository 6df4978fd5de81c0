package adminapi

import "errors"

// Errors of this package, wrapped with context; match with errors.Is.
var (
	// ErrUnauthenticated: the caller could not be identified (401).
	ErrUnauthenticated = errors.New("adminapi: unauthenticated")
	// ErrForbidden: the caller is known but lacks the route's scope (403).
	ErrForbidden = errors.New("adminapi: forbidden")
	// ErrInvalidPageToken: a page token that this listing did not issue,
	// or that is malformed.
	ErrInvalidPageToken = errors.New("adminapi: invalid page token")
	// ErrInvalidJSON: a request body that is not one strict JSON object.
	ErrInvalidJSON = errors.New("adminapi: invalid JSON body")
	// ErrInvalidIfMatch: an If-Match header that is not "*" or a list of
	// entity tags.
	ErrInvalidIfMatch = errors.New("adminapi: invalid If-Match header")
	// ErrInvalidRoute: a route table mistake found by New.
	ErrInvalidRoute = errors.New("adminapi: invalid route")
)
