package keystore

import (
	"context"
	"testing"

	"github.com/avonzt/avon/sdk/kms"
	"github.com/avonzt/avon/sdk/kms/kmstest"
)

func benchKey(b *testing.B, a kms.Algorithm) (*Keystore, string) {
	b.Helper()
	ks, _ := newKS(b)
	return ks, mustGen(b, ks, "", a).ID
}

func BenchmarkSign(b *testing.B) {
	msg := make([]byte, 256)
	for _, a := range []kms.Algorithm{kms.MLDSA65, kms.ECDSAP256, kms.Ed25519} {
		b.Run(string(a), func(b *testing.B) {
			ks, id := benchKey(b, a)
			ctx := context.Background()
			for b.Loop() {
				if _, err := ks.Sign(ctx, &kms.SignRequest{ID: id, Message: msg}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "signs/s")
		})
	}
}

// BenchmarkSignParallel: signers share the read lock and the serialized
// host RNG reader.
func BenchmarkSignParallel(b *testing.B) {
	ks, id := benchKey(b, kms.MLDSA65)
	msg := make([]byte, 256)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := ks.Sign(context.Background(), &kms.SignRequest{ID: id, Message: msg}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "signs/s")
}

func BenchmarkDecapsulateXWing(b *testing.B) {
	ks, id := benchKey(b, kms.XWing)
	ctx := context.Background()
	pk, err := ks.PublicKey(ctx, &kms.PublicKeyRequest{ID: id})
	if err != nil {
		b.Fatal(err)
	}
	ct, _, err := kmstest.EncapsulateIndependently(kms.XWing, pk.PublicKey)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := ks.Decapsulate(ctx, &kms.DecapsulateRequest{ID: id, Ciphertext: ct}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decaps/s")
}

func BenchmarkEncrypt1KiB(b *testing.B) {
	ks, id := benchKey(b, kms.AES256)
	ctx := context.Background()
	pt := make([]byte, 1024)
	b.SetBytes(int64(len(pt)))
	for b.Loop() {
		if _, err := ks.Encrypt(ctx, &kms.EncryptRequest{ID: id, Plaintext: pt}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGenerateKey includes sealing and atomically writing the file
// with 100 other keys in it.
func BenchmarkGenerateKey(b *testing.B) {
	ks, _ := newKS(b)
	for range 100 {
		mustGen(b, ks, "", kms.Ed25519)
	}
	ctx := context.Background()
	for b.Loop() {
		if _, err := ks.GenerateKey(ctx, &kms.GenerateKeyRequest{Algorithm: kms.Ed25519}); err != nil {
			b.Fatal(err)
		}
	}
}
