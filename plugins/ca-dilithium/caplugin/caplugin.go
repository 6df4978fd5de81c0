// Package caplugin is the plugin side of ca-dilithium: it reads the
// plugin's configuration, takes the KMS (and optional pqc) plugin wired to
// it, and serves the ca interface from the engine in plugins/ca-dilithium/ca.
package caplugin

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/zclconf/go-cty/cty"

	"github.com/avonzt/avon/plugins/ca-dilithium/ca"
	sdkca "github.com/avonzt/avon/sdk/ca"
	"github.com/avonzt/avon/sdk/config"
	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/host"
	"github.com/avonzt/avon/sdk/plugin"
)

// Version is the plugin's version.
const Version = "0.1.0"

// clockReuse is how long a calibrated reading of the core's clock is
// reused for the time of issuances, CRLs and OCSP answers.
const clockReuse = time.Second

// Config is the plugin's `config { }` body.
type Config struct {
	Organization         string            `json:"organization"`
	RootAlgorithm        string            `json:"root_algorithm"`
	IssuingAlgorithm     string            `json:"issuing_algorithm"`
	ClassicalIssuer      bool              `json:"classical_issuer"`
	RootLifetime         string            `json:"root_lifetime"`
	IntermediateLifetime string            `json:"intermediate_lifetime"`
	CRLLifetime          string            `json:"crl_lifetime"`
	CRLURL               string            `json:"crl_url"`
	OCSPURL              string            `json:"ocsp_url"`
	PermittedDNSDomains  []string          `json:"permitted_dns_domains"`
	Lifetimes            map[string]string `json:"lifetimes"`
	Init                 string            `json:"init"`
}

// Schema is the plugin's config schema.
var Schema = config.Schema{Attributes: []config.Attribute{
	{Name: "organization", Type: cty.String, Default: cty.StringVal("AVON"), Description: "O= of the CA certificates"},
	{Name: "root_algorithm", Type: cty.String, Default: cty.StringVal("ML-DSA-87"),
		Description: "root key algorithm: ML-DSA-44/65/87 or ECDSA-P384 in the KMS, or an algorithm of the wired pqc plugin (e.g. SLH-DSA-SHA2-128s)"},
	{Name: "issuing_algorithm", Type: cty.String, Default: cty.StringVal("ML-DSA-65"), Description: "issuing intermediate key algorithm"},
	{Name: "classical_issuer", Type: cty.Bool, Default: cty.False,
		Description: "also an ECDSA-P384 root and issuer, for TLS clients that cannot verify ML-DSA yet"},
	{Name: "root_lifetime", Type: cty.String, Default: cty.StringVal("87600h"), Description: "root certificate lifetime"},
	{Name: "intermediate_lifetime", Type: cty.String, Default: cty.StringVal("43800h"), Description: "issuing certificate lifetime"},
	{Name: "crl_lifetime", Type: cty.String, Default: cty.StringVal("24h"), Description: "CRL nextUpdate - thisUpdate"},
	{Name: "crl_url", Type: cty.String, Default: cty.StringVal(""), Description: "CRL distribution point put in certificates"},
	{Name: "ocsp_url", Type: cty.String, Default: cty.StringVal(""), Description: "OCSP responder URL put in certificates"},
	{Name: "permitted_dns_domains", Type: cty.List(cty.String), Default: cty.ListValEmpty(cty.String),
		Description: "name constraints on the issuing CA (DNS domains it may certify)"},
	{Name: "lifetimes", Type: cty.Map(cty.String), Default: cty.MapValEmpty(cty.String),
		Description: `default lifetime per profile, e.g. { agent = "720h" }`},
	{Name: "init", Type: cty.String, Default: cty.StringVal("auto"),
		Description: `"auto": the hierarchy is created at first start; "manual": the CA starts without one until avon ca init (a key ceremony)`},
}}

// Plugin is the ca-dilithium plugin.
type Plugin struct {
	log hclog.Logger

	mu  sync.RWMutex
	eng *ca.Engine
}

// New returns an unconfigured plugin.
func New() *Plugin { return &Plugin{log: plugin.NewLogger()} }

// Info implements plugin.Plugin.
func (p *Plugin) Info() plugin.Info { return plugin.Info{Name: "ca-dilithium", Version: Version} }

// ConfigSchema implements plugin.Plugin.
func (p *Plugin) ConfigSchema() config.Schema { return Schema }

func (c *Config) engineConfig() (ca.Config, []plugin.Problem) {
	var ps []plugin.Problem
	dur := func(attr, s string) time.Duration {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			ps = append(ps, plugin.Problem{Attribute: attr, Summary: fmt.Sprintf("%q is not a positive duration such as \"720h\"", s)})
		}
		return d
	}
	ec := ca.Config{Organization: c.Organization, RootAlgorithm: c.RootAlgorithm, IssuingAlgorithm: c.IssuingAlgorithm,
		Classical: c.ClassicalIssuer, CRLURL: c.CRLURL, OCSPURL: c.OCSPURL, PermittedDNSDomains: c.PermittedDNSDomains,
		Lifetimes: map[string]time.Duration{}}
	switch c.Init {
	case "auto", "":
	case "manual":
		ec.Manual = true
	default:
		ps = append(ps, plugin.Problem{Attribute: "init", Summary: fmt.Sprintf("%q: want \"auto\" or \"manual\"", c.Init)})
	}
	ec.RootLifetime = dur("root_lifetime", c.RootLifetime)
	ec.IntermediateLifetime = dur("intermediate_lifetime", c.IntermediateLifetime)
	ec.CRLLifetime = dur("crl_lifetime", c.CRLLifetime)
	if ec.IntermediateLifetime > ec.RootLifetime {
		ps = append(ps, plugin.Problem{Attribute: "intermediate_lifetime", Summary: "longer than root_lifetime"})
	}
	for name, s := range c.Lifetimes {
		if _, ok := ca.DefaultProfiles()[name]; !ok {
			ps = append(ps, plugin.Problem{Attribute: "lifetimes", Summary: fmt.Sprintf("no profile %q (profiles: agent, client, gateway, server)", name)})
			continue
		}
		ec.Lifetimes[name] = dur("lifetimes", s)
	}
	for attr, u := range map[string]string{"crl_url": c.CRLURL, "ocsp_url": c.OCSPURL} {
		if u == "" {
			continue
		}
		if pu, err := url.Parse(u); err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
			ps = append(ps, plugin.Problem{Attribute: attr, Summary: fmt.Sprintf("%q is not an http(s) URL", u)})
		}
	}
	return ec, ps
}

// ValidateConfig implements plugin.ConfigValidator.
func (p *Plugin) ValidateConfig(_ context.Context, raw []byte) []plugin.Problem {
	var c Config
	if err := config.Unmarshal(raw, &c); err != nil {
		return []plugin.Problem{{Summary: err.Error()}}
	}
	_, ps := c.engineConfig()
	return ps
}

// Configure implements plugin.Plugin: the KMS plugin must be wired
// (uses = { kms = "<name>" }); the hierarchy is created at first start.
func (p *Plugin) Configure(ctx context.Context, req *plugin.ConfigureRequest) error {
	var c Config
	if err := config.Unmarshal(req.Config, &c); err != nil {
		return err
	}
	ec, ps := c.engineConfig()
	if len(ps) > 0 {
		return fmt.Errorf("%s: %w", ps[0].Summary, errdef.ErrInvalidArgument)
	}
	k, err := req.Host.KMS()
	if err != nil {
		return fmt.Errorf("ca-dilithium needs a kms plugin: add uses = { kms = \"<name>\" } to its block: %w", err)
	}
	pq, err := req.Host.PQC()
	if err != nil && !errors.Is(err, host.ErrNotWired) {
		return err
	}
	h := req.Host
	// The trusted time of an issuance or a CRL: a calibrated reading of
	// the core's clock, reused for up to clockReuse (aged by the local
	// monotonic clock), so issuing does not wait for a clock round trip
	// each time; an uncalibrated core fails closed.
	eng := ca.New(ec, k, pq, h.Storage(), h.Rand(), host.NewReusedClock(h.Now, clockReuse).Now,
		func(ctx context.Context, ev host.Event) error { return h.Audit(ctx, ev) }, ca.WithNamedKMS(h.KMSNamed))
	if err := eng.Init(ctx); err != nil {
		return fmt.Errorf("ca init: %w", err)
	}
	p.mu.Lock()
	p.eng = eng
	p.mu.Unlock()
	if !eng.Initialized() {
		p.log.Warn("ca not initialized (init = \"manual\"): issuing nothing until avon ca init")
		return nil
	}
	p.log.Info("ca ready", "root_algorithm", ec.RootAlgorithm, "issuing_algorithm", ec.IssuingAlgorithm, "classical", ec.Classical)
	return nil
}

// Health implements plugin.Plugin: unhealthy until configured, and "not
// initialized" while a manual CA waits for avon ca init.
func (p *Plugin) Health(context.Context) error {
	e := p.engine()
	if e == nil {
		return errdef.ErrNotConfigured
	}
	if !e.Initialized() {
		return errors.New("not initialized: run avon ca init")
	}
	return nil
}

func (p *Plugin) engine() *ca.Engine {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.eng
}

func (p *Plugin) ready() (*ca.Engine, error) {
	if e := p.engine(); e != nil {
		return e, nil
	}
	return nil, errdef.ErrNotConfigured
}

// Issue implements sdkca.CA.
func (p *Plugin) Issue(ctx context.Context, req *sdkca.IssueRequest) (*sdkca.IssueResponse, error) {
	e, err := p.ready()
	if err != nil {
		return nil, err
	}
	return e.Issue(ctx, req)
}

// IssueOnce implements sdkca.OnceIssuer.
func (p *Plugin) IssueOnce(ctx context.Context, req *sdkca.IssueOnceRequest) (*sdkca.IssueOnceResponse, error) {
	e, err := p.ready()
	if err != nil {
		return nil, err
	}
	return e.IssueOnce(ctx, req)
}

// Revoke implements sdkca.CA.
func (p *Plugin) Revoke(ctx context.Context, req *sdkca.RevokeRequest) (*sdkca.RevokeResponse, error) {
	e, err := p.ready()
	if err != nil {
		return nil, err
	}
	return e.Revoke(ctx, req)
}

// GetCertificate implements sdkca.CA.
func (p *Plugin) GetCertificate(ctx context.Context, req *sdkca.GetCertificateRequest) (*sdkca.GetCertificateResponse, error) {
	e, err := p.ready()
	if err != nil {
		return nil, err
	}
	return e.GetCertificate(ctx, req)
}

// ListIssuers implements sdkca.CA.
func (p *Plugin) ListIssuers(ctx context.Context, req *sdkca.ListIssuersRequest) (*sdkca.ListIssuersResponse, error) {
	e, err := p.ready()
	if err != nil {
		return nil, err
	}
	return e.ListIssuers(ctx, req)
}

// CRL implements sdkca.CA.
func (p *Plugin) CRL(ctx context.Context, req *sdkca.CRLRequest) (*sdkca.CRLResponse, error) {
	e, err := p.ready()
	if err != nil {
		return nil, err
	}
	return e.CRL(ctx, req)
}

// RespondOCSP implements sdkca.OCSPResponder.
func (p *Plugin) RespondOCSP(ctx context.Context, req *sdkca.OCSPRequest) (*sdkca.OCSPResponse, error) {
	e, err := p.ready()
	if err != nil {
		return nil, err
	}
	return e.RespondOCSP(ctx, req)
}

// ListCertificates implements sdkca.CertificateLister.
func (p *Plugin) ListCertificates(ctx context.Context, req *sdkca.ListCertificatesRequest) (*sdkca.ListCertificatesResponse, error) {
	e, err := p.ready()
	if err != nil {
		return nil, err
	}
	return e.ListCertificates(ctx, req)
}

// RotateIssuer implements sdkca.Rotator.
func (p *Plugin) RotateIssuer(ctx context.Context, req *sdkca.RotateRequest) (*sdkca.RotateResponse, error) {
	e, err := p.ready()
	if err != nil {
		return nil, err
	}
	r, err := e.RotateIssuer(ctx, req)
	if err == nil {
		p.log.Info("issuer rotated", "issuer", r.Issuer, "generation", r.Generation, "kms", r.KMS, "algorithm", r.Algorithm, "serial", r.Serial)
	}
	return r, err
}

// Initialize implements sdkca.Initializer.
func (p *Plugin) Initialize(ctx context.Context, req *sdkca.InitializeRequest) (*sdkca.InitializeResponse, error) {
	e, err := p.ready()
	if err != nil {
		return nil, err
	}
	r, err := e.Initialize(ctx, req)
	if err == nil {
		p.log.Info("ca initialized", "root_sha256", r.RootSHA256, "root_subject", r.RootSubject)
	}
	return r, err
}

var (
	_ sdkca.CA                = (*Plugin)(nil)
	_ sdkca.OCSPResponder     = (*Plugin)(nil)
	_ sdkca.CertificateLister = (*Plugin)(nil)
	_ sdkca.Rotator           = (*Plugin)(nil)
	_ sdkca.Initializer       = (*Plugin)(nil)
	_ sdkca.OnceIssuer        = (*Plugin)(nil)
)
