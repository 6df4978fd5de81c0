package oauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"
)

// Principal is the authenticated operator of a request.
type Principal struct {
	User      string
	Scope     string // space-separated
	ClientID  string
	TokenID   string // jti
	SessionID string // the grant
	ExpiresAt time.Time
}

// Actor is how audit records name the principal.
func (p Principal) Actor() string { return "user:" + p.User }

// Has reports whether the principal holds scope (admin holds every scope).
func (p Principal) Has(scope string) bool { return HasScope(p.Scope, scope) }

type principalKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// PrincipalFrom returns the principal Middleware put in the context.
func PrincipalFrom(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}

// Problem types (RFC 9457) the middleware answers with.
const (
	ProblemUnauthorized = "urn:avon:problem:unauthorized"
	ProblemForbidden    = "urn:avon:problem:insufficient-scope"
	ProblemUnavailable  = "urn:avon:problem:auth-unavailable"
)

// Problem is an RFC 9457 problem document.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
	// Scope is the scope that was missing (403 only).
	Scope string `json:"scope,omitempty"`
}

func writeProblem(w http.ResponseWriter, p Problem) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(p.Status)
	_ = json.NewEncoder(w).Encode(p)
}

// quoteParam makes s safe inside a quoted auth-param.
func quoteParam(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == '"' || r == '\\' || r > 0x7e {
			return ' '
		}
		return r
	}, s)
	return `"` + clip(s) + `"`
}

// Authenticate checks the request's bearer token (RFC 6750 section 2.1:
// the Authorization header only) and that its grant is not revoked, and
// returns the principal. Errors wrap ErrMalformedToken, ErrUnknownKey,
// ErrAlgorithm, ErrBadSignature, ErrIssuer, ErrAudience, ErrExpired,
// ErrNotYetValid, ErrRevoked, ErrNoTime or ErrUnavailable; no token at all
// is ErrMalformedToken with the message "no bearer token".
func (s *Server) Authenticate(r *http.Request) (Principal, error) {
	tok, err := BearerToken(r)
	if err != nil {
		return Principal{}, err
	}
	now, err := s.now()
	if err != nil {
		return Principal{}, err
	}
	c, err := s.verifier.Verify(tok, now)
	if err != nil {
		return Principal{}, err
	}
	if _, err := s.grants.active(r.Context(), c.SessionID, now); err != nil {
		return Principal{}, err
	}
	return Principal{User: c.Subject, Scope: c.Scope, ClientID: c.ClientID, TokenID: c.ID, SessionID: c.SessionID,
		ExpiresAt: time.Unix(c.ExpiresAt, 0).UTC()}, nil
}

var errNoToken = fmt.Errorf("%w: no bearer token", ErrMalformedToken)

// BearerToken returns the request's RFC 6750 bearer token: exactly one
// Authorization header of the Bearer scheme (case-insensitive) with one
// non-empty token. Anything else is ErrMalformedToken (no header at all
// too, with its own message).
func BearerToken(r *http.Request) (string, error) {
	hs := r.Header.Values("Authorization")
	if len(hs) == 0 {
		return "", errNoToken
	}
	if len(hs) > 1 {
		return "", fmt.Errorf("%w: more than one Authorization header", ErrMalformedToken)
	}
	scheme, tok, ok := strings.Cut(hs[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" || strings.ContainsAny(tok, " \t") {
		return "", fmt.Errorf("%w: want Authorization: Bearer <token>", ErrMalformedToken)
	}
	return tok, nil
}

// ChallengeError is an authentication refusal with its RFC 6750
// challenge: the value of WWW-Authenticate to send with the 401 or 403.
// It wraps the reason (ErrInsufficientScope for a 403; a token error, or
// ErrMalformedToken for no token, for a 401).
type ChallengeError struct {
	Status    int // 401 or 403
	Challenge string
	Err       error
}

func (e *ChallengeError) Error() string { return e.Err.Error() }
func (e *ChallengeError) Unwrap() error { return e.Err }

// WWWAuthenticate returns the challenge (the Admin API framework sends it).
func (e *ChallengeError) WWWAuthenticate() string { return e.Challenge }

// Check authenticates the request's bearer token and checks that it holds
// one of scopes (admin holds every scope). It returns the principal, or an error:
// a *ChallengeError (401: no, invalid, expired or revoked token; 403:
// ErrInsufficientScope) or, when the check could not be made (no trusted
// time, the store down), one wrapping ErrNoTime or ErrUnavailable (503:
// fail closed). It is what Middleware runs, for routers that map errors
// themselves (core/adminapi's Authenticator).
func (s *Server) Check(r *http.Request, scopes ...string) (Principal, error) {
	scope := strings.Join(scopes, " ")
	p, err := s.Authenticate(r)
	switch {
	case err == nil:
	case errors.Is(err, ErrNoTime), errors.Is(err, ErrUnavailable):
		return Principal{}, err
	case errors.Is(err, errNoToken):
		return Principal{}, &ChallengeError{Status: http.StatusUnauthorized, Err: err,
			Challenge: `Bearer realm="avon", scope=` + quoteParam(scope)}
	default:
		return Principal{}, &ChallengeError{Status: http.StatusUnauthorized, Err: err,
			Challenge: `Bearer realm="avon", error="invalid_token", error_description=` + quoteParam(err.Error())}
	}
	if !slices.ContainsFunc(scopes, p.Has) {
		return p, &ChallengeError{Status: http.StatusForbidden,
			Err:       fmt.Errorf("%w: this route needs scope %q; the token has %q", ErrInsufficientScope, strings.Join(scopes, `" or "`), p.Scope),
			Challenge: `Bearer realm="avon", error="insufficient_scope", scope=` + quoteParam(scope)}
	}
	return p, nil
}

// Middleware returns the verifier of the Admin API: a request passes only
// with a valid access token (signature by a key of this issuer with that
// key's algorithm, exp/nbf/iat against calibrated time, iss, aud) whose
// grant is not revoked and whose scope holds scope (admin holds every
// scope); the principal is then in the context (PrincipalFrom). Refusals
// are RFC 9457 problems: 401 with WWW-Authenticate: Bearer (RFC 6750
// section 3) for a missing or invalid token, 403 naming the missing scope,
// 503 when there is no trusted time or the store fails (fail closed).
func (s *Server) Middleware(scope string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			p, err := s.Check(r, scope)
			var ce *ChallengeError
			switch {
			case err == nil:
				next.ServeHTTP(w, r.WithContext(WithPrincipal(r.Context(), p)))
			case errors.As(err, &ce):
				w.Header().Set("WWW-Authenticate", ce.Challenge)
				pr := Problem{Type: ProblemUnauthorized, Title: "Invalid access token", Status: ce.Status, Detail: err.Error()}
				switch {
				case ce.Status == http.StatusForbidden:
					pr = Problem{Type: ProblemForbidden, Title: "Insufficient scope", Status: ce.Status, Detail: err.Error(), Scope: scope}
				case errors.Is(err, errNoToken):
					pr.Title, pr.Detail = "Authentication required", "this route needs an access token: run `avon login`"
				}
				writeProblem(w, pr)
			default:
				s.log.Warn("bearer token not checked", "error", err)
				writeProblem(w, Problem{Type: ProblemUnavailable, Title: "Authentication unavailable", Status: http.StatusServiceUnavailable,
					Detail: err.Error()})
			}
		})
	}
}
