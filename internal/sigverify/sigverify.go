// Package sigverify checks signatures made by a KMS key, given only the
// algorithm name and the public key bytes the KMS reported. The core uses it
// where it must verify offline, without a plugin: audit checkpoints in
// `avon audit verify`, time attestations presented back to it.
//
// Algorithms and encodings are the KMS protocol's (sdk/kms): ML-DSA in pure
// mode with the given context, Ed25519 (RFC 8032), ECDSA over SHA-256/384
// with an ASN.1 DER signature and an uncompressed SEC 1 point as public key.
package sigverify

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"fmt"

	"github.com/cloudflare/circl/sign/mldsa/mldsa44"
	"github.com/cloudflare/circl/sign/mldsa/mldsa65"
	"github.com/cloudflare/circl/sign/mldsa/mldsa87"
)

var (
	// ErrBadSignature means the signature does not verify.
	ErrBadSignature = errors.New("signature does not verify")
	// ErrBadKey means the public key cannot be parsed for the algorithm.
	ErrBadKey = errors.New("malformed public key")
	// ErrUnsupported means the algorithm is not a signature algorithm this
	// package knows.
	ErrUnsupported = errors.New("unsupported signature algorithm")
)

// MaxContext is the longest ML-DSA context string (FIPS 204).
const MaxContext = 255

// Verify checks sig over msg with the public key pub of algorithm alg.
func Verify(alg string, pub, msg, ctx, sig []byte) error {
	switch alg {
	case "ML-DSA-44", "ML-DSA-65", "ML-DSA-87":
		if len(ctx) > MaxContext {
			return fmt.Errorf("%s: context of %d bytes exceeds %d: %w", alg, len(ctx), MaxContext, ErrBadSignature)
		}
		var ok bool
		switch alg {
		case "ML-DSA-44":
			var pk mldsa44.PublicKey
			if len(pub) != mldsa44.PublicKeySize || pk.UnmarshalBinary(pub) != nil {
				return fmt.Errorf("%s public key of %d bytes: %w", alg, len(pub), ErrBadKey)
			}
			ok = mldsa44.Verify(&pk, msg, ctx, sig)
		case "ML-DSA-65":
			var pk mldsa65.PublicKey
			if len(pub) != mldsa65.PublicKeySize || pk.UnmarshalBinary(pub) != nil {
				return fmt.Errorf("%s public key of %d bytes: %w", alg, len(pub), ErrBadKey)
			}
			ok = mldsa65.Verify(&pk, msg, ctx, sig)
		default:
			var pk mldsa87.PublicKey
			if len(pub) != mldsa87.PublicKeySize || pk.UnmarshalBinary(pub) != nil {
				return fmt.Errorf("%s public key of %d bytes: %w", alg, len(pub), ErrBadKey)
			}
			ok = mldsa87.Verify(&pk, msg, ctx, sig)
		}
		if !ok {
			return fmt.Errorf("%s: %w", alg, ErrBadSignature)
		}
		return nil
	case "Ed25519":
		if len(pub) != ed25519.PublicKeySize {
			return fmt.Errorf("%s public key of %d bytes: %w", alg, len(pub), ErrBadKey)
		}
		if len(ctx) != 0 || !ed25519.Verify(ed25519.PublicKey(pub), msg, sig) {
			return fmt.Errorf("%s: %w", alg, ErrBadSignature)
		}
		return nil
	case "ECDSA-P256", "ECDSA-P384":
		curve := elliptic.P256()
		if alg == "ECDSA-P384" {
			curve = elliptic.P384()
		}
		pk, err := ecdsa.ParseUncompressedPublicKey(curve, pub)
		if err != nil {
			return fmt.Errorf("%s public key: %v: %w", alg, err, ErrBadKey)
		}
		var digest []byte
		if alg == "ECDSA-P256" {
			d := sha256.Sum256(msg)
			digest = d[:]
		} else {
			d := sha512.Sum384(msg)
			digest = d[:]
		}
		if len(ctx) != 0 || !ecdsa.VerifyASN1(pk, digest, sig) {
			return fmt.Errorf("%s: %w", alg, ErrBadSignature)
		}
		return nil
	}
	return fmt.Errorf("%q: %w", alg, ErrUnsupported)
}
