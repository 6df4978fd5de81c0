package handshake

import (
	"errors"
	"testing"
	"time"
)

// TestLeafSignatureNotMemoized: the memo of verified signatures keeps the
// intermediate's signature (by the root, the same for every agent) but not
// the leaf's, which is verified with the cached issuer key every time; a
// leaf with a broken signature fails after its valid twin was accepted.
func TestLeafSignatureNotMemoized(t *testing.T) {
	f := newFixture(t)
	v := f.verifier
	if _, err := v.VerifyChain(f.chain, testNow); err != nil {
		t.Fatal(err)
	}
	if n := len(v.sig.ok.m); n != 1 {
		t.Fatalf("%d memoized signatures after one chain, want 1 (the intermediate's)", n)
	}
	if n := len(v.sig.keys.m); n != 2 {
		t.Fatalf("%d parsed issuer keys, want 2 (root and intermediate)", n)
	}
	for i := range 3 {
		chain, _ := f.pki.agent(t, "agent-memo", "agent memo", testNow.Add(-time.Hour), testNow.Add(time.Hour))
		if _, err := v.VerifyChain(chain, testNow); err != nil {
			t.Fatalf("leaf %d: %v", i, err)
		}
	}
	if n := len(v.sig.ok.m); n != 1 {
		t.Fatalf("%d memoized signatures after four leaves of one intermediate, want 1", n)
	}
	// The same leaf with its signature's last byte changed: the first
	// acceptance is not remembered for it.
	bad := append([]byte(nil), f.chain[0]...)
	bad[len(bad)-1] ^= 0x01
	if _, err := v.VerifyChain([][]byte{bad, f.chain[1]}, testNow); !errors.Is(err, ErrCertificate) {
		t.Fatalf("leaf with a broken signature: %v, want ErrCertificate", err)
	}
	// A broken intermediate signature is refused even though the good
	// one is memoized.
	badInter := append([]byte(nil), f.chain[1]...)
	badInter[len(badInter)-1] ^= 0x01
	if _, err := v.VerifyChain([][]byte{f.chain[0], badInter}, testNow); !errors.Is(err, ErrCertificate) {
		t.Fatalf("intermediate with a broken signature: %v, want ErrCertificate", err)
	}
}
