package keystore

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/avonzt/avon/sdk/kms"
	"github.com/avonzt/avon/sdk/kms/kmstest"
)

// fastKDF is the floor, to keep tests quick; production defaults are higher.
var fastKDF = MinKDF

func openAt(t testing.TB, path string, pass string, rnd io.Reader) (*Keystore, error) {
	return Open(Options{Path: path, Passphrase: []byte(pass), Rand: rnd, KDF: fastKDF})
}

func newKS(t testing.TB) (*Keystore, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ks", "keystore.avks")
	ks, err := openAt(t, path, "correct horse battery", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ks.Close() })
	return ks, path
}

func TestConformance(t *testing.T) {
	kmstest.Run(t, func(t *testing.T) kms.KMS { ks, _ := newKS(t); return ks })
}

func TestPersistence(t *testing.T) {
	ctx := context.Background()
	ks, path := newKS(t)
	if _, err := ks.GenerateKey(ctx, &kms.GenerateKeyRequest{ID: "sig", Algorithm: kms.MLDSA65}); err != nil {
		t.Fatal(err)
	}
	if _, err := ks.RotateKey(ctx, &kms.RotateKeyRequest{ID: "sig"}); err != nil {
		t.Fatal(err)
	}
	if _, err := ks.GenerateKey(ctx, &kms.GenerateKeyRequest{ID: "gone", Algorithm: kms.Ed25519}); err != nil {
		t.Fatal(err)
	}
	if _, err := ks.DestroyKey(ctx, &kms.DestroyKeyRequest{ID: "gone"}); err != nil {
		t.Fatal(err)
	}
	pk1, _ := ks.PublicKey(ctx, &kms.PublicKeyRequest{ID: "sig", Version: 1})
	ks.Close()
	if _, err := ks.Sign(ctx, &kms.SignRequest{ID: "sig", Message: []byte("m")}); !errors.Is(err, ErrClosed) {
		t.Fatalf("sign after close: %v", err)
	}
	st, _ := os.Stat(path)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("keystore mode %o", st.Mode().Perm())
	}
	raw, _ := os.ReadFile(path)
	if bytes.Contains(raw, []byte("sig")) || bytes.Contains(raw, pk1.PublicKey[:32]) {
		t.Fatal("keystore file holds plaintext")
	}
	ks2, err := openAt(t, path, "correct horse battery", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	defer ks2.Close()
	g, err := ks2.GetKey(ctx, &kms.GetKeyRequest{ID: "sig"})
	if err != nil || g.Key.PrimaryVersion != 2 || len(g.Key.Versions) != 2 {
		t.Fatalf("after reopen: %+v %v", g, err)
	}
	pk1b, _ := ks2.PublicKey(ctx, &kms.PublicKeyRequest{ID: "sig", Version: 1})
	if !bytes.Equal(pk1.PublicKey, pk1b.PublicKey) {
		t.Fatal("version 1 changed across reopen")
	}
	gone, _ := ks2.GetKey(ctx, &kms.GetKeyRequest{ID: "gone"})
	if gone == nil || !gone.Key.Destroyed() {
		t.Fatal("tombstone lost across reopen")
	}
}

func TestWrongPassphraseAndTampering(t *testing.T) {
	ctx := context.Background()
	ks, path := newKS(t)
	if _, err := ks.GenerateKey(ctx, &kms.GenerateKeyRequest{ID: "k", Algorithm: kms.AES256}); err != nil {
		t.Fatal(err)
	}
	ks.Close()
	if _, err := openAt(t, path, "wrong passphrase!", rand.Reader); !errors.Is(err, ErrWrongPassphrase) {
		t.Fatalf("wrong passphrase: %v", err)
	}
	orig, _ := os.ReadFile(path)
	cases := map[string]func([]byte) []byte{
		"magic":      func(b []byte) []byte { b[0] ^= 1; return b },
		"version":    func(b []byte) []byte { b[8] = 9; return b },
		"kdf memory": func(b []byte) []byte { b[15] ^= 0x40; return b },
		"salt":       func(b []byte) []byte { b[saltOffset] ^= 1; return b },
		"nonce":      func(b []byte) []byte { b[nonceOffset] ^= 1; return b },
		"body":       func(b []byte) []byte { b[len(b)-20] ^= 1; return b },
		"tag":        func(b []byte) []byte { b[len(b)-1] ^= 1; return b },
		"truncated":  func(b []byte) []byte { return b[:len(b)-7] },
		"empty":      func(b []byte) []byte { return nil },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			if err := os.WriteFile(path, mutate(append([]byte(nil), orig...)), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := openAt(t, path, "correct horse battery", rand.Reader)
			if !errors.Is(err, ErrTampered) && !errors.Is(err, ErrWrongPassphrase) {
				t.Fatalf("tampered %s opened: %v", name, err)
			}
		})
	}
	// Body and nonce changes pass the passphrase check: they must say tampered.
	for _, off := range []int{nonceOffset, len(orig) - 1} {
		b := append([]byte(nil), orig...)
		b[off] ^= 1
		os.WriteFile(path, b, 0o600)
		if _, err := openAt(t, path, "correct horse battery", rand.Reader); !errors.Is(err, ErrTampered) {
			t.Fatalf("flip at %d: want ErrTampered, got %v", off, err)
		}
	}
	os.WriteFile(path, orig, 0o600)
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := openAt(t, path, "correct horse battery", rand.Reader); err == nil {
		t.Fatal("world-readable keystore opened")
	}
}

func TestFailedWriteChangesNothing(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "keystore.avks")
	fail := false
	ks, err := Open(Options{Path: path, Passphrase: []byte("correct horse battery"), Rand: rand.Reader, KDF: fastKDF,
		writeFile: func(p string, b []byte) error {
			if fail {
				return errors.New("disk full")
			}
			return writeAtomic(p, b)
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer ks.Close()
	if _, err := ks.GenerateKey(ctx, &kms.GenerateKeyRequest{ID: "k", Algorithm: kms.Ed25519}); err != nil {
		t.Fatal(err)
	}
	fail = true
	if _, err := ks.GenerateKey(ctx, &kms.GenerateKeyRequest{ID: "k2", Algorithm: kms.Ed25519}); err == nil {
		t.Fatal("generate succeeded without a write")
	}
	if _, err := ks.GetKey(ctx, &kms.GetKeyRequest{ID: "k2"}); !errors.Is(err, kms.ErrKeyNotFound) {
		t.Fatalf("failed generate left a key: %v", err)
	}
	if _, err := ks.RotateKey(ctx, &kms.RotateKeyRequest{ID: "k"}); err == nil {
		t.Fatal("rotate succeeded without a write")
	}
	if _, err := ks.DestroyKey(ctx, &kms.DestroyKeyRequest{ID: "k"}); err == nil {
		t.Fatal("destroy succeeded without a write")
	}
	g, _ := ks.GetKey(ctx, &kms.GetKeyRequest{ID: "k"})
	if g.Key.PrimaryVersion != 1 || len(g.Key.Versions) != 1 || g.Key.Destroyed() {
		t.Fatalf("failed writes changed the key: %+v", g.Key)
	}
	if _, err := ks.Sign(ctx, &kms.SignRequest{ID: "k", Message: []byte("m")}); err != nil {
		t.Fatalf("key unusable after failed destroy: %v", err)
	}
}

// A deterministic reader yields the same keys: randomness comes from
// Options.Rand and nowhere else.
func TestRandomnessFromOptions(t *testing.T) {
	ctx := context.Background()
	pub := func() map[kms.Algorithm][]byte {
		var seed [32]byte
		seed[0] = 42
		ks, err := openAt(t, filepath.Join(t.TempDir(), "ks"), "correct horse battery", mrand.NewChaCha8(seed))
		if err != nil {
			t.Fatal(err)
		}
		defer ks.Close()
		out := map[kms.Algorithm][]byte{}
		for _, a := range kms.AllAlgorithms {
			if a == kms.AES256 {
				continue
			}
			r, err := ks.GenerateKey(ctx, &kms.GenerateKeyRequest{ID: "k-" + string(a), Algorithm: a})
			if err != nil {
				t.Fatal(err)
			}
			out[a] = r.Key.Versions[0].PublicKey
		}
		return out
	}
	a, b := pub(), pub()
	for alg := range a {
		if !bytes.Equal(a[alg], b[alg]) {
			t.Errorf("%s: same RNG stream gave different keys", alg)
		}
	}
}

func FuzzOpen(f *testing.F) {
	dir := f.TempDir()
	path := filepath.Join(dir, "seed.avks")
	ks, err := openAt(f, path, "correct horse battery", rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	ks.GenerateKey(context.Background(), &kms.GenerateKeyRequest{ID: "k", Algorithm: kms.Ed25519})
	ks.Close()
	seed, _ := os.ReadFile(path)
	f.Add(seed)
	f.Add([]byte(magic))
	f.Fuzz(func(t *testing.T, data []byte) {
		// The header parser and the decrypt path must not panic; the KDF is
		// skipped for implausible parameters, so keep inputs cheap.
		if _, _, err := parseHeader(data); err != nil {
			return
		}
		if p, _, _ := parseHeader(data); p.MemoryKiB > 64<<10 || p.Time > 3 {
			return
		}
		if k, pt, err := open(data, []byte("correct horse battery")); err == nil {
			k.clear()
			_, _ = decodeSet(pt)
		}
	})
}

func FuzzDecodeSet(f *testing.F) {
	f.Add([]byte(`{"keys":[{"id":"k","algorithm":"Ed25519","primary":1,"versions":[{"version":1,"state":"enabled","seed":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}]}]}`))
	f.Add([]byte(`{"keys":[{"id":"k","algorithm":"ML-KEM-768","primary":2,"versions":[]}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		keys, err := decodeSet(data)
		if err != nil {
			return
		}
		for _, e := range keys {
			if e.meta.PrimaryVersion < 1 || e.meta.PrimaryVersion > len(e.meta.Versions) {
				t.Fatalf("accepted primary %d of %d", e.meta.PrimaryVersion, len(e.meta.Versions))
			}
		}
	})
}

func benchKS(b *testing.B, a kms.Algorithm) (*Keystore, string) {
	ks, _ := newKS(b)
	r, err := ks.GenerateKey(context.Background(), &kms.GenerateKeyRequest{Algorithm: a})
	if err != nil {
		b.Fatal(err)
	}
	return ks, r.Key.ID
}

func BenchmarkSign(b *testing.B) {
	msg := make([]byte, 256)
	for _, a := range []kms.Algorithm{kms.MLDSA65, kms.ECDSAP256, kms.Ed25519} {
		b.Run(string(a), func(b *testing.B) {
			ks, id := benchKS(b, a)
			for b.Loop() {
				if _, err := ks.Sign(context.Background(), &kms.SignRequest{ID: id, Message: msg}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "signs/s")
		})
	}
}

func BenchmarkDecapsulateXWing(b *testing.B) {
	ks, id := benchKS(b, kms.XWing)
	pk, _ := ks.PublicKey(context.Background(), &kms.PublicKeyRequest{ID: id})
	ct, _, err := kmstest.EncapsulateIndependently(kms.XWing, pk.PublicKey)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := ks.Decapsulate(context.Background(), &kms.DecapsulateRequest{ID: id, Ciphertext: ct}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncrypt1KiB(b *testing.B) {
	ks, id := benchKS(b, kms.AES256)
	pt := make([]byte, 1024)
	b.SetBytes(1024)
	for b.Loop() {
		if _, err := ks.Encrypt(context.Background(), &kms.EncryptRequest{ID: id, Plaintext: pt}); err != nil {
			b.Fatal(err)
		}
	}
}
