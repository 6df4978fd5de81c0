// Package pqc defines the algorithm plugin kind: a plugin that adds signature
// or KEM algorithms by name and OID, used where the operator configures
// algorithm agility (for example an SLH-DSA root for the CA).
//
// Operations are stateless and take key material as arguments: the caller
// keeps private keys wrapped (in a KMS) and unwraps them for one operation.
// Implementations must draw all randomness from the host RNG and must not
// keep copies of the private keys they are handed. The package does no I/O;
// the gRPC shim lives in pqc/pqcrpc and the conformance kit in pqc/pqctest.
package pqc

import "context"

// Type is the type of an algorithm.
type Type string

// Algorithm types.
const (
	TypeSignature Type = "signature"
	TypeKEM       Type = "kem"
)

// Algorithm describes one algorithm a provider offers. Sizes are exact for
// fixed-size schemes; 0 means variable.
type Algorithm struct {
	Name             string // unique within the provider, e.g. "SLH-DSA-SHA2-128s"
	OID              string // dotted decimal, e.g. "2.16.840.1.101.3.4.3.20"
	Type             Type
	PublicKeySize    int
	PrivateKeySize   int
	SignatureSize    int // signatures only
	CiphertextSize   int // KEMs only
	SharedSecretSize int // KEMs only
}

// MaxContextSize bounds a signature context string (FIPS 204/205: 255).
const MaxContextSize = 255

// MaxMessageSize bounds a message to sign or verify.
const MaxMessageSize = 16 << 20

// Provider is the interface every pqc plugin implements. All methods are safe
// for concurrent use and return errors wrapping this package's sentinels.
type Provider interface {
	// ListAlgorithms returns every algorithm offered, in a stable order.
	ListAlgorithms(ctx context.Context, req *ListAlgorithmsRequest) (*ListAlgorithmsResponse, error)
	// GenerateKey makes a key pair with randomness from the host RNG.
	// ErrUnknownAlgorithm for a name not listed.
	GenerateKey(ctx context.Context, req *GenerateKeyRequest) (*GenerateKeyResponse, error)
	// Sign signs Message with PrivateKey (pure mode, with Context).
	// ErrInvalidKey for a malformed key, ErrWrongType for a KEM algorithm.
	Sign(ctx context.Context, req *SignRequest) (*SignResponse, error)
	// Verify checks a signature. A bad signature is Valid=false, not an
	// error; a malformed public key is ErrInvalidKey.
	Verify(ctx context.Context, req *VerifyRequest) (*VerifyResponse, error)
}

// KEM is the optional capability of providers that offer KEM algorithms.
type KEM interface {
	Encapsulate(ctx context.Context, req *EncapsulateRequest) (*EncapsulateResponse, error)
	Decapsulate(ctx context.Context, req *DecapsulateRequest) (*DecapsulateResponse, error)
}

type (
	ListAlgorithmsRequest  struct{}
	ListAlgorithmsResponse struct{ Algorithms []Algorithm }

	GenerateKeyRequest  struct{ Algorithm string }
	GenerateKeyResponse struct {
		PublicKey  []byte
		PrivateKey []byte // the caller must wrap or zeroize it
	}

	SignRequest struct {
		Algorithm  string
		PrivateKey []byte
		Message    []byte
		Context    []byte
	}
	SignResponse struct{ Signature []byte }

	VerifyRequest struct {
		Algorithm string
		PublicKey []byte
		Message   []byte
		Context   []byte
		Signature []byte
	}
	VerifyResponse struct{ Valid bool }

	EncapsulateRequest struct {
		Algorithm string
		PublicKey []byte
	}
	EncapsulateResponse struct {
		Ciphertext   []byte
		SharedSecret []byte
	}

	DecapsulateRequest struct {
		Algorithm  string
		PrivateKey []byte
		Ciphertext []byte
	}
	DecapsulateResponse struct{ SharedSecret []byte }
)
