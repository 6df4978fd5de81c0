// Package slhdsa implements the pqc provider of the pqc-slhdsa example
// plugin: SLH-DSA (FIPS 205) key generation, signing and verification in
// pure mode with a context string, by parameter-set name and NIST OID.
//
// Keys and signing randomness come from the host RNG (host.Rand), never
// from the plugin's own process. The provider keeps no keys: callers pass
// them per call, and copies made here are zeroized.
package slhdsa

import (
	"context"
	"fmt"
	"sync"

	circl "github.com/cloudflare/circl/sign/slhdsa"
	"github.com/zclconf/go-cty/cty"

	"github.com/avonzt/avon/sdk/config"
	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/host"
	"github.com/avonzt/avon/sdk/plugin"
	"github.com/avonzt/avon/sdk/pqc"
)

// Version is the plugin's version.
const Version = "0.1.0"

// paramSet is one SLH-DSA parameter set.
type paramSet struct {
	id  circl.ID
	oid string
}

// sets are offered in this order; OIDs from NIST's computer security
// objects register (id-slh-dsa-*, 2.16.840.1.101.3.4.3.20-31).
var sets = []paramSet{
	{circl.SHA2_128s, "2.16.840.1.101.3.4.3.20"},
	{circl.SHA2_128f, "2.16.840.1.101.3.4.3.21"},
	{circl.SHA2_192s, "2.16.840.1.101.3.4.3.22"},
	{circl.SHA2_192f, "2.16.840.1.101.3.4.3.23"},
	{circl.SHA2_256s, "2.16.840.1.101.3.4.3.24"},
	{circl.SHA2_256f, "2.16.840.1.101.3.4.3.25"},
	{circl.SHAKE_128s, "2.16.840.1.101.3.4.3.26"},
	{circl.SHAKE_128f, "2.16.840.1.101.3.4.3.27"},
	{circl.SHAKE_192s, "2.16.840.1.101.3.4.3.28"},
	{circl.SHAKE_192f, "2.16.840.1.101.3.4.3.29"},
	{circl.SHAKE_256s, "2.16.840.1.101.3.4.3.30"},
	{circl.SHAKE_256f, "2.16.840.1.101.3.4.3.31"},
}

// Config is the plugin's `config { }` body.
type Config struct {
	// Algorithms restricts what is offered (names such as
	// "SLH-DSA-SHA2-128s"); empty offers every parameter set.
	Algorithms []string `json:"algorithms"`
	// Deterministic signs without fresh randomness (FIPS 205 allows it);
	// the default hedges every signature with host randomness.
	Deterministic bool `json:"deterministic"`
}

// Schema is the plugin's config schema.
var Schema = config.Schema{Attributes: []config.Attribute{
	{Name: "algorithms", Type: cty.List(cty.String), Default: cty.ListValEmpty(cty.String),
		Description: `parameter sets to offer, e.g. ["SLH-DSA-SHA2-128s"]; empty for all`},
	{Name: "deterministic", Type: cty.Bool, Default: cty.False,
		Description: "sign deterministically instead of hedged with host randomness"},
}}

// Provider is the plugin.
type Provider struct {
	mu  sync.RWMutex // guards the fields below
	h   host.Host
	cfg Config
	on  map[string]paramSet // offered, by name
}

// New returns an unconfigured provider: every call answers
// errdef.ErrNotConfigured until Configure succeeds.
func New() *Provider { return &Provider{} }

// Info implements plugin.Plugin.
func (p *Provider) Info() plugin.Info { return plugin.Info{Name: "pqc-slhdsa", Version: Version} }

// ConfigSchema implements plugin.Plugin.
func (p *Provider) ConfigSchema() config.Schema { return Schema }

func selectSets(c Config) (map[string]paramSet, []plugin.Problem) {
	on := map[string]paramSet{}
	if len(c.Algorithms) == 0 {
		for _, s := range sets {
			on[s.id.String()] = s
		}
		return on, nil
	}
	var ps []plugin.Problem
	for _, name := range c.Algorithms {
		found := false
		for _, s := range sets {
			if s.id.String() == name {
				on[name], found = s, true
			}
		}
		if !found {
			ps = append(ps, plugin.Problem{Attribute: "algorithms", Summary: fmt.Sprintf("unknown parameter set %q", name),
				Detail: "names look like SLH-DSA-SHA2-128s or SLH-DSA-SHAKE-256f"})
		}
	}
	return on, ps
}

// ValidateConfig implements plugin.ConfigValidator.
func (p *Provider) ValidateConfig(_ context.Context, raw []byte) []plugin.Problem {
	var c Config
	if err := config.Unmarshal(raw, &c); err != nil {
		return []plugin.Problem{{Summary: err.Error()}}
	}
	_, ps := selectSets(c)
	return ps
}

// Configure implements plugin.Plugin.
func (p *Provider) Configure(_ context.Context, req *plugin.ConfigureRequest) error {
	var c Config
	if err := config.Unmarshal(req.Config, &c); err != nil {
		return &plugin.ProblemsError{Problems: []plugin.Problem{{Summary: err.Error()}}}
	}
	on, ps := selectSets(c)
	if len(ps) > 0 {
		return &plugin.ProblemsError{Problems: ps}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.h, p.cfg, p.on = req.Host, c, on
	return nil
}

func (p *Provider) state() (host.Host, Config, map[string]paramSet, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.h == nil {
		return nil, Config{}, nil, fmt.Errorf("pqc-slhdsa: %w", errdef.ErrNotConfigured)
	}
	return p.h, p.cfg, p.on, nil
}

func (p *Provider) lookup(name string) (host.Host, Config, paramSet, error) {
	h, c, on, err := p.state()
	if err != nil {
		return nil, c, paramSet{}, err
	}
	s, ok := on[name]
	if !ok {
		return nil, c, paramSet{}, fmt.Errorf("algorithm %q: %w", name, pqc.ErrUnknownAlgorithm)
	}
	return h, c, s, nil
}

// ListAlgorithms implements pqc.Provider.
func (p *Provider) ListAlgorithms(context.Context, *pqc.ListAlgorithmsRequest) (*pqc.ListAlgorithmsResponse, error) {
	_, _, on, err := p.state()
	if err != nil {
		return nil, err
	}
	out := &pqc.ListAlgorithmsResponse{}
	for _, s := range sets {
		if _, ok := on[s.id.String()]; !ok {
			continue
		}
		sch := s.id.Scheme()
		out.Algorithms = append(out.Algorithms, pqc.Algorithm{
			Name: s.id.String(), OID: s.oid, Type: pqc.TypeSignature,
			PublicKeySize: sch.PublicKeySize(), PrivateKeySize: sch.PrivateKeySize(), SignatureSize: sch.SignatureSize(),
		})
	}
	return out, nil
}

// GenerateKey implements pqc.Provider.
func (p *Provider) GenerateKey(ctx context.Context, req *pqc.GenerateKeyRequest) (*pqc.GenerateKeyResponse, error) {
	h, _, s, err := p.lookup(req.Algorithm)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	pub, priv, err := circl.GenerateKey(h.Rand(), s.id)
	if err != nil {
		return nil, fmt.Errorf("generate %s: %w", req.Algorithm, err)
	}
	pb, err := pub.MarshalBinary()
	if err != nil {
		return nil, err
	}
	sk, err := priv.MarshalBinary()
	if err != nil {
		return nil, err
	}
	return &pqc.GenerateKeyResponse{PublicKey: pb, PrivateKey: sk}, nil
}

func checkSizes(msg, c []byte) error {
	if len(c) > pqc.MaxContextSize {
		return fmt.Errorf("context of %d bytes exceeds %d: %w", len(c), pqc.MaxContextSize, errdef.ErrInvalidArgument)
	}
	if len(msg) > pqc.MaxMessageSize {
		return fmt.Errorf("message of %d bytes exceeds %d: %w", len(msg), pqc.MaxMessageSize, errdef.ErrInvalidArgument)
	}
	return nil
}

// Sign implements pqc.Provider. Each signature is verified before it is
// returned, so a fault (or a private key whose public half was altered)
// never yields a bad signature.
func (p *Provider) Sign(ctx context.Context, req *pqc.SignRequest) (*pqc.SignResponse, error) {
	h, c, s, err := p.lookup(req.Algorithm)
	if err != nil {
		return nil, err
	}
	if err := checkSizes(req.Message, req.Context); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(req.PrivateKey) != s.id.Scheme().PrivateKeySize() {
		return nil, fmt.Errorf("%s private key of %d bytes, want %d: %w", req.Algorithm, len(req.PrivateKey), s.id.Scheme().PrivateKeySize(), pqc.ErrInvalidKey)
	}
	buf := append([]byte(nil), req.PrivateKey...)
	defer clear(buf)
	priv := circl.PrivateKey{ID: s.id}
	if err := priv.UnmarshalBinary(buf); err != nil {
		return nil, fmt.Errorf("%s private key: %v: %w", req.Algorithm, err, pqc.ErrInvalidKey)
	}
	msg := circl.NewMessage(req.Message)
	var sig []byte
	if c.Deterministic {
		sig, err = circl.SignDeterministic(&priv, msg, req.Context)
	} else {
		sig, err = circl.SignRandomized(&priv, h.Rand(), msg, req.Context)
	}
	if err != nil {
		return nil, fmt.Errorf("sign %s: %w", req.Algorithm, err)
	}
	pub := priv.PublicKey()
	if !circl.Verify(&pub, circl.NewMessage(req.Message), sig, req.Context) {
		return nil, fmt.Errorf("sign %s: signature does not verify under the key's public half: %w", req.Algorithm, pqc.ErrInvalidKey)
	}
	return &pqc.SignResponse{Signature: sig}, nil
}

// Verify implements pqc.Provider.
func (p *Provider) Verify(_ context.Context, req *pqc.VerifyRequest) (*pqc.VerifyResponse, error) {
	_, _, s, err := p.lookup(req.Algorithm)
	if err != nil {
		return nil, err
	}
	if err := checkSizes(req.Message, req.Context); err != nil {
		return nil, err
	}
	pub := circl.PublicKey{ID: s.id}
	if len(req.PublicKey) != s.id.Scheme().PublicKeySize() {
		return nil, fmt.Errorf("%s public key of %d bytes, want %d: %w", req.Algorithm, len(req.PublicKey), s.id.Scheme().PublicKeySize(), pqc.ErrInvalidKey)
	}
	if err := pub.UnmarshalBinary(req.PublicKey); err != nil {
		return nil, fmt.Errorf("%s public key: %v: %w", req.Algorithm, err, pqc.ErrInvalidKey)
	}
	return &pqc.VerifyResponse{Valid: circl.Verify(&pub, circl.NewMessage(req.Message), req.Signature, req.Context)}, nil
}

var (
	_ plugin.PQCPlugin       = (*Provider)(nil)
	_ plugin.ConfigValidator = (*Provider)(nil)
)
