package oauth

import "errors"

// Errors of this package, wrapped with context; match with errors.Is. A
// refused request changes nothing except the throttling counters and, for
// a reused refresh token, the revocation of its grant.
var (
	// ErrInvalidArgument: a user name, role, password, TTL or option out
	// of range; nothing was written.
	ErrInvalidArgument = errors.New("oauth: invalid argument")
	// ErrUserExists: Add of a user name already taken.
	ErrUserExists = errors.New("oauth: user already exists")
	// ErrUnknownUser: an administrative operation on a user that does not
	// exist. Login never returns it (it says ErrBadCredentials).
	ErrUnknownUser = errors.New("oauth: unknown user")
	// ErrBadCredentials: wrong user name, password or one-time code. The
	// message never says which.
	ErrBadCredentials = errors.New("oauth: invalid user name, password or code")
	// ErrThrottled: too many login attempts for this user or source; try
	// again after the window.
	ErrThrottled = errors.New("oauth: too many login attempts")
	// ErrTOTPReplay: a one-time code whose time step was already used.
	// It also matches ErrBadCredentials.
	ErrTOTPReplay = errors.New("oauth: one-time code already used")
	// ErrMalformedHash: a stored password hash that is not a well-formed
	// Argon2id PHC string within the accepted parameter bounds.
	ErrMalformedHash = errors.New("oauth: malformed password hash")

	// ErrMalformedToken: bytes that are not a well-formed compact JWS with
	// the header and claims this server issues.
	ErrMalformedToken = errors.New("oauth: malformed token")
	// ErrUnknownKey: a JWS whose kid is not one of this server's keys.
	ErrUnknownKey = errors.New("oauth: unknown signing key")
	// ErrAlgorithm: a JWS whose alg is not the one its key is fixed to
	// ("none", HS256 with a public key as secret, and so on).
	ErrAlgorithm = errors.New("oauth: algorithm not allowed for this key")
	// ErrBadSignature: the JWS signature does not verify.
	ErrBadSignature = errors.New("oauth: token signature invalid")
	// ErrExpired: a token past its exp.
	ErrExpired = errors.New("oauth: token expired")
	// ErrNotYetValid: a token whose nbf or iat is further ahead of
	// calibrated time than the allowed skew.
	ErrNotYetValid = errors.New("oauth: token not yet valid")
	// ErrIssuer: a token from another issuer.
	ErrIssuer = errors.New("oauth: wrong token issuer")
	// ErrAudience: a token for another audience.
	ErrAudience = errors.New("oauth: wrong token audience")
	// ErrRevoked: a token whose grant was revoked (logout, revocation
	// endpoint, refresh token reuse, user removed).
	ErrRevoked = errors.New("oauth: token revoked")
	// ErrUnknownToken: an API token whose id is not stored or whose
	// secret is wrong (the message does not say which), or an
	// administrative operation on an API token that does not exist.
	ErrUnknownToken = errors.New("oauth: unknown token")
	// ErrInsufficientScope: a valid token that lacks the scope a route
	// requires.
	ErrInsufficientScope = errors.New("oauth: insufficient scope")
	// ErrNoTime: no trusted (calibrated) time, so nothing time-dependent
	// is decided: fail closed.
	ErrNoTime = errors.New("oauth: no trusted time")

	// ErrInvalidRequest, ErrInvalidClient, ErrInvalidGrant,
	// ErrUnsupportedGrant, ErrInvalidScope are the OAuth 2.1 error codes
	// (RFC 6749 section 5.2) the token and authorization endpoints answer.
	ErrInvalidRequest   = errors.New("invalid_request")
	ErrInvalidClient    = errors.New("invalid_client")
	ErrInvalidGrant     = errors.New("invalid_grant")
	ErrUnsupportedGrant = errors.New("unsupported_grant_type")
	ErrInvalidScope     = errors.New("invalid_scope")
	// ErrRefreshReuse: a refresh token presented after it was rotated. Its
	// whole grant is revoked. It also matches ErrInvalidGrant.
	ErrRefreshReuse = errors.New("oauth: refresh token reused; grant revoked")
	// ErrUnavailable: the store, cache or signing key failed; the request
	// may succeed later. Nothing was issued.
	ErrUnavailable = errors.New("oauth: temporarily unavailable")
)
