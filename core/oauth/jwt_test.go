package oauth_test

import (
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/avonzt/avon/core/oauth"
	"github.com/avonzt/avon/core/oauth/oauthtest"
)

var (
	bg  = context.Background()
	enc = base64.RawURLEncoding
)

const (
	testIssuer = "https://avon.example:8443"
	testAud    = oauth.DefaultAudience
)

func testClaims(now time.Time) oauth.Claims {
	return oauth.Claims{Issuer: testIssuer, Subject: "alice", Audience: testAud, ExpiresAt: now.Add(5 * time.Minute).Unix(),
		NotBefore: now.Unix(), IssuedAt: now.Unix(), ID: "jti-1", Scope: "admin", ClientID: oauth.CLIClientID,
		SessionID: "0123456789abcdef0123456789abcdef"}
}

func newKeys(t testing.TB, alg string) *oauthtest.Keys {
	t.Helper()
	k, err := oauthtest.New(alg, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// forge builds a compact JWS from raw header and claims JSON and a
// signature function.
func forge(header, claims string, sign func([]byte) []byte) string {
	in := enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString([]byte(claims))
	return in + "." + enc.EncodeToString(sign([]byte(in)))
}

func TestSignVerifyBothAlgorithms(t *testing.T) {
	now := time.Now()
	for _, alg := range []string{oauth.AlgMLDSA65, oauth.AlgEdDSA} {
		t.Run(alg, func(t *testing.T) {
			k := newKeys(t, alg)
			tok, err := oauth.Sign(bg, k, testClaims(now))
			if err != nil {
				t.Fatal(err)
			}
			v := oauth.NewVerifier(k, testIssuer, testAud, 5*time.Second)
			c, err := v.Verify(tok, now)
			if err != nil || c.Subject != "alice" || c.Scope != "admin" {
				t.Fatalf("verify: %+v %v", c, err)
			}
			j, _ := oauth.ParseJWS(tok)
			if j.Header.Alg != alg || j.Header.Kid != k.Current().ID || j.Header.Typ != "at+jwt" {
				t.Fatalf("header %+v", j.Header)
			}
			// A rotated key: old tokens verify while the old version is
			// published, new ones carry the new kid.
			if err := k.Rotate(); err != nil {
				t.Fatal(err)
			}
			tok2, _ := oauth.Sign(bg, k, testClaims(now))
			if _, err := v.Verify(tok, now); err != nil {
				t.Fatalf("old version after rotation: %v", err)
			}
			if _, err := v.Verify(tok2, now); err != nil {
				t.Fatalf("new version: %v", err)
			}
			k.Drop(j.Header.Kid)
			if _, err := v.Verify(tok, now); !errors.Is(err, oauth.ErrUnknownKey) {
				t.Fatalf("dropped version: %v", err)
			}
		})
	}
}

func TestVerifyRefusals(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	ml := newKeys(t, oauth.AlgMLDSA65)
	ed := newKeys(t, oauth.AlgEdDSA)
	set := multiKeys{ml, ed}
	v := oauth.NewVerifier(set, testIssuer, testAud, 5*time.Second)
	mlKid, edKid := ml.Current().ID, ed.Current().ID
	claims := func(mod func(*oauth.Claims)) string {
		c := testClaims(now)
		if mod != nil {
			mod(&c)
		}
		b, _ := json.Marshal(c)
		return string(b)
	}
	hdr := func(alg, kid string) string { return `{"alg":"` + alg + `","kid":"` + kid + `","typ":"at+jwt"}` }
	mlSign := func(b []byte) []byte { s, _ := ml.SignWith(mlKid, b); return s }
	edSign := func(b []byte) []byte { s, _ := ed.SignWith(edKid, b); return s }
	hs256 := func(secret []byte) func([]byte) []byte {
		return func(b []byte) []byte { m := hmac.New(sha256.New, secret); m.Write(b); return m.Sum(nil) }
	}
	good := forge(hdr(oauth.AlgMLDSA65, mlKid), claims(nil), mlSign)
	if _, err := v.Verify(good, now); err != nil {
		t.Fatalf("the control token fails: %v", err)
	}
	for _, tc := range []struct {
		name  string
		token string
		want  error
	}{
		{"alg none, no signature", enc.EncodeToString([]byte(hdr("none", mlKid))) + "." + enc.EncodeToString([]byte(claims(nil))) + ".", oauth.ErrMalformedToken},
		{"alg none, some signature", forge(hdr("none", mlKid), claims(nil), func([]byte) []byte { return []byte("x") }), oauth.ErrAlgorithm},
		{"HS256 keyed with the ML-DSA public key", forge(hdr("HS256", mlKid), claims(nil), hs256(ml.Current().Public)), oauth.ErrAlgorithm},
		{"HS256 keyed with the Ed25519 public key", forge(hdr("HS256", edKid), claims(nil), hs256(ed.Current().Public)), oauth.ErrAlgorithm},
		{"EdDSA header on the ML-DSA key", forge(hdr(oauth.AlgEdDSA, mlKid), claims(nil), edSign), oauth.ErrAlgorithm},
		{"ML-DSA header on the Ed25519 key", forge(hdr(oauth.AlgMLDSA65, edKid), claims(nil), mlSign), oauth.ErrAlgorithm},
		{"signed by the other key", forge(hdr(oauth.AlgEdDSA, edKid), claims(nil), func(b []byte) []byte { _, p, _ := ed25519.GenerateKey(rand.Reader); return ed25519.Sign(p, b) }), oauth.ErrBadSignature},
		{"unknown kid", forge(hdr(oauth.AlgMLDSA65, "kms.soft/other/v1"), claims(nil), mlSign), oauth.ErrUnknownKey},
		{"claims changed after signing", strings.Replace(good, strings.Split(good, ".")[1], enc.EncodeToString([]byte(claims(func(c *oauth.Claims) { c.Scope = "admin operator" }))), 1), oauth.ErrBadSignature},
		{"wrong audience", forge(hdr(oauth.AlgMLDSA65, mlKid), claims(func(c *oauth.Claims) { c.Audience = "other-api" }), mlSign), oauth.ErrAudience},
		{"wrong issuer", forge(hdr(oauth.AlgMLDSA65, mlKid), claims(func(c *oauth.Claims) { c.Issuer = "https://evil.example" }), mlSign), oauth.ErrIssuer},
		{"expired", forge(hdr(oauth.AlgMLDSA65, mlKid), claims(func(c *oauth.Claims) { c.ExpiresAt = now.Unix() }), mlSign), oauth.ErrExpired},
		{"nbf beyond the skew", forge(hdr(oauth.AlgMLDSA65, mlKid), claims(func(c *oauth.Claims) { c.NotBefore = now.Add(6 * time.Second).Unix() }), mlSign), oauth.ErrNotYetValid},
		{"iat beyond the skew", forge(hdr(oauth.AlgMLDSA65, mlKid), claims(func(c *oauth.Claims) { c.IssuedAt = now.Add(time.Minute).Unix() }), mlSign), oauth.ErrNotYetValid},
		{"no sid", forge(hdr(oauth.AlgMLDSA65, mlKid), claims(func(c *oauth.Claims) { c.SessionID = "" }), mlSign), oauth.ErrMalformedToken},
		{"typ JWT", forge(`{"alg":"ML-DSA-65","kid":"`+mlKid+`","typ":"JWT"}`, claims(nil), mlSign), oauth.ErrMalformedToken},
		{"jku in the header", forge(`{"alg":"ML-DSA-65","kid":"`+mlKid+`","typ":"at+jwt","jku":"https://evil.example/jwks"}`, claims(nil), mlSign), oauth.ErrMalformedToken},
		{"crit in the header", forge(`{"alg":"ML-DSA-65","kid":"`+mlKid+`","typ":"at+jwt","crit":["exp"]}`, claims(nil), mlSign), oauth.ErrMalformedToken},
		{"alg given twice", forge(`{"alg":"none","kid":"`+mlKid+`","typ":"at+jwt","alg":"ML-DSA-65"}`, claims(nil), mlSign), oauth.ErrMalformedToken},
		{"claim given twice", forge(hdr(oauth.AlgMLDSA65, mlKid), `{"aud":"x",`+claims(nil)[1:], mlSign), oauth.ErrMalformedToken},
		{"unknown claim", forge(hdr(oauth.AlgMLDSA65, mlKid), `{"roles":["root"],`+claims(nil)[1:], mlSign), oauth.ErrMalformedToken},
		{"padded base64", good + "=", oauth.ErrMalformedToken},
		{"four parts", good + ".x", oauth.ErrMalformedToken},
		{"too long", good + strings.Repeat("A", oauth.MaxTokenLen), oauth.ErrMalformedToken},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := v.Verify(tc.token, now); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	// Within the skew is fine: a replica a little behind accepts a token
	// another replica has just issued.
	ahead := forge(hdr(oauth.AlgMLDSA65, mlKid), claims(func(c *oauth.Claims) { c.IssuedAt = now.Add(4 * time.Second).Unix(); c.NotBefore = c.IssuedAt }), mlSign)
	if _, err := v.Verify(ahead, now); err != nil {
		t.Fatalf("iat within the skew: %v", err)
	}
}

// multiKeys joins key sets.
type multiKeys []*oauthtest.Keys

func (m multiKeys) Lookup(kid string) (oauth.Key, bool) {
	for _, k := range m {
		if key, ok := k.Lookup(kid); ok {
			return key, true
		}
	}
	return oauth.Key{}, false
}

func (m multiKeys) Keys() []oauth.Key {
	var out []oauth.Key
	for _, k := range m {
		out = append(out, k.Keys()...)
	}
	return out
}

// edSigner is a Signer over an Ed25519 key the test also hands to go-jose.
type edSigner struct {
	kid  string
	priv ed25519.PrivateKey
}

func (e edSigner) Current() oauth.Key {
	return oauth.Key{ID: e.kid, Algorithm: oauth.AlgEdDSA, Public: e.priv.Public().(ed25519.PublicKey)}
}
func (e edSigner) Sign(_ context.Context, m []byte) ([]byte, error) {
	return ed25519.Sign(e.priv, m), nil
}
func (e edSigner) Lookup(kid string) (oauth.Key, bool) { return e.Current(), kid == e.kid }
func (e edSigner) Keys() []oauth.Key                   { return []oauth.Key{e.Current()} }

// TestEdDSAInteropWithGoJose is a differential check of the JWS code
// against an independent implementation: go-jose verifies our EdDSA
// tokens, we verify go-jose's.
func TestEdDSAInteropWithGoJose(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	s := edSigner{kid: "kms.soft/avon-oauth/v1", priv: priv}
	now := time.Now()
	tok, err := oauth.Sign(bg, s, testClaims(now))
	if err != nil {
		t.Fatal(err)
	}
	js, err := jose.ParseSigned(tok, []jose.SignatureAlgorithm{jose.EdDSA})
	if err != nil {
		t.Fatal(err)
	}
	payload, err := js.Verify(priv.Public())
	if err != nil {
		t.Fatalf("go-jose does not verify our token: %v", err)
	}
	var c oauth.Claims
	if json.Unmarshal(payload, &c) != nil || c.Subject != "alice" {
		t.Fatalf("payload %s", payload)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: priv},
		(&jose.SignerOptions{}).WithType("at+jwt").WithHeader("kid", s.kid))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(testClaims(now))
	obj, err := signer.Sign(b)
	if err != nil {
		t.Fatal(err)
	}
	theirs, _ := obj.CompactSerialize()
	if _, err := oauth.NewVerifier(s, testIssuer, testAud, 5*time.Second).Verify(theirs, now); err != nil {
		t.Fatalf("we do not verify go-jose's token: %v", err)
	}
}

func TestJWKS(t *testing.T) {
	ml, ed := newKeys(t, oauth.AlgMLDSA65), newKeys(t, oauth.AlgEdDSA)
	doc := oauth.JWKS(multiKeys{ml, ed}.Keys())
	if len(doc["keys"]) != 2 {
		t.Fatalf("%+v", doc)
	}
	for _, k := range doc["keys"] {
		switch k.Alg {
		case oauth.AlgMLDSA65:
			pub, err := enc.DecodeString(k.Pub)
			if k.Kty != "AKP" || err != nil || string(pub) != string(ml.Current().Public) || k.X != "" {
				t.Errorf("AKP key %+v", k)
			}
		case oauth.AlgEdDSA:
			x, err := enc.DecodeString(k.X)
			if k.Kty != "OKP" || k.Crv != "Ed25519" || err != nil || string(x) != string(ed.Current().Public) || k.Pub != "" {
				t.Errorf("OKP key %+v", k)
			}
		default:
			t.Errorf("key %+v", k)
		}
	}
}

func FuzzParseJWS(f *testing.F) {
	k := newKeys(f, oauth.AlgEdDSA)
	tok, _ := oauth.Sign(bg, k, testClaims(time.Unix(1_800_000_000, 0)))
	f.Add(tok)
	f.Add("a.b.c")
	f.Add("..")
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Fuzz(func(t *testing.T, s string) {
		j, err := oauth.ParseJWS(s)
		if err != nil {
			if !errors.Is(err, oauth.ErrMalformedToken) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if j.Header.Alg == "" || j.Header.Kid == "" || len(j.Signature) == 0 || !strings.HasPrefix(s, string(j.SigningInput)+".") {
			t.Fatalf("accepted %q as %+v", s, j.Header)
		}
	})
}

// FuzzVerify: no byte string panics the verifier, and none but the real
// token verifies.
func FuzzVerify(f *testing.F) {
	k := newKeys(f, oauth.AlgEdDSA)
	now := time.Unix(1_800_000_000, 0)
	tok, _ := oauth.Sign(bg, k, testClaims(now))
	v := oauth.NewVerifier(k, testIssuer, testAud, 5*time.Second)
	f.Add(tok)
	f.Add(tok[:len(tok)-2])
	f.Add(strings.Replace(tok, "eyJ", "eyK", 1))
	f.Fuzz(func(t *testing.T, s string) {
		c, err := v.Verify(s, now)
		if err == nil && s != tok {
			t.Fatalf("a different token verified: %q (%+v)", s, c)
		}
	})
}

func BenchmarkVerify(b *testing.B) {
	now := time.Now()
	for _, alg := range []string{oauth.AlgMLDSA65, oauth.AlgEdDSA} {
		b.Run(alg, func(b *testing.B) {
			k := newKeys(b, alg)
			tok, _ := oauth.Sign(bg, k, testClaims(now))
			v := oauth.NewVerifier(k, testIssuer, testAud, 5*time.Second)
			for b.Loop() {
				if _, err := v.Verify(tok, now); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkSign(b *testing.B) {
	now := time.Now()
	for _, alg := range []string{oauth.AlgMLDSA65, oauth.AlgEdDSA} {
		b.Run(alg, func(b *testing.B) {
			k := newKeys(b, alg)
			for b.Loop() {
				if _, err := oauth.Sign(bg, k, testClaims(now)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
