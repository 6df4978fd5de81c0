package cookie

import (
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"
)

func TestCloseWipesSecrets(t *testing.T) {
	c, err := NewChecker([32]byte{1}, rand.NewChaCha8([32]byte{1}), time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Rotate(time.Unix(1, 0)); err != nil {
		t.Fatal(err)
	}
	if c.mu.cur == [32]byte{} || c.mu.prev == [32]byte{} || c.mu.tokenKey == [32]byte{} {
		t.Fatal("secrets not drawn")
	}
	c.Close()
	if c.mu.cur != [32]byte{} || c.mu.prev != [32]byte{} || c.mu.tokenKey != [32]byte{} {
		t.Fatal("secrets not wiped by Close")
	}
}

func TestDroppedSecretWiped(t *testing.T) {
	c, err := NewChecker([32]byte{1}, rand.NewChaCha8([32]byte{2}), time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Two periods later both slots are replaced; the previous slot must not
	// keep the first secret.
	first := c.mu.cur
	if c.CheckMAC2(append(make([]byte, 63), 1), netip.MustParseAddrPort("192.0.2.1:1"), time.Unix(240, 0)) {
		t.Fatal("zero message accepted")
	}
	if c.mu.prevOK || c.mu.prev != [32]byte{} || c.mu.cur == first {
		t.Fatal("stale secret kept after two periods")
	}
}
