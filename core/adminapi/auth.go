package adminapi

import (
	"net/http"
	"slices"
)

// Scope is what a route requires of its caller.
type Scope string

// The Admin API's scopes. admin:write does not imply admin:read: a
// principal lists each scope it holds.
const (
	ScopeRead  Scope = "admin:read"
	ScopeWrite Scope = "admin:write"
)

// Principal is an authenticated caller.
type Principal struct {
	// Actor names the caller in the audit log and the logs, e.g.
	// "local-admin:uid=0,pid=4242" or "user:alice".
	Actor string
	// Scopes are the scopes the caller holds.
	Scopes []Scope
}

// Has reports whether p holds scope s.
func (p Principal) Has(s Scope) bool { return slices.Contains(p.Scopes, s) }

// Authenticator identifies the caller of a request and checks that it
// holds the scope the route needs. Contract:
//   - it runs before the request body is read and before anything changes;
//   - it returns the principal when the caller is identified and holds
//     scope; an error wrapping ErrUnauthenticated (401) when the caller
//     cannot be identified, ErrForbidden (403) when it lacks scope; any
//     other error is a 503 (the check could not be made: fail closed);
//   - it must be safe for concurrent use and honour r.Context();
//   - an error with a method WWWAuthenticate() string has that value sent
//     as the WWW-Authenticate header (RFC 6750 challenges).
//
// The unix socket's peer credentials (PeerCredAuthenticator) satisfy it
// today; OAuth bearer tokens (core/oauth) will, with the same route table
// mounted on the HTTPS listener.
type Authenticator interface {
	Authenticate(r *http.Request, scope Scope) (Principal, error)
}

// AuthenticatorFunc adapts a function to Authenticator.
type AuthenticatorFunc func(r *http.Request, scope Scope) (Principal, error)

// Authenticate implements Authenticator.
func (f AuthenticatorFunc) Authenticate(r *http.Request, scope Scope) (Principal, error) {
	return f(r, scope)
}
