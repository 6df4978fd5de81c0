package keystore

import (
	"context"
	"encoding/hex"
	"fmt"
	"maps"
	"sort"

	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/kms"
)

// Checks run in this order, in every operation: the context, request sizes,
// the keystore being open, the key existing (ErrKeyNotFound), the key's
// purpose (ErrWrongPurpose), the request's arguments (errdef.
// ErrInvalidArgument), then the version (ErrVersionNotFound,
// ErrKeyDestroyed).

// validID reports whether id matches [A-Za-z0-9._-]{1,128}.
func validID(id string) bool {
	if len(id) == 0 || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		switch c := id[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

func invalid(format string, args ...any) error {
	return fmt.Errorf(format+": %w", append(args, errdef.ErrInvalidArgument)...)
}

// cloneKey returns a deep copy of k for a caller.
func cloneKey(k *kms.Key) *kms.Key {
	c := *k
	c.Labels = maps.Clone(k.Labels)
	c.Versions = make([]kms.KeyVersion, len(k.Versions))
	for i, v := range k.Versions {
		v.PublicKey = append([]byte(nil), v.PublicKey...)
		if len(v.PublicKey) == 0 {
			v.PublicKey = nil
		}
		c.Versions[i] = v
	}
	return &c
}

// entryRLocked returns the key id. Caller holds state (read or write).
func (ks *Keystore) entryRLocked(id string) (*entry, error) {
	if ks.state.closed {
		return nil, fmt.Errorf("keystore %s is closed: %w", ks.path, ErrClosed)
	}
	e, ok := ks.state.keys[id]
	if !ok {
		return nil, fmt.Errorf("key %q: %w", id, kms.ErrKeyNotFound)
	}
	return e, nil
}

// version resolves v (0: primary) to an enabled version's material.
func (e *entry) version(v int) (int, *material, error) {
	if v < 0 {
		return 0, nil, invalid("key %q: version %d", e.meta.ID, v)
	}
	if v == 0 {
		v = e.meta.PrimaryVersion
	}
	if v > len(e.meta.Versions) {
		return 0, nil, fmt.Errorf("key %q version %d: %w", e.meta.ID, v, kms.ErrVersionNotFound)
	}
	m := e.material[v]
	if m == nil {
		return 0, nil, fmt.Errorf("key %q version %d: %w", e.meta.ID, v, kms.ErrKeyDestroyed)
	}
	return v, m, nil
}

func (e *entry) wantPurpose(p kms.Purpose) error {
	if got, _ := kms.PurposeOf(e.meta.Algorithm); got != p {
		return fmt.Errorf("key %q is %s (%s), not for %s: %w", e.meta.ID, e.meta.Algorithm, got, p, kms.ErrWrongPurpose)
	}
	return nil
}

func isMLDSA(a kms.Algorithm) bool { return a == kms.MLDSA44 || a == kms.MLDSA65 || a == kms.MLDSA87 }

func checkContext(a kms.Algorithm, c []byte) error {
	if isMLDSA(a) {
		if len(c) > 255 {
			return invalid("context of %d bytes exceeds 255", len(c))
		}
		return nil
	}
	if len(c) > 0 {
		return invalid("%s takes no context string", a)
	}
	return nil
}

func checkSize(what string, n, limit int) error {
	if n > limit {
		return invalid("%s of %d bytes exceeds %d", what, n, limit)
	}
	return nil
}

// GenerateKey implements kms.KMS.
func (ks *Keystore) GenerateKey(ctx context.Context, req *kms.GenerateKeyRequest) (*kms.GenerateKeyResponse, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if _, ok := kms.PurposeOf(req.Algorithm); !ok {
		return nil, fmt.Errorf("algorithm %q: %w", req.Algorithm, kms.ErrUnsupportedAlgorithm)
	}
	if req.ID != "" && !validID(req.ID) {
		return nil, invalid("key ID %q must match [A-Za-z0-9._-]{1,128}", req.ID)
	}
	if err := checkLabels(req.Labels); err != nil {
		return nil, invalid("%v", err)
	}
	e, err := ks.mutate(ctx, func(keys map[string]*entry) (string, *entry, []*material, func(), error) {
		id := req.ID
		if id == "" {
			b := make([]byte, 16)
			if _, err := ks.rand.Read(b); err != nil {
				return "", nil, nil, nil, fmt.Errorf("draw key ID: %w", err)
			}
			id = "k-" + hex.EncodeToString(b)
		}
		if _, dup := keys[id]; dup {
			return "", nil, nil, nil, fmt.Errorf("key %q: %w", id, kms.ErrKeyExists)
		}
		seed, err := newSeed(req.Algorithm, &ks.rand)
		if err != nil {
			return "", nil, nil, nil, err
		}
		m, err := parse(req.Algorithm, seed)
		if err != nil {
			return "", nil, nil, nil, fmt.Errorf("generate %s key: %v: %w", req.Algorithm, err, errdef.ErrInternal)
		}
		now := ks.now().UTC()
		e := &entry{
			meta: kms.Key{ID: id, Algorithm: req.Algorithm, Labels: maps.Clone(req.Labels), Exportable: req.Exportable,
				PrimaryVersion: 1, CreatedAt: now,
				Versions: []kms.KeyVersion{{Version: 1, State: kms.StateEnabled, CreatedAt: now, PublicKey: m.public}}},
			material: map[int]*material{1: m},
		}
		if len(e.meta.Labels) == 0 {
			e.meta.Labels = nil
		}
		return id, e, nil, m.clear, nil
	})
	if err != nil {
		return nil, err
	}
	ks.log.Info("generated key", "key_id", e.meta.ID, "algorithm", e.meta.Algorithm, "exportable", e.meta.Exportable)
	return &kms.GenerateKeyResponse{Key: cloneKey(&e.meta)}, nil
}

// GetKey implements kms.KMS.
func (ks *Keystore) GetKey(ctx context.Context, req *kms.GetKeyRequest) (*kms.GetKeyResponse, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ks.state.RLock()
	defer ks.state.RUnlock()
	e, err := ks.entryRLocked(req.ID)
	if err != nil {
		return nil, err
	}
	return &kms.GetKeyResponse{Key: cloneKey(&e.meta)}, nil
}

// Page sizes of ListKeys.
const (
	defaultPageSize = 100
	maxPageSize     = 1000
)

// ListKeys implements kms.KMS. The page token is the last ID of the
// previous page, so keys added or destroyed between calls neither repeat
// nor hide others.
func (ks *Keystore) ListKeys(ctx context.Context, req *kms.ListKeysRequest) (*kms.ListKeysResponse, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	size := req.PageSize
	switch {
	case size < 0 || size > maxPageSize:
		return nil, invalid("page size %d outside 0..%d", size, maxPageSize)
	case size == 0:
		size = defaultPageSize
	}
	if req.PageToken != "" && !validID(req.PageToken) {
		return nil, invalid("malformed page token")
	}
	ks.state.RLock()
	defer ks.state.RUnlock()
	if ks.state.closed {
		return nil, fmt.Errorf("keystore %s is closed: %w", ks.path, ErrClosed)
	}
	ids := make([]string, 0, len(ks.state.keys))
	for id := range ks.state.keys {
		if id > req.PageToken {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	out := &kms.ListKeysResponse{}
	if len(ids) > size {
		ids = ids[:size]
		out.NextPageToken = ids[size-1]
	}
	out.Keys = make([]*kms.Key, 0, len(ids))
	for _, id := range ids {
		out.Keys = append(out.Keys, cloneKey(&ks.state.keys[id].meta))
	}
	return out, nil
}

// PublicKey implements kms.KMS.
func (ks *Keystore) PublicKey(ctx context.Context, req *kms.PublicKeyRequest) (*kms.PublicKeyResponse, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ks.state.RLock()
	defer ks.state.RUnlock()
	e, err := ks.entryRLocked(req.ID)
	if err != nil {
		return nil, err
	}
	if p, _ := kms.PurposeOf(e.meta.Algorithm); p == kms.PurposeEncrypt {
		return nil, fmt.Errorf("key %q is symmetric (%s) and has no public key: %w", req.ID, e.meta.Algorithm, kms.ErrWrongPurpose)
	}
	v, m, err := e.version(req.Version)
	if err != nil {
		return nil, err
	}
	return &kms.PublicKeyResponse{Algorithm: e.meta.Algorithm, Version: v, PublicKey: append([]byte(nil), m.public...)}, nil
}

// Sign implements kms.KMS.
func (ks *Keystore) Sign(ctx context.Context, req *kms.SignRequest) (*kms.SignResponse, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := checkSize("message", len(req.Message), kms.MaxMessageSize); err != nil {
		return nil, err
	}
	ks.state.RLock()
	defer ks.state.RUnlock()
	e, err := ks.entryRLocked(req.ID)
	if err != nil {
		return nil, err
	}
	if err := e.wantPurpose(kms.PurposeSign); err != nil {
		return nil, err
	}
	if err := checkContext(e.meta.Algorithm, req.Context); err != nil {
		return nil, err
	}
	v, m, err := e.version(0)
	if err != nil {
		return nil, err
	}
	sig, err := m.sign(&ks.rand, req.Message, req.Context)
	if err != nil {
		return nil, fmt.Errorf("sign with key %q: %w", req.ID, err)
	}
	return &kms.SignResponse{Signature: sig, Version: v}, nil
}

// Verify implements kms.KMS.
func (ks *Keystore) Verify(ctx context.Context, req *kms.VerifyRequest) (*kms.VerifyResponse, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := checkSize("message", len(req.Message), kms.MaxMessageSize); err != nil {
		return nil, err
	}
	ks.state.RLock()
	defer ks.state.RUnlock()
	e, err := ks.entryRLocked(req.ID)
	if err != nil {
		return nil, err
	}
	if err := e.wantPurpose(kms.PurposeSign); err != nil {
		return nil, err
	}
	if err := checkContext(e.meta.Algorithm, req.Context); err != nil {
		return nil, err
	}
	_, m, err := e.version(req.Version)
	if err != nil {
		return nil, err
	}
	return &kms.VerifyResponse{Valid: m.verify(req.Message, req.Context, req.Signature)}, nil
}

// Decapsulate implements kms.KMS.
func (ks *Keystore) Decapsulate(ctx context.Context, req *kms.DecapsulateRequest) (*kms.DecapsulateResponse, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ks.state.RLock()
	defer ks.state.RUnlock()
	e, err := ks.entryRLocked(req.ID)
	if err != nil {
		return nil, err
	}
	if err := e.wantPurpose(kms.PurposeKEM); err != nil {
		return nil, err
	}
	_, m, err := e.version(req.Version)
	if err != nil {
		return nil, err
	}
	if want := m.kemScheme.CiphertextSize(); len(req.Ciphertext) != want {
		return nil, fmt.Errorf("%s ciphertext of %d bytes, want %d: %w", e.meta.Algorithm, len(req.Ciphertext), want, kms.ErrInvalidCiphertext)
	}
	ss, err := m.kemScheme.Decapsulate(m.kemSK, req.Ciphertext)
	if err != nil {
		return nil, fmt.Errorf("decapsulate with key %q: %v: %w", req.ID, err, kms.ErrInvalidCiphertext)
	}
	return &kms.DecapsulateResponse{SharedSecret: ss}, nil
}

// RotateKey implements kms.KMS. Rotating a key whose versions are all
// destroyed is refused with kms.ErrKeyDestroyed: a tombstone stays one.
func (ks *Keystore) RotateKey(ctx context.Context, req *kms.RotateKeyRequest) (*kms.RotateKeyResponse, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	e, err := ks.mutate(ctx, func(keys map[string]*entry) (string, *entry, []*material, func(), error) {
		old, ok := keys[req.ID]
		if !ok {
			return "", nil, nil, nil, fmt.Errorf("key %q: %w", req.ID, kms.ErrKeyNotFound)
		}
		if len(old.material) == 0 {
			return "", nil, nil, nil, fmt.Errorf("rotate key %q: every version is destroyed: %w", req.ID, kms.ErrKeyDestroyed)
		}
		seed, err := newSeed(old.meta.Algorithm, &ks.rand)
		if err != nil {
			return "", nil, nil, nil, err
		}
		m, err := parse(old.meta.Algorithm, seed)
		if err != nil {
			return "", nil, nil, nil, fmt.Errorf("rotate %s key: %v: %w", old.meta.Algorithm, err, errdef.ErrInternal)
		}
		e := old.clone()
		v := len(e.meta.Versions) + 1
		e.meta.Versions = append(e.meta.Versions, kms.KeyVersion{Version: v, State: kms.StateEnabled, CreatedAt: ks.now().UTC(), PublicKey: m.public})
		e.meta.PrimaryVersion = v
		e.material[v] = m
		return req.ID, e, nil, m.clear, nil
	})
	if err != nil {
		return nil, err
	}
	ks.log.Info("rotated key", "key_id", req.ID, "version", e.meta.PrimaryVersion)
	return &kms.RotateKeyResponse{Key: cloneKey(&e.meta)}, nil
}

// DestroyKey implements kms.KMS. Destroying what is already destroyed is
// refused with kms.ErrKeyDestroyed.
func (ks *Keystore) DestroyKey(ctx context.Context, req *kms.DestroyKeyRequest) (*kms.DestroyKeyResponse, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var destroyed []int
	e, err := ks.mutate(ctx, func(keys map[string]*entry) (string, *entry, []*material, func(), error) {
		old, ok := keys[req.ID]
		if !ok {
			return "", nil, nil, nil, fmt.Errorf("key %q: %w", req.ID, kms.ErrKeyNotFound)
		}
		destroyed = destroyed[:0]
		if req.Version == 0 {
			for v := range old.material {
				destroyed = append(destroyed, v)
			}
			if len(destroyed) == 0 {
				return "", nil, nil, nil, fmt.Errorf("key %q: %w", req.ID, kms.ErrKeyDestroyed)
			}
			sort.Ints(destroyed)
		} else {
			v, _, err := old.version(req.Version)
			if err != nil {
				return "", nil, nil, nil, err
			}
			if v == old.meta.PrimaryVersion && len(old.material) > 1 {
				return "", nil, nil, nil, invalid("key %q: version %d is primary and other versions are enabled; rotate first", req.ID, v)
			}
			destroyed = append(destroyed, v)
		}
		e := old.clone()
		now := ks.now().UTC()
		retired := make([]*material, 0, len(destroyed))
		for _, v := range destroyed {
			retired = append(retired, e.material[v])
			delete(e.material, v)
			kv := &e.meta.Versions[v-1]
			kv.State, kv.DestroyedAt, kv.PublicKey = kms.StateDestroyed, now, nil
		}
		return req.ID, e, retired, nil, nil
	})
	if err != nil {
		return nil, err
	}
	ks.log.Info("destroyed key material", "key_id", req.ID, "versions", fmt.Sprint(destroyed), "all", e.Destroyed())
	return &kms.DestroyKeyResponse{Key: cloneKey(&e.meta)}, nil
}

// Destroyed reports whether every version of e is destroyed.
func (e *entry) Destroyed() bool { return len(e.material) == 0 }

// ExportKey implements kms.Exporter: only keys generated with Exportable
// give their material (kms.ErrNotExportable otherwise). The caller must
// zeroize the returned PrivateKey.
func (ks *Keystore) ExportKey(ctx context.Context, req *kms.ExportKeyRequest) (*kms.ExportKeyResponse, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ks.state.RLock()
	defer ks.state.RUnlock()
	e, err := ks.entryRLocked(req.ID)
	if err != nil {
		return nil, err
	}
	if !e.meta.Exportable {
		return nil, fmt.Errorf("key %q: %w", req.ID, kms.ErrNotExportable)
	}
	v, m, err := e.version(req.Version)
	if err != nil {
		return nil, err
	}
	ks.log.Warn("exported key material", "key_id", req.ID, "version", v)
	return &kms.ExportKeyResponse{Algorithm: e.meta.Algorithm, Version: v, PrivateKey: append([]byte(nil), m.seed...)}, nil
}
