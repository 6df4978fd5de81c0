package pqx509

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"
)

// Our encoders, checked by Go's own parsers and verifiers (ECDSA-P384).
func TestInteropOursParsedByStdlib(t *testing.T) {
	ctx := context.Background()
	ch := makeChain(t, func() Signer { return newECDSASigner(t, ECDSAP384) })
	root, err := x509.ParseCertificate(ch.rootDER)
	if err != nil {
		t.Fatalf("crypto/x509 root: %v", err)
	}
	inter, err := x509.ParseCertificate(ch.interDER)
	if err != nil {
		t.Fatalf("crypto/x509 intermediate: %v", err)
	}
	leaf, err := x509.ParseCertificate(ch.leafDER)
	if err != nil {
		t.Fatalf("crypto/x509 leaf: %v", err)
	}
	if leaf.SignatureAlgorithm != x509.ECDSAWithSHA384 || !inter.IsCA || inter.MaxPathLen != 0 || !inter.MaxPathLenZero ||
		leaf.SerialNumber.Cmp(ch.leaf.SerialNumber) != 0 || leaf.DNSNames[0] != "agent.avon.test" {
		t.Fatalf("crypto/x509 read different fields: %+v", leaf)
	}
	roots, inters := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(root)
	inters.AddCert(inter)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, CurrentTime: testNow, DNSName: "agent.avon.test",
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("crypto/x509 Verify: %v", err)
	}

	csrDER, err := CreateCSR(ctx, CSRTemplate{Subject: pkix.Name{CommonName: "svc"}, DNSNames: []string{"svc.avon.test"}}, newECDSASigner(t, ECDSAP384))
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		t.Fatalf("crypto/x509 CSR: %v", err)
	}
	if err := csr.CheckSignature(); err != nil || csr.DNSNames[0] != "svc.avon.test" {
		t.Fatalf("crypto/x509 CSR signature: %v", err)
	}

	crlDER, err := CreateCRL(ctx, CRLTemplate{Number: big.NewInt(3), ThisUpdate: testNow, NextUpdate: testNow.Add(time.Hour),
		Revoked: []RevokedCertificate{{SerialNumber: big.NewInt(77), RevocationTime: testNow, ReasonCode: 5}}}, ch.inter, ch.interS)
	if err != nil {
		t.Fatal(err)
	}
	crl, err := x509.ParseRevocationList(crlDER)
	if err != nil {
		t.Fatalf("crypto/x509 CRL: %v", err)
	}
	if err := crl.CheckSignatureFrom(inter); err != nil {
		t.Fatalf("crypto/x509 CRL signature: %v", err)
	}
	if crl.Number.Int64() != 3 || len(crl.RevokedCertificateEntries) != 1 || crl.RevokedCertificateEntries[0].ReasonCode != 5 {
		t.Fatalf("crypto/x509 CRL fields: %+v", crl)
	}

	id, _ := NewCertID(ch.inter, ch.leaf.SerialNumber, crypto.SHA1)
	for _, byKey := range []bool{false, true} {
		respDER, err := CreateOCSPResponse(ctx, OCSPResponseTemplate{ProducedAt: testNow, ResponderIDByKey: byKey, Responses: []OCSPSingleResponse{
			{CertID: id, Status: OCSPRevoked, RevokedAt: testNow.Add(-time.Hour), RevocationReason: 1, ThisUpdate: testNow, NextUpdate: testNow.Add(time.Hour)}}},
			ch.inter, ch.interS)
		if err != nil {
			t.Fatal(err)
		}
		r, err := ocsp.ParseResponseForCert(respDER, leaf, inter)
		if err != nil {
			t.Fatalf("x/crypto/ocsp (byKey %v): %v", byKey, err)
		}
		if r.Status != ocsp.Revoked || r.RevocationReason != ocsp.KeyCompromise || r.SerialNumber.Cmp(ch.leaf.SerialNumber) != 0 {
			t.Fatalf("x/crypto/ocsp fields: %+v", r)
		}
	}
	reqDER, err := CreateOCSPRequest(ch.inter, []*big.Int{ch.leaf.SerialNumber}, crypto.SHA256, nil)
	if err != nil {
		t.Fatal(err)
	}
	req, err := ocsp.ParseRequest(reqDER)
	if err != nil || req.SerialNumber.Cmp(ch.leaf.SerialNumber) != 0 || req.HashAlgorithm != crypto.SHA256 {
		t.Fatalf("x/crypto/ocsp request: %v", err)
	}
}

// Go's encoders (ECDSA), parsed and verified by ours.
func TestInteropStdlibParsedByOurs(t *testing.T) {
	rootKey, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rootT := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Go Root"},
		NotBefore: testNow.Add(-time.Hour), NotAfter: testNow.Add(time.Hour * 24 * 365),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true}
	rootDER, err := x509.CreateCertificate(rand.Reader, rootT, rootT, rootKey.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	goRoot, _ := x509.ParseCertificate(rootDER)
	leafT := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "go leaf"},
		NotBefore: testNow.Add(-time.Hour), NotAfter: testNow.Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, DNSNames: []string{"go.avon.test"},
		OCSPServer: []string{"http://127.0.0.1/ocsp"}, CRLDistributionPoints: []string{"http://127.0.0.1/crl"}}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafT, goRoot, leafKey.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	root, err := ParseCertificate(rootDER)
	if err != nil {
		t.Fatalf("our parser, Go root: %v", err)
	}
	leaf, err := ParseCertificate(leafDER)
	if err != nil {
		t.Fatalf("our parser, Go leaf: %v", err)
	}
	if root.SignatureAlgorithm != ECDSAWithSHA384 || leaf.PublicKey.Algorithm != ECDSAP256 || leaf.DNSNames[0] != "go.avon.test" ||
		leaf.OCSPServer[0] != "http://127.0.0.1/ocsp" || leaf.CRLDistributionPoints[0] != "http://127.0.0.1/crl" {
		t.Fatalf("fields: %+v", leaf)
	}
	if _, err := Verify(leaf, VerifyOptions{Roots: []*Certificate{root}, CurrentTime: testNow, DNSName: "go.avon.test"}); err != nil {
		t.Fatalf("our Verify of a Go chain: %v", err)
	}
	if f := Lint(root.RawTBSCertificate); len(f) != 0 {
		t.Fatalf("Go root has lint findings: %v", f)
	}

	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "go csr"},
		DNSNames: []string{"csr.avon.test"}}, leafKey)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := ParseCSR(csrDER)
	if err != nil {
		t.Fatalf("our parser, Go CSR: %v", err)
	}
	if err := csr.Validate(nil); err != nil || csr.DNSNames[0] != "csr.avon.test" {
		t.Fatalf("Go CSR: %v", err)
	}

	crlDER, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(9), ThisUpdate: testNow,
		NextUpdate: testNow.Add(time.Hour), RevokedCertificateEntries: []x509.RevocationListEntry{
			{SerialNumber: big.NewInt(2), RevocationTime: testNow, ReasonCode: 1}}}, goRoot, rootKey)
	if err != nil {
		t.Fatal(err)
	}
	crl, err := ParseCRL(crlDER)
	if err != nil {
		t.Fatalf("our parser, Go CRL: %v", err)
	}
	if err := crl.CheckSignatureFrom(root, nil); err != nil || crl.Revoked[0].ReasonCode != 1 || crl.Number.Int64() != 9 {
		t.Fatalf("Go CRL: %v %+v", err, crl)
	}

	goLeaf, _ := x509.ParseCertificate(leafDER)
	respDER, err := ocsp.CreateResponse(goRoot, goRoot, ocsp.Response{Status: ocsp.Good, SerialNumber: goLeaf.SerialNumber,
		ThisUpdate: testNow, NextUpdate: testNow.Add(time.Hour), IssuerHash: crypto.SHA256}, rootKey)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := ParseOCSPResponse(respDER)
	if err != nil {
		t.Fatalf("our parser, x/crypto/ocsp response: %v", err)
	}
	if err := resp.CheckSignatureFrom(root, nil); err != nil || !resp.Responses[0].CertID.Matches(root, leaf.SerialNumber) {
		t.Fatalf("x/crypto/ocsp response: %v", err)
	}
	reqDER, err := ocsp.CreateRequest(goLeaf, goRoot, &ocsp.RequestOptions{Hash: crypto.SHA1})
	if err != nil {
		t.Fatal(err)
	}
	req, err := ParseOCSPRequest(reqDER)
	if err != nil || !req.CertIDs[0].Matches(root, leaf.SerialNumber) {
		t.Fatalf("x/crypto/ocsp request: %v", err)
	}
}
