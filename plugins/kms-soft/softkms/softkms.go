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
	// Path of the keystore file; relative to the plugin data dir.
	Path string `json:"path"`
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
	{Name: "kdf_time", Type: cty.Number, Default: cty.NumberIntVal(int64(keystore.DefaultKDF.Time)),
		Description: "Argon2id passes for a new keystore"},
	{Name: "kdf_memory_kib", Type: cty.Number, Default: cty.NumberIntVal(int64(keystore.DefaultKDF.MemoryKiB)),
		Description: "Argon2id memory in KiB for a new keystore"},
	{Name: "kdf_threads", Type: cty.Number, Default: cty.NumberIntVal(int64(keystore.DefaultKDF.Threads)),
		Description: "Argon2id parallelism for a new keystore"},
}}

// Plugin is the kms-soft plugin.
type Plugin struct {
	log hclog.Logger

	mu sync.RWMutex // guards ks; held for reading during every call
	ks *keystore.Keystore
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
	ks, err := keystore.Open(keystore.Options{
		Path:       resolve(req.DataDir, c.Path),
		Passphrase: pass,
		Rand:       rnd,
		Now:        time.Now,
		KDF:        keystore.KDFParams{Time: uint32(c.KDFTime), MemoryKiB: uint32(c.KDFMemoryKiB), Threads: uint8(c.KDFThreads)},
		Logger:     p.log,
	})
	if err != nil {
		return &plugin.ProblemsError{Problems: []plugin.Problem{{Summary: err.Error()}}}
	}
	p.mu.Lock()
	old := p.ks
	p.ks = ks
	p.mu.Unlock()
	if old != nil {
		_ = old.Close()
	}
	p.log.Info("keystore open", "path", resolve(req.DataDir, c.Path))
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

// with runs fn with the open keystore under the read lock.
func with[T any](p *Plugin, fn func(*keystore.Keystore) (T, error)) (T, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.ks == nil {
		var zero T
		return zero, fmt.Errorf("kms-soft: %w", errdef.ErrNotConfigured)
	}
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
