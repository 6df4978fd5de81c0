package jose_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"testing"

	"github.com/avonzt/avon/plugins/acme/jose"
)

// FuzzParse: no input panics; what parses has a supported alg, and
// verifying it with its embedded key either succeeds or fails with one of
// the package's errors.
func FuzzParse(f *testing.F) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	b1, _ := jose.Sign(rand.Reader, ec, jose.SignHeader{Nonce: "n", URL: "https://x/acme/new-order"}, []byte(`{"identifiers":[]}`))
	b2, _ := jose.Sign(rand.Reader, ed, jose.SignHeader{Nonce: "n", URL: "u", KID: "https://x/acme/account/1"}, nil)
	f.Add(b1)
	f.Add(b2)
	f.Add([]byte(`{"protected":"eyJhbGciOiJub25lIn0","payload":"","signature":""}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		j, err := jose.Parse(body)
		if err != nil {
			if !errors.Is(err, jose.ErrMalformed) && !errors.Is(err, jose.ErrUnsupportedAlgorithm) &&
				!errors.Is(err, jose.ErrBadKey) && !errors.Is(err, jose.ErrAlgorithmMismatch) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		switch j.Header.Alg {
		case jose.ES256, jose.ES384, jose.EdDSA, jose.RS256:
		default:
			t.Fatalf("accepted alg %q", j.Header.Alg)
		}
		if j.Header.JWK != nil {
			if err := j.Verify(j.Header.JWK); err != nil && !errors.Is(err, jose.ErrBadSignature) && !errors.Is(err, jose.ErrAlgorithmMismatch) {
				t.Fatalf("untyped verify error %v", err)
			}
		}
	})
}

// FuzzParseJWK: no input panics; a parsed key round-trips through its
// canonical form to the same thumbprint.
func FuzzParseJWK(f *testing.F) {
	ec, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	k, _ := jose.NewJWK(ec.Public())
	f.Add(k.JSON())
	f.Add([]byte(`{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}`))
	f.Add([]byte(`{"kty":"RSA","n":"AQAB","e":"AQAB"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := jose.ParseJWK(b)
		if err != nil {
			if !errors.Is(err, jose.ErrMalformed) && !errors.Is(err, jose.ErrBadKey) && !errors.Is(err, jose.ErrAlgorithmMismatch) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		k2, err := jose.ParseJWK(k.JSON())
		if err != nil || k2.Thumbprint() != k.Thumbprint() || !k2.Equal(k) {
			t.Fatalf("canonical form does not round-trip: %v", err)
		}
	})
}

// FuzzParseEAB: no input panics; what parses has a kid and verifies only
// with the right key.
func FuzzParseEAB(f *testing.F) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	k, _ := jose.NewJWK(ec.Public())
	f.Add(jose.SignEAB("kid-1", []byte("0123456789abcdef0123456789abcdef"), "https://x/acme/new-account", k))
	f.Add([]byte(`{"protected":"e30","payload":"","signature":""}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := jose.ParseEAB(b)
		if err != nil {
			if !errors.Is(err, jose.ErrMalformed) && !errors.Is(err, jose.ErrUnsupportedAlgorithm) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if e.KID == "" {
			t.Fatal("parsed without a kid")
		}
		if err := e.Verify([]byte("not the key")); err == nil {
			// Possible only if the input carries the MAC of this very
			// key: a fuzzer cannot forge HMAC-SHA256.
			t.Fatalf("verified with an arbitrary key")
		}
	})
}
