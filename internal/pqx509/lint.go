package pqx509

import (
	"bytes"
	"crypto/x509"
	"encoding/asn1"
	"errors"

	"golang.org/x/crypto/cryptobyte"
)

// LintRule names one lint rule.
type LintRule string

// The rules Lint checks.
const (
	RuleDER                  LintRule = "der"                        // the TBS is not strict DER of a TBSCertificate
	RuleVersion              LintRule = "version-v3"                 // version must be v3
	RuleSerial               LintRule = "serial"                     // positive, at most 20 octets
	RuleSignatureAlgorithm   LintRule = "signature-algorithm"        // supported, parameters absent
	RuleValidity             LintRule = "validity-order"             // notBefore before notAfter
	RuleIssuerEmpty          LintRule = "issuer-not-empty"           // issuer name has at least one RDN
	RuleBasicConstraintsCrit LintRule = "basic-constraints-critical" // critical on CA certificates
	RuleKeyCertSignCA        LintRule = "keycertsign-requires-ca"    // keyCertSign only with cA=TRUE
	RulePathLenCA            LintRule = "pathlen-requires-ca"        // pathLenConstraint only with cA=TRUE
	RuleSANRequired          LintRule = "san-required"               // empty subject needs a SAN
	RuleSANCritical          LintRule = "san-critical"               // SAN critical when the subject is empty
	RuleSANEmpty             LintRule = "san-not-empty"              // a SAN extension with no names
	RuleNameConstraintsCA    LintRule = "name-constraints-ca-only"   // only on CA certificates
	RuleNameConstraintsCrit  LintRule = "name-constraints-critical"  // always critical
	RuleEKUEmpty             LintRule = "eku-not-empty"              // an EKU extension with no purposes
	RuleDuplicateExtension   LintRule = "duplicate-extension"        // an OID twice
	RuleUnknownCritical      LintRule = "unknown-critical-extension" // a critical extension nobody processes
	RuleAKI                  LintRule = "aki-present"                // authorityKeyIdentifier unless self-issued
	RuleSKI                  LintRule = "ski-on-ca"                  // subjectKeyIdentifier on CA certificates
	RuleKeyLength            LintRule = "key"                        // key of the right length for its OID
)

// LintFinding is one broken rule.
type LintFinding struct {
	Rule    LintRule
	Message string
	err     error
}

func (f LintFinding) String() string { return string(f.Rule) + ": " + f.Message }

// Lint checks a DER TBSCertificate against the profile AVON issues. It
// returns every finding (none for a good TBS); CreateCertificate refuses
// anything with findings.
func Lint(tbsDER []byte) []LintFinding {
	var out []LintFinding
	add := func(r LintRule, msg string) { out = append(out, LintFinding{Rule: r, Message: msg}) }
	s := cryptobyte.String(tbsDER)
	var el cryptobyte.String
	if !s.ReadASN1Element(&el, 0x30) || !s.Empty() {
		add(RuleDER, "not one DER SEQUENCE")
		return out
	}
	c, err := parseTBS(el)
	if err != nil {
		rule := RuleDER
		if errors.Is(err, ErrUnsupportedAlgorithm) || errors.Is(err, ErrBadParameters) {
			rule = RuleSignatureAlgorithm
		}
		add(rule, err.Error())
		return out
	}
	out = append(out, c.problems...)
	if !c.NotBefore.Before(c.NotAfter) {
		add(RuleValidity, "notBefore is not before notAfter")
	}
	if isEmptyName(c.RawIssuer) {
		add(RuleIssuerEmpty, "issuer name is empty")
	}
	bc, bcCrit := hasExt(c, oidExtBasicConstraints)
	if c.IsCA && !bcCrit {
		add(RuleBasicConstraintsCrit, "basicConstraints of a CA certificate is not critical")
	}
	if c.KeyUsage&x509.KeyUsageCertSign != 0 && !c.IsCA {
		add(RuleKeyCertSignCA, "keyCertSign without basicConstraints cA=TRUE")
	}
	if bc && !c.IsCA && c.MaxPathLen >= 0 {
		add(RulePathLenCA, "pathLenConstraint without cA=TRUE")
	}
	san, sanCrit := hasExt(c, oidExtSubjectAltName)
	if isEmptyName(c.RawSubject) {
		if !san {
			add(RuleSANRequired, "empty subject and no subjectAltName")
		} else if !sanCrit {
			add(RuleSANCritical, "empty subject and a non-critical subjectAltName")
		}
	}
	if san && c.sanCount == 0 {
		add(RuleSANEmpty, "subjectAltName with no names")
	}
	if nc, ncCrit := hasExt(c, oidExtNameConstraints); nc {
		if !c.IsCA {
			add(RuleNameConstraintsCA, "nameConstraints on a non-CA certificate")
		}
		if !ncCrit {
			add(RuleNameConstraintsCrit, "nameConstraints not critical")
		}
	}
	if eku, _ := hasExt(c, oidExtExtKeyUsage); eku && c.ekuCount == 0 {
		add(RuleEKUEmpty, "extKeyUsage with no purposes")
	}
	if aki, _ := hasExt(c, oidExtAuthorityKeyId); !aki && !bytes.Equal(c.RawIssuer, c.RawSubject) {
		add(RuleAKI, "authorityKeyIdentifier absent on a certificate that is not self-issued")
	}
	if ski, _ := hasExt(c, oidExtSubjectKeyId); c.IsCA && !ski {
		add(RuleSKI, "subjectKeyIdentifier absent on a CA certificate")
	}
	return out
}

func hasExt(c *Certificate, oid asn1.ObjectIdentifier) (found, critical bool) {
	for _, e := range c.Extensions {
		if e.Id.Equal(oid) {
			return true, e.Critical
		}
	}
	return false, false
}

// isEmptyName reports whether a DER Name is the empty SEQUENCE.
func isEmptyName(raw []byte) bool { return len(raw) == 2 && raw[0] == 0x30 && raw[1] == 0 }
