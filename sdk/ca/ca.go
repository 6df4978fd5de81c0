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

// CertificateLister is an optional capability: listing the certificates a
// CA issued, ordered by serial, in pages.
type CertificateLister interface {
	// ListCertificates returns up to Limit certificates with a serial after
	// After that pass the filters, and Next: the serial to pass as After
	// for the next page ("" when there is none). ErrUnknownIssuer when
	// the Issuer filter names no issuer.
	ListCertificates(ctx context.Context, req *ListCertificatesRequest) (*ListCertificatesResponse, error)
}

// Rotator is an optional capability: replacing an issuing CA by a new
// generation with a fresh key.
type Rotator interface {
	// RotateIssuer makes the next generation of an issuing (non-root)
	// issuer: a new key in the named KMS plugin, a certificate signed by
	// the same parent, and issuance switched to it. Earlier generations
	// stay loaded to sign CRLs and OCSP responses for what they issued.
	// ErrUnknownIssuer; ErrUnknownKMS naming the wired KMS plugins;
	// ErrPolicyViolation for an algorithm the issuer may not use;
	// errdef.ErrNotImplemented for a root; ErrNotInitialized.
	RotateIssuer(ctx context.Context, req *RotateRequest) (*RotateResponse, error)
}

// OnceIssuer is an optional capability (ca protocol minor 6): issuing at
// most one certificate under a caller's key, such as an ACME order, without
// a separate claim write before issuing.
type OnceIssuer interface {
	// IssueOnce is Issue under Key. The CA records the key with the
	// certificate, create-only, in the transaction that records the
	// issuance and its audit event, so of the requests under one key
	// exactly one certificate is recorded and handed out. A request whose
	// key is already recorded records nothing: with the same request as
	// the recorded one it gets that certificate again (Replayed), so a
	// caller that lost the answer, or crashed before storing it, can ask
	// again; with another request, ErrAlreadyIssued. Such a request, like
	// each of several under one key at once but the first recorded, may
	// have signed a certificate: it is never stored, audited or returned.
	// Otherwise the errors of Issue; a CA whose storage cannot record the
	// key in the issuance's transaction answers errdef.ErrNotImplemented,
	// having issued nothing.
	IssueOnce(ctx context.Context, req *IssueOnceRequest) (*IssueOnceResponse, error)
}

// Initializer is an optional capability of a CA configured to start
// without a hierarchy (an operator ceremony creates it).
type Initializer interface {
	// Initialize creates the root and issuing CAs with keys in the named
	// KMS plugin. ErrAlreadyInitialized when there is a hierarchy;
	// ErrUnknownKMS.
	Initialize(ctx context.Context, req *InitializeRequest) (*InitializeResponse, error)
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

	IssueOnceRequest struct {
		// Key names the issuance: any non-empty string of at most
		// MaxOnceKey bytes, unique to what it stands for (e.g.
		// "acme-order/<id>").
		Key     string
		Request IssueRequest
	}
	IssueOnceResponse struct {
		Issued IssueResponse
		// Replayed: the certificate was recorded under Key by an
		// earlier request; nothing was signed now.
		Replayed bool
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

	ListCertificatesRequest struct {
		After   string // serial (hex); the page starts after it
		Limit   int    // 0 = DefaultListLimit; at most MaxListLimit
		Status  Status // "" = any
		Profile string // "" = any
		Issuer  string // "" = any; an issuer name as ListIssuers gives it
	}
	ListCertificatesResponse struct {
		Certificates []CertificateInfo
		Next         string // "" when done; else the After of the next page
	}

	RotateRequest struct {
		Issuer    string // "" = "issuing"
		KMS       string // name of a wired kms plugin; "" = the default
		Algorithm string // "" = the current generation's
	}
	RotateResponse struct {
		Issuer      string // the new generation's name as ListIssuers gives it
		Generation  int
		Serial      string // of the new issuer certificate
		KMS         string
		Algorithm   string
		NotAfter    time.Time
		Certificate []byte // DER
	}

	InitializeRequest struct {
		KMS string // name of a wired kms plugin; "" = the default
	}
	InitializeResponse struct {
		Root        []byte // DER
		RootSHA256  string // lowercase hex SHA-256 of Root
		RootSubject string
		Issuers     []Issuer
	}
)

// MaxOnceKey is the longest IssueOnceRequest.Key.
const MaxOnceKey = 1024

// Page sizes of ListCertificates.
const (
	DefaultListLimit = 100
	MaxListLimit     = 1000
)

// CertificateInfo is one certificate in a listing.
type CertificateInfo struct {
	Serial    string // lowercase hex
	Subject   string // common name
	SANs      []string
	Profile   string
	Issuer    string // the issuing generation's name ("issuing", "issuing.2")
	Status    Status
	NotBefore time.Time
	NotAfter  time.Time
	RevokedAt time.Time
	Reason    int
}

// Issuer describes one issuing certificate. A rotated issuer has several
// generations: the active one is named by the issuer's name ("issuing"),
// the others by name and generation ("issuing.1"); every Name passes back
// to CRL and Issue as it is.
type Issuer struct {
	Name        string
	Algorithm   string // e.g. ML-DSA-65, ECDSA-P384
	Certificate []byte // DER
	Default     bool
	Family      string // the name without a generation ("issuing"); "" from older plugins
	Generation  int    // 1 for the first; 0 from older plugins
	Active      bool   // issues new certificates; false: CRLs and OCSP only
	KMS         string // the wired kms plugin holding the key; "" = the default
	// Chain is the issuer's own chain as IssueResponse.Chain gives it:
	// its certificate first, up to (excluding) its root. Empty from
	// older plugins.
	Chain [][]byte
	// AlternateChains are other chains for the issuer's key, each in the
	// form of Chain: e.g. a cross-certificate of the issuer under another
	// root. A certificate the issuer signed chains through any of them;
	// RFC 8555 serves them as alternate chains. Empty when there is none.
	AlternateChains [][][]byte
}
