// Package pqctest is the conformance kit every pqc plugin runs, ours and
// third parties': Run(t, factory) checks the pqc.Provider contract (and the
// pqc.KEM capability when offered) for the algorithms the provider lists,
// with errors.Is on every refusal so the same suite holds in process and
// through the gRPC shim (pqcrpc.Client) against a plugin binary.
//
// WithIndependentVerifier lets a plugin prove interoperability: every
// signature the provider makes is also checked by code that is not the
// provider's own Verify.
//
// The package is for tests only. It does no I/O beyond the provider's.
package pqctest

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/pqc"
)

// Verifier checks a signature independently of the provider under test
// (another implementation of the same standard). It returns an error for a
// key it cannot parse; for an algorithm it does not cover it returns an error
// wrapping errdef.ErrNotImplemented, and the suite skips the check.
type Verifier func(alg string, pub, msg, ctx, sig []byte) (bool, error)

// Option adjusts the suite.
type Option func(*suite)

// WithIndependentVerifier checks every signature the provider makes with v,
// and that v agrees the signature fails under a different context.
func WithIndependentVerifier(v Verifier) Option { return func(s *suite) { s.verify = v } }

// WithAlgorithms limits the per-algorithm tests to these names (slow
// parameter sets can be left to benchmarks, or to runs without -race). The
// listing itself is always checked whole. Each name must be listed.
func WithAlgorithms(names ...string) Option {
	return func(s *suite) { s.only = append([]string(nil), names...) }
}

// WithConcurrency sets how many goroutines the concurrency test runs at
// once (default 4). Each does one full round (key, sign, verify or key,
// encapsulate, decapsulate) on one of the selected algorithms.
func WithConcurrency(workers int) Option { return func(s *suite) { s.workers = max(workers, 1) } }

type suite struct {
	verify  Verifier
	only    []string
	workers int
}

// Run runs the suite against the configured provider newProvider returns.
// newProvider is called once; the provider is shared by all subtests, some
// of which run in parallel (the contract says every method is safe for
// concurrent use).
func Run(t *testing.T, newProvider func(t *testing.T) pqc.Provider, opts ...Option) {
	t.Helper()
	s := &suite{workers: 4}
	for _, o := range opts {
		o(s)
	}
	p := newProvider(t)
	if p == nil {
		t.Fatal("pqctest: newProvider returned nil")
	}
	list, err := p.ListAlgorithms(t.Context(), &pqc.ListAlgorithmsRequest{})
	if err != nil {
		t.Fatalf("ListAlgorithms: %v", err)
	}
	algs := list.Algorithms
	kem, hasKEM := p.(pqc.KEM)
	listsKEM := slices.ContainsFunc(algs, func(a pqc.Algorithm) bool { return a.Type == pqc.TypeKEM })

	t.Run("ListAlgorithms", func(t *testing.T) { checkList(t, p, algs, hasKEM) })

	selected := algs
	if s.only != nil {
		selected = nil
		for _, n := range s.only {
			i := slices.IndexFunc(algs, func(a pqc.Algorithm) bool { return a.Name == n })
			if i < 0 {
				t.Fatalf("pqctest: WithAlgorithms names %q, which the provider does not list", n)
			}
			selected = append(selected, algs[i])
		}
	}
	if len(selected) == 0 {
		t.Fatal("pqctest: no algorithm to test")
	}

	t.Run("UnknownAlgorithm", func(t *testing.T) { checkUnknown(t, p, kem) })

	r := &runner{p: p, kem: kem, listsKEM: listsKEM, s: s}
	t.Run("Algorithms", func(t *testing.T) {
		for _, a := range selected {
			t.Run(a.Name, func(t *testing.T) {
				t.Parallel()
				switch a.Type {
				case pqc.TypeSignature:
					r.signature(t, a)
				case pqc.TypeKEM:
					if kem == nil {
						t.Fatal("provider lists a KEM but does not implement pqc.KEM")
					}
					r.kemAlg(t, a)
				default:
					t.Skipf("type %q", a.Type)
				}
			})
		}
	})

	t.Run("Concurrent", func(t *testing.T) { r.concurrent(t, selected) })
}

type runner struct {
	p        pqc.Provider
	kem      pqc.KEM // nil without the capability
	listsKEM bool
	s        *suite
}

// checkList checks the listing: non-empty, stable, unique names and OIDs,
// valid OIDs and types, sizes that make sense for the type.
func checkList(t *testing.T, p pqc.Provider, algs []pqc.Algorithm, hasKEM bool) {
	if len(algs) == 0 {
		t.Fatal("provider lists no algorithms")
	}
	again, err := p.ListAlgorithms(t.Context(), &pqc.ListAlgorithmsRequest{})
	if err != nil {
		t.Fatalf("second ListAlgorithms: %v", err)
	}
	if !slices.Equal(algs, again.Algorithms) {
		t.Error("ListAlgorithms is not stable: two calls gave different lists")
	}
	names, oids := map[string]bool{}, map[string]bool{}
	for _, a := range algs {
		if a.Name == "" || strings.TrimSpace(a.Name) != a.Name {
			t.Errorf("algorithm %+v: empty or padded name", a)
		}
		if names[a.Name] {
			t.Errorf("algorithm name %q listed twice", a.Name)
		}
		names[a.Name] = true
		if err := checkOID(a.OID); err != nil {
			t.Errorf("algorithm %q: OID %q: %v", a.Name, a.OID, err)
		}
		if oids[a.OID] {
			t.Errorf("OID %q listed twice", a.OID)
		}
		oids[a.OID] = true
		if a.PublicKeySize < 0 || a.PrivateKeySize < 0 || a.SignatureSize < 0 || a.CiphertextSize < 0 || a.SharedSecretSize < 0 {
			t.Errorf("algorithm %q: negative size in %+v", a.Name, a)
		}
		switch a.Type {
		case pqc.TypeSignature:
			if a.CiphertextSize != 0 || a.SharedSecretSize != 0 {
				t.Errorf("signature algorithm %q lists KEM sizes: %+v", a.Name, a)
			}
		case pqc.TypeKEM:
			if a.SignatureSize != 0 {
				t.Errorf("KEM %q lists a signature size: %+v", a.Name, a)
			}
			if !hasKEM {
				t.Errorf("KEM %q listed, but the provider does not implement pqc.KEM", a.Name)
			}
		default:
			t.Errorf("algorithm %q: type %q is neither %q nor %q", a.Name, a.Type, pqc.TypeSignature, pqc.TypeKEM)
		}
	}
}

// checkOID accepts dotted-decimal object identifiers as X.660 defines them:
// at least two arcs, the first 0, 1 or 2, the second below 40 under 0 and
// 1, no leading zeros, every arc fitting 64 bits.
func checkOID(oid string) error {
	arcs := strings.Split(oid, ".")
	if len(arcs) < 2 {
		return errors.New("fewer than two arcs")
	}
	var v []uint64
	for _, s := range arcs {
		if s == "" || (len(s) > 1 && s[0] == '0') || strings.TrimLeft(s, "0123456789") != "" {
			return fmt.Errorf("arc %q is not a decimal number without leading zeros", s)
		}
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return fmt.Errorf("arc %q: %v", s, err)
		}
		v = append(v, n)
	}
	if v[0] > 2 {
		return errors.New("first arc above 2")
	}
	if v[0] < 2 && v[1] > 39 {
		return errors.New("second arc above 39 under arc 0 or 1")
	}
	return nil
}

const unknown = "PQCTEST-NOT-AN-ALGORITHM"

func checkUnknown(t *testing.T, p pqc.Provider, kem pqc.KEM) {
	ctx := t.Context()
	want := func(op string, err error) {
		t.Helper()
		if !errors.Is(err, pqc.ErrUnknownAlgorithm) {
			t.Errorf("%s of an unlisted algorithm: want ErrUnknownAlgorithm, got %v", op, err)
		}
	}
	_, err := p.GenerateKey(ctx, &pqc.GenerateKeyRequest{Algorithm: unknown})
	want("GenerateKey", err)
	_, err = p.GenerateKey(ctx, &pqc.GenerateKeyRequest{})
	want("GenerateKey (empty name)", err)
	_, err = p.Sign(ctx, &pqc.SignRequest{Algorithm: unknown, PrivateKey: make([]byte, 64), Message: []byte("m")})
	want("Sign", err)
	_, err = p.Verify(ctx, &pqc.VerifyRequest{Algorithm: unknown, PublicKey: make([]byte, 32), Message: []byte("m"), Signature: make([]byte, 64)})
	want("Verify", err)
	if kem != nil {
		_, err = kem.Encapsulate(ctx, &pqc.EncapsulateRequest{Algorithm: unknown, PublicKey: make([]byte, 32)})
		if !errors.Is(err, errdef.ErrNotImplemented) { // a signature-only plugin behind pqcrpc.Client
			want("Encapsulate", err)
		}
		_, err = kem.Decapsulate(ctx, &pqc.DecapsulateRequest{Algorithm: unknown, PrivateKey: make([]byte, 32), Ciphertext: make([]byte, 32)})
		if !errors.Is(err, errdef.ErrNotImplemented) {
			want("Decapsulate", err)
		}
	}
}

// generate makes a key pair and checks it against the listing.
func (r *runner) generate(t *testing.T, a pqc.Algorithm) *pqc.GenerateKeyResponse {
	t.Helper()
	k, err := r.p.GenerateKey(t.Context(), &pqc.GenerateKeyRequest{Algorithm: a.Name})
	if err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	if len(k.PublicKey) == 0 || len(k.PrivateKey) == 0 {
		t.Fatalf("GenerateKey: empty key (public %d bytes, private %d bytes)", len(k.PublicKey), len(k.PrivateKey))
	}
	if a.PublicKeySize > 0 && len(k.PublicKey) != a.PublicKeySize {
		t.Fatalf("public key of %d bytes, listed %d", len(k.PublicKey), a.PublicKeySize)
	}
	if a.PrivateKeySize > 0 && len(k.PrivateKey) != a.PrivateKeySize {
		t.Fatalf("private key of %d bytes, listed %d", len(k.PrivateKey), a.PrivateKeySize)
	}
	return k
}

// malformed returns keys of the wrong shape for a listed size: empty, one
// byte short and, for fixed sizes, one byte long.
func malformed(valid []byte, fixed bool) map[string][]byte {
	m := map[string][]byte{"empty": {}, "one byte short": valid[:len(valid)-1]}
	if fixed {
		m["one byte long"] = append(slices.Clone(valid), 0)
	}
	return m
}

func flip(b []byte, i int) []byte {
	c := slices.Clone(b)
	c[i] ^= 0x01
	return c
}

// unchanged fails the test if a call modified its input.
func unchanged(t *testing.T, op string, pairs ...[]byte) {
	t.Helper()
	for i := 0; i+1 < len(pairs); i += 2 {
		if !bytes.Equal(pairs[i], pairs[i+1]) {
			t.Errorf("%s modified its input", op)
		}
	}
}

func (r *runner) signature(t *testing.T, a pqc.Algorithm) {
	ctx := t.Context()
	k := r.generate(t, a)
	k2 := r.generate(t, a)
	if bytes.Equal(k.PublicKey, k2.PublicKey) || bytes.Equal(k.PrivateKey, k2.PrivateKey) {
		t.Fatal("two GenerateKey calls returned the same key: no randomness is used")
	}

	sign := func(priv, msg, c []byte) []byte {
		t.Helper()
		privIn, msgIn, cIn := slices.Clone(priv), slices.Clone(msg), slices.Clone(c)
		s, err := r.p.Sign(ctx, &pqc.SignRequest{Algorithm: a.Name, PrivateKey: priv, Message: msg, Context: c})
		if err != nil {
			t.Fatalf("Sign: %v", err)
		}
		unchanged(t, "Sign", priv, privIn, msg, msgIn, c, cIn)
		if len(s.Signature) == 0 || (a.SignatureSize > 0 && len(s.Signature) != a.SignatureSize) {
			t.Fatalf("signature of %d bytes, listed %d", len(s.Signature), a.SignatureSize)
		}
		return s.Signature
	}
	verify := func(req *pqc.VerifyRequest) bool {
		t.Helper()
		req.Algorithm = a.Name
		pubIn, msgIn, cIn, sigIn := slices.Clone(req.PublicKey), slices.Clone(req.Message), slices.Clone(req.Context), slices.Clone(req.Signature)
		v, err := r.p.Verify(ctx, req)
		if err != nil {
			t.Fatalf("Verify: a bad signature is Valid=false, not an error; got %v", err)
		}
		unchanged(t, "Verify", req.PublicKey, pubIn, req.Message, msgIn, req.Context, cIn, req.Signature, sigIn)
		return v.Valid
	}
	independent := func(pub, msg, c, sig []byte, want bool) {
		t.Helper()
		if r.s.verify == nil {
			return
		}
		ok, err := r.s.verify(a.Name, pub, msg, c, sig)
		if errors.Is(err, errdef.ErrNotImplemented) {
			return
		}
		if err != nil || ok != want {
			t.Errorf("independent verifier says %v (%v), want %v", ok, err, want)
		}
	}

	// The longest context there is, and a message with every byte value.
	maxCtx := make([]byte, pqc.MaxContextSize)
	for i := range maxCtx {
		maxCtx[i] = byte(i * 7)
	}
	msg := make([]byte, 300)
	for i := range msg {
		msg[i] = byte(i)
	}
	sig := sign(k.PrivateKey, msg, maxCtx)
	if !verify(&pqc.VerifyRequest{PublicKey: k.PublicKey, Message: msg, Context: maxCtx, Signature: sig}) {
		t.Fatal("a fresh signature does not verify")
	}
	independent(k.PublicKey, msg, maxCtx, sig, true)
	independent(k.PublicKey, msg, maxCtx[1:], sig, false)

	t.Run("Tampered", func(t *testing.T) {
		cases := map[string]*pqc.VerifyRequest{
			"message bit":         {PublicKey: k.PublicKey, Message: flip(msg, len(msg)/2), Context: maxCtx, Signature: sig},
			"message extended":    {PublicKey: k.PublicKey, Message: append(slices.Clone(msg), 0), Context: maxCtx, Signature: sig},
			"message empty":       {PublicKey: k.PublicKey, Context: maxCtx, Signature: sig},
			"context bit":         {PublicKey: k.PublicKey, Message: msg, Context: flip(maxCtx, 0), Signature: sig},
			"context shortened":   {PublicKey: k.PublicKey, Message: msg, Context: maxCtx[:len(maxCtx)-1], Signature: sig},
			"context empty":       {PublicKey: k.PublicKey, Message: msg, Signature: sig},
			"signature first bit": {PublicKey: k.PublicKey, Message: msg, Context: maxCtx, Signature: flip(sig, 0)},
			"signature mid bit":   {PublicKey: k.PublicKey, Message: msg, Context: maxCtx, Signature: flip(sig, len(sig)/2)},
			"signature last bit":  {PublicKey: k.PublicKey, Message: msg, Context: maxCtx, Signature: flip(sig, len(sig)-1)},
			"signature truncated": {PublicKey: k.PublicKey, Message: msg, Context: maxCtx, Signature: sig[:len(sig)-1]},
			"signature extended":  {PublicKey: k.PublicKey, Message: msg, Context: maxCtx, Signature: append(slices.Clone(sig), 0)},
			"signature empty":     {PublicKey: k.PublicKey, Message: msg, Context: maxCtx},
			"other key":           {PublicKey: k2.PublicKey, Message: msg, Context: maxCtx, Signature: sig},
		}
		for _, name := range slices.Sorted(maps.Keys(cases)) {
			if verify(cases[name]) {
				t.Errorf("tampered (%s) signature verifies", name)
			}
		}
	})

	t.Run("EmptyMessageAndContext", func(t *testing.T) {
		// A nil context and an empty one are the same context; the wire may
		// turn one into the other.
		s := sign(k.PrivateKey, nil, nil)
		if !verify(&pqc.VerifyRequest{PublicKey: k.PublicKey, Signature: s}) {
			t.Error("signature over an empty message with no context does not verify")
		}
		if !verify(&pqc.VerifyRequest{PublicKey: k.PublicKey, Message: []byte{}, Context: []byte{}, Signature: s}) {
			t.Error("nil and empty context (or message) are not treated alike")
		}
		if verify(&pqc.VerifyRequest{PublicKey: k.PublicKey, Context: []byte{0}, Signature: s}) {
			t.Error("signature made with no context verifies under context {0}")
		}
		independent(k.PublicKey, nil, nil, s, true)
	})

	t.Run("InvalidKeys", func(t *testing.T) {
		for name, pub := range malformed(k.PublicKey, a.PublicKeySize > 0) {
			_, err := r.p.Verify(ctx, &pqc.VerifyRequest{Algorithm: a.Name, PublicKey: pub, Message: msg, Context: maxCtx, Signature: sig})
			if !errors.Is(err, pqc.ErrInvalidKey) {
				t.Errorf("Verify with a public key %s: want ErrInvalidKey, got %v", name, err)
			}
		}
		for name, priv := range malformed(k.PrivateKey, a.PrivateKeySize > 0) {
			_, err := r.p.Sign(ctx, &pqc.SignRequest{Algorithm: a.Name, PrivateKey: priv, Message: msg})
			if !errors.Is(err, pqc.ErrInvalidKey) {
				t.Errorf("Sign with a private key %s: want ErrInvalidKey, got %v", name, err)
			}
		}
	})

	t.Run("InvalidArguments", func(t *testing.T) {
		long := make([]byte, pqc.MaxContextSize+1)
		_, err := r.p.Sign(ctx, &pqc.SignRequest{Algorithm: a.Name, PrivateKey: k.PrivateKey, Message: msg, Context: long})
		if !errors.Is(err, errdef.ErrInvalidArgument) {
			t.Errorf("Sign with a %d-byte context: want ErrInvalidArgument, got %v", len(long), err)
		}
		_, err = r.p.Verify(ctx, &pqc.VerifyRequest{Algorithm: a.Name, PublicKey: k.PublicKey, Message: msg, Context: long, Signature: sig})
		if !errors.Is(err, errdef.ErrInvalidArgument) {
			t.Errorf("Verify with a %d-byte context: want ErrInvalidArgument, got %v", len(long), err)
		}
		huge := make([]byte, pqc.MaxMessageSize+1)
		_, err = r.p.Sign(ctx, &pqc.SignRequest{Algorithm: a.Name, PrivateKey: k.PrivateKey, Message: huge})
		if !errors.Is(err, errdef.ErrInvalidArgument) {
			t.Errorf("Sign of a message over MaxMessageSize: want ErrInvalidArgument, got %v", err)
		}
		_, err = r.p.Verify(ctx, &pqc.VerifyRequest{Algorithm: a.Name, PublicKey: k.PublicKey, Message: huge, Signature: sig})
		if !errors.Is(err, errdef.ErrInvalidArgument) {
			t.Errorf("Verify of a message over MaxMessageSize: want ErrInvalidArgument, got %v", err)
		}
	})

	t.Run("KEMOperations", func(t *testing.T) {
		if r.kem == nil {
			return // the capability is absent: nothing can be misused
		}
		// Behind a transport client (pqcrpc.Client always has the KEM
		// methods) a plugin without the capability answers "not
		// implemented"; a provider that offers KEMs must say "wrong type".
		ok := func(err error) bool {
			return errors.Is(err, pqc.ErrWrongType) || (!r.listsKEM && errors.Is(err, errdef.ErrNotImplemented))
		}
		if _, err := r.kem.Encapsulate(ctx, &pqc.EncapsulateRequest{Algorithm: a.Name, PublicKey: k.PublicKey}); !ok(err) {
			t.Errorf("Encapsulate with signature algorithm %s: want ErrWrongType, got %v", a.Name, err)
		}
		if _, err := r.kem.Decapsulate(ctx, &pqc.DecapsulateRequest{Algorithm: a.Name, PrivateKey: k.PrivateKey, Ciphertext: sig}); !ok(err) {
			t.Errorf("Decapsulate with signature algorithm %s: want ErrWrongType, got %v", a.Name, err)
		}
	})
}

func (r *runner) kemAlg(t *testing.T, a pqc.Algorithm) {
	ctx := t.Context()
	k := r.generate(t, a)
	k2 := r.generate(t, a)
	if bytes.Equal(k.PublicKey, k2.PublicKey) || bytes.Equal(k.PrivateKey, k2.PrivateKey) {
		t.Fatal("two GenerateKey calls returned the same key: no randomness is used")
	}
	encaps := func(pub []byte) *pqc.EncapsulateResponse {
		t.Helper()
		in := slices.Clone(pub)
		e, err := r.kem.Encapsulate(ctx, &pqc.EncapsulateRequest{Algorithm: a.Name, PublicKey: pub})
		if err != nil {
			t.Fatalf("Encapsulate: %v", err)
		}
		unchanged(t, "Encapsulate", pub, in)
		if len(e.Ciphertext) == 0 || (a.CiphertextSize > 0 && len(e.Ciphertext) != a.CiphertextSize) {
			t.Fatalf("ciphertext of %d bytes, listed %d", len(e.Ciphertext), a.CiphertextSize)
		}
		if len(e.SharedSecret) == 0 || (a.SharedSecretSize > 0 && len(e.SharedSecret) != a.SharedSecretSize) {
			t.Fatalf("shared secret of %d bytes, listed %d", len(e.SharedSecret), a.SharedSecretSize)
		}
		return e
	}
	e := encaps(k.PublicKey)
	privIn, ctIn := slices.Clone(k.PrivateKey), slices.Clone(e.Ciphertext)
	d, err := r.kem.Decapsulate(ctx, &pqc.DecapsulateRequest{Algorithm: a.Name, PrivateKey: k.PrivateKey, Ciphertext: e.Ciphertext})
	if err != nil {
		t.Fatalf("Decapsulate: %v", err)
	}
	unchanged(t, "Decapsulate", k.PrivateKey, privIn, e.Ciphertext, ctIn)
	if !bytes.Equal(d.SharedSecret, e.SharedSecret) {
		t.Fatal("Decapsulate and Encapsulate disagree on the shared secret")
	}
	if e2 := encaps(k.PublicKey); bytes.Equal(e2.Ciphertext, e.Ciphertext) || bytes.Equal(e2.SharedSecret, e.SharedSecret) {
		t.Error("two encapsulations to one key gave the same ciphertext or secret: no randomness is used")
	}

	t.Run("Tampered", func(t *testing.T) {
		// An IND-CCA KEM either refuses a modified ciphertext or (implicit
		// rejection, as ML-KEM does) derives an unrelated secret.
		for name, req := range map[string]*pqc.DecapsulateRequest{
			"ciphertext first bit": {PrivateKey: k.PrivateKey, Ciphertext: flip(e.Ciphertext, 0)},
			"ciphertext last bit":  {PrivateKey: k.PrivateKey, Ciphertext: flip(e.Ciphertext, len(e.Ciphertext)-1)},
			"other private key":    {PrivateKey: k2.PrivateKey, Ciphertext: e.Ciphertext},
		} {
			req.Algorithm = a.Name
			d, err := r.kem.Decapsulate(ctx, req)
			switch {
			case errors.Is(err, pqc.ErrInvalidCiphertext):
			case err != nil:
				t.Errorf("%s: want a different secret or ErrInvalidCiphertext, got %v", name, err)
			case bytes.Equal(d.SharedSecret, e.SharedSecret):
				t.Errorf("%s: decapsulates to the original shared secret", name)
			}
		}
	})

	t.Run("InvalidInputs", func(t *testing.T) {
		for name, pub := range malformed(k.PublicKey, a.PublicKeySize > 0) {
			if _, err := r.kem.Encapsulate(ctx, &pqc.EncapsulateRequest{Algorithm: a.Name, PublicKey: pub}); !errors.Is(err, pqc.ErrInvalidKey) {
				t.Errorf("Encapsulate to a public key %s: want ErrInvalidKey, got %v", name, err)
			}
		}
		for name, priv := range malformed(k.PrivateKey, a.PrivateKeySize > 0) {
			if _, err := r.kem.Decapsulate(ctx, &pqc.DecapsulateRequest{Algorithm: a.Name, PrivateKey: priv, Ciphertext: e.Ciphertext}); !errors.Is(err, pqc.ErrInvalidKey) {
				t.Errorf("Decapsulate with a private key %s: want ErrInvalidKey, got %v", name, err)
			}
		}
		for name, ct := range malformed(e.Ciphertext, a.CiphertextSize > 0) {
			if _, err := r.kem.Decapsulate(ctx, &pqc.DecapsulateRequest{Algorithm: a.Name, PrivateKey: k.PrivateKey, Ciphertext: ct}); !errors.Is(err, pqc.ErrInvalidCiphertext) {
				t.Errorf("Decapsulate of a ciphertext %s: want ErrInvalidCiphertext, got %v", name, err)
			}
		}
	})

	t.Run("SignatureOperations", func(t *testing.T) {
		if _, err := r.p.Sign(ctx, &pqc.SignRequest{Algorithm: a.Name, PrivateKey: k.PrivateKey, Message: []byte("m")}); !errors.Is(err, pqc.ErrWrongType) {
			t.Errorf("Sign with KEM %s: want ErrWrongType, got %v", a.Name, err)
		}
		if _, err := r.p.Verify(ctx, &pqc.VerifyRequest{Algorithm: a.Name, PublicKey: k.PublicKey, Message: []byte("m"), Signature: e.Ciphertext}); !errors.Is(err, pqc.ErrWrongType) {
			t.Errorf("Verify with KEM %s: want ErrWrongType, got %v", a.Name, err)
		}
	})
}

// concurrent runs s.workers goroutines at once, each one full round on one
// of the algorithms, next to listings; the race detector does the rest.
func (r *runner) concurrent(t *testing.T, algs []pqc.Algorithm) {
	ctx := t.Context()
	round := func(a pqc.Algorithm) error {
		if _, err := r.p.ListAlgorithms(ctx, &pqc.ListAlgorithmsRequest{}); err != nil {
			return fmt.Errorf("ListAlgorithms: %w", err)
		}
		k, err := r.p.GenerateKey(ctx, &pqc.GenerateKeyRequest{Algorithm: a.Name})
		if err != nil {
			return fmt.Errorf("%s: GenerateKey: %w", a.Name, err)
		}
		if a.Type == pqc.TypeKEM {
			e, err := r.kem.Encapsulate(ctx, &pqc.EncapsulateRequest{Algorithm: a.Name, PublicKey: k.PublicKey})
			if err != nil {
				return fmt.Errorf("%s: Encapsulate: %w", a.Name, err)
			}
			d, err := r.kem.Decapsulate(ctx, &pqc.DecapsulateRequest{Algorithm: a.Name, PrivateKey: k.PrivateKey, Ciphertext: e.Ciphertext})
			if err != nil {
				return fmt.Errorf("%s: Decapsulate: %w", a.Name, err)
			}
			if !bytes.Equal(d.SharedSecret, e.SharedSecret) {
				return fmt.Errorf("%s: shared secrets differ under concurrency", a.Name)
			}
			return nil
		}
		msg := []byte("concurrent " + a.Name)
		s, err := r.p.Sign(ctx, &pqc.SignRequest{Algorithm: a.Name, PrivateKey: k.PrivateKey, Message: msg})
		if err != nil {
			return fmt.Errorf("%s: Sign: %w", a.Name, err)
		}
		v, err := r.p.Verify(ctx, &pqc.VerifyRequest{Algorithm: a.Name, PublicKey: k.PublicKey, Message: msg, Signature: s.Signature})
		if err != nil {
			return fmt.Errorf("%s: Verify: %w", a.Name, err)
		}
		if !v.Valid {
			return fmt.Errorf("%s: signature made under concurrency does not verify", a.Name)
		}
		return nil
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for w := range r.s.workers {
		a := algs[w%len(algs)]
		if a.Type == pqc.TypeKEM && r.kem == nil {
			continue // reported by the per-algorithm test
		}
		wg.Go(func() {
			if err := round(a); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("worker %d: %w", w, err))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		t.Error(err)
	}
}
