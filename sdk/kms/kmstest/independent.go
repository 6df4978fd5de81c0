package kmstest

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/sha512"
	"fmt"

	"github.com/cloudflare/circl/kem"
	"github.com/cloudflare/circl/kem/mlkem/mlkem1024"
	"github.com/cloudflare/circl/kem/mlkem/mlkem768"
	"github.com/cloudflare/circl/kem/xwing"
	"github.com/cloudflare/circl/sign/mldsa/mldsa44"
	"github.com/cloudflare/circl/sign/mldsa/mldsa65"
	"github.com/cloudflare/circl/sign/mldsa/mldsa87"

	"github.com/avonzt/avon/sdk/kms"
)

// PublicKeySizes are the raw public key sizes the protocol fixes for each
// algorithm (FIPS 204, FIPS 203, the X-Wing draft, SEC 1 uncompressed
// points, RFC 8032). AES-256 has none.
var PublicKeySizes = map[kms.Algorithm]int{
	kms.MLDSA44:   1312,
	kms.MLDSA65:   1952,
	kms.MLDSA87:   2592,
	kms.MLKEM768:  1184,
	kms.MLKEM1024: 1568,
	kms.XWing:     1216,
	kms.ECDSAP256: 65,
	kms.ECDSAP384: 97,
	kms.Ed25519:   32,
}

// VerifyIndependently checks sig over msg with the raw public key pub using
// circl or the Go standard library, never the backend: ML-DSA in pure mode
// with context ctx, ECDSA over SHA-256 (P-256) or SHA-384 (P-384) with an
// ASN.1 DER signature, Ed25519 per RFC 8032. An error means pub is not a
// valid public key of algorithm a.
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
		if len(ctx) > 0 {
			return false, fmt.Errorf("%s takes no context", a)
		}
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
		if len(ctx) > 0 {
			return false, fmt.Errorf("%s takes no context", a)
		}
		if len(pub) != ed25519.PublicKeySize {
			return false, fmt.Errorf("ed25519 public key of %d bytes", len(pub))
		}
		return ed25519.Verify(pub, msg, sig), nil
	}
	return false, fmt.Errorf("no independent verifier for %s", a)
}

func kemScheme(a kms.Algorithm) (kem.Scheme, error) {
	switch a {
	case kms.MLKEM768:
		return mlkem768.Scheme(), nil
	case kms.MLKEM1024:
		return mlkem1024.Scheme(), nil
	case kms.XWing:
		return xwing.Scheme(), nil
	}
	return nil, fmt.Errorf("%s is not a KEM", a)
}

// EncapsulateIndependently encapsulates to the raw public key pub with
// circl, drawing randomness from crypto/rand.
func EncapsulateIndependently(a kms.Algorithm, pub []byte) (ct, ss []byte, err error) {
	sch, err := kemScheme(a)
	if err != nil {
		return nil, nil, err
	}
	pk, err := sch.UnmarshalBinaryPublicKey(pub)
	if err != nil {
		return nil, nil, err
	}
	return sch.Encapsulate(pk)
}

// PublicFromPrivate derives the raw public key from exported private
// material in the forms kms.ExportKeyResponse specifies: ML-DSA 32-byte seed
// ξ, ML-KEM 64-byte seed d||z, X-Wing 32-byte seed, ECDSA big-endian scalar,
// Ed25519 32-byte seed. AES-256 has no public key.
func PublicFromPrivate(a kms.Algorithm, priv []byte) ([]byte, error) {
	switch a {
	case kms.MLDSA44, kms.MLDSA65, kms.MLDSA87:
		if len(priv) != 32 {
			return nil, fmt.Errorf("%s seed of %d bytes, want 32", a, len(priv))
		}
		var seed [32]byte
		copy(seed[:], priv)
		switch a {
		case kms.MLDSA44:
			pk, _ := mldsa44.NewKeyFromSeed(&seed)
			return pk.Bytes(), nil
		case kms.MLDSA65:
			pk, _ := mldsa65.NewKeyFromSeed(&seed)
			return pk.Bytes(), nil
		default:
			pk, _ := mldsa87.NewKeyFromSeed(&seed)
			return pk.Bytes(), nil
		}
	case kms.MLKEM768, kms.MLKEM1024, kms.XWing:
		sch, _ := kemScheme(a)
		if len(priv) != sch.SeedSize() {
			return nil, fmt.Errorf("%s seed of %d bytes, want %d", a, len(priv), sch.SeedSize())
		}
		pk, _ := sch.DeriveKeyPair(priv)
		return pk.MarshalBinary()
	case kms.ECDSAP256, kms.ECDSAP384:
		curve := elliptic.P256()
		if a == kms.ECDSAP384 {
			curve = elliptic.P384()
		}
		k, err := ecdsa.ParseRawPrivateKey(curve, priv)
		if err != nil {
			return nil, err
		}
		return k.PublicKey.Bytes()
	case kms.Ed25519:
		if len(priv) != ed25519.SeedSize {
			return nil, fmt.Errorf("ed25519 seed of %d bytes", len(priv))
		}
		return ed25519.NewKeyFromSeed(priv).Public().(ed25519.PublicKey), nil
	}
	return nil, fmt.Errorf("%s has no public key", a)
}
