// Package mldsahedge is hedged ML-DSA signing with the caller's randomness,
// shared by the KMS plugins (kms-soft, kms-hsm) so that the one unusual
// thing it does lives in one place.
package mldsahedge

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
// reader and signs deterministically. A KMS plugin must draw every nonce
// from the host RNG, so this package reaches circl's Sign_internal, the unexported
// method (*PrivateKey).unsafeSignInternal(msg, rnd) that circl keeps for its
// ACVP tests, through go:linkname; the caller builds M' with MessagePrime
// and passes rnd drawn from the host RNG.
//
// The linkname names only exported types (*mldsaNN.PrivateKey, []byte,
// [32]byte), so the call's ABI is fixed by those types. If a circl upgrade
// removes the method, the build fails at link time; if it changes what the
// method does, the self-test behind Ready (run once, before the first
// signature) and the Wycheproof known-answer tests of kms-soft catch it: signing then
// fails closed with errdef.ErrInternal rather than falling back to another
// source of randomness.

// Sign44 is ML-DSA-44 Sign_internal(sk, M', rnd): M' from MessagePrime, rnd
// 32 bytes from the host RNG. Call it only once Ready returned nil.
//
//go:linkname Sign44 github.com/cloudflare/circl/sign/mldsa/mldsa44.(*PrivateKey).unsafeSignInternal
func Sign44(sk *mldsa44.PrivateKey, msg []byte, rnd [32]byte) []byte

// Sign65 is ML-DSA-65 Sign_internal(sk, M', rnd): M' from MessagePrime, rnd
// 32 bytes from the host RNG. Call it only once Ready returned nil.
//
//go:linkname Sign65 github.com/cloudflare/circl/sign/mldsa/mldsa65.(*PrivateKey).unsafeSignInternal
func Sign65(sk *mldsa65.PrivateKey, msg []byte, rnd [32]byte) []byte

// Sign87 is ML-DSA-87 Sign_internal(sk, M', rnd): M' from MessagePrime, rnd
// 32 bytes from the host RNG. Call it only once Ready returned nil.
//
//go:linkname Sign87 github.com/cloudflare/circl/sign/mldsa/mldsa87.(*PrivateKey).unsafeSignInternal
func Sign87(sk *mldsa87.PrivateKey, msg []byte, rnd [32]byte) []byte

// MessagePrime builds FIPS 204's M' for pure ML-DSA with a context string
// (Algorithm 2, line 10). ctx is at most 255 bytes (checked by the caller).
func MessagePrime(msg, ctx []byte) []byte {
	mp := make([]byte, 0, 2+len(ctx)+len(msg))
	mp = append(mp, 0, byte(len(ctx)))
	mp = append(mp, ctx...)
	return append(mp, msg...)
}

var hedged struct {
	once sync.Once
	err  error
}

// Ready runs the self-test once per process and returns its verdict; sign
// only when it is nil (fail closed otherwise).
func Ready() error {
	hedged.once.Do(func() { hedged.err = hedgedSelfTest() })
	return hedged.err
}

// hedgedSelfTest checks, for each parameter set, that the linked
// Sign_internal with an all-zero rnd reproduces circl's deterministic
// SignTo byte for byte, and that with another rnd it gives a different
// signature that verifies.
func hedgedSelfTest() error {
	msg, ctx := []byte("avon hedged ML-DSA self-test"), []byte("self-test")
	mp := MessagePrime(msg, ctx)
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
		if err := check("ML-DSA-44", det, Sign44(sk, mp, zero), Sign44(sk, mp, one),
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
		if err := check("ML-DSA-65", det, Sign65(sk, mp, zero), Sign65(sk, mp, one),
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
		if err := check("ML-DSA-87", det, Sign87(sk, mp, zero), Sign87(sk, mp, one),
			func(s []byte) bool { return mldsa87.Verify(pk, msg, ctx, s) }); err != nil {
			return err
		}
	}
	return nil
}
