package rngtest

import (
	"bytes"
	"errors"
	"testing"
)

func TestModes(t *testing.T) {
	a, b := New("a", 1), New("b", 1)
	pa, pb := make([]byte, 4096), make([]byte, 4096)
	a.Read(pa)
	b.Read(pb)
	if !bytes.Equal(pa, pb) || bytes.Equal(pa, make([]byte, 4096)) {
		t.Fatal("Healthy is not a deterministic non-zero stream")
	}

	a.SetMode(Stuck)
	a.Read(pa)
	if !bytes.Equal(pa, bytes.Repeat(pa[:1], len(pa))) {
		t.Fatal("Stuck output varies")
	}

	a.SetMode(Biased)
	a.Read(pa)
	counts := map[byte]int{}
	for i, x := range pa {
		counts[x]++
		if i > 0 && x == pa[i-1] {
			t.Fatalf("Biased repeats at %d", i)
		}
	}
	if len(counts) > 4 {
		t.Fatalf("Biased uses %d values", len(counts))
	}

	a.SetMode(Failing)
	if n, err := a.Read(pa); n != 0 || !errors.Is(err, ErrInjected) {
		t.Fatalf("Failing: %d, %v", n, err)
	}
	a.SetMode(Empty)
	if n, err := a.Read(pa); n != 0 || err != nil {
		t.Fatalf("Empty: %d, %v", n, err)
	}
	if calls, _ := a.Reads(); calls != 5 {
		t.Fatalf("calls %d", calls)
	}
}
