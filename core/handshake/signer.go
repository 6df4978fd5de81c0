package handshake

import (
	"fmt"
	"io"
	"sync"

	"github.com/cloudflare/circl/sign/mldsa/mldsa65"

	"github.com/avonzt/avon/internal/mldsahedge"
)

// Signer makes the handshake signatures (sig_r on the gateway, sig_i on the
// agent) so that the private key can stay in a KMS.
type Signer interface {
	// Public returns the ML-DSA-65 public key (PublicKeyLen bytes). It must
	// return the same key for the Signer's whole life.
	Public() []byte
	// Sign returns a pure ML-DSA-65 signature (FIPS 204, SignatureLen bytes)
	// over msg with the given context string (at most 255 bytes). It must be
	// safe for concurrent use; hedged (randomized) signing is expected.
	Sign(msg, context []byte) ([]byte, error)
}

// MLDSA65Signer is a Signer over an in-memory circl ML-DSA-65 key: the
// agent's key file and tests. Signing is hedged: FIPS 204's 32-byte rnd is
// drawn from the given reader (internal/mldsahedge), so a deterministic
// reader gives reproducible signatures for test vectors.
//
// Signatures are made concurrently (the gateway's handshake workers sign
// at once, one CPU each): only drawing the randomness is serialized, since
// a reader need not be safe for concurrent use, and circl only reads the
// expanded key while signing.
type MLDSA65Signer struct {
	mu     sync.RWMutex // guards sk: Sign holds it shared, Close exclusively
	sk     *mldsa65.PrivateKey
	pub    []byte
	randMu sync.Mutex // guards rand
	rand   io.Reader
}

// NewMLDSA65Signer returns a Signer for sk drawing signing randomness from
// rnd. It fails when the hedged-signing self-test fails (fail closed).
func NewMLDSA65Signer(sk *mldsa65.PrivateKey, rnd io.Reader) (*MLDSA65Signer, error) {
	if sk == nil || rnd == nil {
		return nil, fmt.Errorf("handshake: signer needs a key and a random source: %w", ErrConfig)
	}
	if err := mldsahedge.Ready(); err != nil {
		return nil, fmt.Errorf("handshake: %v: %w", err, ErrSigner)
	}
	pub, err := sk.Public().(*mldsa65.PublicKey).MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("handshake: public key: %v: %w", err, ErrConfig)
	}
	return &MLDSA65Signer{sk: sk, pub: pub, rand: rnd}, nil
}

// Public returns the public key.
func (s *MLDSA65Signer) Public() []byte { return s.pub }

// Sign signs msg with context ctx.
func (s *MLDSA65Signer) Sign(msg, ctx []byte) ([]byte, error) {
	if len(ctx) > 255 {
		return nil, fmt.Errorf("handshake: signing context of %d bytes: %w", len(ctx), ErrSigner)
	}
	var rnd [32]byte
	defer clear(rnd[:])
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.sk == nil {
		return nil, fmt.Errorf("handshake: signer closed: %w", ErrSigner)
	}
	s.randMu.Lock()
	_, err := io.ReadFull(s.rand, rnd[:])
	s.randMu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("handshake: signing randomness: %v: %w", err, ErrRandom)
	}
	return mldsahedge.Sign65(s.sk, mldsahedge.MessagePrime(msg, ctx), rnd), nil
}

// Close clears the private key (best effort: circl's key is a value type,
// overwritten with zeros) and makes Sign fail.
func (s *MLDSA65Signer) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sk != nil {
		*s.sk = mldsa65.PrivateKey{}
		s.sk = nil
	}
}

// parseMLDSA65 parses an ML-DSA-65 public key.
func parseMLDSA65(raw []byte) (*mldsa65.PublicKey, error) {
	var pk mldsa65.PublicKey
	if len(raw) != PublicKeyLen || pk.UnmarshalBinary(raw) != nil {
		return nil, fmt.Errorf("handshake: ml-dsa-65 public key of %d bytes", len(raw))
	}
	return &pk, nil
}

// signChecked runs the Signer and checks the length of what it returned.
func signChecked(s Signer, msg []byte, ctx string) ([]byte, error) {
	sig, err := s.Sign(msg, []byte(ctx))
	if err != nil {
		return nil, fmt.Errorf("handshake: sign: %w: %w", ErrSigner, err)
	}
	if len(sig) != SignatureLen {
		return nil, fmt.Errorf("handshake: signer returned %d bytes, want %d: %w", len(sig), SignatureLen, ErrSigner)
	}
	return sig, nil
}

var _ Signer = (*MLDSA65Signer)(nil)

func verifyMLDSA65(pk *mldsa65.PublicKey, msg []byte, ctx string, sig []byte) bool {
	return len(sig) == SignatureLen && mldsa65.Verify(pk, msg, []byte(ctx), sig)
}

// mldsaKeyPool holds parsed-key structs for verifyMLDSA65Raw. circl's
// PublicKey is a value of about 8 KB (t1 and its packing, tr) plus a
// pointer to the 30 KB expanded matrix, which Unpack always allocates
// anew; the struct itself can be reused. A key goes back zeroed (every
// field, so nothing of one peer's key reaches the next use, and the
// matrix is released).
var mldsaKeyPool = sync.Pool{New: func() any { return new(mldsa65.PublicKey) }}

// verifyMLDSA65Raw verifies sig with the ML-DSA-65 key encoded in raw,
// parsed for this one verification (the initiator's leaf key, which
// recurs only when its agent reconnects). An error means raw is not a key.
func verifyMLDSA65Raw(raw, msg []byte, ctx string, sig []byte) (bool, error) {
	if len(raw) != PublicKeyLen {
		return false, fmt.Errorf("handshake: ml-dsa-65 public key of %d bytes", len(raw))
	}
	pk := mldsaKeyPool.Get().(*mldsa65.PublicKey)
	defer func() {
		*pk = mldsa65.PublicKey{}
		mldsaKeyPool.Put(pk)
	}()
	if err := pk.UnmarshalBinary(raw); err != nil {
		return false, fmt.Errorf("handshake: ml-dsa-65 public key of %d bytes", len(raw))
	}
	return verifyMLDSA65(pk, msg, ctx, sig), nil
}
