package handshake

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"math/rand/v2"
	"net/url"
	"testing"
	"time"

	"github.com/cloudflare/circl/sign/mldsa/mldsa65"

	"github.com/avonzt/avon/internal/pqx509"
)

// testNow is the fixed calibrated time of the tests and vectors.
var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func fixedNow() time.Time { return testNow }

// detRand is a deterministic random stream named by label (ChaCha8 keyed
// with SHA-256 of the label): tests and vectors are reproducible.
func detRand(label string) io.Reader {
	return rand.NewChaCha8(sha256.Sum256([]byte("avon handshake test: " + label)))
}

// failingReader fails every read.
type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("entropy source failed") }

// mldsaKey derives a fixed ML-DSA-65 key from a label.
func mldsaKey(label string) (*mldsa65.PublicKey, *mldsa65.PrivateKey) {
	seed := sha256.Sum256([]byte("avon handshake test key: " + label))
	return mldsa65.NewKeyFromSeed(&seed)
}

// certSigner signs certificates with a circl key: pure ML-DSA-65, empty
// context, deterministic (reproducible vectors).
type certSigner struct {
	sk  *mldsa65.PrivateKey
	pub []byte
}

func newCertSigner(label string) *certSigner {
	pk, sk := mldsaKey(label)
	raw, _ := pk.MarshalBinary()
	return &certSigner{sk: sk, pub: raw}
}

func (s *certSigner) Public() pqx509.PublicKey {
	return pqx509.PublicKey{Algorithm: pqx509.MLDSA65, Raw: s.pub}
}

func (s *certSigner) Sign(_ context.Context, msg []byte) ([]byte, error) {
	sig := make([]byte, mldsa65.SignatureSize)
	return sig, mldsa65.SignTo(s.sk, msg, nil, false, sig)
}

// pki is a tiny CA: root -> intermediate -> agent leaves.
type pki struct {
	root, inter       *pqx509.Certificate
	rootDER, interDER []byte
	interSigner       *certSigner
	serial            int64
}

func newPKI(t testing.TB, name string) *pki {
	t.Helper()
	ctx := context.Background()
	rs := newCertSigner(name + " root")
	rootDER, err := pqx509.CreateCertificate(ctx, &pqx509.Template{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name + " Root CA"},
		NotBefore: testNow.Add(-365 * 24 * time.Hour), NotAfter: testNow.Add(10 * 365 * 24 * time.Hour),
		PublicKey: rs.Public(), KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true, IsCA: true, MaxPathLen: 1,
	}, nil, rs)
	if err != nil {
		t.Fatal(err)
	}
	root, err := pqx509.ParseCertificate(rootDER)
	if err != nil {
		t.Fatal(err)
	}
	is := newCertSigner(name + " intermediate")
	interDER, err := pqx509.CreateCertificate(ctx, &pqx509.Template{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: name + " Agents CA"},
		NotBefore: testNow.Add(-30 * 24 * time.Hour), NotAfter: testNow.Add(5 * 365 * 24 * time.Hour),
		PublicKey: is.Public(), KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true, IsCA: true, MaxPathLen: 0, MaxPathLenZero: true,
	}, root, rs)
	if err != nil {
		t.Fatal(err)
	}
	inter, err := pqx509.ParseCertificate(interDER)
	if err != nil {
		t.Fatal(err)
	}
	return &pki{root: root, inter: inter, rootDER: rootDER, interDER: interDER, interSigner: is, serial: 100}
}

// agent issues a leaf for agent id with key label, valid [nb, na], and
// returns the chain (leaf, intermediate) and its serial.
func (p *pki) agent(t testing.TB, id, keyLabel string, nb, na time.Time) ([][]byte, *big.Int) {
	t.Helper()
	p.serial++
	pk, _ := mldsaKey(keyLabel)
	raw, _ := pk.MarshalBinary()
	u, _ := url.Parse("avon://agent/" + id)
	serial := big.NewInt(p.serial)
	der, err := pqx509.CreateCertificate(context.Background(), &pqx509.Template{
		SerialNumber: serial, Subject: pkix.Name{CommonName: id},
		NotBefore: nb, NotAfter: na, PublicKey: pqx509.PublicKey{Algorithm: pqx509.MLDSA65, Raw: raw},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs: []*url.URL{u},
	}, p.inter, p.interSigner)
	if err != nil {
		t.Fatal(err)
	}
	return [][]byte{der, p.interDER}, serial
}

// fixture is everything one handshake needs, all deterministic.
type fixture struct {
	pki         *pki
	chain       [][]byte
	serial      *big.Int
	agentSigner *MLDSA65Signer
	gwSigner    *MLDSA65Signer
	gwPub       []byte
	gwID        [IDLen]byte
	verifier    *ChainVerifier
	revoked     map[string]bool
	statusErr   error
	rand        io.Reader
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	f := &fixture{pki: newPKI(t, "AVON Test"), revoked: map[string]bool{}}
	f.chain, f.serial = f.pki.agent(t, "agent-0001", "agent", testNow.Add(-time.Hour), testNow.Add(24*time.Hour))
	f.rand = detRand("fixture")
	_, ask := mldsaKey("agent")
	var err error
	if f.agentSigner, err = NewMLDSA65Signer(ask, detRand("agent signing")); err != nil {
		t.Fatal(err)
	}
	gpk, gsk := mldsaKey("gateway")
	f.gwPub, _ = gpk.MarshalBinary()
	if f.gwSigner, err = NewMLDSA65Signer(gsk, detRand("gateway signing")); err != nil {
		t.Fatal(err)
	}
	if f.gwID, err = ResponderID(f.gwPub); err != nil {
		t.Fatal(err)
	}
	f.verifier, err = NewChainVerifier([][]byte{f.pki.rootDER}, ChainVerifierOptions{Revoked: func(s *big.Int) (bool, error) {
		if f.statusErr != nil {
			return false, f.statusErr
		}
		return f.revoked[s.String()], nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) initiator(t testing.TB, local uint32, now func() time.Time) *Initiator {
	t.Helper()
	in, err := NewInitiator(InitiatorConfig{Signer: f.agentSigner, Chain: f.chain, ResponderPublicKey: f.gwPub,
		ResponderID: f.gwID, Rand: f.rand, Now: now, LocalIndex: local})
	if err != nil {
		t.Fatal(err)
	}
	return in
}

func (f *fixture) responder(t testing.TB, now func() time.Time) *Responder {
	t.Helper()
	r, err := NewResponder(ResponderConfig{Signer: f.gwSigner, ResponderID: f.gwID, Verifier: f.verifier,
		Rand: f.rand, Now: now, MaxSkew: 5 * time.Second, ReplayCacheSize: 64})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// handshake runs a full handshake and returns every message and both
// results.
type run struct {
	init, resp, finish []byte
	ri, rr             *Result
	pending            *PendingHandshake
}

func (f *fixture) handshake(t testing.TB, in *Initiator, r *Responder, local uint32) *run {
	t.Helper()
	init, err := in.Initiation(nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, p, err := r.HandleInitiation(init, local)
	if err != nil {
		t.Fatal(err)
	}
	fin, ri, err := in.HandleResponse(resp)
	if err != nil {
		t.Fatal(err)
	}
	rr, err := p.HandleFinish(fin)
	if err != nil {
		t.Fatal(err)
	}
	return &run{init: init, resp: resp, finish: fin, ri: ri, rr: rr, pending: p}
}

// clock is a settable calibrated clock.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }
