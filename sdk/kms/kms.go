// Package kms defines the key management plugin kind: the interface a KMS
// backend implements (software keystore, PKCS#11 HSM, a cloud KMS), its
// request and response types, and its errors.
//
// Private key material never crosses this interface: callers name a key by
// ID and ask the KMS to sign, decapsulate or decrypt with it. The package does
// no I/O; the gRPC shim lives in kms/kmsrpc and the conformance kit every
// backend must pass in kms/kmstest.
package kms

import (
	"context"
	"time"
)

// Algorithm names a key algorithm. The names are part of the protocol.
type Algorithm string

// Algorithms a KMS may support. A backend reports the ones it implements in
// its plugin info; GenerateKey with any other returns ErrUnsupportedAlgorithm.
const (
	MLDSA44   Algorithm = "ML-DSA-44"   // FIPS 204, pure, with context string
	MLDSA65   Algorithm = "ML-DSA-65"   // FIPS 204; AVON's default leaf signature
	MLDSA87   Algorithm = "ML-DSA-87"   // FIPS 204; default root
	MLKEM768  Algorithm = "ML-KEM-768"  // FIPS 203
	MLKEM1024 Algorithm = "ML-KEM-1024" // FIPS 203
	XWing     Algorithm = "X-Wing"      // ML-KEM-768 + X25519 hybrid KEM
	ECDSAP256 Algorithm = "ECDSA-P256"  // signs SHA-256(message), ASN.1 DER signature
	ECDSAP384 Algorithm = "ECDSA-P384"  // signs SHA-384(message), ASN.1 DER signature
	Ed25519   Algorithm = "Ed25519"     // RFC 8032 pure Ed25519
	AES256    Algorithm = "AES-256"     // AES-256-GCM envelope encryption
)

// Purpose is what a key can be used for; it follows from the algorithm.
type Purpose string

// Key purposes.
const (
	PurposeSign    Purpose = "sign"
	PurposeKEM     Purpose = "kem"
	PurposeEncrypt Purpose = "encrypt"
)

// AllAlgorithms lists every algorithm the protocol names, in a stable order.
var AllAlgorithms = []Algorithm{MLDSA44, MLDSA65, MLDSA87, MLKEM768, MLKEM1024, XWing, ECDSAP256, ECDSAP384, Ed25519, AES256}

// PurposeOf returns the purpose of an algorithm and false if it is unknown.
func PurposeOf(a Algorithm) (Purpose, bool) {
	switch a {
	case MLDSA44, MLDSA65, MLDSA87, ECDSAP256, ECDSAP384, Ed25519:
		return PurposeSign, true
	case MLKEM768, MLKEM1024, XWing:
		return PurposeKEM, true
	case AES256:
		return PurposeEncrypt, true
	}
	return "", false
}

// VersionState is the state of one key version.
type VersionState string

// Version states. Only the primary version of an enabled key signs,
// encrypts and decapsulates new material; older enabled versions verify,
// decrypt and decapsulate only. Destroyed versions have no material left.
const (
	StateEnabled   VersionState = "enabled"
	StateDestroyed VersionState = "destroyed"
)

// KeyVersion describes one version of a key.
type KeyVersion struct {
	Version   int          // 1, 2, ... in creation order
	State     VersionState // enabled or destroyed
	CreatedAt time.Time
	// DestroyedAt is set once State is StateDestroyed.
	DestroyedAt time.Time
	// PublicKey is the raw public key (nil for AES-256 and destroyed versions):
	// ML-DSA and ML-KEM as in FIPS 204/203 encodings, X-Wing as in its
	// specification (1216 bytes), ECDSA as an uncompressed SEC 1 point,
	// Ed25519 as 32 bytes.
	PublicKey []byte
}

// Key is a key's metadata. It never holds private material.
type Key struct {
	ID             string
	Algorithm      Algorithm
	Labels         map[string]string
	Exportable     bool
	PrimaryVersion int
	Versions       []KeyVersion // ascending by Version
	CreatedAt      time.Time
}

// Destroyed reports whether every version of k has been destroyed.
func (k *Key) Destroyed() bool {
	for _, v := range k.Versions {
		if v.State != StateDestroyed {
			return false
		}
	}
	return len(k.Versions) > 0
}

// MaxMessageSize bounds Sign, Verify, Encrypt and Decrypt payloads.
const MaxMessageSize = 16 << 20

// KMS is the interface every key management backend implements.
//
// All methods are safe for concurrent use, honour ctx, and return errors that
// wrap this package's sentinels (or errdef's) so callers on the other side of
// the plugin boundary can match them with errors.Is. A failed call changes
// nothing.
type KMS interface {
	// GenerateKey creates a key with one version, drawing randomness from
	// the host RNG. An empty ID asks the KMS to choose one. ErrKeyExists if
	// the ID is taken (also by a destroyed key: IDs are never reused);
	// ErrUnsupportedAlgorithm if the backend cannot make the algorithm.
	GenerateKey(ctx context.Context, req *GenerateKeyRequest) (*GenerateKeyResponse, error)
	// GetKey returns a key's metadata. ErrKeyNotFound if unknown.
	GetKey(ctx context.Context, req *GetKeyRequest) (*GetKeyResponse, error)
	// ListKeys pages through keys in ID order, destroyed ones included.
	ListKeys(ctx context.Context, req *ListKeysRequest) (*ListKeysResponse, error)
	// PublicKey returns the public key of a version (0: primary).
	// ErrWrongPurpose for AES-256; ErrKeyDestroyed for a destroyed version.
	PublicKey(ctx context.Context, req *PublicKeyRequest) (*PublicKeyResponse, error)
	// Sign signs Message with the primary version of a signing key. ML-DSA
	// signs in pure mode with Context (at most 255 bytes) and hedged
	// randomness; ECDSA and Ed25519 reject a non-empty Context.
	// ErrWrongPurpose for a non-signing key.
	Sign(ctx context.Context, req *SignRequest) (*SignResponse, error)
	// Verify checks a signature against a version (0: primary); any enabled
	// version verifies. A bad signature is Valid=false, not an error.
	Verify(ctx context.Context, req *VerifyRequest) (*VerifyResponse, error)
	// Decapsulate recovers the shared secret from a KEM ciphertext with a
	// version (0: primary). ErrInvalidCiphertext for a ciphertext of the
	// wrong size (ML-KEM's implicit rejection returns a pseudorandom
	// secret for a well-sized but forged one, as FIPS 203 specifies).
	Decapsulate(ctx context.Context, req *DecapsulateRequest) (*DecapsulateResponse, error)
	// Encrypt seals Plaintext with the primary version of an AES-256 key and
	// AAD. The ciphertext is self-describing (it names the key version).
	Encrypt(ctx context.Context, req *EncryptRequest) (*EncryptResponse, error)
	// Decrypt opens a ciphertext made by Encrypt with any enabled version.
	// ErrInvalidCiphertext if it does not authenticate.
	Decrypt(ctx context.Context, req *DecryptRequest) (*DecryptResponse, error)
	// RotateKey adds a new version and makes it primary; older versions
	// stay enabled for verify, decrypt and decapsulate.
	RotateKey(ctx context.Context, req *RotateKeyRequest) (*RotateKeyResponse, error)
	// DestroyKey zeroizes the material of one version (Version > 0) or of
	// all versions (Version 0). The metadata stays as a tombstone.
	// Destroying the primary version of a key with other enabled versions is
	// refused with ErrInvalidArgument: rotate first.
	DestroyKey(ctx context.Context, req *DestroyKeyRequest) (*DestroyKeyResponse, error)
}

// Exporter is an optional capability: exporting the private material of a
// key created with Exportable=true. ErrNotExportable otherwise.
type Exporter interface {
	ExportKey(ctx context.Context, req *ExportKeyRequest) (*ExportKeyResponse, error)
}

// RandomSource is an optional capability: a hardware or otherwise
// independent entropy source the core RNG may mix into its seed.
type RandomSource interface {
	GenerateRandom(ctx context.Context, req *GenerateRandomRequest) (*GenerateRandomResponse, error)
}

// MaxRandomLength bounds GenerateRandomRequest.Length.
const MaxRandomLength = 1 << 16

type (
	GenerateKeyRequest struct {
		ID         string // optional; [A-Za-z0-9._-]{1,128}
		Algorithm  Algorithm
		Labels     map[string]string
		Exportable bool
	}
	GenerateKeyResponse struct{ Key *Key }

	GetKeyRequest  struct{ ID string }
	GetKeyResponse struct{ Key *Key }

	ListKeysRequest struct {
		PageSize  int    // 0: backend default (100); at most 1000
		PageToken string // from a previous response
	}
	ListKeysResponse struct {
		Keys          []*Key
		NextPageToken string // empty on the last page
	}

	PublicKeyRequest struct {
		ID      string
		Version int
	}
	PublicKeyResponse struct {
		Algorithm Algorithm
		Version   int
		PublicKey []byte
	}

	SignRequest struct {
		ID      string
		Message []byte
		Context []byte
	}
	SignResponse struct {
		Signature []byte
		Version   int
	}

	VerifyRequest struct {
		ID        string
		Version   int
		Message   []byte
		Context   []byte
		Signature []byte
	}
	VerifyResponse struct{ Valid bool }

	DecapsulateRequest struct {
		ID         string
		Version    int
		Ciphertext []byte
	}
	DecapsulateResponse struct{ SharedSecret []byte }

	EncryptRequest struct {
		ID        string
		Plaintext []byte
		AAD       []byte
	}
	EncryptResponse struct {
		Ciphertext []byte
		Version    int
	}

	DecryptRequest struct {
		ID         string
		Ciphertext []byte
		AAD        []byte
	}
	DecryptResponse struct{ Plaintext []byte }

	RotateKeyRequest  struct{ ID string }
	RotateKeyResponse struct{ Key *Key }

	DestroyKeyRequest struct {
		ID      string
		Version int
	}
	DestroyKeyResponse struct{ Key *Key }

	ExportKeyRequest struct {
		ID      string
		Version int
	}
	ExportKeyResponse struct {
		Algorithm Algorithm
		Version   int
		// PrivateKey: ML-DSA/ML-KEM/X-Wing seed, ECDSA scalar, Ed25519 seed,
		// AES key. The caller must zeroize it.
		PrivateKey []byte
	}

	GenerateRandomRequest  struct{ Length int }
	GenerateRandomResponse struct{ Random []byte }
)
