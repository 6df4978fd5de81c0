package config

import (
	"testing"
	"time"
)

func TestAuthBlock(t *testing.T) {
	c, diags := Parse([]byte(`api { listen = "0.0.0.0:9443" }`), "avon.hcl")
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	if !c.Auth.Enabled || c.Auth.AccessTTL != 5*time.Minute || c.Auth.RefreshTTL != 720*time.Hour || c.Auth.Key != "avon-oauth" ||
		c.Auth.Algorithm != "ML-DSA-65" || c.AuthIssuer() != "https://localhost:9443" {
		t.Fatalf("defaults %+v issuer %s", c.Auth, c.AuthIssuer())
	}
	src := `
api { listen = "[::1]:8443" }
plugin "kms" "soft" { command = "/bin/true" }
auth {
  issuer      = "https://avon.example.com:8443"
  access_ttl  = "2m"
  refresh_ttl = "24h"
  key         = "ops-login"
  algorithm   = "Ed25519"
}
`
	c, diags = Parse([]byte(src), "avon.hcl")
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	if c.Auth.AccessTTL != 2*time.Minute || c.Auth.RefreshTTL != 24*time.Hour || c.Auth.KMS != "soft" || c.Auth.Key != "ops-login" ||
		c.Auth.Algorithm != "Ed25519" || c.AuthIssuer() != "https://avon.example.com:8443" {
		t.Fatalf("%+v", c.Auth)
	}
	c, _ = Parse([]byte(`api { listen = "[::1]:8443" }`), "avon.hcl")
	if c.AuthIssuer() != "https://[::1]:8443" {
		t.Fatalf("issuer %s", c.AuthIssuer())
	}
}

func TestAuthDiagnostics(t *testing.T) {
	for _, tc := range []struct {
		name, src, summary string
		line, col          int
	}{
		{"http issuer", "auth {\n  issuer = \"http://avon.example\"\n}\n", "Invalid issuer", 2, 12},
		{"issuer with query", "auth {\n  issuer = \"https://avon.example/?x=1\"\n}\n", "Invalid issuer", 2, 12},
		{"issuer trailing slash", "auth {\n  issuer = \"https://avon.example/\"\n}\n", "Invalid issuer", 2, 12},
		{"access ttl too long", "auth {\n  access_ttl = \"2h\"\n}\n", "Invalid access_ttl", 2, 16},
		{"access ttl garbage", "auth {\n  access_ttl = \"soon\"\n}\n", "Invalid duration", 2, 16},
		{"refresh ttl too short", "auth {\n  refresh_ttl = \"10m\"\n}\n", "Invalid refresh_ttl", 2, 17},
		{"refresh not above access", "auth {\n  access_ttl = \"1h\"\n  refresh_ttl = \"1h\"\n}\n", "Invalid refresh_ttl", 3, 17},
		{"algorithm", "auth {\n  algorithm = \"HS256\"\n}\n", "Invalid algorithm", 2, 15},
		{"unknown kms", "auth {\n  kms = \"hsm\"\n}\n", "Unknown kms plugin", 1, 1},
		{"unknown attribute", "auth {\n  acces_ttl = \"5m\"\n}\n", "Unsupported argument", 2, 3},
		{"twice", "auth {\n}\nauth {\n}\n", "Duplicate auth block", 3, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, diags := Parse([]byte(tc.src), "avon.hcl")
			if !diags.HasErrors() {
				t.Fatal("no error")
			}
			d := diags[0]
			if d.Summary != tc.summary || d.Subject == nil || d.Subject.Start.Line != tc.line || d.Subject.Start.Column != tc.col {
				t.Fatalf("%s at %v, want %q at %d:%d", d.Summary, d.Subject, tc.summary, tc.line, tc.col)
			}
		})
	}
}
