package engine_test

import (
	"context"
	"testing"

	"github.com/avonzt/avon/plugins/kms-hsm/softhsmtest"
	"github.com/avonzt/avon/sdk/kms"
	"github.com/avonzt/avon/sdk/plugintest"
)

// BenchmarkSign: ECDSA-P256 signs inside the token (C_SignInit + C_Sign);
// ML-DSA-65 unwraps its seed inside the token (AES-GCM), derives the key,
// signs on the host and zeroizes; both read the key's record from host
// storage first (an in-memory host here).
func BenchmarkSign(b *testing.B) {
	h := softhsmtest.Require(b)
	msg := make([]byte, 256)
	for _, a := range []kms.Algorithm{kms.ECDSAP256, kms.Ed25519, kms.MLDSA65} {
		b.Run(string(a), func(b *testing.B) {
			e := open(b, h, plugintest.NewHost())
			ctx := context.Background()
			r, err := e.GenerateKey(ctx, &kms.GenerateKeyRequest{Algorithm: a})
			if err != nil {
				b.Fatal(err)
			}
			b.Run("serial", func(b *testing.B) {
				for b.Loop() {
					if _, err := e.Sign(ctx, &kms.SignRequest{ID: r.Key.ID, Message: msg}); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "signs/s")
			})
			b.Run("parallel", func(b *testing.B) {
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if _, err := e.Sign(ctx, &kms.SignRequest{ID: r.Key.ID, Message: msg}); err != nil {
							b.Error(err)
							return
						}
					}
				})
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "signs/s")
			})
		})
	}
}

// BenchmarkGenerateRandom32: 32 bytes from C_GenerateRandom, what the core
// draws when it mixes the token into its DRBG seed.
func BenchmarkGenerateRandom32(b *testing.B) {
	h := softhsmtest.Require(b)
	e := open(b, h, plugintest.NewHost())
	ctx := context.Background()
	for b.Loop() {
		if _, err := e.GenerateRandom(ctx, &kms.GenerateRandomRequest{Length: 32}); err != nil {
			b.Fatal(err)
		}
	}
}
