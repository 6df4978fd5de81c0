// Package keystore is kms-soft's engine: a key set encrypted at rest in one
// file (format in file.go and FORMAT.md), implementing kms.KMS and
// kms.Exporter. Every key, salt and nonce comes from Options.Rand (the host
// RNG); ML-DSA signing is hedged with randomness circl draws from the
// operating system. Private material lives in memory while the keystore is
// open and is zeroized on destroy and Close.
//
// Writes happen on generate, rotate and destroy only: the new key set is
// sealed, written to a temporary file, fsynced and renamed over the old
// one, and the directory fsynced; the in-memory state changes only after
// that succeeded.
package keystore

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/avonzt/avon/internal/atomicfile"
	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/kms"
)

// Options configure Open.
type Options struct {
	Path       string    // keystore file
	Passphrase []byte    // the caller zeroizes it after Open
	Rand       io.Reader // host RNG: every key, salt and nonce
	Now        func() time.Time
	KDF        KDFParams // for a new keystore; zero: DefaultKDF
	Logger     hclog.Logger
	// writeFile replaces the file (tests inject failures).
	writeFile func(path string, data []byte) error
}

// Keystore is an open keystore.
type Keystore struct {
	path      string
	rnd       io.Reader
	now       func() time.Time
	log       hclog.Logger
	writeFile func(string, []byte) error

	// mu guards everything below. Readers (sign, verify, ...) hold it for
	// reading; generate/rotate/destroy hold it for writing across the file
	// write, so the file and memory never disagree.
	mu     sync.RWMutex
	fk     *fileKeys
	keys   map[string]*entry
	closed bool
}

type entry struct {
	meta     kms.Key
	material map[int]*material // by version; absent once destroyed
}

// stored forms
type storedVersion struct {
	Version     int       `json:"version"`
	State       string    `json:"state"`
	CreatedAt   time.Time `json:"created_at"`
	DestroyedAt time.Time `json:"destroyed_at,omitzero"`
	Seed        []byte    `json:"seed,omitempty"`
}

type storedKey struct {
	ID         string            `json:"id"`
	Algorithm  string            `json:"algorithm"`
	Labels     map[string]string `json:"labels,omitempty"`
	Exportable bool              `json:"exportable,omitempty"`
	Primary    int               `json:"primary"`
	CreatedAt  time.Time         `json:"created_at"`
	Versions   []storedVersion   `json:"versions"`
}

type storedSet struct {
	Keys []storedKey `json:"keys"`
}

var idRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,128}$`)

// Open opens the keystore at opts.Path, creating it if absent.
func Open(opts Options) (*Keystore, error) {
	if opts.Rand == nil {
		return nil, errors.New("keystore: no randomness source")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	if opts.writeFile == nil {
		opts.writeFile = writeAtomic
	}
	if len(opts.Passphrase) == 0 {
		return nil, fmt.Errorf("keystore %s: empty passphrase", opts.Path)
	}
	ks := &Keystore{path: opts.Path, rnd: opts.Rand, now: opts.Now, log: opts.Logger, writeFile: opts.writeFile, keys: map[string]*entry{}}
	st, err := os.Stat(opts.Path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		p := opts.KDF
		if p == (KDFParams{}) {
			p = DefaultKDF
		}
		if err := p.Validate(); err != nil {
			return nil, fmt.Errorf("keystore %s: %w", opts.Path, err)
		}
		salt := make([]byte, 32)
		if _, err := io.ReadFull(opts.Rand, salt); err != nil {
			return nil, fmt.Errorf("keystore %s: salt: %w", opts.Path, err)
		}
		fk, err := deriveKeys(opts.Passphrase, salt, p)
		if err != nil {
			return nil, err
		}
		ks.fk = fk
		if err := os.MkdirAll(filepath.Dir(opts.Path), 0o700); err != nil {
			return nil, fmt.Errorf("keystore %s: %w", opts.Path, err)
		}
		if err := ks.persist(ks.keys); err != nil {
			fk.clear()
			return nil, err
		}
		ks.log.Info("created keystore", "path", opts.Path)
		return ks, nil
	case err != nil:
		return nil, fmt.Errorf("keystore %s: %w", opts.Path, err)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("keystore %s has mode %o; it must not be accessible by group or others (chmod 600)", opts.Path, perm)
	}
	if st.Size() > maxFileSize {
		return nil, fmt.Errorf("keystore %s: %d bytes is too large: %w", opts.Path, st.Size(), ErrTampered)
	}
	data, err := os.ReadFile(opts.Path)
	if err != nil {
		return nil, fmt.Errorf("keystore %s: %w", opts.Path, err)
	}
	fk, pt, err := open(data, opts.Passphrase)
	if err != nil {
		return nil, fmt.Errorf("keystore %s: %w", opts.Path, err)
	}
	defer clear(pt)
	keys, err := decodeSet(pt)
	if err != nil {
		fk.clear()
		return nil, fmt.Errorf("keystore %s: %v: %w", opts.Path, err, ErrTampered)
	}
	ks.fk, ks.keys = fk, keys
	return ks, nil
}

// decodeSet parses the decrypted key set; it never panics.
func decodeSet(pt []byte) (map[string]*entry, error) {
	var set storedSet
	if err := json.Unmarshal(pt, &set); err != nil {
		return nil, err
	}
	keys := map[string]*entry{}
	for _, sk := range set.Keys {
		a := kms.Algorithm(sk.Algorithm)
		if _, ok := kms.PurposeOf(a); !ok || !idRE.MatchString(sk.ID) || keys[sk.ID] != nil || len(sk.Versions) == 0 {
			return nil, fmt.Errorf("invalid key record %q", sk.ID)
		}
		e := &entry{material: map[int]*material{}, meta: kms.Key{ID: sk.ID, Algorithm: a, Labels: sk.Labels,
			Exportable: sk.Exportable, PrimaryVersion: sk.Primary, CreatedAt: sk.CreatedAt}}
		for i, v := range sk.Versions {
			if v.Version != i+1 {
				return nil, fmt.Errorf("key %q: versions out of order", sk.ID)
			}
			kv := kms.KeyVersion{Version: v.Version, State: kms.VersionState(v.State), CreatedAt: v.CreatedAt, DestroyedAt: v.DestroyedAt}
			switch kv.State {
			case kms.StateEnabled:
				m, err := parse(a, append([]byte(nil), v.Seed...))
				if err != nil {
					return nil, fmt.Errorf("key %q version %d: %v", sk.ID, v.Version, err)
				}
				kv.PublicKey = m.public
				e.material[v.Version] = m
			case kms.StateDestroyed:
			default:
				return nil, fmt.Errorf("key %q version %d: state %q", sk.ID, v.Version, v.State)
			}
			clear(v.Seed)
			e.meta.Versions = append(e.meta.Versions, kv)
		}
		if sk.Primary < 1 || sk.Primary > len(sk.Versions) {
			return nil, fmt.Errorf("key %q: primary version %d", sk.ID, sk.Primary)
		}
		keys[sk.ID] = e
	}
	return keys, nil
}

// persist seals keys and replaces the file. Caller holds mu for writing
// (or is Open, before the keystore is shared).
func (ks *Keystore) persist(keys map[string]*entry) error {
	ids := make([]string, 0, len(keys))
	for id := range keys {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	set := storedSet{Keys: make([]storedKey, 0, len(ids))}
	for _, id := range ids {
		e := keys[id]
		sk := storedKey{ID: id, Algorithm: string(e.meta.Algorithm), Labels: e.meta.Labels, Exportable: e.meta.Exportable,
			Primary: e.meta.PrimaryVersion, CreatedAt: e.meta.CreatedAt}
		for _, v := range e.meta.Versions {
			sv := storedVersion{Version: v.Version, State: string(v.State), CreatedAt: v.CreatedAt, DestroyedAt: v.DestroyedAt}
			if m := e.material[v.Version]; m != nil {
				sv.Seed = m.seed
			}
			sk.Versions = append(sk.Versions, sv)
		}
		set.Keys = append(set.Keys, sk)
	}
	pt, err := json.Marshal(set)
	if err != nil {
		return fmt.Errorf("keystore %s: encode: %w", ks.path, err)
	}
	defer clear(pt)
	data, err := ks.fk.seal(ks.rnd, pt)
	if err != nil {
		return fmt.Errorf("keystore %s: %w", ks.path, err)
	}
	if err := ks.writeFile(ks.path, data); err != nil {
		return fmt.Errorf("keystore %s: write: %w", ks.path, err)
	}
	return nil
}

// writeAtomic replaces the keystore file: temp file in the same directory,
// 0600, fsync, rename, fsync of the directory.
func writeAtomic(path string, data []byte) error { return atomicfile.Write(path, data, 0o600) }

// Close zeroizes all in-memory key material.
func (ks *Keystore) Close() error {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if ks.closed {
		return nil
	}
	ks.closed = true
	for _, e := range ks.keys {
		for _, m := range e.material {
			m.clear()
		}
	}
	ks.keys = nil
	ks.fk.clear()
	return nil
}

func cloneKey(k *kms.Key) *kms.Key {
	c := *k
	if k.Labels != nil {
		c.Labels = make(map[string]string, len(k.Labels))
		for a, b := range k.Labels {
			c.Labels[a] = b
		}
	}
	c.Versions = append([]kms.KeyVersion(nil), k.Versions...)
	return &c
}

func invalid(format string, args ...any) error {
	return fmt.Errorf(format+": %w", append(args, errdef.ErrInvalidArgument)...)
}

// lookup returns the entry and the version (0: primary) with its material.
// Caller holds mu.
func (ks *Keystore) lookup(id string, version int) (*entry, int, *material, error) {
	if ks.closed {
		return nil, 0, nil, ErrClosed
	}
	e, ok := ks.keys[id]
	if !ok {
		return nil, 0, nil, fmt.Errorf("key %q: %w", id, kms.ErrKeyNotFound)
	}
	if version == 0 {
		version = e.meta.PrimaryVersion
	}
	if version < 0 || version > len(e.meta.Versions) {
		return nil, 0, nil, fmt.Errorf("key %q version %d: %w", id, version, kms.ErrVersionNotFound)
	}
	m := e.material[version]
	if m == nil {
		return nil, 0, nil, fmt.Errorf("key %q version %d: %w", id, version, kms.ErrKeyDestroyed)
	}
	return e, version, m, nil
}

func wantPurpose(e *entry, p kms.Purpose) error {
	if got, _ := kms.PurposeOf(e.meta.Algorithm); got != p {
		return fmt.Errorf("key %q is %s (%s), not for %s: %w", e.meta.ID, e.meta.Algorithm, got, p, kms.ErrWrongPurpose)
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
	if req.ID != "" && !idRE.MatchString(req.ID) {
		return nil, invalid("key id %q must match [A-Za-z0-9._-]{1,128}", req.ID)
	}
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if ks.closed {
		return nil, ErrClosed
	}
	id := req.ID
	if id == "" {
		b := make([]byte, 16)
		if _, err := io.ReadFull(ks.rnd, b); err != nil {
			return nil, fmt.Errorf("key id: %w", err)
		}
		id = "k-" + hex.EncodeToString(b)
	}
	if _, dup := ks.keys[id]; dup {
		return nil, fmt.Errorf("key %q: %w", id, kms.ErrKeyExists)
	}
	seed, err := newSeed(req.Algorithm, ks.rnd)
	if err != nil {
		return nil, err
	}
	m, err := parse(req.Algorithm, seed)
	if err != nil {
		clear(seed)
		return nil, err
	}
	now := ks.now().UTC()
	var labels map[string]string
	if len(req.Labels) > 0 {
		labels = make(map[string]string, len(req.Labels))
		for k, v := range req.Labels {
			labels[k] = v
		}
	}
	e := &entry{
		meta: kms.Key{ID: id, Algorithm: req.Algorithm, Labels: labels, Exportable: req.Exportable, PrimaryVersion: 1, CreatedAt: now,
			Versions: []kms.KeyVersion{{Version: 1, State: kms.StateEnabled, CreatedAt: now, PublicKey: m.public}}},
		material: map[int]*material{1: m},
	}
	ks.keys[id] = e
	if err := ks.persist(ks.keys); err != nil {
		delete(ks.keys, id)
		m.clear()
		return nil, err
	}
	ks.log.Info("generated key", "key_id", id, "algorithm", req.Algorithm)
	return &kms.GenerateKeyResponse{Key: cloneKey(&e.meta)}, nil
}

// GetKey implements kms.KMS.
func (ks *Keystore) GetKey(_ context.Context, req *kms.GetKeyRequest) (*kms.GetKeyResponse, error) {
	ks.mu.RLock()
	defer ks.mu.RUnlock()
	if ks.closed {
		return nil, ErrClosed
	}
	e, ok := ks.keys[req.ID]
	if !ok {
		return nil, fmt.Errorf("key %q: %w", req.ID, kms.ErrKeyNotFound)
	}
	return &kms.GetKeyResponse{Key: cloneKey(&e.meta)}, nil
}

// ListKeys implements kms.KMS. The page token is the last ID returned.
func (ks *Keystore) ListKeys(_ context.Context, req *kms.ListKeysRequest) (*kms.ListKeysResponse, error) {
	size := req.PageSize
	switch {
	case size < 0 || size > 1000:
		return nil, invalid("page size %d outside 0..1000", size)
	case size == 0:
		size = 100
	}
	ks.mu.RLock()
	defer ks.mu.RUnlock()
	if ks.closed {
		return nil, ErrClosed
	}
	ids := make([]string, 0, len(ks.keys))
	for id := range ks.keys {
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
	for _, id := range ids {
		out.Keys = append(out.Keys, cloneKey(&ks.keys[id].meta))
	}
	return out, nil
}

// PublicKey implements kms.KMS.
func (ks *Keystore) PublicKey(_ context.Context, req *kms.PublicKeyRequest) (*kms.PublicKeyResponse, error) {
	ks.mu.RLock()
	defer ks.mu.RUnlock()
	e, v, m, err := ks.lookup(req.ID, req.Version)
	if err != nil {
		return nil, err
	}
	if p, _ := kms.PurposeOf(e.meta.Algorithm); p == kms.PurposeEncrypt {
		return nil, fmt.Errorf("key %q is symmetric: %w", req.ID, kms.ErrWrongPurpose)
	}
	return &kms.PublicKeyResponse{Algorithm: e.meta.Algorithm, Version: v, PublicKey: append([]byte(nil), m.public...)}, nil
}

func checkContext(a kms.Algorithm, c []byte) error {
	switch a {
	case kms.MLDSA44, kms.MLDSA65, kms.MLDSA87:
		if len(c) > 255 {
			return invalid("context of %d bytes exceeds 255", len(c))
		}
	default:
		if len(c) > 0 {
			return invalid("%s takes no context string", a)
		}
	}
	return nil
}

// Sign implements kms.KMS.
func (ks *Keystore) Sign(ctx context.Context, req *kms.SignRequest) (*kms.SignResponse, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(req.Message) > kms.MaxMessageSize {
		return nil, invalid("message of %d bytes exceeds %d", len(req.Message), kms.MaxMessageSize)
	}
	ks.mu.RLock()
	defer ks.mu.RUnlock()
	e, v, m, err := ks.lookup(req.ID, 0)
	if err != nil {
		return nil, err
	}
	if err := wantPurpose(e, kms.PurposeSign); err != nil {
		return nil, err
	}
	if err := checkContext(e.meta.Algorithm, req.Context); err != nil {
		return nil, err
	}
	sig, err := m.signer.sign(ks.rnd, req.Message, req.Context)
	if err != nil {
		return nil, fmt.Errorf("sign with %q: %w", req.ID, err)
	}
	return &kms.SignResponse{Signature: sig, Version: v}, nil
}

// Verify implements kms.KMS.
func (ks *Keystore) Verify(_ context.Context, req *kms.VerifyRequest) (*kms.VerifyResponse, error) {
	if len(req.Message) > kms.MaxMessageSize {
		return nil, invalid("message of %d bytes exceeds %d", len(req.Message), kms.MaxMessageSize)
	}
	ks.mu.RLock()
	defer ks.mu.RUnlock()
	e, _, m, err := ks.lookup(req.ID, req.Version)
	if err != nil {
		return nil, err
	}
	if err := wantPurpose(e, kms.PurposeSign); err != nil {
		return nil, err
	}
	if err := checkContext(e.meta.Algorithm, req.Context); err != nil {
		return nil, err
	}
	return &kms.VerifyResponse{Valid: m.verifier(req.Message, req.Context, req.Signature)}, nil
}

// Decapsulate implements kms.KMS.
func (ks *Keystore) Decapsulate(ctx context.Context, req *kms.DecapsulateRequest) (*kms.DecapsulateResponse, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ks.mu.RLock()
	defer ks.mu.RUnlock()
	e, _, m, err := ks.lookup(req.ID, req.Version)
	if err != nil {
		return nil, err
	}
	if err := wantPurpose(e, kms.PurposeKEM); err != nil {
		return nil, err
	}
	if len(req.Ciphertext) != m.kemS.CiphertextSize() {
		return nil, fmt.Errorf("%s ciphertext of %d bytes, want %d: %w", e.meta.Algorithm, len(req.Ciphertext), m.kemS.CiphertextSize(), kms.ErrInvalidCiphertext)
	}
	ss, err := m.kemS.Decapsulate(m.kemSK, req.Ciphertext)
	if err != nil {
		return nil, fmt.Errorf("decapsulate with %q: %v: %w", req.ID, err, kms.ErrInvalidCiphertext)
	}
	return &kms.DecapsulateResponse{SharedSecret: ss}, nil
}

// Envelope ciphertext: version byte 1, key version (uint32 BE), 12-byte
// nonce, AES-256-GCM sealed data. The AAD binds the caller's AAD to the key
// ID and version.
const envelopeV1 = 1

func envelopeAAD(id string, version int, aad []byte) []byte {
	b := make([]byte, 0, len(id)+len(aad)+16)
	b = append(b, "avon kms-soft envelope v1\x00"...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(id)))
	b = append(b, id...)
	b = binary.BigEndian.AppendUint32(b, uint32(version))
	return append(b, aad...)
}

func gcmFor(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// Encrypt implements kms.KMS.
func (ks *Keystore) Encrypt(ctx context.Context, req *kms.EncryptRequest) (*kms.EncryptResponse, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(req.Plaintext) > kms.MaxMessageSize {
		return nil, invalid("plaintext of %d bytes exceeds %d", len(req.Plaintext), kms.MaxMessageSize)
	}
	ks.mu.RLock()
	defer ks.mu.RUnlock()
	e, v, m, err := ks.lookup(req.ID, 0)
	if err != nil {
		return nil, err
	}
	if err := wantPurpose(e, kms.PurposeEncrypt); err != nil {
		return nil, err
	}
	g, err := gcmFor(m.aesKey)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 5+12, 5+12+len(req.Plaintext)+16)
	out[0] = envelopeV1
	binary.BigEndian.PutUint32(out[1:], uint32(v))
	if _, err := io.ReadFull(ks.rnd, out[5:17]); err != nil {
		return nil, fmt.Errorf("nonce: %w", err)
	}
	out = g.Seal(out, out[5:17], req.Plaintext, envelopeAAD(req.ID, v, req.AAD))
	return &kms.EncryptResponse{Ciphertext: out, Version: v}, nil
}

// Decrypt implements kms.KMS.
func (ks *Keystore) Decrypt(_ context.Context, req *kms.DecryptRequest) (*kms.DecryptResponse, error) {
	c := req.Ciphertext
	if len(c) < 5+12+16 || c[0] != envelopeV1 {
		return nil, fmt.Errorf("malformed envelope: %w", kms.ErrInvalidCiphertext)
	}
	v := int(binary.BigEndian.Uint32(c[1:]))
	if v == 0 {
		return nil, fmt.Errorf("envelope names version 0: %w", kms.ErrInvalidCiphertext)
	}
	ks.mu.RLock()
	defer ks.mu.RUnlock()
	e, _, m, err := ks.lookup(req.ID, v)
	if err != nil {
		if errors.Is(err, kms.ErrVersionNotFound) {
			return nil, fmt.Errorf("%v: %w", err, kms.ErrInvalidCiphertext)
		}
		return nil, err
	}
	if err := wantPurpose(e, kms.PurposeEncrypt); err != nil {
		return nil, err
	}
	g, err := gcmFor(m.aesKey)
	if err != nil {
		return nil, err
	}
	pt, err := g.Open(nil, c[5:17], c[17:], envelopeAAD(req.ID, v, req.AAD))
	if err != nil {
		return nil, fmt.Errorf("decrypt with %q: %w", req.ID, kms.ErrInvalidCiphertext)
	}
	return &kms.DecryptResponse{Plaintext: pt}, nil
}

// RotateKey implements kms.KMS.
func (ks *Keystore) RotateKey(ctx context.Context, req *kms.RotateKeyRequest) (*kms.RotateKeyResponse, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ks.mu.Lock()
	defer ks.mu.Unlock()
	e, _, _, err := ks.lookup(req.ID, 0)
	if err != nil {
		return nil, err
	}
	seed, err := newSeed(e.meta.Algorithm, ks.rnd)
	if err != nil {
		return nil, err
	}
	m, err := parse(e.meta.Algorithm, seed)
	if err != nil {
		clear(seed)
		return nil, err
	}
	old := e.meta
	old.Versions = append([]kms.KeyVersion(nil), e.meta.Versions...)
	v := len(e.meta.Versions) + 1
	e.meta.Versions = append(e.meta.Versions, kms.KeyVersion{Version: v, State: kms.StateEnabled, CreatedAt: ks.now().UTC(), PublicKey: m.public})
	e.meta.PrimaryVersion = v
	e.material[v] = m
	if err := ks.persist(ks.keys); err != nil {
		e.meta = old
		delete(e.material, v)
		m.clear()
		return nil, err
	}
	ks.log.Info("rotated key", "key_id", req.ID, "version", v)
	return &kms.RotateKeyResponse{Key: cloneKey(&e.meta)}, nil
}

// DestroyKey implements kms.KMS.
func (ks *Keystore) DestroyKey(ctx context.Context, req *kms.DestroyKeyRequest) (*kms.DestroyKeyResponse, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if ks.closed {
		return nil, ErrClosed
	}
	e, ok := ks.keys[req.ID]
	if !ok {
		return nil, fmt.Errorf("key %q: %w", req.ID, kms.ErrKeyNotFound)
	}
	var targets []int
	if req.Version == 0 {
		for v := range e.material {
			targets = append(targets, v)
		}
		if len(targets) == 0 {
			return nil, fmt.Errorf("key %q: %w", req.ID, kms.ErrKeyDestroyed)
		}
	} else {
		if _, _, _, err := ks.lookup(req.ID, req.Version); err != nil {
			return nil, err
		}
		if req.Version == e.meta.PrimaryVersion && len(e.material) > 1 {
			return nil, invalid("key %q: version %d is primary and other versions are enabled; rotate first", req.ID, req.Version)
		}
		targets = []int{req.Version}
	}
	old := e.meta
	old.Versions = append([]kms.KeyVersion(nil), e.meta.Versions...)
	saved := map[int]*material{}
	now := ks.now().UTC()
	for _, v := range targets {
		saved[v] = e.material[v]
		delete(e.material, v)
		e.meta.Versions[v-1].State = kms.StateDestroyed
		e.meta.Versions[v-1].DestroyedAt = now
		e.meta.Versions[v-1].PublicKey = nil
	}
	if err := ks.persist(ks.keys); err != nil {
		e.meta = old
		for v, m := range saved {
			e.material[v] = m
		}
		return nil, err
	}
	for _, m := range saved {
		m.clear()
	}
	ks.log.Info("destroyed key material", "key_id", req.ID, "versions", fmt.Sprint(targets))
	return &kms.DestroyKeyResponse{Key: cloneKey(&e.meta)}, nil
}

// ExportKey implements kms.Exporter for keys made with Exportable.
func (ks *Keystore) ExportKey(_ context.Context, req *kms.ExportKeyRequest) (*kms.ExportKeyResponse, error) {
	ks.mu.RLock()
	defer ks.mu.RUnlock()
	e, v, m, err := ks.lookup(req.ID, req.Version)
	if err != nil {
		return nil, err
	}
	if !e.meta.Exportable {
		return nil, fmt.Errorf("key %q: %w", req.ID, kms.ErrNotExportable)
	}
	ks.log.Warn("exported key material", "key_id", req.ID, "version", v)
	return &kms.ExportKeyResponse{Algorithm: e.meta.Algorithm, Version: v, PrivateKey: append([]byte(nil), m.seed...)}, nil
}

var (
	_ kms.KMS      = (*Keystore)(nil)
	_ kms.Exporter = (*Keystore)(nil)
)
