package pqx509

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"net/url"
	"testing"
	"time"
)

func TestCSRRoundTrip(t *testing.T) {
	ctx := context.Background()
	for _, s := range []Signer{newMLDSASigner(t, MLDSA44), newMLDSASigner(t, MLDSA65), newMLDSASigner(t, MLDSA87), newECDSASigner(t, ECDSAP384)} {
		alg := s.Public().Algorithm
		u, _ := url.Parse("spiffe://avon/agent/7")
		der, err := CreateCSR(ctx, CSRTemplate{
			Subject: pkix.Name{CommonName: "agent-7"}, DNSNames: []string{"agent-7.avon.test"},
			IPAddresses: []net.IP{net.ParseIP("10.1.2.3"), net.ParseIP("fd00::7")}, URIs: []*url.URL{u},
			EmailAddresses: []string{"ops@avon.test"},
		}, s)
		if err != nil {
			t.Fatalf("%s: %v", alg, err)
		}
		c, err := ParseCSR(der)
		if err != nil {
			t.Fatalf("%s: %v", alg, err)
		}
		if !c.PublicKey.Equal(s.Public()) || c.Subject.CommonName != "agent-7" || c.DNSNames[0] != "agent-7.avon.test" ||
			len(c.IPAddresses) != 2 || !c.IPAddresses[0].Equal(net.ParseIP("10.1.2.3")) || c.URIs[0].String() != u.String() ||
			c.EmailAddresses[0] != "ops@avon.test" || c.RequestsCA {
			t.Fatalf("%s: parsed %+v", alg, c)
		}
		if err := c.Validate(DefaultVerifier); err != nil {
			t.Fatalf("%s: validate: %v", alg, err)
		}
		b := bytes.Clone(der)
		b[len(b)-5] ^= 0x08
		if c2, err := ParseCSR(b); err != nil || !errors.Is(c2.CheckSignature(nil), ErrBadSignature) {
			t.Fatalf("%s: tampered CSR: %v", alg, err)
		}
	}
}

func TestCRLRoundTrip(t *testing.T) {
	ctx := context.Background()
	ch := makeChain(t, func() Signer { return newMLDSASigner(t, MLDSA65) })
	revoked := []RevokedCertificate{
		{SerialNumber: big.NewInt(7), RevocationTime: testNow.Add(-time.Minute), ReasonCode: 1},
		{SerialNumber: new(big.Int).Lsh(big.NewInt(1), 150), RevocationTime: testNow.Add(-time.Hour)},
		{SerialNumber: big.NewInt(9), RevocationTime: time.Date(2051, 1, 1, 0, 0, 0, 0, time.UTC), ReasonCode: 4},
	}
	der, err := CreateCRL(ctx, CRLTemplate{Number: big.NewInt(42), ThisUpdate: testNow, NextUpdate: testNow.Add(time.Hour), Revoked: revoked}, ch.inter, ch.interS)
	if err != nil {
		t.Fatal(err)
	}
	crl, err := ParseCRL(der)
	if err != nil {
		t.Fatal(err)
	}
	if crl.Number.Int64() != 42 || !crl.ThisUpdate.Equal(testNow) || !bytes.Equal(crl.AuthorityKeyId, ch.inter.SubjectKeyId) ||
		len(crl.Revoked) != 3 || crl.Revoked[0].ReasonCode != 1 || crl.Revoked[1].ReasonCode != 0 ||
		crl.Revoked[1].SerialNumber.Cmp(revoked[1].SerialNumber) != 0 || !crl.Revoked[2].RevocationTime.Equal(revoked[2].RevocationTime) {
		t.Fatalf("parsed %+v", crl)
	}
	if err := crl.CheckSignatureFrom(ch.inter, nil); err != nil {
		t.Fatal(err)
	}
	if err := crl.CheckSignatureFrom(ch.root, nil); !errors.Is(err, ErrNotAuthorized) {
		t.Fatalf("CRL checked against the wrong issuer: %v", err)
	}
	b := bytes.Clone(der)
	b[len(b)-9] ^= 0x10
	if c2, err := ParseCRL(b); err != nil || !errors.Is(c2.CheckSignatureFrom(ch.inter, nil), ErrBadSignature) {
		t.Fatalf("tampered CRL: %v", err)
	}
	// The leaf cannot sign CRLs (no cRLSign), and the signer must be the issuer's.
	if _, err := CreateCRL(ctx, CRLTemplate{Number: big.NewInt(1), ThisUpdate: testNow, NextUpdate: testNow.Add(time.Hour)}, ch.leaf, ch.leafS); !errors.Is(err, ErrNotAuthorized) {
		t.Fatalf("CRL by a leaf: %v", err)
	}
	if _, err := CreateCRL(ctx, CRLTemplate{Number: big.NewInt(1), ThisUpdate: testNow, NextUpdate: testNow.Add(time.Hour)}, ch.inter, ch.rootS); !errors.Is(err, ErrSignerMismatch) {
		t.Fatalf("CRL by another key: %v", err)
	}
	if _, err := CreateCRL(ctx, CRLTemplate{Number: big.NewInt(1), ThisUpdate: testNow}, ch.inter, ch.interS); !errors.Is(err, ErrInvalidTemplate) {
		t.Fatalf("CRL without nextUpdate: %v", err)
	}
}

func TestOCSPRoundTrip(t *testing.T) {
	ctx := context.Background()
	ch := makeChain(t, func() Signer { return newMLDSASigner(t, MLDSA65) })
	nonce := []byte("0123456789abcdef")
	for _, h := range []crypto.Hash{crypto.SHA1, crypto.SHA256} {
		reqDER, err := CreateOCSPRequest(ch.inter, []*big.Int{ch.leaf.SerialNumber, big.NewInt(99)}, h, nonce)
		if err != nil {
			t.Fatal(err)
		}
		req, err := ParseOCSPRequest(reqDER)
		if err != nil {
			t.Fatal(err)
		}
		if len(req.CertIDs) != 2 || !req.CertIDs[0].Matches(ch.inter, ch.leaf.SerialNumber) || req.CertIDs[0].Matches(ch.root, ch.leaf.SerialNumber) ||
			req.CertIDs[1].Matches(ch.inter, ch.leaf.SerialNumber) || !bytes.Equal(req.Nonce, nonce) || req.Signed {
			t.Fatalf("%v request parsed %+v", h, req)
		}
	}
	id, _ := NewCertID(ch.inter, ch.leaf.SerialNumber, crypto.SHA256)
	id2, _ := NewCertID(ch.inter, big.NewInt(99), crypto.SHA1)
	tmpl := OCSPResponseTemplate{
		ProducedAt: testNow, Nonce: nonce,
		Responses: []OCSPSingleResponse{
			{CertID: id, Status: OCSPGood, ThisUpdate: testNow, NextUpdate: testNow.Add(time.Hour)},
			{CertID: id2, Status: OCSPRevoked, RevokedAt: testNow.Add(-time.Hour), RevocationReason: 1, ThisUpdate: testNow},
		},
	}
	for _, byKey := range []bool{false, true} {
		tmpl.ResponderIDByKey = byKey
		der, err := CreateOCSPResponse(ctx, tmpl, ch.inter, ch.interS)
		if err != nil {
			t.Fatal(err)
		}
		r, err := ParseOCSPResponse(der)
		if err != nil {
			t.Fatal(err)
		}
		if r.Status != OCSPSuccessful || len(r.Responses) != 2 || r.Responses[0].Status != OCSPGood ||
			!r.Responses[0].CertID.Matches(ch.inter, ch.leaf.SerialNumber) || r.Responses[1].Status != OCSPRevoked ||
			r.Responses[1].RevocationReason != 1 || !bytes.Equal(r.Nonce, nonce) || (r.ResponderKeyHash != nil) != byKey {
			t.Fatalf("parsed %+v", r)
		}
		if err := r.CheckSignatureFrom(ch.inter, nil); err != nil {
			t.Fatal(err)
		}
		if err := r.CheckSignatureFrom(ch.root, nil); !errors.Is(err, ErrNotAuthorized) {
			t.Fatalf("response checked against the wrong issuer: %v", err)
		}
	}
	// A delegated responder.
	rs := newMLDSASigner(t, MLDSA44)
	rt := leafTemplate("ocsp.avon.test", rs.Public())
	rt.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageOCSPSigning}
	rcDER, err := CreateCertificate(ctx, rt, ch.inter, ch.interS)
	rc := mustCert(t, rcDER, err)
	tmpl.ResponderCert = rc
	der, err := CreateOCSPResponse(ctx, tmpl, ch.inter, rs)
	if err != nil {
		t.Fatal(err)
	}
	r, err := ParseOCSPResponse(der)
	if err != nil || len(r.Certificates) != 1 || r.SignatureAlgorithm != MLDSA44 {
		t.Fatalf("delegated: %v", err)
	}
	if err := r.CheckSignatureFrom(ch.inter, nil); err != nil {
		t.Fatal(err)
	}
	// A responder without OCSPSigning is refused.
	tmpl.ResponderCert = ch.leaf
	if _, err := CreateOCSPResponse(ctx, tmpl, ch.inter, ch.leafS); !errors.Is(err, ErrNotAuthorized) {
		t.Fatalf("responder without OCSPSigning: %v", err)
	}
	for _, st := range []OCSPResponseStatus{OCSPMalformedRequest, OCSPInternalError, OCSPTryLater, OCSPSigRequired, OCSPUnauthorized} {
		der, err := CreateOCSPErrorResponse(st)
		if err != nil {
			t.Fatal(err)
		}
		r, err := ParseOCSPResponse(der)
		if err != nil || r.Status != st || !errors.Is(r.CheckSignatureFrom(ch.inter, nil), ErrOCSPStatus) {
			t.Fatalf("error status %d: %v %+v", st, err, r)
		}
	}
	if _, err := CreateOCSPErrorResponse(OCSPSuccessful); !errors.Is(err, ErrInvalidTemplate) {
		t.Fatalf("successful as an error: %v", err)
	}
}
