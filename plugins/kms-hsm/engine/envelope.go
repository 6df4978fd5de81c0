package engine

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/avonzt/avon/sdk/kms"
)

// Envelope ciphertexts made by Encrypt (AES-256 keys, GCM inside the
// token):
//
//	offset size field
//	0      1    envelope version (1)
//	1      4    key version (u32, big-endian)
//	5      12   AES-GCM IV (host RNG)
//	17     ...  AES-256-GCM ciphertext, 16-byte tag last
//
// AAD = "avon kms-hsm envelope v1\x00" || len(ID) (u16) || ID || version
// (u32) || the caller's AAD. IVs are random: rotate a key well before it
// seals 2^32 messages (NIST SP 800-38D, 8.3).
const (
	envelopeV1       = 1
	envelopeHeader   = 1 + 4 + gcmIVLen
	envelopeOverhead = envelopeHeader + gcmTagLen
	envelopeLabel    = "avon kms-hsm envelope v1\x00"
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
func (e *Engine) Encrypt(ctx context.Context, req *kms.EncryptRequest) (*kms.EncryptResponse, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := checkSize("plaintext", len(req.Plaintext), kms.MaxMessageSize); err != nil {
		return nil, err
	}
	if err := checkSize("AAD", len(req.AAD), kms.MaxMessageSize); err != nil {
		return nil, err
	}
	r, _, err := e.load(ctx, req.ID)
	if err != nil {
		return nil, err
	}
	if err := r.wantPurpose(kms.PurposeEncrypt); err != nil {
		return nil, err
	}
	v, err := r.version(0)
	if err != nil {
		return nil, err
	}
	out := make([]byte, envelopeHeader, envelopeOverhead+len(req.Plaintext))
	out[0] = envelopeV1
	binary.BigEndian.PutUint32(out[1:], uint32(v.Version))
	if _, err := e.rand.Read(out[5:envelopeHeader]); err != nil {
		return nil, fmt.Errorf("encrypt with key %q: draw IV: %w", req.ID, err)
	}
	ct, err := e.sealInToken(ctx, keyObject(v.Object, objectClass(r.Algorithm)), out[5:envelopeHeader], req.Plaintext, envelopeAAD(req.ID, v.Version, req.AAD))
	if err != nil {
		return nil, e.raced(ctx, r.ID, v.Version, tokenErr(fmt.Sprintf("encrypt with key %q version %d", req.ID, v.Version), err))
	}
	return &kms.EncryptResponse{Ciphertext: append(out, ct...), Version: v.Version}, nil
}

// Decrypt implements kms.KMS. A ciphertext that names a version the key
// never had does not authenticate (kms.ErrInvalidCiphertext); one that
// names a destroyed version fails with kms.ErrKeyDestroyed.
func (e *Engine) Decrypt(ctx context.Context, req *kms.DecryptRequest) (*kms.DecryptResponse, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := checkSize("ciphertext", len(req.Ciphertext), kms.MaxMessageSize+envelopeOverhead); err != nil {
		return nil, err
	}
	if err := checkSize("AAD", len(req.AAD), kms.MaxMessageSize); err != nil {
		return nil, err
	}
	r, _, err := e.load(ctx, req.ID)
	if err != nil {
		return nil, err
	}
	if err := r.wantPurpose(kms.PurposeEncrypt); err != nil {
		return nil, err
	}
	c := req.Ciphertext
	if len(c) < envelopeOverhead || c[0] != envelopeV1 {
		return nil, fmt.Errorf("decrypt with key %q: malformed envelope: %w", req.ID, kms.ErrInvalidCiphertext)
	}
	raw := binary.BigEndian.Uint32(c[1:])
	if raw == 0 || raw > uint32(len(r.Versions)) {
		return nil, fmt.Errorf("decrypt with key %q: envelope names version %d: %w", req.ID, raw, kms.ErrInvalidCiphertext)
	}
	v, err := r.version(int(raw))
	if err != nil {
		return nil, err
	}
	pt, err := e.openInToken(ctx, keyObject(v.Object, objectClass(r.Algorithm)), c[5:envelopeHeader], c[envelopeHeader:], envelopeAAD(req.ID, v.Version, req.AAD))
	if errors.Is(err, errAuth) {
		return nil, fmt.Errorf("decrypt with key %q version %d: %w", req.ID, v.Version, kms.ErrInvalidCiphertext)
	}
	if err != nil {
		return nil, e.raced(ctx, r.ID, v.Version, tokenErr(fmt.Sprintf("decrypt with key %q version %d", req.ID, v.Version), err))
	}
	return &kms.DecryptResponse{Plaintext: pt}, nil
}
