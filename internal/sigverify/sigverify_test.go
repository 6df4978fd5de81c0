package sigverify

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/cloudflare/circl/sign/mldsa/mldsa44"
	"github.com/cloudflare/circl/sign/mldsa/mldsa65"
	"github.com/cloudflare/circl/sign/mldsa/mldsa87"
)

type signed struct {
	alg           string
	pub, msg, ctx []byte
	sig           []byte
}

func fixtures(t testing.TB) []signed {
	msg, ctx := []byte("audit checkpoint 42"), []byte("avon")
	var out []signed
	{
		pk, sk, _ := mldsa44.GenerateKey(rand.Reader)
		sig := make([]byte, mldsa44.SignatureSize)
		if err := mldsa44.SignTo(sk, msg, ctx, true, sig); err != nil {
			t.Fatal(err)
		}
		b, _ := pk.MarshalBinary()
		out = append(out, signed{"ML-DSA-44", b, msg, ctx, sig})
	}
	{
		pk, sk, _ := mldsa65.GenerateKey(rand.Reader)
		sig := make([]byte, mldsa65.SignatureSize)
		if err := mldsa65.SignTo(sk, msg, ctx, true, sig); err != nil {
			t.Fatal(err)
		}
		b, _ := pk.MarshalBinary()
		out = append(out, signed{"ML-DSA-65", b, msg, ctx, sig})
	}
	{
		pk, sk, _ := mldsa87.GenerateKey(rand.Reader)
		sig := make([]byte, mldsa87.SignatureSize)
		if err := mldsa87.SignTo(sk, msg, nil, true, sig); err != nil {
			t.Fatal(err)
		}
		b, _ := pk.MarshalBinary()
		out = append(out, signed{"ML-DSA-87", b, msg, nil, sig})
	}
	{
		pub, priv, _ := ed25519.GenerateKey(rand.Reader)
		out = append(out, signed{"Ed25519", pub, msg, nil, ed25519.Sign(priv, msg)})
	}
	{
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		d := sha256.Sum256(msg)
		sig, _ := ecdsa.SignASN1(rand.Reader, k, d[:])
		pub, _ := k.PublicKey.Bytes()
		out = append(out, signed{"ECDSA-P256", pub, msg, nil, sig})
	}
	return out
}

func TestVerify(t *testing.T) {
	for _, f := range fixtures(t) {
		t.Run(f.alg, func(t *testing.T) {
			if err := Verify(f.alg, f.pub, f.msg, f.ctx, f.sig); err != nil {
				t.Fatalf("valid signature refused: %v", err)
			}
			bad := append([]byte(nil), f.sig...)
			bad[len(bad)/2] ^= 0x01
			if err := Verify(f.alg, f.pub, f.msg, f.ctx, bad); !errors.Is(err, ErrBadSignature) {
				t.Fatalf("flipped signature bit: %v", err)
			}
			if err := Verify(f.alg, f.pub, append([]byte("x"), f.msg...), f.ctx, f.sig); !errors.Is(err, ErrBadSignature) {
				t.Fatalf("other message: %v", err)
			}
			if err := Verify(f.alg, f.pub, f.msg, []byte("other"), f.sig); !errors.Is(err, ErrBadSignature) {
				t.Fatalf("other context: %v", err)
			}
			if err := Verify(f.alg, f.pub[:len(f.pub)-1], f.msg, f.ctx, f.sig); !errors.Is(err, ErrBadKey) {
				t.Fatalf("short key: %v", err)
			}
			if err := Verify(f.alg, f.pub, f.msg, f.ctx, f.sig[:len(f.sig)-1]); !errors.Is(err, ErrBadSignature) {
				t.Fatalf("short signature: %v", err)
			}
		})
	}
	if err := Verify("RSA-2048", nil, nil, nil, nil); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("unknown algorithm: %v", err)
	}
	if err := Verify("ML-DSA-65", nil, nil, make([]byte, 256), nil); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("over-long context: %v", err)
	}
}

func FuzzVerify(f *testing.F) {
	for _, fx := range fixtures(f) {
		f.Add(fx.alg, fx.pub, fx.msg, fx.ctx, fx.sig)
	}
	f.Fuzz(func(t *testing.T, alg string, pub, msg, ctx, sig []byte) {
		err := Verify(alg, pub, msg, ctx, sig)
		if err != nil && !errors.Is(err, ErrBadSignature) && !errors.Is(err, ErrBadKey) && !errors.Is(err, ErrUnsupported) {
			t.Fatalf("untyped error: %v", err)
		}
	})
}
