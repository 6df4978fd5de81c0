// Package softkms is the plugin side of kms-soft: it reads the plugin's
// configuration, obtains the keystore passphrase (from the configuration or
// a key file), opens the encrypted keystore with the host RNG, and serves
// the kms interface from it. The cryptography and the file format live in
// plugins/kms-soft/keystore; this package holds no key material itself.
package softkms

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/zclconf/go-cty/cty"

	"github.com/avonzt/avon/plugins/kms-soft/keystore"
	"github.com/avonzt/avon/sdk/config"
	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/host"
	"github.com/avonzt/avon/sdk/kms"
	"github.com/avonzt/avon/sdk/plugin"
)

// Version is the plugin's version.
const Version = "0.1.0"

// Config is the plugin's `config { }` body.
type Config struct {
	// Passphrase unlocks the keystore; use env("...") in HCL, never a literal.
	Passphrase string `json:"passphrase"`
	// KeyFile holds the passphrase instead (its whole content, trailing
	// newline trimmed). Relative paths are relative to the plugin data dir.
	KeyFile string `json:"key_file"`
	// CreateKeyFile makes a new random key file (0600) when KeyFile is absent.
	CreateKeyFile bool `json:"create_key_file"`
	// Path of the keystore file; relative to the plugin data dir. With
	// Backend "storage", a file found there when the storage holds no
	// keystore yet is imported once.
	Path string `json:"path"`
	// Backend is where the sealed keystore lives: "file" (default) or
	// "storage" (the core's storage, shared by every replica).
	Backend string `json:"backend"`
	// RefreshInterval is how often a "storage" keystore looks for changes
	// made by other replicas (default 10s).
	RefreshInterval string `json:"refresh_interval"`
	// KDF parameters for a NEW keystore (an existing one keeps its own).
	KDFTime      int `json:"kdf_time"`
	KDFMemoryKiB int `json:"kdf_memory_kib"`
	KDFThreads   int `json:"kdf_threads"`
}

// Schema is the plugin's config schema.
var Schema = config.Schema{Attributes: []config.Attribute{
	{Name: "passphrase", Type: cty.String, Sensitive: true, Default: cty.StringVal(""),
		Description: `passphrase that unlocks the keystore, e.g. env("AVON_KMS_PASSPHRASE"); exactly one of passphrase and key_file`},
	{Name: "key_file", Type: cty.String, Default: cty.StringVal(""),
		Description: "file whose content is the passphrase (relative to the plugin data dir); exactly one of passphrase and key_file"},
	{Name: "create_key_file", Type: cty.Bool, Default: cty.False,
		Description: "create key_file with 32 random bytes (hex, mode 0600) if it does not exist"},
	{Name: "path", Type: cty.String, Default: cty.StringVal("keystore.avks"),
		Description: "keystore file (relative to the plugin data dir)"},
	{Name: "backend", Type: cty.String, Default: cty.StringVal(BackendFile),
		Description: `where the sealed keystore lives: "file" (path, one process) or "storage" (the core's storage: every replica shares it)`},
	{Name: "refresh_interval", Type: cty.String, Default: cty.StringVal(DefaultRefreshInterval.String()),
		Description: `with backend = "storage": how often the keystore is re-read for keys other replicas generated, rotated or destroyed (a key not found is re-read at once)`},
	{Name: "kdf_time", Type: cty.Number, Default: cty.NumberIntVal(int64(keystore.DefaultKDF.Time)),
		Description: "Argon2id passes for a new keystore"},
	{Name: "kdf_memory_kib", Type: cty.Number, Default: cty.NumberIntVal(int64(keystore.DefaultKDF.MemoryKiB)),
		Description: "Argon2id memory in KiB for a new keystore"},
	{Name: "kdf_threads", Type: cty.Number, Default: cty.NumberIntVal(int64(keystore.DefaultKDF.Threads)),
		Description: "Argon2id parallelism for a new keystore"},
}}

// Backends and the default refresh interval of a shared keystore.
const (
	BackendFile            = "file"
	BackendStorage         = "storage"
	DefaultRefreshInterval = 10 * time.Second
	// sharedKey is the storage key of the sealed keystore (in the plugin
	// instance's namespace).
	sharedKey = "keystore"
)

// Plugin is the kms-soft plugin.
type Plugin struct {
	log hclog.Logger

	mu     sync.RWMutex // guards ks, shared and stop; held for reading during every call
	ks     *keystore.Keystore
	shared bool
	stop   chan struct{} // closes the refresh loop of a shared keystore

	// missMu serializes the re-reads a key not found triggers; lastMiss
	// is when the last one started (unix ns). A call that failed before a
	// re-read started needs no re-read of its own.
	missMu   sync.Mutex
	lastMiss int64
}

// New returns an unconfigured plugin.
func New() *Plugin { return &Plugin{log: plugin.NewLogger()} }

// Info implements plugin.Plugin.
func (p *Plugin) Info() plugin.Info {
	algs := make([]string, 0, len(kms.AllAlgorithms))
	for _, a := range kms.AllAlgorithms {
		algs = append(algs, string(a))
	}
	return plugin.Info{Name: "kms-soft", Version: Version, Metadata: map[string]string{"algorithms": strings.Join(algs, ",")}}
}

// ConfigSchema implements plugin.Plugin.
func (p *Plugin) ConfigSchema() config.Schema { return Schema }

func (c *Config) problems() []plugin.Problem {
	var ps []plugin.Problem
	switch {
	case c.Passphrase == "" && c.KeyFile == "":
		ps = append(ps, plugin.Problem{Summary: "no keystore passphrase", Detail: `set passphrase = env("AVON_KMS_PASSPHRASE") or key_file = "..."`})
	case c.Passphrase != "" && c.KeyFile != "":
		ps = append(ps, plugin.Problem{Attribute: "key_file", Summary: "both passphrase and key_file are set", Detail: "set exactly one"})
	}
	if c.CreateKeyFile && c.KeyFile == "" {
		ps = append(ps, plugin.Problem{Attribute: "create_key_file", Summary: "create_key_file needs key_file"})
	}
	if c.Passphrase != "" && len(c.Passphrase) < 12 {
		ps = append(ps, plugin.Problem{Attribute: "passphrase", Summary: "passphrase shorter than 12 characters"})
	}
	if c.Path == "" {
		ps = append(ps, plugin.Problem{Attribute: "path", Summary: "empty keystore path"})
	}
	if c.Backend != "" && c.Backend != BackendFile && c.Backend != BackendStorage {
		ps = append(ps, plugin.Problem{Attribute: "backend", Summary: fmt.Sprintf("unknown backend %q", c.Backend), Detail: `use "file" or "storage"`})
	}
	if c.RefreshInterval != "" {
		if d, err := time.ParseDuration(c.RefreshInterval); err != nil || d < time.Second || d > time.Hour {
			ps = append(ps, plugin.Problem{Attribute: "refresh_interval", Summary: fmt.Sprintf("refresh_interval %q: want a duration from 1s to 1h", c.RefreshInterval)})
		}
	}
	if err := (keystore.KDFParams{Time: uint32(max(c.KDFTime, 0)), MemoryKiB: uint32(max(c.KDFMemoryKiB, 0)), Threads: uint8(min(max(c.KDFThreads, 0), 255))}).Validate(); err != nil {
		ps = append(ps, plugin.Problem{Attribute: "kdf_memory_kib", Summary: err.Error()})
	}
	return ps
}

// ValidateConfig implements plugin.ConfigValidator.
func (p *Plugin) ValidateConfig(_ context.Context, raw []byte) []plugin.Problem {
	var c Config
	if err := config.Unmarshal(raw, &c); err != nil {
		return []plugin.Problem{{Summary: err.Error()}}
	}
	return c.problems()
}

func resolve(dataDir, p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(dataDir, p)
}

// passphrase returns the passphrase bytes; the caller zeroizes them.
func passphrase(c *Config, dataDir string, rnd io.Reader) ([]byte, error) {
	if c.Passphrase != "" {
		return []byte(c.Passphrase), nil
	}
	path := resolve(dataDir, c.KeyFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && c.CreateKeyFile {
		raw := make([]byte, 32)
		if _, err := io.ReadFull(rnd, raw); err != nil {
			return nil, fmt.Errorf("create key file: %w", err)
		}
		b = []byte(hex.EncodeToString(raw))
		clear(raw)
		if err := writeKeyFile(path, b); err != nil {
			clear(b)
			return nil, err
		}
		return b, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read key file: %w", err)
	}
	st, err := os.Stat(path)
	if err == nil && st.Mode().Perm()&0o077 != 0 {
		clear(b)
		return nil, fmt.Errorf("key file %s has mode %o; it must not be readable by group or others (chmod 600)", path, st.Mode().Perm())
	}
	trimmed := []byte(strings.TrimRight(string(b), "\r\n"))
	clear(b)
	if len(trimmed) == 0 {
		return nil, fmt.Errorf("key file %s is empty", path)
	}
	return trimmed, nil
}

func writeKeyFile(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create key file: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create key file: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("create key file: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("create key file: %w", err)
	}
	return f.Close()
}

// Configure implements plugin.Plugin: it opens (or creates) the keystore.
// A keystore already open stays in force if the new one cannot be opened.
func (p *Plugin) Configure(ctx context.Context, req *plugin.ConfigureRequest) error {
	var c Config
	if err := config.Unmarshal(req.Config, &c); err != nil {
		return &plugin.ProblemsError{Problems: []plugin.Problem{{Summary: err.Error()}}}
	}
	if ps := c.problems(); len(ps) > 0 {
		return &plugin.ProblemsError{Problems: ps}
	}
	rnd := req.Host.Rand()
	pass, err := passphrase(&c, req.DataDir, rnd)
	if err != nil {
		return &plugin.ProblemsError{Problems: []plugin.Problem{{Attribute: "key_file", Summary: err.Error()}}}
	}
	defer clear(pass)
	path := resolve(req.DataDir, c.Path)
	opts := keystore.Options{
		Path:       path,
		Passphrase: pass,
		Rand:       rnd,
		Now:        time.Now,
		KDF:        keystore.KDFParams{Time: uint32(c.KDFTime), MemoryKiB: uint32(c.KDFMemoryKiB), Threads: uint8(c.KDFThreads)},
		Logger:     p.log,
	}
	shared := c.Backend == BackendStorage
	if shared {
		st := &storageImage{s: req.Host.Storage()}
		if err := importFile(ctx, st, opts, p.log); err != nil {
			return &plugin.ProblemsError{Problems: []plugin.Problem{{Attribute: "backend", Summary: err.Error()}}}
		}
		opts.Shared = st
		opts.Path = "storage:" + req.Instance + "/" + sharedKey
	}
	ks, err := keystore.Open(opts)
	if err != nil {
		return &plugin.ProblemsError{Problems: []plugin.Problem{{Summary: err.Error()}}}
	}
	interval := DefaultRefreshInterval
	if c.RefreshInterval != "" {
		interval, _ = time.ParseDuration(c.RefreshInterval) // checked by problems
	}
	var stop chan struct{}
	if shared {
		stop = make(chan struct{})
		go p.refreshLoop(ks, interval, stop)
	}
	p.mu.Lock()
	old, oldStop := p.ks, p.stop
	p.ks, p.shared, p.stop = ks, shared, stop
	p.mu.Unlock()
	if oldStop != nil {
		close(oldStop)
	}
	if old != nil {
		_ = old.Close()
	}
	p.log.Info("keystore open", "keystore", opts.Path, "shared", shared)
	return nil
}

// refreshLoop re-reads a shared keystore every interval until stop
// closes, so that rotations and destructions made on another replica
// take effect here.
func (p *Plugin) refreshLoop(ks *keystore.Keystore, interval time.Duration, stop chan struct{}) {
	t := time.NewTicker(interval)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), interval)
		err := ks.Refresh(ctx)
		cancel()
		switch {
		case errors.Is(err, keystore.ErrClosed):
			return
		case err != nil && !failing:
			p.log.Error("cannot re-read the shared keystore; the keys read last stay in force", "error", err)
		case err == nil && failing:
			p.log.Info("shared keystore readable again")
		}
		failing = err != nil
	}
}

// storageImage is a keystore.Shared in the plugin's host storage.
type storageImage struct{ s host.Storage }

func (st *storageImage) Load(ctx context.Context) ([]byte, int64, error) {
	e, err := st.s.Get(ctx, sharedKey)
	if errors.Is(err, host.ErrNotFound) {
		return nil, 0, fmt.Errorf("no keystore in storage: %w", fs.ErrNotExist)
	}
	if err != nil {
		return nil, 0, err
	}
	return e.Value, e.Version, nil
}

func (st *storageImage) Store(ctx context.Context, data []byte, ifVersion int64) (int64, error) {
	v, err := st.s.Put(ctx, sharedKey, data, host.PutOptions{Check: true, Version: ifVersion})
	if errors.Is(err, host.ErrVersionConflict) {
		return 0, fmt.Errorf("%w: %w", keystore.ErrConflict, err)
	}
	return v, err
}

// importFile stores the keystore file at path as the shared keystore when
// the storage holds none yet: the first replica moved to backend =
// "storage" brings its keys along (the passphrase stays the same). The
// file must open with that passphrase first: a file sealed under another
// one would lock every replica out. A file left beside a storage that
// already holds a keystore is not merged into it: that is said, loudly,
// since its keys are not in the shared keystore. The file is left in
// place; remove it once every replica runs on storage.
func importFile(ctx context.Context, st *storageImage, opts keystore.Options, log hclog.Logger) error {
	path := opts.Path
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("import keystore file %s: %w", path, err)
	}
	notImported := func() {
		log.Warn("a keystore file exists but the core's storage already holds the shared keystore: the file's keys were NOT imported; "+
			"move them with avon key commands or remove the file", "path", path)
	}
	if _, _, err := st.Load(ctx); !errors.Is(err, fs.ErrNotExist) {
		if err == nil {
			notImported()
		}
		return err
	}
	// It must open with the configured passphrase before it is shared.
	fks, err := keystore.Open(opts)
	if err != nil {
		return fmt.Errorf("import keystore file: %w", err)
	}
	_ = fks.Close()
	_, err = st.Store(ctx, data, 0)
	switch {
	case errors.Is(err, keystore.ErrConflict):
		notImported() // another replica stored its keystore first
		return nil
	case err != nil:
		return fmt.Errorf("import keystore file %s: %w", path, err)
	}
	log.Info("imported the keystore file into the core's storage; remove the file once every replica uses backend = \"storage\"", "path", path)
	return nil
}

// Health implements plugin.HealthChecker.
func (p *Plugin) Health(context.Context) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.ks == nil {
		return errdef.ErrNotConfigured
	}
	return nil
}

// with runs fn with the open keystore under the read lock. With a shared
// keystore, a key not found may have been generated by another replica
// since the last re-read: the keystore is re-read (at most every
// missRefreshEvery) and fn runs once more.
func with[T any](p *Plugin, fn func(*keystore.Keystore) (T, error)) (T, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.ks == nil {
		var zero T
		return zero, fmt.Errorf("kms-soft: %w", errdef.ErrNotConfigured)
	}
	start := time.Now().UnixNano()
	r, err := fn(p.ks)
	if !p.shared || !(errors.Is(err, kms.ErrKeyNotFound) || errors.Is(err, kms.ErrVersionNotFound)) {
		return r, err
	}
	p.missMu.Lock()
	if p.lastMiss < start {
		// No re-read started since this call looked: do one.
		p.lastMiss = time.Now().UnixNano()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		rerr := p.ks.Refresh(ctx)
		cancel()
		if rerr != nil {
			p.missMu.Unlock()
			p.log.Warn("cannot re-read the shared keystore for a key not found", "error", rerr)
			return r, err
		}
	}
	p.missMu.Unlock()
	return fn(p.ks)
}

func (p *Plugin) GenerateKey(ctx context.Context, r *kms.GenerateKeyRequest) (*kms.GenerateKeyResponse, error) {
	return with(p, func(ks *keystore.Keystore) (*kms.GenerateKeyResponse, error) { return ks.GenerateKey(ctx, r) })
}
func (p *Plugin) GetKey(ctx context.Context, r *kms.GetKeyRequest) (*kms.GetKeyResponse, error) {
	return with(p, func(ks *keystore.Keystore) (*kms.GetKeyResponse, error) { return ks.GetKey(ctx, r) })
}
func (p *Plugin) ListKeys(ctx context.Context, r *kms.ListKeysRequest) (*kms.ListKeysResponse, error) {
	return with(p, func(ks *keystore.Keystore) (*kms.ListKeysResponse, error) { return ks.ListKeys(ctx, r) })
}
func (p *Plugin) PublicKey(ctx context.Context, r *kms.PublicKeyRequest) (*kms.PublicKeyResponse, error) {
	return with(p, func(ks *keystore.Keystore) (*kms.PublicKeyResponse, error) { return ks.PublicKey(ctx, r) })
}
func (p *Plugin) Sign(ctx context.Context, r *kms.SignRequest) (*kms.SignResponse, error) {
	return with(p, func(ks *keystore.Keystore) (*kms.SignResponse, error) { return ks.Sign(ctx, r) })
}
func (p *Plugin) Verify(ctx context.Context, r *kms.VerifyRequest) (*kms.VerifyResponse, error) {
	return with(p, func(ks *keystore.Keystore) (*kms.VerifyResponse, error) { return ks.Verify(ctx, r) })
}
func (p *Plugin) Decapsulate(ctx context.Context, r *kms.DecapsulateRequest) (*kms.DecapsulateResponse, error) {
	return with(p, func(ks *keystore.Keystore) (*kms.DecapsulateResponse, error) { return ks.Decapsulate(ctx, r) })
}
func (p *Plugin) Encrypt(ctx context.Context, r *kms.EncryptRequest) (*kms.EncryptResponse, error) {
	return with(p, func(ks *keystore.Keystore) (*kms.EncryptResponse, error) { return ks.Encrypt(ctx, r) })
}
func (p *Plugin) Decrypt(ctx context.Context, r *kms.DecryptRequest) (*kms.DecryptResponse, error) {
	return with(p, func(ks *keystore.Keystore) (*kms.DecryptResponse, error) { return ks.Decrypt(ctx, r) })
}
func (p *Plugin) RotateKey(ctx context.Context, r *kms.RotateKeyRequest) (*kms.RotateKeyResponse, error) {
	return with(p, func(ks *keystore.Keystore) (*kms.RotateKeyResponse, error) { return ks.RotateKey(ctx, r) })
}
func (p *Plugin) DestroyKey(ctx context.Context, r *kms.DestroyKeyRequest) (*kms.DestroyKeyResponse, error) {
	return with(p, func(ks *keystore.Keystore) (*kms.DestroyKeyResponse, error) { return ks.DestroyKey(ctx, r) })
}
func (p *Plugin) ExportKey(ctx context.Context, r *kms.ExportKeyRequest) (*kms.ExportKeyResponse, error) {
	return with(p, func(ks *keystore.Keystore) (*kms.ExportKeyResponse, error) { return ks.ExportKey(ctx, r) })
}

var (
	_ plugin.KMSPlugin       = (*Plugin)(nil)
	_ plugin.ConfigValidator = (*Plugin)(nil)
	_ plugin.HealthChecker   = (*Plugin)(nil)
	_ kms.Exporter           = (*Plugin)(nil)
)
