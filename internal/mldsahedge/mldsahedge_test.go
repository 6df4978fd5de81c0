package mldsahedge

import (
	"bytes"
	"testing"

	"github.com/cloudflare/circl/sign/mldsa/mldsa65"
)

func TestReady(t *testing.T) {
	if err := Ready(); err != nil {
		t.Fatal(err)
	}
}

// TestSign65: an all-zero rnd reproduces circl's deterministic signature,
// another rnd gives a different one that verifies, with the context bound.
func TestSign65(t *testing.T) {
	var seed [32]byte
	seed[0] = 7
	pk, sk := mldsa65.NewKeyFromSeed(&seed)
	msg, ctx := []byte("message"), []byte("ctx")
	det := make([]byte, mldsa65.SignatureSize)
	if err := mldsa65.SignTo(sk, msg, ctx, false, det); err != nil {
		t.Fatal(err)
	}
	if got := Sign65(sk, MessagePrime(msg, ctx), [32]byte{}); !bytes.Equal(got, det) {
		t.Fatal("zero rnd does not reproduce the deterministic signature")
	}
	h := Sign65(sk, MessagePrime(msg, ctx), [32]byte{9})
	if bytes.Equal(h, det) || !mldsa65.Verify(pk, msg, ctx, h) {
		t.Fatal("hedged signature equal to the deterministic one, or does not verify")
	}
	if mldsa65.Verify(pk, msg, []byte("other"), h) {
		t.Fatal("signature verifies under another context")
	}
}
