package config

import (
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
)

var keyIDRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,128}$`)

// CacheTypes are the known `cache` block types.
var CacheTypes = []string{"memory", "redis"}

// TimeSourceTypes are the known `source` block types inside `calibration`.
var TimeSourceTypes = []string{"system", "ntp"}

// RNG is the `rng` block: the core's SP 800-90A CTR_DRBG.
type RNG struct {
	DerivationFunction   bool          // default true
	PredictionResistance bool          // reseed from entropy before every request
	ReseedInterval       time.Duration // default 5m
	ReseedBytes          int64         // default 256 MiB
	// ExtraSources are kms plugin names whose hardware generator
	// (GenerateRandom) is mixed into every seed, besides the OS.
	ExtraSources []string
}

// Calibration is the `calibration` block.
type Calibration struct {
	MaxAge   time.Duration // default 30s
	MaxSkew  time.Duration // default 5s
	Interval time.Duration // default MaxAge/3
	Sources  []TimeSource  // default one system source
	// KMS and Key name the key that signs time attestations: a kms plugin
	// name (default: the first enabled kms plugin) and a key id in it
	// (default "avon-time"). Created as ML-DSA-65 at first start.
	KMS, Key string
	// Attestations false turns signed time attestations off (default on
	// when a kms plugin exists).
	Attestations bool
}

// TimeSource is a `source "<type>" { }` block inside `calibration`.
type TimeSource struct {
	Type        string        // system | ntp
	Server      string        // ntp: host:port
	Samples     int           // ntp: queries per calibration, default 4
	Timeout     time.Duration // ntp: per query, default 2s
	Uncertainty time.Duration // system: assumed uncertainty, default 10ms
	DeclRange   hcl.Range
}

// Cache is the `cache "<type>"` block: ephemeral state shared by replicas.
type Cache struct {
	Type      string // memory | redis
	Addr      string // redis: host:port
	Username  string
	Password  string
	DB        int
	KeyPrefix string // default "avon:"
	TLS       bool
	Timeout   time.Duration // dial/read/write, default 2s
}

// Audit is the `audit` block.
type Audit struct {
	CheckpointEvery    int           // events between checkpoints, default 1000
	CheckpointInterval time.Duration // at most this long between checkpoints when events arrived, default 5m
	// KMS and Key name the checkpoint signing key, like Calibration's;
	// default key id "avon-audit".
	KMS, Key string
	// Checkpoints false turns signed checkpoints off (default on when a
	// kms plugin exists); the hash chain alone cannot show a log rewritten
	// from the start.
	Checkpoints bool
}

func (c *Config) decodeRNG(ctx *hcl.EvalContext, b *hcl.Block) hcl.Diagnostics {
	c.RNG = RNG{DerivationFunction: true, ReseedInterval: 5 * time.Minute, ReseedBytes: 256 << 20}
	var diags hcl.Diagnostics
	attrs := hcl.Attributes{}
	if b != nil {
		content, d := b.Body.Content(&hcl.BodySchema{Attributes: []hcl.AttributeSchema{
			{Name: "derivation_function"}, {Name: "prediction_resistance"}, {Name: "reseed_interval"},
			{Name: "reseed_bytes"}, {Name: "extra_sources"}}})
		diags, attrs = d, content.Attributes
	}
	_, _, d := attr(ctx, attrs, "derivation_function", &c.RNG.DerivationFunction)
	diags = append(diags, d...)
	_, _, d = attr(ctx, attrs, "prediction_resistance", &c.RNG.PredictionResistance)
	diags = append(diags, d...)
	diags = append(diags, duration(ctx, attrs, "reseed_interval", 5*time.Minute, &c.RNG.ReseedInterval)...)
	if r, ok, d := attr(ctx, attrs, "reseed_bytes", &c.RNG.ReseedBytes); ok {
		diags = append(diags, d...)
		if !d.HasErrors() && (c.RNG.ReseedBytes < 1<<10 || c.RNG.ReseedBytes > 1<<40) {
			diags = append(diags, errAt(r, "Invalid reseed_bytes", fmt.Sprintf("reseed_bytes = %d: want between 1024 and 2^40.", c.RNG.ReseedBytes)))
		}
	}
	if r, ok, d := attr(ctx, attrs, "extra_sources", &c.RNG.ExtraSources); ok {
		diags = append(diags, d...)
		for _, s := range c.RNG.ExtraSources {
			if !nameRE.MatchString(s) {
				diags = append(diags, errAt(r, "Invalid entropy source", fmt.Sprintf("extra_sources: %q is not a kms plugin name.", s)))
			}
		}
	}
	return diags
}

func (c *Config) decodeCalibration(ctx *hcl.EvalContext, b *hcl.Block) hcl.Diagnostics {
	c.Calibration = Calibration{Key: "avon-time", Attestations: true}
	var diags hcl.Diagnostics
	attrs := hcl.Attributes{}
	var blocks hcl.Blocks
	if b != nil {
		content, d := b.Body.Content(&hcl.BodySchema{
			Attributes: []hcl.AttributeSchema{{Name: "max_age"}, {Name: "max_skew"}, {Name: "interval"}, {Name: "kms"}, {Name: "key"}, {Name: "attestations"}},
			Blocks:     []hcl.BlockHeaderSchema{{Type: "source", LabelNames: []string{"type"}}},
		})
		diags, attrs, blocks = d, content.Attributes, content.Blocks
	}
	diags = append(diags, duration(ctx, attrs, "max_age", 30*time.Second, &c.Calibration.MaxAge)...)
	diags = append(diags, duration(ctx, attrs, "max_skew", 5*time.Second, &c.Calibration.MaxSkew)...)
	diags = append(diags, duration(ctx, attrs, "interval", c.Calibration.MaxAge/3, &c.Calibration.Interval)...)
	if r, ok, _ := attr(ctx, attrs, "interval", new(string)); ok && c.Calibration.Interval >= c.Calibration.MaxAge {
		diags = append(diags, errAt(r, "Invalid calibration interval",
			fmt.Sprintf("interval (%s) must be shorter than max_age (%s), or the calibration goes stale between rounds.", c.Calibration.Interval, c.Calibration.MaxAge)))
	}
	diags = append(diags, kmsKey(ctx, attrs, &c.Calibration.KMS, &c.Calibration.Key)...)
	_, _, d := attr(ctx, attrs, "attestations", &c.Calibration.Attestations)
	diags = append(diags, d...)
	for _, sb := range blocks {
		s := TimeSource{Type: sb.Labels[0], DeclRange: sb.DefRange}
		switch s.Type {
		case "system":
			content, d := sb.Body.Content(&hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: "uncertainty"}}})
			diags = append(diags, d...)
			diags = append(diags, duration(ctx, content.Attributes, "uncertainty", 10*time.Millisecond, &s.Uncertainty)...)
		case "ntp":
			content, d := sb.Body.Content(&hcl.BodySchema{Attributes: []hcl.AttributeSchema{
				{Name: "server", Required: true}, {Name: "samples"}, {Name: "timeout"}}})
			diags = append(diags, d...)
			if r, ok, d := attr(ctx, content.Attributes, "server", &s.Server); ok {
				diags = append(diags, d...)
				if !d.HasErrors() && !strings.Contains(s.Server, ":") {
					s.Server += ":123"
				}
				if !d.HasErrors() && s.Server == ":123" {
					diags = append(diags, errAt(r, "Invalid NTP server", "server is empty; want host or host:port such as \"time.example.net:123\"."))
				}
			}
			s.Samples = 4
			if r, ok, d := attr(ctx, content.Attributes, "samples", &s.Samples); ok {
				diags = append(diags, d...)
				if !d.HasErrors() && (s.Samples < 1 || s.Samples > 16) {
					diags = append(diags, errAt(r, "Invalid samples", fmt.Sprintf("samples = %d: want 1 to 16.", s.Samples)))
				}
			}
			diags = append(diags, duration(ctx, content.Attributes, "timeout", 2*time.Second, &s.Timeout)...)
		default:
			diags = append(diags, errAt(sb.LabelRanges[0], "Unknown time source",
				fmt.Sprintf("source %q is not known; known types: %s.", s.Type, strings.Join(TimeSourceTypes, ", "))))
			continue
		}
		c.Calibration.Sources = append(c.Calibration.Sources, s)
	}
	if len(c.Calibration.Sources) == 0 {
		c.Calibration.Sources = []TimeSource{{Type: "system", Uncertainty: 10 * time.Millisecond}}
	}
	return diags
}

// kmsKey decodes the `kms` and `key` attributes naming a signing key.
func kmsKey(ctx *hcl.EvalContext, attrs hcl.Attributes, kms, key *string) hcl.Diagnostics {
	var diags hcl.Diagnostics
	if r, ok, d := attr(ctx, attrs, "kms", kms); ok {
		diags = append(diags, d...)
		if !d.HasErrors() && !nameRE.MatchString(*kms) {
			diags = append(diags, errAt(r, "Invalid kms plugin name", fmt.Sprintf("kms = %q: want the name of a `plugin \"kms\" \"<name>\"` block.", *kms)))
		}
	}
	if r, ok, d := attr(ctx, attrs, "key", key); ok {
		diags = append(diags, d...)
		if !d.HasErrors() && !keyIDRE.MatchString(*key) {
			diags = append(diags, errAt(r, "Invalid key id", fmt.Sprintf("key = %q: want 1 to 128 of A-Z a-z 0-9 . _ -.", *key)))
		}
	}
	return diags
}

func (c *Config) decodeCache(ctx *hcl.EvalContext, b *hcl.Block) hcl.Diagnostics {
	c.Cache = Cache{Type: "memory", KeyPrefix: "avon:", Timeout: 2 * time.Second}
	if b == nil {
		return nil
	}
	c.Cache.Type = b.Labels[0]
	switch c.Cache.Type {
	case "memory":
		_, diags := b.Body.Content(&hcl.BodySchema{})
		return diags
	case "redis":
		content, diags := b.Body.Content(&hcl.BodySchema{Attributes: redisAttrs})
		diags = append(diags, decodeRedis(ctx, content.Attributes, &c.Cache)...)
		return diags
	}
	return hcl.Diagnostics{errAt(b.LabelRanges[0], "Unknown cache type",
		fmt.Sprintf("cache %q is not known; known types: %s.", c.Cache.Type, strings.Join(CacheTypes, ", ")))}
}

var redisAttrs = []hcl.AttributeSchema{
	{Name: "addr", Required: true}, {Name: "username"}, {Name: "password"}, {Name: "db"},
	{Name: "key_prefix"}, {Name: "tls"}, {Name: "timeout"}}

// decodeRedisStorage decodes `storage "redis" { }`: the connection
// settings of a cache "redis" block plus require_durable.
func (c *Config) decodeRedisStorage(ctx *hcl.EvalContext, b *hcl.Block) hcl.Diagnostics {
	c.Storage.Redis = Cache{Type: "redis", KeyPrefix: "avon:kv:", Timeout: 5 * time.Second}
	c.Storage.RequireDurable = true
	content, diags := b.Body.Content(&hcl.BodySchema{Attributes: append([]hcl.AttributeSchema{{Name: "require_durable"}}, redisAttrs...)})
	diags = append(diags, decodeRedis(ctx, content.Attributes, &c.Storage.Redis)...)
	_, _, d := attr(ctx, content.Attributes, "require_durable", &c.Storage.RequireDurable)
	return append(diags, d...)
}

func decodeRedis(ctx *hcl.EvalContext, attrs hcl.Attributes, rc *Cache) hcl.Diagnostics {
	var diags hcl.Diagnostics
	if r, ok, d := attr(ctx, attrs, "addr", &rc.Addr); ok {
		diags = append(diags, d...)
		if !d.HasErrors() {
			diags = append(diags, checkDialAddr(r, "addr", rc.Addr)...)
		}
	}
	for _, f := range []struct {
		name   string
		target *string
	}{{"username", &rc.Username}, {"password", &rc.Password}, {"key_prefix", &rc.KeyPrefix}} {
		_, _, d := attr(ctx, attrs, f.name, f.target)
		diags = append(diags, d...)
	}
	if r, ok, d := attr(ctx, attrs, "db", &rc.DB); ok {
		diags = append(diags, d...)
		if !d.HasErrors() && (rc.DB < 0 || rc.DB > 15) {
			diags = append(diags, errAt(r, "Invalid Redis database", fmt.Sprintf("db = %d: want 0 to 15.", rc.DB)))
		}
	}
	_, _, d := attr(ctx, attrs, "tls", &rc.TLS)
	diags = append(diags, d...)
	return append(diags, duration(ctx, attrs, "timeout", rc.Timeout, &rc.Timeout)...)
}

// checkDialAddr checks a host:port to connect to (a name is allowed).
func checkDialAddr(r hcl.Range, name, v string) hcl.Diagnostics {
	host, port, err := net.SplitHostPort(v)
	if err == nil && host == "" {
		err = fmt.Errorf("no host")
	}
	if err == nil {
		if n, perr := strconv.Atoi(port); perr != nil || n < 1 || n > 65535 {
			err = fmt.Errorf("bad port %q", port)
		}
	}
	if err != nil {
		return hcl.Diagnostics{errAt(r, "Invalid address", fmt.Sprintf("%s = %q: want host:port such as \"127.0.0.1:6379\" (%v).", name, v, err))}
	}
	return nil
}

func (c *Config) decodeAudit(ctx *hcl.EvalContext, b *hcl.Block) hcl.Diagnostics {
	c.Audit = Audit{CheckpointEvery: 1000, Key: "avon-audit", Checkpoints: true}
	var diags hcl.Diagnostics
	attrs := hcl.Attributes{}
	if b != nil {
		content, d := b.Body.Content(&hcl.BodySchema{Attributes: []hcl.AttributeSchema{
			{Name: "checkpoint_every"}, {Name: "checkpoint_interval"}, {Name: "kms"}, {Name: "key"}, {Name: "checkpoints"}}})
		diags, attrs = d, content.Attributes
	}
	if r, ok, d := attr(ctx, attrs, "checkpoint_every", &c.Audit.CheckpointEvery); ok {
		diags = append(diags, d...)
		if !d.HasErrors() && (c.Audit.CheckpointEvery < 1 || c.Audit.CheckpointEvery > 1_000_000) {
			diags = append(diags, errAt(r, "Invalid checkpoint_every", fmt.Sprintf("checkpoint_every = %d: want 1 to 1000000 events.", c.Audit.CheckpointEvery)))
		}
	}
	diags = append(diags, duration(ctx, attrs, "checkpoint_interval", 5*time.Minute, &c.Audit.CheckpointInterval)...)
	diags = append(diags, kmsKey(ctx, attrs, &c.Audit.KMS, &c.Audit.Key)...)
	_, _, d := attr(ctx, attrs, "checkpoints", &c.Audit.Checkpoints)
	diags = append(diags, d...)
	return diags
}

// checkPostgresDSN checks the form of a PostgreSQL connection string without
// echoing its password.
func checkPostgresDSN(r hcl.Range, dsn string) hcl.Diagnostics {
	if dsn == "" {
		return hcl.Diagnostics{errAt(r, "Empty PostgreSQL DSN", "dsn is empty; want postgres://user@host:5432/db?sslmode=verify-full, or set it from the environment with env(\"AVON_PG_DSN\").")}
	}
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil || u.Host == "" {
			return hcl.Diagnostics{errAt(r, "Invalid PostgreSQL DSN", "dsn is not a valid postgres:// URL (want postgres://user@host:5432/db); its text is not shown because it may hold a password.")}
		}
		return nil
	}
	if !strings.Contains(dsn, "=") {
		return hcl.Diagnostics{errAt(r, "Invalid PostgreSQL DSN", "dsn is neither a postgres:// URL nor key=value pairs such as \"host=db user=avon dbname=avon\"; its text is not shown because it may hold a password.")}
	}
	return nil
}

// resolveSigningKMS fills the default kms plugin of a signing key (the
// first enabled kms plugin in the file) and checks a named one.
func (c *Config) resolveSigningKMS(byID map[string]*Plugin, what string, kms *string, r hcl.Range) hcl.Diagnostics {
	if *kms != "" {
		if p, ok := byID["kms."+*kms]; !ok || p.Disabled {
			return hcl.Diagnostics{errAt(r, "Unknown kms plugin", fmt.Sprintf("%s: kms = %q names no enabled `plugin \"kms\" %q` block.", what, *kms, *kms))}
		}
		return nil
	}
	for _, p := range c.Plugin {
		if p.Kind == "kms" && !p.Disabled {
			*kms = p.Name // the first enabled kms plugin of the file
			return nil
		}
	}
	// No kms plugin: nothing to sign with; the server says what that
	// disables.
	return nil
}
