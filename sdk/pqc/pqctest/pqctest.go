// Package pqctest is the conformance kit every pqc plugin runs:
// Run(t, factory) checks the pqc.Provider contract for every algorithm the
// provider lists, optionally with an independent verifier to prove
// interoperability.
package pqctest

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sync"
	"testing"

	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/pqc"
)

// Verifier checks a signature independently of the provider.
type Verifier func(alg string, pub, msg, ctx, sig []byte) (bool, error)

// Option adjusts the suite.
type Option func(*suite)

// WithIndependentVerifier checks every signature the provider makes with v.
func WithIndependentVerifier(v Verifier) Option { return func(s *suite) { s.verify = v } }

// WithAlgorithms limits the per-algorithm tests to these names (slow
// parameter sets can be left to benchmarks).
func WithAlgorithms(names ...string) Option { return func(s *suite) { s.only = names } }

type suite struct {
	verify Verifier
	only   []string
}

var oidRE = regexp.MustCompile(`^[0-2](\.(0|[1-9][0-9]*))+$`)

// Run runs the suite against a configured provider from newProvider.
func Run(t *testing.T, newProvider func(t *testing.T) pqc.Provider, opts ...Option) {
	s := &suite{}
	for _, o := range opts {
		o(s)
	}
	ctx := context.Background()
	p := newProvider(t)
	list, err := p.ListAlgorithms(ctx, &pqc.ListAlgorithmsRequest{})
	if err != nil {
		t.Fatalf("ListAlgorithms: %v", err)
	}
	if len(list.Algorithms) == 0 {
		t.Fatal("provider lists no algorithms")
	}
	names, oids := map[string]bool{}, map[string]bool{}
	for _, a := range list.Algorithms {
		if a.Name == "" || names[a.Name] || oids[a.OID] || !oidRE.MatchString(a.OID) ||
			(a.Type != pqc.TypeSignature && a.Type != pqc.TypeKEM) || a.PublicKeySize < 0 || a.PrivateKeySize < 0 {
			t.Errorf("bad algorithm entry %+v", a)
		}
		names[a.Name], oids[a.OID] = true, true
	}
	selected := list.Algorithms
	if s.only != nil {
		selected = nil
		for _, a := range list.Algorithms {
			for _, n := range s.only {
				if a.Name == n {
					selected = append(selected, a)
				}
			}
		}
		if len(selected) != len(s.only) {
			t.Fatalf("provider does not offer all of %v", s.only)
		}
	}

	t.Run("UnknownAlgorithm", func(t *testing.T) {
		_, err := p.GenerateKey(ctx, &pqc.GenerateKeyRequest{Algorithm: "NOT-AN-ALGORITHM"})
		if !errors.Is(err, pqc.ErrUnknownAlgorithm) {
			t.Fatalf("want ErrUnknownAlgorithm, got %v", err)
		}
		_, err = p.Verify(ctx, &pqc.VerifyRequest{Algorithm: "NOT-AN-ALGORITHM"})
		if !errors.Is(err, pqc.ErrUnknownAlgorithm) {
			t.Fatalf("Verify: want ErrUnknownAlgorithm, got %v", err)
		}
	})

	for _, a := range selected {
		if a.Type != pqc.TypeSignature {
			continue
		}
		t.Run(a.Name, func(t *testing.T) {
			k, err := p.GenerateKey(ctx, &pqc.GenerateKeyRequest{Algorithm: a.Name})
			if err != nil {
				t.Fatal(err)
			}
			if (a.PublicKeySize > 0 && len(k.PublicKey) != a.PublicKeySize) || (a.PrivateKeySize > 0 && len(k.PrivateKey) != a.PrivateKeySize) {
				t.Fatalf("key sizes %d/%d, listed %d/%d", len(k.PublicKey), len(k.PrivateKey), a.PublicKeySize, a.PrivateKeySize)
			}
			msg, c := []byte("conformance message for "+a.Name), []byte("avon-ctx")
			sig, err := p.Sign(ctx, &pqc.SignRequest{Algorithm: a.Name, PrivateKey: k.PrivateKey, Message: msg, Context: c})
			if err != nil {
				t.Fatal(err)
			}
			if a.SignatureSize > 0 && len(sig.Signature) != a.SignatureSize {
				t.Fatalf("signature of %d bytes, listed %d", len(sig.Signature), a.SignatureSize)
			}
			valid := func(req *pqc.VerifyRequest) bool {
				t.Helper()
				r, err := p.Verify(ctx, req)
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				return r.Valid
			}
			if !valid(&pqc.VerifyRequest{Algorithm: a.Name, PublicKey: k.PublicKey, Message: msg, Context: c, Signature: sig.Signature}) {
				t.Fatal("own signature does not verify")
			}
			if s.verify != nil {
				ok, err := s.verify(a.Name, k.PublicKey, msg, c, sig.Signature)
				if err != nil || !ok {
					t.Fatalf("independent verifier rejects the signature: %v %v", ok, err)
				}
			}
			bad := append([]byte{}, sig.Signature...)
			bad[len(bad)/3] ^= 0x10
			for name, req := range map[string]*pqc.VerifyRequest{
				"message":   {Algorithm: a.Name, PublicKey: k.PublicKey, Message: append(msg, 0), Context: c, Signature: sig.Signature},
				"signature": {Algorithm: a.Name, PublicKey: k.PublicKey, Message: msg, Context: c, Signature: bad},
				"context":   {Algorithm: a.Name, PublicKey: k.PublicKey, Message: msg, Context: []byte("other"), Signature: sig.Signature},
				"truncated": {Algorithm: a.Name, PublicKey: k.PublicKey, Message: msg, Context: c, Signature: sig.Signature[:len(sig.Signature)-1]},
			} {
				if valid(req) {
					t.Errorf("tampered %s verified", name)
				}
			}
			_, err = p.Verify(ctx, &pqc.VerifyRequest{Algorithm: a.Name, PublicKey: k.PublicKey[1:], Message: msg, Signature: sig.Signature})
			if !errors.Is(err, pqc.ErrInvalidKey) {
				t.Errorf("short public key: want ErrInvalidKey, got %v", err)
			}
			_, err = p.Sign(ctx, &pqc.SignRequest{Algorithm: a.Name, PrivateKey: k.PrivateKey[1:], Message: msg})
			if !errors.Is(err, pqc.ErrInvalidKey) {
				t.Errorf("short private key: want ErrInvalidKey, got %v", err)
			}
			_, err = p.Sign(ctx, &pqc.SignRequest{Algorithm: a.Name, PrivateKey: k.PrivateKey, Message: msg, Context: make([]byte, 256)})
			if !errors.Is(err, errdef.ErrInvalidArgument) {
				t.Errorf("long context: want ErrInvalidArgument, got %v", err)
			}
			if kem, ok := p.(pqc.KEM); ok {
				_, err := kem.Encapsulate(ctx, &pqc.EncapsulateRequest{Algorithm: a.Name, PublicKey: k.PublicKey})
				if !errors.Is(err, pqc.ErrWrongType) && !errors.Is(err, errdef.ErrNotImplemented) {
					t.Errorf("Encapsulate with a signature algorithm: %v", err)
				}
			}
		})
	}

	for _, a := range selected {
		if a.Type != pqc.TypeKEM {
			continue
		}
		t.Run(a.Name, func(t *testing.T) {
			kem, ok := p.(pqc.KEM)
			if !ok {
				t.Fatal("provider lists a KEM but does not implement pqc.KEM")
			}
			k, err := p.GenerateKey(ctx, &pqc.GenerateKeyRequest{Algorithm: a.Name})
			if err != nil {
				t.Fatal(err)
			}
			e, err := kem.Encapsulate(ctx, &pqc.EncapsulateRequest{Algorithm: a.Name, PublicKey: k.PublicKey})
			if err != nil {
				t.Fatal(err)
			}
			d, err := kem.Decapsulate(ctx, &pqc.DecapsulateRequest{Algorithm: a.Name, PrivateKey: k.PrivateKey, Ciphertext: e.Ciphertext})
			if err != nil || string(d.SharedSecret) != string(e.SharedSecret) {
				t.Fatalf("decapsulation disagrees: %v", err)
			}
		})
	}

	t.Run("Concurrent", func(t *testing.T) {
		a := selected[0]
		var wg sync.WaitGroup
		errs := make(chan error, 4)
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := p.GenerateKey(ctx, &pqc.GenerateKeyRequest{Algorithm: a.Name}); err != nil {
					errs <- fmt.Errorf("worker %d: %w", w, err)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	})
}
