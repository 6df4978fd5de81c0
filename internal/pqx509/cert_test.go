package pqx509

import (
	"bytes"
	"context"
	"encoding/pem"
	"errors"
	"os"
	"testing"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"github.com/avonzt/avon/internal/testvec"
)

func readPEM(t *testing.T, rel, typ string) []byte {
	t.Helper()
	b, err := os.ReadFile(testvec.Path(t, rel))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != typ {
		t.Fatalf("%s: no %s PEM block", rel, typ)
	}
	return blk.Bytes
}

// seedFromPKCS8 reads the seed of a seed-only ML-DSA PKCS#8 key:
// privateKey OCTET STRING holding [0] IMPLICIT OCTET STRING (32 bytes).
func seedFromPKCS8(t *testing.T, der []byte) []byte {
	t.Helper()
	s := cryptobyte.String(der)
	var seq, inner, seed cryptobyte.String
	var ver int64
	if !s.ReadASN1(&seq, cbasn1.SEQUENCE) || !seq.ReadASN1Int64WithTag(&ver, cbasn1.INTEGER) ||
		!seq.SkipASN1(cbasn1.SEQUENCE) || !seq.ReadASN1(&inner, cbasn1.OCTET_STRING) ||
		!inner.ReadASN1(&seed, cbasn1.Tag(0).ContextSpecific()) || len(seed) != 32 {
		t.Fatal("seed-only PKCS#8 not as expected")
	}
	return seed
}

func TestRFC9881Examples(t *testing.T) {
	for _, alg := range []string{MLDSA44, MLDSA65, MLDSA87} {
		t.Run(alg, func(t *testing.T) {
			der := readPEM(t, "rfc9881/"+alg+".crt", "CERTIFICATE")
			c, err := ParseCertificate(der)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if c.PublicKey.Algorithm != alg || c.SignatureAlgorithm != alg || !c.IsCA || c.Version != 3 {
				t.Fatalf("parsed %s key, %s signature, CA %v, v%d", c.PublicKey.Algorithm, c.SignatureAlgorithm, c.IsCA, c.Version)
			}
			if err := c.CheckSignatureFrom(c, DefaultVerifier); err != nil {
				t.Fatalf("self-signature: %v", err)
			}
			spki, err := MarshalSPKI(c.PublicKey)
			if err != nil || !bytes.Equal(spki, c.RawSubjectPublicKeyInfo) {
				t.Fatalf("MarshalSPKI differs from the certificate's SPKI: %v", err)
			}
			pub := readPEM(t, "rfc9881/"+alg+".pub", "PUBLIC KEY")
			if !bytes.Equal(pub, c.RawSubjectPublicKeyInfo) {
				t.Fatal(".pub differs from the certificate's SPKI")
			}
			pk, err := ParseSPKI(pub)
			if err != nil || !pk.Equal(c.PublicKey) {
				t.Fatalf("ParseSPKI(.pub): %v", err)
			}
			// Chains to itself.
			if _, err := Verify(c, VerifyOptions{Roots: []*Certificate{c}, CurrentTime: c.NotBefore.Add(1)}); err != nil {
				t.Fatalf("verify self-signed root: %v", err)
			}

			// Re-sign a template built from the parsed certificate with the
			// key derived from the seed.
			seed := seedFromPKCS8(t, readPEM(t, "rfc9881/"+alg+"-seed.priv", "PRIVATE KEY"))
			s := mldsaSignerFromSeed(t, alg, seed)
			if !s.Public().Equal(c.PublicKey) {
				t.Fatal("seed does not derive the certificate's key")
			}
			tmpl := &Template{
				SerialNumber: c.SerialNumber, Subject: c.Subject, NotBefore: c.NotBefore, NotAfter: c.NotAfter,
				PublicKey: c.PublicKey, KeyUsage: c.KeyUsage, BasicConstraintsValid: c.BasicConstraintsValid,
				IsCA: c.IsCA, MaxPathLen: c.MaxPathLen, SubjectKeyId: c.SubjectKeyId,
			}
			der2, err := CreateCertificate(context.Background(), tmpl, nil, s)
			if err != nil {
				t.Fatalf("re-sign: %v", err)
			}
			c2, err := ParseCertificate(der2)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(c2.RawSubjectPublicKeyInfo, c.RawSubjectPublicKeyInfo) || !bytes.Equal(c2.SubjectKeyId, c.SubjectKeyId) {
				t.Fatal("re-signed certificate has another key")
			}
			if err := c2.CheckSignatureFrom(c2, DefaultVerifier); err != nil {
				t.Fatalf("re-signed self-signature: %v", err)
			}
			if err := c2.CheckSignatureFrom(c, DefaultVerifier); err != nil {
				t.Fatalf("re-signed certificate by the original (same key): %v", err)
			}

			tamperCert(t, c)
		})
	}
}

// tamperCert flips bytes of the signature, the TBS and the algorithm OID
// and expects parsing or verification to fail each time.
func tamperCert(t *testing.T, c *Certificate) {
	t.Helper()
	check := func(name string, der []byte) {
		t.Helper()
		d, err := ParseCertificate(der)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("%s: untyped parse error %v", name, err)
			}
			return
		}
		if err := d.CheckSignatureFrom(c, DefaultVerifier); err == nil {
			t.Fatalf("%s: tampered certificate verifies", name)
		}
	}
	sigOff := len(c.Raw) - len(c.Signature)
	for _, i := range []int{sigOff, sigOff + len(c.Signature)/2, len(c.Raw) - 1} {
		b := bytes.Clone(c.Raw)
		b[i] ^= 0x01
		check("signature byte", b)
	}
	tbsOff := bytes.Index(c.Raw, c.RawTBSCertificate)
	for i := 0; i < len(c.RawTBSCertificate); i += 1 + len(c.RawTBSCertificate)/200 {
		b := bytes.Clone(c.Raw)
		b[tbsOff+i] ^= 0x01
		check("TBS byte", b)
	}
	// The last byte of every copy of the algorithm OID (TBS, SPKI, outer).
	oid := []byte{0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x03}
	n := 0
	for i := 0; i+len(oid) < len(c.Raw); i++ {
		if bytes.Equal(c.Raw[i:i+len(oid)], oid) {
			for _, v := range []byte{0x01, 0x02, 0x04, 0x10} {
				b := bytes.Clone(c.Raw)
				b[i+len(oid)] ^= v
				check("algorithm OID", b)
			}
			n++
		}
	}
	if n != 3 {
		t.Fatalf("algorithm OID found %d times, want 3", n)
	}
}

func TestCreateChain(t *testing.T) {
	signers := map[string]func() Signer{
		MLDSA44:   func() Signer { return newMLDSASigner(t, MLDSA44) },
		MLDSA65:   func() Signer { return newMLDSASigner(t, MLDSA65) },
		MLDSA87:   func() Signer { return newMLDSASigner(t, MLDSA87) },
		ECDSAP256: func() Signer { return newECDSASigner(t, ECDSAP256) },
		ECDSAP384: func() Signer { return newECDSASigner(t, ECDSAP384) },
	}
	for alg, ns := range signers {
		t.Run(alg, func(t *testing.T) {
			ch := makeChain(t, ns)
			chains, err := Verify(ch.leaf, VerifyOptions{Roots: []*Certificate{ch.root}, Intermediates: []*Certificate{ch.inter},
				CurrentTime: testNow, DNSName: "agent.avon.test"})
			if err != nil {
				t.Fatalf("verify: %v", err)
			}
			if len(chains) != 1 || len(chains[0]) != 3 || chains[0][2] != ch.root {
				t.Fatalf("chains %v", chains)
			}
			if !bytes.Equal(ch.leaf.AuthorityKeyId, ch.inter.SubjectKeyId) || len(ch.leaf.SubjectKeyId) != 20 {
				t.Fatal("key identifiers not chained")
			}
			if ch.inter.MaxPathLen != 0 || !ch.inter.MaxPathLenZero || ch.inter.OCSPServer[0] != "http://127.0.0.1/ocsp" ||
				ch.inter.CRLDistributionPoints[0] != "http://127.0.0.1/crl" {
				t.Fatalf("intermediate fields: %+v", ch.inter)
			}
			tamperChainCert(t, ch.leaf, ch.inter)
		})
	}
	for _, alg := range []string{"SLH-DSA-SHA2-128f", Ed25519} {
		t.Run(alg, func(t *testing.T) {
			var s Signer
			if alg == Ed25519 {
				_, k, _ := ed25519GenerateKey()
				s = ed25519Signer{k}
			} else {
				s = newSLHSigner(t, alg)
			}
			der, err := CreateCertificate(context.Background(), rootTemplate("root", s.Public()), nil, s)
			c := mustCert(t, der, err)
			if c.SignatureAlgorithm != alg {
				t.Fatalf("signature algorithm %s", c.SignatureAlgorithm)
			}
			if err := c.CheckSignatureFrom(c, nil); err != nil {
				t.Fatal(err)
			}
			b := bytes.Clone(der)
			b[len(b)-3] ^= 1
			if d, err := ParseCertificate(b); err != nil || d.CheckSignatureFrom(c, nil) == nil {
				t.Fatalf("tampered %s signature: %v", alg, err)
			}
		})
	}
}

func tamperChainCert(t *testing.T, c, issuer *Certificate) {
	t.Helper()
	b := bytes.Clone(c.Raw)
	b[len(b)-10] ^= 0x40
	d, err := ParseCertificate(b)
	if err == nil {
		err = d.CheckSignatureFrom(issuer, DefaultVerifier)
	}
	if err == nil {
		t.Fatal("tampered leaf verifies")
	}
}

func TestSPKI(t *testing.T) {
	for _, s := range []Signer{newMLDSASigner(t, MLDSA65), newECDSASigner(t, ECDSAP256), newECDSASigner(t, ECDSAP384), newSLHSigner(t, "SLH-DSA-SHAKE-128f")} {
		der, err := MarshalSPKI(s.Public())
		if err != nil {
			t.Fatal(err)
		}
		k, err := ParseSPKI(der)
		if err != nil || !k.Equal(s.Public()) {
			t.Fatalf("%s round trip: %v", s.Public().Algorithm, err)
		}
		if _, err := ParseSPKI(append(bytes.Clone(der), 0)); !errors.Is(err, ErrMalformed) {
			t.Fatalf("trailing byte: %v", err)
		}
	}
	short := newMLDSASigner(t, MLDSA65).Public()
	short.Raw = short.Raw[:len(short.Raw)-1]
	if _, err := MarshalSPKI(short); !errors.Is(err, ErrBadKey) {
		t.Fatalf("short ML-DSA key marshalled: %v", err)
	}
	// An ML-DSA-44 key under the ML-DSA-65 OID.
	k44 := newMLDSASigner(t, MLDSA44).Public()
	der, _ := MarshalSPKI(k44)
	der = bytes.Replace(der, oidBytes(oidMLDSA44), oidBytes(oidMLDSA65), 1)
	if _, err := ParseSPKI(der); !errors.Is(err, ErrBadKey) {
		t.Fatalf("44 key under 65 OID: %v", err)
	}
	// Parameters present (NULL) where they must be absent.
	der, _ = MarshalSPKI(k44)
	withNull := bytes.Replace(der, append([]byte{0x30, 0x0b}, oidBytes(oidMLDSA44)...), append([]byte{0x30, 0x0d}, append(oidBytes(oidMLDSA44), 0x05, 0x00)...), 1)
	withNull[3] += 2 // outer length grows by two (long form, two length bytes)
	if _, err := ParseSPKI(withNull); !errors.Is(err, ErrBadParameters) {
		t.Fatalf("NULL parameters: %v", err)
	}
	// A BER long-form length where the short form fits.
	ber := append([]byte{0x30, 0x81, 0x03}, 0x06, 0x01, 0x00)
	if _, err := ParseSPKI(ber); !errors.Is(err, ErrMalformed) {
		t.Fatalf("BER length: %v", err)
	}
	// Indefinite length.
	if _, err := ParseSPKI([]byte{0x30, 0x80, 0x00, 0x00}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("indefinite length: %v", err)
	}
}

func oidBytes(oid []int) []byte {
	var b cryptobyte.Builder
	b.AddASN1ObjectIdentifier(oid)
	return b.BytesOrPanic()
}
