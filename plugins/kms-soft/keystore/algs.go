package keystore

import (
	"crypto/aes"
	"crypto/cipher"
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

	"github.com/avonzt/avon/internal/mldsahedge"
	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/kms"
)

// material is the in-memory form of one key version's secret: the stored
// seed and what was parsed from it, cached so that operations do not
// re-derive keys. It is immutable once built, until clear, which runs only
// when no operation can reach it any more (see Keystore).
type material struct {
	seed   []byte // the stored form (exported by ExportKey)
	public []byte // raw public key, nil for AES-256; shared, read-only

	// Signing keys.
	sign   func(rnd io.Reader, msg, ctx []byte) ([]byte, error)
	verify func(msg, ctx, sig []byte) bool
	// KEM keys.
	kemScheme kem.Scheme
	kemSK     kem.PrivateKey
	// AES-256 keys.
	aead cipher.AEAD

	// wipe zeroizes the parsed private key where the library's types allow it.
	wipe func()
}

// clear zeroizes the seed and, as far as the libraries allow, the parsed
// key (see FORMAT.md, "Zeroization").
func (m *material) clear() {
	clear(m.seed)
	if m.wipe != nil {
		m.wipe()
	}
	m.sign, m.verify, m.kemSK, m.aead, m.wipe = nil, nil, nil, nil, nil
}

// seedSize is the size of the stored private material of each algorithm
// (0: unknown algorithm).
func seedSize(a kms.Algorithm) int {
	switch a {
	case kms.MLDSA44, kms.MLDSA65, kms.MLDSA87:
		return 32 // FIPS 204 ξ
	case kms.MLKEM768, kms.MLKEM1024:
		return 64 // FIPS 203 d || z
	case kms.XWing:
		return xwing.SeedSize // 32
	case kms.ECDSAP256:
		return 32 // the scalar
	case kms.ECDSAP384:
		return 48
	case kms.Ed25519:
		return ed25519.SeedSize // 32
	case kms.AES256:
		return 32
	}
	return 0
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

// newSeed draws the private material of a key of algorithm a from r. ECDSA
// scalars are drawn by rejection sampling until they lie in [1, n-1]
// (FIPS 186-5 A.4.2): crypto/ecdsa.GenerateKey ignores its reader since Go
// 1.26, so the keystore makes the scalar itself and loads it with
// ecdsa.ParseRawPrivateKey.
func newSeed(a kms.Algorithm, r io.Reader) ([]byte, error) {
	n := seedSize(a)
	if n == 0 {
		return nil, fmt.Errorf("algorithm %q: %w", a, kms.ErrUnsupportedAlgorithm)
	}
	seed := make([]byte, n)
	c := curveOf(a)
	// For P-256 and P-384 a draw is rejected with probability < 2^-32; 64
	// rejections in a row mean a broken generator.
	for range 64 {
		if _, err := io.ReadFull(r, seed); err != nil {
			clear(seed)
			return nil, fmt.Errorf("draw key material: %w", err)
		}
		if c == nil {
			return seed, nil
		}
		k := new(big.Int).SetBytes(seed)
		ok := k.Sign() > 0 && k.Cmp(c.Params().N) < 0
		clear(k.Bits())
		if ok {
			return seed, nil
		}
	}
	clear(seed)
	return nil, fmt.Errorf("draw key material: 64 ECDSA scalars out of range: %w", errdef.ErrInternal)
}

func sha256Sum(b []byte) []byte { h := sha256.Sum256(b); return h[:] }
func sha384Sum(b []byte) []byte { h := sha512.Sum384(b); return h[:] }

func drawRnd(r io.Reader) ([32]byte, error) {
	var rnd [32]byte
	_, err := io.ReadFull(r, rnd[:])
	return rnd, err
}

// parse builds the material of algorithm a from seed, taking ownership of
// seed (it is cleared on error).
func parse(a kms.Algorithm, seed []byte) (m *material, err error) {
	defer func() {
		if err != nil {
			clear(seed)
		}
	}()
	if n := seedSize(a); n == 0 {
		return nil, fmt.Errorf("algorithm %q: %w", a, kms.ErrUnsupportedAlgorithm)
	} else if len(seed) != n {
		return nil, fmt.Errorf("%s key material is %d bytes, want %d", a, len(seed), n)
	}
	m = &material{seed: seed}
	switch a {
	case kms.MLDSA44:
		var s [mldsa44.SeedSize]byte
		copy(s[:], seed)
		pk, sk := mldsa44.NewKeyFromSeed(&s)
		clear(s[:])
		m.public = pk.Bytes()
		m.sign = func(r io.Reader, msg, ctx []byte) ([]byte, error) {
			if err := mldsahedge.Ready(); err != nil {
				return nil, err
			}
			rnd, err := drawRnd(r)
			if err != nil {
				return nil, err
			}
			defer clear(rnd[:])
			return mldsahedge.Sign44(sk, mldsahedge.MessagePrime(msg, ctx), rnd), nil
		}
		m.verify = func(msg, ctx, sig []byte) bool { return mldsa44.Verify(pk, msg, ctx, sig) }
		m.wipe = func() { *sk = mldsa44.PrivateKey{} }
	case kms.MLDSA65:
		var s [mldsa65.SeedSize]byte
		copy(s[:], seed)
		pk, sk := mldsa65.NewKeyFromSeed(&s)
		clear(s[:])
		m.public = pk.Bytes()
		m.sign = func(r io.Reader, msg, ctx []byte) ([]byte, error) {
			if err := mldsahedge.Ready(); err != nil {
				return nil, err
			}
			rnd, err := drawRnd(r)
			if err != nil {
				return nil, err
			}
			defer clear(rnd[:])
			return mldsahedge.Sign65(sk, mldsahedge.MessagePrime(msg, ctx), rnd), nil
		}
		m.verify = func(msg, ctx, sig []byte) bool { return mldsa65.Verify(pk, msg, ctx, sig) }
		m.wipe = func() { *sk = mldsa65.PrivateKey{} }
	case kms.MLDSA87:
		var s [mldsa87.SeedSize]byte
		copy(s[:], seed)
		pk, sk := mldsa87.NewKeyFromSeed(&s)
		clear(s[:])
		m.public = pk.Bytes()
		m.sign = func(r io.Reader, msg, ctx []byte) ([]byte, error) {
			if err := mldsahedge.Ready(); err != nil {
				return nil, err
			}
			rnd, err := drawRnd(r)
			if err != nil {
				return nil, err
			}
			defer clear(rnd[:])
			return mldsahedge.Sign87(sk, mldsahedge.MessagePrime(msg, ctx), rnd), nil
		}
		m.verify = func(msg, ctx, sig []byte) bool { return mldsa87.Verify(pk, msg, ctx, sig) }
		m.wipe = func() { *sk = mldsa87.PrivateKey{} }
	case kms.MLKEM768:
		pk, sk := mlkem768.NewKeyFromSeed(seed)
		m.public, _ = pk.MarshalBinary()
		m.kemScheme, m.kemSK = mlkem768.Scheme(), sk
		// circl keeps the decryption key behind an unexported pointer; the
		// struct is reset and the rest left to the garbage collector.
		m.wipe = func() { *sk = mlkem768.PrivateKey{} }
	case kms.MLKEM1024:
		pk, sk := mlkem1024.NewKeyFromSeed(seed)
		m.public, _ = pk.MarshalBinary()
		m.kemScheme, m.kemSK = mlkem1024.Scheme(), sk
		m.wipe = func() { *sk = mlkem1024.PrivateKey{} }
	case kms.XWing:
		sk, pk := xwing.DeriveKeyPair(seed)
		m.public = make([]byte, xwing.PublicKeySize)
		pk.Pack(m.public)
		m.kemScheme, m.kemSK = xwing.Scheme(), sk
		m.wipe = func() { *sk = xwing.PrivateKey{} }
	case kms.ECDSAP256, kms.ECDSAP384:
		key, err := ecdsa.ParseRawPrivateKey(curveOf(a), seed)
		if err != nil {
			return nil, fmt.Errorf("%s key material: %v", a, err)
		}
		if m.public, err = key.PublicKey.Bytes(); err != nil {
			return nil, fmt.Errorf("%s public key: %v", a, err)
		}
		h := sha256Sum
		if a == kms.ECDSAP384 {
			h = sha384Sum
		}
		// Go 1.26 ignores the reader given to SignASN1 (unless
		// GODEBUG=cryptocustomrand=1) and hedges the nonce itself: an
		// HMAC_DRBG over fresh system randomness, the private key and the
		// digest (draft-irtf-cfrg-det-sigs-with-noise). See FORMAT.md.
		m.sign = func(r io.Reader, msg, _ []byte) ([]byte, error) { return ecdsa.SignASN1(r, key, h(msg)) }
		pub := &key.PublicKey
		m.verify = func(msg, _, sig []byte) bool { return ecdsa.VerifyASN1(pub, h(msg), sig) }
		m.wipe = func() { clear(key.D.Bits()) }
	case kms.Ed25519:
		key := ed25519.NewKeyFromSeed(seed)
		pub := append([]byte(nil), key[32:]...)
		m.public = pub
		m.sign = func(_ io.Reader, msg, _ []byte) ([]byte, error) { return ed25519.Sign(key, msg), nil }
		m.verify = func(msg, _, sig []byte) bool { return ed25519.Verify(pub, msg, sig) }
		m.wipe = func() { clear(key) }
	case kms.AES256:
		block, err := aes.NewCipher(seed)
		if err != nil {
			return nil, err
		}
		if m.aead, err = cipher.NewGCM(block); err != nil {
			return nil, err
		}
	}
	return m, nil
}
