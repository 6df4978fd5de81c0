package gateway

import (
	"math/big"
	"testing"

	"github.com/avonzt/avon/core/handshake"
	"github.com/avonzt/avon/core/pulse"
)

// TestSessionKeepsNoCertificate: after the handshake a session holds the
// agent's id and serial but not its certificate or public key (7.5 KB
// per idle session with ML-DSA-65), and the serial it holds is the leaf's.
func TestSessionKeepsNoCertificate(t *testing.T) {
	e := newEnv(t, nil)
	ctx := testCtx(t)
	a := e.agent("agent-slim", nil)
	a.mustConnect(ctx)
	s := e.gw.sessionByID(pulse.ID(a.res.SessionID))
	if s == nil {
		t.Fatal("no session")
	}
	ks := s.keys.Load()
	if p := ks.current.res.Peer; p.Leaf != nil || p.PublicKey != nil || p.ID != "agent-slim" {
		t.Fatalf("session result keeps leaf %d B, key %d B, id %q", len(p.Leaf), len(p.PublicKey), p.ID)
	}
	want := pulse.NormalizeSerial(new(big.Int).Set(a.cred.Serial).Text(16))
	if s.serial != want {
		t.Fatalf("session serial %q, want %q", s.serial, want)
	}
}

// TestPeerSerialFallback: a verifier that does not say the serial (a
// PeerVerifier other than ChainVerifier) still gets it from the leaf.
func TestPeerSerialFallback(t *testing.T) {
	pki := thePKI(t)
	leaf := pki.agent(t, "agent-fallback")
	got, err := peerSerial(handshake.Peer{Leaf: leaf.Chain[0]})
	if err != nil {
		t.Fatal(err)
	}
	if want := pulse.NormalizeSerial(leaf.Serial.Text(16)); got != want {
		t.Fatalf("serial %q, want %q", got, want)
	}
	if _, err := peerSerial(handshake.Peer{Leaf: []byte{0x30, 0x01}}); err == nil {
		t.Fatal("a malformed leaf gave a serial")
	}
}
