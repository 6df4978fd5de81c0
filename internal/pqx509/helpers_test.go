package pqx509

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"

	circlsign "github.com/cloudflare/circl/sign"
	"github.com/cloudflare/circl/sign/mldsa/mldsa44"
	"github.com/cloudflare/circl/sign/mldsa/mldsa65"
	"github.com/cloudflare/circl/sign/mldsa/mldsa87"
	"github.com/cloudflare/circl/sign/slhdsa"
)

// circlSigner signs with an in-memory circl key (ML-DSA, pure, empty context).
type circlSigner struct {
	alg    string
	scheme circlsign.Scheme
	sk     circlsign.PrivateKey
	pub    []byte
}

func (s *circlSigner) Public() PublicKey { return PublicKey{Algorithm: s.alg, Raw: s.pub} }
func (s *circlSigner) Sign(_ context.Context, msg []byte) ([]byte, error) {
	return s.scheme.Sign(s.sk, msg, nil), nil
}

func schemeFor(alg string) circlsign.Scheme {
	switch alg {
	case MLDSA44:
		return mldsa44.Scheme()
	case MLDSA65:
		return mldsa65.Scheme()
	case MLDSA87:
		return mldsa87.Scheme()
	}
	panic(alg)
}

func newMLDSASigner(t testing.TB, alg string) *circlSigner {
	t.Helper()
	sch := schemeFor(alg)
	pk, sk, err := sch.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := pk.MarshalBinary()
	return &circlSigner{alg: alg, scheme: sch, sk: sk, pub: raw}
}

func mldsaSignerFromSeed(t testing.TB, alg string, seed []byte) *circlSigner {
	t.Helper()
	sch := schemeFor(alg)
	pk, sk := sch.DeriveKey(seed)
	raw, _ := pk.MarshalBinary()
	return &circlSigner{alg: alg, scheme: sch, sk: sk, pub: raw}
}

// ecdsaSigner signs like the KMS: SHA-256/384 of the message, DER signature.
type ecdsaSigner struct {
	alg string
	k   *ecdsa.PrivateKey
}

func newECDSASigner(t testing.TB, alg string) *ecdsaSigner {
	t.Helper()
	curve := elliptic.P256()
	if alg == ECDSAP384 {
		curve = elliptic.P384()
	}
	k, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &ecdsaSigner{alg: alg, k: k}
}

func (s *ecdsaSigner) Public() PublicKey {
	raw, _ := s.k.PublicKey.Bytes()
	return PublicKey{Algorithm: s.alg, Raw: raw}
}

func (s *ecdsaSigner) Sign(_ context.Context, msg []byte) ([]byte, error) {
	var d []byte
	if s.alg == ECDSAP384 {
		h := sha512.Sum384(msg)
		d = h[:]
	} else {
		h := sha256.Sum256(msg)
		d = h[:]
	}
	return ecdsa.SignASN1(rand.Reader, s.k, d)
}

type ed25519Signer struct{ k ed25519.PrivateKey }

func (s ed25519Signer) Public() PublicKey {
	return PublicKey{Algorithm: Ed25519, Raw: []byte(s.k.Public().(ed25519.PublicKey))}
}
func (s ed25519Signer) Sign(_ context.Context, msg []byte) ([]byte, error) {
	return ed25519.Sign(s.k, msg), nil
}

type slhSigner struct {
	alg string
	sk  slhdsa.PrivateKey
	pub []byte
}

func newSLHSigner(t testing.TB, alg string) *slhSigner {
	t.Helper()
	id, err := slhdsa.IDByName(alg)
	if err != nil {
		t.Fatal(err)
	}
	pk, sk, err := slhdsa.GenerateKey(rand.Reader, id)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := pk.MarshalBinary()
	return &slhSigner{alg: alg, sk: sk, pub: raw}
}

func (s *slhSigner) Public() PublicKey { return PublicKey{Algorithm: s.alg, Raw: s.pub} }
func (s *slhSigner) Sign(_ context.Context, msg []byte) ([]byte, error) {
	return slhdsa.SignDeterministic(&s.sk, slhdsa.NewMessage(msg), nil)
}

// stdSigner adapts a Signer to crypto.Signer is not needed; tests use
// crypto/x509 with stdlib keys directly.
var _ crypto.Signer = (*ecdsa.PrivateKey)(nil)

var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

var serialCounter int64 = 1000

func nextSerial() *big.Int {
	serialCounter++
	return big.NewInt(serialCounter)
}

func rootTemplate(name string, pub PublicKey) *Template {
	return &Template{
		SerialNumber:          nextSerial(),
		Subject:               pkix.Name{Organization: []string{"AVON"}, CommonName: name},
		NotBefore:             testNow.Add(-time.Hour),
		NotAfter:              testNow.Add(10 * 365 * 24 * time.Hour),
		PublicKey:             pub,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
}

func leafTemplate(name string, pub PublicKey) *Template {
	return &Template{
		SerialNumber:          nextSerial(),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             testNow.Add(-time.Hour),
		NotAfter:              testNow.Add(24 * time.Hour),
		PublicKey:             pub,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		DNSNames:              []string{name},
	}
}

// chain is a root, intermediate and leaf with their signers.
type chain struct {
	root, inter, leaf          *Certificate
	rootS, interS, leafS       Signer
	rootDER, interDER, leafDER []byte
}

func mustCert(t testing.TB, der []byte, err error) *Certificate {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func makeChain(t testing.TB, newSigner func() Signer) *chain {
	t.Helper()
	ctx := context.Background()
	ch := &chain{rootS: newSigner(), interS: newSigner(), leafS: newSigner()}
	var err error
	ch.rootDER, err = CreateCertificate(ctx, rootTemplate("AVON Root", ch.rootS.Public()), nil, ch.rootS)
	ch.root = mustCert(t, ch.rootDER, err)
	it := rootTemplate("AVON Intermediate", ch.interS.Public())
	it.MaxPathLen, it.MaxPathLenZero = 0, true
	it.OCSPServer = []string{"http://127.0.0.1/ocsp"}
	it.CRLDistributionPoints = []string{"http://127.0.0.1/crl"}
	ch.interDER, err = CreateCertificate(ctx, it, ch.root, ch.rootS)
	ch.inter = mustCert(t, ch.interDER, err)
	ch.leafDER, err = CreateCertificate(ctx, leafTemplate("agent.avon.test", ch.leafS.Public()), ch.inter, ch.interS)
	ch.leaf = mustCert(t, ch.leafDER, err)
	return ch
}

func ed25519GenerateKey() (ed25519.PublicKey, ed25519.PrivateKey, error) {
	return ed25519.GenerateKey(rand.Reader)
}
