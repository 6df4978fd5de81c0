package handshake

import (
	"crypto/rand"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/cloudflare/circl/sign/mldsa/mldsa65"
)

// TestSignerConcurrent: signatures made at once from several goroutines
// all verify, and a Close racing them leaves every later Sign failing with
// ErrSigner (run with -race).
func TestSignerConcurrent(t *testing.T) {
	pk, sk := mldsaKey("concurrent")
	s, err := NewMLDSA65Signer(sk, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ctx := []byte(contextResponder)
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for g := range 8 {
		wg.Go(func() {
			for i := range 4 {
				msg := []byte{byte(g), byte(i)}
				sig, err := s.Sign(msg, ctx)
				if err != nil {
					errs <- err
					return
				}
				if !mldsa65.Verify(pk, msg, ctx, sig) {
					errs <- errors.New("signature does not verify")
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	// Close while signatures are being made: each Sign either finishes
	// with a valid signature or fails with ErrSigner.
	errs = make(chan error, 64)
	for g := range 4 {
		wg.Go(func() {
			for i := range 8 {
				msg := []byte{byte(g), byte(i), 1}
				sig, err := s.Sign(msg, ctx)
				switch {
				case errors.Is(err, ErrSigner):
				case err != nil:
					errs <- err
				case !mldsa65.Verify(pk, msg, ctx, sig):
					errs <- errors.New("signature during Close does not verify")
				}
			}
		})
	}
	s.Close()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if _, err := s.Sign([]byte("after"), ctx); !errors.Is(err, ErrSigner) {
		t.Fatalf("Sign after Close: %v, want ErrSigner", err)
	}
}

// TestSignerNotSerialized: Sign holds the key only shared, so a signature
// in progress (here: the key lock held shared by the test) does not keep
// another from being made. With an exclusive lock this Sign would wait
// forever; the bound only turns that hang into a failure.
func TestSignerNotSerialized(t *testing.T) {
	_, sk := mldsaKey("shared")
	s, err := NewMLDSA65Signer(sk, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s.mu.RLock()
	done := make(chan error, 1)
	go func() {
		_, err := s.Sign([]byte("m"), nil)
		done <- err
	}()
	select {
	case err := <-done:
		s.mu.RUnlock()
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		s.mu.RUnlock()
		t.Fatal("Sign waited for another holder of the key")
	}
}
