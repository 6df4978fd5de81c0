package kmstest

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/kms"
)

// forgery is a signature check that must fail.
type forgery struct {
	name          string
	msg, ctx, sig []byte
}

func (s *suite) testSignVerify(t *testing.T) {
	algs := s.algsOf(kms.PurposeSign)
	if len(algs) == 0 {
		t.Skip("no signing algorithm declared")
	}
	k := s.newKMS(t)
	ctx := t.Context()
	for _, a := range algs {
		t.Run(string(a), func(t *testing.T) {
			id := idFor("sig", a)
			gen(t, k, id, a)
			art := use(t, k, id, a, "sign") // signs and verifies independently
			if art.version != 1 {
				t.Errorf("Sign reported version %d, want 1", art.version)
			}
			works(t, k, id, art)
			v, err := k.Verify(ctx, &kms.VerifyRequest{ID: id, Message: art.msg, Context: art.ctx, Signature: art.sig})
			if err != nil || !v.Valid {
				t.Errorf("Verify with version 0: valid=%v err=%v", v != nil && v.Valid, err)
			}

			flip := func(b []byte, i int) []byte { c := bytes.Clone(b); c[i] ^= 0x01; return c }
			sig := art.sig
			forgeries := []forgery{
				{"message changed", append(bytes.Clone(art.msg), '!'), art.ctx, sig},
				{"empty message", []byte{}, art.ctx, sig},
				{"first signature byte", art.msg, art.ctx, flip(sig, 0)},
				{"middle signature byte", art.msg, art.ctx, flip(sig, len(sig)/2)},
				{"last signature byte", art.msg, art.ctx, flip(sig, len(sig)-1)},
				{"truncated signature", art.msg, art.ctx, sig[:len(sig)-1]},
				{"extended signature", art.msg, art.ctx, append(bytes.Clone(sig), 0)},
				{"empty signature", art.msg, art.ctx, nil},
			}
			if isMLDSA(a) {
				forgeries = append(forgeries,
					forgery{"other context", art.msg, []byte("another context"), sig},
					forgery{"no context", art.msg, nil, sig})
			}
			for _, f := range forgeries {
				// The independent verifier must reject it too, or the
				// forgery proves nothing.
				if ok, _ := VerifyIndependently(a, art.pub, f.msg, f.ctx, f.sig); ok {
					t.Fatalf("%s: the independent verifier accepts it; the check is void", f.name)
				}
				r, err := k.Verify(ctx, &kms.VerifyRequest{ID: id, Message: f.msg, Context: f.ctx, Signature: f.sig})
				if err != nil || r.Valid {
					t.Errorf("Verify of a forgery (%s): valid=%v err=%v, want valid=false and no error", f.name, r != nil && r.Valid, err)
				}
			}

			empty, err := k.Sign(ctx, &kms.SignRequest{ID: id, Message: nil, Context: art.ctx})
			if err != nil {
				t.Errorf("Sign of an empty message: %v", err)
			} else if ok, _ := VerifyIndependently(a, art.pub, nil, art.ctx, empty.Signature); !ok {
				t.Error("signature of an empty message does not verify independently")
			}

			again, err := k.Sign(ctx, &kms.SignRequest{ID: id, Message: art.msg, Context: art.ctx})
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case isMLDSA(a):
				// FIPS 204 hedged signing: fresh randomness each time.
				if bytes.Equal(again.Signature, art.sig) {
					t.Error("two ML-DSA signatures of one message are equal: signing is not hedged")
				}
				long := bytes.Repeat([]byte{'c'}, 255)
				r, err := k.Sign(ctx, &kms.SignRequest{ID: id, Message: art.msg, Context: long})
				if err != nil {
					t.Errorf("Sign with a 255-byte context: %v", err)
				} else if ok, _ := VerifyIndependently(a, art.pub, art.msg, long, r.Signature); !ok {
					t.Error("signature with a 255-byte context does not verify independently")
				}
				_, err = k.Sign(ctx, &kms.SignRequest{ID: id, Message: art.msg, Context: append(long, 'c')})
				wantErr(t, err, errdef.ErrInvalidArgument, "Sign with a 256-byte context")
			case a == kms.Ed25519:
				// RFC 8032 signatures are deterministic.
				if !bytes.Equal(again.Signature, art.sig) {
					t.Error("two Ed25519 signatures of one message differ: not RFC 8032 Ed25519")
				}
			}
			if !isMLDSA(a) {
				_, err = k.Sign(ctx, &kms.SignRequest{ID: id, Message: art.msg, Context: []byte("x")})
				wantErr(t, err, errdef.ErrInvalidArgument, "Sign with a context string and "+string(a))
			}
		})
	}
}

func (s *suite) testKEM(t *testing.T) {
	algs := s.algsOf(kms.PurposeKEM)
	if len(algs) == 0 {
		t.Skip("no KEM declared")
	}
	k := s.newKMS(t)
	ctx := t.Context()
	for _, a := range algs {
		t.Run(string(a), func(t *testing.T) {
			id := idFor("kem", a)
			gen(t, k, id, a)
			art := use(t, k, id, a, "kem")
			if art.version != 1 || len(art.ss) != 32 {
				t.Fatalf("version %d, secret of %d bytes", art.version, len(art.ss))
			}
			works(t, k, id, art)
			r, err := k.Decapsulate(ctx, &kms.DecapsulateRequest{ID: id, Ciphertext: art.ct})
			if err != nil || !bytes.Equal(r.SharedSecret, art.ss) {
				t.Errorf("Decapsulate with version 0: err=%v or another secret", err)
			}
			other := use(t, k, id, a, "kem2")
			if bytes.Equal(other.ct, art.ct) || bytes.Equal(other.ss, art.ss) {
				t.Fatal("two independent encapsulations agree; the check is void")
			}
			works(t, k, id, other)

			n := len(art.ct)
			for _, size := range []int{0, 1, n - 1, n + 1, 2 * n} {
				_, err := k.Decapsulate(ctx, &kms.DecapsulateRequest{ID: id, Ciphertext: make([]byte, size)})
				wantErr(t, err, kms.ErrInvalidCiphertext, fmt.Sprintf("Decapsulate of %d bytes (want %d)", size, n))
			}
			// A well-sized forgery: implicit rejection gives some other
			// secret, not an error.
			for _, i := range []int{0, n / 2} {
				forged := bytes.Clone(art.ct)
				forged[i] ^= 0x01
				r, err := k.Decapsulate(ctx, &kms.DecapsulateRequest{ID: id, Ciphertext: forged})
				if err != nil {
					t.Errorf("Decapsulate of a well-sized forged ciphertext (byte %d): %v, want implicit rejection", i, err)
				} else if bytes.Equal(r.SharedSecret, art.ss) {
					t.Errorf("forged ciphertext (byte %d) decapsulated to the real secret", i)
				}
			}
		})
	}
}

func (s *suite) testEnvelope(t *testing.T) {
	if !s.supports(kms.AES256) {
		t.Skip("AES-256 not declared")
	}
	k := s.newKMS(t)
	ctx := t.Context()
	gen(t, k, "env", kms.AES256)
	gen(t, k, "env-other", kms.AES256)
	pt := bytes.Repeat([]byte("0123456789abcdef"), 4)
	aad := []byte("bound context")
	r, err := k.Encrypt(ctx, &kms.EncryptRequest{ID: "env", Plaintext: pt, AAD: aad})
	if err != nil {
		t.Fatal(err)
	}
	ct := r.Ciphertext
	if r.Version != 1 {
		t.Errorf("Encrypt reported version %d, want 1", r.Version)
	}
	if bytes.Contains(ct, pt[:16]) {
		t.Error("the ciphertext contains the plaintext")
	}
	decrypt := func(id string, c, aad []byte) ([]byte, error) {
		r, err := k.Decrypt(ctx, &kms.DecryptRequest{ID: id, Ciphertext: c, AAD: aad})
		if err != nil {
			return nil, err
		}
		return r.Plaintext, nil
	}

	t.Run("RoundTrip", func(t *testing.T) {
		if got, err := decrypt("env", ct, aad); err != nil || !bytes.Equal(got, pt) {
			t.Errorf("Decrypt: %q %v", got, err)
		}
		for _, c := range []struct {
			name    string
			pt, aad []byte
		}{{"empty plaintext", nil, aad}, {"no AAD", pt, nil}, {"both empty", nil, nil}} {
			r, err := k.Encrypt(ctx, &kms.EncryptRequest{ID: "env", Plaintext: c.pt, AAD: c.aad})
			if err != nil {
				t.Errorf("%s: Encrypt: %v", c.name, err)
				continue
			}
			if got, err := decrypt("env", r.Ciphertext, c.aad); err != nil || !bytes.Equal(got, c.pt) {
				t.Errorf("%s: Decrypt: %q %v", c.name, got, err)
			}
		}
		r2, err := k.Encrypt(ctx, &kms.EncryptRequest{ID: "env", Plaintext: pt, AAD: aad})
		if err != nil || bytes.Equal(r2.Ciphertext, ct) {
			t.Errorf("two encryptions of one plaintext are equal (no fresh nonce): %v", err)
		}
	})
	t.Run("WrongAAD", func(t *testing.T) {
		for name, bad := range map[string][]byte{"other": []byte("other context"), "none": nil, "extended": append(bytes.Clone(aad), 0)} {
			_, err := decrypt("env", ct, bad)
			wantErr(t, err, kms.ErrInvalidCiphertext, "Decrypt with "+name+" AAD")
		}
	})
	t.Run("BitFlips", func(t *testing.T) {
		for i := range len(ct) * 8 {
			c := bytes.Clone(ct)
			c[i/8] ^= 1 << (i % 8)
			_, err := decrypt("env", c, aad)
			if !wantErr(t, err, kms.ErrInvalidCiphertext, fmt.Sprintf("Decrypt with bit %d of byte %d flipped", i%8, i/8)) {
				return
			}
		}
	})
	t.Run("Truncated", func(t *testing.T) {
		for n := range len(ct) {
			_, err := decrypt("env", ct[:n], aad)
			if !wantErr(t, err, kms.ErrInvalidCiphertext, fmt.Sprintf("Decrypt of the first %d of %d bytes", n, len(ct))) {
				return
			}
		}
		_, err := decrypt("env", append(bytes.Clone(ct), 0), aad)
		wantErr(t, err, kms.ErrInvalidCiphertext, "Decrypt with a byte appended")
	})
	t.Run("OtherKey", func(t *testing.T) {
		_, err := decrypt("env-other", ct, aad)
		wantErr(t, err, kms.ErrInvalidCiphertext, "Decrypt under another key")
	})
}

// mismatched operations, by the purpose they need.
type purposeOp struct {
	name string
	need kms.Purpose
	call func(t *testing.T, k kms.KMS, id string) error
}

func (s *suite) purposeOps(envelope []byte) []purposeOp {
	return []purposeOp{
		{"Sign", kms.PurposeSign, func(t *testing.T, k kms.KMS, id string) error {
			_, err := k.Sign(t.Context(), &kms.SignRequest{ID: id, Message: []byte("m")})
			return err
		}},
		{"Verify", kms.PurposeSign, func(t *testing.T, k kms.KMS, id string) error {
			_, err := k.Verify(t.Context(), &kms.VerifyRequest{ID: id, Message: []byte("m"), Signature: make([]byte, 64)})
			return err
		}},
		{"Decapsulate", kms.PurposeKEM, func(t *testing.T, k kms.KMS, id string) error {
			_, err := k.Decapsulate(t.Context(), &kms.DecapsulateRequest{ID: id, Ciphertext: make([]byte, 1088)})
			return err
		}},
		{"Encrypt", kms.PurposeEncrypt, func(t *testing.T, k kms.KMS, id string) error {
			_, err := k.Encrypt(t.Context(), &kms.EncryptRequest{ID: id, Plaintext: []byte("m")})
			return err
		}},
		{"Decrypt", kms.PurposeEncrypt, func(t *testing.T, k kms.KMS, id string) error {
			_, err := k.Decrypt(t.Context(), &kms.DecryptRequest{ID: id, Ciphertext: envelope})
			return err
		}},
	}
}

func (s *suite) testWrongPurpose(t *testing.T) {
	k := s.newKMS(t)
	// A real envelope when the backend has AES-256, so Decrypt cannot fail
	// on the ciphertext's form before it looks at the key.
	envelope := bytes.Repeat([]byte{1}, 64)
	if s.supports(kms.AES256) {
		gen(t, k, "wp-envelope", kms.AES256)
		r, err := k.Encrypt(t.Context(), &kms.EncryptRequest{ID: "wp-envelope", Plaintext: []byte("m")})
		if err != nil {
			t.Fatal(err)
		}
		envelope = r.Ciphertext
	}
	for _, a := range s.algs {
		t.Run(string(a), func(t *testing.T) {
			id := idFor("wp", a)
			before := gen(t, k, id, a)
			for _, op := range s.purposeOps(envelope) {
				if op.need == purpose(a) {
					continue
				}
				wantErr(t, op.call(t, k, id), kms.ErrWrongPurpose, fmt.Sprintf("%s with an %s key", op.name, a))
			}
			if purpose(a) == kms.PurposeEncrypt {
				_, err := k.PublicKey(t.Context(), &kms.PublicKeyRequest{ID: id})
				wantErr(t, err, kms.ErrWrongPurpose, "PublicKey of an "+string(a)+" key")
			}
			if d := diffKey(getKey(t, k, id), before); d != "" {
				t.Errorf("refused operations changed the key: %s", d)
			}
		})
	}
}

func (s *suite) testMessageSize(t *testing.T) {
	k := s.newKMS(t)
	ctx := t.Context()
	big, over := make([]byte, kms.MaxMessageSize), make([]byte, kms.MaxMessageSize+1)
	if sigs := s.algsOf(kms.PurposeSign); len(sigs) > 0 {
		t.Run("Sign", func(t *testing.T) {
			a := sigs[len(sigs)-1]
			gen(t, k, "size-sig", a)
			_, err := k.Sign(ctx, &kms.SignRequest{ID: "size-sig", Message: over})
			wantErr(t, err, errdef.ErrInvalidArgument, "Sign of MaxMessageSize+1 bytes")
			_, err = k.Verify(ctx, &kms.VerifyRequest{ID: "size-sig", Message: over, Signature: make([]byte, 64)})
			wantErr(t, err, errdef.ErrInvalidArgument, "Verify of MaxMessageSize+1 bytes")
			r, err := k.Sign(ctx, &kms.SignRequest{ID: "size-sig", Message: big})
			if err != nil {
				t.Fatalf("Sign of MaxMessageSize bytes: %v", err)
			}
			pk := publicKey(t, k, "size-sig", 0)
			if ok, err := VerifyIndependently(a, pk.PublicKey, big, nil, r.Signature); !ok || err != nil {
				t.Errorf("signature of MaxMessageSize bytes does not verify independently: %v", err)
			}
		})
	}
	if s.supports(kms.AES256) {
		t.Run("Encrypt", func(t *testing.T) {
			gen(t, k, "size-aes", kms.AES256)
			_, err := k.Encrypt(ctx, &kms.EncryptRequest{ID: "size-aes", Plaintext: over})
			wantErr(t, err, errdef.ErrInvalidArgument, "Encrypt of MaxMessageSize+1 bytes")
			r, err := k.Encrypt(ctx, &kms.EncryptRequest{ID: "size-aes", Plaintext: big})
			if err != nil {
				t.Fatalf("Encrypt of MaxMessageSize bytes: %v", err)
			}
			d, err := k.Decrypt(ctx, &kms.DecryptRequest{ID: "size-aes", Ciphertext: r.Ciphertext})
			if err != nil || len(d.Plaintext) != kms.MaxMessageSize {
				t.Errorf("Decrypt of a MaxMessageSize envelope: %v", err)
			}
			// No envelope of a valid plaintext is this large.
			_, err = k.Decrypt(ctx, &kms.DecryptRequest{ID: "size-aes", Ciphertext: make([]byte, kms.MaxMessageSize+64<<10)})
			wantOneOf(t, err, "Decrypt of MaxMessageSize+64KiB bytes", errdef.ErrInvalidArgument, kms.ErrInvalidCiphertext)
		})
	}
}
