package engine

import (
	"github.com/cloudflare/circl/kem"
	"github.com/cloudflare/circl/kem/mlkem/mlkem1024"
	"github.com/cloudflare/circl/kem/mlkem/mlkem768"
	"github.com/cloudflare/circl/kem/xwing"
	"github.com/cloudflare/circl/sign/mldsa/mldsa44"
	"github.com/cloudflare/circl/sign/mldsa/mldsa65"
	"github.com/cloudflare/circl/sign/mldsa/mldsa87"

	"github.com/avonzt/avon/internal/mldsahedge"
	"github.com/avonzt/avon/sdk/kms"
)

// pqKey is a PQ private key derived from an unwrapped seed for one
// operation. The caller calls wipe as soon as the operation is done.
type pqKey struct {
	public []byte
	// signInternal is FIPS 204 ML-DSA.Sign_internal(sk, M', rnd).
	signInternal func(mp []byte, rnd [32]byte) []byte
	kemSK        kem.PrivateKey
	scheme       kem.Scheme
	wipe         func()
}

// derive builds the key of algorithm a from seed, with the encodings
// kms-soft uses: ML-DSA from ξ (FIPS 204 KeyGen_internal), ML-KEM from
// d || z (FIPS 203 KeyGen_internal), X-Wing from its 32-byte seed. The
// caller keeps ownership of seed and zeroizes it.
func derive(a kms.Algorithm, seed []byte) *pqKey {
	k := &pqKey{}
	switch a {
	case kms.MLDSA44:
		var s [mldsa44.SeedSize]byte
		copy(s[:], seed)
		pk, sk := mldsa44.NewKeyFromSeed(&s)
		clear(s[:])
		k.public = pk.Bytes()
		k.signInternal = func(mp []byte, rnd [32]byte) []byte { return mldsahedge.Sign44(sk, mp, rnd) }
		k.wipe = func() { *sk = mldsa44.PrivateKey{} }
	case kms.MLDSA65:
		var s [mldsa65.SeedSize]byte
		copy(s[:], seed)
		pk, sk := mldsa65.NewKeyFromSeed(&s)
		clear(s[:])
		k.public = pk.Bytes()
		k.signInternal = func(mp []byte, rnd [32]byte) []byte { return mldsahedge.Sign65(sk, mp, rnd) }
		k.wipe = func() { *sk = mldsa65.PrivateKey{} }
	case kms.MLDSA87:
		var s [mldsa87.SeedSize]byte
		copy(s[:], seed)
		pk, sk := mldsa87.NewKeyFromSeed(&s)
		clear(s[:])
		k.public = pk.Bytes()
		k.signInternal = func(mp []byte, rnd [32]byte) []byte { return mldsahedge.Sign87(sk, mp, rnd) }
		k.wipe = func() { *sk = mldsa87.PrivateKey{} }
	case kms.MLKEM768:
		pk, sk := mlkem768.NewKeyFromSeed(seed)
		k.public, _ = pk.MarshalBinary()
		k.kemSK, k.scheme = sk, mlkem768.Scheme()
		// circl keeps the decryption key behind an unexported pointer; the
		// struct is reset and the rest left to the garbage collector.
		k.wipe = func() { *sk = mlkem768.PrivateKey{} }
	case kms.MLKEM1024:
		pk, sk := mlkem1024.NewKeyFromSeed(seed)
		k.public, _ = pk.MarshalBinary()
		k.kemSK, k.scheme = sk, mlkem1024.Scheme()
		k.wipe = func() { *sk = mlkem1024.PrivateKey{} }
	case kms.XWing:
		sk, pk := xwing.DeriveKeyPair(seed)
		k.public = make([]byte, xwing.PublicKeySize)
		pk.Pack(k.public)
		k.kemSK, k.scheme = sk, xwing.Scheme()
		k.wipe = func() { *sk = xwing.PrivateKey{} }
	default:
		return nil
	}
	return k
}
