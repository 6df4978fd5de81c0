package engine_test

import (
	"context"
	"errors"
	"testing"

	"github.com/avonzt/avon/plugins/kms-hsm/engine"
	"github.com/avonzt/avon/plugins/kms-hsm/softhsmtest"
	"github.com/avonzt/avon/plugins/kms-hsm/token"
	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/host"
	"github.com/avonzt/avon/sdk/kms"
	"github.com/avonzt/avon/sdk/kms/kmstest"
	"github.com/avonzt/avon/sdk/plugintest"
)

func TestMain(m *testing.M) { softhsmtest.Main(m) }

func openToken(t testing.TB, h *softhsmtest.HSM) *token.Token {
	t.Helper()
	tok, err := token.Open(context.Background(), token.Options{Module: h.Module, TokenLabel: h.TestToken, PIN: softhsmtest.PIN})
	if err != nil {
		t.Fatalf("open token: %v", err)
	}
	return tok
}

// open returns an engine over the test token with its own host storage.
func open(t testing.TB, h *softhsmtest.HSM, hst host.Host) *engine.Engine {
	t.Helper()
	ctx := context.Background()
	tok := openToken(t, h)
	e, err := engine.New(ctx, engine.Options{Token: tok, Storage: hst.Storage(), Rand: hst.Rand()})
	if err != nil {
		tok.Close()
		t.Fatalf("engine: %v", err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// The conformance kit against the engine in this process, on a real
// SoftHSM2 token. Each backend the kit asks for has empty host storage;
// the token is shared (object IDs are random, so backends never collide).
func TestConformance(t *testing.T) {
	h := softhsmtest.Require(t)
	kmstest.Run(t, func(t *testing.T) kms.KMS { return open(t, h, plugintest.NewHost()) },
		kmstest.WithoutExporter(), kmstest.WithRandomSource(true))
}

// Decrypt parses caller-supplied envelopes: any byte string gets a typed
// error (or, for a real envelope, its plaintext), never a panic.
func FuzzDecrypt(f *testing.F) {
	h := softhsmtest.Require(f)
	e := open(f, h, plugintest.NewHost())
	ctx := context.Background()
	if _, err := e.GenerateKey(ctx, &kms.GenerateKeyRequest{ID: "fuzz-aes", Algorithm: kms.AES256}); err != nil {
		f.Fatal(err)
	}
	r, err := e.Encrypt(ctx, &kms.EncryptRequest{ID: "fuzz-aes", Plaintext: []byte("plaintext"), AAD: []byte("aad")})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(r.Ciphertext, []byte("aad"))
	f.Add([]byte{1, 0, 0, 0, 1}, []byte(nil))
	f.Add([]byte{}, []byte(nil))
	f.Fuzz(func(t *testing.T, ct, aad []byte) {
		d, err := e.Decrypt(ctx, &kms.DecryptRequest{ID: "fuzz-aes", Ciphertext: ct, AAD: aad})
		switch {
		case err == nil:
			if string(d.Plaintext) != "plaintext" {
				t.Fatalf("a forged envelope decrypted to %q", d.Plaintext)
			}
		case !errors.Is(err, kms.ErrInvalidCiphertext) && !errors.Is(err, errdef.ErrInvalidArgument):
			t.Fatalf("Decrypt: untyped error %v", err)
		}
	})
}
