package kmstest

import (
	"bytes"
	"testing"

	"github.com/avonzt/avon/sdk/kms"
)

// artifact is what one key version produced: a signature, a KEM
// ciphertext and secret, or an envelope; checks later prove the version
// still works or that it is destroyed.
type artifact struct {
	alg     kms.Algorithm
	version int
	pub     []byte // public key of version (nil for AES-256)

	msg, ctx, sig []byte // signing
	ct, ss        []byte // KEM
	env, aad, pt  []byte // envelope
}

// sigContext is the context string the suite signs with: non-empty for
// ML-DSA (so context handling is exercised), none for the others.
func sigContext(a kms.Algorithm) []byte {
	if isMLDSA(a) {
		return []byte("avon kmstest context")
	}
	return nil
}

// use makes an artifact with the primary version of key id, checking it
// independently where the algorithm allows.
func use(t *testing.T, k kms.KMS, id string, a kms.Algorithm, tag string) artifact {
	t.Helper()
	ctx := t.Context()
	art := artifact{alg: a}
	switch purpose(a) {
	case kms.PurposeSign:
		art.msg, art.ctx = []byte("kmstest message "+tag+" for "+id), sigContext(a)
		r, err := k.Sign(ctx, &kms.SignRequest{ID: id, Message: art.msg, Context: art.ctx})
		if err != nil {
			t.Fatalf("Sign with %q: %v", id, err)
		}
		art.sig, art.version = r.Signature, r.Version
		art.pub = publicKey(t, k, id, art.version).PublicKey
		if ok, err := VerifyIndependently(a, art.pub, art.msg, art.ctx, art.sig); err != nil || !ok {
			t.Fatalf("signature by %q version %d does not verify independently: ok=%v err=%v", id, art.version, ok, err)
		}
	case kms.PurposeKEM:
		pk := publicKey(t, k, id, 0)
		art.version, art.pub = pk.Version, pk.PublicKey
		var err error
		if art.ct, art.ss, err = EncapsulateIndependently(a, art.pub); err != nil {
			t.Fatalf("encapsulate to %q version %d: %v", id, art.version, err)
		}
	case kms.PurposeEncrypt:
		art.pt, art.aad = []byte("kmstest plaintext "+tag+" for "+id), []byte("aad "+tag)
		r, err := k.Encrypt(ctx, &kms.EncryptRequest{ID: id, Plaintext: art.pt, AAD: art.aad})
		if err != nil {
			t.Fatalf("Encrypt with %q: %v", id, err)
		}
		art.env, art.version = r.Ciphertext, r.Version
	}
	if art.version < 1 {
		t.Fatalf("%q: the backend reported version %d for the primary", id, art.version)
	}
	return art
}

// works checks that the version that made art still verifies, decapsulates
// or decrypts it, naming the version explicitly.
func works(t *testing.T, k kms.KMS, id string, art artifact) {
	t.Helper()
	ctx := t.Context()
	switch purpose(art.alg) {
	case kms.PurposeSign:
		r, err := k.Verify(ctx, &kms.VerifyRequest{ID: id, Version: art.version, Message: art.msg, Context: art.ctx, Signature: art.sig})
		if err != nil || !r.Valid {
			t.Errorf("Verify %q version %d: valid=%v err=%v, want valid", id, art.version, r != nil && r.Valid, err)
		}
		if pk := publicKey(t, k, id, art.version); !bytes.Equal(pk.PublicKey, art.pub) || pk.Version != art.version {
			t.Errorf("PublicKey %q version %d changed (reported version %d)", id, art.version, pk.Version)
		}
	case kms.PurposeKEM:
		r, err := k.Decapsulate(ctx, &kms.DecapsulateRequest{ID: id, Version: art.version, Ciphertext: art.ct})
		if err != nil || !bytes.Equal(r.SharedSecret, art.ss) {
			t.Errorf("Decapsulate %q version %d: err=%v, or a secret other than the encapsulated one", id, art.version, err)
		}
	case kms.PurposeEncrypt:
		r, err := k.Decrypt(ctx, &kms.DecryptRequest{ID: id, Ciphertext: art.env, AAD: art.aad})
		if err != nil || !bytes.Equal(r.Plaintext, art.pt) {
			t.Errorf("Decrypt %q (version %d ciphertext): err=%v, or another plaintext", id, art.version, err)
		}
	}
}

// gone checks that every operation on the version that made art fails with
// kms.ErrKeyDestroyed.
func gone(t *testing.T, k kms.KMS, id string, art artifact) {
	t.Helper()
	ctx := t.Context()
	var err error
	switch purpose(art.alg) {
	case kms.PurposeSign:
		_, err = k.Verify(ctx, &kms.VerifyRequest{ID: id, Version: art.version, Message: art.msg, Context: art.ctx, Signature: art.sig})
		wantErr(t, err, kms.ErrKeyDestroyed, "Verify with a destroyed version")
		_, err = k.PublicKey(ctx, &kms.PublicKeyRequest{ID: id, Version: art.version})
		wantErr(t, err, kms.ErrKeyDestroyed, "PublicKey of a destroyed version")
	case kms.PurposeKEM:
		_, err = k.Decapsulate(ctx, &kms.DecapsulateRequest{ID: id, Version: art.version, Ciphertext: art.ct})
		wantErr(t, err, kms.ErrKeyDestroyed, "Decapsulate with a destroyed version")
		_, err = k.PublicKey(ctx, &kms.PublicKeyRequest{ID: id, Version: art.version})
		wantErr(t, err, kms.ErrKeyDestroyed, "PublicKey of a destroyed version")
	case kms.PurposeEncrypt:
		_, err = k.Decrypt(ctx, &kms.DecryptRequest{ID: id, Ciphertext: art.env, AAD: art.aad})
		wantErr(t, err, kms.ErrKeyDestroyed, "Decrypt of a destroyed version's ciphertext")
	}
}
