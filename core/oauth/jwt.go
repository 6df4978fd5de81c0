package oauth

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/cloudflare/circl/sign/mldsa/mldsa65"
)

// JOSE algorithms this server signs and verifies with. A key is fixed to
// one of them when it is made; the alg of a token only has to agree with
// its key's, it never chooses the verification.
const (
	// AlgMLDSA65 is ML-DSA-65 (FIPS 204, pure, empty context) as JOSE
	// names it (RFC 9964); its JWK is {"kty":"AKP","alg":"ML-DSA-65","pub":...}.
	AlgMLDSA65 = "ML-DSA-65"
	// AlgEdDSA is Ed25519 (RFC 8037); its JWK is
	// {"kty":"OKP","crv":"Ed25519","x":...}.
	AlgEdDSA = "EdDSA"
)

// TokenType is the typ header of access tokens (RFC 9068).
const TokenType = "at+jwt"

// MaxTokenLen bounds a compact JWS this package parses (an ML-DSA-65
// signature alone is 4,412 base64url characters).
const MaxTokenLen = 16 << 10

// Key is a public verification key.
type Key struct {
	ID        string // kid
	Algorithm string // AlgMLDSA65 or AlgEdDSA
	Public    []byte // raw public key (FIPS 204 encoding; 32 bytes for Ed25519)
}

// Signer signs tokens with a key that stays in the KMS (the server adapts a
// KMS plugin key; oauthtest has an in-memory one).
type Signer interface {
	// Current returns the key new tokens are signed with.
	Current() Key
	// Sign signs msg with the key Current returned. When the key changed
	// meanwhile (a rotation), it fails; the caller reads Current again
	// and retries, since the kid in msg named the old key.
	Sign(ctx context.Context, msg []byte) ([]byte, error)
}

// KeySet is what tokens are verified against: every key (and version) of
// the issuer that may still have live tokens.
type KeySet interface {
	// Lookup returns the key with id kid.
	Lookup(kid string) (Key, bool)
	// Keys returns all keys, for the JWKS document.
	Keys() []Key
}

// JOSEAlgorithm maps a KMS algorithm name to its JOSE name, or "".
func JOSEAlgorithm(kmsAlg string) string {
	switch kmsAlg {
	case "ML-DSA-65":
		return AlgMLDSA65
	case "Ed25519":
		return AlgEdDSA
	}
	return ""
}

// Header is the protected header of an access token.
type Header struct {
	Alg string `json:"alg"`
	Kid string `json:"kid"`
	Typ string `json:"typ"`
}

// Claims are the claims of an access token.
type Claims struct {
	Issuer    string `json:"iss"`
	Subject   string `json:"sub"`
	Audience  string `json:"aud"`
	ExpiresAt int64  `json:"exp"`
	NotBefore int64  `json:"nbf"`
	IssuedAt  int64  `json:"iat"`
	ID        string `json:"jti"`
	Scope     string `json:"scope"`
	ClientID  string `json:"client_id"`
	// SessionID names the grant (the refresh token family) the token was
	// issued under; revoking the grant revokes the token.
	SessionID string `json:"sid"`
}

// JWS is a parsed compact JWS whose signature is not yet verified.
type JWS struct {
	Header       Header
	Payload      []byte // decoded
	Signature    []byte
	SigningInput []byte // header.payload, as signed
}

var b64 = base64.RawURLEncoding.Strict()

// ParseJWS splits and decodes a compact JWS (RFC 7515 section 7.1). The
// header must be a JSON object with exactly alg, kid and typ (no crit, jku,
// jwk or anything else a verifier could be tricked into honouring). It
// checks form only; see Verifier.Verify. Errors wrap ErrMalformedToken.
func ParseJWS(token string) (*JWS, error) {
	bad := func(why string) (*JWS, error) { return nil, fmt.Errorf("%w: %s", ErrMalformedToken, why) }
	if len(token) > MaxTokenLen {
		return bad("longer than 16 KiB")
	}
	h, rest, ok := strings.Cut(token, ".")
	if !ok {
		return bad("not three base64url parts")
	}
	p, s, ok := strings.Cut(rest, ".")
	if !ok || strings.Contains(s, ".") {
		return bad("not three base64url parts")
	}
	hb, err := b64.DecodeString(h)
	if err != nil {
		return bad("header is not unpadded base64url")
	}
	pb, err := b64.DecodeString(p)
	if err != nil {
		return bad("payload is not unpadded base64url")
	}
	sb, err := b64.DecodeString(s)
	if err != nil || len(sb) == 0 {
		return bad("signature is empty or not unpadded base64url")
	}
	var hdr Header
	if err := strictJSON(hb, &hdr); err != nil {
		return bad("header: " + err.Error())
	}
	if hdr.Alg == "" || hdr.Kid == "" {
		return bad("header lacks alg or kid")
	}
	return &JWS{Header: hdr, Payload: pb, Signature: sb, SigningInput: []byte(token[:len(h)+1+len(p)])}, nil
}

// strictJSON decodes one JSON object into v, refusing unknown fields,
// duplicate names and trailing data.
func strictJSON(b []byte, v any) error {
	if err := checkNoDuplicates(b); err != nil {
		return err
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return errors.New("not the expected JSON object")
	}
	if d.More() {
		return errors.New("trailing data after the JSON object")
	}
	if _, err := d.Token(); err == nil {
		return errors.New("trailing data after the JSON object")
	}
	return nil
}

// checkNoDuplicates refuses a top-level object with a member name twice
// (RFC 7515 section 5.2 lets a JWS parser reject them; two parsers that
// keep different copies disagree about what was signed).
func checkNoDuplicates(b []byte) error {
	d := json.NewDecoder(bytes.NewReader(b))
	t, err := d.Token()
	if err != nil || t != json.Delim('{') {
		return errors.New("not a JSON object")
	}
	seen := map[string]bool{}
	for d.More() {
		t, err := d.Token()
		if err != nil {
			return errors.New("not a JSON object")
		}
		k, ok := t.(string)
		if !ok {
			return errors.New("not a JSON object")
		}
		if seen[k] {
			return fmt.Errorf("member %q given twice", k)
		}
		seen[k] = true
		var skip json.RawMessage
		if err := d.Decode(&skip); err != nil {
			return errors.New("not a JSON object")
		}
	}
	return nil
}

// Sign makes a compact JWS of claims with signer, retrying once when the
// key rotates under it.
func Sign(ctx context.Context, signer Signer, claims Claims) (string, error) {
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	var lastErr error
	for range 2 {
		k := signer.Current()
		if k.Algorithm != AlgMLDSA65 && k.Algorithm != AlgEdDSA {
			return "", fmt.Errorf("%w: signing key %q has algorithm %q", ErrAlgorithm, k.ID, k.Algorithm)
		}
		hdr, _ := json.Marshal(Header{Alg: k.Algorithm, Kid: k.ID, Typ: TokenType})
		input := b64.EncodeToString(hdr) + "." + b64.EncodeToString(payload)
		sig, err := signer.Sign(ctx, []byte(input))
		if err == nil {
			return input + "." + b64.EncodeToString(sig), nil
		}
		lastErr = err
	}
	return "", fmt.Errorf("%w: sign token: %w", ErrUnavailable, lastErr)
}

// Verifier checks access tokens: signature against the key set (the key
// named by kid, with the algorithm that key is fixed to), then typ, iss,
// aud, exp, nbf and iat against calibrated time. It caches parsed public
// keys and is safe for concurrent use.
type Verifier struct {
	keys     KeySet
	issuer   string
	audience string
	skew     time.Duration

	parsed sync.Map // kid -> parsedKey
}

type parsedKey struct {
	raw   string // the public key bytes it was parsed from
	alg   string
	mldsa *mldsa65.PublicKey
	ed    ed25519.PublicKey
}

// NewVerifier returns a verifier for tokens of issuer for audience. skew
// is how far ahead of calibrated time nbf and iat may be (the calibration
// max_skew: replicas' calibrated clocks differ by less).
func NewVerifier(keys KeySet, issuer, audience string, skew time.Duration) *Verifier {
	return &Verifier{keys: keys, issuer: issuer, audience: audience, skew: skew}
}

func (v *Verifier) key(kid string) (parsedKey, error) {
	k, ok := v.keys.Lookup(kid)
	if !ok {
		return parsedKey{}, fmt.Errorf("%w: kid %q", ErrUnknownKey, kid)
	}
	if c, ok := v.parsed.Load(kid); ok && c.(parsedKey).raw == string(k.Public) && c.(parsedKey).alg == k.Algorithm {
		return c.(parsedKey), nil
	}
	pk := parsedKey{raw: string(k.Public), alg: k.Algorithm}
	switch k.Algorithm {
	case AlgMLDSA65:
		var p mldsa65.PublicKey
		if len(k.Public) != mldsa65.PublicKeySize || p.UnmarshalBinary(k.Public) != nil {
			return parsedKey{}, fmt.Errorf("%w: key %q is not an ML-DSA-65 public key", ErrUnknownKey, kid)
		}
		pk.mldsa = &p
	case AlgEdDSA:
		if len(k.Public) != ed25519.PublicKeySize {
			return parsedKey{}, fmt.Errorf("%w: key %q is not an Ed25519 public key", ErrUnknownKey, kid)
		}
		pk.ed = ed25519.PublicKey(k.Public)
	default:
		return parsedKey{}, fmt.Errorf("%w: key %q has algorithm %q", ErrAlgorithm, kid, k.Algorithm)
	}
	v.parsed.Store(kid, pk)
	return pk, nil
}

// Verify checks token at calibrated time now and returns its claims.
// Errors wrap exactly one of ErrMalformedToken, ErrUnknownKey,
// ErrAlgorithm, ErrBadSignature, ErrIssuer, ErrAudience, ErrExpired,
// ErrNotYetValid. It does not check revocation or scope.
func (v *Verifier) Verify(token string, now time.Time) (Claims, error) {
	j, err := ParseJWS(token)
	if err != nil {
		return Claims{}, err
	}
	if j.Header.Typ != TokenType {
		return Claims{}, fmt.Errorf("%w: typ %q, want %q", ErrMalformedToken, j.Header.Typ, TokenType)
	}
	k, err := v.key(j.Header.Kid)
	if err != nil {
		return Claims{}, err
	}
	// The key decides the algorithm; the header only has to agree.
	if j.Header.Alg != k.alg {
		return Claims{}, fmt.Errorf("%w: token says %q, key %q is %s", ErrAlgorithm, j.Header.Alg, j.Header.Kid, k.alg)
	}
	ok := false
	switch k.alg {
	case AlgMLDSA65:
		ok = len(j.Signature) == mldsa65.SignatureSize && mldsa65.Verify(k.mldsa, j.SigningInput, nil, j.Signature)
	case AlgEdDSA:
		ok = len(j.Signature) == ed25519.SignatureSize && ed25519.Verify(k.ed, j.SigningInput, j.Signature)
	}
	if !ok {
		return Claims{}, ErrBadSignature
	}
	var c Claims
	if err := strictJSON(j.Payload, &c); err != nil {
		return Claims{}, fmt.Errorf("%w: claims: %v", ErrMalformedToken, err)
	}
	if c.Subject == "" || c.ID == "" || c.SessionID == "" || c.ExpiresAt == 0 || c.IssuedAt == 0 {
		return Claims{}, fmt.Errorf("%w: claims lack sub, jti, sid, exp or iat", ErrMalformedToken)
	}
	if c.Issuer != v.issuer {
		return Claims{}, fmt.Errorf("%w: %q", ErrIssuer, c.Issuer)
	}
	if c.Audience != v.audience {
		return Claims{}, fmt.Errorf("%w: %q", ErrAudience, c.Audience)
	}
	return c, checkTimes(c, now, v.skew)
}

// checkTimes applies the calibration's skew rules: exp is strict (a token
// lives at most its TTL on any replica), while nbf and iat may be up to
// skew ahead of this replica's calibrated time.
func checkTimes(c Claims, now time.Time, skew time.Duration) error {
	n := now.Unix()
	if n >= c.ExpiresAt {
		return fmt.Errorf("%w at %s", ErrExpired, time.Unix(c.ExpiresAt, 0).UTC().Format(time.RFC3339))
	}
	limit := now.Add(skew).Unix()
	if c.NotBefore > limit || c.IssuedAt > limit {
		return fmt.Errorf("%w: nbf/iat %s ahead of calibrated time %s (limit %s)", ErrNotYetValid,
			time.Unix(max(c.NotBefore, c.IssuedAt), 0).UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), skew)
	}
	return nil
}

// JWK is one key of the JWKS document.
type JWK struct {
	Kty string `json:"kty"`
	Alg string `json:"alg"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	Crv string `json:"crv,omitempty"` // OKP
	X   string `json:"x,omitempty"`   // OKP
	Pub string `json:"pub,omitempty"` // AKP
}

// JWKS returns the JSON Web Key Set of keys (RFC 7517; AKP keys per RFC
// 9964, OKP per RFC 8037).
func JWKS(keys []Key) map[string][]JWK {
	out := []JWK{}
	for _, k := range keys {
		switch k.Algorithm {
		case AlgMLDSA65:
			out = append(out, JWK{Kty: "AKP", Alg: AlgMLDSA65, Kid: k.ID, Use: "sig", Pub: b64.EncodeToString(k.Public)})
		case AlgEdDSA:
			out = append(out, JWK{Kty: "OKP", Alg: AlgEdDSA, Kid: k.ID, Use: "sig", Crv: "Ed25519", X: b64.EncodeToString(k.Public)})
		}
	}
	return map[string][]JWK{"keys": out}
}
