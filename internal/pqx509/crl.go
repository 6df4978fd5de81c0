package pqx509

import (
	"bytes"
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// RevokedCertificate is one CRL entry. ReasonCode is an RFC 5280 CRLReason
// (0 unspecified, written as no reasonCode extension; 1-6, 8-10; 7 is
// unused).
type RevokedCertificate struct {
	SerialNumber   *big.Int
	RevocationTime time.Time
	ReasonCode     int
}

// CRLTemplate describes a v2 CRL. Number and NextUpdate are required.
type CRLTemplate struct {
	Number     *big.Int // monotonically increasing, at most 20 octets
	ThisUpdate time.Time
	NextUpdate time.Time
	Revoked    []RevokedCertificate
}

// CRL is a parsed v2 CRL.
type CRL struct {
	Raw                  []byte
	RawTBSRevocationList []byte
	RawIssuer            []byte

	Issuer             pkix.Name
	ThisUpdate         time.Time
	NextUpdate         time.Time
	Number             *big.Int
	AuthorityKeyId     []byte
	Revoked            []RevokedCertificate
	SignatureAlgorithm string
	Signature          []byte
	Extensions         []pkix.Extension
}

// CreateCRL builds and signs a CRL issued by issuer, whose key the signer
// holds and whose keyUsage includes cRLSign. It checks its own signature
// before returning the DER.
func CreateCRL(ctx context.Context, tmpl CRLTemplate, issuer *Certificate, signer Signer) ([]byte, error) {
	if issuer == nil || signer == nil {
		return nil, fmt.Errorf("pqx509: create CRL: nil issuer or signer: %w", ErrInvalidTemplate)
	}
	if !signer.Public().Equal(issuer.PublicKey) {
		return nil, fmt.Errorf("pqx509: create CRL: %w", ErrSignerMismatch)
	}
	if issuer.KeyUsage&x509.KeyUsageCRLSign == 0 {
		return nil, fmt.Errorf("pqx509: create CRL: issuer keyUsage lacks cRLSign: %w", ErrNotAuthorized)
	}
	if err := checkSerial(tmpl.Number); err != nil {
		return nil, fmt.Errorf("pqx509: create CRL: number: %w", ErrInvalidTemplate)
	}
	if tmpl.ThisUpdate.IsZero() || tmpl.NextUpdate.IsZero() || !tmpl.ThisUpdate.Before(tmpl.NextUpdate) ||
		!timeEncodable(tmpl.ThisUpdate) || !timeEncodable(tmpl.NextUpdate) {
		return nil, fmt.Errorf("pqx509: create CRL: thisUpdate must be before nextUpdate: %w", ErrInvalidTemplate)
	}
	seen := make(map[string]bool, len(tmpl.Revoked))
	for _, r := range tmpl.Revoked {
		if checkSerial(r.SerialNumber) != nil || r.ReasonCode < 0 || r.ReasonCode > 10 || r.ReasonCode == 7 ||
			r.RevocationTime.IsZero() || !timeEncodable(r.RevocationTime) {
			return nil, fmt.Errorf("pqx509: create CRL: entry %v: %w", r.SerialNumber, ErrInvalidTemplate)
		}
		if seen[string(r.SerialNumber.Bytes())] {
			return nil, fmt.Errorf("pqx509: create CRL: serial %v twice: %w", r.SerialNumber, ErrInvalidTemplate)
		}
		seen[string(r.SerialNumber.Bytes())] = true
	}
	var exts []pkix.Extension
	if len(issuer.SubjectKeyId) > 0 {
		v, err := marshalAKI(issuer.SubjectKeyId)
		if err != nil {
			return nil, err
		}
		exts = append(exts, pkix.Extension{Id: oidExtAuthorityKeyId, Value: v})
	}
	num, err := marshalValue(func(b *cryptobyte.Builder) { b.AddASN1BigInt(tmpl.Number) })
	if err != nil {
		return nil, err
	}
	exts = append(exts, pkix.Extension{Id: oidExtCRLNumber, Value: num})
	sigName := keyAlgs[issuer.PublicKey.Algorithm].sigAlg

	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1Int64(1) // v2
		addSigAlg(b, sigName)
		b.AddBytes(issuer.RawSubject)
		addTime(b, tmpl.ThisUpdate)
		addTime(b, tmpl.NextUpdate)
		if len(tmpl.Revoked) > 0 {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				for _, r := range tmpl.Revoked {
					b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
						b.AddASN1BigInt(r.SerialNumber)
						addTime(b, r.RevocationTime)
						if r.ReasonCode != 0 {
							b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
								b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
									b.AddASN1ObjectIdentifier(oidExtReasonCode)
									b.AddASN1(cbasn1.OCTET_STRING, func(b *cryptobyte.Builder) {
										b.AddASN1Enum(int64(r.ReasonCode))
									})
								})
							})
						}
					})
				}
			})
		}
		b.AddASN1(cbasn1.Tag(0).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { addExtensions(b, exts) })
		})
	})
	tbs, err := build(&b)
	if err != nil {
		return nil, fmt.Errorf("pqx509: create CRL: %w", err)
	}
	sig, err := sign(ctx, signer, tbs)
	if err != nil {
		return nil, err
	}
	der, err := assembleSigned(tbs, sigName, sig)
	if err != nil {
		return nil, err
	}
	crl, err := ParseCRL(der)
	if err != nil {
		return nil, fmt.Errorf("pqx509: created CRL does not parse: %w", err)
	}
	if err := crl.CheckSignatureFrom(issuer, DefaultVerifier); err != nil {
		return nil, fmt.Errorf("pqx509: created CRL does not verify: %w", err)
	}
	return der, nil
}

// ParseCRL parses one strict-DER v2 CRL. nextUpdate and the CRL number
// are required; unknown critical CRL or entry extensions are refused.
func ParseCRL(der []byte) (*CRL, error) {
	const what = "CRL"
	input := cryptobyte.String(der)
	var outer, tbsEl, tbs cryptobyte.String
	if !input.ReadASN1(&outer, cbasn1.SEQUENCE) || !input.Empty() || !outer.ReadASN1Element(&tbsEl, cbasn1.SEQUENCE) {
		return nil, malformed(what)
	}
	c := &CRL{Raw: bytes.Clone(der), RawTBSRevocationList: bytes.Clone(tbsEl)}
	var ver int64
	if !tbsEl.ReadASN1(&tbs, cbasn1.SEQUENCE) || !tbs.ReadASN1Int64WithTag(&ver, cbasn1.INTEGER) || ver != 1 {
		return nil, malformed(what + ": version (v2 required)")
	}
	_, inner, err := readSigAlg(&tbs, what+": signature")
	if err != nil {
		return nil, err
	}
	if c.RawIssuer, err = rawElement(&tbs, what+": issuer"); err != nil {
		return nil, err
	}
	if c.Issuer, err = parseName(c.RawIssuer, what+": issuer"); err != nil {
		return nil, err
	}
	if c.ThisUpdate, err = readTime(&tbs, what+": thisUpdate"); err != nil {
		return nil, err
	}
	if c.NextUpdate, err = readTime(&tbs, what+": nextUpdate (required)"); err != nil {
		return nil, err
	}
	if tbs.PeekASN1Tag(cbasn1.SEQUENCE) {
		var list cryptobyte.String
		if !tbs.ReadASN1(&list, cbasn1.SEQUENCE) || list.Empty() {
			return nil, malformed(what + ": revokedCertificates")
		}
		for !list.Empty() {
			r, err := readCRLEntry(&list)
			if err != nil {
				return nil, err
			}
			c.Revoked = append(c.Revoked, r)
		}
	}
	var extsEl, seq cryptobyte.String
	if !tbs.ReadASN1(&extsEl, cbasn1.Tag(0).ContextSpecific().Constructed()) || !tbs.Empty() ||
		!extsEl.ReadASN1(&seq, cbasn1.SEQUENCE) || !extsEl.Empty() {
		return nil, malformed(what + ": crlExtensions")
	}
	exts, dup, err := readExtensions(seq, what+": crlExtensions")
	if err != nil {
		return nil, err
	}
	if dup != nil {
		return nil, perr(what+": extension "+dup.String(), ErrDuplicateExtension)
	}
	c.Extensions = exts
	for _, e := range exts {
		switch {
		case e.Id.Equal(oidExtAuthorityKeyId):
			if c.AuthorityKeyId, err = parseAKI(e.Value); err != nil {
				return nil, err
			}
		case e.Id.Equal(oidExtCRLNumber):
			err := parseOnly(e.Value, what+": cRLNumber", func(s *cryptobyte.String) error {
				n, err := readSerial(s, what+": cRLNumber")
				c.Number = n
				return err
			})
			if err != nil {
				return nil, err
			}
		default:
			if e.Critical {
				return nil, perr(what+": extension "+e.Id.String(), ErrUnknownCriticalExtension)
			}
		}
	}
	if c.Number == nil {
		return nil, malformed(what + ": cRLNumber absent")
	}
	if _, c.SignatureAlgorithm, err = readSigAlg(&outer, what+": signatureAlgorithm"); err != nil {
		return nil, err
	}
	if c.SignatureAlgorithm != inner {
		return nil, perr(what+": signatureAlgorithm differs from the TBS signature field", ErrAlgorithmMismatch)
	}
	if c.Signature, err = readBitStringBytes(&outer, what+": signature"); err != nil {
		return nil, err
	}
	if !outer.Empty() {
		return nil, malformed(what + ": trailing data")
	}
	return c, nil
}

func readCRLEntry(list *cryptobyte.String) (RevokedCertificate, error) {
	const what = "CRL: revoked certificate"
	var r RevokedCertificate
	var entry cryptobyte.String
	if !list.ReadASN1(&entry, cbasn1.SEQUENCE) {
		return r, malformed(what)
	}
	var err error
	if r.SerialNumber, err = readSerial(&entry, what+": serial"); err != nil {
		return r, err
	}
	if r.RevocationTime, err = readTime(&entry, what+": revocationDate"); err != nil {
		return r, err
	}
	if entry.Empty() {
		return r, nil
	}
	var seq cryptobyte.String
	if !entry.ReadASN1(&seq, cbasn1.SEQUENCE) || !entry.Empty() {
		return r, malformed(what + ": extensions")
	}
	exts, dup, err := readExtensions(seq, what+": extensions")
	if err != nil {
		return r, err
	}
	if dup != nil {
		return r, perr(what+": extension "+dup.String(), ErrDuplicateExtension)
	}
	for _, e := range exts {
		switch {
		case e.Id.Equal(oidExtReasonCode):
			err := parseOnly(e.Value, what+": reasonCode", func(s *cryptobyte.String) error {
				var code int
				if !s.ReadASN1Enum(&code) {
					return malformed(what + ": reasonCode")
				}
				if code <= 0 || code > 10 || code == 7 {
					return perr(what+fmt.Sprintf(": reasonCode %d", code), ErrUnsupportedExtension)
				}
				r.ReasonCode = code
				return nil
			})
			if err != nil {
				return r, err
			}
		default:
			if e.Critical {
				return r, perr(what+": extension "+e.Id.String(), ErrUnknownCriticalExtension)
			}
		}
	}
	return r, nil
}

// CheckSignatureFrom checks that issuer signed the CRL: the issuer name
// matches, the authority key identifier (when both have one) matches,
// issuer's keyUsage includes cRLSign, and the signature verifies.
func (c *CRL) CheckSignatureFrom(issuer *Certificate, v Verifier) error {
	if issuer == nil {
		return fmt.Errorf("pqx509: CRL: nil issuer: %w", ErrBadSignature)
	}
	if !bytes.Equal(c.RawIssuer, issuer.RawSubject) {
		return fmt.Errorf("pqx509: CRL issuer is not the certificate's subject: %w", ErrNotAuthorized)
	}
	if len(c.AuthorityKeyId) > 0 && len(issuer.SubjectKeyId) > 0 && !bytes.Equal(c.AuthorityKeyId, issuer.SubjectKeyId) {
		return fmt.Errorf("pqx509: CRL authorityKeyIdentifier is not the issuer's: %w", ErrNotAuthorized)
	}
	if issuer.KeyUsage&x509.KeyUsageCRLSign == 0 {
		return fmt.Errorf("pqx509: CRL issuer keyUsage lacks cRLSign: %w", ErrNotAuthorized)
	}
	if err := verifyWith(v, c.SignatureAlgorithm, issuer.PublicKey, c.RawTBSRevocationList, c.Signature); err != nil {
		return fmt.Errorf("pqx509: CRL signature: %w", err)
	}
	return nil
}
