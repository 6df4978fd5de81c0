package engine

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"strings"

	"github.com/miekg/pkcs11"

	"github.com/avonzt/avon/internal/mldsahedge"
	"github.com/avonzt/avon/plugins/kms-hsm/token"
	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/host"
	"github.com/avonzt/avon/sdk/kms"
)

// Checks run in this order, in every operation: the context, request sizes,
// the key existing (ErrKeyNotFound), the key's purpose (ErrWrongPurpose),
// the request's arguments (errdef.ErrInvalidArgument), then the version
// (ErrVersionNotFound, ErrKeyDestroyed).

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

// newVersion makes the material of a new version: a token object for
// classical algorithms, a wrapped seed for PQ ones. undo releases it if
// the record that names it is not written.
func (e *Engine) newVersion(ctx context.Context, a kms.Algorithm, id string, version int) (v versionRecord, undo func(), err error) {
	v = versionRecord{Version: version, State: kms.StateEnabled, Created: e.now().UTC()}
	if tokenResident(a) {
		obj, pub, err := e.generateInToken(ctx, a, id, version)
		if err != nil {
			return v, nil, err
		}
		v.Object, v.Public = obj, pub
		undo = func() {
			// The caller's context may be done; removing the orphan must not be.
			if err := e.destroyInToken(context.WithoutCancel(ctx), a, obj); err != nil {
				e.log.Error("could not remove an unused token object", "key_id", id, "version", version, "object", objectKey(obj), "error", err)
			}
		}
		return v, undo, nil
	}
	seed := make([]byte, seedSize(a))
	defer clear(seed)
	if _, err := e.rand.Read(seed); err != nil {
		return v, nil, fmt.Errorf("draw key material: %w", err)
	}
	k := derive(a, seed)
	v.Public = k.public
	k.wipe()
	if v.Wrapped, err = e.wrapSeed(ctx, id, version, a, seed); err != nil {
		return v, nil, err
	}
	return v, func() {}, nil
}

// GenerateKey implements kms.KMS. Exportable is recorded as asked, but no
// kms-hsm key can be exported: the plugin does not offer kms.Exporter and
// token objects are CKA_EXTRACTABLE=false.
func (e *Engine) GenerateKey(ctx context.Context, req *kms.GenerateKeyRequest) (*kms.GenerateKeyResponse, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if _, ok := kms.PurposeOf(req.Algorithm); !ok {
		return nil, fmt.Errorf("algorithm %q: %w", req.Algorithm, kms.ErrUnsupportedAlgorithm)
	}
	if req.Algorithm == kms.Ed25519 && !e.edwards {
		return nil, fmt.Errorf("algorithm %q: token %q has no CKM_EC_EDWARDS_KEY_PAIR_GEN/CKM_EDDSA: %w", req.Algorithm, e.tok.Label(), kms.ErrUnsupportedAlgorithm)
	}
	if req.ID != "" && !validID(req.ID) {
		return nil, invalid("key ID %q must match [A-Za-z0-9._-]{1,128}", req.ID)
	}
	if err := checkLabels(req.Labels); err != nil {
		return nil, invalid("%v", err)
	}
	id := req.ID
	if id == "" {
		b := make([]byte, 16)
		if _, err := e.rand.Read(b); err != nil {
			return nil, fmt.Errorf("draw key ID: %w", err)
		}
		id = "k-" + hex.EncodeToString(b)
	}
	// Refuse a taken ID before making material in the token.
	if _, _, err := e.load(ctx, id); err == nil {
		return nil, fmt.Errorf("key %q: %w", id, kms.ErrKeyExists)
	} else if !errors.Is(err, kms.ErrKeyNotFound) {
		return nil, err
	}
	v, undo, err := e.newVersion(ctx, req.Algorithm, id, 1)
	if err != nil {
		return nil, err
	}
	r := &record{Format: recordFormat, ID: id, Algorithm: req.Algorithm, Labels: maps.Clone(req.Labels), Exportable: req.Exportable,
		Primary: 1, Created: v.Created, Versions: []versionRecord{v}}
	if len(r.Labels) == 0 {
		r.Labels = nil
	}
	if err := e.save(ctx, r, 0); err != nil {
		undo()
		if errors.Is(err, host.ErrVersionConflict) {
			return nil, fmt.Errorf("key %q: %w", id, kms.ErrKeyExists)
		}
		return nil, err
	}
	e.log.Info("generated key", "key_id", id, "algorithm", req.Algorithm, "in_token", tokenResident(req.Algorithm))
	return &kms.GenerateKeyResponse{Key: r.key()}, nil
}

// GetKey implements kms.KMS.
func (e *Engine) GetKey(ctx context.Context, req *kms.GetKeyRequest) (*kms.GetKeyResponse, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r, _, err := e.load(ctx, req.ID)
	if err != nil {
		return nil, err
	}
	return &kms.GetKeyResponse{Key: r.key()}, nil
}

// Page sizes of ListKeys.
const (
	defaultPageSize = 100
	maxPageSize     = 1000
)

// ListKeys implements kms.KMS. The page token is the last ID of the
// previous page.
func (e *Engine) ListKeys(ctx context.Context, req *kms.ListKeysRequest) (*kms.ListKeysResponse, error) {
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
	ents, err := e.store.List(ctx, host.ListOptions{Prefix: keyPrefix, After: keyPrefix + req.PageToken, Limit: size + 1})
	if err != nil {
		return nil, storageErr("list keys", err)
	}
	out := &kms.ListKeysResponse{Keys: make([]*kms.Key, 0, min(len(ents), size))}
	for i, ent := range ents {
		if i == size {
			out.NextPageToken = out.Keys[size-1].ID
			break
		}
		r, err := decodeRecord(strings.TrimPrefix(ent.Key, keyPrefix), ent.Value)
		if err != nil {
			return nil, err
		}
		out.Keys = append(out.Keys, r.key())
	}
	return out, nil
}

// PublicKey implements kms.KMS.
func (e *Engine) PublicKey(ctx context.Context, req *kms.PublicKeyRequest) (*kms.PublicKeyResponse, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r, _, err := e.load(ctx, req.ID)
	if err != nil {
		return nil, err
	}
	if p, _ := kms.PurposeOf(r.Algorithm); p == kms.PurposeEncrypt {
		return nil, fmt.Errorf("key %q is symmetric (%s) and has no public key: %w", req.ID, r.Algorithm, kms.ErrWrongPurpose)
	}
	v, err := r.version(req.Version)
	if err != nil {
		return nil, err
	}
	return &kms.PublicKeyResponse{Algorithm: r.Algorithm, Version: v.Version, PublicKey: append([]byte(nil), v.Public...)}, nil
}

// Sign implements kms.KMS: classical keys sign inside the token; ML-DSA
// keys are unwrapped for the one signature, hedged with host randomness,
// and zeroized.
func (e *Engine) Sign(ctx context.Context, req *kms.SignRequest) (*kms.SignResponse, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := checkSize("message", len(req.Message), kms.MaxMessageSize); err != nil {
		return nil, err
	}
	r, _, err := e.load(ctx, req.ID)
	if err != nil {
		return nil, err
	}
	if err := r.wantPurpose(kms.PurposeSign); err != nil {
		return nil, err
	}
	if err := checkContext(r.Algorithm, req.Context); err != nil {
		return nil, err
	}
	v, err := r.version(0)
	if err != nil {
		return nil, err
	}
	var sig []byte
	if tokenResident(r.Algorithm) {
		if sig, err = e.signInToken(ctx, r.Algorithm, v.Object, req.Message); err != nil {
			return nil, e.raced(ctx, r.ID, v.Version, tokenErr(fmt.Sprintf("sign with key %q version %d", req.ID, v.Version), err))
		}
		return &kms.SignResponse{Signature: sig, Version: v.Version}, nil
	}
	if err := mldsahedge.Ready(); err != nil {
		return nil, err
	}
	err = e.withPQKey(ctx, r, v, func(k *pqKey) error {
		var rnd [32]byte
		defer clear(rnd[:])
		if _, err := e.rand.Read(rnd[:]); err != nil {
			return fmt.Errorf("draw signing randomness: %w", err)
		}
		sig = k.signInternal(mldsahedge.MessagePrime(req.Message, req.Context), rnd)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("sign with key %q version %d: %w", req.ID, v.Version, err)
	}
	return &kms.SignResponse{Signature: sig, Version: v.Version}, nil
}

// Verify implements kms.KMS, with the version's public key on the host.
func (e *Engine) Verify(ctx context.Context, req *kms.VerifyRequest) (*kms.VerifyResponse, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := checkSize("message", len(req.Message), kms.MaxMessageSize); err != nil {
		return nil, err
	}
	r, _, err := e.load(ctx, req.ID)
	if err != nil {
		return nil, err
	}
	if err := r.wantPurpose(kms.PurposeSign); err != nil {
		return nil, err
	}
	if err := checkContext(r.Algorithm, req.Context); err != nil {
		return nil, err
	}
	v, err := r.version(req.Version)
	if err != nil {
		return nil, err
	}
	ok, err := verify(r.Algorithm, v.Public, req.Message, req.Context, req.Signature)
	if err != nil {
		return nil, fmt.Errorf("key %q version %d: stored public key: %v: %w", req.ID, v.Version, err, ErrCorrupt)
	}
	return &kms.VerifyResponse{Valid: ok}, nil
}

// Decapsulate implements kms.KMS.
func (e *Engine) Decapsulate(ctx context.Context, req *kms.DecapsulateRequest) (*kms.DecapsulateResponse, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r, _, err := e.load(ctx, req.ID)
	if err != nil {
		return nil, err
	}
	if err := r.wantPurpose(kms.PurposeKEM); err != nil {
		return nil, err
	}
	v, err := r.version(req.Version)
	if err != nil {
		return nil, err
	}
	if want := kemSchemeOf(r.Algorithm).CiphertextSize(); len(req.Ciphertext) != want {
		return nil, fmt.Errorf("%s ciphertext of %d bytes, want %d: %w", r.Algorithm, len(req.Ciphertext), want, kms.ErrInvalidCiphertext)
	}
	var ss []byte
	err = e.withPQKey(ctx, r, v, func(k *pqKey) error {
		var err error
		if ss, err = k.scheme.Decapsulate(k.kemSK, req.Ciphertext); err != nil {
			return fmt.Errorf("%v: %w", err, kms.ErrInvalidCiphertext)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("decapsulate with key %q version %d: %w", req.ID, v.Version, err)
	}
	return &kms.DecapsulateResponse{SharedSecret: ss}, nil
}

// raced turns the error of an operation whose token object vanished into
// kms.ErrKeyDestroyed when the version was destroyed meanwhile (the object
// goes right after the record says so). Tokens report an object destroyed
// under a running operation in different ways (SoftHSM2: CKR_GENERAL_ERROR
// from C_Sign after C_SignInit succeeded), so any failure is checked
// against the record.
func (e *Engine) raced(ctx context.Context, id string, version int, err error) error {
	if err == nil || errors.Is(err, kms.ErrKeyDestroyed) {
		return err
	}
	if r, _, lerr := e.load(ctx, id); lerr == nil && version <= len(r.Versions) && r.Versions[version-1].State == kms.StateDestroyed {
		return fmt.Errorf("key %q version %d: destroyed during the operation: %w", id, version, kms.ErrKeyDestroyed)
	}
	return err
}

// mutate applies change to key id's record by compare-and-set, retrying
// when another writer got there first. change returns the new record and
// an undo for material it made (called when the write does not happen).
func (e *Engine) mutate(ctx context.Context, id string, change func(r *record) (*record, func(), error)) (*record, error) {
	for range maxMutationAttempts {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		r, ver, err := e.load(ctx, id)
		if err != nil {
			return nil, err
		}
		next, undo, err := change(r.clone())
		if err != nil {
			return nil, err
		}
		err = e.save(ctx, next, ver)
		if err == nil {
			return next, nil
		}
		if undo != nil {
			undo()
		}
		if !errors.Is(err, host.ErrVersionConflict) {
			return nil, err
		}
	}
	return nil, fmt.Errorf("key %q: %d concurrent updates in a row; try again: %w", id, maxMutationAttempts, errdef.ErrInternal)
}

// RotateKey implements kms.KMS. Rotating a key whose versions are all
// destroyed is refused with kms.ErrKeyDestroyed.
func (e *Engine) RotateKey(ctx context.Context, req *kms.RotateKeyRequest) (*kms.RotateKeyResponse, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r, err := e.mutate(ctx, req.ID, func(r *record) (*record, func(), error) {
		if r.enabled() == 0 {
			return nil, nil, fmt.Errorf("rotate key %q: every version is destroyed: %w", req.ID, kms.ErrKeyDestroyed)
		}
		n := len(r.Versions) + 1
		if n > maxVersions {
			return nil, nil, invalid("key %q has %d versions, the most a key may have", req.ID, maxVersions)
		}
		v, undo, err := e.newVersion(ctx, r.Algorithm, r.ID, n)
		if err != nil {
			return nil, nil, err
		}
		r.Versions = append(r.Versions, v)
		r.Primary = n
		return r, undo, nil
	})
	if err != nil {
		return nil, err
	}
	e.log.Info("rotated key", "key_id", req.ID, "version", r.Primary)
	return &kms.RotateKeyResponse{Key: r.key()}, nil
}

// DestroyKey implements kms.KMS. The record is tombstoned first (so no
// operation can reach the version any more), then the token objects are
// destroyed; wrapped seeds go with the record's update. Destroying what is
// already destroyed is refused with kms.ErrKeyDestroyed.
func (e *Engine) DestroyKey(ctx context.Context, req *kms.DestroyKeyRequest) (*kms.DestroyKeyResponse, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var objects [][]byte
	var destroyed []int
	r, err := e.mutate(ctx, req.ID, func(r *record) (*record, func(), error) {
		objects, destroyed = objects[:0], destroyed[:0]
		if req.Version == 0 {
			for _, v := range r.Versions {
				if v.State == kms.StateEnabled {
					destroyed = append(destroyed, v.Version)
				}
			}
			if len(destroyed) == 0 {
				return nil, nil, fmt.Errorf("key %q: %w", req.ID, kms.ErrKeyDestroyed)
			}
		} else {
			v, err := r.version(req.Version)
			if err != nil {
				return nil, nil, err
			}
			if v.Version == r.Primary && r.enabled() > 1 {
				return nil, nil, invalid("key %q: version %d is primary and other versions are enabled; rotate first", req.ID, v.Version)
			}
			destroyed = append(destroyed, v.Version)
		}
		now := e.now().UTC()
		for _, n := range destroyed {
			v := &r.Versions[n-1]
			if v.Object != nil {
				objects = append(objects, v.Object)
			}
			clear(v.Wrapped)
			v.State, v.Destroyed, v.Public, v.Object, v.Wrapped = kms.StateDestroyed, now, nil, nil, nil
		}
		return r, nil, nil
	})
	if err != nil {
		return nil, err
	}
	var failed []string
	for _, obj := range objects {
		if err := e.destroyInToken(context.WithoutCancel(ctx), r.Algorithm, obj); err != nil {
			e.log.Error("could not destroy a token object of a destroyed key version", "key_id", req.ID, "object", objectKey(obj), "error", err)
			failed = append(failed, objectKey(obj))
		}
	}
	e.log.Info("destroyed key material", "key_id", req.ID, "versions", fmt.Sprint(destroyed), "all", r.enabled() == 0)
	if len(failed) > 0 {
		return nil, fmt.Errorf("key %q: versions %v are destroyed in the metadata, but token objects with CKA_ID %s could not be destroyed; remove them with the token's tools: %w",
			req.ID, destroyed, strings.Join(failed, ", "), errdef.ErrInternal)
	}
	return &kms.DestroyKeyResponse{Key: r.key()}, nil
}

// GenerateRandom implements kms.RandomSource with the token's generator
// (C_GenerateRandom).
func (e *Engine) GenerateRandom(ctx context.Context, req *kms.GenerateRandomRequest) (*kms.GenerateRandomResponse, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if req.Length < 1 || req.Length > kms.MaxRandomLength {
		return nil, invalid("random length %d outside 1..%d", req.Length, kms.MaxRandomLength)
	}
	var out []byte
	err := e.tok.Do(ctx, func(c token.Ctx, sh pkcs11.SessionHandle) error {
		var err error
		out, err = c.GenerateRandom(sh, req.Length)
		return err
	})
	if err == nil && len(out) != req.Length {
		err = fmt.Errorf("token returned %d random bytes, want %d", len(out), req.Length)
	}
	if err != nil {
		return nil, tokenErr("generate random bytes in the token", err)
	}
	return &kms.GenerateRandomResponse{Random: out}, nil
}

var (
	_ kms.KMS          = (*Engine)(nil)
	_ kms.RandomSource = (*Engine)(nil)
)
