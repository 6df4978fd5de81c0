// Package hsmkms is the plugin side of kms-hsm: it reads the plugin's
// configuration, opens the PKCS#11 token (plugins/kms-hsm/token) with the
// operator's PIN, builds the engine (plugins/kms-hsm/engine) over the token,
// the host's storage and the host's RNG, and serves the kms interface from
// it. It holds no key material itself.
package hsmkms

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/hashicorp/go-hclog"
	"github.com/zclconf/go-cty/cty"

	"github.com/avonzt/avon/plugins/kms-hsm/engine"
	"github.com/avonzt/avon/plugins/kms-hsm/token"
	"github.com/avonzt/avon/sdk/config"
	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/kms"
	"github.com/avonzt/avon/sdk/plugin"
)

// Version is the plugin's version.
const Version = "0.1.0"

// Config is the plugin's `config { }` body.
type Config struct {
	// Module is the path of the PKCS#11 library.
	Module string `json:"module"`
	// TokenLabel selects the token (CKA_LABEL of its token info).
	TokenLabel string `json:"token_label"`
	// PIN is the user PIN; write pin = env("AVON_HSM_PIN"), never a literal.
	PIN string `json:"pin"`
	// Sessions is the session pool size.
	Sessions int `json:"sessions"`
	// WrapKeyLabel names the AES-256 token key that wraps PQ seeds.
	WrapKeyLabel string `json:"wrap_key_label"`
	// LoginRetries bounds the retries of a C_Login that failed for a
	// reason other than the PIN.
	LoginRetries int `json:"login_retries"`
}

// Schema is the plugin's config schema.
var Schema = config.Schema{Attributes: []config.Attribute{
	{Name: "module", Type: cty.String, Required: true,
		Description: "path of the PKCS#11 library, e.g. /usr/lib/softhsm/libsofthsm2.so"},
	{Name: "token_label", Type: cty.String, Required: true,
		Description: "label of the token to use"},
	{Name: "pin", Type: cty.String, Required: true, Sensitive: true,
		Description: `user PIN of the token, e.g. env("AVON_HSM_PIN"); a wrong PIN is tried once per configuration, never again`},
	{Name: "sessions", Type: cty.Number, Default: cty.NumberIntVal(token.DefaultSessions),
		Description: fmt.Sprintf("PKCS#11 sessions in the pool (1..%d): the operations that run in the token at once", token.MaxSessions)},
	{Name: "wrap_key_label", Type: cty.String, Default: cty.StringVal(engine.DefaultWrapKeyLabel),
		Description: "label of the token's AES-256 key that wraps post-quantum seeds; generated on first use if absent"},
	{Name: "login_retries", Type: cty.Number, Default: cty.NumberIntVal(1),
		Description: fmt.Sprintf("retries (0..%d) of a login that failed for a reason other than the PIN; a wrong PIN is never retried", token.MaxLoginRetries)},
}}

// Plugin is the kms-hsm plugin.
type Plugin struct {
	log hclog.Logger

	mu sync.RWMutex // guards e; held for reading during every call
	e  *engine.Engine
}

// New returns an unconfigured plugin.
func New() *Plugin { return &Plugin{log: plugin.NewLogger()} }

// Info implements plugin.Plugin. The algorithm list is what kms-hsm can
// make on a token with every mechanism it uses; Ed25519 needs
// CKM_EC_EDWARDS_KEY_PAIR_GEN and CKM_EDDSA.
func (p *Plugin) Info() plugin.Info {
	algs := make([]string, 0, len(kms.AllAlgorithms))
	p.mu.RLock()
	if p.e != nil {
		for _, a := range p.e.Algorithms() {
			algs = append(algs, string(a))
		}
	} else {
		for _, a := range kms.AllAlgorithms {
			algs = append(algs, string(a))
		}
	}
	p.mu.RUnlock()
	return plugin.Info{Name: "kms-hsm", Version: Version, Metadata: map[string]string{"algorithms": strings.Join(algs, ",")}}
}

// ConfigSchema implements plugin.Plugin.
func (p *Plugin) ConfigSchema() config.Schema { return Schema }

func (c *Config) problems() []plugin.Problem {
	var ps []plugin.Problem
	if c.Module == "" {
		ps = append(ps, plugin.Problem{Attribute: "module", Summary: "no PKCS#11 module", Detail: "set module to the path of the token's PKCS#11 library"})
	}
	if c.TokenLabel == "" {
		ps = append(ps, plugin.Problem{Attribute: "token_label", Summary: "no token label"})
	}
	if c.PIN == "" {
		ps = append(ps, plugin.Problem{Attribute: "pin", Summary: "no PIN", Detail: `set pin = env("AVON_HSM_PIN")`})
	}
	if c.Sessions < 1 || c.Sessions > token.MaxSessions {
		ps = append(ps, plugin.Problem{Attribute: "sessions", Summary: fmt.Sprintf("sessions %d outside 1..%d", c.Sessions, token.MaxSessions)})
	}
	if c.LoginRetries < 0 || c.LoginRetries > token.MaxLoginRetries {
		ps = append(ps, plugin.Problem{Attribute: "login_retries", Summary: fmt.Sprintf("login_retries %d outside 0..%d", c.LoginRetries, token.MaxLoginRetries)})
	}
	if c.WrapKeyLabel == "" {
		ps = append(ps, plugin.Problem{Attribute: "wrap_key_label", Summary: "empty wrap key label"})
	}
	return ps
}

// ValidateConfig implements plugin.ConfigValidator (no token access).
func (p *Plugin) ValidateConfig(_ context.Context, raw []byte) []plugin.Problem {
	var c Config
	if err := config.Unmarshal(raw, &c); err != nil {
		return []plugin.Problem{{Summary: err.Error()}}
	}
	return c.problems()
}

// Configure implements plugin.Plugin: it opens the token and the engine.
// An engine already open stays in force if the new one cannot be opened.
func (p *Plugin) Configure(ctx context.Context, req *plugin.ConfigureRequest) error {
	var c Config
	if err := config.Unmarshal(req.Config, &c); err != nil {
		return &plugin.ProblemsError{Problems: []plugin.Problem{{Summary: err.Error()}}}
	}
	if ps := c.problems(); len(ps) > 0 {
		return &plugin.ProblemsError{Problems: ps}
	}
	tok, err := token.Open(ctx, token.Options{Module: c.Module, TokenLabel: c.TokenLabel, PIN: c.PIN,
		Sessions: c.Sessions, LoginRetries: c.LoginRetries, Logger: p.log})
	if err != nil {
		attr := ""
		switch {
		case errors.Is(err, token.ErrPINIncorrect), errors.Is(err, token.ErrPINLocked):
			attr = "pin"
		case errors.Is(err, token.ErrTokenNotFound):
			attr = "token_label"
		case errors.Is(err, token.ErrModule):
			attr = "module"
		}
		return &plugin.ProblemsError{Problems: []plugin.Problem{{Attribute: attr, Summary: err.Error()}}}
	}
	e, err := engine.New(ctx, engine.Options{Token: tok, Storage: req.Host.Storage(), Rand: req.Host.Rand(),
		WrapKeyLabel: c.WrapKeyLabel, Logger: p.log})
	if err != nil {
		tok.Close()
		return &plugin.ProblemsError{Problems: []plugin.Problem{{Attribute: "wrap_key_label", Summary: err.Error()}}}
	}
	p.mu.Lock()
	old := p.e
	p.e = e
	p.mu.Unlock()
	if old != nil {
		_ = old.Close()
	}
	p.log.Info("token open", "module", c.Module, "token", c.TokenLabel, "sessions", c.Sessions, "wrap_key", c.WrapKeyLabel)
	return nil
}

// Health implements plugin.HealthChecker.
func (p *Plugin) Health(context.Context) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.e == nil {
		return errdef.ErrNotConfigured
	}
	return nil
}

// with runs fn with the engine under the read lock.
func with[T any](p *Plugin, fn func(*engine.Engine) (T, error)) (T, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.e == nil {
		var zero T
		return zero, fmt.Errorf("kms-hsm: %w", errdef.ErrNotConfigured)
	}
	return fn(p.e)
}

func (p *Plugin) GenerateKey(ctx context.Context, r *kms.GenerateKeyRequest) (*kms.GenerateKeyResponse, error) {
	return with(p, func(e *engine.Engine) (*kms.GenerateKeyResponse, error) { return e.GenerateKey(ctx, r) })
}
func (p *Plugin) GetKey(ctx context.Context, r *kms.GetKeyRequest) (*kms.GetKeyResponse, error) {
	return with(p, func(e *engine.Engine) (*kms.GetKeyResponse, error) { return e.GetKey(ctx, r) })
}
func (p *Plugin) ListKeys(ctx context.Context, r *kms.ListKeysRequest) (*kms.ListKeysResponse, error) {
	return with(p, func(e *engine.Engine) (*kms.ListKeysResponse, error) { return e.ListKeys(ctx, r) })
}
func (p *Plugin) PublicKey(ctx context.Context, r *kms.PublicKeyRequest) (*kms.PublicKeyResponse, error) {
	return with(p, func(e *engine.Engine) (*kms.PublicKeyResponse, error) { return e.PublicKey(ctx, r) })
}
func (p *Plugin) Sign(ctx context.Context, r *kms.SignRequest) (*kms.SignResponse, error) {
	return with(p, func(e *engine.Engine) (*kms.SignResponse, error) { return e.Sign(ctx, r) })
}
func (p *Plugin) Verify(ctx context.Context, r *kms.VerifyRequest) (*kms.VerifyResponse, error) {
	return with(p, func(e *engine.Engine) (*kms.VerifyResponse, error) { return e.Verify(ctx, r) })
}
func (p *Plugin) Decapsulate(ctx context.Context, r *kms.DecapsulateRequest) (*kms.DecapsulateResponse, error) {
	return with(p, func(e *engine.Engine) (*kms.DecapsulateResponse, error) { return e.Decapsulate(ctx, r) })
}
func (p *Plugin) Encrypt(ctx context.Context, r *kms.EncryptRequest) (*kms.EncryptResponse, error) {
	return with(p, func(e *engine.Engine) (*kms.EncryptResponse, error) { return e.Encrypt(ctx, r) })
}
func (p *Plugin) Decrypt(ctx context.Context, r *kms.DecryptRequest) (*kms.DecryptResponse, error) {
	return with(p, func(e *engine.Engine) (*kms.DecryptResponse, error) { return e.Decrypt(ctx, r) })
}
func (p *Plugin) RotateKey(ctx context.Context, r *kms.RotateKeyRequest) (*kms.RotateKeyResponse, error) {
	return with(p, func(e *engine.Engine) (*kms.RotateKeyResponse, error) { return e.RotateKey(ctx, r) })
}
func (p *Plugin) DestroyKey(ctx context.Context, r *kms.DestroyKeyRequest) (*kms.DestroyKeyResponse, error) {
	return with(p, func(e *engine.Engine) (*kms.DestroyKeyResponse, error) { return e.DestroyKey(ctx, r) })
}

// GenerateRandom implements kms.RandomSource with the token's generator.
func (p *Plugin) GenerateRandom(ctx context.Context, r *kms.GenerateRandomRequest) (*kms.GenerateRandomResponse, error) {
	return with(p, func(e *engine.Engine) (*kms.GenerateRandomResponse, error) { return e.GenerateRandom(ctx, r) })
}

var (
	_ plugin.KMSPlugin       = (*Plugin)(nil)
	_ plugin.ConfigValidator = (*Plugin)(nil)
	_ plugin.HealthChecker   = (*Plugin)(nil)
	_ kms.RandomSource       = (*Plugin)(nil)
)
