package main

import (
	crand "crypto/rand"
	"testing"

	"github.com/cloudflare/circl/kem/xwing"
	"github.com/cloudflare/circl/sign/mldsa/mldsa65"

	"github.com/avonzt/avon/core/handshake"
)

// TestFloorCPU checks that the floor measurement runs and reports a
// positive figure with the gateway's kind of signer. A thread's CPU time
// (RUSAGE_THREAD) advances at scheduler ticks (4 ms at HZ=250, 10 ms at
// HZ=100) and context switches, so the run must span several ticks: 100
// iterations are 25-100 ms of CPU (5 iterations read 0 on the development
// VM).
func TestFloorCPU(t *testing.T) {
	s := floorSigner(t)
	us, err := floorCPU(s, 100)
	if err != nil {
		t.Fatal(err)
	}
	if us <= 0 {
		t.Fatalf("floor %v us, want > 0", us)
	}
}

func floorSigner(tb testing.TB) *handshake.MLDSA65Signer {
	tb.Helper()
	s, err := handshake.NewMLDSA65Signer(gatewayKey().PrivateKey(), crand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// BenchmarkFloorParts times the floor's parts one by one, so the floor
// avon-bench reports can be checked against the primitives: the whole
// floor iteration, X-Wing key unpack + encapsulation, one hedged ML-DSA-65
// signature by the gateway's signer, an ML-DSA-65 public key parse, and a
// verification with an already parsed key.
func BenchmarkFloorParts(b *testing.B) {
	s := floorSigner(b)
	_, epk, err := xwing.GenerateKeyPair(crand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	epkb, _ := epk.MarshalBinary()
	vpk, vsk, err := mldsa65.GenerateKey(crand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	vpkb, _ := vpk.MarshalBinary()
	msg := make([]byte, 32)
	sig := make([]byte, mldsa65.SignatureSize)
	if err := mldsa65.SignTo(vsk, msg, nil, false, sig); err != nil {
		b.Fatal(err)
	}
	b.Run("floor", func(b *testing.B) {
		us, err := floorCPU(s, b.N)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(us, "thread-us/op")
	})
	b.Run("xwing-unpack-encaps", func(b *testing.B) {
		ct := make([]byte, xwing.CiphertextSize)
		ss := make([]byte, xwing.SharedKeySize)
		seed := make([]byte, xwing.EncapsulationSeedSize)
		for b.Loop() {
			var pk xwing.PublicKey
			if err := pk.Unpack(epkb); err != nil {
				b.Fatal(err)
			}
			pk.EncapsulateTo(ct, ss, seed)
		}
	})
	b.Run("mldsa65-sign", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.Sign(msg, []byte("avon-v1 responder")); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("mldsa65-pubkey-parse", func(b *testing.B) {
		for b.Loop() {
			var k mldsa65.PublicKey
			if err := k.UnmarshalBinary(vpkb); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("mldsa65-verify-parsed", func(b *testing.B) {
		for b.Loop() {
			if !mldsa65.Verify(vpk, msg, nil, sig) {
				b.Fatal("signature does not verify")
			}
		}
	})
}
