// Package slhdsa is the implementation of the pqc-slhdsa example plugin:
// SLH-DSA (FIPS 205) key generation, signing and verification in pure mode
// with a context string, for the twelve parameter sets, addressed by name
// ("SLH-DSA-SHA2-128s") or NIST OID ("2.16.840.1.101.3.4.3.20"). The
// cryptography is circl's sign/slhdsa.
//
// It imports nothing of AVON but sdk/: it is the template for third-party
// plugins. It must not draw randomness from anywhere but the host RNG
// (host.Host.Rand), keep keys between calls, or log key material.
//
// Lifecycle: New returns a provider that answers errdef.ErrNotConfigured to
// every call; Configure (again on every reload) checks the configuration
// and swaps it in whole, or leaves the previous one in force.
package slhdsa

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"reflect"
	"runtime/debug"
	"strings"
	"sync/atomic"

	circl "github.com/cloudflare/circl/sign/slhdsa"
	"github.com/zclconf/go-cty/cty"

	"github.com/avonzt/avon/sdk/config"
	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/host"
	"github.com/avonzt/avon/sdk/plugin"
	"github.com/avonzt/avon/sdk/pqc"
)

// Version is the plugin's version, reported by Info.
const Version = "0.2.0"

// paramSet is one SLH-DSA parameter set.
type paramSet struct {
	id  circl.ID
	oid string
}

func (s paramSet) name() string { return s.id.String() } // "SLH-DSA-SHA2-128s"

// n is the security parameter in bytes: the size of each of SK.seed,
// SK.prf, PK.seed, PK.root and of the signing randomness opt_rand.
func (s paramSet) n() int { return s.id.Scheme().PublicKeySize() / 2 }

// sets lists the parameter sets in OID order. OIDs: NIST Computer Security
// Objects Register, id-slh-dsa-* (also RFC 9909, SLH-DSA in X.509).
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

// Config is the plugin's `config { }` body, as ConfigSchema describes it.
type Config struct {
	// Algorithms restricts what is offered, by name or OID. Absent (nil)
	// offers every parameter set; an empty list is a mistake.
	Algorithms []string `json:"algorithms"`
	// Deterministic signs with opt_rand = PK.seed (FIPS 205, 10.2.1)
	// instead of fresh host randomness.
	Deterministic bool `json:"deterministic"`
}

// Provider is the plugin: plugin.Plugin, plugin.ConfigValidator and
// pqc.Provider. It offers no KEM, so it does not implement pqc.KEM; the
// host sees that in the plugin's capabilities.
type Provider struct {
	cur atomic.Pointer[state] // nil until the first successful Configure
}

// state is one applied configuration. It is never modified once stored.
type state struct {
	rand          io.Reader // the host RNG
	deterministic bool
	offered       []paramSet          // in sets order
	byKey         map[string]paramSet // by name and by OID
}

// New returns an unconfigured provider: every pqc call answers
// errdef.ErrNotConfigured until Configure succeeds.
func New() *Provider { return &Provider{} }

// Info implements plugin.Plugin.
func (p *Provider) Info() plugin.Info {
	return plugin.Info{Name: "pqc-slhdsa", Version: Version, Metadata: map[string]string{
		"standard": "FIPS 205 (SLH-DSA), pure mode",
		"library":  "github.com/cloudflare/circl/sign/slhdsa " + circlVersion(),
	}}
}

func circlVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/cloudflare/circl" {
				if d.Replace != nil {
					d = d.Replace
				}
				return d.Version
			}
		}
	}
	return "(unknown version)"
}

// ConfigSchema implements plugin.Plugin.
func (p *Provider) ConfigSchema() config.Schema {
	all := make([]cty.Value, len(sets))
	for i, s := range sets {
		all[i] = cty.StringVal(s.name())
	}
	return config.Schema{Attributes: []config.Attribute{
		{Name: "algorithms", Type: cty.List(cty.String), Default: cty.ListVal(all),
			Description: `parameter sets to offer, by name or OID, e.g. ["SLH-DSA-SHA2-128s"]; default all twelve`},
		{Name: "deterministic", Type: cty.Bool, Default: cty.False,
			Description: "sign deterministically (opt_rand = PK.seed) instead of hedged with host randomness"},
	}}
}

// ValidateConfig implements plugin.ConfigValidator: `avon config validate`
// reports the same problems Configure would, without applying anything.
func (p *Provider) ValidateConfig(_ context.Context, raw []byte) []plugin.Problem {
	_, problems := parse(raw)
	return problems
}

// Configure implements plugin.Plugin. It keeps req.Host.Rand() as the only
// source of randomness. On failure the previous configuration stays.
func (p *Provider) Configure(_ context.Context, req *plugin.ConfigureRequest) error {
	if req == nil || req.Host == nil {
		return fmt.Errorf("configure: no host services: %w", errdef.ErrInvalidArgument)
	}
	c, problems := parse(req.Config)
	if len(problems) > 0 {
		return &plugin.ProblemsError{Problems: problems}
	}
	r := req.Host.Rand()
	if r == nil {
		return fmt.Errorf("configure: host offers no RNG: %w", host.ErrRandomUnavailable)
	}
	st := &state{rand: r, deterministic: c.Deterministic, byKey: map[string]paramSet{}}
	for _, s := range sets {
		if c.Algorithms == nil || offered(c.Algorithms, s) {
			st.offered = append(st.offered, s)
			st.byKey[s.name()], st.byKey[s.oid] = s, s
		}
	}
	p.cur.Store(st)
	return nil
}

// parse reads and checks a configuration.
func parse(raw []byte) (Config, []plugin.Problem) {
	var c Config
	if err := config.Unmarshal(raw, &c); err != nil {
		return c, []plugin.Problem{{Summary: "cannot read the configuration", Detail: err.Error()}}
	}
	if c.Algorithms != nil && len(c.Algorithms) == 0 {
		return c, []plugin.Problem{{Attribute: "algorithms", Summary: "no parameter set offered",
			Detail: "Name at least one, or leave the attribute out to offer all twelve."}}
	}
	var problems []plugin.Problem
	for _, want := range c.Algorithms {
		if !known(want) {
			problems = append(problems, plugin.Problem{Attribute: "algorithms",
				Summary: fmt.Sprintf("unknown SLH-DSA parameter set %q", want),
				Detail:  "Use a name such as SLH-DSA-SHA2-128s or SLH-DSA-SHAKE-256f, or an OID 2.16.840.1.101.3.4.3.20 to .31; known: " + knownNames() + "."})
		}
	}
	return c, problems
}

func known(want string) bool {
	for _, s := range sets {
		if want == s.name() || want == s.oid {
			return true
		}
	}
	return false
}

func offered(list []string, s paramSet) bool {
	for _, want := range list {
		if want == s.name() || want == s.oid {
			return true
		}
	}
	return false
}

func knownNames() string {
	names := make([]string, len(sets))
	for i, s := range sets {
		names[i] = s.name()
	}
	return strings.Join(names, ", ")
}

func (p *Provider) state() (*state, error) {
	st := p.cur.Load()
	if st == nil {
		return nil, fmt.Errorf("pqc-slhdsa: %w", errdef.ErrNotConfigured)
	}
	return st, nil
}

// lookup finds an offered parameter set by name or OID.
func (p *Provider) lookup(alg string) (*state, paramSet, error) {
	st, err := p.state()
	if err != nil {
		return nil, paramSet{}, err
	}
	s, ok := st.byKey[alg]
	if !ok {
		return nil, paramSet{}, fmt.Errorf("algorithm %q: %w", alg, pqc.ErrUnknownAlgorithm)
	}
	return st, s, nil
}

// ListAlgorithms implements pqc.Provider.
func (p *Provider) ListAlgorithms(context.Context, *pqc.ListAlgorithmsRequest) (*pqc.ListAlgorithmsResponse, error) {
	st, err := p.state()
	if err != nil {
		return nil, err
	}
	out := &pqc.ListAlgorithmsResponse{Algorithms: make([]pqc.Algorithm, 0, len(st.offered))}
	for _, s := range st.offered {
		sch := s.id.Scheme()
		out.Algorithms = append(out.Algorithms, pqc.Algorithm{
			Name: s.name(), OID: s.oid, Type: pqc.TypeSignature,
			PublicKeySize: sch.PublicKeySize(), PrivateKeySize: sch.PrivateKeySize(), SignatureSize: sch.SignatureSize(),
		})
	}
	return out, nil
}

// draw reads exactly n bytes from the host RNG in one read, so that
// concurrent operations never interleave their draws. A failing RNG is
// host.ErrRandomUnavailable: nothing is made without host randomness.
func draw(r io.Reader, n int) ([]byte, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		clear(b)
		if !errors.Is(err, host.ErrRandomUnavailable) {
			err = fmt.Errorf("%w: %w", err, host.ErrRandomUnavailable)
		}
		return nil, fmt.Errorf("read host randomness: %w", err)
	}
	return b, nil
}

// GenerateKey implements pqc.Provider. FIPS 205 Algorithm 21 draws
// SK.seed, SK.prf and PK.seed (n bytes each, in that order) from the RNG;
// they are read from the host RNG in one 3n-byte draw and handed to circl's
// GenerateKey as its reader. Returns PK.seed||PK.root and
// SK.seed||SK.prf||PK.seed||PK.root (FIPS 205 encodings).
func (p *Provider) GenerateKey(ctx context.Context, req *pqc.GenerateKeyRequest) (*pqc.GenerateKeyResponse, error) {
	st, s, err := p.lookup(req.Algorithm)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	seeds, err := draw(st.rand, 3*s.n())
	if err != nil {
		return nil, fmt.Errorf("generate %s key: %w", s.name(), err)
	}
	defer clear(seeds)
	pub, priv, err := circl.GenerateKey(bytes.NewReader(seeds), s.id)
	if err != nil {
		return nil, fmt.Errorf("generate %s key: %v: %w", s.name(), err, errdef.ErrInternal)
	}
	defer wipe(&priv)
	pb, err := pub.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("encode %s public key: %v: %w", s.name(), err, errdef.ErrInternal)
	}
	sk, err := priv.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("encode %s private key: %v: %w", s.name(), err, errdef.ErrInternal)
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

// Sign implements pqc.Provider: FIPS 205 Algorithm 22 (slh_sign, pure).
// Hedged (the default): opt_rand is n bytes drawn from the host RNG and
// handed to circl's SignRandomized as its reader. Deterministic: circl's
// SignDeterministic, opt_rand = PK.seed, no randomness drawn.
//
// Each signature is verified under the public half of the private key
// before it is returned, so a fault, or a private key whose PK.seed or
// PK.root was altered, yields ErrInvalidKey rather than a bad signature.
func (p *Provider) Sign(ctx context.Context, req *pqc.SignRequest) (*pqc.SignResponse, error) {
	st, s, err := p.lookup(req.Algorithm)
	if err != nil {
		return nil, err
	}
	if err := checkSizes(req.Message, req.Context); err != nil {
		return nil, err
	}
	if want := s.id.Scheme().PrivateKeySize(); len(req.PrivateKey) != want {
		return nil, fmt.Errorf("%s private key of %d bytes, want %d: %w", s.name(), len(req.PrivateKey), want, pqc.ErrInvalidKey)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	priv := circl.PrivateKey{ID: s.id}
	if err := priv.UnmarshalBinary(req.PrivateKey); err != nil { // circl copies the bytes
		return nil, fmt.Errorf("%s private key: %v: %w", s.name(), err, pqc.ErrInvalidKey)
	}
	defer wipe(&priv)
	msg := circl.NewMessage(req.Message)
	var sig []byte
	if st.deterministic {
		sig, err = circl.SignDeterministic(&priv, msg, req.Context)
	} else {
		var optRand []byte
		if optRand, err = draw(st.rand, s.n()); err != nil {
			return nil, fmt.Errorf("sign %s: %w", s.name(), err)
		}
		sig, err = circl.SignRandomized(&priv, bytes.NewReader(optRand), msg, req.Context)
		clear(optRand)
	}
	if err != nil {
		return nil, fmt.Errorf("sign %s: %v: %w", s.name(), err, errdef.ErrInternal)
	}
	pub := priv.PublicKey()
	if !circl.Verify(&pub, circl.NewMessage(req.Message), sig, req.Context) {
		return nil, fmt.Errorf("sign %s: the signature does not verify under the key's own public half: %w", s.name(), pqc.ErrInvalidKey)
	}
	return &pqc.SignResponse{Signature: sig}, nil
}

// Verify implements pqc.Provider: FIPS 205 Algorithm 24 (slh_verify, pure).
// A signature of the wrong length is Valid=false, not an error.
func (p *Provider) Verify(ctx context.Context, req *pqc.VerifyRequest) (*pqc.VerifyResponse, error) {
	_, s, err := p.lookup(req.Algorithm)
	if err != nil {
		return nil, err
	}
	if err := checkSizes(req.Message, req.Context); err != nil {
		return nil, err
	}
	if want := s.id.Scheme().PublicKeySize(); len(req.PublicKey) != want {
		return nil, fmt.Errorf("%s public key of %d bytes, want %d: %w", s.name(), len(req.PublicKey), want, pqc.ErrInvalidKey)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	pub := circl.PublicKey{ID: s.id}
	if err := pub.UnmarshalBinary(req.PublicKey); err != nil {
		return nil, fmt.Errorf("%s public key: %v: %w", s.name(), err, pqc.ErrInvalidKey)
	}
	return &pqc.VerifyResponse{Valid: circl.Verify(&pub, circl.NewMessage(req.Message), req.Signature, req.Context)}, nil
}

// wipe zeroizes the secret parts circl keeps inside priv (SK.seed and
// SK.prf). circl exports no way to do so; the fields are reached by name,
// and TestWipeClearsCirclKey fails if a circl upgrade renames them.
func wipe(priv *circl.PrivateKey) {
	v := reflect.ValueOf(priv).Elem()
	for _, name := range []string{"seed", "prfKey"} {
		f := v.FieldByName(name)
		if f.IsValid() && f.Kind() == reflect.Slice && f.Type().Elem().Kind() == reflect.Uint8 {
			clear(f.Bytes())
		}
	}
}

// Interface guards.
var (
	_ plugin.PQCPlugin       = (*Provider)(nil)
	_ plugin.ConfigValidator = (*Provider)(nil)
)
