package pqx509

import (
	"errors"
	"fmt"
	"strings"
)

var (
	// ErrMalformed means the bytes are not the strict DER encoding of the
	// structure: BER forms, trailing bytes, wrong tags, bad times.
	ErrMalformed = errors.New("malformed DER")
	// ErrUnsupportedAlgorithm means an algorithm identifier this package does
	// not support (RSA, SHA-1 signatures, unknown OIDs) or an algorithm name
	// it does not know.
	ErrUnsupportedAlgorithm = errors.New("unsupported algorithm")
	// ErrBadParameters means an algorithm identifier carries parameters
	// where they must be absent, or the wrong ones.
	ErrBadParameters = errors.New("wrong algorithm parameters")
	// ErrBadKey means a public key of the wrong length or encoding for its
	// algorithm.
	ErrBadKey = errors.New("malformed public key")
	// ErrAlgorithmMismatch means a signature algorithm that does not belong
	// to the signing key, or an outer signature algorithm different from the
	// one inside the signed part.
	ErrAlgorithmMismatch = errors.New("signature algorithm does not match")
	// ErrBadSignature means a signature that does not verify.
	ErrBadSignature = errors.New("signature does not verify")
	// ErrDuplicateExtension means one extension OID appears twice.
	ErrDuplicateExtension = errors.New("duplicate extension")
	// ErrUnknownCriticalExtension means a critical extension this package
	// cannot process.
	ErrUnknownCriticalExtension = errors.New("unknown critical extension")
	// ErrUnsupportedExtension means an extension whose content uses a form
	// this package does not process (a name constraint on directory names,
	// a reasonCode out of range).
	ErrUnsupportedExtension = errors.New("unsupported extension content")
	// ErrBadSerial means a serial number that is not positive or is longer
	// than 20 octets.
	ErrBadSerial = errors.New("serial number not positive or over 20 octets")
	// ErrInvalidTemplate means a template that cannot be encoded (missing
	// fields, values out of range).
	ErrInvalidTemplate = errors.New("invalid template")
	// ErrSignerMismatch means the signer's public key is not the issuer
	// certificate's, or the signer returned a signature that does not verify.
	ErrSignerMismatch = errors.New("signer does not match the issuer")
	// ErrRequestsCA means a certificate request asks for cA=TRUE.
	ErrRequestsCA = errors.New("request asks for a CA certificate")
	// ErrNotAuthorized means an issuer certificate lacks the key usage or
	// extended key usage needed to sign the structure (cRLSign, keyCertSign,
	// OCSPSigning), or the issuer name does not chain.
	ErrNotAuthorized = errors.New("issuer not authorized")
	// ErrOCSPStatus means an OCSP response whose status is not successful
	// was asked for its signature.
	ErrOCSPStatus = errors.New("ocsp response not successful")
)

// ParseError reports where parsing stopped. Err is one of the package's
// sentinels (ErrMalformed, ErrBadKey, ...), so errors.Is works on it.
type ParseError struct {
	What string // the structure or field, e.g. "certificate: extensions"
	Err  error
}

func (e *ParseError) Error() string { return "pqx509: parse " + e.What + ": " + e.Err.Error() }

// Unwrap returns the sentinel.
func (e *ParseError) Unwrap() error { return e.Err }

func perr(what string, err error) error { return &ParseError{What: what, Err: err} }

func malformed(what string) error { return &ParseError{What: what, Err: ErrMalformed} }

// LintError is returned by CreateCertificate when the certificate it built
// has lint findings; it lists all of them.
type LintError struct {
	Findings []LintFinding
}

func (e *LintError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "pqx509: certificate refused by lint (%d findings)", len(e.Findings))
	for _, f := range e.Findings {
		b.WriteString("; ")
		b.WriteString(f.String())
	}
	return b.String()
}

// InvalidReason says why a certificate was refused during path validation.
type InvalidReason int

const (
	// Expired: the current time is outside the validity period.
	Expired InvalidReason = iota + 1
	// NotAuthorizedToSign: an issuer without basicConstraints cA=TRUE or
	// without keyCertSign.
	NotAuthorizedToSign
	// TooManyIntermediates: an issuer's pathLenConstraint is exceeded.
	TooManyIntermediates
	// CANotAuthorizedForThisName: a name outside an issuer's name
	// constraints.
	CANotAuthorizedForThisName
	// IncompatibleUsage: no requested extended key usage is allowed by
	// every certificate of the chain.
	IncompatibleUsage
	// NameMismatch: the leaf is not valid for the requested DNS name.
	NameMismatch
	// BadSignature: a signature in the chain does not verify, or its
	// algorithm does not match the issuer's key.
	BadSignature
	// UnknownAuthority: no chain to a root.
	UnknownAuthority
)

var reasonNames = map[InvalidReason]string{
	Expired:                    "expired or not yet valid",
	NotAuthorizedToSign:        "issuer not authorized to sign certificates",
	TooManyIntermediates:       "path length constraint exceeded",
	CANotAuthorizedForThisName: "name not permitted by name constraints",
	IncompatibleUsage:          "incompatible extended key usage",
	NameMismatch:               "certificate not valid for the name",
	BadSignature:               "signature does not verify",
	UnknownAuthority:           "no chain to a trusted root",
}

func (r InvalidReason) String() string {
	if s, ok := reasonNames[r]; ok {
		return s
	}
	return fmt.Sprintf("reason(%d)", int(r))
}

// CertificateInvalidError is returned by Verify: which certificate, why.
type CertificateInvalidError struct {
	Cert   *Certificate
	Reason InvalidReason
	Detail string
}

func (e *CertificateInvalidError) Error() string {
	s := "pqx509: certificate invalid: " + e.Reason.String()
	if e.Cert != nil {
		s += " (subject " + e.Cert.Subject.String() + ")"
	}
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}
