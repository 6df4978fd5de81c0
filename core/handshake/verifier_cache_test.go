package handshake

import (
	"bytes"
	"errors"
	"hash/maphash"
	"testing"
	"time"

	"github.com/avonzt/avon/internal/pqx509"
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

// TestCachesCompareInFull: the verifier's caches are looked up by a 64-bit
// hash, and an entry that sits under the right hash but holds other bytes
// (a collision, planted here) is never taken for a hit: the memo does not
// accept a signature it did not verify, the key cache does not verify with
// another key, and the intermediate cache does not return another
// certificate.
func TestCachesCompareInFull(t *testing.T) {
	f := newFixture(t)
	v := f.verifier
	if _, err := v.VerifyChain(f.chain, testNow); err != nil {
		t.Fatal(err)
	}
	inter, err := pqx509.ParseCertificate(f.chain[1])
	if err != nil {
		t.Fatal(err)
	}
	pub, msg, sig := f.pki.root.PublicKey.Raw, inter.RawTBSCertificate, inter.Signature
	c := v.sig

	t.Run("memo", func(t *testing.T) {
		bad := bytes.Clone(sig)
		bad[10] ^= 1
		// The good signature's memo entry, planted under the bad one's hash.
		var h maphash.Hash
		h.SetSeed(c.seed)
		var l [8]byte
		for _, p := range [][]byte{[]byte(pqx509.MLDSA65), pub, msg, bad} {
			be.PutUint64(l[:], uint64(len(p)))
			h.Write(l[:])
			h.Write(p)
		}
		c.ok.put(h.Sum64(), verified{alg: pqx509.MLDSA65, pub: pub, msg: msg, sig: sig})
		if err := c.Verify(pqx509.MLDSA65, pub, msg, bad); !errors.Is(err, pqx509.ErrBadSignature) {
			t.Fatalf("bad signature under a colliding memo entry: %v, want ErrBadSignature", err)
		}
		if err := c.Verify(pqx509.MLDSA65, pub, msg, sig); err != nil {
			t.Fatalf("good signature: %v", err)
		}
	})
	t.Run("key", func(t *testing.T) {
		// Another key, parsed, planted under the root key's hash.
		opk, _ := mldsaKey("other")
		oraw, _ := opk.MarshalBinary()
		c.keys.put(maphash.Bytes(c.seed, pub), parsedKey{raw: oraw, pk: opk})
		if err := c.verify(pqx509.MLDSA65, pub, msg, sig); err != nil {
			t.Fatalf("verification with a colliding key entry: %v", err)
		}
		if err := c.verify(pqx509.MLDSA65, oraw, msg, sig); !errors.Is(err, pqx509.ErrBadSignature) {
			t.Fatalf("signature checked with the wrong key: %v, want ErrBadSignature", err)
		}
	})
	t.Run("intermediate", func(t *testing.T) {
		// The root's parse, planted under the intermediate's hash.
		v.inters.put(maphash.Bytes(v.seed, f.chain[1]), f.pki.root)
		got, err := v.intermediate(f.chain[1])
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Raw, f.chain[1]) {
			t.Fatal("intermediate cache returned another certificate")
		}
		if _, err := v.VerifyChain(f.chain, testNow); err != nil {
			t.Fatal(err)
		}
	})
}
