package jose

import "errors"

// Errors of the package; match with errors.Is. Each maps to one RFC 8555
// problem type (in parentheses), which the ACME server reports.
var (
	// ErrMalformed: the JWS or JWK does not parse, or breaks a rule of
	// this profile (malformed).
	ErrMalformed = errors.New("jose: malformed")
	// ErrUnsupportedAlgorithm: alg is none, an HMAC or anything but
	// ES256, ES384, EdDSA and RS256 (badSignatureAlgorithm).
	ErrUnsupportedAlgorithm = errors.New("jose: unsupported signature algorithm")
	// ErrAlgorithmMismatch: alg is not the one the key signs with
	// (badSignatureAlgorithm).
	ErrAlgorithmMismatch = errors.New("jose: algorithm does not match the key")
	// ErrBadKey: a JWK of an unsupported type or curve, a weak or
	// malformed key, or one that carries private members (badPublicKey).
	ErrBadKey = errors.New("jose: unacceptable key")
	// ErrBadSignature: the signature does not verify (malformed).
	ErrBadSignature = errors.New("jose: signature does not verify")
)
