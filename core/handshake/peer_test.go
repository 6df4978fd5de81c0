package handshake

import (
	"testing"
	"time"
)

// TestPeerSerial: the verifier hands over the leaf's serial, so the
// gateway does not parse the leaf a second time.
func TestPeerSerial(t *testing.T) {
	f := newFixture(t)
	chain, serial := f.pki.agent(t, "agent-serial", "agent serial", testNow.Add(-time.Hour), testNow.Add(time.Hour))
	p, err := f.verifier.VerifyChain(chain, testNow)
	if err != nil {
		t.Fatal(err)
	}
	if p.Serial == nil || p.Serial.Cmp(serial) != 0 {
		t.Fatalf("peer serial %v, want %v", p.Serial, serial)
	}
	// The Peer owns its serial: changing it changes nothing cached.
	p.Serial.SetInt64(1)
	p2, err := f.verifier.VerifyChain(chain, testNow)
	if err != nil || p2.Serial.Cmp(serial) != 0 {
		t.Fatalf("second verification: serial %v, %v", p2.Serial, err)
	}
}
