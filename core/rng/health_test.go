package rng

import (
	"math"
	"testing"
)

func TestRCTCutoff(t *testing.T) {
	for _, tc := range []struct {
		h    float64
		want int
	}{
		{8, 4}, {4, 6}, {2, 11}, {1, 21}, {0.5, 41}, {3, 8}, {7.5, 4},
	} {
		if got := RCTCutoff(tc.h); got != tc.want {
			t.Errorf("RCTCutoff(%v) = %d, want %d", tc.h, got, tc.want)
		}
	}
}

// TestAPTCutoff checks the computed cutoffs against the values SP 800-90B
// tabulates for W = 512 and alpha = 2^-20 (Table 2).
func TestAPTCutoff(t *testing.T) {
	for _, tc := range []struct {
		h    float64
		want int
	}{
		{0.5, 410}, {1, 311}, {2, 177}, {4, 62}, {8, 13},
	} {
		if got := APTCutoff(tc.h); got != tc.want {
			t.Errorf("APTCutoff(%v) = %d, want %d", tc.h, got, tc.want)
		}
	}
}

// TestCritBinomDefinition checks the inverse-CDF property directly against
// a CDF summed from the bottom: P(X <= k) >= 1-alpha and P(X <= k-1) <
// 1-alpha.
func TestCritBinomDefinition(t *testing.T) {
	alpha := math.Exp2(-20)
	for _, p := range []float64{0.5, 0.25, 1.0 / 16, 1.0 / 256, 0.01, 0.9} {
		for _, n := range []int{16, 100, 512} {
			k := critBinom(n, p, alpha)
			cdf := func(k int) float64 {
				s := 0.0
				for j := 0; j <= k; j++ {
					s += binomPMF(n, j, p)
				}
				return s
			}
			// Tolerate the rounding of summing ~n terms near 1.
			const eps = 1e-12
			if cdf(k) < 1-alpha-eps {
				t.Errorf("n=%d p=%v: P(X<=%d)=%v below 1-alpha", n, p, k, cdf(k))
			}
			if k > 0 && cdf(k-1) >= 1-alpha+eps {
				t.Errorf("n=%d p=%v: P(X<=%d)=%v already reaches 1-alpha; %d not smallest", n, p, k-1, cdf(k-1), k)
			}
		}
	}
}

func TestHealthTestsRCT(t *testing.T) {
	ht := newHealthTests(4) // C = 6
	if test, _ := ht.feed([]byte{1, 2, 2, 2, 2, 2, 3}); test != "" {
		t.Fatalf("5 repeats tripped %s", test)
	}
	test, n := ht.feed([]byte{7, 7, 7, 7, 7, 7})
	if test != TestRepetitionCount || n != 6 {
		t.Fatalf("6 repeats: got %q %d, want %s 6", test, n, TestRepetitionCount)
	}
}

func TestHealthTestsAPT(t *testing.T) {
	ht := newHealthTests(4) // APT cutoff 62 in a 512 window
	// Reference value 0 appears 61 times in the window, never twice in a row.
	w := make([]byte, APTWindow)
	for i := range w {
		w[i] = byte(1 + i%200)
		if i%8 == 0 && i/8 < 61 {
			w[i] = 0
		}
	}
	if test, _ := ht.feed(w); test != "" {
		t.Fatalf("61 occurrences tripped %s", test)
	}
	w2 := append([]byte(nil), w...)
	w2[8*61] = 0 // the 62nd
	test, n := ht.feed(w2)
	if test != TestAdaptiveProportion || n != 62 {
		t.Fatalf("62 occurrences: got %q %d", test, n)
	}
}

// TestHealthTestsWindowReset checks that counts do not carry across APT
// windows.
func TestHealthTestsWindowReset(t *testing.T) {
	ht := newHealthTests(4)
	w := make([]byte, APTWindow)
	for i := range w {
		w[i] = byte(1 + i%200)
		if i%8 == 0 && i/8 < 40 {
			w[i] = 0
		}
	}
	for range 10 {
		if test, _ := ht.feed(w); test != "" {
			t.Fatalf("40 per window tripped %s", test)
		}
	}
	if ht.samples != 10*APTWindow {
		t.Fatalf("samples %d", ht.samples)
	}
}
