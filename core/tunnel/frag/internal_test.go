package frag

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"
)

// bytesHeld sums the buffers of every pending reassembly and checks the
// three indexes agree.
func (r *Reassembler) bytesHeld(t *testing.T) int {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	n, listed := 0, 0
	for p := r.mu.head; p != nil; p = p.next {
		listed++
		n += cap(p.buf)
		if r.mu.byKey[p.key] != p {
			t.Fatal("list entry missing from byKey")
		}
	}
	perSrc := 0
	for _, l := range r.mu.bySrc {
		if len(l) == 0 || len(l) > r.cfg.PerSource {
			t.Fatalf("source list of %d", len(l))
		}
		perSrc += len(l)
	}
	if listed != len(r.mu.byKey) || perSrc != listed {
		t.Fatalf("list %d, byKey %d, bySrc %d", listed, len(r.mu.byKey), perSrc)
	}
	return n
}

func TestMemoryBounded(t *testing.T) {
	r, err := NewReassembler(Config{})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(0, 0)
	bound := r.cfg.Global * r.cfg.MaxTotal
	base, err := Split(make([]byte, 16384), 0, 1200)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5000 {
		src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), uint16(i%3))
		for _, f := range base[:2] {
			binary.BigEndian.PutUint32(f[4:8], uint32(i))
			if _, _, err := r.Add(src, f, t0); err != nil {
				t.Fatal(err)
			}
		}
		if i%97 != 0 {
			continue
		}
		if held := r.bytesHeld(t); held > bound {
			t.Fatalf("%d bytes held after %d sources, bound %d", held, i+1, bound)
		}
	}
	if held := r.bytesHeld(t); held != bound {
		t.Fatalf("%d bytes held, want the full %d", held, bound)
	}
	r.Expire(t0.Add(time.Minute))
	if held := r.bytesHeld(t); held != 0 {
		t.Fatalf("%d bytes held after Expire", held)
	}
}
