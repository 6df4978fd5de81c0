package rng

import (
	"bytes"
	"crypto/aes"
	"errors"
	"testing"
)

// refGenerate is an obviously-correct Generate without additional input:
// one block encryption per counter value, V incremented modulo 2^128.
func refGenerate(key [KeyLen]byte, v [OutLen]byte, n int) ([]byte, [OutLen]byte) {
	b, _ := aes.NewCipher(key[:])
	var out []byte
	for len(out) < n {
		addCounter(&v, 1)
		var blk [OutLen]byte
		b.Encrypt(blk[:], v[:])
		out = append(out, blk[:]...)
	}
	return out[:n], v
}

// TestGenerateMatchesReference compares the CTR-mode fast path with the
// block-by-block reference, including counters about to carry across the
// 64-bit and 128-bit boundaries.
func TestGenerateMatchesReference(t *testing.T) {
	for _, start := range [][OutLen]byte{
		{},
		{0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xf0},
		{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfd},
	} {
		for _, n := range []int{0, 1, 16, 17, 100, 4096, MaxRequestBytes} {
			d := NewCTRDRBG(true)
			if err := d.Instantiate(bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 16), nil); err != nil {
				t.Fatal(err)
			}
			d.v = start
			key := d.key
			want, wantV := refGenerate(key, start, n)
			got := make([]byte, n)
			for i := range got {
				got[i] = 0xEE // Generate must not depend on p's contents
			}
			if err := d.Generate(got, nil); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("V=%x n=%d: output differs from reference", start, n)
			}
			// The update after generation starts from V+ceil(n/16).
			r := NewCTRDRBG(true)
			r.key, r.v, r.instantiated, r.reseedInterval = key, wantV, true, MaxReseedInterval
			r.rekey()
			var zero [SeedLen]byte
			r.update(&zero)
			if r.key != d.key || r.v != d.v {
				t.Fatalf("V=%x n=%d: state after Generate differs from reference", start, n)
			}
		}
	}
}

func TestDRBGInputErrors(t *testing.T) {
	e32, e48, n16 := make([]byte, 32), make([]byte, SeedLen), make([]byte, 16)
	for _, tc := range []struct {
		name string
		df   bool
		op   func(d *CTRDRBG) error
		ok   bool
	}{
		{"df short entropy", true, func(d *CTRDRBG) error { return d.Instantiate(e32[:31], n16, nil) }, false},
		{"df short nonce", true, func(d *CTRDRBG) error { return d.Instantiate(e32, n16[:15], nil) }, false},
		{"df long pers", true, func(d *CTRDRBG) error { return d.Instantiate(e32, n16, make([]byte, MaxInputLen+1)) }, false},
		{"df ok", true, func(d *CTRDRBG) error { return d.Instantiate(e32, n16, nil) }, true},
		{"nodf entropy 47", false, func(d *CTRDRBG) error { return d.Instantiate(e48[:47], nil, nil) }, false},
		{"nodf entropy 49", false, func(d *CTRDRBG) error { return d.Instantiate(append(e48, 0), nil, nil) }, false},
		{"nodf nonce", false, func(d *CTRDRBG) error { return d.Instantiate(e48, n16, nil) }, false},
		{"nodf pers 49", false, func(d *CTRDRBG) error { return d.Instantiate(e48, nil, make([]byte, 49)) }, false},
		{"nodf ok", false, func(d *CTRDRBG) error { return d.Instantiate(e48, nil, make([]byte, 48)) }, true},
	} {
		d := NewCTRDRBG(tc.df)
		err := tc.op(d)
		if tc.ok != (err == nil) || (!tc.ok && !errors.Is(err, ErrInputLength)) {
			t.Errorf("%s: %v", tc.name, err)
		}
		if !tc.ok && d.instantiated {
			t.Errorf("%s: refused input instantiated the DRBG", tc.name)
		}
	}

	d := NewCTRDRBG(false)
	if err := d.Generate(make([]byte, 16), nil); !errors.Is(err, ErrNotInstantiated) {
		t.Fatalf("Generate before Instantiate: %v", err)
	}
	if err := d.Reseed(e48, nil); !errors.Is(err, ErrNotInstantiated) {
		t.Fatalf("Reseed before Instantiate: %v", err)
	}
	if err := d.Instantiate(e48, nil, nil); err != nil {
		t.Fatal(err)
	}
	key, v := d.key, d.v
	out := bytes.Repeat([]byte{9}, 16)
	for _, op := range []func() error{
		func() error { return d.Generate(make([]byte, MaxRequestBytes+1), nil) },
		func() error { return d.Generate(out, make([]byte, SeedLen+1)) },
		func() error { return d.Reseed(e48, make([]byte, SeedLen+1)) },
		func() error { return d.Reseed(e48[:20], nil) },
	} {
		var ie *InputError
		if err := op(); !errors.As(err, &ie) {
			t.Fatalf("want *InputError, got %v", err)
		}
		if d.key != key || d.v != v || d.reseedCounter != 1 || !bytes.Equal(out, bytes.Repeat([]byte{9}, 16)) {
			t.Fatal("refused call changed state or output")
		}
	}
}

func TestReseedInterval(t *testing.T) {
	d := NewCTRDRBG(true)
	if err := d.SetReseedInterval(0); !errors.Is(err, ErrConfig) {
		t.Fatal(err)
	}
	if err := d.SetReseedInterval(MaxReseedInterval + 1); !errors.Is(err, ErrConfig) {
		t.Fatal(err)
	}
	if err := d.SetReseedInterval(2); err != nil {
		t.Fatal(err)
	}
	if err := d.Instantiate(make([]byte, 32), make([]byte, 16), nil); err != nil {
		t.Fatal(err)
	}
	out := make([]byte, 8)
	for i := range 2 {
		if err := d.Generate(out, nil); err != nil {
			t.Fatalf("generate %d: %v", i, err)
		}
	}
	if err := d.Generate(out, nil); !errors.Is(err, ErrReseedRequired) {
		t.Fatalf("third generate: %v", err)
	}
	if err := d.Reseed(make([]byte, 32), nil); err != nil {
		t.Fatal(err)
	}
	if err := d.Generate(out, nil); err != nil || d.ReseedCounter() != 2 {
		t.Fatalf("after reseed: %v counter %d", err, d.ReseedCounter())
	}
}

// TestRekeyWipesOldSchedule: after Generate replaces Key, the previous
// expanded key schedule no longer holds the old key.
func TestRekeyWipesOldSchedule(t *testing.T) {
	d := NewCTRDRBG(true)
	if err := d.Instantiate(make([]byte, 32), make([]byte, 16), nil); err != nil {
		t.Fatal(err)
	}
	old := d.block
	if allZero(objectBytes(old)) {
		t.Fatal("cannot inspect the key schedule")
	}
	if err := d.Generate(make([]byte, 32), nil); err != nil {
		t.Fatal(err)
	}
	if !allZero(objectBytes(old)) {
		t.Fatal("old key schedule left in memory")
	}
	if allZero(objectBytes(d.block)) {
		t.Fatal("current key schedule wiped")
	}
	d.Uninstantiate()
	if d.block != nil || !allZero(d.key[:]) || !allZero(d.v[:]) || d.ReseedCounter() != 0 {
		t.Fatal("Uninstantiate left state")
	}
	if err := d.Generate(make([]byte, 1), nil); !errors.Is(err, ErrNotInstantiated) {
		t.Fatal(err)
	}
}
