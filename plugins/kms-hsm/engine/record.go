package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"time"
	"unicode/utf8"

	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/host"
	"github.com/avonzt/avon/sdk/kms"
)

// Metadata lives in host storage, one JSON record per key under
// keyPrefix+ID, written with compare-and-set. It holds public keys, the
// CKA_ID of each token object, and the wrapped seed of each PQ version;
// never plaintext private material. See README.md, "Host storage".

const (
	keyPrefix = "kms-hsm/keys/"

	maxLabels        = 64
	maxLabelKeyLen   = 128
	maxLabelValueLen = 1024
	maxVersions      = 10000
	maxRecordSize    = 4 << 20
)

// record is a key's metadata as stored.
type record struct {
	Format     int               `json:"format"` // recordFormat
	ID         string            `json:"id"`
	Algorithm  kms.Algorithm     `json:"algorithm"`
	Labels     map[string]string `json:"labels,omitempty"`
	Exportable bool              `json:"exportable"`
	Primary    int               `json:"primary"`
	Created    time.Time         `json:"created"`
	Versions   []versionRecord   `json:"versions"`
}

// versionRecord is one version. Enabled versions carry either Object (a
// token-resident key: its CKA_ID) or Wrapped (a PQ seed wrapped under the
// token's wrap key); destroyed versions carry neither.
type versionRecord struct {
	Version   int              `json:"version"`
	State     kms.VersionState `json:"state"`
	Created   time.Time        `json:"created"`
	Destroyed time.Time        `json:"destroyed,omitzero"`
	Public    []byte           `json:"public,omitempty"`
	Object    []byte           `json:"object,omitempty"`
	Wrapped   []byte           `json:"wrapped,omitempty"`
}

const recordFormat = 1

func checkLabels(labels map[string]string) error {
	if len(labels) > maxLabels {
		return fmt.Errorf("%d labels, at most %d", len(labels), maxLabels)
	}
	for k, v := range labels {
		if len(k) == 0 || len(k) > maxLabelKeyLen || !utf8.ValidString(k) {
			return fmt.Errorf("label key %q must be 1..%d bytes of UTF-8", k, maxLabelKeyLen)
		}
		if len(v) > maxLabelValueLen || !utf8.ValidString(v) {
			return fmt.Errorf("label %q: value must be at most %d bytes of UTF-8", k, maxLabelValueLen)
		}
	}
	return nil
}

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

// decodeRecord parses and checks a stored record. The bytes come from
// host storage, which this plugin does not control: anything malformed is
// an error wrapping ErrCorrupt, never a panic.
func decodeRecord(id string, b []byte) (*record, error) {
	if len(b) > maxRecordSize {
		return nil, fmt.Errorf("key %q: record of %d bytes: %w", id, len(b), ErrCorrupt)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var r record
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("key %q: %v: %w", id, err, ErrCorrupt)
	}
	if dec.More() {
		return nil, fmt.Errorf("key %q: trailing data: %w", id, ErrCorrupt)
	}
	if err := r.check(id); err != nil {
		return nil, fmt.Errorf("key %q: %v: %w", id, err, ErrCorrupt)
	}
	return &r, nil
}

func (r *record) check(id string) error {
	if r.Format != recordFormat {
		return fmt.Errorf("record format %d, want %d", r.Format, recordFormat)
	}
	if r.ID != id || !validID(r.ID) {
		return fmt.Errorf("record names key %q", r.ID)
	}
	p, ok := kms.PurposeOf(r.Algorithm)
	if !ok {
		return fmt.Errorf("algorithm %q", r.Algorithm)
	}
	if err := checkLabels(r.Labels); err != nil {
		return err
	}
	if len(r.Versions) == 0 || len(r.Versions) > maxVersions {
		return fmt.Errorf("%d versions", len(r.Versions))
	}
	if r.Primary < 1 || r.Primary > len(r.Versions) {
		return fmt.Errorf("primary version %d of %d", r.Primary, len(r.Versions))
	}
	inToken := tokenResident(r.Algorithm)
	for i, v := range r.Versions {
		if v.Version != i+1 {
			return fmt.Errorf("version %d at position %d", v.Version, i+1)
		}
		switch v.State {
		case kms.StateEnabled:
			if inToken && (len(v.Object) == 0 || len(v.Object) > 64 || v.Wrapped != nil) {
				return fmt.Errorf("version %d: token object reference malformed", v.Version)
			}
			if !inToken && (len(v.Wrapped) != wrappedSize(r.Algorithm) || v.Object != nil) {
				return fmt.Errorf("version %d: wrapped seed malformed", v.Version)
			}
			if want := publicKeySize(r.Algorithm); len(v.Public) != want || (p == kms.PurposeEncrypt && v.Public != nil) {
				return fmt.Errorf("version %d: public key of %d bytes, want %d", v.Version, len(v.Public), want)
			}
		case kms.StateDestroyed:
			if v.Object != nil || v.Wrapped != nil || v.Public != nil || v.Destroyed.IsZero() {
				return fmt.Errorf("destroyed version %d still holds material", v.Version)
			}
		default:
			return fmt.Errorf("version %d: state %q", v.Version, v.State)
		}
	}
	return nil
}

func (r *record) clone() *record {
	c := *r
	c.Labels = maps.Clone(r.Labels)
	c.Versions = make([]versionRecord, len(r.Versions))
	for i, v := range r.Versions {
		v.Public = bytes.Clone(v.Public)
		v.Object = bytes.Clone(v.Object)
		v.Wrapped = bytes.Clone(v.Wrapped)
		c.Versions[i] = v
	}
	return &c
}

// key returns the kms view of r (a deep copy).
func (r *record) key() *kms.Key {
	k := &kms.Key{ID: r.ID, Algorithm: r.Algorithm, Labels: maps.Clone(r.Labels), Exportable: r.Exportable,
		PrimaryVersion: r.Primary, CreatedAt: r.Created, Versions: make([]kms.KeyVersion, len(r.Versions))}
	if len(k.Labels) == 0 {
		k.Labels = nil
	}
	for i, v := range r.Versions {
		k.Versions[i] = kms.KeyVersion{Version: v.Version, State: v.State, CreatedAt: v.Created, DestroyedAt: v.Destroyed,
			PublicKey: bytes.Clone(v.Public)}
	}
	return k
}

// version resolves v (0: primary) to an enabled version.
func (r *record) version(v int) (*versionRecord, error) {
	if v < 0 {
		return nil, invalid("key %q: version %d", r.ID, v)
	}
	if v == 0 {
		v = r.Primary
	}
	if v > len(r.Versions) {
		return nil, fmt.Errorf("key %q version %d: %w", r.ID, v, kms.ErrVersionNotFound)
	}
	vr := &r.Versions[v-1]
	if vr.State != kms.StateEnabled {
		return nil, fmt.Errorf("key %q version %d: %w", r.ID, v, kms.ErrKeyDestroyed)
	}
	return vr, nil
}

func (r *record) enabled() int {
	n := 0
	for _, v := range r.Versions {
		if v.State == kms.StateEnabled {
			n++
		}
	}
	return n
}

func (r *record) wantPurpose(p kms.Purpose) error {
	if got, _ := kms.PurposeOf(r.Algorithm); got != p {
		return fmt.Errorf("key %q is %s (%s), not for %s: %w", r.ID, r.Algorithm, got, p, kms.ErrWrongPurpose)
	}
	return nil
}

// load reads key id's record and its storage version.
func (e *Engine) load(ctx context.Context, id string) (*record, int64, error) {
	if !validID(id) {
		// An ID that could never have been created is simply unknown.
		return nil, 0, fmt.Errorf("key %q: %w", id, kms.ErrKeyNotFound)
	}
	ent, err := e.store.Get(ctx, keyPrefix+id)
	if errors.Is(err, host.ErrNotFound) {
		return nil, 0, fmt.Errorf("key %q: %w", id, kms.ErrKeyNotFound)
	}
	if err != nil {
		return nil, 0, storageErr("read key "+id, err)
	}
	r, err := decodeRecord(id, ent.Value)
	if err != nil {
		return nil, 0, err
	}
	return r, ent.Version, nil
}

// save writes r if the stored version is still version (0: absent).
func (e *Engine) save(ctx context.Context, r *record, version int64) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode key %q: %v: %w", r.ID, err, errdef.ErrInternal)
	}
	_, err = e.store.Put(ctx, keyPrefix+r.ID, b, host.PutOptions{Check: true, Version: version})
	if err != nil && !errors.Is(err, host.ErrVersionConflict) {
		return storageErr("write key "+r.ID, err)
	}
	return err
}

// storageErr keeps host errors that already classify themselves (storage
// unavailable, context ended) and marks the rest internal.
func storageErr(what string, err error) error {
	var s *errdef.Sentinel
	if errors.As(err, &s) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w", what, err)
	}
	return fmt.Errorf("%s: %v: %w", what, err, errdef.ErrInternal)
}

func invalid(format string, args ...any) error {
	return fmt.Errorf(format+": %w", append(args, errdef.ErrInvalidArgument)...)
}
