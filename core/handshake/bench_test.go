package handshake

import (
	"crypto/rand"
	"testing"
	"time"

	"github.com/cloudflare/circl/kem/xwing"
	"github.com/cloudflare/circl/sign/mldsa/mldsa65"
)

// BenchmarkResponderHandshake is the gateway's CPU per handshake:
// HandleInitiation + HandleFinish (one X-Wing encapsulation, one ML-DSA-65
// signature, the leaf's signature checked by the cached intermediate key,
// sig_i checked with the leaf's freshly parsed key). The agent's work is
// outside the timer. "new-agent" issues a new leaf for every handshake (a
// leaf signature the cache has not seen); "reconnect" reuses one (the
// verified-signature cache answers for the chain). "new-agent-reused-buffer"
// is "new-agent" with the Response built in one reused buffer
// (HandleInitiationTo), as the gateway does.
func BenchmarkResponderHandshake(b *testing.B) {
	for _, mode := range []string{"new-agent", "reconnect", "new-agent-reused-buffer"} {
		b.Run(mode, func(b *testing.B) {
			f := newFixture(b)
			f.rand = rand.Reader
			r, err := NewResponder(ResponderConfig{Signer: f.gwSigner, Verifier: f.verifier, Rand: rand.Reader, Now: fixedNow,
				ReplayCacheSize: b.N + 16})
			if err != nil {
				b.Fatal(err)
			}
			f.handshake(b, f.initiator(b, 1, fixedNow), r, 2) // warm the issuer caches
			buf := make([]byte, 0, ResponseFullLen)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				if mode != "reconnect" {
					f.chain, _ = f.pki.agent(b, "agent-0001", "agent", testNow.Add(-time.Hour), testNow.Add(time.Hour))
				}
				in := f.initiator(b, 1, fixedNow)
				init, err := in.Initiation(nil)
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				var resp []byte
				var p *PendingHandshake
				if mode == "new-agent-reused-buffer" {
					resp, p, err = r.HandleInitiationTo(buf, init, 2)
				} else {
					resp, p, err = r.HandleInitiation(init, 2)
				}
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				fin, _, err := in.HandleResponse(resp)
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				if _, err := p.HandleFinish(fin); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkFloor is the same primitives alone, as the responder needs
// them: one X-Wing encapsulation (key unpack included), one ML-DSA-65
// signature, two ML-DSA-65 verifications, one of them with a freshly parsed
// key (the leaf's; the issuer's key is parsed once and cached by
// ChainVerifier). BenchmarkResponderHandshake minus this is the protocol's
// own overhead.
func BenchmarkFloor(b *testing.B) {
	_, epk, _ := xwing.GenerateKeyPair(rand.Reader)
	epkBytes := make([]byte, xwing.PublicKeySize)
	epk.Pack(epkBytes)
	_, sk := mldsaKey("gateway")
	vpk, _ := mldsaKey("agent")
	vraw, _ := vpk.MarshalBinary()
	msg := make([]byte, 32)
	_, vsk := mldsaKey("agent")
	vsig := make([]byte, mldsa65.SignatureSize)
	if err := mldsa65.SignTo(vsk, msg, []byte(contextInitiator), true, vsig); err != nil {
		b.Fatal(err)
	}
	sig := make([]byte, mldsa65.SignatureSize)
	ct, ss := make([]byte, xwing.CiphertextSize), make([]byte, xwing.SharedKeySize)
	seed := make([]byte, xwing.EncapsulationSeedSize)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var pk xwing.PublicKey
		if err := pk.Unpack(epkBytes); err != nil {
			b.Fatal(err)
		}
		_, _ = rand.Read(seed)
		pk.EncapsulateTo(ct, ss, seed)
		if err := mldsa65.SignTo(sk, msg, []byte(contextResponder), true, sig); err != nil {
			b.Fatal(err)
		}
		if !mldsa65.Verify(vpk, msg, []byte(contextInitiator), vsig) {
			b.Fatal("verify")
		}
		var p mldsa65.PublicKey
		if err := p.UnmarshalBinary(vraw); err != nil {
			b.Fatal(err)
		}
		if !mldsa65.Verify(&p, msg, []byte(contextInitiator), vsig) {
			b.Fatal("verify")
		}
	}
}

// BenchmarkInitiatorHandshake is the agent's CPU: Initiation (X-Wing key
// generation) + HandleResponse (decapsulation, sig_r verification, sig_i).
func BenchmarkInitiatorHandshake(b *testing.B) {
	f := newFixture(b)
	f.rand = rand.Reader
	r, err := NewResponder(ResponderConfig{Signer: f.gwSigner, Verifier: f.verifier, Rand: rand.Reader, Now: fixedNow,
		ReplayCacheSize: b.N + 16})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		in := f.initiator(b, 1, fixedNow)
		init, err := in.Initiation(nil)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		resp, _, err := r.HandleInitiation(init, 2)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if _, _, err := in.HandleResponse(resp); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRekeyResponder is the gateway's CPU per rekey: HandleRekeyInit
// (AEAD open, key checks, one X-Wing encapsulation, key schedule).
func BenchmarkRekeyResponder(b *testing.B) {
	f := newFixture(b)
	f.rand = rand.Reader
	h := f.handshake(b, f.initiator(b, 1, fixedNow), f.responder(b, fixedNow), 2)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		rk, err := NewRekeyInitiator(h.ri, rand.Reader, fixedNow, 3)
		if err != nil {
			b.Fatal(err)
		}
		msg, err := rk.RekeyInit()
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if _, _, err := HandleRekeyInit(h.rr, msg, rand.Reader, fixedNow, 4); err != nil {
			b.Fatal(err)
		}
	}
}
