package pqx509

import (
	"bytes"
	"context"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"net"
	"net/url"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// CSRTemplate describes a PKCS#10 certificate request. The public key is
// the signer's: a request proves possession by its signature.
type CSRTemplate struct {
	Subject        pkix.Name
	DNSNames       []string
	IPAddresses    []net.IP
	URIs           []*url.URL
	EmailAddresses []string
	// ExtraExtensions are requested as given, after subjectAltName.
	ExtraExtensions []pkix.Extension
}

// CSR is a parsed PKCS#10 request. The names come from the
// subjectAltName of the extensionRequest attribute.
type CSR struct {
	Raw                      []byte
	RawTBSCertificateRequest []byte
	RawSubject               []byte
	RawSubjectPublicKeyInfo  []byte

	Version            int // 0
	Subject            pkix.Name
	PublicKey          PublicKey
	SignatureAlgorithm string
	Signature          []byte

	DNSNames       []string
	IPAddresses    []net.IP
	URIs           []*url.URL
	EmailAddresses []string

	// Extensions are all requested extensions as found.
	Extensions []pkix.Extension
	// RequestsCA is true when a requested basicConstraints says cA=TRUE.
	// The CA must refuse such a request (Validate does).
	RequestsCA bool
	// UnknownCriticalExtensions lists requested critical extensions other
	// than subjectAltName, basicConstraints, keyUsage and extKeyUsage.
	UnknownCriticalExtensions []asn1.ObjectIdentifier
}

// CreateCSR builds and signs a request for the signer's key and checks the
// result parses and verifies. It returns the DER.
func CreateCSR(ctx context.Context, tmpl CSRTemplate, signer Signer) ([]byte, error) {
	if signer == nil {
		return nil, fmt.Errorf("pqx509: create CSR: nil signer: %w", ErrInvalidTemplate)
	}
	pub := signer.Public()
	if err := pub.check(); err != nil {
		return nil, fmt.Errorf("pqx509: create CSR: %w", err)
	}
	subject, err := marshalName(tmpl.Subject)
	if err != nil {
		return nil, fmt.Errorf("pqx509: create CSR: subject: %v: %w", err, ErrInvalidTemplate)
	}
	var exts []pkix.Extension
	if len(tmpl.DNSNames)+len(tmpl.IPAddresses)+len(tmpl.URIs)+len(tmpl.EmailAddresses) > 0 {
		v, err := marshalSAN(tmpl.DNSNames, tmpl.EmailAddresses, tmpl.IPAddresses, tmpl.URIs)
		if err != nil {
			return nil, fmt.Errorf("pqx509: create CSR: %w", err)
		}
		exts = append(exts, pkix.Extension{Id: oidExtSubjectAltName, Critical: isEmptyName(subject), Value: v})
	}
	exts = append(exts, tmpl.ExtraExtensions...)
	if d := findDuplicate(exts); d != nil {
		return nil, fmt.Errorf("pqx509: create CSR: extension %v: %w", d, ErrDuplicateExtension)
	}
	sigName := keyAlgs[pub.Algorithm].sigAlg
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1Int64(0)
		b.AddBytes(subject)
		addSPKI(b, pub)
		b.AddASN1(cbasn1.Tag(0).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
			if len(exts) == 0 {
				return
			}
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1ObjectIdentifier(oidExtensionRequest)
				b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) {
					b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { addExtensions(b, exts) })
				})
			})
		})
	})
	tbs, err := build(&b)
	if err != nil {
		return nil, fmt.Errorf("pqx509: create CSR: %w", err)
	}
	sig, err := sign(ctx, signer, tbs)
	if err != nil {
		return nil, err
	}
	der, err := assembleSigned(tbs, sigName, sig)
	if err != nil {
		return nil, err
	}
	csr, err := ParseCSR(der)
	if err != nil {
		return nil, fmt.Errorf("pqx509: created CSR does not parse: %w", err)
	}
	if err := csr.CheckSignature(DefaultVerifier); err != nil {
		return nil, fmt.Errorf("pqx509: created CSR does not verify: %w", err)
	}
	return der, nil
}

// ParseCSR parses one strict-DER PKCS#10 request. It refuses a signature
// algorithm that does not belong to the request's key
// (ErrAlgorithmMismatch), keys of the wrong length (ErrBadKey), and
// duplicate requested extensions (ErrDuplicateExtension). Unknown critical
// requested extensions and cA requests are exposed, not refused: see
// Validate.
func ParseCSR(der []byte) (*CSR, error) {
	const what = "certificate request"
	input := cryptobyte.String(der)
	var outer, criEl cryptobyte.String
	if !input.ReadASN1(&outer, cbasn1.SEQUENCE) || !input.Empty() || !outer.ReadASN1Element(&criEl, cbasn1.SEQUENCE) {
		return nil, malformed(what)
	}
	c := &CSR{Raw: bytes.Clone(der), RawTBSCertificateRequest: bytes.Clone(criEl)}
	var cri cryptobyte.String
	var ver int64
	if !criEl.ReadASN1(&cri, cbasn1.SEQUENCE) || !cri.ReadASN1Int64WithTag(&ver, cbasn1.INTEGER) || ver != 0 {
		return nil, malformed(what + ": version")
	}
	var err error
	if c.RawSubject, err = rawElement(&cri, what+": subject"); err != nil {
		return nil, err
	}
	if c.Subject, err = parseName(c.RawSubject, what+": subject"); err != nil {
		return nil, err
	}
	var spki cryptobyte.String
	if !cri.ReadASN1Element(&spki, cbasn1.SEQUENCE) {
		return nil, malformed(what + ": subjectPKInfo")
	}
	c.RawSubjectPublicKeyInfo = []byte(spki)
	if c.PublicKey, err = ParseSPKI(spki); err != nil {
		return nil, err
	}
	var attrs cryptobyte.String
	if !cri.ReadASN1(&attrs, cbasn1.Tag(0).ContextSpecific().Constructed()) || !cri.Empty() {
		return nil, malformed(what + ": attributes")
	}
	seenExtReq := false
	for !attrs.Empty() {
		var attr, values cryptobyte.String
		if !attrs.ReadASN1(&attr, cbasn1.SEQUENCE) {
			return nil, malformed(what + ": attribute")
		}
		oid, err := readOID(&attr, what+": attribute type")
		if err != nil {
			return nil, err
		}
		if !attr.ReadASN1(&values, cbasn1.SET) || !attr.Empty() {
			return nil, malformed(what + ": attribute values")
		}
		if !oid.Equal(oidExtensionRequest) {
			continue // other attributes (challengePassword, ...) are not read
		}
		if seenExtReq {
			return nil, malformed(what + ": two extensionRequest attributes")
		}
		seenExtReq = true
		var seq cryptobyte.String
		if !values.ReadASN1(&seq, cbasn1.SEQUENCE) || !values.Empty() {
			return nil, malformed(what + ": extensionRequest")
		}
		exts, dup, err := readExtensions(seq, what+": extensionRequest")
		if err != nil {
			return nil, err
		}
		if dup != nil {
			return nil, perr(what+": requested extension "+dup.String(), ErrDuplicateExtension)
		}
		c.Extensions = exts
	}
	if err := c.readExtensions(); err != nil {
		return nil, err
	}
	if _, c.SignatureAlgorithm, err = readSigAlg(&outer, what+": signatureAlgorithm"); err != nil {
		return nil, err
	}
	if c.Signature, err = readBitStringBytes(&outer, what+": signature"); err != nil {
		return nil, err
	}
	if !outer.Empty() {
		return nil, malformed(what + ": trailing data")
	}
	if err := checkSigAlgKey(c.SignatureAlgorithm, c.PublicKey); err != nil {
		return nil, perr(what, err)
	}
	return c, nil
}

func (c *CSR) readExtensions() error {
	for _, e := range c.Extensions {
		var err error
		switch {
		case e.Id.Equal(oidExtSubjectAltName):
			var g *generalNames
			if g, err = parseGeneralNames(e.Value, "subjectAltName"); err == nil {
				c.DNSNames, c.EmailAddresses, c.IPAddresses, c.URIs = g.dns, g.emails, g.ips, g.uris
			}
		case e.Id.Equal(oidExtBasicConstraints):
			c.RequestsCA, _, err = parseBasicConstraints(e.Value)
		case e.Id.Equal(oidExtKeyUsage):
			_, err = parseKeyUsage(e.Value)
		case e.Id.Equal(oidExtExtKeyUsage):
			_, _, _, err = parseEKU(e.Value)
		default:
			if e.Critical {
				c.UnknownCriticalExtensions = append(c.UnknownCriticalExtensions, e.Id)
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// CheckSignature checks the request's signature with its own key.
func (c *CSR) CheckSignature(v Verifier) error {
	if err := verifyWith(v, c.SignatureAlgorithm, c.PublicKey, c.RawTBSCertificateRequest, c.Signature); err != nil {
		return fmt.Errorf("pqx509: certificate request signature: %w", err)
	}
	return nil
}

// Validate is what a CA checks before issuing: the signature verifies, the
// request does not ask for a CA certificate (ErrRequestsCA), and it has no
// unknown critical extension (ErrUnknownCriticalExtension).
func (c *CSR) Validate(v Verifier) error {
	if err := c.CheckSignature(v); err != nil {
		return err
	}
	if c.RequestsCA {
		return fmt.Errorf("pqx509: certificate request: %w", ErrRequestsCA)
	}
	if len(c.UnknownCriticalExtensions) > 0 {
		return fmt.Errorf("pqx509: certificate request: extension %v: %w", c.UnknownCriticalExtensions[0], ErrUnknownCriticalExtension)
	}
	return nil
}
