package handshake

import (
	"crypto/sha256"
	"errors"
	"io"
	"math/big"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/cloudflare/circl/sign/mldsa/mldsa65"

	"github.com/avonzt/avon/core/handshake/handshaketest"
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

// keyPrefix starts the label of every test key: with it the PKI and the
// vectors are the same from run to run.
const keyPrefix = "avon handshake test key: "

// testKey derives a fixed ML-DSA-65 key from a label.
func testKey(label string) *handshaketest.Key { return handshaketest.KeyFromLabel(keyPrefix + label) }

// mldsaKey derives a fixed ML-DSA-65 key from a label.
func mldsaKey(label string) (*mldsa65.PublicKey, *mldsa65.PrivateKey) {
	k := testKey(label)
	return k.PublicKey(), k.PrivateKey()
}

// pki is a deterministic handshaketest PKI (root -> intermediate -> agent
// leaves) under the names these tests use.
type pki struct {
	ca                *handshaketest.PKI
	root, inter       *pqx509.Certificate
	rootDER, interDER []byte
	interSigner       pqx509.Signer
}

func newPKI(t testing.TB, name string) *pki {
	t.Helper()
	ca, err := handshaketest.New(handshaketest.Options{Name: name, Now: testNow, Keys: handshaketest.LabelKeys(keyPrefix)})
	if err != nil {
		t.Fatal(err)
	}
	return &pki{ca: ca, root: ca.Root, inter: ca.Issuing, rootDER: ca.RootDER, interDER: ca.IssuingDER, interSigner: ca.IssuingKey}
}

// agent issues a leaf for agent id with key label, valid [nb, na], and
// returns the chain (leaf, intermediate) and its serial.
func (p *pki) agent(t testing.TB, id, keyLabel string, nb, na time.Time) ([][]byte, *big.Int) {
	t.Helper()
	leaf, err := p.ca.IssueAgent(id, testKey(keyLabel), nb, na)
	if err != nil {
		t.Fatal(err)
	}
	return leaf.Chain, leaf.Serial
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

// delegated issues a delegated key from fixed randomness, signed by the
// fixture's gateway key, valid from nb for validity.
func (f *fixture) delegated(t testing.TB, nb time.Time, validity time.Duration) *DelegatedKey {
	t.Helper()
	k, err := IssueCredential(f.gwSigner, detRand("delegated key "+nb.String()+validity.String()), nb, validity)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// delegatedResponder is a responder signing with a delegated key (valid
// from an hour before testNow, 8 h) held in the returned DelegatedKeys.
func (f *fixture) delegatedResponder(t testing.TB, now func() time.Time) (*Responder, *DelegatedKeys) {
	t.Helper()
	d := &DelegatedKeys{}
	d.Install(f.delegated(t, testNow.Add(-time.Hour), 8*time.Hour))
	r, err := NewResponder(ResponderConfig{Signer: f.gwSigner, ResponderID: f.gwID, Verifier: f.verifier,
		Rand: f.rand, Now: now, MaxSkew: 5 * time.Second, ReplayCacheSize: 64, Delegated: d})
	if err != nil {
		t.Fatal(err)
	}
	return r, d
}

// initiatorWith is an initiator holding cred from an earlier handshake.
func (f *fixture) initiatorWith(t testing.TB, local uint32, now func() time.Time, cred *Credential) *Initiator {
	t.Helper()
	in, err := NewInitiator(InitiatorConfig{Signer: f.agentSigner, Chain: f.chain, ResponderPublicKey: f.gwPub,
		ResponderID: f.gwID, Rand: f.rand, Now: now, LocalIndex: local, Credential: cred})
	if err != nil {
		t.Fatal(err)
	}
	return in
}
