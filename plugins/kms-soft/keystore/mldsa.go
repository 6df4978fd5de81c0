package keystore

import (
	"bytes"
	"fmt"
	"sync"
	_ "unsafe" // go:linkname

	"github.com/cloudflare/circl/sign/mldsa/mldsa44"
	"github.com/cloudflare/circl/sign/mldsa/mldsa65"
	"github.com/cloudflare/circl/sign/mldsa/mldsa87"

	"github.com/avonzt/avon/sdk/errdef"
)

// Hedged ML-DSA signing with randomness from the host RNG.
//
// FIPS 204 hedged signing is ML-DSA.Sign_internal(sk, M', rnd) with
// M' = 0x00 || len(ctx) || ctx || M and a fresh 32-byte rnd. circl's public
// API (v1.6.5) cannot take rnd from a caller: SignTo(..., randomized=true,
// ...) reads it from crypto/rand itself, and crypto.Signer's Sign ignores its
// reader and signs deterministically. The keystore must draw every nonce
// from Options.Rand, so it reaches circl's Sign_internal, the unexported
// method (*PrivateKey).unsafeSignInternal(msg, rnd) that circl keeps for its
// ACVP tests, through go:linkname, builds M' itself and passes rnd drawn from
// Options.Rand.
//
// The linkname names only exported types (*mldsaNN.PrivateKey, []byte,
// [32]byte), so the call's ABI is fixed by those types. If a circl upgrade
// removes the method, the build fails at link time; if it changes what the
// method does, hedgedSelfTest (run once, before the first signature) and
// the Wycheproof known-answer tests in this package catch it: signing then
// fails closed with errdef.ErrInternal rather than falling back to another
// source of randomness.

//go:linkname mldsa44SignInternal github.com/cloudflare/circl/sign/mldsa/mldsa44.(*PrivateKey).unsafeSignInternal
func mldsa44SignInternal(sk *mldsa44.PrivateKey, msg []byte, rnd [32]byte) []byte

//go:linkname mldsa65SignInternal github.com/cloudflare/circl/sign/mldsa/mldsa65.(*PrivateKey).unsafeSignInternal
func mldsa65SignInternal(sk *mldsa65.PrivateKey, msg []byte, rnd [32]byte) []byte

//go:linkname mldsa87SignInternal github.com/cloudflare/circl/sign/mldsa/mldsa87.(*PrivateKey).unsafeSignInternal
func mldsa87SignInternal(sk *mldsa87.PrivateKey, msg []byte, rnd [32]byte) []byte

// encodeMPrime builds FIPS 204's M' for pure ML-DSA with a context string
// (Algorithm 2, line 10). ctx is at most 255 bytes (checked by the caller).
func encodeMPrime(msg, ctx []byte) []byte {
	mp := make([]byte, 0, 2+len(ctx)+len(msg))
	mp = append(mp, 0, byte(len(ctx)))
	mp = append(mp, ctx...)
	return append(mp, msg...)
}

var hedged struct {
	once sync.Once
	err  error
}

// hedgedReady runs hedgedSelfTest once per process and returns its verdict.
func hedgedReady() error {
	hedged.once.Do(func() { hedged.err = hedgedSelfTest() })
	return hedged.err
}

// hedgedSelfTest checks, for each parameter set, that the linked
// Sign_internal with an all-zero rnd reproduces circl's deterministic
// SignTo byte for byte, and that with another rnd it gives a different
// signature that verifies.
func hedgedSelfTest() error {
	msg, ctx := []byte("avon kms-soft hedged ML-DSA self-test"), []byte("self-test")
	mp := encodeMPrime(msg, ctx)
	var seed [32]byte
	zero, one := [32]byte{}, [32]byte{1}
	check := func(name string, det, sig0, sig1 []byte, verify func([]byte) bool) error {
		if !bytes.Equal(det, sig0) || bytes.Equal(sig0, sig1) || !verify(sig1) {
			return fmt.Errorf("%s hedged signing self-test failed (circl's Sign_internal changed?): %w", name, errdef.ErrInternal)
		}
		return nil
	}
	{
		pk, sk := mldsa44.NewKeyFromSeed(&seed)
		det := make([]byte, mldsa44.SignatureSize)
		if err := mldsa44.SignTo(sk, msg, ctx, false, det); err != nil {
			return err
		}
		if err := check("ML-DSA-44", det, mldsa44SignInternal(sk, mp, zero), mldsa44SignInternal(sk, mp, one),
			func(s []byte) bool { return mldsa44.Verify(pk, msg, ctx, s) }); err != nil {
			return err
		}
	}
	{
		pk, sk := mldsa65.NewKeyFromSeed(&seed)
		det := make([]byte, mldsa65.SignatureSize)
		if err := mldsa65.SignTo(sk, msg, ctx, false, det); err != nil {
			return err
		}
		if err := check("ML-DSA-65", det, mldsa65SignInternal(sk, mp, zero), mldsa65SignInternal(sk, mp, one),
			func(s []byte) bool { return mldsa65.Verify(pk, msg, ctx, s) }); err != nil {
			return err
		}
	}
	{
		pk, sk := mldsa87.NewKeyFromSeed(&seed)
		det := make([]byte, mldsa87.SignatureSize)
		if err := mldsa87.SignTo(sk, msg, ctx, false, det); err != nil {
			return err
		}
		if err := check("ML-DSA-87", det, mldsa87SignInternal(sk, mp, zero), mldsa87SignInternal(sk, mp, one),
			func(s []byte) bool { return mldsa87.Verify(pk, msg, ctx, s) }); err != nil {
			return err
		}
	}
	return nil
}
