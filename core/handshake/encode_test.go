package handshake

import (
	"bytes"
	"errors"
	"testing"
)

// TestResponseAppendTo: AppendTo appends Marshal's bytes after dst's and
// leaves dst's own bytes alone; refused fields leave dst as it was.
func TestResponseAppendTo(t *testing.T) {
	raw := vectorMessages(t)["response"]
	m, err := ParseResponse(raw)
	if err != nil {
		t.Fatal(err)
	}
	prefix := []byte("prefix")
	dst := append(make([]byte, 0, 64), prefix...)
	out, err := m.AppendTo(dst)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out[:len(prefix)], prefix) || !bytes.Equal(out[len(prefix):], raw) {
		t.Fatalf("AppendTo wrote %d bytes that differ from the vector", len(out))
	}
	if enc, err := m.Marshal(); err != nil || !bytes.Equal(enc, raw) {
		t.Fatalf("Marshal: %v", err)
	}
	bad := *m
	bad.Sealed = bad.Sealed[:len(bad.Sealed)-1]
	got, err := bad.AppendTo(dst)
	if !errors.Is(err, ErrMalformed) || !bytes.Equal(got, prefix) || len(got) != len(dst) {
		t.Fatalf("short Sealed: %v, %d bytes back", err, len(got))
	}
}

// TestSealInPlace: sealing into the plaintext's own buffer gives the bytes
// of a fresh seal, in that buffer, and they open.
func TestSealInPlace(t *testing.T) {
	var key [32]byte
	for i := range key {
		key[i] = byte(i * 7)
	}
	ad := []byte("transcript")
	pt := []byte("nonce_r, flags and sig_r stand here")
	fresh, err := seal(nil, &key, pt, ad)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(pt), len(pt)+TagLen)
	copy(buf, pt)
	inPlace, err := seal(buf[:0], &key, buf, ad)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(inPlace, fresh) {
		t.Fatal("in-place seal differs from a fresh one")
	}
	if &inPlace[0] != &buf[0] || len(inPlace) != len(pt)+TagLen {
		t.Fatal("in-place seal did not use the plaintext's buffer")
	}
	got, err := open(&key, inPlace, ad)
	if err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("open: %v", err)
	}
	pre, err := seal([]byte("head"), &key, pt, ad)
	if err != nil || !bytes.Equal(pre, append([]byte("head"), fresh...)) {
		t.Fatalf("seal after a prefix: %v", err)
	}
}

// TestParseFinishView: Sealed is a view into the message, capped at its
// end so that appending to it cannot write into the caller's buffer.
func TestParseFinishView(t *testing.T) {
	raw := bytes.Clone(vectorMessages(t)["finish"])
	m, err := ParseFinish(raw)
	if err != nil {
		t.Fatal(err)
	}
	if &m.Sealed[0] != &raw[HeaderLen+IndexLen] || len(m.Sealed) != len(raw)-HeaderLen-IndexLen || cap(m.Sealed) != len(m.Sealed) {
		t.Fatalf("Sealed is not the view raw[8:] (len %d, cap %d)", len(m.Sealed), cap(m.Sealed))
	}
	out, err := m.Marshal()
	if err != nil || !bytes.Equal(out, raw) {
		t.Fatalf("round trip: %v", err)
	}
}
