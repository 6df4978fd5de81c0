package engine

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

// Hedged ML-DSA with randomness from the host RNG, as kms-soft does it.
//
// FIPS 204 hedged signing is ML-DSA.Sign_internal(sk, M', rnd) with
// M' = 0x00 || len(ctx) || ctx || M and a fresh 32-byte rnd. circl's public
// API draws rnd from crypto/rand itself; the engine must draw it from the
// host RNG, so it calls circl's unexported Sign_internal,
// (*PrivateKey).unsafeSignInternal(msg, rnd), through go:linkname, builds M'
// itself and passes rnd drawn from the host. The linkname names only
// exported types, so its ABI is fixed by them; if a circl upgrade removes
// the method the build fails at link time, and if it changes what the
// method does, hedgedSelfTest (run once, before the first signature) fails
// and signing fails closed with errdef.ErrInternal.

//go:linkname mldsa44SignInternal github.com/cloudflare/circl/sign/mldsa/mldsa44.(*PrivateKey).unsafeSignInternal
func mldsa44SignInternal(sk *mldsa44.PrivateKey, msg []byte, rnd [32]byte) []byte

//go:linkname mldsa65SignInternal github.com/cloudflare/circl/sign/mldsa/mldsa65.(*PrivateKey).unsafeSignInternal
func mldsa65SignInternal(sk *mldsa65.PrivateKey, msg []byte, rnd [32]byte) []byte

//go:linkname mldsa87SignInternal github.com/cloudflare/circl/sign/mldsa/mldsa87.(*PrivateKey).unsafeSignInternal
func mldsa87SignInternal(sk *mldsa87.PrivateKey, msg []byte, rnd [32]byte) []byte

// messagePrime builds FIPS 204's M' for pure ML-DSA with a context string
// of at most 255 bytes (checked by the caller).
func messagePrime(msg, ctx []byte) []byte {
	mp := make([]byte, 0, 2+len(ctx)+len(msg))
	mp = append(mp, 0, byte(len(ctx)))
	mp = append(mp, ctx...)
	return append(mp, msg...)
}

var hedged struct {
	once sync.Once
	err  error
}

func hedgedReady() error {
	hedged.once.Do(func() { hedged.err = hedgedSelfTest() })
	return hedged.err
}

// hedgedSelfTest checks for each parameter set that the linked
// Sign_internal with rnd = 0 reproduces circl's deterministic signature
// byte for byte, and that another rnd gives another signature that
// verifies.
func hedgedSelfTest() error {
	msg, ctx := []byte("avon kms-hsm hedged ML-DSA self-test"), []byte("self-test")
	mp := messagePrime(msg, ctx)
	var seed [32]byte
	zero, one := [32]byte{}, [32]byte{1}
	type set struct {
		name  string
		det   func() ([]byte, error)
		sign  func(rnd [32]byte) []byte
		check func(sig []byte) bool
	}
	pk44, sk44 := mldsa44.NewKeyFromSeed(&seed)
	pk65, sk65 := mldsa65.NewKeyFromSeed(&seed)
	pk87, sk87 := mldsa87.NewKeyFromSeed(&seed)
	sets := []set{
		{"ML-DSA-44", func() ([]byte, error) {
			b := make([]byte, mldsa44.SignatureSize)
			return b, mldsa44.SignTo(sk44, msg, ctx, false, b)
		}, func(r [32]byte) []byte { return mldsa44SignInternal(sk44, mp, r) },
			func(s []byte) bool { return mldsa44.Verify(pk44, msg, ctx, s) }},
		{"ML-DSA-65", func() ([]byte, error) {
			b := make([]byte, mldsa65.SignatureSize)
			return b, mldsa65.SignTo(sk65, msg, ctx, false, b)
		}, func(r [32]byte) []byte { return mldsa65SignInternal(sk65, mp, r) },
			func(s []byte) bool { return mldsa65.Verify(pk65, msg, ctx, s) }},
		{"ML-DSA-87", func() ([]byte, error) {
			b := make([]byte, mldsa87.SignatureSize)
			return b, mldsa87.SignTo(sk87, msg, ctx, false, b)
		}, func(r [32]byte) []byte { return mldsa87SignInternal(sk87, mp, r) },
			func(s []byte) bool { return mldsa87.Verify(pk87, msg, ctx, s) }},
	}
	for _, s := range sets {
		det, err := s.det()
		if err != nil {
			return fmt.Errorf("%s self-test: %v: %w", s.name, err, errdef.ErrInternal)
		}
		sig0, sig1 := s.sign(zero), s.sign(one)
		if !bytes.Equal(det, sig0) || bytes.Equal(sig0, sig1) || !s.check(sig1) {
			return fmt.Errorf("%s hedged signing self-test failed (circl's Sign_internal changed?): %w", s.name, errdef.ErrInternal)
		}
	}
	return nil
}
