// Package acmeplugin is the plugin side of the acme plugin: it reads the
// plugin's configuration, takes the CA plugin wired to it and the host's
// storage, cache, clock, RNG and audit log, and serves sdk/acme.Server
// from plugins/acme/server with the network validators of
// plugins/acme/validate.
package acmeplugin

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/zclconf/go-cty/cty"

	"github.com/avonzt/avon/plugins/acme/server"
	"github.com/avonzt/avon/plugins/acme/validate"
	"github.com/avonzt/avon/sdk/acme"
	"github.com/avonzt/avon/sdk/config"
	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/plugin"
)

// Version is the plugin's version.
const Version = "0.1.0"

// Config is the plugin's `config { }` body.
type Config struct {
	CAProfile         string            `json:"ca_profile"`
	ClassicalIssuer   string            `json:"classical_issuer"`
	PQIssuer          string            `json:"pq_issuer"`
	KeyTypes          []string          `json:"key_types"`
	TermsOfService    string            `json:"terms_of_service"`
	RequireTerms      bool              `json:"require_terms"`
	RequireEAB        bool              `json:"require_eab"`
	AllowedDomains    []string          `json:"allowed_domains"`
	Wildcards         bool              `json:"wildcards"`
	Profiles          map[string]string `json:"profiles"`
	NonceTTL          string            `json:"nonce_ttl"`
	OrderTTL          string            `json:"order_ttl"`
	AuthzTTL          string            `json:"authz_ttl"`
	ValidationTimeout string            `json:"validation_timeout"`
	OrdersPerHour     int               `json:"orders_per_hour"`
	AccountsPerHour   int               `json:"accounts_per_hour"`
	Resolver          string            `json:"resolver"`
	HTTP01Port        int               `json:"http01_port"`
	TLSALPN01Port     int               `json:"tlsalpn01_port"`
	Retention         string            `json:"retention"`
	SweepBatch        int               `json:"sweep_batch"`
}

// Schema is the plugin's config schema.
var Schema = config.Schema{Attributes: []config.Attribute{
	{Name: "ca_profile", Type: cty.String, Default: cty.StringVal("server"), Description: "CA profile certificates are issued under"},
	{Name: "classical_issuer", Type: cty.String, Default: cty.StringVal(""),
		Description: `CA issuer for ECDSA, Ed25519 and RSA CSRs ("" lets the CA choose: its classical issuer when it has one)`},
	{Name: "pq_issuer", Type: cty.String, Default: cty.StringVal(""), Description: `CA issuer for ML-DSA CSRs ("" = the CA's default)`},
	{Name: "key_types", Type: cty.List(cty.String), Default: stringList(server.DefaultKeyTypes), Description: "CSR key algorithms accepted"},
	{Name: "terms_of_service", Type: cty.String, Default: cty.StringVal(""), Description: "terms of service URL in the directory"},
	{Name: "require_terms", Type: cty.Bool, Default: cty.False, Description: "new accounts must agree to the terms of service"},
	{Name: "require_eab", Type: cty.Bool, Default: cty.False, Description: "new accounts need an external account binding (avon acme eab create)"},
	{Name: "allowed_domains", Type: cty.List(cty.String), Default: cty.ListValEmpty(cty.String),
		Description: "domains (with their subdomains) orders may name; empty: any"},
	{Name: "wildcards", Type: cty.Bool, Default: cty.True, Description: "allow wildcard names (validated by dns-01)"},
	{Name: "profiles", Type: cty.Map(cty.String), Default: cty.MapValEmpty(cty.String),
		Description: `extra certificate profiles clients may ask for: name = "<ca profile>" or "<ca profile>:<lifetime>", e.g. { shortlived = "server:24h" }`},
	{Name: "nonce_ttl", Type: cty.String, Default: cty.StringVal("1h"), Description: "how long a nonce stays usable"},
	{Name: "order_ttl", Type: cty.String, Default: cty.StringVal("24h"), Description: "how long an order stays open"},
	{Name: "authz_ttl", Type: cty.String, Default: cty.StringVal("24h"), Description: "how long an authorization stays usable"},
	{Name: "validation_timeout", Type: cty.String, Default: cty.StringVal("10s"), Description: "bound of one challenge validation"},
	{Name: "orders_per_hour", Type: cty.Number, Default: cty.NumberIntVal(300), Description: "new orders per account per hour (0: no limit)"},
	{Name: "accounts_per_hour", Type: cty.Number, Default: cty.NumberIntVal(50), Description: "new accounts per client address per hour (0: no limit)"},
	{Name: "resolver", Type: cty.String, Default: cty.StringVal(""), Description: `DNS server (host:port) for challenge lookups; "" = the system resolver`},
	{Name: "http01_port", Type: cty.Number, Default: cty.NumberIntVal(80), Description: "port http-01 validation connects to"},
	{Name: "tlsalpn01_port", Type: cty.Number, Default: cty.NumberIntVal(443), Description: "port tls-alpn-01 validation connects to"},
	{Name: "retention", Type: cty.String, Default: cty.StringVal("168h"),
		Description: "how long an invalid (failed or expired) order and its authorizations are kept after the order expired"},
	{Name: "sweep_batch", Type: cty.Number, Default: cty.NumberIntVal(server.DefaultSweepBatch),
		Description: "orders the periodic clean-up examines per tick"},
}}

func stringList(ss []string) cty.Value {
	vs := make([]cty.Value, 0, len(ss))
	for _, s := range ss {
		vs = append(vs, cty.StringVal(s))
	}
	return cty.ListVal(vs)
}

// Plugin is the acme plugin.
type Plugin struct {
	log hclog.Logger

	mu  sync.RWMutex // guards srv
	srv *server.Server
}

// New returns an unconfigured plugin.
func New() *Plugin { return &Plugin{log: plugin.NewLogger()} }

// Info implements plugin.Plugin.
func (p *Plugin) Info() plugin.Info { return plugin.Info{Name: "acme", Version: Version} }

// ConfigSchema implements plugin.Plugin.
func (p *Plugin) ConfigSchema() config.Schema { return Schema }

// serverConfig checks c and converts it.
func (c *Config) serverConfig() (server.Config, validate.Config, []plugin.Problem) {
	var ps []plugin.Problem
	dur := func(attr, s string) time.Duration {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			ps = append(ps, plugin.Problem{Attribute: attr, Summary: fmt.Sprintf("%q is not a positive duration such as \"1h\"", s)})
		}
		return d
	}
	sc := server.Config{CAProfile: c.CAProfile, ClassicalIssuer: c.ClassicalIssuer, PQIssuer: c.PQIssuer, KeyTypes: c.KeyTypes,
		TermsOfService: c.TermsOfService, RequireTerms: c.RequireTerms, RequireEAB: c.RequireEAB,
		AllowedDomains: append([]string(nil), c.AllowedDomains...), Wildcards: c.Wildcards,
		OrdersPerHour: c.OrdersPerHour, AccountsPerHour: c.AccountsPerHour}
	sc.NonceTTL = dur("nonce_ttl", c.NonceTTL)
	sc.OrderTTL = dur("order_ttl", c.OrderTTL)
	sc.AuthzTTL = dur("authz_ttl", c.AuthzTTL)
	sc.ValidationTimeout = dur("validation_timeout", c.ValidationTimeout)
	sc.Retention = dur("retention", c.Retention)
	if c.SweepBatch < 1 || c.SweepBatch > 10000 {
		ps = append(ps, plugin.Problem{Attribute: "sweep_batch", Summary: fmt.Sprintf("%d is not between 1 and 10000", c.SweepBatch)})
	}
	sc.SweepBatch = c.SweepBatch
	if c.RequireTerms && c.TermsOfService == "" {
		ps = append(ps, plugin.Problem{Attribute: "require_terms", Summary: "require_terms needs terms_of_service"})
	}
	if c.OrdersPerHour < 0 || c.AccountsPerHour < 0 {
		ps = append(ps, plugin.Problem{Attribute: "orders_per_hour", Summary: "rate limits cannot be negative"})
	}
	for name, spec := range c.Profiles {
		prof, life, hasLife := strings.Cut(spec, ":")
		pr := server.Profile{Description: spec, CAProfile: prof}
		if prof == "" || name == "" {
			ps = append(ps, plugin.Problem{Attribute: "profiles", Summary: fmt.Sprintf("profile %q: %q is not <ca profile>[:<lifetime>]", name, spec)})
			continue
		}
		if hasLife {
			pr.Lifetime = dur("profiles", life)
		}
		if sc.Profiles == nil {
			sc.Profiles = map[string]server.Profile{}
		}
		sc.Profiles[name] = pr
	}
	if c.Resolver != "" {
		if _, port, err := net.SplitHostPort(c.Resolver); err != nil || port == "" {
			ps = append(ps, plugin.Problem{Attribute: "resolver", Summary: fmt.Sprintf("%q is not host:port", c.Resolver)})
		}
	}
	for attr, port := range map[string]int{"http01_port": c.HTTP01Port, "tlsalpn01_port": c.TLSALPN01Port} {
		if port < 1 || port > 65535 {
			ps = append(ps, plugin.Problem{Attribute: attr, Summary: strconv.Itoa(port) + " is not a port"})
		}
	}
	return sc, validate.Config{Resolver: c.Resolver, HTTPPort: c.HTTP01Port, TLSALPNPort: c.TLSALPN01Port}, ps
}

// ValidateConfig implements plugin.ConfigValidator.
func (p *Plugin) ValidateConfig(_ context.Context, raw []byte) []plugin.Problem {
	var c Config
	if err := config.Unmarshal(raw, &c); err != nil {
		return []plugin.Problem{{Summary: err.Error()}}
	}
	_, _, ps := c.serverConfig()
	return ps
}

// Configure implements plugin.Plugin: the CA plugin must be wired
// (uses = { ca = "<name>" }).
func (p *Plugin) Configure(ctx context.Context, req *plugin.ConfigureRequest) error {
	var c Config
	if err := config.Unmarshal(req.Config, &c); err != nil {
		return err
	}
	sc, vc, ps := c.serverConfig()
	if len(ps) > 0 {
		return &plugin.ProblemsError{Problems: ps}
	}
	h := req.Host
	ca, err := h.CA()
	if err != nil {
		return fmt.Errorf("the acme plugin needs a ca plugin: add uses = { ca = \"<name>\" } to its block: %w", err)
	}
	srv, err := server.New(sc, server.Deps{Storage: h.Storage(), Cache: h.Cache(), CA: ca, Rand: h.Rand(), Clock: h.Now,
		Audit: h.Audit, Validator: validate.New(vc), Log: p.log})
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.srv = srv
	p.mu.Unlock()
	p.log.Info("acme ready", "ca_profile", sc.CAProfile, "require_eab", sc.RequireEAB, "resolver", vc.Resolver,
		"http01_port", vc.HTTPPort, "tlsalpn01_port", vc.TLSALPNPort)
	return nil
}

func (p *Plugin) server() (*server.Server, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.srv == nil {
		return nil, errdef.ErrNotConfigured
	}
	return p.srv, nil
}

// HandleHTTP implements acme.Server.
func (p *Plugin) HandleHTTP(ctx context.Context, req *acme.HTTPRequest) (*acme.HTTPResponse, error) {
	s, err := p.server()
	if err != nil {
		return nil, err
	}
	if len(req.Body) > acme.MaxBodySize {
		return nil, fmt.Errorf("body of %d bytes: %w", len(req.Body), acme.ErrBodyTooLarge)
	}
	return s.Handle(ctx, req)
}

// Tick implements acme.Maintainer: one bounded step of the clean-up of
// expired orders and authorizations, at the core's calibrated time (the
// host clock when the request has none).
func (p *Plugin) Tick(ctx context.Context, req *acme.TickRequest) (*acme.TickResponse, error) {
	s, err := p.server()
	if err != nil {
		return nil, err
	}
	now := req.Now
	if now.IsZero() {
		if now, err = s.Now(ctx); err != nil {
			return nil, err
		}
	}
	if _, err := s.Tick(ctx, now); err != nil {
		return nil, err
	}
	return &acme.TickResponse{}, nil
}

// Health implements plugin.HealthChecker: unhealthy until configured.
func (p *Plugin) Health(context.Context) error {
	_, err := p.server()
	return err
}

var (
	_ plugin.ACMEPlugin = (*Plugin)(nil)
	_ acme.Maintainer   = (*Plugin)(nil)
)
