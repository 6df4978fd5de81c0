// Package keystore is kms-soft's engine: a set of keys encrypted at rest in
// one file (FORMAT.md, file.go, codec.go), implementing kms.KMS and
// kms.Exporter. It must not talk to the host or the network, and it must not
// draw randomness from anywhere but Options.Rand: every key, salt, nonce and
// ML-DSA hedge comes from there (ECDSA's per-signature noise is the one
// exception Go imposes; see FORMAT.md).
//
// Lifecycle: Open decrypts the file (or creates it) and parses every
// enabled key version into memory; operations then run from memory. Only
// GenerateKey, RotateKey and DestroyKey write: they seal the whole new key
// set under a fresh nonce, write it to a temporary file in the same
// directory (0600), fsync it, rename it over the keystore and fsync the
// directory, and publish the new state in memory only once that succeeded,
// so a failed write changes nothing. Close zeroizes the in-memory material.
package keystore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/avonzt/avon/internal/atomicfile"
	"github.com/avonzt/avon/sdk/kms"
)

// Options configure Open.
type Options struct {
	// Path is the keystore file, for example <plugin data dir>/keystore.avks.
	// Its directory is created (0700) if absent.
	Path string
	// Passphrase unlocks the keystore (from the environment or a key file).
	// Open does not keep it; the caller zeroizes it after Open returns.
	Passphrase []byte
	// Rand is the host RNG. Every key, salt, nonce and hedge comes from it;
	// the keystore serializes its reads, so it need not be safe for
	// concurrent use.
	Rand io.Reader
	// Now is the clock for creation and destruction times (default time.Now).
	Now func() time.Time
	// KDF is the Argon2id cost of a NEW keystore (zero: DefaultKDF). It must
	// not be below MinKDF unless AllowWeakKDF is set. An existing file keeps
	// the parameters it was made with.
	KDF KDFParams
	// AllowWeakKDF lets a new keystore use KDF parameters below MinKDF (for
	// example TestKDF). It is for tests only: never set it from
	// configuration.
	AllowWeakKDF bool
	// Logger receives lifecycle events (key IDs and versions, never
	// material). Default: no logging.
	Logger hclog.Logger

	// writeFile replaces the keystore file (tests inject failures).
	writeFile func(path string, data []byte) error
}

// Keystore is an open keystore. Its methods are safe for concurrent use.
//
// Locking: state is grouped by the lock that guards it.
//   - write serializes the mutations (GenerateKey, RotateKey, DestroyKey,
//     Close) and owns the file and fileKeys. A goroutine holding write may
//     read state without state's lock, since only holders of write change it.
//   - state is what operations read. Readers hold state.RLock for the whole
//     operation, so material cannot be zeroized under them. A mutation,
//     holding write, builds a new keys map with copied entries (entries are
//     immutable once published), writes the file, and only then takes
//     state.Lock to publish the map; material it retired is zeroized after
//     that, when no reader can reach it any more.
//   - rand serializes reads of Options.Rand.
//
// Lock order: write, then state; rand is taken last and alone.
type Keystore struct {
	path string
	now  func() time.Time
	log  hclog.Logger
	rand lockedReader

	write struct {
		sync.Mutex
		fk        *fileKeys // the file's keys and header; nil once closed
		writeFile func(path string, data []byte) error
	}

	state struct {
		sync.RWMutex
		keys   map[string]*entry // by ID; replaced, never modified, by mutations
		closed bool
	}
}

// entry is one key: its metadata and the material of its enabled versions.
// It is immutable once published in state.keys; mutations publish a copy.
type entry struct {
	meta     kms.Key           // Versions[i].PublicKey is shared with material.public
	material map[int]*material // by version; enabled versions only
}

// clone copies e for a mutation: new metadata slices and a new material
// map that shares the (immutable) material values.
func (e *entry) clone() *entry {
	c := &entry{meta: e.meta, material: maps.Clone(e.material)}
	c.meta.Labels = maps.Clone(e.meta.Labels)
	c.meta.Versions = append([]kms.KeyVersion(nil), e.meta.Versions...)
	return c
}

// clear zeroizes the material of every version of e.
func (e *entry) clear() {
	for _, m := range e.material {
		m.clear()
	}
}

// lockedReader serializes reads of a reader that may not be safe for
// concurrent use, and makes every draw one io.ReadFull.
type lockedReader struct {
	mu sync.Mutex
	r  io.Reader
}

func (l *lockedReader) Read(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return io.ReadFull(l.r, p)
}

// Open opens the keystore at opts.Path, creating it if it does not exist.
// Errors opening an existing file wrap ErrWrongPassphrase or ErrTampered
// where they apply; a file readable or writable by group or others is
// refused.
func Open(opts Options) (*Keystore, error) {
	if opts.Path == "" {
		return nil, errors.New("keystore: empty path")
	}
	if opts.Rand == nil {
		return nil, fmt.Errorf("keystore %s: no randomness source", opts.Path)
	}
	if len(opts.Passphrase) == 0 {
		return nil, fmt.Errorf("keystore %s: empty passphrase", opts.Path)
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
	ks := &Keystore{path: opts.Path, now: opts.Now, log: opts.Logger, rand: lockedReader{r: opts.Rand}}
	ks.write.writeFile = opts.writeFile

	st, err := os.Lstat(opts.Path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := ks.create(opts); err != nil {
			return nil, err
		}
		return ks, nil
	case err != nil:
		return nil, fmt.Errorf("keystore %s: %w", opts.Path, err)
	case !st.Mode().IsRegular():
		// A symlink would be replaced by a regular file on the first write.
		return nil, fmt.Errorf("keystore %s is not a regular file (mode %s)", opts.Path, st.Mode())
	case st.Mode().Perm()&0o077 != 0:
		return nil, fmt.Errorf("keystore %s has mode %04o: it must not be accessible by group or others (chmod 600)", opts.Path, st.Mode().Perm())
	case st.Size() > maxFileSize:
		return nil, fmt.Errorf("keystore %s: %w: %d bytes is more than a keystore holds", opts.Path, ErrTampered, st.Size())
	}
	data, err := os.ReadFile(opts.Path)
	if err != nil {
		return nil, fmt.Errorf("keystore %s: %w", opts.Path, err)
	}
	fk, pt, err := openFile(data, opts.Passphrase)
	if err != nil {
		return nil, fmt.Errorf("keystore %s: %w", opts.Path, err)
	}
	keys, err := decodeSet(pt)
	clear(pt)
	if err != nil {
		fk.clear()
		return nil, fmt.Errorf("keystore %s: %w: %v", opts.Path, ErrTampered, err)
	}
	if fk.params.Validate() != nil {
		ks.log.Warn("keystore KDF parameters are below the floor; recreate it with stronger ones",
			"path", opts.Path, "time", fk.params.Time, "memory_kib", fk.params.MemoryKiB)
	}
	ks.write.fk = fk
	ks.state.keys = keys
	ks.log.Debug("opened keystore", "path", opts.Path, "keys", len(keys))
	return ks, nil
}

// create makes a new, empty keystore file.
func (ks *Keystore) create(opts Options) error {
	p := opts.KDF
	if p == (KDFParams{}) {
		p = DefaultKDF
	}
	check := p.Validate
	if opts.AllowWeakKDF {
		check = p.plausible
	}
	if err := check(); err != nil {
		return fmt.Errorf("keystore %s: %w", opts.Path, err)
	}
	salt := make([]byte, checkOffset-saltOffset)
	if _, err := ks.rand.Read(salt); err != nil {
		return fmt.Errorf("keystore %s: draw salt: %w", opts.Path, err)
	}
	fk, err := deriveKeys(opts.Passphrase, salt, p)
	if err != nil {
		return fmt.Errorf("keystore %s: %w", opts.Path, err)
	}
	if err := os.MkdirAll(filepath.Dir(opts.Path), 0o700); err != nil {
		fk.clear()
		return fmt.Errorf("keystore %s: %w", opts.Path, err)
	}
	ks.write.fk = fk
	keys := map[string]*entry{}
	if err := ks.persistLocked(keys); err != nil {
		fk.clear()
		return err
	}
	ks.state.keys = keys
	ks.log.Info("created keystore", "path", opts.Path, "kdf_time", p.Time, "kdf_memory_kib", p.MemoryKiB)
	return nil
}

// writeAtomic replaces the keystore file: temp file in the same directory,
// 0600, fsync, rename, fsync of the directory.
func writeAtomic(path string, data []byte) error { return atomicfile.Write(path, data, 0o600) }

// persistLocked seals keys and replaces the file. Caller holds write (or
// is create, before the keystore is shared).
func (ks *Keystore) persistLocked(keys map[string]*entry) error {
	pt, err := encodeSet(keys)
	if err != nil {
		return fmt.Errorf("keystore %s: %w", ks.path, err)
	}
	defer clear(pt)
	nonce := make([]byte, headerSize-nonceOffset)
	if _, err := ks.rand.Read(nonce); err != nil {
		return fmt.Errorf("keystore %s: draw nonce: %w", ks.path, err)
	}
	data, err := ks.write.fk.seal(nonce, pt)
	if err != nil {
		return fmt.Errorf("keystore %s: seal: %w", ks.path, err)
	}
	if err := ks.write.writeFile(ks.path, data); err != nil {
		return fmt.Errorf("keystore %s: write: %w", ks.path, err)
	}
	return nil
}

// mutate runs a mutation: with write held it calls change with the current
// keys (read-only); change returns the entry to publish under id and the
// material it retires. mutate writes the new set, publishes it, then
// zeroizes the retired material. If anything fails, nothing changes and
// the caller's undo (if any) releases what change built.
func (ks *Keystore) mutate(ctx context.Context, change func(keys map[string]*entry) (id string, e *entry, retired []*material, undo func(), err error)) (*entry, error) {
	ks.write.Lock()
	defer ks.write.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// Reading state without its lock is safe here: only holders of write
	// change it.
	if ks.state.closed {
		return nil, fmt.Errorf("keystore %s is closed: %w", ks.path, ErrClosed)
	}
	cur := ks.state.keys
	id, e, retired, undo, err := change(cur)
	if err != nil {
		return nil, err
	}
	next := maps.Clone(cur)
	next[id] = e
	if err := ks.persistLocked(next); err != nil {
		if undo != nil {
			undo()
		}
		return nil, err
	}
	ks.state.Lock()
	ks.state.keys = next
	ks.state.Unlock()
	for _, m := range retired {
		m.clear()
	}
	return e, nil
}

// Close zeroizes all in-memory private material and the file keys. Every
// later call fails with ErrClosed. Close is idempotent.
func (ks *Keystore) Close() error {
	ks.write.Lock()
	defer ks.write.Unlock()
	ks.state.Lock()
	defer ks.state.Unlock()
	if ks.state.closed {
		return nil
	}
	ks.state.closed = true
	for _, e := range ks.state.keys {
		e.clear()
	}
	ks.state.keys = nil
	if ks.write.fk != nil {
		ks.write.fk.clear()
		ks.write.fk = nil
	}
	ks.log.Debug("closed keystore", "path", ks.path)
	return nil
}

var (
	_ kms.KMS      = (*Keystore)(nil)
	_ kms.Exporter = (*Keystore)(nil)
)
