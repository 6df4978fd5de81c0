package config

import (
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
)

// Auth is the `auth` block: operator login (OAuth 2.1) on the API.
//
//	auth {
//	  issuer      = "https://avon.example.com:8443" # default https://<api listen>
//	  access_ttl  = "5m"
//	  refresh_ttl = "720h"
//	  kms         = "soft"        # default: the first kms plugin
//	  key         = "avon-oauth"  # KMS key id of the token signing key
//	  algorithm   = "ML-DSA-65"   # or "Ed25519"; the key's algorithm when it is created
//	}
type Auth struct {
	// Enabled is true by default; false turns operator login off (the
	// admin socket still works).
	Enabled bool
	// Issuer is the https URL operators log in to; "" means
	// https://<api listen>, with a wildcard host read as localhost.
	Issuer     string
	IssuerSet  bool
	AccessTTL  time.Duration
	RefreshTTL time.Duration
	KMS, Key   string
	Algorithm  string
	// Explicit is true when the file has an auth block: then a signing
	// key that cannot be readied stops the start instead of turning
	// operator login off with a warning.
	Explicit bool
}

// Auth defaults and bounds (the same as core/oauth's).
const (
	DefaultAccessTTL  = 5 * time.Minute
	DefaultRefreshTTL = 720 * time.Hour
	MinAccessTTL      = 30 * time.Second
	MaxAccessTTL      = time.Hour
	MinRefreshTTL     = time.Hour
	MaxRefreshTTL     = 90 * 24 * time.Hour
	DefaultAuthKey    = "avon-oauth"
)

// AuthAlgorithms are the signing key algorithms of auth.algorithm.
var AuthAlgorithms = []string{"ML-DSA-65", "Ed25519"}

func (c *Config) decodeAuth(ctx *hcl.EvalContext, b *hcl.Block) hcl.Diagnostics {
	c.Auth = Auth{Enabled: true, AccessTTL: DefaultAccessTTL, RefreshTTL: DefaultRefreshTTL, Key: DefaultAuthKey, Algorithm: "ML-DSA-65"}
	attrs := hcl.Attributes{}
	var diags hcl.Diagnostics
	if b != nil {
		c.Auth.Explicit = true
		content, d := b.Body.Content(&hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: "enabled"}, {Name: "issuer"},
			{Name: "access_ttl"}, {Name: "refresh_ttl"}, {Name: "kms"}, {Name: "key"}, {Name: "algorithm"}}})
		diags, attrs = d, content.Attributes
	}
	_, _, d := attr(ctx, attrs, "enabled", &c.Auth.Enabled)
	diags = append(diags, d...)
	if r, ok, d := attr(ctx, attrs, "issuer", &c.Auth.Issuer); ok {
		diags = append(diags, d...)
		c.Auth.IssuerSet = true
		if !d.HasErrors() {
			u, err := url.Parse(c.Auth.Issuer)
			if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || strings.ContainsAny(c.Auth.Issuer, "?#") ||
				strings.HasSuffix(c.Auth.Issuer, "/") {
				diags = append(diags, errAt(r, "Invalid issuer", fmt.Sprintf("issuer = %q: want the https URL operators reach the API at, "+
					"such as \"https://avon.example.com:8443\" (no query, fragment or trailing slash).", c.Auth.Issuer)))
			}
		}
	}
	ttl := func(name string, def, lo, hi time.Duration, target *time.Duration) {
		d := duration(ctx, attrs, name, def, target)
		diags = append(diags, d...)
		if a, ok := attrs[name]; ok && !d.HasErrors() && (*target < lo || *target > hi) {
			diags = append(diags, errAt(a.Expr.Range(), "Invalid "+name, fmt.Sprintf("%s = %q: want %s to %s.", name, *target, lo, hi)))
		}
	}
	ttl("access_ttl", DefaultAccessTTL, MinAccessTTL, MaxAccessTTL, &c.Auth.AccessTTL)
	ttl("refresh_ttl", DefaultRefreshTTL, MinRefreshTTL, MaxRefreshTTL, &c.Auth.RefreshTTL)
	if a, ok := attrs["refresh_ttl"]; ok && c.Auth.RefreshTTL <= c.Auth.AccessTTL {
		diags = append(diags, errAt(a.Expr.Range(), "Invalid refresh_ttl", fmt.Sprintf("refresh_ttl %s must be longer than access_ttl %s.", c.Auth.RefreshTTL, c.Auth.AccessTTL)))
	}
	diags = append(diags, kmsKey(ctx, attrs, &c.Auth.KMS, &c.Auth.Key)...)
	if r, ok, d := attr(ctx, attrs, "algorithm", &c.Auth.Algorithm); ok {
		diags = append(diags, d...)
		if !d.HasErrors() && !oneOf(c.Auth.Algorithm, AuthAlgorithms...) {
			diags = append(diags, errAt(r, "Invalid algorithm", fmt.Sprintf("algorithm = %q: use %s.", c.Auth.Algorithm, strings.Join(AuthAlgorithms, " or "))))
		}
	}
	return diags
}

// AuthIssuer returns the issuer in force: auth.issuer, or https:// and the
// API listen address, a wildcard host read as localhost.
func (c *Config) AuthIssuer() string {
	if c.Auth.Issuer != "" {
		return c.Auth.Issuer
	}
	host, port, err := net.SplitHostPort(c.API.Listen)
	if err != nil {
		return "https://" + c.API.Listen
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "localhost"
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return "https://" + host + ":" + port
}
