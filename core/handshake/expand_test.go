package handshake

import (
	"bytes"
	"crypto/sha256"
	"io"
	"strings"
	"testing"

	"golang.org/x/crypto/hkdf"
)

// TestExpandIsHKDF: expand and the expander give RFC 5869's HKDF-Expand
// (golang.org/x/crypto/hkdf) for every output length up to 32, labels
// shorter and longer than the expander's stack buffer, with and without a
// transcript hash, and in any order on one expander.
func TestExpandIsHKDF(t *testing.T) {
	var prk [32]byte
	for i := range prk {
		prk[i] = byte(3*i + 1)
	}
	th := sha256.Sum256([]byte("transcript"))
	labels := []string{"", labelI2R, labelSessionID, strings.Repeat("l", 63), strings.Repeat("m", 64), strings.Repeat("n", 200)}
	e := newExpander(&prk)
	for _, label := range labels {
		for _, ctx := range [][]byte{nil, th[:]} {
			for n := 1; n <= 32; n++ {
				want := make([]byte, n)
				if _, err := io.ReadFull(hkdf.Expand(sha256.New, prk[:], append([]byte(label), ctx...)), want); err != nil {
					t.Fatal(err)
				}
				got := make([]byte, n)
				expand(&prk, label, ctx, got)
				if !bytes.Equal(got, want) {
					t.Fatalf("expand(label %d bytes, ctx %d bytes, n %d) = %x, want %x", len(label), len(ctx), n, got, want)
				}
				clear(got)
				e.expand(label, ctx, got)
				if !bytes.Equal(got, want) {
					t.Fatalf("expander(label %d bytes, ctx %d bytes, n %d) = %x, want %x", len(label), len(ctx), n, got, want)
				}
			}
		}
	}
}

func BenchmarkDeriveSession(b *testing.B) {
	var prk [32]byte
	th := sha256.Sum256([]byte("transcript"))
	b.ReportAllocs()
	for b.Loop() {
		k := deriveSession(&prk, th[:])
		k.zeroize()
	}
}
