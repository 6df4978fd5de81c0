package ca

import (
	"context"
	"errors"
	"fmt"

	"github.com/avonzt/avon/internal/pqx509"
	"github.com/avonzt/avon/sdk/kms"
	"github.com/avonzt/avon/sdk/pqc"
)

// kmsSigner signs with a key held by the wired KMS plugin; the private key
// never reaches the CA.
type kmsSigner struct {
	kms     kms.KMS
	id      string
	version int
	pub     pqx509.PublicKey
}

func newKMSSigner(ctx context.Context, k kms.KMS, id string) (*kmsSigner, error) {
	resp, err := k.GetKey(ctx, &kms.GetKeyRequest{ID: id})
	if err != nil {
		return nil, fmt.Errorf("issuer key %s: %w", id, err)
	}
	v := resp.Key.PrimaryVersion
	var raw []byte
	for _, kv := range resp.Key.Versions {
		if kv.Version == v {
			raw = kv.PublicKey
		}
	}
	if raw == nil {
		return nil, fmt.Errorf("issuer key %s has no public key for version %d", id, v)
	}
	return &kmsSigner{kms: k, id: id, version: v, pub: pqx509.PublicKey{Algorithm: string(resp.Key.Algorithm), Raw: raw}}, nil
}

func (s *kmsSigner) Public() pqx509.PublicKey { return s.pub }

func (s *kmsSigner) Sign(ctx context.Context, msg []byte) ([]byte, error) {
	resp, err := s.kms.Sign(ctx, &kms.SignRequest{ID: s.id, Message: msg})
	if err != nil {
		return nil, fmt.Errorf("sign with issuer key %s: %w", s.id, err)
	}
	if resp.Version != s.version {
		// A rotated key signs with a key the issuer certificate does not
		// name: refuse rather than issue something that will not verify.
		return nil, fmt.Errorf("issuer key %s is at version %d, the issuer certificate names version %d: rotate the issuer (avon ca rotate)",
			s.id, resp.Version, s.version)
	}
	return resp.Signature, nil
}

// pqcSigner signs with an algorithm the KMS does not have (SLH-DSA, say)
// through a pqc plugin. Its private key exists only encrypted under a KMS
// AES-256 key (wrapped), is decrypted for one signature and then zeroized.
type pqcSigner struct {
	kms     kms.KMS
	pqc     pqc.Provider
	alg     string
	wrapKey string
	wrapped []byte // KMS Encrypt output
	aad     []byte
	pub     pqx509.PublicKey
}

func (s *pqcSigner) Public() pqx509.PublicKey { return s.pub }

func (s *pqcSigner) Sign(ctx context.Context, msg []byte) ([]byte, error) {
	d, err := s.kms.Decrypt(ctx, &kms.DecryptRequest{ID: s.wrapKey, Ciphertext: s.wrapped, AAD: s.aad})
	if err != nil {
		return nil, fmt.Errorf("unwrap %s issuer key: %w", s.alg, err)
	}
	defer clear(d.Plaintext)
	resp, err := s.pqc.Sign(ctx, &pqc.SignRequest{Algorithm: s.alg, PrivateKey: d.Plaintext, Message: msg})
	if err != nil {
		return nil, fmt.Errorf("sign with the %s issuer key: %w", s.alg, err)
	}
	return resp.Signature, nil
}

// generatePQCKey makes a key pair in the pqc plugin and wraps the private
// half under the KMS AES key wrapKey at once.
func generatePQCKey(ctx context.Context, k kms.KMS, p pqc.Provider, alg, wrapKey string, aad []byte) (pub, wrapped []byte, err error) {
	if p == nil {
		return nil, nil, fmt.Errorf("algorithm %s needs a pqc plugin: wire one with uses = { pqc = \"<name>\" }", alg)
	}
	g, err := p.GenerateKey(ctx, &pqc.GenerateKeyRequest{Algorithm: alg})
	if err != nil {
		return nil, nil, fmt.Errorf("generate %s key: %w", alg, err)
	}
	defer clear(g.PrivateKey)
	e, err := k.Encrypt(ctx, &kms.EncryptRequest{ID: wrapKey, Plaintext: g.PrivateKey, AAD: aad})
	if err != nil {
		return nil, nil, fmt.Errorf("wrap %s key under %s: %w", alg, wrapKey, err)
	}
	return g.PublicKey, e.Ciphertext, nil
}

// ensureKMSKey returns the KMS key id, generating it with alg when absent.
func ensureKMSKey(ctx context.Context, k kms.KMS, id string, alg kms.Algorithm, labels map[string]string) error {
	resp, err := k.GetKey(ctx, &kms.GetKeyRequest{ID: id})
	if err == nil {
		if resp.Key.Algorithm != alg {
			return fmt.Errorf("key %s exists as %s, want %s", id, resp.Key.Algorithm, alg)
		}
		return nil
	}
	if !errors.Is(err, kms.ErrKeyNotFound) {
		return fmt.Errorf("key %s: %w", id, err)
	}
	_, err = k.GenerateKey(ctx, &kms.GenerateKeyRequest{ID: id, Algorithm: alg, Labels: labels})
	if errors.Is(err, kms.ErrKeyExists) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("generate %s key %s: %w", alg, id, err)
	}
	return nil
}
