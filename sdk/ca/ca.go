// Package ca defines the certificate authority plugin kind: issuing X.509
// certificates (ML-DSA per RFC 9881, or classical issuers) by profile,
// revoking them, and publishing status as CRLs and OCSP responses. A CA
// plugin signs through the KMS plugin it is wired to (host.KMS) and never
// holds issuer private keys itself.
//
// The package does no I/O; the gRPC shim lives in ca/carpc.
package ca

import (
	"context"
	"time"
)

// CA is the interface every CA plugin implements. Methods are safe for
// concurrent use and return errors wrapping this package's sentinels.
type CA interface {
	// Issue signs a certificate for a CSR (preferred: proves possession) or
	// a bare public key, under a profile. ErrUnknownProfile,
	// ErrUnknownIssuer, ErrBadCSR, or ErrPolicyViolation when the request
	// asks for more than the profile allows.
	Issue(ctx context.Context, req *IssueRequest) (*IssueResponse, error)
	// Revoke marks a certificate revoked. ErrCertificateNotFound,
	// ErrAlreadyRevoked.
	Revoke(ctx context.Context, req *RevokeRequest) (*RevokeResponse, error)
	// GetCertificate returns a certificate and its status by serial.
	GetCertificate(ctx context.Context, req *GetCertificateRequest) (*GetCertificateResponse, error)
	// ListIssuers returns the issuers this CA signs with.
	ListIssuers(ctx context.Context, req *ListIssuersRequest) (*ListIssuersResponse, error)
	// CRL returns the current full CRL of an issuer ("" = default).
	CRL(ctx context.Context, req *CRLRequest) (*CRLResponse, error)
}

// OCSPResponder is an optional capability: answering DER OCSP requests.
type OCSPResponder interface {
	RespondOCSP(ctx context.Context, req *OCSPRequest) (*OCSPResponse, error)
}

// Status is a certificate's revocation status.
type Status string

// Certificate statuses.
const (
	StatusGood    Status = "good"
	StatusRevoked Status = "revoked"
)

type (
	IssueRequest struct {
		CSR []byte // PKCS#10 DER; or PublicKey + PublicKeyAlgorithm
		// PublicKey is the raw public key (as kms.KeyVersion.PublicKey)
		// when there is no CSR, for keys that cannot sign a CSR (KEM keys).
		PublicKey          []byte
		PublicKeyAlgorithm string
		Profile            string // agent, gateway, server, client, ...
		Issuer             string // "" = the profile's default issuer
		CommonName         string
		DNSNames           []string
		IPAddresses        []string
		URIs               []string
		Lifetime           time.Duration // 0 = the profile's default
	}
	IssueResponse struct {
		Certificate []byte   // DER
		Chain       [][]byte // DER, issuer first, up to (excluding) the root
		Serial      string   // lowercase hex
		NotBefore   time.Time
		NotAfter    time.Time
	}

	RevokeRequest struct {
		Serial string
		Reason int // RFC 5280 CRLReason code
		Time   time.Time
	}
	RevokeResponse struct{}

	GetCertificateRequest  struct{ Serial string }
	GetCertificateResponse struct {
		Certificate      []byte
		Status           Status
		RevokedAt        time.Time
		RevocationReason int
	}

	ListIssuersRequest  struct{}
	ListIssuersResponse struct{ Issuers []Issuer }

	CRLRequest  struct{ Issuer string }
	CRLResponse struct {
		CRL        []byte // DER
		ThisUpdate time.Time
		NextUpdate time.Time
	}

	OCSPRequest  struct{ Request []byte }
	OCSPResponse struct{ Response []byte }
)

// Issuer describes one issuing certificate.
type Issuer struct {
	Name        string
	Algorithm   string // e.g. ML-DSA-65, ECDSA-P384
	Certificate []byte // DER
	Default     bool
}
