package pqx509

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"net"
	"strings"
	"time"
)

// VerifyOptions are the inputs of Verify.
type VerifyOptions struct {
	Roots         []*Certificate // trust anchors
	Intermediates []*Certificate // candidates for the middle of the chain
	// CurrentTime is the validation time; required (the caller passes its
	// calibrated clock).
	CurrentTime time.Time
	// KeyUsages the leaf must be valid for, as crypto/x509: empty means
	// ServerAuth; ExtKeyUsageAny accepts any.
	KeyUsages []x509.ExtKeyUsage
	// DNSName, when set, must match a DNS name (or IP address) of the leaf.
	DNSName string
	// Verifier checks signatures; DefaultVerifier when nil.
	Verifier Verifier
}

// maxChainLength bounds path building (leaf included).
const maxChainLength = 8

// Verify builds every chain from leaf to one of opts.Roots and checks it:
// signatures, validity at CurrentTime, issuer/subject chaining (and key
// identifiers when both are present), basicConstraints cA and keyCertSign on
// issuers, pathLenConstraint, extended key usage, DNS and IP name
// constraints, and DNSName. Chains are returned leaf first, root last. On
// failure the error is a *CertificateInvalidError.
func Verify(leaf *Certificate, opts VerifyOptions) ([][]*Certificate, error) {
	if leaf == nil {
		return nil, &CertificateInvalidError{Reason: UnknownAuthority, Detail: "nil leaf"}
	}
	if opts.CurrentTime.IsZero() {
		return nil, &CertificateInvalidError{Cert: leaf, Reason: Expired, Detail: "no validation time given"}
	}
	if opts.Verifier == nil {
		opts.Verifier = DefaultVerifier
	}
	if err := checkValidity(leaf, opts.CurrentTime); err != nil {
		return nil, err
	}
	if opts.DNSName != "" {
		if err := matchName(leaf, opts.DNSName); err != nil {
			return nil, err
		}
	}
	b := &builder{opts: opts}
	for _, r := range opts.Roots {
		if r.Equal(leaf) { // a trust anchor is its own chain
			b.chains = append(b.chains, []*Certificate{leaf})
		}
	}
	if len(b.chains) == 0 {
		b.extend([]*Certificate{leaf})
	}
	if len(b.chains) == 0 {
		if b.err != nil {
			return nil, b.err
		}
		return nil, &CertificateInvalidError{Cert: leaf, Reason: UnknownAuthority}
	}
	usages := opts.KeyUsages
	if len(usages) == 0 {
		usages = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	var good [][]*Certificate
	var err error
	for _, ch := range b.chains {
		if e := checkEKU(ch, usages); e != nil {
			err = e
			continue
		}
		if e := checkNameConstraints(ch); e != nil {
			err = e
			continue
		}
		good = append(good, ch)
	}
	if len(good) == 0 {
		return nil, err
	}
	return good, nil
}

type builder struct {
	opts   VerifyOptions
	chains [][]*Certificate
	err    *CertificateInvalidError // the first failure seen
	steps  int
}

func (b *builder) fail(e *CertificateInvalidError) {
	if b.err == nil {
		b.err = e
	}
}

// extend tries every candidate issuer of the chain's last certificate.
func (b *builder) extend(chain []*Certificate) {
	b.steps++
	if b.steps > 1000 || len(chain) >= maxChainLength {
		b.fail(&CertificateInvalidError{Cert: chain[len(chain)-1], Reason: UnknownAuthority, Detail: "chain too long"})
		return
	}
	c := chain[len(chain)-1]
	try := func(issuer *Certificate, root bool) {
		for _, in := range chain {
			if in.Equal(issuer) {
				return // no loops
			}
		}
		if !bytes.Equal(c.RawIssuer, issuer.RawSubject) {
			return
		}
		if len(c.AuthorityKeyId) > 0 && len(issuer.SubjectKeyId) > 0 && !bytes.Equal(c.AuthorityKeyId, issuer.SubjectKeyId) {
			return
		}
		if err := b.checkIssuer(chain, issuer); err != nil {
			b.fail(err)
			return
		}
		next := append(append([]*Certificate(nil), chain...), issuer)
		if root {
			b.chains = append(b.chains, next)
			return
		}
		b.extend(next)
	}
	for _, r := range b.opts.Roots {
		try(r, true)
	}
	for _, in := range b.opts.Intermediates {
		try(in, false)
	}
}

// checkIssuer checks what issuer must satisfy to have signed the last
// certificate of chain.
func (b *builder) checkIssuer(chain []*Certificate, issuer *Certificate) *CertificateInvalidError {
	c := chain[len(chain)-1]
	if err := c.CheckSignatureFrom(issuer, b.opts.Verifier); err != nil {
		return &CertificateInvalidError{Cert: c, Reason: BadSignature, Detail: err.Error()}
	}
	if err := checkValidity(issuer, b.opts.CurrentTime); err != nil {
		return err
	}
	if !issuer.BasicConstraintsValid || !issuer.IsCA {
		return &CertificateInvalidError{Cert: issuer, Reason: NotAuthorizedToSign, Detail: "basicConstraints cA is not TRUE"}
	}
	if issuer.KeyUsage&x509.KeyUsageCertSign == 0 {
		return &CertificateInvalidError{Cert: issuer, Reason: NotAuthorizedToSign, Detail: "keyUsage lacks keyCertSign"}
	}
	// Intermediates between issuer and the leaf.
	if n := len(chain) - 1; issuer.MaxPathLen >= 0 && n > issuer.MaxPathLen {
		return &CertificateInvalidError{Cert: issuer, Reason: TooManyIntermediates,
			Detail: fmt.Sprintf("%d intermediates below, pathLenConstraint %d", n, issuer.MaxPathLen)}
	}
	return nil
}

func checkValidity(c *Certificate, now time.Time) *CertificateInvalidError {
	if now.Before(c.NotBefore) {
		return &CertificateInvalidError{Cert: c, Reason: Expired, Detail: "not valid before " + c.NotBefore.Format(time.RFC3339)}
	}
	if now.After(c.NotAfter) {
		return &CertificateInvalidError{Cert: c, Reason: Expired, Detail: "expired at " + c.NotAfter.Format(time.RFC3339)}
	}
	return nil
}

// checkEKU: at least one requested usage must be allowed by every
// certificate of the chain; a certificate without the extension, or with
// anyExtendedKeyUsage, allows all.
func checkEKU(chain []*Certificate, want []x509.ExtKeyUsage) *CertificateInvalidError {
	for _, u := range want {
		if u == x509.ExtKeyUsageAny {
			return nil
		}
	}
	ok := append([]x509.ExtKeyUsage(nil), want...)
	for _, c := range chain {
		if len(c.ExtKeyUsage)+len(c.UnknownExtKeyUsage) == 0 || hasEKU(c, x509.ExtKeyUsageAny) {
			continue
		}
		var kept []x509.ExtKeyUsage
		for _, u := range ok {
			if hasEKU(c, u) {
				kept = append(kept, u)
			}
		}
		ok = kept
		if len(ok) == 0 {
			return &CertificateInvalidError{Cert: c, Reason: IncompatibleUsage, Detail: fmt.Sprintf("extKeyUsage %v allows none of %v", c.ExtKeyUsage, want)}
		}
	}
	return nil
}

func hasEKU(c *Certificate, u x509.ExtKeyUsage) bool {
	for _, e := range c.ExtKeyUsage {
		if e == u {
			return true
		}
	}
	return false
}

// checkNameConstraints applies each CA's constraints to the names of every
// certificate below it.
func checkNameConstraints(chain []*Certificate) *CertificateInvalidError {
	for i := 1; i < len(chain); i++ {
		ca := chain[i]
		if len(ca.PermittedDNSDomains)+len(ca.ExcludedDNSDomains)+len(ca.PermittedIPRanges)+len(ca.ExcludedIPRanges) == 0 {
			continue
		}
		for _, c := range chain[:i] {
			for _, d := range c.DNSNames {
				if !dnsAllowed(d, ca.PermittedDNSDomains, ca.ExcludedDNSDomains) {
					return &CertificateInvalidError{Cert: c, Reason: CANotAuthorizedForThisName, Detail: fmt.Sprintf("DNS name %q", d)}
				}
			}
			for _, ip := range c.IPAddresses {
				if !ipAllowed(ip, ca.PermittedIPRanges, ca.ExcludedIPRanges) {
					return &CertificateInvalidError{Cert: c, Reason: CANotAuthorizedForThisName, Detail: fmt.Sprintf("IP address %v", ip)}
				}
			}
		}
	}
	return nil
}

// dnsConstraintMatch: "example.com" matches itself and its subdomains,
// ".example.com" only subdomains.
func dnsConstraintMatch(name, constraint string) bool {
	name, constraint = strings.ToLower(strings.TrimSuffix(name, ".")), strings.ToLower(constraint)
	if strings.HasPrefix(constraint, ".") {
		return strings.HasSuffix(name, constraint)
	}
	return name == constraint || strings.HasSuffix(name, "."+constraint)
}

func dnsAllowed(name string, permitted, excluded []string) bool {
	for _, e := range excluded {
		if dnsConstraintMatch(name, e) {
			return false
		}
	}
	if len(permitted) == 0 {
		return true
	}
	for _, p := range permitted {
		if dnsConstraintMatch(name, p) {
			return true
		}
	}
	return false
}

func ipAllowed(ip net.IP, permitted, excluded []*net.IPNet) bool {
	match := func(n *net.IPNet) bool {
		if len(n.IP) == net.IPv4len {
			v4 := ip.To4()
			return v4 != nil && len(ip) == net.IPv4len && n.Contains(v4)
		}
		return len(ip) == net.IPv6len && n.Contains(ip)
	}
	for _, e := range excluded {
		if match(e) {
			return false
		}
	}
	if len(permitted) == 0 {
		return true
	}
	for _, p := range permitted {
		if match(p) {
			return true
		}
	}
	return false
}

// matchName checks the leaf for a DNS name (one-label wildcards allowed)
// or, for an IP literal, an IP address.
func matchName(c *Certificate, name string) *CertificateInvalidError {
	if ip := net.ParseIP(strings.Trim(name, "[]")); ip != nil {
		for _, a := range c.IPAddresses {
			if a.Equal(ip) {
				return nil
			}
		}
	} else {
		want := strings.ToLower(strings.TrimSuffix(name, "."))
		for _, d := range c.DNSNames {
			d = strings.ToLower(d)
			if d == want {
				return nil
			}
			if rest, ok := strings.CutPrefix(d, "*."); ok {
				if i := strings.IndexByte(want, '.'); i > 0 && want[i+1:] == rest {
					return nil
				}
			}
		}
	}
	return &CertificateInvalidError{Cert: c, Reason: NameMismatch, Detail: fmt.Sprintf("%q not among %v %v", name, c.DNSNames, c.IPAddresses)}
}
