package keystore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/avonzt/avon/sdk/kms"
)

// Envelope ciphertexts made by Encrypt:
//
//	offset size field
//	0      1    envelope version (1)
//	1      4    key version (uint32, big-endian)
//	5      12   AES-GCM nonce (from the host RNG)
//	17     ...  AES-256-GCM sealed plaintext, 16-byte tag last
//
// The GCM additional data binds the ciphertext to the key and the version:
// "avon kms-soft envelope v1\x00" || len(ID) (u16) || ID || version (u32) ||
// the caller's AAD. Nonces are random, so one key version must not seal more
// than 2^32 messages (NIST SP 800-38D, 8.3); rotate well before that.
const (
	envelopeV1       = 1
	envelopeHeader   = 1 + 4 + 12
	envelopeOverhead = envelopeHeader + 16
	envelopeLabel    = "avon kms-soft envelope v1\x00"
)

func envelopeAAD(id string, version int, aad []byte) []byte {
	b := make([]byte, 0, len(envelopeLabel)+2+len(id)+4+len(aad))
	b = append(b, envelopeLabel...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(id)))
	b = append(b, id...)
	b = binary.BigEndian.AppendUint32(b, uint32(version))
	return append(b, aad...)
}

// Encrypt implements kms.KMS.
func (ks *Keystore) Encrypt(ctx context.Context, req *kms.EncryptRequest) (*kms.EncryptResponse, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := checkSize("plaintext", len(req.Plaintext), kms.MaxMessageSize); err != nil {
		return nil, err
	}
	if err := checkSize("AAD", len(req.AAD), kms.MaxMessageSize); err != nil {
		return nil, err
	}
	ks.state.RLock()
	defer ks.state.RUnlock()
	e, err := ks.entryRLocked(req.ID)
	if err != nil {
		return nil, err
	}
	if err := e.wantPurpose(kms.PurposeEncrypt); err != nil {
		return nil, err
	}
	v, m, err := e.version(0)
	if err != nil {
		return nil, err
	}
	out := make([]byte, envelopeHeader, envelopeOverhead+len(req.Plaintext))
	out[0] = envelopeV1
	binary.BigEndian.PutUint32(out[1:], uint32(v))
	if _, err := ks.rand.Read(out[5:envelopeHeader]); err != nil {
		return nil, fmt.Errorf("encrypt with key %q: draw nonce: %w", req.ID, err)
	}
	out = m.aead.Seal(out, out[5:envelopeHeader], req.Plaintext, envelopeAAD(req.ID, v, req.AAD))
	return &kms.EncryptResponse{Ciphertext: out, Version: v}, nil
}

// Decrypt implements kms.KMS. A ciphertext that names a version the key
// never had does not authenticate (kms.ErrInvalidCiphertext); one that names
// a destroyed version fails with kms.ErrKeyDestroyed.
func (ks *Keystore) Decrypt(ctx context.Context, req *kms.DecryptRequest) (*kms.DecryptResponse, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := checkSize("ciphertext", len(req.Ciphertext), kms.MaxMessageSize+envelopeOverhead); err != nil {
		return nil, err
	}
	if err := checkSize("AAD", len(req.AAD), kms.MaxMessageSize); err != nil {
		return nil, err
	}
	ks.state.RLock()
	defer ks.state.RUnlock()
	e, err := ks.entryRLocked(req.ID)
	if err != nil {
		return nil, err
	}
	if err := e.wantPurpose(kms.PurposeEncrypt); err != nil {
		return nil, err
	}
	c := req.Ciphertext
	if len(c) < envelopeOverhead || c[0] != envelopeV1 {
		return nil, fmt.Errorf("decrypt with key %q: malformed envelope: %w", req.ID, kms.ErrInvalidCiphertext)
	}
	raw := binary.BigEndian.Uint32(c[1:])
	if raw == 0 || raw > uint32(len(e.meta.Versions)) {
		return nil, fmt.Errorf("decrypt with key %q: envelope names version %d: %w", req.ID, raw, kms.ErrInvalidCiphertext)
	}
	v, m, err := e.version(int(raw))
	if err != nil {
		if errors.Is(err, kms.ErrVersionNotFound) {
			err = fmt.Errorf("%v: %w", err, kms.ErrInvalidCiphertext)
		}
		return nil, err
	}
	pt, err := m.aead.Open(nil, c[5:envelopeHeader], c[envelopeHeader:], envelopeAAD(req.ID, v, req.AAD))
	if err != nil {
		return nil, fmt.Errorf("decrypt with key %q version %d: %w", req.ID, v, kms.ErrInvalidCiphertext)
	}
	return &kms.DecryptResponse{Plaintext: pt}, nil
}
