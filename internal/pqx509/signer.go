package pqx509

import (
	"context"
	"crypto"
	"crypto/rsa"
	_ "crypto/sha256" // RSA-SHA256
	_ "crypto/sha512" // RSA-SHA384, RSA-SHA512
	"errors"
	"fmt"
	"strings"

	"github.com/cloudflare/circl/sign/slhdsa"

	"github.com/avonzt/avon/internal/sigverify"
)

// Signer signs the DER the package builds. The CA implements it over a KMS
// or pqc plugin so the private key never leaves it.
type Signer interface {
	// Public returns the signing key. It must be the issuer certificate's
	// key (or the subject key of a self-signed certificate or a CSR).
	Public() PublicKey
	// Sign signs msg with the key's algorithm exactly as the KMS does:
	// ML-DSA and SLH-DSA in pure mode with an empty context, ECDSA over
	// SHA-256 (P-256) or SHA-384 (P-384) with an ASN.1 DER signature,
	// Ed25519 as RFC 8032.
	Sign(ctx context.Context, msg []byte) ([]byte, error)
}

// Verifier checks a signature made by a key of algorithm alg (a key
// algorithm name: "ML-DSA-65", "ECDSA-P384", "SLH-DSA-SHA2-128s", ...) with
// the public key bytes pub, over msg. For RSA keys, whose hash the key does
// not fix, alg is the signature algorithm ("RSA-SHA256", "RSA-SHA384",
// "RSA-SHA512": PKCS#1 v1.5) and pub the PKCS#1 key. It returns nil only
// for a valid signature.
type Verifier interface {
	Verify(alg string, pub, msg, sig []byte) error
}

// DefaultVerifier verifies ML-DSA, ECDSA and Ed25519 with the core's
// offline verifier (internal/sigverify) and SLH-DSA with circl, all with an
// empty context.
var DefaultVerifier Verifier = defaultVerifier{}

type defaultVerifier struct{}

func (defaultVerifier) Verify(alg string, pub, msg, sig []byte) error {
	if strings.HasPrefix(alg, "SLH-DSA-") {
		return verifySLHDSA(alg, pub, msg, sig)
	}
	if isRSA(alg) {
		return verifyRSA(alg, pub, msg, sig)
	}
	err := sigverify.Verify(alg, pub, msg, nil, sig)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, sigverify.ErrUnsupported):
		return fmt.Errorf("pqx509: %s: %w", alg, ErrUnsupportedAlgorithm)
	case errors.Is(err, sigverify.ErrBadKey):
		return fmt.Errorf("pqx509: %s: %w", alg, ErrBadKey)
	}
	return fmt.Errorf("pqx509: %s: %w", alg, ErrBadSignature)
}

func verifySLHDSA(alg string, pub, msg, sig []byte) error {
	id, err := slhdsa.IDByName(alg)
	if err != nil || id.String() != alg {
		return fmt.Errorf("pqx509: %q: %w", alg, ErrUnsupportedAlgorithm)
	}
	if k, ok := keyAlgs[alg]; !ok || len(pub) != k.keyLen {
		return fmt.Errorf("pqx509: %s public key of %d bytes: %w", alg, len(pub), ErrBadKey)
	}
	pk := slhdsa.PublicKey{ID: id}
	if pk.UnmarshalBinary(pub) != nil {
		return fmt.Errorf("pqx509: %s public key: %w", alg, ErrBadKey)
	}
	if !slhdsa.Verify(&pk, slhdsa.NewMessage(msg), sig, nil) {
		return fmt.Errorf("pqx509: %s: %w", alg, ErrBadSignature)
	}
	return nil
}

// verifyRSA checks an RSASSA-PKCS1-v1_5 signature; alg names the hash.
func verifyRSA(alg string, pub, msg, sig []byte) error {
	var h crypto.Hash
	switch alg {
	case RSAWithSHA256:
		h = crypto.SHA256
	case RSAWithSHA384:
		h = crypto.SHA384
	case RSAWithSHA512:
		h = crypto.SHA512
	default:
		return fmt.Errorf("pqx509: %q (an RSA key verifies by signature algorithm): %w", alg, ErrUnsupportedAlgorithm)
	}
	pk, _, err := parseRSAKey(pub)
	if err != nil {
		return fmt.Errorf("pqx509: %s: %w", alg, err)
	}
	d := h.New()
	d.Write(msg)
	if rsa.VerifyPKCS1v15(pk, h, d.Sum(nil), sig) != nil {
		return fmt.Errorf("pqx509: %s: %w", alg, ErrBadSignature)
	}
	return nil
}

// verifyWith checks sig over msg made with sigAlgName by key.
func verifyWith(v Verifier, sigAlgName string, key PublicKey, msg, sig []byte) error {
	if v == nil {
		v = DefaultVerifier
	}
	if err := checkSigAlgKey(sigAlgName, key); err != nil {
		return err
	}
	alg := key.Algorithm
	if isRSA(alg) {
		alg = sigAlgName // the hash is the signature's
	}
	if err := v.Verify(alg, key.Raw, msg, sig); err != nil {
		if errors.Is(err, ErrBadSignature) || errors.Is(err, ErrBadKey) || errors.Is(err, ErrUnsupportedAlgorithm) {
			return err
		}
		return fmt.Errorf("%v: %w", err, ErrBadSignature)
	}
	return nil
}

// sign runs the signer and checks its output verifies with its own key, so
// a broken or mismatched signer never yields a structure that fails later.
func sign(ctx context.Context, signer Signer, tbs []byte) ([]byte, error) {
	pub := signer.Public()
	if isRSA(pub.Algorithm) {
		return nil, fmt.Errorf("pqx509: sign with %s: RSA keys are subject keys only: %w", pub.Algorithm, ErrUnsupportedAlgorithm)
	}
	sig, err := signer.Sign(ctx, tbs)
	if err != nil {
		return nil, fmt.Errorf("pqx509: sign: %w", err)
	}
	if err := DefaultVerifier.Verify(pub.Algorithm, pub.Raw, tbs, sig); err != nil {
		return nil, fmt.Errorf("pqx509: signer's signature does not verify with its own key (%v): %w", err, ErrSignerMismatch)
	}
	return sig, nil
}
