package calibration

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"time"
	"unicode/utf8"
)

// Signer signs time attestations; the server implements it over a KMS
// plugin so the key never enters the core.
//
// Algorithm names the signature algorithm (e.g. "ML-DSA-65") and KeyID the
// key (including its version); both go into every attestation and must be
// 1..64 and 1..255 printable ASCII bytes. Sign signs msg as given (the
// calibrator has already prefixed the domain separator) and must honour
// ctx. Implementations must be safe for concurrent use.
type Signer interface {
	Algorithm() string
	KeyID() string
	Sign(ctx context.Context, msg []byte) ([]byte, error)
}

// Verifier checks a signature by the key named keyID over msg. It returns
// nil only for a valid signature by a key it trusts for time attestations;
// an unknown key is an error. Implementations must be safe for concurrent
// use and should cache parsed public keys.
type Verifier interface {
	Verify(keyID string, msg, sig []byte) error
}

// Attestation format limits and constants (see the package doc).
const (
	// AttestationVersion is the only version this package writes and reads.
	AttestationVersion = 1
	// SignaturePrefix is prepended to the body before signing, so an
	// attestation signature is never valid for another kind of message.
	SignaturePrefix = "AVON-TIME-ATTESTATION-v1\x00"

	MaxAlgorithmLen = 64
	MaxKeyIDLen     = 255
	MaxSubjectLen   = 1024
	MaxNonceLen     = 64
	MaxSignatureLen = math.MaxUint16
	// MaxAttestationLen is the longest well-formed encoding.
	MaxAttestationLen = 1 + 1 + MaxAlgorithmLen + 1 + MaxKeyIDLen + 2 + MaxSubjectLen + 4*8 + 1 + MaxNonceLen + 2 + MaxSignatureLen
)

// Attestation is the core's signed statement of calibrated time.
type Attestation struct {
	Version   uint8
	Algorithm string // signature algorithm, e.g. "ML-DSA-65"
	KeyID     string // issuer key id
	Subject   string // who or what it was issued for (may be empty)
	// Time is the calibrated time at issue (UTC, nanoseconds).
	Time time.Time
	// Uncertainty of Time at issue.
	Uncertainty time.Duration
	// Age of the issuer's calibration at issue (monotonic).
	Age time.Duration
	// Expiry is Time plus the issuer's MaxAge.
	Expiry time.Time
	// Nonce echoes a caller's challenge (0..64 bytes).
	Nonce     []byte
	Signature []byte
}

// Attest issues a signed attestation of the calibrated time for subject,
// echoing nonce (at most 64 bytes). It refuses with ErrNotCalibrated or
// *StaleError when there is no fresh calibration, and with ErrNoSigner
// without a signer.
func (c *Calibrator) Attest(ctx context.Context, subject string, nonce []byte) (*Attestation, error) {
	signer := c.currentSigner()
	if signer == nil {
		return nil, ErrNoSigner
	}
	now, unc, age, err := c.fresh()
	if err != nil {
		return nil, err
	}
	att := &Attestation{
		Version:     AttestationVersion,
		Algorithm:   signer.Algorithm(),
		KeyID:       signer.KeyID(),
		Subject:     subject,
		Time:        now.UTC(),
		Uncertainty: unc,
		Age:         age,
		Expiry:      now.UTC().Add(c.cfg.MaxAge),
		Nonce:       append([]byte(nil), nonce...),
	}
	if err := att.validateBody(); err != nil {
		return nil, err
	}
	sig, err := signer.Sign(ctx, att.SignedMessage())
	if err != nil {
		return nil, fmt.Errorf("sign time attestation: %w", err)
	}
	if len(sig) == 0 || len(sig) > MaxSignatureLen {
		return nil, fmt.Errorf("sign time attestation: signer returned %d signature bytes", len(sig))
	}
	att.Signature = sig
	return att, nil
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// representable reports whether t survives UnixNano exactly.
func representable(t time.Time) bool {
	return !t.Before(time.Unix(0, math.MinInt64)) && !t.After(time.Unix(0, math.MaxInt64))
}

// validateBody checks every field but the signature against the format.
func (a *Attestation) validateBody() error {
	fe := func(field, reason string) error { return &FormatError{Field: field, Reason: reason} }
	switch {
	case a.Version != AttestationVersion:
		return &FormatError{Field: "version", Reason: fmt.Sprintf("version %d, want %d", a.Version, AttestationVersion), err: ErrUnsupportedVersion}
	case len(a.Algorithm) == 0 || len(a.Algorithm) > MaxAlgorithmLen || !printable(a.Algorithm):
		return fe("algorithm", fmt.Sprintf("must be 1..%d printable ASCII bytes", MaxAlgorithmLen))
	case len(a.KeyID) == 0 || len(a.KeyID) > MaxKeyIDLen || !printable(a.KeyID):
		return fe("key id", fmt.Sprintf("must be 1..%d printable ASCII bytes", MaxKeyIDLen))
	case len(a.Subject) > MaxSubjectLen:
		return fe("subject", fmt.Sprintf("%d bytes, limit %d", len(a.Subject), MaxSubjectLen))
	case !utf8.ValidString(a.Subject):
		return fe("subject", "not valid UTF-8")
	case !representable(a.Time) || !representable(a.Expiry):
		return fe("time", "outside the representable range")
	case a.Uncertainty < 0:
		return fe("uncertainty", "negative")
	case a.Age < 0:
		return fe("age", "negative")
	case !a.Expiry.After(a.Time):
		return fe("expiry", "not after time")
	case len(a.Nonce) > MaxNonceLen:
		return fe("nonce", fmt.Sprintf("%d bytes, limit %d", len(a.Nonce), MaxNonceLen))
	}
	return nil
}

func (a *Attestation) validate() error {
	if err := a.validateBody(); err != nil {
		return err
	}
	if len(a.Signature) == 0 || len(a.Signature) > MaxSignatureLen {
		return &FormatError{Field: "signature", Reason: fmt.Sprintf("must be 1..%d bytes", MaxSignatureLen)}
	}
	return nil
}

// appendBody appends the signed fields (everything before the signature).
func (a *Attestation) appendBody(b []byte) []byte {
	b = append(b, a.Version, byte(len(a.Algorithm)))
	b = append(b, a.Algorithm...)
	b = append(b, byte(len(a.KeyID)))
	b = append(b, a.KeyID...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(a.Subject)))
	b = append(b, a.Subject...)
	b = binary.BigEndian.AppendUint64(b, uint64(a.Time.UnixNano()))
	b = binary.BigEndian.AppendUint64(b, uint64(a.Uncertainty))
	b = binary.BigEndian.AppendUint64(b, uint64(a.Age))
	b = binary.BigEndian.AppendUint64(b, uint64(a.Expiry.UnixNano()))
	b = append(b, byte(len(a.Nonce)))
	return append(b, a.Nonce...)
}

// SignedMessage returns the bytes the signature covers: SignaturePrefix
// followed by the body. It returns nil if a field is out of range.
func (a *Attestation) SignedMessage() []byte {
	if a.validateBody() != nil {
		return nil
	}
	return a.appendBody(append(make([]byte, 0, 128+len(a.Subject)), SignaturePrefix...))
}

// Marshal encodes the attestation (format in the package doc). It returns
// nil if a field is out of range, so nothing unparsable is ever sent.
func (a *Attestation) Marshal() []byte {
	if a.validate() != nil {
		return nil
	}
	b := a.appendBody(make([]byte, 0, 128+len(a.Subject)+len(a.Signature)))
	b = binary.BigEndian.AppendUint16(b, uint16(len(a.Signature)))
	return append(b, a.Signature...)
}

// reader consumes a byte string front to back; the first failure sticks.
type reader struct {
	b   []byte
	err error
}

func (r *reader) take(n int, field string) []byte {
	if r.err != nil {
		return nil
	}
	if n > len(r.b) {
		r.err = &FormatError{Field: field, Reason: fmt.Sprintf("truncated: need %d bytes, have %d", n, len(r.b))}
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u8(field string) int {
	v := r.take(1, field)
	if v == nil {
		return 0
	}
	return int(v[0])
}

func (r *reader) u16(field string) int {
	v := r.take(2, field)
	if v == nil {
		return 0
	}
	return int(binary.BigEndian.Uint16(v))
}

func (r *reader) i64(field string) int64 {
	v := r.take(8, field)
	if v == nil {
		return 0
	}
	return int64(binary.BigEndian.Uint64(v))
}

// ParseAttestation decodes untrusted bytes. It checks structure only (no
// signature, no time): lengths within limits, version 1, no trailing
// bytes, and the field rules of the package doc. Every accepted input
// re-encodes to the same bytes with Marshal. Errors are *FormatError
// (ErrMalformed; ErrUnsupportedVersion for another version).
func ParseAttestation(b []byte) (*Attestation, error) {
	if len(b) > MaxAttestationLen {
		return nil, &FormatError{Field: "attestation", Reason: fmt.Sprintf("%d bytes, limit %d", len(b), MaxAttestationLen)}
	}
	r := &reader{b: b}
	v := r.u8("version")
	if r.err == nil && v != AttestationVersion {
		return nil, &FormatError{Field: "version", Reason: fmt.Sprintf("version %d, want %d", v, AttestationVersion), err: ErrUnsupportedVersion}
	}
	a := &Attestation{Version: uint8(v)}
	a.Algorithm = string(r.take(r.u8("algorithm length"), "algorithm"))
	a.KeyID = string(r.take(r.u8("key id length"), "key id"))
	a.Subject = string(r.take(r.u16("subject length"), "subject"))
	a.Time = time.Unix(0, r.i64("time")).UTC()
	a.Uncertainty = time.Duration(r.i64("uncertainty"))
	a.Age = time.Duration(r.i64("age"))
	a.Expiry = time.Unix(0, r.i64("expiry")).UTC()
	if n := r.u8("nonce length"); n > 0 {
		a.Nonce = append([]byte(nil), r.take(n, "nonce")...)
	}
	a.Signature = append([]byte(nil), r.take(r.u16("signature length"), "signature")...)
	if r.err != nil {
		return nil, r.err
	}
	if len(r.b) != 0 {
		return nil, &FormatError{Field: "attestation", Reason: fmt.Sprintf("%d trailing bytes", len(r.b))}
	}
	if err := a.validate(); err != nil {
		return nil, err
	}
	return a, nil
}

// VerifyAttestation checks att at calibrated time now: well-formed, not
// dated more than maxSkew after now (*SkewError), not past its expiry
// (*ExpiredError), and signed by a key verifier trusts (ErrBadSignature).
// The cheap checks run before the signature.
func VerifyAttestation(att *Attestation, verifier Verifier, now time.Time, maxSkew time.Duration) error {
	if att == nil {
		return &FormatError{Field: "attestation", Reason: "missing"}
	}
	if err := att.validate(); err != nil {
		return err
	}
	if d := att.Time.Sub(now); d > maxSkew {
		return &SkewError{What: "attestation time", Claimed: att.Time, Now: now, Skew: d, Limit: maxSkew}
	}
	if now.After(att.Expiry) {
		return &ExpiredError{Expiry: att.Expiry, Now: now}
	}
	if verifier == nil {
		return fmt.Errorf("%w: no verifier", ErrBadSignature)
	}
	if err := verifier.Verify(att.KeyID, att.SignedMessage(), att.Signature); err != nil {
		return fmt.Errorf("%w: key %q: %v", ErrBadSignature, att.KeyID, err)
	}
	return nil
}
