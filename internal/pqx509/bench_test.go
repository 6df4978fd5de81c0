package pqx509

import (
	"context"
	"crypto"
	"math/big"
	"testing"
	"time"
)

func benchChain(b *testing.B) *chain {
	b.Helper()
	return makeChain(b, func() Signer { return newMLDSASigner(b, MLDSA65) })
}

// A leaf issued by an ML-DSA-65 intermediate with an in-memory circl
// signer: build, lint, sign, parse back, verify.
func BenchmarkCreateCertificate(b *testing.B) {
	ch := benchChain(b)
	ctx := context.Background()
	pub := newMLDSASigner(b, MLDSA65).Public()
	b.ReportAllocs()
	for b.Loop() {
		tmpl := leafTemplate("bench.avon.test", pub)
		if _, err := CreateCertificate(ctx, tmpl, ch.inter, ch.interS); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseCertificate(b *testing.B) {
	ch := benchChain(b)
	b.SetBytes(int64(len(ch.leafDER)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseCertificate(ch.leafDER); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCheckSignatureFrom(b *testing.B) {
	ch := benchChain(b)
	b.ReportAllocs()
	for b.Loop() {
		if err := ch.leaf.CheckSignatureFrom(ch.inter, DefaultVerifier); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyChain(b *testing.B) {
	ch := benchChain(b)
	opts := VerifyOptions{Roots: []*Certificate{ch.root}, Intermediates: []*Certificate{ch.inter}, CurrentTime: testNow, DNSName: "agent.avon.test"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Verify(ch.leaf, opts); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCreateCRL1000(b *testing.B) {
	ch := benchChain(b)
	revoked := make([]RevokedCertificate, 1000)
	for i := range revoked {
		revoked[i] = RevokedCertificate{SerialNumber: new(big.Int).Lsh(big.NewInt(int64(i+1)), 100), RevocationTime: testNow, ReasonCode: i % 6}
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := CreateCRL(ctx, CRLTemplate{Number: big.NewInt(1), ThisUpdate: testNow, NextUpdate: testNow.Add(time.Hour), Revoked: revoked}, ch.inter, ch.interS); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCreateOCSPResponse(b *testing.B) {
	ch := benchChain(b)
	id, _ := NewCertID(ch.inter, ch.leaf.SerialNumber, crypto.SHA256)
	tmpl := OCSPResponseTemplate{ProducedAt: testNow, Nonce: []byte("0123456789abcdef"),
		Responses: []OCSPSingleResponse{{CertID: id, Status: OCSPGood, ThisUpdate: testNow, NextUpdate: testNow.Add(time.Hour)}}}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := CreateOCSPResponse(ctx, tmpl, ch.inter, ch.interS); err != nil {
			b.Fatal(err)
		}
	}
}
