package pqx509

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Template describes a certificate to create. Field names and meanings
// follow crypto/x509.Certificate.
type Template struct {
	SerialNumber        *big.Int // positive, at most 20 octets encoded
	Subject             pkix.Name
	NotBefore, NotAfter time.Time // encoded to the second, UTC
	PublicKey           PublicKey

	KeyUsage           x509.KeyUsage
	ExtKeyUsage        []x509.ExtKeyUsage
	UnknownExtKeyUsage []asn1.ObjectIdentifier

	// BasicConstraintsValid adds basicConstraints (critical). MaxPathLen
	// -1, or 0 with MaxPathLenZero false, means no limit.
	BasicConstraintsValid bool
	IsCA                  bool
	MaxPathLen            int
	MaxPathLenZero        bool

	// Subject alternative names; the extension is critical when Subject is
	// empty.
	DNSNames       []string
	IPAddresses    []net.IP
	URIs           []*url.URL
	EmailAddresses []string

	// Name constraints (critical), DNS and IP forms only.
	PermittedDNSDomains, ExcludedDNSDomains []string
	PermittedIPRanges, ExcludedIPRanges     []*net.IPNet

	// SubjectKeyId defaults to SHA-256 of the public key truncated to 160
	// bits (RFC 7093 method 1). AuthorityKeyId defaults to the parent's
	// SubjectKeyId; a self-signed certificate has none unless given.
	SubjectKeyId, AuthorityKeyId []byte

	OCSPServer, IssuingCertificateURL, CRLDistributionPoints []string

	// ExtraExtensions are appended as given.
	ExtraExtensions []pkix.Extension
}

// Certificate is a parsed certificate. Every Template field is filled from
// the extensions; Extensions holds all of them as found.
type Certificate struct {
	Raw                     []byte // the whole certificate
	RawTBSCertificate       []byte
	RawSubject              []byte
	RawIssuer               []byte
	RawSubjectPublicKeyInfo []byte

	Version             int // 3
	SerialNumber        *big.Int
	Issuer, Subject     pkix.Name
	NotBefore, NotAfter time.Time
	PublicKey           PublicKey
	SignatureAlgorithm  string // "ML-DSA-65", "ECDSA-SHA384", ...
	Signature           []byte

	KeyUsage           x509.KeyUsage
	ExtKeyUsage        []x509.ExtKeyUsage
	UnknownExtKeyUsage []asn1.ObjectIdentifier

	BasicConstraintsValid bool
	IsCA                  bool
	MaxPathLen            int // -1 when absent
	MaxPathLenZero        bool

	DNSNames       []string
	IPAddresses    []net.IP
	URIs           []*url.URL
	EmailAddresses []string

	PermittedDNSDomains, ExcludedDNSDomains []string
	PermittedIPRanges, ExcludedIPRanges     []*net.IPNet

	SubjectKeyId, AuthorityKeyId []byte

	OCSPServer, IssuingCertificateURL, CRLDistributionPoints []string

	Extensions []pkix.Extension

	// What the parser saw, for Lint.
	tbsSigAlg string
	sanCount  int
	ekuCount  int
	keyErr    error
	problems  []LintFinding
}

// Equal reports whether both certificates have the same DER.
func (c *Certificate) Equal(o *Certificate) bool {
	return c != nil && o != nil && bytes.Equal(c.Raw, o.Raw)
}

// keyID is RFC 7093 method 1: the leftmost 160 bits of SHA-256 of the
// subjectPublicKey BIT STRING value.
func keyID(k PublicKey) []byte {
	h := sha256.Sum256(k.Raw)
	return h[:20]
}

// CreateCertificate builds, lints, signs and checks a v3 certificate for
// tmpl issued by parent with signer, whose key must be parent's (or
// tmpl.PublicKey when parent is nil: self-signed). A TBS with lint findings
// is refused with a *LintError; a signer whose signature does not verify
// is refused with ErrSignerMismatch. It returns the DER.
func CreateCertificate(ctx context.Context, tmpl *Template, parent *Certificate, signer Signer) ([]byte, error) {
	if tmpl == nil || signer == nil {
		return nil, fmt.Errorf("pqx509: create certificate: nil template or signer: %w", ErrInvalidTemplate)
	}
	tbs, sigName, err := buildTBS(tmpl, parent, signer.Public())
	if err != nil {
		return nil, fmt.Errorf("pqx509: create certificate: %w", err)
	}
	if f := Lint(tbs); len(f) > 0 {
		return nil, &LintError{Findings: f}
	}
	sig, err := sign(ctx, signer, tbs)
	if err != nil {
		return nil, err
	}
	der, err := assembleSigned(tbs, sigName, sig)
	if err != nil {
		return nil, err
	}
	// The output must parse back to exactly the TBS that sign verified
	// (with the signer's key, which buildTBS matched to the issuer's): that
	// is the signature check of the result, without verifying twice.
	cert, err := ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pqx509: created certificate does not parse: %w", err)
	}
	if !bytes.Equal(cert.RawTBSCertificate, tbs) || (parent != nil && !bytes.Equal(cert.RawIssuer, parent.RawSubject)) {
		return nil, fmt.Errorf("pqx509: created certificate does not round-trip its TBS: %w", ErrMalformed)
	}
	return der, nil
}

// assembleSigned wraps a signed part: SEQUENCE { tbs, algorithm, signature }.
func assembleSigned(tbs []byte, sigName string, sig []byte) ([]byte, error) {
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(tbs)
		addSigAlg(b, sigName)
		addBitStringBytes(b, sig)
	})
	return build(&b)
}

func buildTBS(t *Template, parent *Certificate, signerKey PublicKey) ([]byte, string, error) {
	// A bad serial, like every other profile rule, is Lint's to report.
	if t.SerialNumber == nil {
		return nil, "", fmt.Errorf("no serial number: %w", ErrInvalidTemplate)
	}
	if err := t.PublicKey.check(); err != nil {
		return nil, "", err
	}
	if err := signerKey.check(); err != nil {
		return nil, "", fmt.Errorf("signer key: %w", err)
	}
	if !timeEncodable(t.NotBefore) || !timeEncodable(t.NotAfter) {
		return nil, "", fmt.Errorf("validity out of range: %w", ErrInvalidTemplate)
	}
	sigName := keyAlgs[signerKey.Algorithm].sigAlg
	subject, err := marshalName(t.Subject)
	if err != nil {
		return nil, "", fmt.Errorf("subject: %v: %w", err, ErrInvalidTemplate)
	}
	issuer, aki := subject, t.AuthorityKeyId
	if parent == nil {
		if !signerKey.Equal(t.PublicKey) {
			return nil, "", fmt.Errorf("self-signed certificate with another key: %w", ErrSignerMismatch)
		}
	} else {
		if !signerKey.Equal(parent.PublicKey) {
			return nil, "", fmt.Errorf("signer key is not the parent's: %w", ErrSignerMismatch)
		}
		issuer = parent.RawSubject
		if len(aki) == 0 {
			aki = parent.SubjectKeyId
		}
	}
	exts, err := templateExtensions(t, aki)
	if err != nil {
		return nil, "", err
	}
	spki, err := MarshalSPKI(t.PublicKey)
	if err != nil {
		return nil, "", err
	}
	var alg cryptobyte.Builder
	addSigAlg(&alg, sigName)
	tbs, err := encodeTBS(3, t.SerialNumber, alg.BytesOrPanic(), issuer, t.NotBefore, t.NotAfter, subject, spki, exts)
	return tbs, sigName, err
}

// encodeTBS writes a TBSCertificate from encoded parts, without checks:
// the callers check, and Lint judges the result.
func encodeTBS(version int, serial *big.Int, sigAlg, issuer []byte, notBefore, notAfter time.Time, subject, spki []byte, exts []pkix.Extension) ([]byte, error) {
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		if version != 1 {
			b.AddASN1(cbasn1.Tag(0).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) { b.AddASN1Int64(int64(version - 1)) })
		}
		b.AddASN1BigInt(serial)
		b.AddBytes(sigAlg)
		b.AddBytes(issuer)
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			addTime(b, notBefore)
			addTime(b, notAfter)
		})
		b.AddBytes(subject)
		b.AddBytes(spki)
		if len(exts) > 0 {
			b.AddASN1(cbasn1.Tag(3).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { addExtensions(b, exts) })
			})
		}
	})
	return build(&b)
}

func templateExtensions(t *Template, aki []byte) ([]pkix.Extension, error) {
	var exts []pkix.Extension
	add := func(oid asn1.ObjectIdentifier, critical bool, v []byte, err error) error {
		if err != nil {
			return err
		}
		exts = append(exts, pkix.Extension{Id: oid, Critical: critical, Value: v})
		return nil
	}
	if t.KeyUsage != 0 {
		v, err := marshalKeyUsage(t.KeyUsage)
		if err := add(oidExtKeyUsage, true, v, err); err != nil {
			return nil, err
		}
	}
	if len(t.ExtKeyUsage)+len(t.UnknownExtKeyUsage) > 0 {
		v, err := marshalEKU(t.ExtKeyUsage, t.UnknownExtKeyUsage)
		if err := add(oidExtExtKeyUsage, false, v, err); err != nil {
			return nil, err
		}
	}
	if t.BasicConstraintsValid {
		v, err := marshalBasicConstraints(t.IsCA, t.MaxPathLen, t.MaxPathLenZero)
		if err := add(oidExtBasicConstraints, true, v, err); err != nil {
			return nil, err
		}
	}
	ski := t.SubjectKeyId
	if len(ski) == 0 {
		ski = keyID(t.PublicKey)
	}
	{
		v, err := marshalOctets(ski)
		if err := add(oidExtSubjectKeyId, false, v, err); err != nil {
			return nil, err
		}
	}
	if len(aki) > 0 {
		v, err := marshalAKI(aki)
		if err := add(oidExtAuthorityKeyId, false, v, err); err != nil {
			return nil, err
		}
	}
	if len(t.OCSPServer)+len(t.IssuingCertificateURL) > 0 {
		v, err := marshalAIA(t.OCSPServer, t.IssuingCertificateURL)
		if err := add(oidExtAuthorityInfo, false, v, err); err != nil {
			return nil, err
		}
	}
	if len(t.DNSNames)+len(t.EmailAddresses)+len(t.IPAddresses)+len(t.URIs) > 0 {
		emptySubject := len(t.Subject.ToRDNSequence()) == 0
		v, err := marshalSAN(t.DNSNames, t.EmailAddresses, t.IPAddresses, t.URIs)
		if err := add(oidExtSubjectAltName, emptySubject, v, err); err != nil {
			return nil, err
		}
	}
	if len(t.PermittedDNSDomains)+len(t.ExcludedDNSDomains)+len(t.PermittedIPRanges)+len(t.ExcludedIPRanges) > 0 {
		v, err := marshalNameConstraints(t.PermittedDNSDomains, t.ExcludedDNSDomains, t.PermittedIPRanges, t.ExcludedIPRanges)
		if err := add(oidExtNameConstraints, true, v, err); err != nil {
			return nil, err
		}
	}
	if len(t.CRLDistributionPoints) > 0 {
		v, err := marshalCRLDP(t.CRLDistributionPoints)
		if err := add(oidExtCRLDistPoints, false, v, err); err != nil {
			return nil, err
		}
	}
	exts = append(exts, t.ExtraExtensions...)
	return exts, nil
}

// ParseCertificate parses one strict-DER certificate with nothing after it.
// It refuses BER, unsupported or mismatched signature algorithms, versions
// other than 3, bad serials, duplicate extensions and unknown critical
// extensions. Errors are *ParseError.
func ParseCertificate(der []byte) (*Certificate, error) {
	const what = "certificate"
	input := cryptobyte.String(der)
	var cert, tbsEl cryptobyte.String
	if !input.ReadASN1(&cert, cbasn1.SEQUENCE) || !input.Empty() {
		return nil, malformed(what)
	}
	if !cert.ReadASN1Element(&tbsEl, cbasn1.SEQUENCE) {
		return nil, malformed(what + ": tbsCertificate")
	}
	c, err := parseTBS(tbsEl)
	if err != nil {
		return nil, err
	}
	if len(c.problems) > 0 {
		return nil, c.problems[0].err
	}
	_, outer, err := readSigAlg(&cert, what+": signatureAlgorithm")
	if err != nil {
		return nil, err
	}
	if outer != c.tbsSigAlg {
		return nil, perr(what+": signatureAlgorithm differs from the TBS signature field", ErrAlgorithmMismatch)
	}
	if c.Signature, err = readBitStringBytes(&cert, what+": signature"); err != nil {
		return nil, err
	}
	if !cert.Empty() {
		return nil, malformed(what + ": trailing data")
	}
	c.Raw = bytes.Clone(der)
	c.SignatureAlgorithm = outer
	return c, nil
}

// problem records a violation that ParseCertificate refuses but Lint lists.
func (c *Certificate) problem(rule LintRule, err error) {
	c.problems = append(c.problems, LintFinding{Rule: rule, Message: err.Error(), err: err})
}

// parseTBS parses a TBSCertificate element. Structural failures return an
// error; rule violations the encoding can still carry go to c.problems.
func parseTBS(tbsEl cryptobyte.String) (*Certificate, error) {
	const what = "tbsCertificate"
	c := &Certificate{RawTBSCertificate: bytes.Clone(tbsEl), MaxPathLen: -1}
	var tbs cryptobyte.String
	if !tbsEl.ReadASN1(&tbs, cbasn1.SEQUENCE) {
		return nil, malformed(what)
	}
	var verEl cryptobyte.String
	var hasVer bool
	if !tbs.ReadOptionalASN1(&verEl, &hasVer, cbasn1.Tag(0).ContextSpecific().Constructed()) {
		return nil, malformed(what + ": version")
	}
	c.Version = 1
	if hasVer {
		var v int64
		if !verEl.ReadASN1Int64WithTag(&v, cbasn1.INTEGER) || !verEl.Empty() || v < 0 || v > 2 {
			return nil, malformed(what + ": version")
		}
		if v == 0 {
			return nil, malformed(what + ": version (DEFAULT v1 encoded)")
		}
		c.Version = int(v) + 1
	}
	if c.Version != 3 {
		c.problem(RuleVersion, perr(what+fmt.Sprintf(": version %d, want 3", c.Version), ErrMalformed))
	}
	// Serial: read raw so a bad one is a problem, not a stop.
	var serialRaw cryptobyte.String
	peek := tbs
	if !peek.ReadASN1(&serialRaw, cbasn1.INTEGER) {
		return nil, malformed(what + ": serialNumber")
	}
	c.SerialNumber = new(big.Int)
	if !tbs.ReadASN1Integer(c.SerialNumber) {
		return nil, malformed(what + ": serialNumber")
	}
	if c.SerialNumber.Sign() <= 0 || len(serialRaw) > maxSerialOctets {
		c.problem(RuleSerial, perr(what+": serialNumber", ErrBadSerial))
	}
	var err error
	if _, c.tbsSigAlg, err = readSigAlg(&tbs, what+": signature"); err != nil {
		return nil, err
	}
	if c.RawIssuer, err = rawElement(&tbs, what+": issuer"); err != nil {
		return nil, err
	}
	if c.Issuer, err = parseName(c.RawIssuer, what+": issuer"); err != nil {
		return nil, err
	}
	var validity cryptobyte.String
	if !tbs.ReadASN1(&validity, cbasn1.SEQUENCE) {
		return nil, malformed(what + ": validity")
	}
	if c.NotBefore, err = readTime(&validity, what+": notBefore"); err != nil {
		return nil, err
	}
	if c.NotAfter, err = readTime(&validity, what+": notAfter"); err != nil {
		return nil, err
	}
	if !validity.Empty() {
		return nil, malformed(what + ": validity")
	}
	if c.RawSubject, err = rawElement(&tbs, what+": subject"); err != nil {
		return nil, err
	}
	if c.Subject, err = parseName(c.RawSubject, what+": subject"); err != nil {
		return nil, err
	}
	var spki cryptobyte.String
	if !tbs.ReadASN1Element(&spki, cbasn1.SEQUENCE) {
		return nil, malformed(what + ": subjectPublicKeyInfo")
	}
	c.RawSubjectPublicKeyInfo = []byte(spki)
	if c.PublicKey, err = ParseSPKI(spki); err != nil {
		c.keyErr = err
		c.problem(RuleKeyLength, err)
	}
	// issuerUniqueID [1] and subjectUniqueID [2] are not allowed here.
	var extsEl cryptobyte.String
	var hasExts bool
	if !tbs.ReadOptionalASN1(&extsEl, &hasExts, cbasn1.Tag(3).ContextSpecific().Constructed()) || !tbs.Empty() {
		return nil, malformed(what + ": fields after subjectPublicKeyInfo")
	}
	if hasExts {
		var seq cryptobyte.String
		if !extsEl.ReadASN1(&seq, cbasn1.SEQUENCE) || !extsEl.Empty() {
			return nil, malformed(what + ": extensions")
		}
		exts, dup, err := readExtensions(seq, what+": extensions")
		if err != nil {
			return nil, err
		}
		if dup != nil {
			c.problem(RuleDuplicateExtension, perr(what+": extension "+dup.String(), ErrDuplicateExtension))
		}
		c.Extensions = exts
		if err := c.readExtensions(); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func (c *Certificate) readExtensions() error {
	const what = "tbsCertificate: extension "
	for _, e := range c.Extensions {
		var err error
		switch {
		case e.Id.Equal(oidExtKeyUsage):
			c.KeyUsage, err = parseKeyUsage(e.Value)
		case e.Id.Equal(oidExtExtKeyUsage):
			c.ExtKeyUsage, c.UnknownExtKeyUsage, c.ekuCount, err = parseEKU(e.Value)
		case e.Id.Equal(oidExtBasicConstraints):
			c.BasicConstraintsValid = true
			c.IsCA, c.MaxPathLen, err = parseBasicConstraints(e.Value)
			c.MaxPathLenZero = c.MaxPathLen == 0
		case e.Id.Equal(oidExtSubjectKeyId):
			c.SubjectKeyId, err = parseSKI(e.Value)
		case e.Id.Equal(oidExtAuthorityKeyId):
			c.AuthorityKeyId, err = parseAKI(e.Value)
		case e.Id.Equal(oidExtSubjectAltName):
			var g *generalNames
			if g, err = parseGeneralNames(e.Value, "subjectAltName"); err == nil {
				c.DNSNames, c.EmailAddresses, c.IPAddresses, c.URIs, c.sanCount = g.dns, g.emails, g.ips, g.uris, g.count
			}
		case e.Id.Equal(oidExtNameConstraints):
			var nc *nameConstraints
			if nc, err = parseNameConstraints(e.Value); err == nil {
				c.PermittedDNSDomains, c.ExcludedDNSDomains = nc.permDNS, nc.exclDNS
				c.PermittedIPRanges, c.ExcludedIPRanges = nc.permIP, nc.exclIP
			}
		case e.Id.Equal(oidExtAuthorityInfo):
			c.OCSPServer, c.IssuingCertificateURL, err = parseAIA(e.Value)
		case e.Id.Equal(oidExtCRLDistPoints):
			c.CRLDistributionPoints, err = parseCRLDP(e.Value)
		default:
			if e.Critical {
				c.problem(RuleUnknownCritical, perr(what+e.Id.String(), ErrUnknownCriticalExtension))
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// CheckSignatureFrom checks that parent signed c: the signature algorithm
// belongs to parent's key and the signature verifies with v
// (DefaultVerifier when nil). It does not check names or constraints; use
// Verify for a chain.
func (c *Certificate) CheckSignatureFrom(parent *Certificate, v Verifier) error {
	if parent == nil {
		return fmt.Errorf("pqx509: check signature: nil parent: %w", ErrBadSignature)
	}
	if err := verifyWith(v, c.SignatureAlgorithm, parent.PublicKey, c.RawTBSCertificate, c.Signature); err != nil {
		return fmt.Errorf("pqx509: certificate signature: %w", err)
	}
	return nil
}
