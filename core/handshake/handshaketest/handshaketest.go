// Package handshaketest is the test PKI of the tunnel handshake: ML-DSA-65
// keys (random or derived from a label, for reproducible vectors), a root
// CA and an issuing CA on internal/pqx509, agent and gateway certificates
// with the validity a test chooses, and a revocation set whose Revoked
// method is a handshake.ChainVerifierOptions.Revoked callback.
//
// It does not import core/handshake, so the handshake's own internal tests
// can use it too; a Key becomes a handshake.Signer through
// handshake.NewMLDSA65Signer(key.PrivateKey(), rnd).
//
// It is for tests only and must not be imported by production code: keys
// live in memory, certificate signatures are deterministic, and nothing is
// zeroized.
package handshaketest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"math/big"
	"sync"

	"github.com/cloudflare/circl/sign/mldsa/mldsa65"

	"github.com/avonzt/avon/internal/pqx509"
)

// Key is an ML-DSA-65 key pair. It is a pqx509.Signer for certificates;
// PrivateKey gives what handshake.NewMLDSA65Signer takes.
type Key struct {
	// Seed is the FIPS 204 seed the key was expanded from (what an agent's
	// key file holds).
	Seed [mldsa65.SeedSize]byte
	pk   *mldsa65.PublicKey
	sk   *mldsa65.PrivateKey
	raw  []byte
}

// NewKey draws a key seed from rnd (crypto/rand.Reader when nil).
func NewKey(rnd io.Reader) (*Key, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	var seed [mldsa65.SeedSize]byte
	if _, err := io.ReadFull(rnd, seed[:]); err != nil {
		return nil, fmt.Errorf("handshaketest: key seed: %w", err)
	}
	return KeyFromSeed(seed), nil
}

// KeyFromSeed expands seed into a key.
func KeyFromSeed(seed [mldsa65.SeedSize]byte) *Key {
	pk, sk := mldsa65.NewKeyFromSeed(&seed)
	raw, _ := pk.MarshalBinary() // cannot fail for a key circl made
	return &Key{Seed: seed, pk: pk, sk: sk, raw: raw}
}

// KeyFromLabel derives a fixed key from label: the seed is the SHA-256 of
// the label.
func KeyFromLabel(label string) *Key { return KeyFromSeed(sha256.Sum256([]byte(label))) }

// Public implements pqx509.Signer.
func (k *Key) Public() pqx509.PublicKey {
	return pqx509.PublicKey{Algorithm: pqx509.MLDSA65, Raw: k.Raw()}
}

// Raw returns a copy of the encoded public key (handshake.PublicKeyLen
// bytes), as InitiatorConfig.ResponderPublicKey and handshake.ResponderID
// take it.
func (k *Key) Raw() []byte { return append([]byte(nil), k.raw...) }

// PublicKey returns the circl public key.
func (k *Key) PublicKey() *mldsa65.PublicKey { return k.pk }

// PrivateKey returns a copy of the private key for
// handshake.NewMLDSA65Signer: the signer's Close clears the key it holds,
// which must not be the shared one.
func (k *Key) PrivateKey() *mldsa65.PrivateKey {
	sk := *k.sk
	return &sk
}

// Sign implements pqx509.Signer: pure ML-DSA-65, empty context,
// deterministic, so that certificates made from fixed keys are
// reproducible.
func (k *Key) Sign(_ context.Context, msg []byte) ([]byte, error) {
	sig := make([]byte, mldsa65.SignatureSize)
	if err := mldsa65.SignTo(k.sk, msg, nil, false, sig); err != nil {
		return nil, fmt.Errorf("handshaketest: sign: %w", err)
	}
	return sig, nil
}

// LabelKeys is an Options.Keys that derives every key from prefix+label
// (KeyFromLabel): the deterministic PKI of reproducible vectors.
func LabelKeys(prefix string) func(label string) (*Key, error) {
	return func(label string) (*Key, error) { return KeyFromLabel(prefix + label), nil }
}

// Revocations is a set of revoked serial numbers and a status error, safe
// for concurrent use. Its Revoked method is a
// handshake.ChainVerifierOptions.Revoked callback. The zero value is an
// empty set.
type Revocations struct {
	mu      sync.Mutex // guards revoked and err
	revoked map[string]bool
	err     error
}

// Revoke adds serial to the set.
func (r *Revocations) Revoke(serial *big.Int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.revoked == nil {
		r.revoked = map[string]bool{}
	}
	r.revoked[serial.String()] = true
}

// SetError makes Revoked fail with err (the status source is unavailable);
// nil restores the answers.
func (r *Revocations) SetError(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.err = err
}

// Revoked reports whether serial is in the set, or the error SetError
// gave.
func (r *Revocations) Revoked(serial *big.Int) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return false, r.err
	}
	return r.revoked[serial.String()], nil
}
