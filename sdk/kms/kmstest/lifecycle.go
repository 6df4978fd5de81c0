package kmstest

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/kms"
)

func rotate(t *testing.T, k kms.KMS, id string) *kms.Key {
	t.Helper()
	r, err := k.RotateKey(t.Context(), &kms.RotateKeyRequest{ID: id})
	if err != nil {
		t.Fatalf("RotateKey %q: %v", id, err)
	}
	return r.Key
}

func destroy(t *testing.T, k kms.KMS, id string, version int) *kms.Key {
	t.Helper()
	r, err := k.DestroyKey(t.Context(), &kms.DestroyKeyRequest{ID: id, Version: version})
	if err != nil {
		t.Fatalf("DestroyKey %q version %d: %v", id, version, err)
	}
	return r.Key
}

func (s *suite) testRotate(t *testing.T) {
	k := s.newKMS(t)
	ctx := t.Context()
	en := kms.StateEnabled
	for _, a := range s.algs {
		t.Run(string(a), func(t *testing.T) {
			id := idFor("rot", a)
			gen(t, k, id, a)
			a1 := use(t, k, id, a, "v1")

			key := rotate(t, k, id)
			checkVersions(t, key, 2, en, en)
			if d := diffKey(getKey(t, k, id), key); d != "" {
				t.Errorf("GetKey differs from RotateKey's answer: %s", d)
			}
			a2 := use(t, k, id, a, "v2")
			if a2.version != 2 {
				t.Errorf("after rotation the primary reports version %d, want 2", a2.version)
			}
			if purpose(a) != kms.PurposeEncrypt && bytes.Equal(a1.pub, a2.pub) {
				t.Error("rotation kept the key pair")
			}
			works(t, k, id, a1)
			works(t, k, id, a2)

			switch purpose(a) {
			case kms.PurposeSign:
				// Version 1's signature is not version 2's.
				r, err := k.Verify(ctx, &kms.VerifyRequest{ID: id, Message: a1.msg, Context: a1.ctx, Signature: a1.sig})
				if err != nil || r.Valid {
					t.Errorf("a version 1 signature checked against the primary: valid=%v err=%v, want invalid", r != nil && r.Valid, err)
				}
				if ok, _ := VerifyIndependently(a, a1.pub, a2.msg, a2.ctx, a2.sig); ok {
					t.Error("a version 2 signature verifies under version 1's public key")
				}
			case kms.PurposeKEM:
				r, err := k.Decapsulate(ctx, &kms.DecapsulateRequest{ID: id, Ciphertext: a1.ct})
				if err != nil {
					t.Errorf("Decapsulate of a version 1 ciphertext with the primary: %v, want implicit rejection", err)
				} else if bytes.Equal(r.SharedSecret, a1.ss) {
					t.Error("the primary (version 2) decapsulated a version 1 ciphertext to its secret")
				}
			}

			key = rotate(t, k, id)
			checkVersions(t, key, 3, en, en, en)
			if a3 := use(t, k, id, a, "v3"); a3.version != 3 {
				t.Errorf("after a second rotation the primary reports version %d, want 3", a3.version)
			}
			works(t, k, id, a1)
			works(t, k, id, a2)
		})
	}
}

func (s *suite) testDestroy(t *testing.T) {
	k := s.newKMS(t)
	ctx := t.Context()
	en, de := kms.StateEnabled, kms.StateDestroyed
	for _, a := range s.algs {
		t.Run(string(a), func(t *testing.T) {
			id := idFor("des", a)
			gen(t, k, id, a)
			a1 := use(t, k, id, a, "v1")
			rotate(t, k, id)
			a2 := use(t, k, id, a, "v2")

			// The primary cannot go while version 1 is enabled.
			_, err := k.DestroyKey(ctx, &kms.DestroyKeyRequest{ID: id, Version: 2})
			wantErr(t, err, errdef.ErrInvalidArgument, "DestroyKey of the primary while another version is enabled")
			checkVersions(t, getKey(t, k, id), 2, en, en)
			works(t, k, id, a1)
			works(t, k, id, a2)

			// One old version.
			key := destroy(t, k, id, 1)
			checkVersions(t, key, 2, de, en)
			if d := diffKey(getKey(t, k, id), key); d != "" {
				t.Errorf("GetKey differs from DestroyKey's answer: %s", d)
			}
			gone(t, k, id, a1)
			works(t, k, id, a2)
			if cur := use(t, k, id, a, "v2 after destroying v1"); cur.version != 2 {
				t.Errorf("primary reports version %d, want 2", cur.version)
			}
			_, err = k.DestroyKey(ctx, &kms.DestroyKeyRequest{ID: id, Version: 1})
			if err != nil {
				wantErr(t, err, kms.ErrKeyDestroyed, "DestroyKey of a destroyed version")
			}
			_, err = k.DestroyKey(ctx, &kms.DestroyKeyRequest{ID: id, Version: 3})
			wantErr(t, err, kms.ErrVersionNotFound, "DestroyKey of version 3 of a 2-version key")

			// Every version: a tombstone.
			key = destroy(t, k, id, 0)
			checkVersions(t, key, 2, de, de)
			if d := diffKey(getKey(t, k, id), key); d != "" {
				t.Errorf("GetKey of the tombstone differs from DestroyKey's answer: %s", d)
			}
			listed := false
			for _, l := range listAll(t, k) {
				if l.ID == id {
					listed = true
					if !l.Destroyed() {
						t.Error("ListKeys shows the destroyed key as not destroyed")
					}
				}
			}
			if !listed {
				t.Error("ListKeys does not list the tombstone")
			}
			gone(t, k, id, a1)
			gone(t, k, id, a2)
			var primaryErr error
			switch purpose(a) {
			case kms.PurposeSign:
				_, primaryErr = k.Sign(ctx, &kms.SignRequest{ID: id, Message: a2.msg, Context: a2.ctx})
				wantErr(t, primaryErr, kms.ErrKeyDestroyed, "Sign with a destroyed key")
				_, err = k.Verify(ctx, &kms.VerifyRequest{ID: id, Message: a2.msg, Context: a2.ctx, Signature: a2.sig})
				wantErr(t, err, kms.ErrKeyDestroyed, "Verify with a destroyed key's primary")
			case kms.PurposeKEM:
				_, err = k.Decapsulate(ctx, &kms.DecapsulateRequest{ID: id, Ciphertext: a2.ct})
				wantErr(t, err, kms.ErrKeyDestroyed, "Decapsulate with a destroyed key's primary")
			case kms.PurposeEncrypt:
				_, err = k.Encrypt(ctx, &kms.EncryptRequest{ID: id, Plaintext: a2.pt})
				wantErr(t, err, kms.ErrKeyDestroyed, "Encrypt with a destroyed key")
			}
			if purpose(a) != kms.PurposeEncrypt {
				_, err = k.PublicKey(ctx, &kms.PublicKeyRequest{ID: id})
				wantErr(t, err, kms.ErrKeyDestroyed, "PublicKey of a destroyed key")
			}
			_, err = k.RotateKey(ctx, &kms.RotateKeyRequest{ID: id})
			wantErr(t, err, kms.ErrKeyDestroyed, "RotateKey of a destroyed key")
			if _, err = k.DestroyKey(ctx, &kms.DestroyKeyRequest{ID: id}); err != nil {
				wantErr(t, err, kms.ErrKeyDestroyed, "DestroyKey of a destroyed key")
			}
			checkVersions(t, getKey(t, k, id), 2, de, de)

			// IDs are never reused.
			for _, b := range []kms.Algorithm{a, s.algs[0]} {
				_, err = k.GenerateKey(ctx, &kms.GenerateKeyRequest{ID: id, Algorithm: b})
				wantErr(t, err, kms.ErrKeyExists, "GenerateKey with a destroyed key's ID ("+string(b)+")")
			}
		})
	}
	t.Run("OnlyVersion", func(t *testing.T) {
		// The primary may go when no other version is enabled.
		gen(t, k, "des-only", s.algs[0])
		checkVersions(t, destroy(t, k, "des-only", 1), 1, de)
	})
}

func (s *suite) testUnknownKey(t *testing.T) {
	k := s.newKMS(t)
	ctx := t.Context()
	gen(t, k, "known", s.algs[0]) // the backend is not empty
	const id = "no-such-key"
	envelope := bytes.Repeat([]byte{1}, 64)
	if s.supports(kms.AES256) {
		gen(t, k, "unknown-envelope", kms.AES256)
		r, err := k.Encrypt(ctx, &kms.EncryptRequest{ID: "unknown-envelope", Plaintext: []byte("m")})
		if err != nil {
			t.Fatal(err)
		}
		envelope = r.Ciphertext
	}
	calls := map[string]func() error{
		"GetKey": func() error { _, err := k.GetKey(ctx, &kms.GetKeyRequest{ID: id}); return err },
		"PublicKey": func() error {
			_, err := k.PublicKey(ctx, &kms.PublicKeyRequest{ID: id})
			return err
		},
		"Sign": func() error { _, err := k.Sign(ctx, &kms.SignRequest{ID: id, Message: []byte("m")}); return err },
		"Verify": func() error {
			_, err := k.Verify(ctx, &kms.VerifyRequest{ID: id, Message: []byte("m"), Signature: make([]byte, 64)})
			return err
		},
		"Decapsulate": func() error {
			_, err := k.Decapsulate(ctx, &kms.DecapsulateRequest{ID: id, Ciphertext: make([]byte, 1088)})
			return err
		},
		"Encrypt": func() error {
			_, err := k.Encrypt(ctx, &kms.EncryptRequest{ID: id, Plaintext: []byte("m")})
			return err
		},
		"Decrypt": func() error {
			_, err := k.Decrypt(ctx, &kms.DecryptRequest{ID: id, Ciphertext: envelope})
			return err
		},
		"RotateKey":         func() error { _, err := k.RotateKey(ctx, &kms.RotateKeyRequest{ID: id}); return err },
		"DestroyKey":        func() error { _, err := k.DestroyKey(ctx, &kms.DestroyKeyRequest{ID: id}); return err },
		"DestroyKeyVersion": func() error { _, err := k.DestroyKey(ctx, &kms.DestroyKeyRequest{ID: id, Version: 1}); return err },
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			wantErr(t, call(), kms.ErrKeyNotFound, name+" of an unknown key")
		})
	}
	if ex, ok := k.(kms.Exporter); ok && s.exporter != capAbsent {
		t.Run("ExportKey", func(t *testing.T) {
			_, err := ex.ExportKey(ctx, &kms.ExportKeyRequest{ID: id})
			if s.exporter == capAuto && errors.Is(err, errdef.ErrNotImplemented) {
				t.Skip("the backend does not offer export")
			}
			wantErr(t, err, kms.ErrKeyNotFound, "ExportKey of an unknown key")
		})
	}
	want := 1
	if s.supports(kms.AES256) {
		want++
	}
	if got := listAll(t, k); len(got) != want {
		t.Errorf("calls on an unknown key changed the key count from %d to %d", want, len(got))
	}
}

func (s *suite) testUnknownVersion(t *testing.T) {
	k := s.newKMS(t)
	ctx := t.Context()
	for _, a := range s.algs {
		t.Run(string(a), func(t *testing.T) {
			id := idFor("ver", a)
			gen(t, k, id, a)
			for _, v := range []int{2, 7} {
				what := fmt.Sprintf(" version %d of a 1-version %s key", v, a)
				switch purpose(a) {
				case kms.PurposeSign:
					_, err := k.Verify(ctx, &kms.VerifyRequest{ID: id, Version: v, Message: []byte("m"), Context: sigContext(a), Signature: make([]byte, 64)})
					wantErr(t, err, kms.ErrVersionNotFound, "Verify with"+what)
				case kms.PurposeKEM:
					pk := publicKey(t, k, id, 1)
					ct, _, err := EncapsulateIndependently(a, pk.PublicKey)
					if err != nil {
						t.Fatal(err)
					}
					_, err = k.Decapsulate(ctx, &kms.DecapsulateRequest{ID: id, Version: v, Ciphertext: ct})
					wantErr(t, err, kms.ErrVersionNotFound, "Decapsulate with"+what)
				}
				if purpose(a) != kms.PurposeEncrypt {
					_, err := k.PublicKey(ctx, &kms.PublicKeyRequest{ID: id, Version: v})
					wantErr(t, err, kms.ErrVersionNotFound, "PublicKey of"+what)
				}
				_, err := k.DestroyKey(ctx, &kms.DestroyKeyRequest{ID: id, Version: v})
				wantErr(t, err, kms.ErrVersionNotFound, "DestroyKey of"+what)
			}
			checkVersions(t, getKey(t, k, id), 1, kms.StateEnabled)
		})
	}
}
