package calibration_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/avonzt/avon/core/calibration"
	"github.com/avonzt/avon/core/calibration/calibtest"
)

func attest(t testing.TB, f *fixture, subject string, nonce []byte) (*calibration.Attestation, []byte) {
	t.Helper()
	att, err := f.cal.Attest(context.Background(), subject, nonce)
	if err != nil {
		t.Fatalf("Attest: %v", err)
	}
	b := att.Marshal()
	if b == nil {
		t.Fatal("Marshal returned nil for a fresh attestation")
	}
	return att, b
}

func TestAttestationRoundTripVerifies(t *testing.T) {
	f := newFixture(t, calibration.Config{})
	f.calibrate(t)
	f.clock.Advance(3 * time.Second)
	nonce := []byte("0123456789abcdef")
	att, b := attest(t, f, "agent:laptop-17", nonce)

	if att.Version != 1 || att.Algorithm != "ML-DSA-65" || att.KeyID != "attest/1" || att.Subject != "agent:laptop-17" {
		t.Fatalf("fields %+v", att)
	}
	if !att.Time.Equal(f.trueNow()) || att.Age != 3*time.Second || !att.Expiry.Equal(att.Time.Add(30*time.Second)) {
		t.Fatalf("time %s age %s expiry %s", att.Time, att.Age, att.Expiry)
	}
	if want := time.Millisecond + 300*time.Microsecond; att.Uncertainty != want {
		t.Fatalf("uncertainty %s, want %s", att.Uncertainty, want)
	}
	got, err := calibration.ParseAttestation(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Marshal(), b) || !got.Time.Equal(att.Time) || !bytes.Equal(got.Nonce, nonce) || got.Subject != att.Subject {
		t.Fatalf("round trip differs: %+v vs %+v", got, att)
	}
	if err := calibration.VerifyAttestation(got, f.key, f.now(t), 5*time.Second); err != nil {
		t.Fatalf("VerifyAttestation: %v", err)
	}
	if err := f.cal.CheckAttestation(b, f.key); err != nil {
		t.Fatalf("CheckAttestation: %v", err)
	}
	// The signature covers the domain-separated body, verifiable on its own.
	msg := append([]byte(calibration.SignaturePrefix), b[:len(b)-2-len(att.Signature)]...)
	if err := f.key.Verify("attest/1", msg, att.Signature); err != nil {
		t.Fatalf("signature over prefix||body: %v", err)
	}
	if err := f.key.Verify("attest/1", b[:len(b)-2-len(att.Signature)], att.Signature); err == nil {
		t.Fatal("signature verifies without the domain prefix")
	}
}

func TestAttestationTampering(t *testing.T) {
	f := newFixture(t, calibration.Config{})
	f.calibrate(t)
	att, b := attest(t, f, "agent:a", []byte{1, 2, 3})
	sigStart := len(b) - len(att.Signature)

	// A flipped signature byte or subject byte: bad signature.
	subjOff := bytes.Index(b, []byte("agent:a"))
	for _, off := range []int{sigStart, sigStart + 100, len(b) - 1, subjOff, subjOff + 6} {
		c := bytes.Clone(b)
		c[off] ^= 0x01
		wantIs(t, f.cal.CheckAttestation(c, f.key), calibration.ErrBadSignature)
	}
	// Any flipped bit anywhere: refused, with one of the typed reasons.
	for off := range sigStart + 8 {
		c := bytes.Clone(b)
		c[off] ^= 0x80
		err := f.cal.CheckAttestation(c, f.key)
		if err == nil {
			t.Fatalf("flip at %d accepted", off)
		}
		if !anyOf(err, calibration.ErrBadSignature, calibration.ErrMalformed, calibration.ErrSkew, calibration.ErrExpired, calibration.ErrStale) {
			t.Fatalf("flip at %d: untyped error %v", off, err)
		}
	}
	// Another key id, or a verifier that does not know the key.
	other, err := calibtest.NewMLDSA65("attest/1", nil)
	if err != nil {
		t.Fatal(err)
	}
	wantIs(t, f.cal.CheckAttestation(b, other), calibration.ErrBadSignature)
	wantIs(t, calibration.VerifyAttestation(att, nil, f.now(t), time.Second), calibration.ErrBadSignature)
}

func anyOf(err error, targets ...error) bool {
	for _, t := range targets {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}

func TestAttestationExpiredAndFuture(t *testing.T) {
	f := newFixture(t, calibration.Config{})
	f.calibrate(t)
	att, b := attest(t, f, "s", nil)

	// 31s later, with a fresh calibration here: expired.
	f.clock.Advance(31 * time.Second)
	f.calibrate(t)
	err := f.cal.CheckAttestation(b, f.key)
	var ee *calibration.ExpiredError
	if !errors.As(err, &ee) || !errors.Is(err, calibration.ErrExpired) {
		t.Fatalf("31s old: %v", err)
	}
	if want := "time attestation expired 1s ago"; err.Error() != want {
		t.Fatalf("message %q, want %q", err, want)
	}
	// Seen from 6s before its time: future-dated past the 5s limit.
	err = calibration.VerifyAttestation(att, f.key, att.Time.Add(-6*time.Second), 5*time.Second)
	var se *calibration.SkewError
	if !errors.As(err, &se) || se.Skew != 6*time.Second {
		t.Fatalf("future-dated: %v", err)
	}
	if want := "attestation time is 6s ahead of calibrated time (limit 5s)"; err.Error() != want {
		t.Fatalf("message %q", err)
	}
	if err := calibration.VerifyAttestation(att, f.key, att.Time.Add(-4*time.Second), 5*time.Second); err != nil {
		t.Fatalf("4s ahead within a 5s limit: %v", err)
	}
}

// TestAttestationAgainstShorterMaxAge: a verifier with a shorter MaxAge
// than the issuer refuses attestations older than its own MaxAge, and
// attestations issued under a calibration older than it.
func TestAttestationAgainstShorterMaxAge(t *testing.T) {
	issuer := newFixture(t, calibration.Config{MaxAge: time.Minute})
	issuer.calibrate(t)
	issuer.clock.Advance(20 * time.Second)
	_, b := attest(t, issuer, "s", nil)

	verifier := newFixture(t, calibration.Config{MaxAge: 10 * time.Second})
	verifier.clock.Advance(20 * time.Second) // same calibrated time as the issuer
	verifier.calibrate(t)
	err := verifier.cal.CheckAttestation(b, issuer.key)
	var st *calibration.StaleError
	if !errors.As(err, &st) || st.Age != 20*time.Second {
		t.Fatalf("issued under a 20s old calibration, verifier MaxAge 10s: %v", err)
	}

	issuer.calibrate(t)
	_, b = attest(t, issuer, "s", nil)
	verifier.clock.Advance(9 * time.Second)
	verifier.calibrate(t)
	if err := verifier.cal.CheckAttestation(b, issuer.key); err != nil {
		t.Fatalf("9s old attestation, MaxAge 10s: %v", err)
	}
	verifier.clock.Advance(2 * time.Second)
	verifier.calibrate(t)
	err = verifier.cal.CheckAttestation(b, issuer.key)
	if !errors.Is(err, calibration.ErrExpired) || !strings.Contains(err.Error(), "time attestation exceeded max age 1s ago") {
		t.Fatalf("11s old attestation, MaxAge 10s: %v", err)
	}
}

func TestAttestRefuses(t *testing.T) {
	f := newFixture(t, calibration.Config{})
	f.calibrate(t)
	_, err := f.cal.Attest(context.Background(), "s", make([]byte, 65))
	wantIs(t, err, calibration.ErrMalformed)
	_, err = f.cal.Attest(context.Background(), strings.Repeat("x", 1025), nil)
	wantIs(t, err, calibration.ErrMalformed)
	_, err = f.cal.Attest(context.Background(), "\xff", nil)
	wantIs(t, err, calibration.ErrMalformed)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = f.cal.Attest(ctx, "s", nil)
	wantIs(t, err, context.Canceled)

	f.clock.Advance(31 * time.Second)
	_, err = f.cal.Attest(context.Background(), "s", nil)
	wantIs(t, err, calibration.ErrStale)

	nosig, err := calibration.New(calibration.Config{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = nosig.Attest(context.Background(), "s", nil)
	wantIs(t, err, calibration.ErrNoSigner)
}

// encoded builds an attestation encoding field by field, so malformed
// inputs can be made with a precise defect.
type encoded struct {
	version             byte
	alg, keyID, subject string
	tm, unc, age, exp   int64
	nonce, sig          []byte
	subjectLen, sigLen  int // -1: the true length
}

func (e encoded) bytes() []byte {
	b := []byte{e.version, byte(len(e.alg))}
	b = append(b, e.alg...)
	b = append(b, byte(len(e.keyID)))
	b = append(b, e.keyID...)
	sl := e.subjectLen
	if sl < 0 {
		sl = len(e.subject)
	}
	b = binary.BigEndian.AppendUint16(b, uint16(sl))
	b = append(b, e.subject...)
	for _, v := range []int64{e.tm, e.unc, e.age, e.exp} {
		b = binary.BigEndian.AppendUint64(b, uint64(v))
	}
	b = append(b, byte(len(e.nonce)))
	b = append(b, e.nonce...)
	gl := e.sigLen
	if gl < 0 {
		gl = len(e.sig)
	}
	b = binary.BigEndian.AppendUint16(b, uint16(gl))
	return append(b, e.sig...)
}

func validEncoded() encoded {
	return encoded{version: 1, alg: "ML-DSA-65", keyID: "k/1", subject: "s", tm: 1e18, unc: 1e6, age: 2e9, exp: 1e18 + 30e9, nonce: []byte{9}, sig: []byte{1, 2, 3}, subjectLen: -1, sigLen: -1}
}

func TestParseAttestationMalformed(t *testing.T) {
	if _, err := calibration.ParseAttestation(validEncoded().bytes()); err != nil {
		t.Fatalf("valid encoding refused: %v", err)
	}
	mod := func(f func(*encoded)) []byte { e := validEncoded(); f(&e); return e.bytes() }
	cases := map[string]struct {
		b     []byte
		field string
	}{
		"empty":                {nil, "version"},
		"version 0":            {mod(func(e *encoded) { e.version = 0 }), "version"},
		"version 2":            {mod(func(e *encoded) { e.version = 2 }), "version"},
		"empty algorithm":      {mod(func(e *encoded) { e.alg = "" }), "algorithm"},
		"algorithm with space": {mod(func(e *encoded) { e.alg = "ML DSA" }), "algorithm"},
		"algorithm too long":   {mod(func(e *encoded) { e.alg = strings.Repeat("A", 65) }), "algorithm"},
		"empty key id":         {mod(func(e *encoded) { e.keyID = "" }), "key id"},
		"key id control byte":  {mod(func(e *encoded) { e.keyID = "k\n" }), "key id"},
		"subject too long":     {mod(func(e *encoded) { e.subject = strings.Repeat("s", 1025) }), "subject"},
		"subject not UTF-8":    {mod(func(e *encoded) { e.subject = "\xc3\x28" }), "subject"},
		"subject length lies":  {mod(func(e *encoded) { e.subjectLen = 60000 }), "subject"},
		"negative uncertainty": {mod(func(e *encoded) { e.unc = -1 }), "uncertainty"},
		"negative age":         {mod(func(e *encoded) { e.age = -5 }), "age"},
		"expiry equals time":   {mod(func(e *encoded) { e.exp = e.tm }), "expiry"},
		"expiry before time":   {mod(func(e *encoded) { e.exp = e.tm - 1 }), "expiry"},
		"nonce too long":       {mod(func(e *encoded) { e.nonce = make([]byte, 65) }), "nonce"},
		"empty signature":      {mod(func(e *encoded) { e.sig = nil }), "signature"},
		"signature truncated":  {mod(func(e *encoded) { e.sigLen = 4 }), "signature"},
		"trailing byte":        {append(validEncoded().bytes(), 0), "attestation"},
		"oversize":             {make([]byte, calibration.MaxAttestationLen+1), "attestation"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := calibration.ParseAttestation(tc.b)
			var fe *calibration.FormatError
			if !errors.As(err, &fe) || !errors.Is(err, calibration.ErrMalformed) {
				t.Fatalf("error %v, want *FormatError", err)
			}
			if fe.Field != tc.field {
				t.Fatalf("field %q (%v), want %q", fe.Field, err, tc.field)
			}
			if strings.HasPrefix(name, "version") != errors.Is(err, calibration.ErrUnsupportedVersion) {
				t.Fatalf("ErrUnsupportedVersion match wrong for %v", err)
			}
		})
	}
	// Every truncation of a valid encoding is refused.
	b := validEncoded().bytes()
	for n := range len(b) {
		if _, err := calibration.ParseAttestation(b[:n]); !errors.Is(err, calibration.ErrMalformed) {
			t.Fatalf("truncated to %d bytes: %v", n, err)
		}
	}
}

func TestMarshalRefusesInvalid(t *testing.T) {
	a := &calibration.Attestation{Version: 1, Algorithm: "ML-DSA-65", KeyID: "k", Time: t0, Expiry: t0.Add(time.Second), Signature: []byte{1}}
	if a.Marshal() == nil {
		t.Fatal("valid attestation not marshalled")
	}
	a.Nonce = make([]byte, 65)
	if a.Marshal() != nil || a.SignedMessage() != nil {
		t.Fatal("65-byte nonce marshalled")
	}
}
