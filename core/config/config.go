// Package config reads the core's HCL v2 configuration (config.hcl).
//
// Core blocks are typed; each `plugin "<kind>" "<name>"` block's
// `config { }` body stays opaque here and is decoded later against the schema
// the plugin reports (Plugin.DecodeConfig). Every mistake is an
// hcl.Diagnostic with file:line:col, and Load collects all of them rather
// than stopping at the first; with any error it returns no Config.
//
// Expressions may call env("NAME") / env("NAME", "default") and
// file("path") (relative to the configuration file's directory).
//
// The package only reads files: it starts nothing and creates nothing.
package config

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"

	"github.com/avonzt/avon/core/gateway/ipam"
	sdkconfig "github.com/avonzt/avon/sdk/config"
)

// Kinds are the plugin kinds a `plugin` block may name.
var Kinds = []string{"kms", "ca", "acme", "policy", "pqc"}

// StorageTypes are the known `storage` block types.
var StorageTypes = []string{"embedded", "postgres", "redis"}

// Config is the core's configuration.
type Config struct {
	DataDir     string // absolute
	LogLevel    string // trace|debug|info|warn|error
	LogFormat   string // text|json
	API         API
	Gateway     Gateway
	Plugins     PluginSettings
	Storage     Storage
	Cache       Cache
	RNG         RNG
	Calibration Calibration
	Audit       Audit
	Auth        Auth
	Plugin      []*Plugin

	// Files holds the parsed files, for printing diagnostics.
	Files map[string]*hcl.File
	dir   string // directory of the configuration file
}

// API is the `api` block.
type API struct {
	Listen      string // host:port, default 127.0.0.1:8443
	TLSCertFile string // absolute; with TLSKeyFile, or neither
	TLSKeyFile  string
}

// Gateway is the `gateway` block. The gateway runs when Enabled: false
// without the block (a core that only serves the PKI and the API), true
// by default when the block is present.
type Gateway struct {
	Enabled    bool
	Listen     string       // UDP host:port, default 0.0.0.0:4600
	TunnelCIDR netip.Prefix // IPv4, default 100.96.0.0/16
	// TunnelCIDR6 is the IPv6 tunnel network (tunnel_cidr6, a unicast /64
	// to /126); set, the tunnel is dual stack: every agent gets an address
	// of each, and IPv6 routes are allowed. Zero by default (IPv4 only).
	TunnelCIDR6 netip.Prefix
	Routes      []netip.Prefix // protected networks, IPv4 or (with TunnelCIDR6) IPv6
	// Endpoint is the host:port agents are told to connect to (the
	// enrollment bundle); default the listen address when its host is not
	// a wildcard, else none (agents then need avon-agent up -gateway).
	Endpoint  string
	Interface string // TUN device name, default "avon-gw0"
	MTU       int    // tunnel MTU, default 1420 (576 to 65535)
	// AEAD is "auto" (the agent proposes: AES-256-GCM or
	// ChaCha20-Poly1305), "aes-256-gcm" or "chacha20-poly1305".
	AEAD          string
	PulseInterval time.Duration // default 10s (1s to 10m, whole milliseconds)
	// HandshakeRate is the handshakes per second one source may start
	// (default 20, 1 to 100000); MaxSessions bounds the session table
	// (default 100000, 1 to 10000000).
	HandshakeRate float64
	MaxSessions   int
	// Policy is the `policy { }` block: per-flow enforcement; its zero
	// value (no block) is off.
	Policy GatewayPolicy
	// DelegatedKey is the `delegated_key { enabled = true, validity = "8h" }`
	// block: handshakes signed by an in-memory key certified by the KMS
	// gateway key for Validity (docs/protocol.md §3.2.1). On by default.
	DelegatedKey GatewayDelegatedKey
}

// GatewayDelegatedKey is the gateway's `delegated_key { }` block.
type GatewayDelegatedKey struct {
	Enabled  bool
	Validity time.Duration // default 8h, 10m to 24h
}

// GatewayPolicy is the gateway's `policy { plugin = "..." mode = "..." }`
// block. Mode is "off" (also when empty: the default, today's behaviour,
// policy left to the kernel's firewall) or "enforce" (every new flow
// decided by the policy plugin, fail closed: docs/architecture.md, "Flow
// enforcement"). Plugin names a `plugin "policy" "<name>"` block, required
// with "enforce".
type GatewayPolicy struct {
	Plugin      string
	Mode        string
	PolicySet   string // the policy set id ("" = the plugin's default)
	PluginRange hcl.Range
}

// GatewayPolicyModes are the values of gateway.policy.mode.
var GatewayPolicyModes = []string{"off", "enforce"}

// Gateway limits and defaults, checked by Load.
const (
	DefaultGatewayInterface     = "avon-gw0"
	DefaultGatewayMTU           = 1420
	DefaultGatewayPulseInterval = 10 * time.Second
	// DefaultDelegatedKeyValidity .. MaxDelegatedKeyValidity bound
	// gateway.delegated_key.validity.
	DefaultDelegatedKeyValidity = 8 * time.Hour
	MinDelegatedKeyValidity     = 10 * time.Minute
	MaxDelegatedKeyValidity     = 24 * time.Hour
	DefaultGatewayHandshakeRate = 20
	DefaultGatewayMaxSessions   = 100_000
	MinGatewayMTU               = 576
	MinGatewayMTU6              = 1280 // with tunnel_cidr6 (IPv6's minimum link MTU)
	MaxGatewayMTU               = 65535
	MinGatewayPulseInterval     = time.Second
	MaxGatewayPulseInterval     = 10 * time.Minute
	MaxGatewayHandshakeRate     = 100_000
	MaxGatewaySessions          = 10_000_000
)

// GatewayAEADs are the values of gateway.aead.
var GatewayAEADs = []string{"auto", "aes-256-gcm", "chacha20-poly1305"}

// ifNameRE is a Linux interface name (IFNAMSIZ-1 bytes, no '/', ':' or
// blanks).
var ifNameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,15}$`)

// PluginSettings is the `plugins` block.
type PluginSettings struct {
	Directory         string // absolute; where bare command names are found
	RequireChecksums  bool
	HealthInterval    time.Duration
	RestartBackoffMin time.Duration
	RestartBackoffMax time.Duration
	StartTimeout      time.Duration
}

// Storage is the `storage "<type>"` block.
type Storage struct {
	Type string // "embedded" or "postgres"
	Path string // embedded: the database file, absolute
	// postgres
	DSN            string
	MaxConns       int           // pool size, default 10
	ConnectTimeout time.Duration // default 5s
	// redis: the connection settings of a cache "redis" block, and whether
	// a server that can lose acknowledged writes is refused (default true).
	Redis          Cache
	RequireDurable bool
}

// Plugin is a `plugin "<kind>" "<name>"` block.
type Plugin struct {
	Kind, Name string
	Command    string // absolute path of the binary
	Args       []string
	Env        map[string]string
	SHA256     string
	// Uses wires other plugins to this one: kind -> names, the first the
	// default (`uses = { kms = "soft" }` or `{ kms = ["soft", "hsm"] }`).
	Uses      map[string][]string
	UsesRange hcl.Range // of the uses expression, for diagnostics
	Disabled  bool
	// Config is the opaque `config { }` body; nil when absent.
	Config    hcl.Body
	DeclRange hcl.Range
}

var (
	nameRE   = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,62}$`)
	sha256RE = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

var rootSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "data_dir"}, {Name: "log_level"}, {Name: "log_format"}},
	Blocks: []hcl.BlockHeaderSchema{
		{Type: "api"}, {Type: "gateway"}, {Type: "plugins"},
		{Type: "storage", LabelNames: []string{"type"}},
		{Type: "cache", LabelNames: []string{"type"}},
		{Type: "rng"}, {Type: "calibration"}, {Type: "audit"}, {Type: "auth"},
		{Type: "plugin", LabelNames: []string{"kind", "name"}},
	},
}

// Load reads and checks the configuration file at path.
func Load(path string) (*Config, hcl.Diagnostics) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Cannot read configuration file", Detail: err.Error()}}
	}
	return Parse(src, path)
}

// Parse checks configuration source. filename names it in diagnostics, and
// relative paths resolve against its directory. On error the returned
// Config is nil except for Files, which WriteDiagnostics needs.
func Parse(src []byte, filename string) (*Config, hcl.Diagnostics) {
	p := hclparse.NewParser()
	f, diags := p.ParseHCL(src, filename)
	files := p.Files()
	if diags.HasErrors() {
		return &Config{Files: files}, diags
	}
	abs, err := filepath.Abs(filename)
	if err != nil {
		abs = filename
	}
	c := &Config{Files: files, dir: filepath.Dir(abs)}
	diags = append(diags, c.decode(f.Body)...)
	if diags.HasErrors() {
		return &Config{Files: files}, diags
	}
	return c, diags
}

// HasConfig reports whether c is a usable configuration (not the shell
// returned with errors).
func (c *Config) HasConfig() bool { return c != nil && c.dir != "" }

// EvalContext returns the functions available in expressions, for the
// plugin bodies decoded later.
func (c *Config) EvalContext() *hcl.EvalContext {
	dir := c.dir
	return &hcl.EvalContext{Functions: map[string]function.Function{
		"env": function.New(&function.Spec{
			Params:   []function.Parameter{{Name: "name", Type: cty.String}},
			VarParam: &function.Parameter{Name: "default", Type: cty.String},
			Type:     function.StaticReturnType(cty.String),
			Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
				name := args[0].AsString()
				if len(args) > 2 {
					return cty.NilVal, fmt.Errorf("env takes a name and at most one default")
				}
				if v, ok := os.LookupEnv(name); ok {
					return cty.StringVal(v), nil
				}
				if len(args) == 2 {
					return args[1], nil
				}
				return cty.NilVal, fmt.Errorf("environment variable %s is not set (give a default: env(%q, \"...\"))", name, name)
			},
		}),
		"file": function.New(&function.Spec{
			Params: []function.Parameter{{Name: "path", Type: cty.String}},
			Type:   function.StaticReturnType(cty.String),
			Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
				p := args[0].AsString()
				if !filepath.IsAbs(p) {
					p = filepath.Join(dir, p)
				}
				b, err := os.ReadFile(p)
				if err != nil {
					return cty.NilVal, fmt.Errorf("read %s: %v", p, err)
				}
				return cty.StringVal(string(b)), nil
			},
		}),
	}}
}

func (c *Config) abs(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.dir, p)
}

func errAt(r hcl.Range, summary, detail string) *hcl.Diagnostic {
	return &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary, Detail: detail, Subject: r.Ptr()}
}

// attr decodes an optional attribute into target.
func attr(ctx *hcl.EvalContext, attrs hcl.Attributes, name string, target any) (hcl.Range, bool, hcl.Diagnostics) {
	a, ok := attrs[name]
	if !ok {
		return hcl.Range{}, false, nil
	}
	if _, diags := a.Expr.Value(ctx); diags.HasErrors() {
		return a.Expr.Range(), true, diags // not followed by a type error on the unknown result
	}
	return a.Expr.Range(), true, gohcl.DecodeExpression(a.Expr, ctx, target)
}

func duration(ctx *hcl.EvalContext, attrs hcl.Attributes, name string, def time.Duration, target *time.Duration) hcl.Diagnostics {
	*target = def
	var s string
	r, ok, diags := attr(ctx, attrs, name, &s)
	if !ok || diags.HasErrors() {
		return diags
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return hcl.Diagnostics{errAt(r, "Invalid duration", fmt.Sprintf("%s = %q: want a positive duration such as \"500ms\", \"10s\" or \"1m\".", name, s))}
	}
	*target = d
	return nil
}

func singleton(blocks hcl.Blocks, typ string) (*hcl.Block, hcl.Diagnostics) {
	var found *hcl.Block
	var diags hcl.Diagnostics
	for _, b := range blocks {
		if b.Type != typ {
			continue
		}
		if found != nil {
			diags = append(diags, errAt(b.DefRange, fmt.Sprintf("Duplicate %s block", typ),
				fmt.Sprintf("Only one %s block is allowed; the first is at %s.", typ, found.DefRange)))
			continue
		}
		found = b
	}
	return found, diags
}

func (c *Config) decode(body hcl.Body) hcl.Diagnostics {
	ctx := c.EvalContext()
	content, diags := body.Content(rootSchema)

	c.DataDir, c.LogLevel, c.LogFormat = "./data", "info", "text"
	_, _, d := attr(ctx, content.Attributes, "data_dir", &c.DataDir)
	diags = append(diags, d...)
	c.DataDir = c.abs(c.DataDir)
	if r, ok, d := attr(ctx, content.Attributes, "log_level", &c.LogLevel); ok {
		diags = append(diags, d...)
		if !d.HasErrors() && !oneOf(c.LogLevel, "trace", "debug", "info", "warn", "error") {
			diags = append(diags, errAt(r, "Invalid log level", fmt.Sprintf("log_level = %q: use trace, debug, info, warn or error.", c.LogLevel)))
		}
	}
	if r, ok, d := attr(ctx, content.Attributes, "log_format", &c.LogFormat); ok {
		diags = append(diags, d...)
		if !d.HasErrors() && !oneOf(c.LogFormat, "text", "json") {
			diags = append(diags, errAt(r, "Invalid log format", fmt.Sprintf("log_format = %q: use text or json.", c.LogFormat)))
		}
	}

	b, d := singleton(content.Blocks, "api")
	diags = append(diags, d...)
	diags = append(diags, c.decodeAPI(ctx, b)...)
	b, d = singleton(content.Blocks, "gateway")
	diags = append(diags, d...)
	diags = append(diags, c.decodeGateway(ctx, b)...)
	b, d = singleton(content.Blocks, "plugins")
	diags = append(diags, d...)
	diags = append(diags, c.decodePlugins(ctx, b)...)
	b, d = singleton(content.Blocks, "storage")
	diags = append(diags, d...)
	diags = append(diags, c.decodeStorage(ctx, b)...)
	b, d = singleton(content.Blocks, "cache")
	diags = append(diags, d...)
	diags = append(diags, c.decodeCache(ctx, b)...)
	rngBlock, d := singleton(content.Blocks, "rng")
	diags = append(diags, d...)
	diags = append(diags, c.decodeRNG(ctx, rngBlock)...)
	calBlock, d := singleton(content.Blocks, "calibration")
	diags = append(diags, d...)
	diags = append(diags, c.decodeCalibration(ctx, calBlock)...)
	auditBlock, d := singleton(content.Blocks, "audit")
	diags = append(diags, d...)
	diags = append(diags, c.decodeAudit(ctx, auditBlock)...)
	authBlock, d := singleton(content.Blocks, "auth")
	diags = append(diags, d...)
	diags = append(diags, c.decodeAuth(ctx, authBlock)...)

	seen := map[string]*Plugin{}
	for _, blk := range content.Blocks {
		if blk.Type != "plugin" {
			continue
		}
		p, d := c.decodePlugin(ctx, blk)
		diags = append(diags, d...)
		if p == nil {
			continue
		}
		id := p.Kind + "." + p.Name
		if prev, dup := seen[id]; dup {
			diags = append(diags, errAt(blk.DefRange, "Duplicate plugin",
				fmt.Sprintf("plugin %q %q is already declared at %s.", p.Kind, p.Name, prev.DeclRange)))
			continue
		}
		seen[id] = p
		c.Plugin = append(c.Plugin, p)
	}
	diags = append(diags, c.checkUses(seen)...)
	diags = append(diags, c.checkGatewayPolicy(seen)...)
	blockRange := func(b *hcl.Block) hcl.Range {
		if b != nil {
			return b.DefRange
		}
		return hcl.Range{}
	}
	if c.Calibration.Attestations {
		diags = append(diags, c.resolveSigningKMS(seen, "calibration", &c.Calibration.KMS, blockRange(calBlock))...)
	}
	if c.Audit.Checkpoints {
		diags = append(diags, c.resolveSigningKMS(seen, "audit", &c.Audit.KMS, blockRange(auditBlock))...)
	}
	if c.Auth.Enabled {
		diags = append(diags, c.resolveSigningKMS(seen, "auth", &c.Auth.KMS, blockRange(authBlock))...)
	}
	for _, s := range c.RNG.ExtraSources {
		if p, ok := seen["kms."+s]; !ok || p.Disabled {
			diags = append(diags, errAt(blockRange(rngBlock), "Unknown entropy source",
				fmt.Sprintf("rng extra_sources: %q names no enabled `plugin \"kms\" %q` block.", s, s)))
		}
	}
	return diags
}

func oneOf(s string, opts ...string) bool {
	for _, o := range opts {
		if s == o {
			return true
		}
	}
	return false
}

func checkHostPort(r hcl.Range, name, v string) hcl.Diagnostics {
	host, port, err := net.SplitHostPort(v)
	if err == nil {
		var n int
		if _, serr := fmt.Sscanf(port, "%d", &n); serr != nil || n < 0 || n > 65535 {
			err = fmt.Errorf("bad port %q", port)
		}
		if host != "" && net.ParseIP(host) == nil && host != "localhost" {
			err = fmt.Errorf("host %q is not an IP address or localhost", host)
		}
	}
	if err != nil {
		return hcl.Diagnostics{errAt(r, "Invalid listen address", fmt.Sprintf("%s = %q: want host:port such as \"127.0.0.1:8443\" (%v).", name, v, err))}
	}
	return nil
}

func (c *Config) decodeAPI(ctx *hcl.EvalContext, b *hcl.Block) hcl.Diagnostics {
	c.API = API{Listen: "127.0.0.1:8443"}
	if b == nil {
		return nil
	}
	content, diags := b.Body.Content(&hcl.BodySchema{Attributes: []hcl.AttributeSchema{
		{Name: "listen"}, {Name: "tls_cert_file"}, {Name: "tls_key_file"}}})
	if r, ok, d := attr(ctx, content.Attributes, "listen", &c.API.Listen); ok {
		diags = append(diags, d...)
		if !d.HasErrors() {
			diags = append(diags, checkHostPort(r, "listen", c.API.Listen)...)
		}
	}
	_, _, d := attr(ctx, content.Attributes, "tls_cert_file", &c.API.TLSCertFile)
	diags = append(diags, d...)
	_, _, d = attr(ctx, content.Attributes, "tls_key_file", &c.API.TLSKeyFile)
	diags = append(diags, d...)
	if (c.API.TLSCertFile == "") != (c.API.TLSKeyFile == "") {
		diags = append(diags, errAt(b.DefRange, "Incomplete TLS settings", "Set both tls_cert_file and tls_key_file, or neither (a self-signed certificate is then made under data_dir)."))
	}
	c.API.TLSCertFile, c.API.TLSKeyFile = c.abs(c.API.TLSCertFile), c.abs(c.API.TLSKeyFile)
	return diags
}

func parsePrefix(r hcl.Range, name, s string) (netip.Prefix, hcl.Diagnostics) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, hcl.Diagnostics{errAt(r, "Invalid CIDR", fmt.Sprintf("%s: %q is not a CIDR such as \"10.0.0.0/8\" (%v).", name, s, err))}
	}
	if p.Masked() != p {
		return netip.Prefix{}, hcl.Diagnostics{errAt(r, "Invalid CIDR", fmt.Sprintf("%s: %q has host bits set; did you mean %q?", name, s, p.Masked()))}
	}
	return p, nil
}

func (c *Config) decodeGateway(ctx *hcl.EvalContext, b *hcl.Block) hcl.Diagnostics {
	c.Gateway = Gateway{Listen: "0.0.0.0:4600", TunnelCIDR: netip.MustParsePrefix("100.96.0.0/16"),
		Interface: DefaultGatewayInterface, MTU: DefaultGatewayMTU, AEAD: "auto", PulseInterval: DefaultGatewayPulseInterval,
		HandshakeRate: DefaultGatewayHandshakeRate, MaxSessions: DefaultGatewayMaxSessions,
		DelegatedKey: GatewayDelegatedKey{Enabled: true, Validity: DefaultDelegatedKeyValidity}}
	if b == nil {
		return nil
	}
	c.Gateway.Enabled = true
	content, diags := b.Body.Content(&hcl.BodySchema{Attributes: []hcl.AttributeSchema{
		{Name: "enabled"}, {Name: "listen"}, {Name: "tunnel_cidr"}, {Name: "tunnel_cidr6"}, {Name: "routes"}, {Name: "endpoint"},
		{Name: "interface"}, {Name: "mtu"}, {Name: "aead"}, {Name: "pulse_interval"}, {Name: "handshake_rate"},
		{Name: "max_sessions"}}, Blocks: []hcl.BlockHeaderSchema{{Type: "policy"}, {Type: "delegated_key"}}})
	pb, d := singleton(content.Blocks, "policy")
	diags = append(diags, d...)
	diags = append(diags, c.decodeGatewayPolicy(ctx, pb)...)
	db, d := singleton(content.Blocks, "delegated_key")
	diags = append(diags, d...)
	diags = append(diags, c.decodeDelegatedKey(ctx, db)...)
	_, _, d = attr(ctx, content.Attributes, "enabled", &c.Gateway.Enabled)
	diags = append(diags, d...)
	if r, ok, d := attr(ctx, content.Attributes, "listen", &c.Gateway.Listen); ok {
		diags = append(diags, d...)
		if !d.HasErrors() {
			diags = append(diags, checkHostPort(r, "listen", c.Gateway.Listen)...)
		}
	}
	if r, ok, d := attr(ctx, content.Attributes, "endpoint", &c.Gateway.Endpoint); ok {
		diags = append(diags, d...)
		if !d.HasErrors() {
			diags = append(diags, checkEndpoint(r, c.Gateway.Endpoint)...)
		}
	} else if host, _, err := net.SplitHostPort(c.Gateway.Listen); err == nil {
		if ip := net.ParseIP(host); host != "" && (ip == nil || !ip.IsUnspecified()) {
			c.Gateway.Endpoint = c.Gateway.Listen
		}
	}
	var cidr string
	if r, ok, d := attr(ctx, content.Attributes, "tunnel_cidr", &cidr); ok {
		diags = append(diags, d...)
		if !d.HasErrors() {
			p, d := parsePrefix(r, "tunnel_cidr", cidr)
			diags = append(diags, d...)
			if !d.HasErrors() && (!p.Addr().Is4() || p.Bits() > 30) {
				diags = append(diags, errAt(r, "Invalid tunnel_cidr",
					fmt.Sprintf("tunnel_cidr = %q: want an IPv4 network of /30 or larger, such as \"100.96.0.0/16\" (an IPv6 network goes in tunnel_cidr6).", cidr)))
			}
			c.Gateway.TunnelCIDR = p
		}
	}
	var cidr6 string
	if r, ok, d := attr(ctx, content.Attributes, "tunnel_cidr6", &cidr6); ok {
		diags = append(diags, d...)
		if !d.HasErrors() {
			p, d := parsePrefix(r, "tunnel_cidr6", cidr6)
			diags = append(diags, d...)
			if !d.HasErrors() {
				if msg := checkTunnelCIDR6(p); msg != "" {
					diags = append(diags, errAt(r, "Invalid tunnel_cidr6", fmt.Sprintf("tunnel_cidr6 = %q: %s", cidr6, msg)))
				} else {
					c.Gateway.TunnelCIDR6 = p
				}
			}
		}
	}
	var routes []string
	if r, ok, d := attr(ctx, content.Attributes, "routes", &routes); ok {
		diags = append(diags, d...)
		for _, s := range routes {
			p, d := parsePrefix(r, "routes", s)
			diags = append(diags, d...)
			if d.HasErrors() {
				continue
			}
			if a := p.Addr(); a.Is4In6() || a.IsLinkLocalUnicast() || a.IsMulticast() {
				diags = append(diags, errAt(r, "Invalid route",
					fmt.Sprintf("routes: %s is a link-local, multicast or IPv4-mapped network, which the tunnel does not carry.", p)))
				continue
			}
			c.Gateway.Routes = append(c.Gateway.Routes, p)
		}
	}
	if r, ok, d := attr(ctx, content.Attributes, "interface", &c.Gateway.Interface); ok {
		diags = append(diags, d...)
		if !d.HasErrors() && !ifNameRE.MatchString(c.Gateway.Interface) {
			diags = append(diags, errAt(r, "Invalid interface name",
				fmt.Sprintf("interface = %q: want 1 to 15 letters, digits, '_', '.' or '-' (a Linux interface name).", c.Gateway.Interface)))
		}
	}
	if r, ok, d := attr(ctx, content.Attributes, "mtu", &c.Gateway.MTU); ok {
		diags = append(diags, d...)
		if !d.HasErrors() && (c.Gateway.MTU < MinGatewayMTU || c.Gateway.MTU > MaxGatewayMTU) {
			diags = append(diags, errAt(r, "Invalid mtu", fmt.Sprintf("mtu = %d: want %d to %d.", c.Gateway.MTU, MinGatewayMTU, MaxGatewayMTU)))
		}
	}
	if r, ok, d := attr(ctx, content.Attributes, "aead", &c.Gateway.AEAD); ok {
		diags = append(diags, d...)
		if !d.HasErrors() && !oneOf(c.Gateway.AEAD, GatewayAEADs...) {
			diags = append(diags, errAt(r, "Invalid aead", fmt.Sprintf("aead = %q: use %s.", c.Gateway.AEAD, strings.Join(GatewayAEADs, ", "))))
		}
	}
	if a, ok := content.Attributes["pulse_interval"]; ok {
		d := duration(ctx, content.Attributes, "pulse_interval", DefaultGatewayPulseInterval, &c.Gateway.PulseInterval)
		diags = append(diags, d...)
		if pi := c.Gateway.PulseInterval; !d.HasErrors() && (pi < MinGatewayPulseInterval || pi > MaxGatewayPulseInterval || pi%time.Millisecond != 0) {
			diags = append(diags, errAt(a.Expr.Range(), "Invalid pulse_interval",
				fmt.Sprintf("pulse_interval = %s: want %s to %s in whole milliseconds.", pi, MinGatewayPulseInterval, MaxGatewayPulseInterval)))
		}
	}
	if r, ok, d := attr(ctx, content.Attributes, "handshake_rate", &c.Gateway.HandshakeRate); ok {
		diags = append(diags, d...)
		if hr := c.Gateway.HandshakeRate; !d.HasErrors() && !(hr >= 1 && hr <= MaxGatewayHandshakeRate) {
			diags = append(diags, errAt(r, "Invalid handshake_rate",
				fmt.Sprintf("handshake_rate = %g: want 1 to %d handshakes per second per source.", hr, MaxGatewayHandshakeRate)))
		}
	}
	if r, ok, d := attr(ctx, content.Attributes, "max_sessions", &c.Gateway.MaxSessions); ok {
		diags = append(diags, d...)
		if !d.HasErrors() && (c.Gateway.MaxSessions < 1 || c.Gateway.MaxSessions > MaxGatewaySessions) {
			diags = append(diags, errAt(r, "Invalid max_sessions",
				fmt.Sprintf("max_sessions = %d: want 1 to %d.", c.Gateway.MaxSessions, MaxGatewaySessions)))
		}
	}
	for _, rt := range c.Gateway.Routes {
		if rt.Overlaps(c.Gateway.TunnelCIDR) {
			diags = append(diags, errAt(b.DefRange, "Route overlaps the tunnel network",
				fmt.Sprintf("routes: %s overlaps tunnel_cidr %s; agents reach each other through the tunnel network already.", rt, c.Gateway.TunnelCIDR)))
		}
		if c.Gateway.TunnelCIDR6.IsValid() && rt.Overlaps(c.Gateway.TunnelCIDR6) {
			diags = append(diags, errAt(b.DefRange, "Route overlaps the tunnel network",
				fmt.Sprintf("routes: %s overlaps tunnel_cidr6 %s; agents reach each other through the tunnel network already.", rt, c.Gateway.TunnelCIDR6)))
		}
		// (When tunnel_cidr6 was given but refused, its own error says why.)
		if _, given := content.Attributes["tunnel_cidr6"]; rt.Addr().Is6() && !c.Gateway.TunnelCIDR6.IsValid() && !given {
			diags = append(diags, errAt(b.DefRange, "IPv6 route without an IPv6 tunnel network",
				fmt.Sprintf("routes: %s is IPv6 but the gateway has no tunnel_cidr6, so agents have no IPv6 address to reach it from; add tunnel_cidr6 = \"fd00:96::/64\" (or a /64 of your own).", rt)))
		}
	}
	if c.Gateway.TunnelCIDR6.IsValid() && c.Gateway.MTU < MinGatewayMTU6 {
		diags = append(diags, errAt(b.DefRange, "Invalid mtu",
			fmt.Sprintf("mtu = %d: an IPv6 tunnel (tunnel_cidr6) needs at least %d.", c.Gateway.MTU, MinGatewayMTU6)))
	}
	return diags
}

// decodeDelegatedKey decodes the gateway's delegated_key block.
func (c *Config) decodeDelegatedKey(ctx *hcl.EvalContext, b *hcl.Block) hcl.Diagnostics {
	if b == nil {
		return nil
	}
	content, diags := b.Body.Content(&hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: "enabled"}, {Name: "validity"}}})
	_, _, d := attr(ctx, content.Attributes, "enabled", &c.Gateway.DelegatedKey.Enabled)
	diags = append(diags, d...)
	if a, ok := content.Attributes["validity"]; ok {
		d := duration(ctx, content.Attributes, "validity", DefaultDelegatedKeyValidity, &c.Gateway.DelegatedKey.Validity)
		diags = append(diags, d...)
		if v := c.Gateway.DelegatedKey.Validity; !d.HasErrors() && (v < MinDelegatedKeyValidity || v > MaxDelegatedKeyValidity) {
			diags = append(diags, errAt(a.Expr.Range(), "Invalid delegated key validity",
				fmt.Sprintf("validity = %s: want %s to %s; the validity is how long a copy of the key outside the KMS can be abused.", v, MinDelegatedKeyValidity, MaxDelegatedKeyValidity)))
		}
	}
	return diags
}

// decodeGatewayPolicy decodes the gateway's policy block; the plugin it
// names is checked against the plugin blocks by checkGatewayPolicy.
func (c *Config) decodeGatewayPolicy(ctx *hcl.EvalContext, b *hcl.Block) hcl.Diagnostics {
	if b == nil {
		return nil
	}
	c.Gateway.Policy = GatewayPolicy{Mode: "off", PluginRange: b.DefRange}
	content, diags := b.Body.Content(&hcl.BodySchema{Attributes: []hcl.AttributeSchema{
		{Name: "plugin"}, {Name: "mode"}, {Name: "policy_set"}}})
	if r, ok, d := attr(ctx, content.Attributes, "plugin", &c.Gateway.Policy.Plugin); ok {
		diags = append(diags, d...)
		c.Gateway.Policy.PluginRange = r
		if !d.HasErrors() && !nameRE.MatchString(c.Gateway.Policy.Plugin) {
			diags = append(diags, errAt(r, "Invalid policy plugin",
				fmt.Sprintf("plugin = %q: want the name of a `plugin \"policy\" \"<name>\"` block.", c.Gateway.Policy.Plugin)))
		}
	}
	if r, ok, d := attr(ctx, content.Attributes, "mode", &c.Gateway.Policy.Mode); ok {
		diags = append(diags, d...)
		if !d.HasErrors() && !oneOf(c.Gateway.Policy.Mode, GatewayPolicyModes...) {
			diags = append(diags, errAt(r, "Invalid policy mode",
				fmt.Sprintf("mode = %q: use %s.", c.Gateway.Policy.Mode, strings.Join(GatewayPolicyModes, " or "))))
		}
	}
	_, _, d := attr(ctx, content.Attributes, "policy_set", &c.Gateway.Policy.PolicySet)
	diags = append(diags, d...)
	if c.Gateway.Policy.Mode == "enforce" && c.Gateway.Policy.Plugin == "" && !diags.HasErrors() {
		diags = append(diags, errAt(b.DefRange, "Missing policy plugin",
			"mode = \"enforce\" needs plugin = \"<name>\" naming a `plugin \"policy\" \"<name>\"` block; without one every flow would be denied."))
	}
	return diags
}

// checkGatewayPolicy checks that the gateway's policy plugin is declared
// and enabled.
func (c *Config) checkGatewayPolicy(seen map[string]*Plugin) hcl.Diagnostics {
	gp := c.Gateway.Policy
	if gp.Plugin == "" {
		return nil
	}
	if p, ok := seen["policy."+gp.Plugin]; !ok || p.Disabled {
		return hcl.Diagnostics{errAt(gp.PluginRange, "Unknown policy plugin",
			fmt.Sprintf("plugin = %q names no enabled `plugin \"policy\" %q` block.", gp.Plugin, gp.Plugin))}
	}
	return nil
}

// checkEndpoint checks an advertised host:port: a host name or an IP
// address that is not a wildcard, and a port.
func checkEndpoint(r hcl.Range, v string) hcl.Diagnostics {
	host, port, err := net.SplitHostPort(v)
	if err == nil {
		var n int
		if _, serr := fmt.Sscanf(port, "%d", &n); serr != nil || n < 1 || n > 65535 {
			err = fmt.Errorf("bad port %q", port)
		}
		if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
			err = fmt.Errorf("host %q is not an address agents can reach", host)
		}
	}
	if err != nil {
		return hcl.Diagnostics{errAt(r, "Invalid endpoint", fmt.Sprintf("endpoint = %q: want the host:port agents connect to, such as \"gw.example.com:4600\" (%v).", v, err))}
	}
	return nil
}

func (c *Config) decodePlugins(ctx *hcl.EvalContext, b *hcl.Block) hcl.Diagnostics {
	c.Plugins = PluginSettings{Directory: c.abs("./bin")}
	var diags hcl.Diagnostics
	attrs := hcl.Attributes{}
	if b != nil {
		content, d := b.Body.Content(&hcl.BodySchema{Attributes: []hcl.AttributeSchema{
			{Name: "directory"}, {Name: "require_checksums"}, {Name: "health_interval"},
			{Name: "restart_backoff_min"}, {Name: "restart_backoff_max"}, {Name: "start_timeout"}}})
		diags, attrs = d, content.Attributes
	}
	var dir string
	if _, ok, d := attr(ctx, attrs, "directory", &dir); ok {
		diags = append(diags, d...)
		c.Plugins.Directory = c.abs(dir)
	}
	_, _, d := attr(ctx, attrs, "require_checksums", &c.Plugins.RequireChecksums)
	diags = append(diags, d...)
	diags = append(diags, duration(ctx, attrs, "health_interval", 10*time.Second, &c.Plugins.HealthInterval)...)
	diags = append(diags, duration(ctx, attrs, "restart_backoff_min", 500*time.Millisecond, &c.Plugins.RestartBackoffMin)...)
	diags = append(diags, duration(ctx, attrs, "restart_backoff_max", 30*time.Second, &c.Plugins.RestartBackoffMax)...)
	diags = append(diags, duration(ctx, attrs, "start_timeout", 10*time.Second, &c.Plugins.StartTimeout)...)
	if c.Plugins.RestartBackoffMax < c.Plugins.RestartBackoffMin && b != nil {
		diags = append(diags, errAt(b.DefRange, "Invalid restart backoff", "restart_backoff_max is shorter than restart_backoff_min."))
	}
	return diags
}

func (c *Config) decodeStorage(ctx *hcl.EvalContext, b *hcl.Block) hcl.Diagnostics {
	c.Storage = Storage{Type: "embedded", Path: filepath.Join(c.DataDir, "avon.db")}
	if b == nil {
		return nil
	}
	c.Storage.Type = b.Labels[0]
	switch c.Storage.Type {
	case "embedded":
		content, diags := b.Body.Content(&hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: "path"}}})
		var p string
		if _, ok, d := attr(ctx, content.Attributes, "path", &p); ok {
			diags = append(diags, d...)
			if !filepath.IsAbs(p) {
				p = filepath.Join(c.DataDir, p)
			}
			c.Storage.Path = p
		}
		return diags
	case "postgres":
		content, diags := b.Body.Content(&hcl.BodySchema{Attributes: []hcl.AttributeSchema{
			{Name: "dsn", Required: true}, {Name: "max_conns"}, {Name: "connect_timeout"}}})
		if r, ok, d := attr(ctx, content.Attributes, "dsn", &c.Storage.DSN); ok {
			diags = append(diags, d...)
			if !d.HasErrors() {
				diags = append(diags, checkPostgresDSN(r, c.Storage.DSN)...)
			}
		}
		c.Storage.MaxConns = 10
		if r, ok, d := attr(ctx, content.Attributes, "max_conns", &c.Storage.MaxConns); ok {
			diags = append(diags, d...)
			if !d.HasErrors() && (c.Storage.MaxConns < 1 || c.Storage.MaxConns > 1000) {
				diags = append(diags, errAt(r, "Invalid max_conns", fmt.Sprintf("max_conns = %d: want 1 to 1000.", c.Storage.MaxConns)))
			}
		}
		diags = append(diags, duration(ctx, content.Attributes, "connect_timeout", 5*time.Second, &c.Storage.ConnectTimeout)...)
		return diags
	case "redis":
		return c.decodeRedisStorage(ctx, b)
	}
	return hcl.Diagnostics{errAt(b.LabelRanges[0], "Unknown storage type",
		fmt.Sprintf("storage %q is not known; known types: %s.", c.Storage.Type, strings.Join(StorageTypes, ", ")))}
}

var pluginSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "command", Required: true}, {Name: "sha256"}, {Name: "args"}, {Name: "env"}, {Name: "uses"}, {Name: "enabled"},
	},
	Blocks: []hcl.BlockHeaderSchema{{Type: "config"}},
}

func (c *Config) decodePlugin(ctx *hcl.EvalContext, b *hcl.Block) (*Plugin, hcl.Diagnostics) {
	p := &Plugin{Kind: b.Labels[0], Name: b.Labels[1], DeclRange: b.DefRange}
	var diags hcl.Diagnostics
	if !oneOf(p.Kind, Kinds...) {
		diags = append(diags, errAt(b.LabelRanges[0], "Unknown plugin kind",
			fmt.Sprintf("%q is not a plugin kind; valid kinds are %s.", p.Kind, strings.Join(Kinds, ", "))))
	}
	if !nameRE.MatchString(p.Name) {
		diags = append(diags, errAt(b.LabelRanges[1], "Invalid plugin name",
			fmt.Sprintf("%q: a plugin name starts with a lowercase letter and holds lowercase letters, digits, '-' and '_' (at most 63).", p.Name)))
	}
	content, d := b.Body.Content(pluginSchema)
	diags = append(diags, d...)
	var cmd string
	if r, ok, d := attr(ctx, content.Attributes, "command", &cmd); ok {
		diags = append(diags, d...)
		switch {
		case d.HasErrors():
		case cmd == "":
			diags = append(diags, errAt(r, "Empty plugin command", "command names the plugin binary."))
		case filepath.IsAbs(cmd):
			p.Command = cmd
		case strings.ContainsRune(cmd, filepath.Separator):
			p.Command = c.abs(cmd)
		default:
			p.Command = filepath.Join(c.Plugins.Directory, cmd)
		}
	}
	if r, ok, d := attr(ctx, content.Attributes, "sha256", &p.SHA256); ok {
		diags = append(diags, d...)
		if !d.HasErrors() && !sha256RE.MatchString(p.SHA256) {
			diags = append(diags, errAt(r, "Invalid sha256", fmt.Sprintf("sha256 = %q: want 64 lowercase hex characters (sha256sum of the binary).", p.SHA256)))
		}
	}
	if c.Plugins.RequireChecksums && p.SHA256 == "" {
		diags = append(diags, errAt(b.DefRange, "Missing plugin checksum",
			fmt.Sprintf("plugins.require_checksums is true, so plugin %q %q needs sha256 = \"...\" (run: sha256sum %s).", p.Kind, p.Name, p.Command)))
	}
	_, _, d = attr(ctx, content.Attributes, "args", &p.Args)
	diags = append(diags, d...)
	_, _, d = attr(ctx, content.Attributes, "env", &p.Env)
	diags = append(diags, d...)
	diags = append(diags, decodeUses(ctx, content.Attributes, p)...)
	enabled := true
	_, _, d = attr(ctx, content.Attributes, "enabled", &enabled)
	diags = append(diags, d...)
	p.Disabled = !enabled
	for _, blk := range content.Blocks {
		if p.Config != nil {
			diags = append(diags, errAt(blk.DefRange, "Duplicate config block", "A plugin has at most one config block."))
			continue
		}
		p.Config = blk.Body
	}
	if diags.HasErrors() {
		return nil, diags
	}
	return p, diags
}

// decodeUses reads `uses = { kind = "name" }` or `{ kind = ["a", "b"] }`.
func decodeUses(ctx *hcl.EvalContext, attrs hcl.Attributes, p *Plugin) hcl.Diagnostics {
	a, ok := attrs["uses"]
	if !ok {
		return nil
	}
	p.UsesRange = a.Expr.Range()
	v, diags := a.Expr.Value(ctx)
	if diags.HasErrors() {
		return diags
	}
	bad := func(detail string) hcl.Diagnostics {
		return hcl.Diagnostics{errAt(p.UsesRange, "Invalid uses", detail)}
	}
	if v.IsNull() || !v.IsKnown() || !(v.Type().IsObjectType() || v.Type().IsMapType()) {
		return bad(`want an object of kind = "name" or kind = ["name", ...], e.g. uses = { kms = ["soft", "hsm"] }.`)
	}
	p.Uses = map[string][]string{}
	for it := v.ElementIterator(); it.Next(); {
		k, ev := it.Element()
		kind := k.AsString()
		var names []string
		switch {
		case ev.IsNull() || !ev.IsKnown():
			return bad(fmt.Sprintf("uses.%s is null.", kind))
		case ev.Type() == cty.String:
			names = []string{ev.AsString()}
		case ev.Type().IsTupleType() || ev.Type().IsListType():
			for eit := ev.ElementIterator(); eit.Next(); {
				_, n := eit.Element()
				if n.IsNull() || !n.IsKnown() || n.Type() != cty.String {
					return bad(fmt.Sprintf("uses.%s: every element is a plugin name (a string).", kind))
				}
				names = append(names, n.AsString())
			}
			if len(names) == 0 {
				return bad(fmt.Sprintf("uses.%s is an empty list: name at least one %s plugin.", kind, kind))
			}
		default:
			return bad(fmt.Sprintf("uses.%s: want a plugin name or a list of names, got %s.", kind, ev.Type().FriendlyName()))
		}
		seen := map[string]bool{}
		for _, n := range names {
			if seen[n] {
				return bad(fmt.Sprintf("uses.%s names %q twice.", kind, n))
			}
			seen[n] = true
		}
		p.Uses[kind] = names
	}
	return nil
}

func (c *Config) checkUses(byID map[string]*Plugin) hcl.Diagnostics {
	var diags hcl.Diagnostics
	ids := make([]string, 0, len(byID))
	for id := range byID {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		p := byID[id]
		r := p.UsesRange
		if r.Empty() {
			r = p.DeclRange
		}
		kinds := make([]string, 0, len(p.Uses))
		for kind := range p.Uses {
			kinds = append(kinds, kind)
		}
		sort.Strings(kinds)
		for _, kind := range kinds {
			if !oneOf(kind, Kinds...) {
				diags = append(diags, errAt(r, "Invalid uses", fmt.Sprintf("uses: %q is not a plugin kind; valid kinds are %s.", kind, strings.Join(Kinds, ", "))))
				continue
			}
			for _, name := range p.Uses[kind] {
				target, ok := byID[kind+"."+name]
				switch {
				case kind+"."+name == id:
					diags = append(diags, errAt(r, "Invalid uses", "A plugin cannot use itself."))
				case !ok:
					diags = append(diags, errAt(r, "Unknown plugin in uses",
						fmt.Sprintf("uses = { %s = %q }: no plugin %q %q is declared.", kind, name, kind, name)))
				case target.Disabled && !p.Disabled:
					diags = append(diags, errAt(r, "Disabled plugin in uses",
						fmt.Sprintf("uses = { %s = %q }: that plugin has enabled = false.", kind, name)))
				}
			}
		}
	}
	return diags
}

// DecodeConfig decodes the plugin's `config { }` body against the schema
// the plugin reported and returns the JSON the plugin receives.
func (p *Plugin) DecodeConfig(ctx *hcl.EvalContext, s sdkconfig.Schema) ([]byte, hcl.Diagnostics) {
	js, diags := sdkconfig.Decode(p.Config, s, ctx)
	for _, d := range diags {
		if d.Subject == nil {
			d.Subject = p.DeclRange.Ptr()
		}
		d.Summary = fmt.Sprintf("plugin %q %q: %s", p.Kind, p.Name, d.Summary)
	}
	return js, diags
}

// WriteDiagnostics prints each diagnostic as
//
//	config.hcl:12:8: error: Unknown plugin kind: "kmss" is not a plugin kind; ...
//	   12 | plugin "kmss" "soft" {
//	      |        ^^^^^^
//
// files (may be nil) supplies the source lines.
func WriteDiagnostics(w io.Writer, files map[string]*hcl.File, diags hcl.Diagnostics) error {
	lines := map[string][]string{} // split once per file
	for i, d := range diags {
		if i == maxDiagnostics {
			_, err := fmt.Fprintf(w, "... and %d more\n", len(diags)-i)
			return err
		}
		sev := "error"
		if d.Severity == hcl.DiagWarning {
			sev = "warning"
		}
		msg := d.Summary
		if d.Detail != "" {
			msg += ": " + d.Detail
		}
		if d.Subject == nil {
			if _, err := fmt.Fprintf(w, "%s: %s\n", sev, msg); err != nil {
				return err
			}
			continue
		}
		r := *d.Subject
		if _, err := fmt.Fprintf(w, "%s:%d:%d: %s: %s\n", r.Filename, r.Start.Line, r.Start.Column, sev, msg); err != nil {
			return err
		}
		f := files[r.Filename]
		if f == nil {
			continue
		}
		ls, ok := lines[r.Filename]
		if !ok {
			ls = strings.Split(string(f.Bytes), "\n")
			lines[r.Filename] = ls
		}
		if r.Start.Line < 1 || r.Start.Line > len(ls) {
			continue
		}
		width := 1
		if r.End.Line == r.Start.Line && r.End.Column > r.Start.Column {
			width = r.End.Column - r.Start.Column
		}
		line, col := excerpt(maskSecrets(strings.TrimRight(ls[r.Start.Line-1], "\r")), max(r.Start.Column, 1))
		width = min(width, maxExcerpt)
		fmt.Fprintf(w, "%6d | %s\n       | %s%s\n", r.Start.Line, line, strings.Repeat(" ", col-1), strings.Repeat("^", width))
	}
	return nil
}

// maxDiagnostics and maxExcerpt bound what WriteDiagnostics prints: at most
// maxDiagnostics diagnostics, each source
// line cut to maxExcerpt characters around the column it points at: a
// file of one long line full of mistakes must not print megabytes.
const (
	maxDiagnostics = 50
	maxExcerpt     = 160
)

// excerpt cuts line to at most maxExcerpt characters around column col
// (1-based, in characters), marking a cut with "…", and returns the
// column in the excerpt.
func excerpt(line string, col int) (string, int) {
	if len(line) <= maxExcerpt && utf8.RuneCountInString(line) <= maxExcerpt {
		return line, col
	}
	rs := []rune(line)
	if len(rs) <= maxExcerpt {
		return line, col
	}
	lo := max(0, min(col-1-maxExcerpt/2, len(rs)-maxExcerpt))
	hi := min(len(rs), lo+maxExcerpt)
	out := string(rs[lo:hi])
	col -= lo
	if lo > 0 {
		out = "…" + out
		col++
	}
	if hi < len(rs) {
		out += "…"
	}
	return out, max(col, 1)
}

// secretLineRE finds source lines that may hold a secret: a DSN with its
// password, a password, passphrase, secret, token or PIN.
var secretLineRE = regexp.MustCompile(`(?i)(dsn|passw|passphrase|secret|token|\bpin\b|credential)`)

// maskSecrets returns a source line for a diagnostic with every string
// literal on a line that may hold a secret replaced by asterisks of the
// same length (so the caret still points at the right column). A literal
// that is a function's first argument (env("NAME"), file("path")) is kept:
// it names where the secret comes from, not the secret.
func maskSecrets(line string) string {
	if !secretLineRE.MatchString(line) {
		return line
	}
	b := []byte(line)
	in, keep, esc := false, false, false
	for i := 0; i < len(b); i++ {
		c := b[i]
		if !in {
			if c == '"' {
				in, esc = true, false
				j := i - 1
				for j >= 0 && b[j] == ' ' {
					j--
				}
				keep = j >= 0 && b[j] == '('
			}
			continue
		}
		switch {
		case esc:
			esc = false
		case c == '\\':
			esc = true
		case c == '"':
			in = false
			continue
		}
		if !keep {
			b[i] = '*'
		}
	}
	return string(b)
}

// checkTunnelCIDR6 says what is wrong with an IPv6 tunnel network, or "".
// The rules are the gateway's IPv6 pool's (ipam.CheckPrefix6); this says
// them in the operator's terms.
func checkTunnelCIDR6(p netip.Prefix) string {
	err := ipam.CheckPrefix6(p)
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ipam.ErrNotIPv6):
		return "want an IPv6 network such as \"fd00:96::/64\" (an IPv4 network goes in tunnel_cidr)."
	case errors.Is(err, ipam.ErrNotUnicast6):
		return "want a unicast network (a unique local fd00::/8 one, or global), not link-local, multicast, loopback or ::."
	case errors.Is(err, ipam.ErrPrefixTooLarge):
		return fmt.Sprintf("too large: want a /%d to /%d, such as \"fd00:96::/64\".", ipam.MinBits6, ipam.MaxBits6)
	case errors.Is(err, ipam.ErrPrefixTooSmall):
		return fmt.Sprintf("too small: want a /%d to /%d (the gateway's address and at least one agent's).", ipam.MinBits6, ipam.MaxBits6)
	}
	return err.Error() + "."
}
