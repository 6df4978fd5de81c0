package handshake

import (
	"errors"
	"fmt"
	"time"
)

// The error contract. Every error returned by this package wraps exactly
// one of these sentinels (a certificate error may also wrap ErrExpired and
// the *pqx509.CertificateInvalidError behind it), so callers decide with
// errors.Is what to do: drop silently, answer with a HandshakeError (see
// CodeFor), or count and log.
var (
	// ErrTruncated means the message is shorter than its exact or minimum
	// length. Nothing was decrypted or verified.
	ErrTruncated = errors.New("message truncated")
	// ErrMalformed means the bytes break the layout: wrong type, non-zero
	// reserved bytes or flags, a length field out of range, trailing bytes,
	// a certificate chain that does not split into DER certificates.
	ErrMalformed = errors.New("malformed message")
	// ErrVersion means a protocol version other than Version (2).
	ErrVersion = errors.New("unsupported protocol version")
	// ErrSuite means a KEM, signature or AEAD identifier suite v1 does not
	// have.
	ErrSuite = errors.New("unsupported suite")
	// ErrUnknownResponder means an Initiation addressed to another
	// responder_id.
	ErrUnknownResponder = errors.New("unknown responder id")
	// ErrClockSkew means a timestamp farther than MaxSkew from the
	// responder's calibrated time. The error is a *ClockSkewError.
	ErrClockSkew = errors.New("timestamp outside the allowed clock skew")
	// ErrReplay means an Initiation nonce (or a rekey counter) already seen
	// within the replay window.
	ErrReplay = errors.New("replayed message")
	// ErrBusy means the responder refuses work it cannot track safely: its
	// replay cache is full of unexpired entries. The initiator retries
	// later; nothing is forgotten to make room.
	ErrBusy = errors.New("responder busy")
	// ErrKey means an ephemeral public key that is not usable: a malformed
	// ML-KEM-768 encapsulation key or a low-order X25519 point.
	ErrKey = errors.New("invalid ephemeral public key")
	// ErrIndex means a receiver index that does not belong to this
	// handshake or session.
	ErrIndex = errors.New("receiver index does not match")
	// ErrDecrypt means an AEAD that does not open or an error tag that does
	// not verify: the sender does not hold the key of this handshake.
	ErrDecrypt = errors.New("message does not decrypt")
	// ErrSignature means a handshake signature that does not verify.
	ErrSignature = errors.New("signature does not verify")
	// ErrCertificate means a peer certificate chain that does not parse,
	// does not chain to the roots, is not valid now, or is not an agent's.
	ErrCertificate = errors.New("peer certificate refused")
	// ErrExpired is wrapped together with ErrCertificate when a certificate
	// of the chain is outside its validity period.
	ErrExpired = errors.New("certificate expired or not yet valid")
	// ErrRevoked means the peer's leaf certificate is revoked.
	ErrRevoked = errors.New("peer certificate revoked")
	// ErrStatusUnavailable means the revocation status could not be
	// checked; the handshake fails closed.
	ErrStatusUnavailable = errors.New("certificate status unavailable")
	// ErrNotAuthorized is for the gateway: the authenticated agent is not
	// allowed by policy (core/gateway decides; this package only maps it to
	// the not_authorized code).
	ErrNotAuthorized = errors.New("peer not authorized")
	// ErrState means a call out of order: a Response before an Initiation,
	// a second Finish, a rekey on a zeroized session.
	ErrState = errors.New("handshake state does not allow this")
	// ErrConfig means an invalid configuration given to a constructor.
	ErrConfig = errors.New("invalid handshake configuration")
	// ErrRandom means the injected randomness failed; fail closed.
	ErrRandom = errors.New("randomness unavailable")
	// ErrSigner means the Signer failed or returned a signature of the
	// wrong length, or a responder configured for delegation has no valid
	// delegated key.
	ErrSigner = errors.New("signer failed")
	// ErrCredential means a delegated credential that does not parse, is
	// not signed by the pinned gateway key, names another responder, is not
	// valid now (with ErrExpired), or is missing where the Response needs it.
	ErrCredential = errors.New("delegated credential refused")
)

// ClockSkewError is the ErrClockSkew refusal: the claimed time, the
// responder's calibrated time and the limit. The responder tells the
// initiator its own time in a HandshakeError (code clock_skew) so that a
// wrong clock is diagnosed at once; no state is kept for such an Initiation.
type ClockSkewError struct {
	Claimed time.Time     // the Initiation's timestamp
	Local   time.Time     // the responder's calibrated time when it checked
	MaxSkew time.Duration // the allowed distance
}

func (e *ClockSkewError) Error() string {
	d := e.Claimed.Sub(e.Local)
	dir := "ahead of"
	if d < 0 {
		d, dir = -d, "behind"
	}
	return fmt.Sprintf("handshake: initiation timestamp %s is %s %s the responder's calibrated time %s (limit %s)",
		e.Claimed.UTC().Format(time.RFC3339Nano), d, dir, e.Local.UTC().Format(time.RFC3339Nano), e.MaxSkew)
}

// Unwrap returns ErrClockSkew.
func (e *ClockSkewError) Unwrap() error { return ErrClockSkew }

// ErrorCode is the code of a HandshakeError message.
type ErrorCode uint16

// HandshakeError codes of protocol v1. The wire value is the code; bit 15 of
// the code field marks an authenticated message and is not part of it.
const (
	CodeClockSkew          ErrorCode = 1 // detail: the responder's calibrated time, i64 unix ns
	CodeUnknownResponder   ErrorCode = 2
	CodeBadCertificate     ErrorCode = 3
	CodeCertificateRevoked ErrorCode = 4
	CodeNotAuthorized      ErrorCode = 5
	CodeUnsupportedVersion ErrorCode = 6
	CodeBusy               ErrorCode = 7
)

var codeNames = map[ErrorCode]string{
	CodeClockSkew:          "clock_skew",
	CodeUnknownResponder:   "unknown_responder",
	CodeBadCertificate:     "bad_certificate",
	CodeCertificateRevoked: "certificate_revoked",
	CodeNotAuthorized:      "not_authorized",
	CodeUnsupportedVersion: "unsupported_version",
	CodeBusy:               "busy",
}

func (c ErrorCode) String() string {
	if s, ok := codeNames[c]; ok {
		return s
	}
	return fmt.Sprintf("code(%d)", uint16(c))
}

// Known reports whether c is a code of protocol v1.
func (c ErrorCode) Known() bool { _, ok := codeNames[c]; return ok }

// CodeFor maps a refusal to the HandshakeError code the responder sends,
// and reports false for refusals that get no answer (malformed, truncated,
// replayed, undecryptable or unsigned messages are dropped silently: an
// answer would only help an attacker or amplify traffic).
func CodeFor(err error) (ErrorCode, bool) {
	switch {
	case err == nil:
		return 0, false
	case errors.Is(err, ErrClockSkew):
		return CodeClockSkew, true
	case errors.Is(err, ErrUnknownResponder):
		return CodeUnknownResponder, true
	case errors.Is(err, ErrVersion), errors.Is(err, ErrSuite):
		return CodeUnsupportedVersion, true
	case errors.Is(err, ErrNotAuthorized):
		return CodeNotAuthorized, true
	case errors.Is(err, ErrRevoked):
		return CodeCertificateRevoked, true
	case errors.Is(err, ErrCertificate):
		return CodeBadCertificate, true
	case errors.Is(err, ErrBusy), errors.Is(err, ErrStatusUnavailable):
		return CodeBusy, true
	}
	return 0, false
}
