package pqx509

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"testing"
)

// rsaKeys are made once: RSA key generation is slow.
var rsaKeys = map[int]*rsa.PrivateKey{}

func rsaKey(t testing.TB, bits int) *rsa.PrivateKey {
	t.Helper()
	if k, ok := rsaKeys[bits]; ok {
		return k
	}
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatal(err)
	}
	rsaKeys[bits] = k
	return k
}

func rsaCSR(t testing.TB, k *rsa.PrivateKey, alg x509.SignatureAlgorithm) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "rsa.example"},
		DNSNames: []string{"rsa.example"}, SignatureAlgorithm: alg}, k)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// TestRSASubjectKeys: CSRs with RSA keys (made by crypto/x509) parse and
// verify; an ECDSA issuer certifies the key; crypto/x509 verifies the
// result and reads back the same key.
func TestRSASubjectKeys(t *testing.T) {
	ctx := context.Background()
	ch := makeChain(t, func() Signer { return newECDSASigner(t, ECDSAP384) })
	for _, tc := range []struct {
		bits int
		sig  x509.SignatureAlgorithm
		want string
	}{
		{2048, x509.SHA256WithRSA, RSAWithSHA256},
		{3072, x509.SHA384WithRSA, RSAWithSHA384},
		{4096, x509.SHA512WithRSA, RSAWithSHA512},
	} {
		k := rsaKey(t, tc.bits)
		csr, err := ParseCSR(rsaCSR(t, k, tc.sig))
		if err != nil {
			t.Fatalf("RSA-%d CSR: %v", tc.bits, err)
		}
		if csr.PublicKey.Algorithm != keyName(tc.bits) || csr.SignatureAlgorithm != tc.want {
			t.Fatalf("RSA-%d CSR: key %s signature %s", tc.bits, csr.PublicKey.Algorithm, csr.SignatureAlgorithm)
		}
		if err := csr.CheckSignature(nil); err != nil {
			t.Fatalf("RSA-%d CSR signature: %v", tc.bits, err)
		}
		if err := csr.Validate(DefaultVerifier); err != nil {
			t.Fatalf("RSA-%d CSR validate: %v", tc.bits, err)
		}
		// A tampered signature fails.
		bad := *csr
		bad.Signature = append([]byte(nil), csr.Signature...)
		bad.Signature[10] ^= 1
		if err := bad.CheckSignature(nil); !errors.Is(err, ErrBadSignature) {
			t.Fatalf("tampered RSA signature: %v", err)
		}
		spki, err := MarshalSPKI(csr.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
		if string(spki) != string(want) {
			t.Fatalf("RSA-%d SPKI differs from crypto/x509's", tc.bits)
		}
		der, err := CreateCertificate(ctx, leafTemplate("rsa.example", csr.PublicKey), ch.inter, ch.interS)
		if err != nil {
			t.Fatalf("certify RSA-%d: %v", tc.bits, err)
		}
		std, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		if pk, ok := std.PublicKey.(*rsa.PublicKey); !ok || !pk.Equal(&k.PublicKey) {
			t.Fatalf("crypto/x509 reads key %T", std.PublicKey)
		}
		roots, inters := x509.NewCertPool(), x509.NewCertPool()
		r, _ := x509.ParseCertificate(ch.rootDER)
		i, _ := x509.ParseCertificate(ch.interDER)
		roots.AddCert(r)
		inters.AddCert(i)
		if _, err := std.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, CurrentTime: testNow, DNSName: "rsa.example"}); err != nil {
			t.Fatalf("crypto/x509 verify of the RSA-%d certificate: %v", tc.bits, err)
		}
	}
}

func keyName(bits int) string {
	switch bits {
	case 2048:
		return RSA2048
	case 3072:
		return RSA3072
	}
	return RSA4096
}

// TestRSARefusals: other sizes, parameters other than NULL, RSA as a
// signer.
func TestRSARefusals(t *testing.T) {
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseCSR(rsaCSR(t, small, x509.SHA256WithRSA)); !errors.Is(err, ErrUnsupportedAlgorithm) {
		t.Fatalf("RSA-1024 CSR: %v", err)
	}
	k := rsaKey(t, 2048)
	if _, err := ParseCSR(rsaCSR(t, k, x509.SHA1WithRSA)); !errors.Is(err, ErrUnsupportedAlgorithm) {
		t.Fatalf("SHA-1 RSA CSR: %v", err)
	}
	spki, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	// The NULL parameters (05 00) after the rsaEncryption OID, removed.
	i := indexOf(spki, []byte{0x01, 0x01, 0x01, 0x05, 0x00})
	if i < 0 {
		t.Fatal("no rsaEncryption NULL in the SPKI")
	}
	noNull := append(append([]byte{}, spki[:i+3]...), spki[i+5:]...)
	noNull[1] -= 2 // outer SEQUENCE (long form 0x82 len: adjust the low byte)
	if _, err := ParseSPKI(noNull); err == nil {
		t.Fatal("RSA SPKI without NULL parameters accepted")
	}
	pub := PublicKey{Algorithm: RSA2048, Raw: x509.MarshalPKCS1PublicKey(&k.PublicKey)}
	if _, err := MarshalSPKI(PublicKey{Algorithm: RSA3072, Raw: pub.Raw}); !errors.Is(err, ErrBadKey) {
		t.Fatalf("a 2048-bit key named RSA-3072: %v", err)
	}
	if _, err := CreateCertificate(context.Background(), rootTemplate("rsa root", pub), nil, rsaSigner{pub}); !errors.Is(err, ErrUnsupportedAlgorithm) {
		t.Fatalf("RSA signer: %v", err)
	}
	if err := DefaultVerifier.Verify(RSA2048, pub.Raw, []byte("m"), []byte("s")); !errors.Is(err, ErrUnsupportedAlgorithm) {
		t.Fatalf("RSA verify by key name: %v", err)
	}
}

type rsaSigner struct{ pub PublicKey }

func (s rsaSigner) Public() PublicKey { return s.pub }
func (s rsaSigner) Sign(context.Context, []byte) ([]byte, error) {
	return nil, errors.New("not reached")
}

func indexOf(b, sub []byte) int {
	for i := 0; i+len(sub) <= len(b); i++ {
		if string(b[i:i+len(sub)]) == string(sub) {
			return i
		}
	}
	return -1
}
