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
//
// Shared keystores: with Options.Shared the same sealed image lives in a
// store every replica reads (kms-soft keeps it in the core's storage)
// instead of a file. Every write is conditional on the version it started
// from; a mutation first re-reads the image, and one that lost a race
// reads it again and retries, so replicas that generate, rotate or
// destroy keys at the same time lose nothing. Refresh reloads the image
// when another replica changed it.
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

	// Shared keeps the keystore in a shared store instead of the file at
	// Path (which then only names it in messages).
	Shared Shared

	// writeFile replaces the keystore file (tests inject failures).
	writeFile func(path string, data []byte) error
}

// Shared holds a keystore's sealed image where several processes (core
// replicas) read and write it. Versions change with every write and are
// never reused.
type Shared interface {
	// Load returns the image and its version; an error wrapping
	// fs.ErrNotExist when there is none yet.
	Load(ctx context.Context) (data []byte, version int64, err error)
	// Store replaces the image if its version is still ifVersion (0: there
	// is none yet) and returns the new version; an error wrapping
	// ErrConflict if it is not.
	Store(ctx context.Context, data []byte, ifVersion int64) (int64, error)
}

// sharedTimeout bounds Open's and Refresh's calls to a Shared store when
// the caller gives no deadline.
const sharedTimeout = 30 * time.Second

// maxConflictRetries is how many times a mutation of a Shared keystore
// starts again after another writer won the race.
const maxConflictRetries = 8

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
		shared    Shared // nil: the file at path
		version   int64  // of the shared image the keys were read from or written as
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
	if opts.Shared != nil {
		return ks.openShared(opts)
	}

	st, err := os.Lstat(opts.Path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := ks.create(context.Background(), opts); err != nil {
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
	if err := ks.load(data, opts); err != nil {
		return nil, err
	}
	return ks, nil
}

// openShared opens (or creates) the keystore of opts.Shared.
func (ks *Keystore) openShared(opts Options) (*Keystore, error) {
	ks.write.shared = opts.Shared
	ctx, cancel := context.WithTimeout(context.Background(), sharedTimeout)
	defer cancel()
	for range 2 {
		data, version, err := opts.Shared.Load(ctx)
		if errors.Is(err, fs.ErrNotExist) {
			err = ks.create(ctx, opts)
			if errors.Is(err, ErrConflict) {
				// Another replica created it first: open theirs.
				continue
			}
			if err != nil {
				return nil, err
			}
			return ks, nil
		}
		if err != nil {
			return nil, fmt.Errorf("keystore %s: load: %w", opts.Path, err)
		}
		if len(data) > maxFileSize {
			return nil, fmt.Errorf("keystore %s: %w: %d bytes is more than a keystore holds", opts.Path, ErrTampered, len(data))
		}
		if err := ks.load(data, opts); err != nil {
			return nil, err
		}
		ks.write.version = version
		return ks, nil
	}
	return nil, fmt.Errorf("keystore %s: created and replaced while opening: %w", opts.Path, ErrConflict)
}

// load decrypts a keystore image with opts.Passphrase into ks.
func (ks *Keystore) load(data []byte, opts Options) error {
	fk, pt, err := openFile(data, opts.Passphrase)
	if err != nil {
		return fmt.Errorf("keystore %s: %w", opts.Path, err)
	}
	keys, err := decodeSet(pt)
	clear(pt)
	if err != nil {
		fk.clear()
		return fmt.Errorf("keystore %s: %w: %v", opts.Path, ErrTampered, err)
	}
	if fk.params.Validate() != nil {
		ks.log.Warn("keystore KDF parameters are below the floor; recreate it with stronger ones",
			"path", opts.Path, "time", fk.params.Time, "memory_kib", fk.params.MemoryKiB)
	}
	ks.write.fk = fk
	ks.state.keys = keys
	ks.log.Debug("opened keystore", "path", opts.Path, "keys", len(keys), "shared", ks.write.shared != nil)
	return nil
}

// create makes a new, empty keystore.
func (ks *Keystore) create(ctx context.Context, opts Options) error {
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
	if ks.write.shared == nil {
		if err := os.MkdirAll(filepath.Dir(opts.Path), 0o700); err != nil {
			fk.clear()
			return fmt.Errorf("keystore %s: %w", opts.Path, err)
		}
	}
	ks.write.fk = fk
	keys := map[string]*entry{}
	if err := ks.persistLocked(ctx, keys); err != nil {
		fk.clear()
		ks.write.fk = nil
		return err
	}
	ks.state.keys = keys
	ks.log.Info("created keystore", "path", opts.Path, "kdf_time", p.Time, "kdf_memory_kib", p.MemoryKiB)
	return nil
}

// writeAtomic replaces the keystore file: temp file in the same directory,
// 0600, fsync, rename, fsync of the directory.
func writeAtomic(path string, data []byte) error { return atomicfile.Write(path, data, 0o600) }

// persistLocked seals keys and replaces the file or the shared image
// (conditionally on the version last read or written). Caller holds write
// (or is create, before the keystore is shared).
func (ks *Keystore) persistLocked(ctx context.Context, keys map[string]*entry) error {
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
	if sh := ks.write.shared; sh != nil {
		v, err := sh.Store(ctx, data, ks.write.version)
		if err != nil {
			return fmt.Errorf("keystore %s: store: %w", ks.path, err)
		}
		ks.write.version = v
		return nil
	}
	if err := ks.write.writeFile(ks.path, data); err != nil {
		return fmt.Errorf("keystore %s: write: %w", ks.path, err)
	}
	return nil
}

// Refresh reloads a Shared keystore if another process changed it since
// this one last read or wrote it: keys generated elsewhere become usable,
// rotations and destructions take effect. It is a no-op for a file
// keystore. On error the keys in force stay.
func (ks *Keystore) Refresh(ctx context.Context) error {
	ks.write.Lock()
	defer ks.write.Unlock()
	if ks.state.closed {
		return fmt.Errorf("keystore %s is closed: %w", ks.path, ErrClosed)
	}
	if ks.write.shared == nil {
		return nil
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, sharedTimeout)
		defer cancel()
	}
	return ks.refreshLocked(ctx)
}

// refreshLocked is Refresh with write held.
func (ks *Keystore) refreshLocked(ctx context.Context) error {
	data, version, err := ks.write.shared.Load(ctx)
	if err != nil {
		return fmt.Errorf("keystore %s: load: %w", ks.path, err)
	}
	if version == ks.write.version {
		return nil
	}
	if len(data) > maxFileSize {
		return fmt.Errorf("keystore %s: %w: %d bytes is more than a keystore holds", ks.path, ErrTampered, len(data))
	}
	pt, err := ks.write.fk.open(data)
	if err != nil {
		return fmt.Errorf("keystore %s: %w", ks.path, err)
	}
	keys, err := decodeSet(pt)
	clear(pt)
	if err != nil {
		return fmt.Errorf("keystore %s: %w: %v", ks.path, ErrTampered, err)
	}
	ks.state.Lock()
	old := ks.state.keys
	ks.state.keys = keys
	ks.state.Unlock()
	ks.write.version = version
	// No reader can reach the old material any more (readers hold the
	// state lock for their whole operation).
	for _, e := range old {
		e.clear()
	}
	ks.log.Debug("reloaded shared keystore", "path", ks.path, "keys", len(keys), "version", version)
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
	for attempt := 0; ; attempt++ {
		if ks.write.shared != nil {
			// Start from what the other replicas wrote.
			if err := ks.refreshLocked(ctx); err != nil {
				return nil, err
			}
		}
		cur := ks.state.keys
		id, e, retired, undo, err := change(cur)
		if err != nil {
			return nil, err
		}
		next := maps.Clone(cur)
		next[id] = e
		if err := ks.persistLocked(ctx, next); err != nil {
			if undo != nil {
				undo()
			}
			if errors.Is(err, ErrConflict) && attempt < maxConflictRetries {
				ks.log.Debug("shared keystore changed meanwhile; starting the change again", "path", ks.path, "attempt", attempt+1)
				continue
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
