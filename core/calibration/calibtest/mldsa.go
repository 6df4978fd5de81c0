package calibtest

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/cloudflare/circl/sign/mldsa/mldsa65"

	"github.com/avonzt/avon/core/calibration"
)

// MLDSA65 is an in-memory ML-DSA-65 key that signs and verifies time
// attestations, standing in for the server's KMS-backed signer.
type MLDSA65 struct {
	keyID string
	sk    *mldsa65.PrivateKey
	pk    *mldsa65.PublicKey
}

// NewMLDSA65 derives a key from seed, or generates one when seed is nil.
func NewMLDSA65(keyID string, seed *[mldsa65.SeedSize]byte) (*MLDSA65, error) {
	k := &MLDSA65{keyID: keyID}
	if seed != nil {
		k.pk, k.sk = mldsa65.NewKeyFromSeed(seed)
		return k, nil
	}
	var err error
	k.pk, k.sk, err = mldsa65.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate ML-DSA-65 key: %w", err)
	}
	return k, nil
}

// Algorithm returns "ML-DSA-65".
func (k *MLDSA65) Algorithm() string { return "ML-DSA-65" }

// KeyID returns the key id given to NewMLDSA65.
func (k *MLDSA65) KeyID() string { return k.keyID }

// Sign signs msg (hedged, empty context string).
func (k *MLDSA65) Sign(ctx context.Context, msg []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	sig := make([]byte, mldsa65.SignatureSize)
	if err := mldsa65.SignTo(k.sk, msg, nil, true, sig); err != nil {
		return nil, err
	}
	return sig, nil
}

// ErrUnknownKey: Verify was asked about another key id.
var ErrUnknownKey = errors.New("unknown time attestation key")

// ErrInvalid: the signature does not verify.
var ErrInvalid = errors.New("ML-DSA-65 signature does not verify")

// Verify checks sig over msg by this key.
func (k *MLDSA65) Verify(keyID string, msg, sig []byte) error {
	if keyID != k.keyID {
		return fmt.Errorf("%w %q", ErrUnknownKey, keyID)
	}
	if !mldsa65.Verify(k.pk, msg, nil, sig) {
		return ErrInvalid
	}
	return nil
}

var (
	_ calibration.Signer   = (*MLDSA65)(nil)
	_ calibration.Verifier = (*MLDSA65)(nil)
)
