package rng

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzGenerateAdditionalInput drives Instantiate, Reseed and Generate with
// arbitrary inputs in both modes: no panic, over-long or short inputs get
// an *InputError and change nothing, accepted calls behave like a second
// DRBG fed the same calls.
func FuzzGenerateAdditionalInput(f *testing.F) {
	f.Add(false, uint32(32), []byte("entropy-entropy-entropy-entropy-entropy-entropy!"), []byte("add"), []byte("pers"))
	f.Add(true, uint32(4096), bytes.Repeat([]byte{1}, 64), bytes.Repeat([]byte{2}, 300), []byte{})
	f.Add(true, uint32(MaxRequestBytes+1), []byte{1, 2, 3}, []byte{}, bytes.Repeat([]byte{3}, 49))
	f.Fuzz(func(t *testing.T, df bool, outLen uint32, entropy, add, pers []byte) {
		outLen %= MaxRequestBytes + 64
		a, b := NewCTRDRBG(df), NewCTRDRBG(df)
		var nonce []byte
		if df {
			nonce = bytes.Repeat([]byte{0x5c}, MinNonceLen)
		}
		errA := a.Instantiate(entropy, nonce, pers)
		errB := b.Instantiate(entropy, nonce, pers)
		if (errA == nil) != (errB == nil) {
			t.Fatal("nondeterministic Instantiate")
		}
		if errA != nil {
			if !errors.Is(errA, ErrInputLength) || a.instantiated {
				t.Fatalf("Instantiate: %v", errA)
			}
			// Instantiate with fixed valid entropy so the rest still runs.
			good := bytes.Repeat([]byte{7}, SeedLen)
			if a.Instantiate(good, nonce, nil) != nil || b.Instantiate(good, nonce, nil) != nil {
				t.Fatal("valid Instantiate refused")
			}
		}
		key, v := a.key, a.v
		out := make([]byte, outLen)
		err := a.Generate(out, add)
		tooLong := int(outLen) > MaxRequestBytes || (!df && len(add) > SeedLen) || len(add) > MaxInputLen
		if tooLong {
			if !errors.Is(err, ErrInputLength) || a.key != key || a.v != v || !allZero(out) {
				t.Fatalf("refused Generate: err %v, state changed %v", err, a.key != key)
			}
			return
		}
		if err != nil {
			t.Fatalf("Generate: %v", err)
		}
		// Reseed with the additional input as entropy (if acceptable).
		errR := a.Reseed(add, entropy)
		errRB := b.Generate(make([]byte, outLen), add)
		if errRB != nil {
			t.Fatal(errRB)
		}
		if errR != nil {
			if !errors.Is(errR, ErrInputLength) {
				t.Fatalf("Reseed: %v", errR)
			}
		} else if err := b.Reseed(add, entropy); err != nil {
			t.Fatal(err)
		}
		x, y := make([]byte, 40), make([]byte, 40)
		if a.Generate(x, nil) != nil || b.Generate(y, nil) != nil || !bytes.Equal(x, y) {
			t.Fatal("two DRBGs fed the same calls diverged")
		}
	})
}

// FuzzHealthTests feeds arbitrary sample streams through the health tests
// and checks the verdict against a direct recount.
func FuzzHealthTests(f *testing.F) {
	f.Add([]byte{1, 1, 1, 1, 1, 1, 2}, uint8(4))
	f.Add(bytes.Repeat([]byte{0, 1, 2, 3}, 200), uint8(8))
	f.Fuzz(func(t *testing.T, samples []byte, hq uint8) {
		h := float64(hq%8) + 1
		ht := newHealthTests(h)
		test, count := ht.feed(samples)
		// Recount: first RCT run reaching the cutoff, first APT window
		// reaching it; the earlier position wins.
		rctAt, aptAt := -1, -1
		run := 0
		for i, x := range samples {
			if i > 0 && x == samples[i-1] {
				run++
			} else {
				run = 1
			}
			if run >= ht.rctCutoff {
				rctAt = i
				break
			}
		}
		for start := 0; start < len(samples) && aptAt < 0; start += APTWindow {
			c := 0
			for i := start; i < min(start+APTWindow, len(samples)); i++ {
				if samples[i] == samples[start] {
					c++
					if c >= ht.aptCutoff {
						aptAt = i
						break
					}
				}
			}
		}
		var want string
		switch {
		case rctAt >= 0 && (aptAt < 0 || rctAt <= aptAt):
			want = TestRepetitionCount
		case aptAt >= 0:
			want = TestAdaptiveProportion
		}
		if test != want {
			t.Fatalf("feed says %q (count %d), recount says %q (rct@%d apt@%d)", test, count, want, rctAt, aptAt)
		}
	})
}
