package handshake

import (
	"crypto/rand"
	"encoding/binary"
	"runtime"
	"testing"
	"time"

	"github.com/cloudflare/circl/sign/mldsa/mldsa65"

	"github.com/avonzt/avon/internal/mldsahedge"
)

// BenchmarkSign breaks the responder's ML-DSA-65 signature down: circl's
// own randomized SignTo (what DESIGN.md's "sign" figure measures), the
// hedged Sign_internal the signers call (with M' built by MessagePrime),
// MLDSA65Signer.Sign and the delegated key's Sign (the handshakes'), each
// over a new 32-byte message per signature (the rejection loop's length
// depends on the message: a fixed message would measure one count of
// iterations). "parallel" runs the delegated signer on every CPU at once:
// its ns/op is wall time per signature over all CPUs, and the reported
// cpu-ns/op (ns/op × GOMAXPROCS) is the CPU each signature took, to set
// against the one-at-a-time figure.
func BenchmarkSign(b *testing.B) {
	pk, sk := mldsaKey("gateway")
	ctx := []byte(contextResponder)
	msgAt := func(i int) []byte {
		var m [32]byte
		binary.BigEndian.PutUint64(m[:], uint64(i))
		return m[:]
	}
	check := func(b *testing.B, msg, sig []byte) {
		if !mldsa65.Verify(pk, msg, ctx, sig) {
			b.Fatal("signature does not verify")
		}
	}
	b.Run("circl", func(b *testing.B) {
		sig := make([]byte, SignatureLen)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if err := mldsa65.SignTo(sk, msgAt(i), ctx, true, sig); err != nil {
				b.Fatal(err)
			}
		}
		check(b, msgAt(0), func() []byte { _ = mldsa65.SignTo(sk, msgAt(0), ctx, true, sig); return sig }())
	})
	b.Run("hedged", func(b *testing.B) {
		var rnd [32]byte
		b.ReportAllocs()
		var sig []byte
		for i := 0; b.Loop(); i++ {
			_, _ = rand.Read(rnd[:])
			sig = mldsahedge.Sign65(sk, mldsahedge.MessagePrime(msgAt(i), ctx), rnd)
		}
		_ = sig
	})
	b.Run("signer", func(b *testing.B) {
		s, err := NewMLDSA65Signer(sk, rand.Reader)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if _, err := s.Sign(msgAt(i), ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	dk, err := IssueCredential(mustSigner(b, sk), rand.Reader, testNow, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("delegated", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if _, err := signChecked(dk.s, msgAt(i), contextResponder); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		start := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			for i := 0; pb.Next(); i++ {
				if _, err := signChecked(dk.s, msgAt(i), contextResponder); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(time.Since(start).Nanoseconds())*float64(runtimeProcs())/float64(b.N), "cpu-ns/op")
	})
}

func mustSigner(b *testing.B, sk *mldsa65.PrivateKey) *MLDSA65Signer {
	s, err := NewMLDSA65Signer(sk, rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	return s
}

func runtimeProcs() int { return runtime.GOMAXPROCS(0) }
