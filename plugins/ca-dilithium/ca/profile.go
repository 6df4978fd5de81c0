package ca

import (
	"crypto/x509"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strings"
	"time"

	sdkca "github.com/avonzt/avon/sdk/ca"
)

// Profile says what a certificate of one kind may contain. An agent's
// identity is its URI SAN avon://agent/<id>, a gateway's avon://gateway/<id>:
// the gateway tells agents from other clients of the same CA by that name.
type Profile struct {
	Name        string
	KeyUsage    x509.KeyUsage
	ExtKeyUsage []x509.ExtKeyUsage
	// Algorithms the subject key may use (KMS names).
	Algorithms []string
	// SAN kinds allowed; at least one SAN of an allowed kind is required
	// when RequireSAN.
	AllowDNS, AllowIP, AllowURI, AllowEmail bool
	RequireSAN                              bool
	// URIPattern, when set, every URI SAN must match (agent identities).
	URIPattern *regexp.Regexp
	// MaxSANs bounds how many names one certificate carries.
	MaxSANs int
	// Lifetime is the default, MaxLifetime the most a request may ask.
	Lifetime, MaxLifetime time.Duration
	// Issuer is the default issuer's name ("issuing" or "classical").
	Issuer string
}

var (
	pqSig        = []string{"ML-DSA-44", "ML-DSA-65", "ML-DSA-87"}
	agentURIRE   = regexp.MustCompile(`^avon://agent/[a-z0-9][a-z0-9._-]{0,127}$`)
	gatewayURIRE = regexp.MustCompile(`^avon://gateway/[a-z0-9][a-z0-9._-]{0,127}$`)
)

// DefaultProfiles are the built-in profiles; lifetimes can be configured.
func DefaultProfiles() map[string]*Profile {
	day := 24 * time.Hour
	return map[string]*Profile{
		"agent": {Name: "agent", KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			Algorithms: pqSig, AllowURI: true, RequireSAN: true,
			URIPattern: agentURIRE, MaxSANs: 1, Lifetime: 30 * day, MaxLifetime: 90 * day, Issuer: "issuing"},
		"gateway": {Name: "gateway", KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
			Algorithms:  pqSig, AllowDNS: true, AllowIP: true, AllowURI: true, RequireSAN: true, URIPattern: gatewayURIRE,
			MaxSANs: 16, Lifetime: 90 * day, MaxLifetime: 397 * day, Issuer: "issuing"},
		"server": {Name: "server", KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			Algorithms: append(append([]string{}, pqSig...), "ECDSA-P256", "ECDSA-P384", "Ed25519", "RSA-2048", "RSA-3072", "RSA-4096"), AllowDNS: true, AllowIP: true,
			RequireSAN: true, MaxSANs: 100, Lifetime: 90 * day, MaxLifetime: 397 * day, Issuer: "issuing"},
		"client": {Name: "client", KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			Algorithms: append(append([]string{}, pqSig...), "ECDSA-P256", "ECDSA-P384", "Ed25519", "RSA-2048", "RSA-3072", "RSA-4096"), AllowDNS: true, AllowURI: true,
			AllowEmail: true, RequireSAN: true, MaxSANs: 10, Lifetime: 30 * day, MaxLifetime: 397 * day, Issuer: "issuing"},
	}
}

// Names are the subject names a request asks for, checked against a
// profile.
type Names struct {
	CommonName string
	DNS        []string
	IPs        []net.IP
	URIs       []*url.URL
	Emails     []string
}

// PolicyError says what a request asked for beyond its profile; it wraps
// sdkca.ErrPolicyViolation.
type PolicyError struct {
	Profile string
	Reason  string
}

func (e *PolicyError) Error() string {
	return fmt.Sprintf("profile %s: %s", e.Profile, e.Reason)
}

func (e *PolicyError) Unwrap() error { return sdkca.ErrPolicyViolation }

var dnsRE = regexp.MustCompile(`^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// Check refuses names, key algorithm or lifetime the profile does not
// allow, and returns the lifetime to use.
func (p *Profile) Check(n Names, keyAlg string, lifetime time.Duration) (time.Duration, error) {
	deny := func(format string, args ...any) (time.Duration, error) {
		return 0, &PolicyError{Profile: p.Name, Reason: fmt.Sprintf(format, args...)}
	}
	if !contains(p.Algorithms, keyAlg) {
		return deny("key algorithm %s not allowed (allowed: %s)", keyAlg, strings.Join(p.Algorithms, ", "))
	}
	if len(n.CommonName) > 64 {
		return deny("common name longer than 64 bytes")
	}
	total := len(n.DNS) + len(n.IPs) + len(n.URIs) + len(n.Emails)
	switch {
	case total == 0 && p.RequireSAN:
		return deny("at least one subject alternative name is required")
	case total > p.MaxSANs:
		return deny("%d subject alternative names; at most %d", total, p.MaxSANs)
	case len(n.DNS) > 0 && !p.AllowDNS:
		return deny("DNS names are not allowed")
	case len(n.IPs) > 0 && !p.AllowIP:
		return deny("IP addresses are not allowed")
	case len(n.URIs) > 0 && !p.AllowURI:
		return deny("URIs are not allowed")
	case len(n.Emails) > 0 && !p.AllowEmail:
		return deny("email addresses are not allowed")
	}
	for _, d := range n.DNS {
		if len(d) > 253 || !dnsRE.MatchString(d) {
			return deny("DNS name %q is not a lowercase host name", d)
		}
	}
	for _, u := range n.URIs {
		if p.URIPattern != nil && !p.URIPattern.MatchString(u.String()) {
			return deny("URI %q does not match %s", u.String(), p.URIPattern)
		}
	}
	for _, e := range n.Emails {
		if at := strings.LastIndexByte(e, '@'); at < 1 || at == len(e)-1 || len(e) > 254 {
			return deny("email %q is not an address", e)
		}
	}
	switch {
	case lifetime == 0:
		lifetime = p.Lifetime
	case lifetime < 0:
		return deny("negative lifetime")
	case lifetime > p.MaxLifetime:
		return deny("lifetime %s exceeds %s", lifetime, p.MaxLifetime)
	}
	return lifetime, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
