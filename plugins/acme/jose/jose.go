// Package jose is the JSON Web Signature layer of the ACME server: strict
// parsing of flattened JWS (RFC 7515 7.2.2) as RFC 8555 section 6.2 profiles
// it, public JWKs (RFC 7517/7518) and their RFC 7638 thumbprints, and
// signature verification with the standard library for ES256, ES384, EdDSA
// (Ed25519) and RS256.
//
// The profile is strict: exactly one signature; a protected header and no
// unprotected one; no "signatures" array; alg none and the HMAC algorithms
// are refused (ErrUnsupportedAlgorithm); alg must be the one the key signs
// with (ErrAlgorithmMismatch); no duplicate members in the JWS object, the
// protected header or a JWK; base64url without padding; no "crit"; JWKs
// with private members are refused.
//
// It is pure: no I/O, no clock, no randomness, and it must not know ACME
// beyond the header members RFC 8555 defines (nonce, url, jwk, kid).
package jose

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
)

// Algorithms accepted in the alg header.
const (
	ES256 = "ES256"
	ES384 = "ES384"
	EdDSA = "EdDSA"
	RS256 = "RS256"
)

// Limits of what Parse accepts.
const (
	// MaxJWSSize bounds a JWS body.
	MaxJWSSize = 1 << 20
	// MinRSABits and MaxRSABits bound an RSA modulus.
	MinRSABits = 2048
	MaxRSABits = 8192
)

var b64 = base64.RawURLEncoding.Strict()

// decodeB64 decodes unpadded base64url, refusing padding, whitespace and
// non-canonical trailing bits.
func decodeB64(what, s string) ([]byte, error) {
	b, err := b64.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%s is not unpadded base64url: %w", what, ErrMalformed)
	}
	return b, nil
}

// Encode is unpadded base64url, as JOSE and ACME use it.
func Encode(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// JWK is a parsed public JSON Web Key.
type JWK struct {
	// Key is *ecdsa.PublicKey (P-256, P-384), ed25519.PublicKey or
	// *rsa.PublicKey.
	Key crypto.PublicKey
	// Alg is the JWS algorithm the key signs with.
	Alg string
	// thumbprint input: the required members in lexicographic order.
	canonical []byte
}

// Thumbprint returns the RFC 7638 SHA-256 thumbprint, base64url.
func (k *JWK) Thumbprint() string {
	s := sha256.Sum256(k.canonical)
	return Encode(s[:])
}

// JSON returns the key's canonical JWK (the RFC 7638 members only).
func (k *JWK) JSON() []byte { return append([]byte(nil), k.canonical...) }

// Equal reports whether two keys are the same public key.
func (k *JWK) Equal(o *JWK) bool { return o != nil && bytes.Equal(k.canonical, o.canonical) }

// NewJWK wraps a public key of a supported type.
func NewJWK(pub crypto.PublicKey) (*JWK, error) {
	switch p := pub.(type) {
	case *ecdsa.PublicKey:
		var crv, alg string
		var size int
		switch p.Curve {
		case elliptic.P256():
			crv, alg, size = "P-256", ES256, 32
		case elliptic.P384():
			crv, alg, size = "P-384", ES384, 48
		default:
			return nil, fmt.Errorf("ecdsa curve %s: %w", p.Curve.Params().Name, ErrBadKey)
		}
		raw, err := p.Bytes()
		if err != nil {
			return nil, fmt.Errorf("ecdsa key: %v: %w", err, ErrBadKey)
		}
		x, y := raw[1:1+size], raw[1+size:]
		c := fmt.Sprintf(`{"crv":%q,"kty":"EC","x":%q,"y":%q}`, crv, Encode(x), Encode(y))
		return &JWK{Key: p, Alg: alg, canonical: []byte(c)}, nil
	case ed25519.PublicKey:
		if len(p) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("ed25519 key of %d bytes: %w", len(p), ErrBadKey)
		}
		c := fmt.Sprintf(`{"crv":"Ed25519","kty":"OKP","x":%q}`, Encode(p))
		return &JWK{Key: p, Alg: EdDSA, canonical: []byte(c)}, nil
	case *rsa.PublicKey:
		if err := checkRSA(p); err != nil {
			return nil, err
		}
		c := fmt.Sprintf(`{"e":%q,"kty":"RSA","n":%q}`, Encode(big.NewInt(int64(p.E)).Bytes()), Encode(p.N.Bytes()))
		return &JWK{Key: p, Alg: RS256, canonical: []byte(c)}, nil
	}
	return nil, fmt.Errorf("key type %T: %w", pub, ErrBadKey)
}

func checkRSA(p *rsa.PublicKey) error {
	bits := p.N.BitLen()
	if bits < MinRSABits || bits > MaxRSABits {
		return fmt.Errorf("rsa modulus of %d bits outside %d..%d: %w", bits, MinRSABits, MaxRSABits, ErrBadKey)
	}
	if p.E < 3 || p.E%2 == 0 {
		return fmt.Errorf("rsa exponent %d: %w", p.E, ErrBadKey)
	}
	if p.N.Bit(0) == 0 {
		return fmt.Errorf("even rsa modulus: %w", ErrBadKey)
	}
	return nil
}

// jwkFields are the members of a JWK this package reads.
type jwkFields struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
	N   string `json:"n"`
	E   string `json:"e"`
	Use string `json:"use"`
	Alg string `json:"alg"`
}

// privateMembers may not appear in a public JWK.
var privateMembers = []string{"d", "p", "q", "dp", "dq", "qi", "oth", "k"}

// ParseJWK parses a public JWK (EC P-256/P-384, OKP Ed25519, RSA 2048..8192
// bits). ErrMalformed for bad JSON or encodings, ErrBadKey for a key that
// parses but is not acceptable.
func ParseJWK(b []byte) (*JWK, error) {
	members, err := uniqueObject("jwk", b)
	if err != nil {
		return nil, err
	}
	for _, m := range privateMembers {
		if _, ok := members[m]; ok {
			return nil, fmt.Errorf("jwk carries the private member %q: %w", m, ErrBadKey)
		}
	}
	var f jwkFields
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("jwk: %v: %w", err, ErrMalformed)
	}
	if f.Use != "" && f.Use != "sig" {
		return nil, fmt.Errorf("jwk use %q: %w", f.Use, ErrBadKey)
	}
	var k *JWK
	switch f.Kty {
	case "EC":
		var curve elliptic.Curve
		var size int
		switch f.Crv {
		case "P-256":
			curve, size = elliptic.P256(), 32
		case "P-384":
			curve, size = elliptic.P384(), 48
		default:
			return nil, fmt.Errorf("ec curve %q: %w", f.Crv, ErrBadKey)
		}
		x, err := decodeB64("jwk x", f.X)
		if err != nil {
			return nil, err
		}
		y, err := decodeB64("jwk y", f.Y)
		if err != nil {
			return nil, err
		}
		if len(x) != size || len(y) != size {
			return nil, fmt.Errorf("ec coordinates of %d and %d bytes, want %d: %w", len(x), len(y), size, ErrBadKey)
		}
		pt := append(append([]byte{4}, x...), y...)
		pub, err := ecdsa.ParseUncompressedPublicKey(curve, pt)
		if err != nil {
			return nil, fmt.Errorf("ec point: %v: %w", err, ErrBadKey)
		}
		k, err = NewJWK(pub)
		if err != nil {
			return nil, err
		}
	case "OKP":
		if f.Crv != "Ed25519" {
			return nil, fmt.Errorf("okp curve %q: %w", f.Crv, ErrBadKey)
		}
		x, err := decodeB64("jwk x", f.X)
		if err != nil {
			return nil, err
		}
		if len(x) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("ed25519 key of %d bytes: %w", len(x), ErrBadKey)
		}
		k, err = NewJWK(ed25519.PublicKey(x))
		if err != nil {
			return nil, err
		}
	case "RSA":
		n, err := decodeB64("jwk n", f.N)
		if err != nil {
			return nil, err
		}
		e, err := decodeB64("jwk e", f.E)
		if err != nil {
			return nil, err
		}
		if len(n) == 0 || n[0] == 0 || len(e) == 0 || e[0] == 0 || len(e) > 4 {
			return nil, fmt.Errorf("rsa n or e not a minimal big-endian integer: %w", ErrBadKey)
		}
		ev := new(big.Int).SetBytes(e)
		if !ev.IsInt64() || ev.Int64() > 1<<31-1 {
			return nil, fmt.Errorf("rsa exponent too large: %w", ErrBadKey)
		}
		pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(ev.Int64())}
		k, err = NewJWK(pub)
		if err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("key type %q: %w", f.Kty, ErrBadKey)
	}
	if f.Alg != "" && f.Alg != k.Alg {
		return nil, fmt.Errorf("jwk alg %q but the key signs with %s: %w", f.Alg, k.Alg, ErrAlgorithmMismatch)
	}
	return k, nil
}

// uniqueObject checks that b is one JSON object without duplicate members
// at its top level and returns its members, raw.
func uniqueObject(what string, b []byte) (map[string]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('{') {
		return nil, fmt.Errorf("%s is not a JSON object: %w", what, ErrMalformed)
	}
	out := map[string]json.RawMessage{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("%s: %v: %w", what, err, ErrMalformed)
		}
		name, ok := tok.(string)
		if !ok {
			return nil, fmt.Errorf("%s: member name is not a string: %w", what, ErrMalformed)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("%s: duplicate member %q: %w", what, name, ErrMalformed)
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("%s member %q: %v: %w", what, name, err, ErrMalformed)
		}
		out[name] = v
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, fmt.Errorf("%s: %v: %w", what, err, ErrMalformed)
	}
	if _, err := dec.Token(); err == nil {
		return nil, fmt.Errorf("%s: data after the object: %w", what, ErrMalformed)
	}
	return out, nil
}

// Header is the protected header of an ACME JWS.
type Header struct {
	Alg   string
	Nonce string // "" when absent
	URL   string // "" when absent
	KID   string // "" when absent
	// JWK is the embedded key; nil when absent.
	JWK *JWK
	// HasNonce, HasURL, HasKID and HasJWK say which members were present
	// (an empty string is present).
	HasNonce, HasURL, HasKID, HasJWK bool
}

// JWS is a parsed flattened JWS with one signature.
type JWS struct {
	Header    Header
	Protected string // base64url, as received: part of the signing input
	Payload   []byte // decoded; empty for POST-as-GET
	Signature []byte
	payload64 string
}

// Parse parses a flattened JWS (RFC 8555 6.2). It checks the structure
// and the header; the signature is checked by Verify. An unknown or
// refused alg is ErrUnsupportedAlgorithm; everything else ErrMalformed
// (ErrBadKey or ErrAlgorithmMismatch for an embedded jwk).
func Parse(body []byte) (*JWS, error) {
	if len(body) > MaxJWSSize {
		return nil, fmt.Errorf("jws of %d bytes exceeds %d: %w", len(body), MaxJWSSize, ErrMalformed)
	}
	members, err := uniqueObject("jws", body)
	if err != nil {
		return nil, err
	}
	if _, ok := members["signatures"]; ok {
		return nil, fmt.Errorf("jws: the general serialization (\"signatures\") is not allowed; one signature, flattened: %w", ErrMalformed)
	}
	if _, ok := members["header"]; ok {
		return nil, fmt.Errorf("jws: unprotected \"header\" not allowed: %w", ErrMalformed)
	}
	str := func(name string) (string, error) {
		raw, ok := members[name]
		if !ok {
			return "", fmt.Errorf("jws: no %q member: %w", name, ErrMalformed)
		}
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", fmt.Errorf("jws: %q is not a string: %w", name, ErrMalformed)
		}
		return s, nil
	}
	var j JWS
	if j.Protected, err = str("protected"); err != nil {
		return nil, err
	}
	if j.payload64, err = str("payload"); err != nil {
		return nil, err
	}
	sig64, err := str("signature")
	if err != nil {
		return nil, err
	}
	for name := range members {
		switch name {
		case "protected", "payload", "signature":
		default:
			return nil, fmt.Errorf("jws: unexpected member %q: %w", name, ErrMalformed)
		}
	}
	if j.Protected == "" {
		return nil, fmt.Errorf("jws: empty protected header: %w", ErrMalformed)
	}
	hdr, err := decodeB64("protected header", j.Protected)
	if err != nil {
		return nil, err
	}
	if j.Payload, err = decodeB64("payload", j.payload64); err != nil {
		return nil, err
	}
	if j.Signature, err = decodeB64("signature", sig64); err != nil {
		return nil, err
	}
	if j.Header, err = parseHeader(hdr); err != nil {
		return nil, err
	}
	return &j, nil
}

func parseHeader(b []byte) (Header, error) {
	members, err := uniqueObject("protected header", b)
	if err != nil {
		return Header{}, err
	}
	var h Header
	str := func(name string, dst *string, has *bool) error {
		raw, ok := members[name]
		if !ok {
			return nil
		}
		if err := json.Unmarshal(raw, dst); err != nil {
			return fmt.Errorf("protected header %q is not a string: %w", name, ErrMalformed)
		}
		if has != nil {
			*has = true
		}
		return nil
	}
	var hasAlg bool
	if err := str("alg", &h.Alg, &hasAlg); err != nil {
		return Header{}, err
	}
	if !hasAlg {
		return Header{}, fmt.Errorf("protected header has no alg: %w", ErrMalformed)
	}
	switch h.Alg {
	case ES256, ES384, EdDSA, RS256:
	default:
		return Header{}, fmt.Errorf("alg %q (accepted: ES256, ES384, EdDSA, RS256): %w", h.Alg, ErrUnsupportedAlgorithm)
	}
	if _, ok := members["crit"]; ok {
		return Header{}, fmt.Errorf("protected header: crit not supported: %w", ErrMalformed)
	}
	if _, ok := members["b64"]; ok {
		return Header{}, fmt.Errorf("protected header: b64 not supported: %w", ErrMalformed)
	}
	if err := str("nonce", &h.Nonce, &h.HasNonce); err != nil {
		return Header{}, err
	}
	if err := str("url", &h.URL, &h.HasURL); err != nil {
		return Header{}, err
	}
	if err := str("kid", &h.KID, &h.HasKID); err != nil {
		return Header{}, err
	}
	if raw, ok := members["jwk"]; ok {
		h.HasJWK = true
		if h.JWK, err = ParseJWK(raw); err != nil {
			return Header{}, fmt.Errorf("protected header jwk: %w", err)
		}
	}
	return h, nil
}

// SigningInput is what the signature covers.
func (j *JWS) SigningInput() []byte { return []byte(j.Protected + "." + j.payload64) }

// Verify checks the signature with k. The header's alg must be k's
// (ErrAlgorithmMismatch); a signature that does not verify is
// ErrBadSignature.
func (j *JWS) Verify(k *JWK) error {
	if k == nil {
		return fmt.Errorf("no key: %w", ErrBadKey)
	}
	if j.Header.Alg != k.Alg {
		return fmt.Errorf("alg %s but the key signs with %s: %w", j.Header.Alg, k.Alg, ErrAlgorithmMismatch)
	}
	return verify(k, j.Header.Alg, j.SigningInput(), j.Signature)
}

func verify(k *JWK, alg string, msg, sig []byte) error {
	ok := false
	switch alg {
	case ES256, ES384:
		pub := k.Key.(*ecdsa.PublicKey)
		size := (pub.Curve.Params().BitSize + 7) / 8
		if len(sig) != 2*size {
			return fmt.Errorf("%s signature of %d bytes, want %d: %w", alg, len(sig), 2*size, ErrBadSignature)
		}
		r, s := new(big.Int).SetBytes(sig[:size]), new(big.Int).SetBytes(sig[size:])
		if alg == ES256 {
			d := sha256.Sum256(msg)
			ok = ecdsa.Verify(pub, d[:], r, s)
		} else {
			d := sha512.Sum384(msg)
			ok = ecdsa.Verify(pub, d[:], r, s)
		}
	case EdDSA:
		ok = ed25519.Verify(k.Key.(ed25519.PublicKey), msg, sig)
	case RS256:
		d := sha256.Sum256(msg)
		ok = rsa.VerifyPKCS1v15(k.Key.(*rsa.PublicKey), crypto.SHA256, d[:], sig) == nil
	default:
		return fmt.Errorf("alg %q: %w", alg, ErrUnsupportedAlgorithm)
	}
	if !ok {
		return fmt.Errorf("%s signature: %w", alg, ErrBadSignature)
	}
	return nil
}
