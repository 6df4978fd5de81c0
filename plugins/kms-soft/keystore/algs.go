package keystore

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/sha512"
	"fmt"
	"io"
	"math/big"

	"github.com/cloudflare/circl/kem"
	"github.com/cloudflare/circl/kem/mlkem/mlkem1024"
	"github.com/cloudflare/circl/kem/mlkem/mlkem768"
	"github.com/cloudflare/circl/kem/xwing"
	"github.com/cloudflare/circl/sign/mldsa/mldsa44"
	"github.com/cloudflare/circl/sign/mldsa/mldsa65"
	"github.com/cloudflare/circl/sign/mldsa/mldsa87"

	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/kms"
)

// material is the parsed, in-memory form of one key version's secret. It is
// built from the stored seed on open and on generation, and cleared on
// destroy and Close.
type material struct {
	seed []byte // what is stored; zeroized by clear()

	signer interface {
		sign(rand io.Reader, msg, ctx []byte) ([]byte, error)
	}
	verifier func(msg, ctx, sig []byte) bool
	kemSK    kem.PrivateKey
	kemS     kem.Scheme
	aesKey   []byte // alias of seed for AES-256
	public   []byte
}

func (m *material) clear() {
	clear(m.seed)
	m.signer, m.verifier, m.kemSK, m.aesKey = nil, nil, nil, nil
}

// seedSize is how many random bytes make a key of each algorithm.
func seedSize(a kms.Algorithm) int {
	switch a {
	case kms.MLDSA44, kms.MLDSA65, kms.MLDSA87:
		return 32 // FIPS 204 ξ
	case kms.MLKEM768, kms.MLKEM1024:
		return 64 // FIPS 203 d || z
	case kms.XWing:
		return xwing.SeedSize
	case kms.ECDSAP256:
		return 32
	case kms.ECDSAP384:
		return 48
	case kms.Ed25519:
		return ed25519.SeedSize
	case kms.AES256:
		return 32
	}
	return 0
}

// newSeed draws a seed for a from rnd. ECDSA scalars are drawn by rejection
// sampling until they lie in [1, n-1].
func newSeed(a kms.Algorithm, rnd io.Reader) ([]byte, error) {
	n := seedSize(a)
	if n == 0 {
		return nil, fmt.Errorf("algorithm %q: %w", a, kms.ErrUnsupportedAlgorithm)
	}
	seed := make([]byte, n)
	for tries := 0; tries < 64; tries++ {
		if _, err := io.ReadFull(rnd, seed); err != nil {
			clear(seed)
			return nil, fmt.Errorf("draw key material: %w", err)
		}
		if c := curveOf(a); c != nil {
			k := new(big.Int).SetBytes(seed)
			if k.Sign() == 0 || k.Cmp(c.Params().N) >= 0 {
				continue
			}
		}
		return seed, nil
	}
	clear(seed)
	return nil, fmt.Errorf("draw key material: rejection sampling did not terminate: %w", errdef.ErrInternal)
}

func curveOf(a kms.Algorithm) elliptic.Curve {
	switch a {
	case kms.ECDSAP256:
		return elliptic.P256()
	case kms.ECDSAP384:
		return elliptic.P384()
	}
	return nil
}

type mldsaSigner struct {
	signTo func(msg, ctx []byte, sig []byte) error
	size   int
}

// sign signs in hedged mode. circl draws the 32-byte FIPS 204 rnd from the
// operating system's generator (its API takes no reader); the key itself
// comes from the host RNG. See FORMAT.md.
func (s mldsaSigner) sign(_ io.Reader, msg, ctx []byte) ([]byte, error) {
	sig := make([]byte, s.size)
	if err := s.signTo(msg, ctx, sig); err != nil {
		return nil, err
	}
	return sig, nil
}

type ecdsaSigner struct {
	key  *ecdsa.PrivateKey
	hash func([]byte) []byte
}

func (s ecdsaSigner) sign(rnd io.Reader, msg, ctx []byte) ([]byte, error) {
	return ecdsa.SignASN1(rnd, s.key, s.hash(msg))
}

type ed25519Signer struct{ key ed25519.PrivateKey }

func (s ed25519Signer) sign(_ io.Reader, msg, _ []byte) ([]byte, error) {
	return ed25519.Sign(s.key, msg), nil
}

func sha256Sum(b []byte) []byte { h := sha256.Sum256(b); return h[:] }
func sha384Sum(b []byte) []byte { h := sha512.Sum384(b); return h[:] }

// parse builds the in-memory material from a seed.
func parse(a kms.Algorithm, seed []byte) (*material, error) {
	if len(seed) != seedSize(a) {
		return nil, fmt.Errorf("%s key material is %d bytes, want %d: %w", a, len(seed), seedSize(a), ErrTampered)
	}
	m := &material{seed: seed}
	switch a {
	case kms.MLDSA44:
		var s [mldsa44.SeedSize]byte
		copy(s[:], seed)
		pk, sk := mldsa44.NewKeyFromSeed(&s)
		clear(s[:])
		m.public, _ = pk.MarshalBinary()
		m.signer = mldsaSigner{size: mldsa44.SignatureSize, signTo: func(msg, ctx, sig []byte) error { return mldsa44.SignTo(sk, msg, ctx, true, sig) }}
		m.verifier = func(msg, ctx, sig []byte) bool { return mldsa44.Verify(pk, msg, ctx, sig) }
	case kms.MLDSA65:
		var s [mldsa65.SeedSize]byte
		copy(s[:], seed)
		pk, sk := mldsa65.NewKeyFromSeed(&s)
		clear(s[:])
		m.public, _ = pk.MarshalBinary()
		m.signer = mldsaSigner{size: mldsa65.SignatureSize, signTo: func(msg, ctx, sig []byte) error { return mldsa65.SignTo(sk, msg, ctx, true, sig) }}
		m.verifier = func(msg, ctx, sig []byte) bool { return mldsa65.Verify(pk, msg, ctx, sig) }
	case kms.MLDSA87:
		var s [mldsa87.SeedSize]byte
		copy(s[:], seed)
		pk, sk := mldsa87.NewKeyFromSeed(&s)
		clear(s[:])
		m.public, _ = pk.MarshalBinary()
		m.signer = mldsaSigner{size: mldsa87.SignatureSize, signTo: func(msg, ctx, sig []byte) error { return mldsa87.SignTo(sk, msg, ctx, true, sig) }}
		m.verifier = func(msg, ctx, sig []byte) bool { return mldsa87.Verify(pk, msg, ctx, sig) }
	case kms.MLKEM768, kms.MLKEM1024, kms.XWing:
		var sch kem.Scheme
		switch a {
		case kms.MLKEM768:
			sch = mlkem768.Scheme()
		case kms.MLKEM1024:
			sch = mlkem1024.Scheme()
		default:
			sch = xwing.Scheme()
		}
		pk, sk := sch.DeriveKeyPair(seed)
		m.public, _ = pk.MarshalBinary()
		m.kemSK, m.kemS = sk, sch
	case kms.ECDSAP256, kms.ECDSAP384:
		key, err := ecdsa.ParseRawPrivateKey(curveOf(a), seed)
		if err != nil {
			return nil, fmt.Errorf("%s key material: %v: %w", a, err, ErrTampered)
		}
		pub, err := key.PublicKey.Bytes()
		if err != nil {
			return nil, fmt.Errorf("%s public key: %w", a, err)
		}
		m.public = pub
		h := sha256Sum
		if a == kms.ECDSAP384 {
			h = sha384Sum
		}
		m.signer = ecdsaSigner{key: key, hash: h}
		pubKey := &key.PublicKey
		m.verifier = func(msg, _, sig []byte) bool { return ecdsa.VerifyASN1(pubKey, h(msg), sig) }
	case kms.Ed25519:
		key := ed25519.NewKeyFromSeed(seed)
		pub := key.Public().(ed25519.PublicKey)
		m.public = []byte(pub)
		m.signer = ed25519Signer{key: key}
		m.verifier = func(msg, _, sig []byte) bool { return ed25519.Verify(pub, msg, sig) }
	case kms.AES256:
		m.aesKey = seed
	default:
		return nil, fmt.Errorf("algorithm %q: %w", a, kms.ErrUnsupportedAlgorithm)
	}
	return m, nil
}
