package rng

import (
	"crypto/rand"
	"io"
	"testing"
)

// BenchmarkRead compares the generator with crypto/rand (the OS generator
// through the vDSO) for key- and nonce-sized reads and page-sized reads,
// from one goroutine and from GOMAXPROCS goroutines.
func BenchmarkRead(b *testing.B) {
	g, err := New(DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { g.Close() })
	readers := []struct {
		name string
		r    io.Reader
	}{
		{"avon", g},
		{"crypto-rand", rand.Reader},
	}
	sizes := []struct {
		name string
		n    int
	}{
		{"32B", 32},
		{"4KiB", 4096},
	}
	for _, rd := range readers {
		b.Run(rd.name, func(b *testing.B) {
			for _, sz := range sizes {
				b.Run(sz.name, func(b *testing.B) {
					p := make([]byte, sz.n)
					b.SetBytes(int64(sz.n))
					for b.Loop() {
						if _, err := rd.r.Read(p); err != nil {
							b.Fatal(err)
						}
					}
				})
				b.Run(sz.name+"/parallel", func(b *testing.B) {
					b.SetBytes(int64(sz.n))
					b.RunParallel(func(pb *testing.PB) {
						p := make([]byte, sz.n)
						for pb.Next() {
							if _, err := rd.r.Read(p); err != nil {
								b.Error(err)
								return
							}
						}
					})
				})
			}
		})
	}
}

// BenchmarkGenerate measures the raw DRBG for one request of each size
// (key schedule and update included).
func BenchmarkGenerate(b *testing.B) {
	for _, n := range []int{32, 4096, MaxRequestBytes} {
		b.Run(byteSize(n), func(b *testing.B) {
			d := NewCTRDRBG(true)
			if err := d.Instantiate(make([]byte, 32), make([]byte, 16), nil); err != nil {
				b.Fatal(err)
			}
			p := make([]byte, n)
			b.SetBytes(int64(n))
			for b.Loop() {
				if err := d.Generate(p, nil); err != nil {
					if err == ErrReseedRequired {
						d.Reseed(make([]byte, 32), nil)
						continue
					}
					b.Fatal(err)
				}
			}
		})
	}
}

func byteSize(n int) string {
	switch {
	case n >= 1024 && n%1024 == 0:
		return itoa(n/1024) + "KiB"
	default:
		return itoa(n) + "B"
	}
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}
