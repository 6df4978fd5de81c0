package keystore

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/kms"
	"github.com/avonzt/avon/sdk/kms/kmstest"
)

const pass = "correct horse battery staple"

// testOptions are fast options for a keystore at path: TestKDF (allowed
// with AllowWeakKDF) instead of the production parameters.
func testOptions(path string, rnd io.Reader) Options {
	return Options{Path: path, Passphrase: []byte(pass), Rand: rnd, KDF: TestKDF, AllowWeakKDF: true}
}

func openOpts(t testing.TB, opts Options) *Keystore {
	t.Helper()
	ks, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ks.Close() })
	return ks
}

func newKS(t testing.TB) (*Keystore, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "data", "keystore.avks")
	return openOpts(t, testOptions(path, rand.Reader)), path
}

func mustGen(t testing.TB, ks *Keystore, id string, a kms.Algorithm) *kms.Key {
	t.Helper()
	r, err := ks.GenerateKey(context.Background(), &kms.GenerateKeyRequest{ID: id, Algorithm: a})
	if err != nil {
		t.Fatal(err)
	}
	return r.Key
}

func TestConformance(t *testing.T) {
	kmstest.Run(t, func(t *testing.T) kms.KMS { ks, _ := newKS(t); return ks },
		kmstest.WithExporter(true), kmstest.WithRandomSource(false))
}

// Everything survives a close and reopen: metadata, tombstones, labels,
// and material (old signatures verify, old envelopes and KEM ciphertexts
// open).
func TestPersistence(t *testing.T) {
	ctx := context.Background()
	ks, path := newKS(t)
	for _, a := range kms.AllAlgorithms {
		if _, err := ks.GenerateKey(ctx, &kms.GenerateKeyRequest{ID: "p-" + string(a), Algorithm: a,
			Labels: map[string]string{"alg": string(a)}, Exportable: a == kms.Ed25519}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ks.RotateKey(ctx, &kms.RotateKeyRequest{ID: "p-ML-DSA-65"}); err != nil {
		t.Fatal(err)
	}
	if _, err := ks.RotateKey(ctx, &kms.RotateKeyRequest{ID: "p-AES-256"}); err != nil {
		t.Fatal(err)
	}
	if _, err := ks.DestroyKey(ctx, &kms.DestroyKeyRequest{ID: "p-ML-DSA-65", Version: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := ks.DestroyKey(ctx, &kms.DestroyKeyRequest{ID: "p-ECDSA-P384"}); err != nil {
		t.Fatal(err)
	}
	sig, err := ks.Sign(ctx, &kms.SignRequest{ID: "p-ML-DSA-65", Message: []byte("m"), Context: []byte("c")})
	if err != nil {
		t.Fatal(err)
	}
	env, err := ks.Encrypt(ctx, &kms.EncryptRequest{ID: "p-AES-256", Plaintext: []byte("secret"), AAD: []byte("a")})
	if err != nil {
		t.Fatal(err)
	}
	pk, _ := ks.PublicKey(ctx, &kms.PublicKeyRequest{ID: "p-X-Wing"})
	ct, ss, err := kmstest.EncapsulateIndependently(kms.XWing, pk.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	before, err := ks.ListKeys(ctx, &kms.ListKeysRequest{})
	if err != nil {
		t.Fatal(err)
	}
	ks.Close()

	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("keystore file: %v, mode %v", err, st.Mode())
	}
	raw, _ := os.ReadFile(path)
	for _, s := range []string{"p-ML-DSA", "ML-DSA", "alg"} {
		if bytes.Contains(raw, []byte(s)) {
			t.Errorf("the file holds %q in the clear", s)
		}
	}
	if bytes.Contains(raw, pk.PublicKey[:32]) {
		t.Error("the file holds a public key in the clear")
	}
	if dir, _ := os.ReadDir(filepath.Dir(path)); len(dir) != 1 {
		t.Errorf("the keystore directory holds %d entries, want only the keystore (no temp files left)", len(dir))
	}

	ks2 := openOpts(t, testOptions(path, rand.Reader))
	after, err := ks2.ListKeys(ctx, &kms.ListKeysRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(before, after) {
		t.Fatalf("metadata changed across reopen:\nbefore %+v\nafter  %+v", before.Keys, after.Keys)
	}
	v, err := ks2.Verify(ctx, &kms.VerifyRequest{ID: "p-ML-DSA-65", Message: []byte("m"), Context: []byte("c"), Signature: sig.Signature})
	if err != nil || !v.Valid || sig.Version != 2 {
		t.Errorf("signature made before reopen: %v %v (version %d)", v, err, sig.Version)
	}
	d, err := ks2.Decrypt(ctx, &kms.DecryptRequest{ID: "p-AES-256", Ciphertext: env.Ciphertext, AAD: []byte("a")})
	if err != nil || string(d.Plaintext) != "secret" {
		t.Errorf("envelope made before reopen: %v", err)
	}
	r, err := ks2.Decapsulate(ctx, &kms.DecapsulateRequest{ID: "p-X-Wing", Ciphertext: ct})
	if err != nil || !bytes.Equal(r.SharedSecret, ss) {
		t.Errorf("X-Wing ciphertext made before reopen: %v", err)
	}
	if _, err := ks2.ExportKey(ctx, &kms.ExportKeyRequest{ID: "p-Ed25519"}); err != nil {
		t.Errorf("exportable flag lost: %v", err)
	}
	_, err = ks2.Sign(ctx, &kms.SignRequest{ID: "p-ECDSA-P384", Message: []byte("m")})
	if !errors.Is(err, kms.ErrKeyDestroyed) {
		t.Errorf("destroyed key after reopen: %v", err)
	}
}

// Close zeroizes material and makes every method fail with ErrClosed;
// DestroyKey zeroizes the destroyed version's seed.
func TestZeroization(t *testing.T) {
	ctx := context.Background()
	ks, _ := newKS(t)
	mustGen(t, ks, "kept", kms.MLDSA44)
	mustGen(t, ks, "aes", kms.AES256)
	mustGen(t, ks, "gone", kms.Ed25519)
	if _, err := ks.RotateKey(ctx, &kms.RotateKeyRequest{ID: "gone"}); err != nil {
		t.Fatal(err)
	}
	seedOf := func(id string, v int) []byte {
		ks.state.RLock()
		defer ks.state.RUnlock()
		return ks.state.keys[id].material[v].seed
	}
	goneSeed, keptSeed, aesSeed := seedOf("gone", 1), seedOf("kept", 1), seedOf("aes", 1)
	zero := func(b []byte) bool { return !bytes.ContainsFunc(b, func(r rune) bool { return r != 0 }) }
	if zero(goneSeed) || zero(keptSeed) {
		t.Fatal("seeds are zero before destruction")
	}
	if _, err := ks.DestroyKey(ctx, &kms.DestroyKeyRequest{ID: "gone", Version: 1}); err != nil {
		t.Fatal(err)
	}
	if !zero(goneSeed) {
		t.Error("DestroyKey left the destroyed version's seed in memory")
	}
	if zero(keptSeed) {
		t.Error("DestroyKey cleared another key's seed")
	}
	if err := ks.Close(); err != nil {
		t.Fatal(err)
	}
	if !zero(keptSeed) || !zero(aesSeed) {
		t.Error("Close left seeds in memory")
	}
	if err := ks.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	calls := map[string]error{}
	_, calls["GenerateKey"] = ks.GenerateKey(ctx, &kms.GenerateKeyRequest{ID: "x", Algorithm: kms.Ed25519})
	_, calls["GetKey"] = ks.GetKey(ctx, &kms.GetKeyRequest{ID: "kept"})
	_, calls["ListKeys"] = ks.ListKeys(ctx, &kms.ListKeysRequest{})
	_, calls["PublicKey"] = ks.PublicKey(ctx, &kms.PublicKeyRequest{ID: "kept"})
	_, calls["Sign"] = ks.Sign(ctx, &kms.SignRequest{ID: "kept", Message: []byte("m")})
	_, calls["Verify"] = ks.Verify(ctx, &kms.VerifyRequest{ID: "kept"})
	_, calls["Decapsulate"] = ks.Decapsulate(ctx, &kms.DecapsulateRequest{ID: "kept"})
	_, calls["Encrypt"] = ks.Encrypt(ctx, &kms.EncryptRequest{ID: "aes"})
	_, calls["Decrypt"] = ks.Decrypt(ctx, &kms.DecryptRequest{ID: "aes"})
	_, calls["RotateKey"] = ks.RotateKey(ctx, &kms.RotateKeyRequest{ID: "kept"})
	_, calls["DestroyKey"] = ks.DestroyKey(ctx, &kms.DestroyKeyRequest{ID: "kept"})
	_, calls["ExportKey"] = ks.ExportKey(ctx, &kms.ExportKeyRequest{ID: "kept"})
	for name, err := range calls {
		if !errors.Is(err, ErrClosed) || !errors.Is(err, kms.ErrKeystoreLocked) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
}

// writeKeystore makes a keystore file with one key and returns its path.
func writeKeystore(t *testing.T) string {
	t.Helper()
	ks, path := newKS(t)
	mustGen(t, ks, "k", kms.Ed25519)
	ks.Close()
	return path
}

func TestWrongPassphrase(t *testing.T) {
	path := writeKeystore(t)
	for _, p := range []string{"correct horse battery stapler", "x", strings.ToUpper(pass)} {
		opts := testOptions(path, rand.Reader)
		opts.Passphrase = []byte(p)
		_, err := Open(opts)
		if !errors.Is(err, ErrWrongPassphrase) || errors.Is(err, ErrTampered) {
			t.Fatalf("passphrase %q: %v, want ErrWrongPassphrase", p, err)
		}
		if want := "keystore " + path + ": wrong passphrase or key file"; err.Error() != want {
			t.Errorf("message %q, want %q", err, want)
		}
	}
	if _, err := Open(Options{Path: path, Rand: rand.Reader}); err == nil {
		t.Error("opened with an empty passphrase")
	}
}

// region names the part of the file an offset falls in, and which errors
// damage there may produce.
func region(off, size int) (string, []error) {
	switch {
	case off < 10:
		return "magic, version or KDF id", []error{ErrTampered}
	case off < saltOffset:
		// Implausible parameters are tampering; plausible ones derive
		// another KEK.
		return "KDF parameters", []error{ErrTampered, ErrWrongPassphrase}
	case off < nonceOffset:
		return "salt or key check", []error{ErrWrongPassphrase}
	case off < headerSize:
		return "nonce", []error{ErrTampered}
	case off < size-tagSize:
		return "sealed key set", []error{ErrTampered}
	}
	return "tag", []error{ErrTampered}
}

// Every bit flip anywhere, every truncation and an appended byte are
// refused with the error their region calls for, and never open or panic.
func TestTamperedFile(t *testing.T) {
	path := writeKeystore(t)
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	errOpened := errors.New("opened")
	try := func(data []byte) error {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		ks, err := Open(testOptions(path, rand.Reader))
		if err == nil {
			ks.Close()
			return errOpened
		}
		return err
	}
	for off := range orig {
		name, want := region(off, len(orig))
		for _, bit := range []byte{0x01, 0x80} {
			b := bytes.Clone(orig)
			b[off] ^= bit
			err := try(b)
			ok := false
			for _, w := range want {
				ok = ok || errors.Is(err, w)
			}
			if !ok {
				t.Errorf("byte %d (%s) ^ %#x: %v, want one of %v", off, name, bit, err, want)
			}
		}
	}
	for n := range len(orig) {
		if err := try(orig[:n]); !errors.Is(err, ErrTampered) {
			t.Errorf("truncated to %d of %d bytes: %v, want ErrTampered", n, len(orig), err)
		}
	}
	if err := try(append(bytes.Clone(orig), 0)); !errors.Is(err, ErrTampered) {
		t.Errorf("a byte appended: %v, want ErrTampered", err)
	}
	if err := try(orig); err != errOpened {
		t.Fatalf("the original does not open any more (%v); the test is void", err)
	}
}

// A file sealed with the right keys around a malformed key set is
// tampered, not a wrong passphrase.
func TestMalformedKeySet(t *testing.T) {
	path := writeKeystore(t)
	data, _ := os.ReadFile(path)
	fk, pt, err := openFile(data, []byte(pass))
	if err != nil {
		t.Fatal(err)
	}
	defer fk.clear()
	for name, body := range map[string][]byte{
		"empty":    {},
		"version":  append([]byte{9}, pt[1:]...),
		"trailing": append(bytes.Clone(pt), 0),
		"short":    pt[:len(pt)-1],
		"garbage":  []byte("{\"keys\":[]}"),
	} {
		sealed, err := fk.seal(make([]byte, 12), body)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(path, sealed, 0o600)
		_, err = Open(testOptions(path, rand.Reader))
		if !errors.Is(err, ErrTampered) || !strings.Contains(err.Error(), "file is corrupt or was tampered with") {
			t.Errorf("%s key set: %v, want ErrTampered", name, err)
		}
	}
}

func TestPermissions(t *testing.T) {
	path := writeKeystore(t)
	for _, mode := range []os.FileMode{0o640, 0o604, 0o660, 0o606, 0o610, 0o601} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		_, err := Open(testOptions(path, rand.Reader))
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%04o", mode)) {
			t.Errorf("mode %04o: %v, want a refusal naming the mode", mode, err)
		}
	}
	for _, mode := range []os.FileMode{0o600, 0o400} {
		os.Chmod(path, mode)
		ks, err := Open(testOptions(path, rand.Reader))
		if err != nil {
			t.Errorf("mode %04o: %v", mode, err)
		} else {
			ks.Close()
		}
	}
	os.Chmod(path, 0o600)
	link := filepath.Join(filepath.Dir(path), "link.avks")
	if err := os.Symlink(path, link); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(testOptions(link, rand.Reader)); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("symlink: %v, want a refusal", err)
	}
	if _, err := Open(testOptions(filepath.Dir(path), rand.Reader)); err == nil {
		t.Error("opened a directory")
	}
}

// checkUnchanged checks that ks and its file still hold exactly one
// Ed25519 key "k" with one version that signs.
func checkUnchanged(t *testing.T, ks *Keystore, path string, file []byte) {
	t.Helper()
	ctx := context.Background()
	l, err := ks.ListKeys(ctx, &kms.ListKeysRequest{})
	if err != nil || len(l.Keys) != 1 || l.Keys[0].ID != "k" || len(l.Keys[0].Versions) != 1 || l.Keys[0].Destroyed() {
		t.Fatalf("a failed write changed the state: %+v %v", l, err)
	}
	if _, err := ks.Sign(ctx, &kms.SignRequest{ID: "k", Message: []byte("m")}); err != nil {
		t.Fatalf("the key no longer signs: %v", err)
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, file) {
		t.Fatal("a failed write changed the file")
	}
}

func failingMutations(t *testing.T, ks *Keystore) {
	t.Helper()
	ctx := context.Background()
	if _, err := ks.GenerateKey(ctx, &kms.GenerateKeyRequest{ID: "k2", Algorithm: kms.Ed25519}); err == nil {
		t.Error("GenerateKey succeeded without a write")
	}
	if _, err := ks.RotateKey(ctx, &kms.RotateKeyRequest{ID: "k"}); err == nil {
		t.Error("RotateKey succeeded without a write")
	}
	if _, err := ks.DestroyKey(ctx, &kms.DestroyKeyRequest{ID: "k"}); err == nil {
		t.Error("DestroyKey succeeded without a write")
	}
}

func TestFailedWriteChangesNothing(t *testing.T) {
	t.Run("Hook", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "keystore.avks")
		var fail bool
		opts := testOptions(path, rand.Reader)
		opts.writeFile = func(p string, b []byte) error {
			if fail {
				return errors.New("disk full")
			}
			return writeAtomic(p, b)
		}
		ks := openOpts(t, opts)
		mustGen(t, ks, "k", kms.Ed25519)
		file, _ := os.ReadFile(path)
		fail = true
		failingMutations(t, ks)
		checkUnchanged(t, ks, path, file)
		fail = false
		mustGen(t, ks, "k2", kms.Ed25519)
	})
	t.Run("ParentReplacedByFile", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "data")
		path := filepath.Join(dir, "keystore.avks")
		ks := openOpts(t, testOptions(path, rand.Reader))
		mustGen(t, ks, "k", kms.Ed25519)
		file, _ := os.ReadFile(path)
		// Root ignores directory permissions, so make the directory
		// unusable another way: move it and put a file in its place.
		if err := os.Rename(dir, dir+".moved"); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dir, []byte("not a directory"), 0o600); err != nil {
			t.Fatal(err)
		}
		failingMutations(t, ks)
		os.Remove(dir)
		if err := os.Rename(dir+".moved", dir); err != nil {
			t.Fatal(err)
		}
		checkUnchanged(t, ks, path, file)
		ks.Close()
		checkUnchanged(t, openOpts(t, testOptions(path, rand.Reader)), path, file)
	})
	t.Run("FailingRand", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "keystore.avks")
		r := &switchReader{}
		ks := openOpts(t, testOptions(path, r))
		mustGen(t, ks, "k", kms.Ed25519)
		mustGen(t, ks, "sig", kms.MLDSA65)
		mustGen(t, ks, "aes", kms.AES256)
		file, _ := os.ReadFile(path)
		r.fail.Store(true)
		ctx := context.Background()
		for _, a := range kms.AllAlgorithms {
			if _, err := ks.GenerateKey(ctx, &kms.GenerateKeyRequest{ID: "new", Algorithm: a}); err == nil {
				t.Errorf("%s key generated without randomness", a)
			}
		}
		if _, err := ks.Sign(ctx, &kms.SignRequest{ID: "sig", Message: []byte("m")}); err == nil {
			t.Error("ML-DSA signed without randomness (it must fail closed)")
		}
		if _, err := ks.Encrypt(ctx, &kms.EncryptRequest{ID: "aes", Plaintext: []byte("m")}); err == nil {
			t.Error("encrypted without a nonce")
		}
		if _, err := ks.DestroyKey(ctx, &kms.DestroyKeyRequest{ID: "aes"}); err == nil {
			t.Error("destroyed without a fresh file nonce")
		}
		if _, err := ks.DestroyKey(ctx, &kms.DestroyKeyRequest{ID: "sig"}); err == nil {
			t.Error("destroyed without a fresh file nonce")
		}
		if got, _ := os.ReadFile(path); !bytes.Equal(got, file) {
			t.Error("failed mutations changed the file")
		}
		l, err := ks.ListKeys(ctx, &kms.ListKeysRequest{})
		if err != nil || len(l.Keys) != 3 {
			t.Fatalf("failed mutations changed the key set: %+v %v", l, err)
		}
		for _, k := range l.Keys {
			if k.Destroyed() || len(k.Versions) != 1 {
				t.Errorf("key %q changed: %+v", k.ID, k)
			}
		}
		r.fail.Store(false)
		if _, err := ks.DestroyKey(ctx, &kms.DestroyKeyRequest{ID: "aes"}); err != nil {
			t.Fatal(err)
		}
	})
}

// switchReader is crypto/rand until fail is set, then an error.
type switchReader struct{ fail atomic.Bool }

func (r *switchReader) Read(p []byte) (int, error) {
	if r.fail.Load() {
		return 0, errors.New("entropy source failed")
	}
	return rand.Read(p)
}

// A seeded ChaCha8 stream as Options.Rand, a fixed clock: two keystores
// made from the same stream are byte-identical files with identical keys,
// IDs, ML-DSA signatures and envelopes. Nothing else supplies randomness
// (ECDSA's per-signature noise aside, which Go draws itself).
func TestRandomnessFromOptions(t *testing.T) {
	ctx := context.Background()
	clock := func() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC) }
	type run struct {
		file []byte
		keys []*kms.Key
		sigs map[string][]byte
	}
	make1 := func(seed byte) run {
		var s [32]byte
		s[0] = seed
		path := filepath.Join(t.TempDir(), "keystore.avks")
		opts := testOptions(path, mrand.NewChaCha8(s))
		opts.Now = clock
		ks := openOpts(t, opts)
		out := run{sigs: map[string][]byte{}}
		for _, a := range kms.AllAlgorithms {
			r, err := ks.GenerateKey(ctx, &kms.GenerateKeyRequest{Algorithm: a})
			if err != nil {
				t.Fatal(err)
			}
			id := r.Key.ID
			switch {
			case isMLDSA(a) || a == kms.Ed25519:
				sig, err := ks.Sign(ctx, &kms.SignRequest{ID: id, Message: []byte("m")})
				if err != nil {
					t.Fatal(err)
				}
				out.sigs[string(a)] = sig.Signature
			case a == kms.AES256:
				env, err := ks.Encrypt(ctx, &kms.EncryptRequest{ID: id, Plaintext: []byte("m")})
				if err != nil {
					t.Fatal(err)
				}
				out.sigs[string(a)] = env.Ciphertext
			}
			if _, err := ks.RotateKey(ctx, &kms.RotateKeyRequest{ID: id}); err != nil {
				t.Fatal(err)
			}
		}
		l, err := ks.ListKeys(ctx, &kms.ListKeysRequest{})
		if err != nil {
			t.Fatal(err)
		}
		out.keys = l.Keys
		out.file, _ = os.ReadFile(path)
		return out
	}
	a, b, c := make1(42), make1(42), make1(43)
	if !reflect.DeepEqual(a.keys, b.keys) {
		t.Error("the same stream gave different keys or IDs")
	}
	if !reflect.DeepEqual(a.sigs, b.sigs) {
		t.Error("the same stream gave different ML-DSA or Ed25519 signatures or envelopes")
	}
	if !bytes.Equal(a.file, b.file) {
		t.Error("the same stream gave different keystore files (salt, nonces or seeds came from elsewhere)")
	}
	if reflect.DeepEqual(a.keys, c.keys) || bytes.Equal(a.file, c.file) {
		t.Error("another stream gave the same keys: the test is void")
	}
	for _, k := range c.keys {
		if !strings.HasPrefix(k.ID, "k-") || len(k.ID) != 2+32 {
			t.Errorf("generated ID %q, want k- and 32 hex digits", k.ID)
		}
	}
}

// Options.Rand need not be safe for concurrent use: the keystore
// serializes it (run with -race).
func TestConcurrentUseOfUnsafeRand(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "keystore.avks")
	ks := openOpts(t, testOptions(path, mrand.NewChaCha8([32]byte{7})))
	mustGen(t, ks, "sig", kms.MLDSA44)
	mustGen(t, ks, "aes", kms.AES256)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 10 {
				if _, err := ks.Sign(ctx, &kms.SignRequest{ID: "sig", Message: []byte{byte(i)}}); err != nil {
					t.Error(err)
				}
				if _, err := ks.Encrypt(ctx, &kms.EncryptRequest{ID: "aes", Plaintext: []byte{byte(i)}}); err != nil {
					t.Error(err)
				}
				if i%5 == 0 {
					if _, err := ks.GenerateKey(ctx, &kms.GenerateKeyRequest{ID: fmt.Sprintf("g-%d-%d", w, i), Algorithm: kms.XWing}); err != nil {
						t.Error(err)
					}
				}
			}
		})
	}
	wg.Wait()
}

func TestKDFParams(t *testing.T) {
	dir := t.TempDir()
	opts := testOptions(filepath.Join(dir, "weak.avks"), rand.Reader)
	opts.AllowWeakKDF = false
	if _, err := Open(opts); err == nil {
		t.Fatal("a new keystore accepted TestKDF without AllowWeakKDF")
	}
	if _, err := os.Stat(opts.Path); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a refused Open left a file")
	}
	for _, p := range []KDFParams{{Time: 0, MemoryKiB: 64, Threads: 1}, {Time: 1, MemoryKiB: 64, Threads: 0},
		{Time: 1, MemoryKiB: 4, Threads: 1}, {Time: 65, MemoryKiB: 64, Threads: 1}, {Time: 1, MemoryKiB: 5 << 20, Threads: 1}} {
		opts := testOptions(filepath.Join(dir, "bad.avks"), rand.Reader)
		opts.KDF = p
		if _, err := Open(opts); err == nil {
			t.Errorf("KDF %+v accepted", p)
		}
	}
	if err := MinKDF.Validate(); err != nil {
		t.Errorf("MinKDF: %v", err)
	}
	if err := DefaultKDF.Validate(); err != nil {
		t.Errorf("DefaultKDF: %v", err)
	}
	if err := TestKDF.Validate(); err == nil {
		t.Error("TestKDF passes the production floor")
	}

	// An existing file keeps its own parameters whatever Options.KDF says.
	path := filepath.Join(dir, "ks.avks")
	ks := openOpts(t, testOptions(path, rand.Reader))
	ks.Close()
	opts = testOptions(path, rand.Reader)
	opts.KDF = MinKDF
	ks = openOpts(t, opts)
	mustGen(t, ks, "k", kms.Ed25519)
	ks.Close()
	raw, _ := os.ReadFile(path)
	p, _, err := parseHeader(raw)
	if err != nil || p != TestKDF {
		t.Errorf("the file's KDF parameters became %+v (%v), want %+v", p, err, TestKDF)
	}
}

// A new keystore with the production default parameters (slow: one
// Argon2id run of 64 MiB).
func TestDefaultKDF(t *testing.T) {
	if testing.Short() {
		t.Skip("64 MiB Argon2id")
	}
	path := filepath.Join(t.TempDir(), "ks.avks")
	ks, err := Open(Options{Path: path, Passphrase: []byte(pass), Rand: rand.Reader})
	if err != nil {
		t.Fatal(err)
	}
	ks.Close()
	raw, _ := os.ReadFile(path)
	if p, _, err := parseHeader(raw); err != nil || p != DefaultKDF {
		t.Errorf("header says %+v (%v), want %+v", p, err, DefaultKDF)
	}
}

func TestArguments(t *testing.T) {
	ctx := context.Background()
	ks, _ := newKS(t)
	mustGen(t, ks, "k", kms.Ed25519)
	tooMany := map[string]string{}
	for i := range maxLabels + 1 {
		tooMany[fmt.Sprint(i)] = "v"
	}
	for name, labels := range map[string]map[string]string{
		"too many":    tooMany,
		"empty key":   {"": "v"},
		"long key":    {strings.Repeat("k", maxLabelKeyLen+1): "v"},
		"long value":  {"k": strings.Repeat("v", maxLabelValueLen+1)},
		"invalid utf": {"k": "\xff"},
	} {
		_, err := ks.GenerateKey(ctx, &kms.GenerateKeyRequest{ID: "l", Algorithm: kms.Ed25519, Labels: labels})
		if !errors.Is(err, errdef.ErrInvalidArgument) {
			t.Errorf("labels %s: %v", name, err)
		}
	}
	for _, v := range []int{-1, -100} {
		if _, err := ks.PublicKey(ctx, &kms.PublicKeyRequest{ID: "k", Version: v}); !errors.Is(err, errdef.ErrInvalidArgument) {
			t.Errorf("version %d: %v", v, err)
		}
	}
	if _, err := ks.ListKeys(ctx, &kms.ListKeysRequest{PageToken: "not a token!"}); !errors.Is(err, errdef.ErrInvalidArgument) {
		t.Errorf("malformed page token: %v", err)
	}
}
