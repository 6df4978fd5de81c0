package jose_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	gojose "github.com/go-jose/go-jose/v4"

	"github.com/avonzt/avon/plugins/acme/jose"
)

type keyCase struct {
	name   string
	alg    string
	signer crypto.Signer
}

func keys(t testing.TB) []keyCase {
	t.Helper()
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	rs, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return []keyCase{{"P-256", jose.ES256, p256}, {"P-384", jose.ES384, p384}, {"Ed25519", jose.EdDSA, ed}, {"RSA-2048", jose.RS256, rs}}
}

func TestSignParseVerify(t *testing.T) {
	for _, k := range keys(t) {
		t.Run(k.name, func(t *testing.T) {
			body, err := jose.Sign(rand.Reader, k.signer, jose.SignHeader{Nonce: "n1", URL: "https://x/acme/new-account"}, []byte(`{"a":1}`))
			if err != nil {
				t.Fatal(err)
			}
			j, err := jose.Parse(body)
			if err != nil {
				t.Fatal(err)
			}
			if j.Header.Alg != k.alg || j.Header.Nonce != "n1" || j.Header.URL != "https://x/acme/new-account" || j.Header.JWK == nil || j.Header.HasKID {
				t.Fatalf("header %+v", j.Header)
			}
			if err := j.Verify(j.Header.JWK); err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if string(j.Payload) != `{"a":1}` {
				t.Fatalf("payload %q", j.Payload)
			}
			// Flip one bit of the signature, then of the payload.
			var m map[string]string
			_ = json.Unmarshal(body, &m)
			sig, _ := base64.RawURLEncoding.DecodeString(m["signature"])
			sig[len(sig)/2] ^= 1
			m["signature"] = base64.RawURLEncoding.EncodeToString(sig)
			bad, _ := json.Marshal(m)
			if j2, err := jose.Parse(bad); err != nil || !errors.Is(j2.Verify(j2.Header.JWK), jose.ErrBadSignature) {
				t.Fatalf("tampered signature: parse %v", err)
			}
			_ = json.Unmarshal(body, &m)
			m["payload"] = base64.RawURLEncoding.EncodeToString([]byte(`{"a":2}`))
			bad, _ = json.Marshal(m)
			if j2, err := jose.Parse(bad); err != nil || !errors.Is(j2.Verify(j2.Header.JWK), jose.ErrBadSignature) {
				t.Fatalf("tampered payload: parse %v", err)
			}
		})
	}
}

// Differential: signatures made by go-jose verify here, and thumbprints
// agree with go-jose's RFC 7638 implementation.
func TestAgainstGoJOSE(t *testing.T) {
	for _, k := range keys(t) {
		t.Run(k.name, func(t *testing.T) {
			s, err := gojose.NewSigner(gojose.SigningKey{Algorithm: gojose.SignatureAlgorithm(k.alg), Key: k.signer},
				&gojose.SignerOptions{EmbedJWK: true, ExtraHeaders: map[gojose.HeaderKey]any{"nonce": "abc", "url": "https://u"}})
			if err != nil {
				t.Fatal(err)
			}
			obj, err := s.Sign([]byte("payload"))
			if err != nil {
				t.Fatal(err)
			}
			j, err := jose.Parse([]byte(obj.FullSerialize()))
			if err != nil {
				t.Fatal(err)
			}
			if err := j.Verify(j.Header.JWK); err != nil {
				t.Fatalf("go-jose signature: %v", err)
			}
			want, err := (&gojose.JSONWebKey{Key: k.signer.Public()}).Thumbprint(crypto.SHA256)
			if err != nil {
				t.Fatal(err)
			}
			if got := j.Header.JWK.Thumbprint(); got != base64.RawURLEncoding.EncodeToString(want) {
				t.Fatalf("thumbprint %s, go-jose %s", got, base64.RawURLEncoding.EncodeToString(want))
			}
		})
	}
}

// RFC 7638 section 3.1's example key and thumbprint.
func TestThumbprintRFC7638(t *testing.T) {
	const n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
	k, err := jose.ParseJWK([]byte(`{"kty":"RSA","n":"` + n + `","e":"AQAB","alg":"RS256","kid":"2011-04-29"}`))
	if err != nil {
		t.Fatal(err)
	}
	if got := k.Thumbprint(); got != "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs" {
		t.Fatalf("thumbprint %s", got)
	}
}

func rawJWS(t testing.TB, header map[string]any, payload string, sig []byte) []byte {
	t.Helper()
	hb, _ := json.Marshal(header)
	b, _ := json.Marshal(map[string]string{"protected": jose.Encode(hb), "payload": jose.Encode([]byte(payload)), "signature": jose.Encode(sig)})
	return b
}

func TestRefused(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	good, err := jose.Sign(rand.Reader, ec, jose.SignHeader{Nonce: "n", URL: "u"}, []byte("{}"))
	if err != nil {
		t.Fatal(err)
	}
	var parts map[string]string
	_ = json.Unmarshal(good, &parts)
	edJWK, _ := jose.NewJWK(ed.Public())
	sign := func(extra map[string]any) []byte {
		b, err := jose.Sign(rand.Reader, ec, jose.SignHeader{Nonce: "n", URL: "u", Extra: extra}, []byte("{}"))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cases := []struct {
		name string
		body []byte
		want error
	}{
		{"alg none", rawJWS(t, map[string]any{"alg": "none", "nonce": "n", "url": "u"}, "{}", nil), jose.ErrUnsupportedAlgorithm},
		{"alg HS256", rawJWS(t, map[string]any{"alg": "HS256", "nonce": "n", "url": "u", "kid": "k"}, "{}", make([]byte, 32)), jose.ErrUnsupportedAlgorithm},
		{"alg ES512", sign(map[string]any{"alg": "ES512"}), jose.ErrUnsupportedAlgorithm},
		{"no alg", sign(map[string]any{"alg": nil}), jose.ErrMalformed},
		{"jwk with private member", sign(map[string]any{"jwk": map[string]string{"kty": "OKP", "crv": "Ed25519", "x": jose.Encode(ed.Public().(ed25519.PublicKey)), "d": "AA"}}), jose.ErrBadKey},
		{"jwk alg disagrees", sign(map[string]any{"jwk": map[string]string{"kty": "OKP", "crv": "Ed25519", "x": jose.Encode(ed.Public().(ed25519.PublicKey)), "alg": "ES256"}}), jose.ErrAlgorithmMismatch},
		{"crit", sign(map[string]any{"crit": []string{"x"}, "x": 1}), jose.ErrMalformed},
		{"unprotected header", []byte(`{"protected":"` + parts["protected"] + `","header":{"kid":"x"},"payload":"` + parts["payload"] + `","signature":"` + parts["signature"] + `"}`), jose.ErrMalformed},
		{"general serialization", []byte(`{"payload":"` + parts["payload"] + `","signatures":[{"protected":"` + parts["protected"] + `","signature":"` + parts["signature"] + `"},{"protected":"` + parts["protected"] + `","signature":"` + parts["signature"] + `"}]}`), jose.ErrMalformed},
		{"duplicate member", []byte(`{"protected":"` + parts["protected"] + `","payload":"` + parts["payload"] + `","payload":"","signature":"` + parts["signature"] + `"}`), jose.ErrMalformed},
		{"duplicate header member", rawJWSRawHeader(`{"alg":"ES256","nonce":"a","nonce":"b"}`), jose.ErrMalformed},
		{"padded base64", []byte(`{"protected":"` + parts["protected"] + `=","payload":"` + parts["payload"] + `","signature":"` + parts["signature"] + `"}`), jose.ErrMalformed},
		{"compact serialization", []byte(parts["protected"] + "." + parts["payload"] + "." + parts["signature"]), jose.ErrMalformed},
		{"no signature member", []byte(`{"protected":"` + parts["protected"] + `","payload":"` + parts["payload"] + `"}`), jose.ErrMalformed},
		{"trailing data", append(append([]byte{}, good...), []byte(`{}`)...), jose.ErrMalformed},
		{"empty", nil, jose.ErrMalformed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := jose.Parse(c.body); !errors.Is(err, c.want) {
				t.Fatalf("Parse = %v, want %v", err, c.want)
			}
		})
	}
	// The header says ES256, the key is Ed25519.
	j, err := jose.Parse(good)
	if err != nil {
		t.Fatal(err)
	}
	if err := j.Verify(edJWK); !errors.Is(err, jose.ErrAlgorithmMismatch) {
		t.Fatalf("Verify with another key type = %v, want ErrAlgorithmMismatch", err)
	}
	// Same type, another key.
	ec2, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	k2, _ := jose.NewJWK(ec2.Public())
	if err := j.Verify(k2); !errors.Is(err, jose.ErrBadSignature) {
		t.Fatalf("Verify with another key = %v, want ErrBadSignature", err)
	}
}

func rawJWSRawHeader(h string) []byte {
	b, _ := json.Marshal(map[string]string{"protected": jose.Encode([]byte(h)), "payload": "", "signature": "AA"})
	return b
}

func TestParseJWKRefused(t *testing.T) {
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	smallJWK := `{"kty":"RSA","n":"` + jose.Encode(small.N.Bytes()) + `","e":"AQAB"}`
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	raw, _ := ec.PublicKey.Bytes()
	x, y := jose.Encode(raw[1:33]), raw[33:]
	y[31] ^= 1 // off the curve
	for name, in := range map[string]string{
		"rsa 1024":         smallJWK,
		"ec off curve":     `{"kty":"EC","crv":"P-256","x":"` + x + `","y":"` + jose.Encode(y) + `"}`,
		"ec short x":       `{"kty":"EC","crv":"P-256","x":"` + jose.Encode(raw[2:33]) + `","y":"` + jose.Encode(raw[33:]) + `"}`,
		"ec P-521":         `{"kty":"EC","crv":"P-521","x":"AA","y":"AA"}`,
		"oct":              `{"kty":"oct","k":"AAAA"}`,
		"okp X25519":       `{"kty":"OKP","crv":"X25519","x":"` + jose.Encode(make([]byte, 32)) + `"}`,
		"rsa leading zero": `{"kty":"RSA","n":"AA` + jose.Encode(small.N.Bytes())[2:] + `","e":"AQAB"}`,
		"use enc":          `{"kty":"OKP","crv":"Ed25519","x":"` + jose.Encode(make([]byte, 32)) + `","use":"enc"}`,
	} {
		if _, err := jose.ParseJWK([]byte(in)); !errors.Is(err, jose.ErrBadKey) && !errors.Is(err, jose.ErrMalformed) {
			t.Errorf("%s: ParseJWK = %v, want ErrBadKey or ErrMalformed", name, err)
		}
	}
	if _, err := jose.ParseJWK([]byte(strings.Repeat("[", 10))); !errors.Is(err, jose.ErrMalformed) {
		t.Errorf("not an object: %v", err)
	}
}
