package engine

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/avonzt/avon/sdk/kms"
)

// Wrapped seeds, as stored in a version record's "wrapped" field:
//
//	offset size field
//	0      1    format (1)
//	1      12   AES-GCM IV (host RNG)
//	13     n    AES-256-GCM(wrap key, IV, seed, AAD) — encrypted inside the token
//	13+n   16   GCM tag
//
// AAD = "avon kms-hsm seed v1\x00" || len(ID) (u16) || ID || version (u32)
// || len(algorithm) (u8) || algorithm, so a wrapped seed moved to another
// key, version or algorithm does not open.
const (
	wrapFormatV1 = 1
	gcmIVLen     = 12
	gcmTagLen    = gcmTagBits / 8
	seedAADLabel = "avon kms-hsm seed v1\x00"
)

// wrappedSize is the size of a's wrapped seed (0 for token-resident keys).
func wrappedSize(a kms.Algorithm) int {
	n := seedSize(a)
	if n == 0 {
		return 0
	}
	return 1 + gcmIVLen + n + gcmTagLen
}

func seedAAD(id string, version int, a kms.Algorithm) []byte {
	b := make([]byte, 0, len(seedAADLabel)+2+len(id)+4+1+len(a))
	b = append(b, seedAADLabel...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(id)))
	b = append(b, id...)
	b = binary.BigEndian.AppendUint32(b, uint32(version))
	b = append(b, byte(len(a)))
	return append(b, a...)
}

// wrapSeed encrypts seed under the wrap key inside the token.
func (e *Engine) wrapSeed(ctx context.Context, id string, version int, a kms.Algorithm, seed []byte) ([]byte, error) {
	out := make([]byte, 1+gcmIVLen, wrappedSize(a))
	out[0] = wrapFormatV1
	if _, err := e.rand.Read(out[1:]); err != nil {
		return nil, fmt.Errorf("draw IV: %w", err)
	}
	ct, err := e.sealInToken(ctx, e.wrapObject(), out[1:], seed, seedAAD(id, version, a))
	if err != nil {
		return nil, tokenErr(fmt.Sprintf("wrap the seed of key %q version %d", id, version), err)
	}
	return append(out, ct...), nil
}

// unwrapSeed decrypts a wrapped seed inside the token and returns it; the
// caller zeroizes it. A blob that does not open is ErrCorrupt: there is no
// other way to the seed.
func (e *Engine) unwrapSeed(ctx context.Context, id string, version int, a kms.Algorithm, blob []byte) ([]byte, error) {
	if len(blob) != wrappedSize(a) || blob[0] != wrapFormatV1 {
		return nil, fmt.Errorf("key %q version %d: wrapped seed malformed: %w", id, version, ErrCorrupt)
	}
	seed, err := e.openInToken(ctx, e.wrapObject(), blob[1:1+gcmIVLen], blob[1+gcmIVLen:], seedAAD(id, version, a))
	if errors.Is(err, errAuth) {
		return nil, fmt.Errorf("key %q version %d: wrapped seed does not open under wrap key %q (another token or wrap key, or tampered): %w", id, version, e.wrapLabel, ErrCorrupt)
	}
	if err != nil {
		return nil, tokenErr(fmt.Sprintf("unwrap the seed of key %q version %d", id, version), err)
	}
	if len(seed) != seedSize(a) {
		clear(seed)
		return nil, fmt.Errorf("key %q version %d: unwrapped seed of %d bytes: %w", id, version, len(seed), ErrCorrupt)
	}
	return seed, nil
}

// withPQKey unwraps a version's seed, derives its key, runs fn and
// zeroizes the seed and the key whatever fn does.
func (e *Engine) withPQKey(ctx context.Context, r *record, v *versionRecord, fn func(k *pqKey) error) error {
	seed, err := e.unwrapSeed(ctx, r.ID, v.Version, r.Algorithm, v.Wrapped)
	if err != nil {
		return err
	}
	k := derive(r.Algorithm, seed)
	clear(seed)
	if k == nil {
		return fmt.Errorf("key %q: algorithm %q: %w", r.ID, r.Algorithm, kms.ErrUnsupportedAlgorithm)
	}
	defer k.wipe()
	return fn(k)
}
