package pqx509

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"testing"
	"time"
)

// fuzzSeeds makes one of each structure, ML-DSA-44 and ECDSA-P256, and an
// RSA-2048 subject key, CSR and certificate.
type seeds struct {
	certs, csrs, crls, reqs, resps, spkis [][]byte
	issuer                                *Certificate
}

func makeSeeds(f *testing.F) *seeds {
	f.Helper()
	ctx := context.Background()
	s := &seeds{}
	for _, ns := range []func() Signer{
		func() Signer { return newMLDSASigner(f, MLDSA44) },
		func() Signer { return newECDSASigner(f, ECDSAP256) },
	} {
		ch := makeChain(f, ns)
		s.issuer = ch.inter
		s.certs = append(s.certs, ch.rootDER, ch.interDER, ch.leafDER)
		s.spkis = append(s.spkis, ch.leaf.RawSubjectPublicKeyInfo)
		csr, err := CreateCSR(ctx, CSRTemplate{Subject: pkix.Name{CommonName: "f"}, DNSNames: []string{"f.test"}}, ch.leafS)
		if err != nil {
			f.Fatal(err)
		}
		s.csrs = append(s.csrs, csr)
		if len(s.csrs) == 1 { // an RSA subject key and CSR, once
			k := rsaKey(f, 2048)
			spki, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
			s.spkis = append(s.spkis, spki)
			s.csrs = append(s.csrs, rsaCSR(f, k, x509.SHA256WithRSA))
			rc, err := CreateCertificate(ctx, leafTemplate("rsa.test", PublicKey{Algorithm: RSA2048, Raw: x509.MarshalPKCS1PublicKey(&k.PublicKey)}),
				ch.inter, ch.interS)
			if err != nil {
				f.Fatal(err)
			}
			s.certs = append(s.certs, rc)
		}
		crl, err := CreateCRL(ctx, CRLTemplate{Number: big.NewInt(1), ThisUpdate: testNow, NextUpdate: testNow.Add(time.Hour),
			Revoked: []RevokedCertificate{{SerialNumber: big.NewInt(3), RevocationTime: testNow, ReasonCode: 1}}}, ch.inter, ch.interS)
		if err != nil {
			f.Fatal(err)
		}
		s.crls = append(s.crls, crl)
		req, err := CreateOCSPRequest(ch.inter, []*big.Int{ch.leaf.SerialNumber}, crypto.SHA1, []byte("nonce"))
		if err != nil {
			f.Fatal(err)
		}
		s.reqs = append(s.reqs, req)
		id, _ := NewCertID(ch.inter, ch.leaf.SerialNumber, crypto.SHA256)
		resp, err := CreateOCSPResponse(ctx, OCSPResponseTemplate{ProducedAt: testNow, Nonce: []byte("n"), ResponderIDByKey: true,
			Responses: []OCSPSingleResponse{{CertID: id, Status: OCSPRevoked, RevokedAt: testNow, RevocationReason: 4, ThisUpdate: testNow, NextUpdate: testNow.Add(time.Hour)}}},
			ch.inter, ch.interS)
		if err != nil {
			f.Fatal(err)
		}
		errResp, _ := CreateOCSPErrorResponse(OCSPTryLater)
		s.resps = append(s.resps, resp, errResp)
	}
	return s
}

func typed(t *testing.T, err error) {
	t.Helper()
	var pe *ParseError
	if !errors.As(err, &pe) {
		t.Fatalf("untyped error %T: %v", err, err)
	}
}

func FuzzParseCertificate(f *testing.F) {
	for _, d := range makeSeeds(f).certs {
		f.Add(d)
	}
	f.Fuzz(func(t *testing.T, der []byte) {
		_ = Lint(der)
		c, err := ParseCertificate(der)
		if err != nil {
			typed(t, err)
			return
		}
		_ = Lint(c.RawTBSCertificate)
		spki, err := MarshalSPKI(c.PublicKey)
		if err != nil || !bytes.Equal(spki, c.RawSubjectPublicKeyInfo) {
			t.Fatalf("accepted key does not re-encode: %v", err)
		}
		again, err := ParseCertificate(c.Raw)
		if err != nil || !again.Equal(c) {
			t.Fatalf("accepted certificate does not parse again: %v", err)
		}
		_ = c.CheckSignatureFrom(c, nil)
		_, _ = Verify(c, VerifyOptions{Roots: []*Certificate{c}, CurrentTime: testNow, DNSName: "a.test"})
	})
}

func FuzzParseCSR(f *testing.F) {
	for _, d := range makeSeeds(f).csrs {
		f.Add(d)
	}
	f.Fuzz(func(t *testing.T, der []byte) {
		c, err := ParseCSR(der)
		if err != nil {
			typed(t, err)
			return
		}
		spki, err := MarshalSPKI(c.PublicKey)
		if err != nil || !bytes.Equal(spki, c.RawSubjectPublicKeyInfo) {
			t.Fatalf("accepted key does not re-encode: %v", err)
		}
		_ = c.Validate(nil)
	})
}

func FuzzParseCRL(f *testing.F) {
	s := makeSeeds(f)
	for _, d := range s.crls {
		f.Add(d)
	}
	f.Fuzz(func(t *testing.T, der []byte) {
		c, err := ParseCRL(der)
		if err != nil {
			typed(t, err)
			return
		}
		if c.Number == nil || c.Number.Sign() <= 0 {
			t.Fatal("accepted CRL without a positive number")
		}
		_ = c.CheckSignatureFrom(s.issuer, nil)
	})
}

func FuzzParseOCSPRequest(f *testing.F) {
	for _, d := range makeSeeds(f).reqs {
		f.Add(d)
	}
	f.Fuzz(func(t *testing.T, der []byte) {
		r, err := ParseOCSPRequest(der)
		if err != nil {
			typed(t, err)
			return
		}
		for _, id := range r.CertIDs {
			if id.check() != nil {
				t.Fatalf("accepted a CertID that would not encode: %+v", id)
			}
		}
	})
}

func FuzzParseOCSPResponse(f *testing.F) {
	s := makeSeeds(f)
	for _, d := range s.resps {
		f.Add(d)
	}
	f.Fuzz(func(t *testing.T, der []byte) {
		r, err := ParseOCSPResponse(der)
		if err != nil {
			typed(t, err)
			return
		}
		if r.Status == OCSPSuccessful && len(r.Responses) == 0 {
			t.Fatal("accepted a successful response with no responses")
		}
		_ = r.CheckSignatureFrom(s.issuer, nil)
	})
}

func FuzzParseSPKI(f *testing.F) {
	for _, d := range makeSeeds(f).spkis {
		f.Add(d)
	}
	f.Fuzz(func(t *testing.T, der []byte) {
		k, err := ParseSPKI(der)
		if err != nil {
			typed(t, err)
			return
		}
		again, err := MarshalSPKI(k)
		if err != nil || !bytes.Equal(again, der) {
			t.Fatalf("accepted SPKI does not round-trip: %v", err)
		}
	})
}
