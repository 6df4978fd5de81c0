// Package kmstest is the conformance kit every kms plugin runs, ours and
// third parties': Run(t, factory) checks the whole kms.KMS contract, with
// signatures and KEM results checked by independent implementations (circl,
// the Go standard library), not only by the backend's own Verify.
package kmstest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/cloudflare/circl/kem"
	"github.com/cloudflare/circl/kem/mlkem/mlkem1024"
	"github.com/cloudflare/circl/kem/mlkem/mlkem768"
	"github.com/cloudflare/circl/kem/xwing"
	"github.com/cloudflare/circl/sign/mldsa/mldsa44"
	"github.com/cloudflare/circl/sign/mldsa/mldsa65"
	"github.com/cloudflare/circl/sign/mldsa/mldsa87"

	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/kms"
)

// Option adjusts the suite to a backend.
type Option func(*suite)

// WithAlgorithms limits the suite to what the backend supports; others must
// be refused with kms.ErrUnsupportedAlgorithm.
func WithAlgorithms(a ...kms.Algorithm) Option { return func(s *suite) { s.algs = a } }

// WithoutExporter declares that the backend offers no kms.Exporter.
func WithoutExporter() Option { return func(s *suite) { s.exporter = false } }

type suite struct {
	algs     []kms.Algorithm
	exporter bool
}

// PublicKeySizes are the raw public key sizes of each algorithm.
var PublicKeySizes = map[kms.Algorithm]int{
	kms.MLDSA44: mldsa44.PublicKeySize, kms.MLDSA65: mldsa65.PublicKeySize, kms.MLDSA87: mldsa87.PublicKeySize,
	kms.MLKEM768: mlkem768.PublicKeySize, kms.MLKEM1024: mlkem1024.PublicKeySize, kms.XWing: xwing.PublicKeySize,
	kms.ECDSAP256: 65, kms.ECDSAP384: 97, kms.Ed25519: ed25519.PublicKeySize,
}

// VerifyIndependently checks sig over msg with pub using circl or the
// standard library, never the backend.
func VerifyIndependently(a kms.Algorithm, pub, msg, ctx, sig []byte) (bool, error) {
	switch a {
	case kms.MLDSA44:
		var pk mldsa44.PublicKey
		if err := pk.UnmarshalBinary(pub); err != nil {
			return false, err
		}
		return mldsa44.Verify(&pk, msg, ctx, sig), nil
	case kms.MLDSA65:
		var pk mldsa65.PublicKey
		if err := pk.UnmarshalBinary(pub); err != nil {
			return false, err
		}
		return mldsa65.Verify(&pk, msg, ctx, sig), nil
	case kms.MLDSA87:
		var pk mldsa87.PublicKey
		if err := pk.UnmarshalBinary(pub); err != nil {
			return false, err
		}
		return mldsa87.Verify(&pk, msg, ctx, sig), nil
	case kms.ECDSAP256, kms.ECDSAP384:
		curve, digest := elliptic.P256(), func(b []byte) []byte { h := sha256.Sum256(b); return h[:] }
		if a == kms.ECDSAP384 {
			curve, digest = elliptic.P384(), func(b []byte) []byte { h := sha512.Sum384(b); return h[:] }
		}
		pk, err := ecdsa.ParseUncompressedPublicKey(curve, pub)
		if err != nil {
			return false, err
		}
		return ecdsa.VerifyASN1(pk, digest(msg), sig), nil
	case kms.Ed25519:
		if len(pub) != ed25519.PublicKeySize {
			return false, fmt.Errorf("ed25519 public key of %d bytes", len(pub))
		}
		return ed25519.Verify(pub, msg, sig), nil
	}
	return false, fmt.Errorf("no independent verifier for %s", a)
}

// EncapsulateIndependently encapsulates to pub with circl.
func EncapsulateIndependently(a kms.Algorithm, pub []byte) (ct, ss []byte, err error) {
	var sch kem.Scheme
	switch a {
	case kms.MLKEM768:
		sch = mlkem768.Scheme()
	case kms.MLKEM1024:
		sch = mlkem1024.Scheme()
	case kms.XWing:
		sch = xwing.Scheme()
	default:
		return nil, nil, fmt.Errorf("%s is not a KEM", a)
	}
	pk, err := sch.UnmarshalBinaryPublicKey(pub)
	if err != nil {
		return nil, nil, err
	}
	return sch.Encapsulate(pk)
}

func purpose(a kms.Algorithm) kms.Purpose { p, _ := kms.PurposeOf(a); return p }

// Run runs the conformance suite. newKMS must return an empty backend.
func Run(t *testing.T, newKMS func(t *testing.T) kms.KMS, opts ...Option) {
	s := &suite{algs: kms.AllAlgorithms, exporter: true}
	for _, o := range opts {
		o(s)
	}
	ctx := context.Background()
	is := func(t *testing.T, err, want error, what string) {
		t.Helper()
		if !errors.Is(err, want) {
			t.Fatalf("%s: want %v, got %v", what, want, err)
		}
	}
	gen := func(t *testing.T, k kms.KMS, id string, a kms.Algorithm) *kms.Key {
		t.Helper()
		r, err := k.GenerateKey(ctx, &kms.GenerateKeyRequest{ID: id, Algorithm: a, Labels: map[string]string{"purpose": "test"}})
		if err != nil {
			t.Fatalf("generate %s %s: %v", id, a, err)
		}
		return r.Key
	}

	t.Run("Generate", func(t *testing.T) {
		k := newKMS(t)
		for _, a := range s.algs {
			key := gen(t, k, "key-"+strings.ToLower(string(a)), a)
			if key.Algorithm != a || key.PrimaryVersion != 1 || len(key.Versions) != 1 || key.Versions[0].State != kms.StateEnabled ||
				key.Labels["purpose"] != "test" || key.CreatedAt.IsZero() || key.Exportable {
				t.Errorf("%s: bad metadata %+v", a, key)
			}
			if want, ok := PublicKeySizes[a]; ok && len(key.Versions[0].PublicKey) != want {
				t.Errorf("%s: public key in metadata is %d bytes, want %d", a, len(key.Versions[0].PublicKey), want)
			}
		}
		auto := gen(t, k, "", s.algs[0])
		if auto.ID == "" {
			t.Fatal("no ID chosen for an empty request ID")
		}
		_, err := k.GenerateKey(ctx, &kms.GenerateKeyRequest{ID: auto.ID, Algorithm: s.algs[0]})
		is(t, err, kms.ErrKeyExists, "duplicate ID")
		_, err = k.GenerateKey(ctx, &kms.GenerateKeyRequest{ID: "x", Algorithm: "RSA-512"})
		is(t, err, kms.ErrUnsupportedAlgorithm, "unknown algorithm")
		for _, a := range kms.AllAlgorithms {
			if !slices.Contains(s.algs, a) {
				_, err = k.GenerateKey(ctx, &kms.GenerateKeyRequest{ID: "unsupported", Algorithm: a})
				is(t, err, kms.ErrUnsupportedAlgorithm, "algorithm the backend does not support")
			}
		}
		for _, bad := range []string{"has space", "slash/", strings.Repeat("a", 129), "nul\x00"} {
			_, err = k.GenerateKey(ctx, &kms.GenerateKeyRequest{ID: bad, Algorithm: s.algs[0]})
			is(t, err, errdef.ErrInvalidArgument, fmt.Sprintf("ID %q", bad))
		}
		g, err := k.GetKey(ctx, &kms.GetKeyRequest{ID: auto.ID})
		if err != nil || g.Key.ID != auto.ID || g.Key.Algorithm != s.algs[0] {
			t.Fatalf("GetKey: %+v %v", g, err)
		}
	})

	t.Run("ListPaging", func(t *testing.T) {
		k := newKMS(t)
		want := map[string]bool{}
		for i := 0; i < 23; i++ {
			id := fmt.Sprintf("list-%02d", i)
			gen(t, k, id, s.algs[0])
			want[id] = true
		}
		seen, token := map[string]bool{}, ""
		for pages := 0; pages < 50; pages++ {
			r, err := k.ListKeys(ctx, &kms.ListKeysRequest{PageSize: 5, PageToken: token})
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Keys) > 5 {
				t.Fatalf("page of %d keys, asked 5", len(r.Keys))
			}
			for _, key := range r.Keys {
				if seen[key.ID] {
					t.Fatalf("key %s listed twice", key.ID)
				}
				seen[key.ID] = true
			}
			if r.NextPageToken == "" {
				break
			}
			token = r.NextPageToken
		}
		if len(seen) != len(want) {
			t.Fatalf("listed %d keys, want %d", len(seen), len(want))
		}
		_, err := k.ListKeys(ctx, &kms.ListKeysRequest{PageSize: -1})
		is(t, err, errdef.ErrInvalidArgument, "negative page size")
	})

	t.Run("SignVerify", func(t *testing.T) {
		k := newKMS(t)
		for _, a := range s.algs {
			if purpose(a) != kms.PurposeSign {
				continue
			}
			t.Run(string(a), func(t *testing.T) {
				id := "sig-" + strings.ToLower(string(a))
				gen(t, k, id, a)
				msg := []byte("to be signed by " + string(a))
				var c []byte
				if strings.HasPrefix(string(a), "ML-DSA") {
					c = []byte("avon-test-context")
				}
				r, err := k.Sign(ctx, &kms.SignRequest{ID: id, Message: msg, Context: c})
				if err != nil {
					t.Fatal(err)
				}
				if r.Version != 1 {
					t.Fatalf("signed with version %d", r.Version)
				}
				pk, err := k.PublicKey(ctx, &kms.PublicKeyRequest{ID: id})
				if err != nil || pk.Algorithm != a || pk.Version != 1 || len(pk.PublicKey) != PublicKeySizes[a] {
					t.Fatalf("PublicKey: %+v %v", pk, err)
				}
				ok, err := VerifyIndependently(a, pk.PublicKey, msg, c, r.Signature)
				if err != nil || !ok {
					t.Fatalf("independent verification failed: %v %v", ok, err)
				}
				v, err := k.Verify(ctx, &kms.VerifyRequest{ID: id, Message: msg, Context: c, Signature: r.Signature})
				if err != nil || !v.Valid {
					t.Fatalf("Verify: %+v %v", v, err)
				}
				bad := append([]byte{}, r.Signature...)
				bad[len(bad)/2] ^= 1
				for name, req := range map[string]*kms.VerifyRequest{
					"tampered message":   {ID: id, Message: append(msg, '!'), Context: c, Signature: r.Signature},
					"tampered signature": {ID: id, Message: msg, Context: c, Signature: bad},
					"truncated":          {ID: id, Message: msg, Context: c, Signature: r.Signature[:len(r.Signature)-1]},
				} {
					v, err := k.Verify(ctx, req)
					if err != nil || v.Valid {
						t.Errorf("%s: valid=%v err=%v", name, v != nil && v.Valid, err)
					}
				}
				if c != nil {
					v, err := k.Verify(ctx, &kms.VerifyRequest{ID: id, Message: msg, Context: []byte("other"), Signature: r.Signature})
					if err != nil || v.Valid {
						t.Errorf("wrong context verified: %v %v", v, err)
					}
					_, err = k.Sign(ctx, &kms.SignRequest{ID: id, Message: msg, Context: make([]byte, 256)})
					is(t, err, errdef.ErrInvalidArgument, "context over 255 bytes")
				} else {
					_, err = k.Sign(ctx, &kms.SignRequest{ID: id, Message: msg, Context: []byte("x")})
					is(t, err, errdef.ErrInvalidArgument, "context with a classical algorithm")
				}
				_, err = k.Sign(ctx, &kms.SignRequest{ID: id, Message: make([]byte, kms.MaxMessageSize+1)})
				is(t, err, errdef.ErrInvalidArgument, "oversized message")
			})
		}
	})

	t.Run("KEM", func(t *testing.T) {
		k := newKMS(t)
		for _, a := range s.algs {
			if purpose(a) != kms.PurposeKEM {
				continue
			}
			t.Run(string(a), func(t *testing.T) {
				id := "kem-" + strings.ToLower(string(a))
				gen(t, k, id, a)
				pk, err := k.PublicKey(ctx, &kms.PublicKeyRequest{ID: id})
				if err != nil || len(pk.PublicKey) != PublicKeySizes[a] {
					t.Fatalf("PublicKey: %v %v", pk, err)
				}
				ct, ss, err := EncapsulateIndependently(a, pk.PublicKey)
				if err != nil {
					t.Fatal(err)
				}
				r, err := k.Decapsulate(ctx, &kms.DecapsulateRequest{ID: id, Ciphertext: ct})
				if err != nil || !bytes.Equal(r.SharedSecret, ss) {
					t.Fatalf("decapsulated secret differs: %v", err)
				}
				_, err = k.Decapsulate(ctx, &kms.DecapsulateRequest{ID: id, Ciphertext: ct[:len(ct)-1]})
				is(t, err, kms.ErrInvalidCiphertext, "short ciphertext")
				forged := append([]byte{}, ct...)
				forged[0] ^= 0xff
				if r2, err := k.Decapsulate(ctx, &kms.DecapsulateRequest{ID: id, Ciphertext: forged}); err == nil && bytes.Equal(r2.SharedSecret, ss) {
					t.Fatal("forged ciphertext decapsulated to the real secret")
				}
			})
		}
	})

	if slices.Contains(s.algs, kms.AES256) {
		t.Run("Envelope", func(t *testing.T) {
			k := newKMS(t)
			gen(t, k, "aes", kms.AES256)
			pt, aad := []byte("secret payload"), []byte("bound context")
			r, err := k.Encrypt(ctx, &kms.EncryptRequest{ID: "aes", Plaintext: pt, AAD: aad})
			if err != nil || r.Version != 1 || bytes.Contains(r.Ciphertext, pt) {
				t.Fatalf("Encrypt: %v %v", r, err)
			}
			d, err := k.Decrypt(ctx, &kms.DecryptRequest{ID: "aes", Ciphertext: r.Ciphertext, AAD: aad})
			if err != nil || !bytes.Equal(d.Plaintext, pt) {
				t.Fatalf("Decrypt: %v %v", d, err)
			}
			_, err = k.Decrypt(ctx, &kms.DecryptRequest{ID: "aes", Ciphertext: r.Ciphertext, AAD: []byte("other")})
			is(t, err, kms.ErrInvalidCiphertext, "wrong AAD")
			for i := range r.Ciphertext {
				flipped := append([]byte{}, r.Ciphertext...)
				flipped[i] ^= 0x01
				if _, err := k.Decrypt(ctx, &kms.DecryptRequest{ID: "aes", Ciphertext: flipped, AAD: aad}); err == nil {
					t.Fatalf("ciphertext with byte %d flipped decrypted", i)
				}
			}
			_, err = k.Decrypt(ctx, &kms.DecryptRequest{ID: "aes", Ciphertext: []byte{1, 2, 3}})
			is(t, err, kms.ErrInvalidCiphertext, "truncated ciphertext")
			gen(t, k, "aes2", kms.AES256)
			_, err = k.Decrypt(ctx, &kms.DecryptRequest{ID: "aes2", Ciphertext: r.Ciphertext, AAD: aad})
			if err == nil {
				t.Fatal("ciphertext decrypted under another key")
			}
		})
	}

	t.Run("WrongPurpose", func(t *testing.T) {
		k := newKMS(t)
		for _, a := range s.algs {
			id := "wp-" + strings.ToLower(string(a))
			gen(t, k, id, a)
			p := purpose(a)
			if p != kms.PurposeSign {
				_, err := k.Sign(ctx, &kms.SignRequest{ID: id, Message: []byte("m")})
				is(t, err, kms.ErrWrongPurpose, string(a)+" Sign")
				_, err = k.Verify(ctx, &kms.VerifyRequest{ID: id, Message: []byte("m"), Signature: []byte("s")})
				is(t, err, kms.ErrWrongPurpose, string(a)+" Verify")
			}
			if p != kms.PurposeKEM {
				_, err := k.Decapsulate(ctx, &kms.DecapsulateRequest{ID: id, Ciphertext: make([]byte, 1088)})
				is(t, err, kms.ErrWrongPurpose, string(a)+" Decapsulate")
			}
			if p != kms.PurposeEncrypt {
				_, err := k.Encrypt(ctx, &kms.EncryptRequest{ID: id, Plaintext: []byte("m")})
				is(t, err, kms.ErrWrongPurpose, string(a)+" Encrypt")
			} else {
				_, err := k.PublicKey(ctx, &kms.PublicKeyRequest{ID: id})
				is(t, err, kms.ErrWrongPurpose, string(a)+" PublicKey")
			}
		}
	})

	t.Run("RotateAndDestroy", func(t *testing.T) {
		k := newKMS(t)
		for _, a := range s.algs {
			t.Run(string(a), func(t *testing.T) {
				id := "rot-" + strings.ToLower(string(a))
				gen(t, k, id, a)
				// Material made under version 1.
				var sig1, msg, ct1, ss1, env1 []byte
				msg = []byte("before rotation")
				switch purpose(a) {
				case kms.PurposeSign:
					r, err := k.Sign(ctx, &kms.SignRequest{ID: id, Message: msg})
					if err != nil {
						t.Fatal(err)
					}
					sig1 = r.Signature
				case kms.PurposeKEM:
					pk, _ := k.PublicKey(ctx, &kms.PublicKeyRequest{ID: id})
					var err error
					if ct1, ss1, err = EncapsulateIndependently(a, pk.PublicKey); err != nil {
						t.Fatal(err)
					}
				case kms.PurposeEncrypt:
					r, err := k.Encrypt(ctx, &kms.EncryptRequest{ID: id, Plaintext: msg})
					if err != nil {
						t.Fatal(err)
					}
					env1 = r.Ciphertext
				}
				rr, err := k.RotateKey(ctx, &kms.RotateKeyRequest{ID: id})
				if err != nil || rr.Key.PrimaryVersion != 2 || len(rr.Key.Versions) != 2 {
					t.Fatalf("rotate: %+v %v", rr, err)
				}
				switch purpose(a) {
				case kms.PurposeSign:
					r, err := k.Sign(ctx, &kms.SignRequest{ID: id, Message: msg})
					if err != nil || r.Version != 2 {
						t.Fatalf("sign after rotate: %+v %v", r, err)
					}
					v, err := k.Verify(ctx, &kms.VerifyRequest{ID: id, Version: 1, Message: msg, Signature: sig1})
					if err != nil || !v.Valid {
						t.Fatalf("old version no longer verifies: %v %v", v, err)
					}
					v, _ = k.Verify(ctx, &kms.VerifyRequest{ID: id, Message: msg, Signature: sig1})
					if v != nil && v.Valid {
						t.Fatal("version 1 signature verified under version 2")
					}
				case kms.PurposeKEM:
					r, err := k.Decapsulate(ctx, &kms.DecapsulateRequest{ID: id, Version: 1, Ciphertext: ct1})
					if err != nil || !bytes.Equal(r.SharedSecret, ss1) {
						t.Fatalf("old version no longer decapsulates: %v", err)
					}
					p1, _ := k.PublicKey(ctx, &kms.PublicKeyRequest{ID: id, Version: 1})
					p2, _ := k.PublicKey(ctx, &kms.PublicKeyRequest{ID: id})
					if p2.Version != 2 || bytes.Equal(p1.PublicKey, p2.PublicKey) {
						t.Fatal("rotation did not make a new key pair")
					}
				case kms.PurposeEncrypt:
					r, err := k.Encrypt(ctx, &kms.EncryptRequest{ID: id, Plaintext: msg})
					if err != nil || r.Version != 2 {
						t.Fatalf("encrypt after rotate: %v %v", r, err)
					}
					d, err := k.Decrypt(ctx, &kms.DecryptRequest{ID: id, Ciphertext: env1})
					if err != nil || !bytes.Equal(d.Plaintext, msg) {
						t.Fatalf("old ciphertext no longer decrypts: %v", err)
					}
				}
				_, err = k.DestroyKey(ctx, &kms.DestroyKeyRequest{ID: id, Version: 2})
				is(t, err, errdef.ErrInvalidArgument, "destroying the primary while version 1 is enabled")
				d, err := k.DestroyKey(ctx, &kms.DestroyKeyRequest{ID: id, Version: 1})
				if err != nil || d.Key.Versions[0].State != kms.StateDestroyed || d.Key.Versions[1].State != kms.StateEnabled {
					t.Fatalf("destroy version 1: %+v %v", d, err)
				}
				switch purpose(a) {
				case kms.PurposeSign:
					_, err = k.Verify(ctx, &kms.VerifyRequest{ID: id, Version: 1, Message: msg, Signature: sig1})
				case kms.PurposeKEM:
					_, err = k.Decapsulate(ctx, &kms.DecapsulateRequest{ID: id, Version: 1, Ciphertext: ct1})
				case kms.PurposeEncrypt:
					_, err = k.Decrypt(ctx, &kms.DecryptRequest{ID: id, Ciphertext: env1})
				}
				is(t, err, kms.ErrKeyDestroyed, "use of a destroyed version")
				if _, err := k.DestroyKey(ctx, &kms.DestroyKeyRequest{ID: id}); err != nil {
					t.Fatalf("destroy all: %v", err)
				}
				g, err := k.GetKey(ctx, &kms.GetKeyRequest{ID: id})
				if err != nil || !g.Key.Destroyed() {
					t.Fatalf("tombstone: %+v %v", g, err)
				}
				switch purpose(a) {
				case kms.PurposeSign:
					_, err = k.Sign(ctx, &kms.SignRequest{ID: id, Message: msg})
				case kms.PurposeKEM:
					_, err = k.PublicKey(ctx, &kms.PublicKeyRequest{ID: id})
				case kms.PurposeEncrypt:
					_, err = k.Encrypt(ctx, &kms.EncryptRequest{ID: id, Plaintext: msg})
				}
				is(t, err, kms.ErrKeyDestroyed, "use of a destroyed key")
				_, err = k.GenerateKey(ctx, &kms.GenerateKeyRequest{ID: id, Algorithm: a})
				is(t, err, kms.ErrKeyExists, "re-using a destroyed key's ID")
				_, err = k.PublicKey(ctx, &kms.PublicKeyRequest{ID: id, Version: 7})
				is(t, err, kms.ErrVersionNotFound, "unknown version")
			})
		}
	})

	t.Run("UnknownKey", func(t *testing.T) {
		k := newKMS(t)
		const id = "no-such-key"
		errs := []error{}
		_, err := k.GetKey(ctx, &kms.GetKeyRequest{ID: id})
		errs = append(errs, err)
		_, err = k.PublicKey(ctx, &kms.PublicKeyRequest{ID: id})
		errs = append(errs, err)
		_, err = k.Sign(ctx, &kms.SignRequest{ID: id, Message: []byte("m")})
		errs = append(errs, err)
		_, err = k.Verify(ctx, &kms.VerifyRequest{ID: id})
		errs = append(errs, err)
		_, err = k.Decapsulate(ctx, &kms.DecapsulateRequest{ID: id, Ciphertext: []byte("c")})
		errs = append(errs, err)
		_, err = k.Encrypt(ctx, &kms.EncryptRequest{ID: id})
		errs = append(errs, err)
		_, err = k.RotateKey(ctx, &kms.RotateKeyRequest{ID: id})
		errs = append(errs, err)
		_, err = k.DestroyKey(ctx, &kms.DestroyKeyRequest{ID: id})
		errs = append(errs, err)
		for i, err := range errs {
			is(t, err, kms.ErrKeyNotFound, fmt.Sprintf("call %d", i))
		}
	})

	t.Run("Exporter", func(t *testing.T) {
		k := newKMS(t)
		ex, ok := k.(kms.Exporter)
		if !s.exporter {
			if ok {
				if _, err := ex.ExportKey(ctx, &kms.ExportKeyRequest{ID: "x"}); err == nil {
					t.Fatal("backend declared without exporter exports")
				}
			}
			return
		}
		if !ok {
			t.Fatal("backend does not implement kms.Exporter")
		}
		gen(t, k, "locked", s.algs[0])
		_, err := ex.ExportKey(ctx, &kms.ExportKeyRequest{ID: "locked"})
		is(t, err, kms.ErrNotExportable, "non-exportable key")
		if _, err := k.GenerateKey(ctx, &kms.GenerateKeyRequest{ID: "open", Algorithm: s.algs[0], Exportable: true}); err != nil {
			t.Fatal(err)
		}
		r, err := ex.ExportKey(ctx, &kms.ExportKeyRequest{ID: "open"})
		if err != nil || len(r.PrivateKey) == 0 || r.Algorithm != s.algs[0] || r.Version != 1 {
			t.Fatalf("export: %+v %v", r, err)
		}
	})

	t.Run("Concurrent", func(t *testing.T) {
		k := newKMS(t)
		a := s.algs[0]
		for _, cand := range s.algs {
			if purpose(cand) == kms.PurposeSign {
				a = cand
				break
			}
		}
		gen(t, k, "shared", a)
		var wg sync.WaitGroup
		errs := make(chan error, 64)
		for w := 0; w < 8; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 5; i++ {
					if _, err := k.GenerateKey(ctx, &kms.GenerateKeyRequest{ID: fmt.Sprintf("c-%d-%d", w, i), Algorithm: a}); err != nil {
						errs <- err
						return
					}
					if purpose(a) == kms.PurposeSign {
						if _, err := k.Sign(ctx, &kms.SignRequest{ID: "shared", Message: []byte{byte(i)}}); err != nil {
							errs <- err
							return
						}
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		r, err := k.ListKeys(ctx, &kms.ListKeysRequest{PageSize: 1000})
		if err != nil || len(r.Keys) != 41 {
			t.Fatalf("after concurrent generation: %d keys, %v", len(r.Keys), err)
		}
	})
}
