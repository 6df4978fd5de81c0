package engine_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/pkcs11"

	"github.com/avonzt/avon/plugins/kms-hsm/softhsmtest"
	"github.com/avonzt/avon/plugins/kms-hsm/token"
	"github.com/avonzt/avon/sdk/kms"
	"github.com/avonzt/avon/sdk/kms/kmstest"
	"github.com/avonzt/avon/sdk/plugintest"
)

// closeAllSessions closes every session of this process on the test token
// behind the pool's back, through a second handle on the module (PKCS#11
// state is per process: this also ends the login).
func closeAllSessions(t *testing.T, h *softhsmtest.HSM) {
	t.Helper()
	c := pkcs11.New(h.Module)
	if c == nil {
		t.Fatal("load module")
	}
	defer c.Destroy() // unloads our handle only; the library stays initialized
	if err := c.Initialize(); err != nil && !token.Is(err, pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		t.Fatal(err)
	}
	slots, err := c.GetSlotList(true)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range slots {
		ti, err := c.GetTokenInfo(s)
		if err == nil && strings.TrimRight(ti.Label, " ") == h.TestToken {
			if err := c.CloseAllSessions(s); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
	t.Fatalf("no token %q", h.TestToken)
}

// After every session is closed (and the login with them), the next
// operations reopen sessions, log in again and succeed.
func TestSessionInvalidation(t *testing.T) {
	h := softhsmtest.Require(t)
	e := open(t, h, plugintest.NewHost())
	ctx := context.Background()
	for _, a := range []kms.Algorithm{kms.ECDSAP256, kms.MLDSA65, kms.AES256, kms.XWing} {
		if _, err := e.GenerateKey(ctx, &kms.GenerateKeyRequest{ID: "sess-" + strings.ToLower(string(a)), Algorithm: a}); err != nil {
			t.Fatal(err)
		}
	}
	for round := range 3 {
		closeAllSessions(t, h)
		for _, a := range []kms.Algorithm{kms.ECDSAP256, kms.MLDSA65} {
			id := "sess-" + strings.ToLower(string(a))
			r, err := e.Sign(ctx, &kms.SignRequest{ID: id, Message: []byte("after close")})
			if err != nil {
				t.Fatalf("round %d: sign %s after the sessions were closed: %v", round, a, err)
			}
			pk, err := e.PublicKey(ctx, &kms.PublicKeyRequest{ID: id})
			if err != nil {
				t.Fatal(err)
			}
			if ok, err := kmstest.VerifyIndependently(a, pk.PublicKey, []byte("after close"), nil, r.Signature); !ok || err != nil {
				t.Fatalf("round %d: %s signature does not verify: %v", round, a, err)
			}
		}
		closeAllSessions(t, h)
		enc, err := e.Encrypt(ctx, &kms.EncryptRequest{ID: "sess-aes-256", Plaintext: []byte("p")})
		if err != nil {
			t.Fatalf("round %d: encrypt: %v", round, err)
		}
		if d, err := e.Decrypt(ctx, &kms.DecryptRequest{ID: "sess-aes-256", Ciphertext: enc.Ciphertext}); err != nil || string(d.Plaintext) != "p" {
			t.Fatalf("round %d: decrypt: %v", round, err)
		}
		closeAllSessions(t, h)
		if _, err := e.GenerateRandom(ctx, &kms.GenerateRandomRequest{Length: 32}); err != nil {
			t.Fatalf("round %d: random: %v", round, err)
		}
		if _, err := e.RotateKey(ctx, &kms.RotateKeyRequest{ID: "sess-ecdsa-p256"}); err != nil {
			t.Fatalf("round %d: rotate: %v", round, err)
		}
	}
}

// Parallel signers share the pool (more signers than sessions); run with
// -race. Every signature verifies independently.
func TestParallelSigns(t *testing.T) {
	h := softhsmtest.Require(t)
	e := open(t, h, plugintest.NewHost())
	ctx := context.Background()
	algs := []kms.Algorithm{kms.ECDSAP256, kms.Ed25519, kms.MLDSA65}
	pubs := map[kms.Algorithm][]byte{}
	for _, a := range algs {
		r, err := e.GenerateKey(ctx, &kms.GenerateKeyRequest{ID: "par-" + strings.ToLower(string(a)), Algorithm: a})
		if err != nil {
			t.Fatal(err)
		}
		pubs[a] = r.Key.Versions[0].PublicKey
	}
	const workers, rounds = 12, 10
	var wg sync.WaitGroup
	errs := make(chan error, workers*rounds*len(algs))
	for w := range workers {
		wg.Go(func() {
			for i := range rounds {
				a := algs[(w+i)%len(algs)]
				msg := fmt.Appendf(nil, "parallel %d/%d", w, i)
				r, err := e.Sign(ctx, &kms.SignRequest{ID: "par-" + strings.ToLower(string(a)), Message: msg})
				if err != nil {
					errs <- fmt.Errorf("%s: %w", a, err)
					continue
				}
				if ok, err := kmstest.VerifyIndependently(a, pubs[a], msg, nil, r.Signature); !ok || err != nil {
					errs <- fmt.Errorf("%s signature %d/%d does not verify: %v", a, w, i, err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// Signing while the key is destroyed: every call either signs or fails with
// kms.ErrKeyDestroyed, never with an internal or corruption error.
func TestSignDuringDestroy(t *testing.T) {
	h := softhsmtest.Require(t)
	e := open(t, h, plugintest.NewHost())
	ctx := context.Background()
	for i := range 10 {
		a := []kms.Algorithm{kms.ECDSAP256, kms.MLDSA44}[i%2]
		id := fmt.Sprintf("race-%d", i)
		if _, err := e.GenerateKey(ctx, &kms.GenerateKeyRequest{ID: id, Algorithm: a}); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make(chan error, 4)
		for range 4 {
			wg.Go(func() {
				for range 200 {
					_, err := e.Sign(ctx, &kms.SignRequest{ID: id, Message: []byte("m")})
					if err != nil {
						errs <- err
						return
					}
				}
				errs <- nil
			})
		}
		if _, err := e.DestroyKey(ctx, &kms.DestroyKeyRequest{ID: id}); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil && !errors.Is(err, kms.ErrKeyDestroyed) {
				t.Errorf("%s: sign during destroy: %v, want kms.ErrKeyDestroyed", a, err)
			}
		}
	}
}
