package handshaketest_test

import (
	"bytes"
	"errors"
	"math/big"
	"testing"
	"time"

	"github.com/avonzt/avon/core/handshake"
	"github.com/avonzt/avon/core/handshake/handshaketest"
	"github.com/avonzt/avon/internal/pqx509"
)

var now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func newPKI(t *testing.T, opts handshaketest.Options) *handshaketest.PKI {
	t.Helper()
	p, err := handshaketest.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestAgentChainVerifies: an agent chain verifies under handshake's
// ChainVerifier inside its validity and fails outside it, and the
// Revocations set drives the verifier's Revoked callback.
func TestAgentChainVerifies(t *testing.T) {
	p := newPKI(t, handshaketest.Options{Now: now})
	var rev handshaketest.Revocations
	v, err := handshake.NewChainVerifier(p.Roots(), handshake.ChainVerifierOptions{Revoked: rev.Revoked})
	if err != nil {
		t.Fatal(err)
	}
	key, err := handshaketest.NewKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := p.IssueAgent("agent-0001", key, now.Add(-time.Hour), now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if leaf.Serial.Int64() != handshaketest.FirstLeafSerial || len(leaf.Chain) != 2 || !bytes.Equal(leaf.Chain[1], p.IssuingDER) {
		t.Fatalf("leaf serial %v, chain of %d", leaf.Serial, len(leaf.Chain))
	}
	statusDown := errors.New("status source down")
	for _, tc := range []struct {
		name   string
		at     time.Time
		change func()
		want   error
	}{
		{"valid", now, func() {}, nil},
		{"expired", now.Add(2 * time.Hour), func() {}, handshake.ErrExpired},
		{"not yet valid", now.Add(-2 * time.Hour), func() {}, handshake.ErrCertificate},
		{"status unavailable", now, func() { rev.SetError(statusDown) }, handshake.ErrStatusUnavailable},
		{"status back", now, func() { rev.SetError(nil) }, nil},
		{"revoked", now, func() { rev.Revoke(leaf.Serial) }, handshake.ErrRevoked},
	} {
		tc.change()
		peer, err := v.VerifyChain(leaf.Chain, tc.at)
		if tc.want == nil {
			if err != nil || peer.ID != "agent-0001" || !bytes.Equal(peer.PublicKey, key.Raw()) {
				t.Errorf("%s: peer %q, %v", tc.name, peer.ID, err)
			}
		} else if !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}

// TestRevocations: the zero value is empty; a revoked serial stays
// revoked, others do not; SetError overrides the answers until cleared.
func TestRevocations(t *testing.T) {
	var r handshaketest.Revocations
	if revoked, err := r.Revoked(big.NewInt(7)); revoked || err != nil {
		t.Fatalf("empty set: %v %v", revoked, err)
	}
	r.Revoke(big.NewInt(7))
	for _, tc := range []struct {
		serial int64
		want   bool
	}{{7, true}, {8, false}} {
		if got, err := r.Revoked(big.NewInt(tc.serial)); got != tc.want || err != nil {
			t.Errorf("serial %d: %v %v, want %v", tc.serial, got, err, tc.want)
		}
	}
	boom := errors.New("boom")
	r.SetError(boom)
	if _, err := r.Revoked(big.NewInt(8)); !errors.Is(err, boom) {
		t.Fatalf("with an error set: %v", err)
	}
}

// TestDeterministic: LabelKeys gives the same certificates on every run,
// random keys do not.
func TestDeterministic(t *testing.T) {
	det := handshaketest.Options{Name: "Det", Now: now, Keys: handshaketest.LabelKeys("x: ")}
	a, b := newPKI(t, det), newPKI(t, det)
	if !bytes.Equal(a.RootDER, b.RootDER) || !bytes.Equal(a.IssuingDER, b.IssuingDER) {
		t.Fatal("deterministic PKIs differ")
	}
	la, err := a.IssueAgent("a", handshaketest.KeyFromLabel("agent"), now, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	lb, err := b.IssueAgent("a", handshaketest.KeyFromLabel("agent"), now, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(la.Chain[0], lb.Chain[0]) {
		t.Fatal("deterministic leaves differ")
	}
	if !a.RootKey.Public().Equal(handshaketest.KeyFromLabel("x: Det root").Public()) {
		t.Fatal("root key is not derived from its label")
	}
	r1 := newPKI(t, handshaketest.Options{Now: now})
	r2 := newPKI(t, handshaketest.Options{Now: now})
	if bytes.Equal(r1.RootDER, r2.RootDER) {
		t.Fatal("random PKIs are equal")
	}
	root, err := pqx509.ParseCertificate(a.RootDER)
	if err != nil || root.Subject.CommonName != "Det Root CA" || !root.NotBefore.Equal(now.Add(handshaketest.RootNotBefore)) {
		t.Fatalf("root %+v: %v", root, err)
	}
}

// TestGatewayCertificate: the gateway certificate names the key a
// handshake signer made from the same key uses, and closing that signer
// leaves the shared key intact.
func TestGatewayCertificate(t *testing.T) {
	p := newPKI(t, handshaketest.Options{Now: now})
	key := handshaketest.KeyFromLabel("gateway")
	leaf, err := p.IssueGateway("gateway.test", key, now.Add(-time.Hour), now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := pqx509.ParseCertificate(leaf.Chain[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := cert.CheckSignatureFrom(p.Root, nil); err != nil {
		t.Fatalf("gateway certificate not signed by the root: %v", err)
	}
	if len(cert.DNSNames) != 1 || cert.DNSNames[0] != "gateway.test" {
		t.Fatalf("DNS names %v", cert.DNSNames)
	}
	fromCert, err := handshake.ResponderIDFromCertificate(leaf.Chain[0])
	if err != nil {
		t.Fatal(err)
	}
	fromKey, err := handshake.ResponderID(key.Raw())
	if err != nil || fromCert != fromKey {
		t.Fatalf("responder id from certificate %x, from key %x (%v)", fromCert, fromKey, err)
	}
	for range 2 {
		s, err := handshake.NewMLDSA65Signer(key.PrivateKey(), bytes.NewReader(make([]byte, 64)))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(s.Public(), key.Raw()) {
			t.Fatal("signer public key differs from the key's")
		}
		if _, err := s.Sign([]byte("msg"), []byte("ctx")); err != nil {
			t.Fatalf("sign after an earlier signer was closed: %v", err)
		}
		s.Close()
	}
}
