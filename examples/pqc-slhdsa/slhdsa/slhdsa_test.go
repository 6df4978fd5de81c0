package slhdsa

import (
	"bytes"
	"context"
	"errors"
	mrand "math/rand/v2"
	"testing"

	circl "github.com/cloudflare/circl/sign/slhdsa"

	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/plugin"
	"github.com/avonzt/avon/sdk/plugintest"
	"github.com/avonzt/avon/sdk/pqc"
	"github.com/avonzt/avon/sdk/pqc/pqctest"
)

func configured(t testing.TB, cfg string, h *plugintest.MemHost) *Provider {
	t.Helper()
	p := New()
	if h == nil {
		h = plugintest.NewHost()
	}
	if err := p.Configure(context.Background(), &plugin.ConfigureRequest{Config: []byte(cfg), Host: h}); err != nil {
		t.Fatal(err)
	}
	return p
}

// independent verifies with circl directly, not through the provider.
func independent(alg string, pub, msg, ctx, sig []byte) (bool, error) {
	id, err := circl.IDByName(alg)
	if err != nil {
		return false, err
	}
	pk := circl.PublicKey{ID: id}
	if err := pk.UnmarshalBinary(pub); err != nil {
		return false, err
	}
	return circl.Verify(&pk, circl.NewMessage(msg), sig, ctx), nil
}

func TestConformance(t *testing.T) {
	// The fast ("f") sets and one small ("s") set keep the suite quick; all
	// twelve are listed and checked for sizes and OIDs.
	pqctest.Run(t, func(t *testing.T) pqc.Provider { return configured(t, `{}`, nil) },
		pqctest.WithIndependentVerifier(independent),
		pqctest.WithAlgorithms("SLH-DSA-SHA2-128f", "SLH-DSA-SHAKE-128f", "SLH-DSA-SHA2-192f", "SLH-DSA-SHA2-128s"))
}

func TestListsEveryParameterSetWithItsOID(t *testing.T) {
	r, err := configured(t, `{}`, nil).ListAlgorithms(context.Background(), &pqc.ListAlgorithmsRequest{})
	if err != nil || len(r.Algorithms) != 12 {
		t.Fatalf("%d algorithms, %v", len(r.Algorithms), err)
	}
	if a := r.Algorithms[0]; a.Name != "SLH-DSA-SHA2-128s" || a.OID != "2.16.840.1.101.3.4.3.20" || a.PublicKeySize != 32 || a.SignatureSize != 7856 {
		t.Fatalf("first entry %+v", a)
	}
	if a := r.Algorithms[11]; a.Name != "SLH-DSA-SHAKE-256f" || a.OID != "2.16.840.1.101.3.4.3.31" {
		t.Fatalf("last entry %+v", a)
	}
	r, _ = configured(t, `{"algorithms":["SLH-DSA-SHA2-128f"]}`, nil).ListAlgorithms(context.Background(), &pqc.ListAlgorithmsRequest{})
	if len(r.Algorithms) != 1 {
		t.Fatalf("restriction ignored: %+v", r.Algorithms)
	}
}

// Keys come from the host RNG: the same host stream gives the same key.
func TestRandomnessFromHost(t *testing.T) {
	key := func() []byte {
		var seed [32]byte
		seed[0] = 7
		p := configured(t, `{}`, plugintest.NewHost(plugintest.WithRand(mrand.NewChaCha8(seed))))
		k, err := p.GenerateKey(context.Background(), &pqc.GenerateKeyRequest{Algorithm: "SLH-DSA-SHA2-128f"})
		if err != nil {
			t.Fatal(err)
		}
		return k.PublicKey
	}
	if !bytes.Equal(key(), key()) {
		t.Fatal("same host RNG stream gave different keys: randomness does not come from the host")
	}
}

func TestDeterministicMode(t *testing.T) {
	p := configured(t, `{"deterministic":true}`, nil)
	ctx := context.Background()
	k, _ := p.GenerateKey(ctx, &pqc.GenerateKeyRequest{Algorithm: "SLH-DSA-SHA2-128f"})
	sign := func() []byte {
		s, err := p.Sign(ctx, &pqc.SignRequest{Algorithm: "SLH-DSA-SHA2-128f", PrivateKey: k.PrivateKey, Message: []byte("m")})
		if err != nil {
			t.Fatal(err)
		}
		return s.Signature
	}
	if !bytes.Equal(sign(), sign()) {
		t.Fatal("deterministic mode produced different signatures")
	}
	h := configured(t, `{}`, nil)
	s1, _ := h.Sign(ctx, &pqc.SignRequest{Algorithm: "SLH-DSA-SHA2-128f", PrivateKey: k.PrivateKey, Message: []byte("m")})
	s2, _ := h.Sign(ctx, &pqc.SignRequest{Algorithm: "SLH-DSA-SHA2-128f", PrivateKey: k.PrivateKey, Message: []byte("m")})
	if bytes.Equal(s1.Signature, s2.Signature) {
		t.Fatal("hedged mode produced identical signatures")
	}
}

func TestRefusals(t *testing.T) {
	ctx := context.Background()
	if _, err := New().ListAlgorithms(ctx, &pqc.ListAlgorithmsRequest{}); !errors.Is(err, errdef.ErrNotConfigured) {
		t.Fatalf("unconfigured: %v", err)
	}
	err := New().Configure(ctx, &plugin.ConfigureRequest{Config: []byte(`{"algorithms":["SLH-DSA-MD5"]}`), Host: plugintest.NewHost()})
	var pe *plugin.ProblemsError
	if !errors.As(err, &pe) || pe.Problems[0].Attribute != "algorithms" {
		t.Fatalf("unknown parameter set accepted: %v", err)
	}
	p := configured(t, `{}`, nil)
	k, _ := p.GenerateKey(ctx, &pqc.GenerateKeyRequest{Algorithm: "SLH-DSA-SHA2-128f"})
	// A private key whose public half was altered is refused, not used.
	bad := append([]byte{}, k.PrivateKey...)
	bad[len(bad)-1] ^= 1
	if _, err := p.Sign(ctx, &pqc.SignRequest{Algorithm: "SLH-DSA-SHA2-128f", PrivateKey: bad, Message: []byte("m")}); !errors.Is(err, pqc.ErrInvalidKey) {
		t.Fatalf("altered private key: %v", err)
	}
}

func FuzzVerify(f *testing.F) {
	p := configured(f, `{"algorithms":["SLH-DSA-SHA2-128f"]}`, nil)
	k, _ := p.GenerateKey(context.Background(), &pqc.GenerateKeyRequest{Algorithm: "SLH-DSA-SHA2-128f"})
	f.Add(k.PublicKey, []byte("m"), []byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, pub, msg, sig []byte) {
		_, _ = p.Verify(context.Background(), &pqc.VerifyRequest{Algorithm: "SLH-DSA-SHA2-128f", PublicKey: pub, Message: msg, Signature: sig})
	})
}

func BenchmarkSLHDSA(b *testing.B) {
	p := configured(b, `{}`, nil)
	ctx := context.Background()
	msg := make([]byte, 256)
	for _, alg := range []string{"SLH-DSA-SHA2-128s", "SLH-DSA-SHA2-128f"} {
		k, err := p.GenerateKey(ctx, &pqc.GenerateKeyRequest{Algorithm: alg})
		if err != nil {
			b.Fatal(err)
		}
		s, _ := p.Sign(ctx, &pqc.SignRequest{Algorithm: alg, PrivateKey: k.PrivateKey, Message: msg})
		b.Run(alg+"/sign", func(b *testing.B) {
			for b.Loop() {
				if _, err := p.Sign(ctx, &pqc.SignRequest{Algorithm: alg, PrivateKey: k.PrivateKey, Message: msg}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "signs/s")
		})
		b.Run(alg+"/verify", func(b *testing.B) {
			for b.Loop() {
				if r, err := p.Verify(ctx, &pqc.VerifyRequest{Algorithm: alg, PublicKey: k.PublicKey, Message: msg, Signature: s.Signature}); err != nil || !r.Valid {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "verifies/s")
		})
	}
}
