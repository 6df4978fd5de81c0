package control_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"testing"

	"github.com/avonzt/avon/core/tunnel/control"
)

// FuzzParse: Parse never panics and returns only the package's errors; what
// it accepts marshals back to exactly the bytes it read (the encoding is
// canonical), and parsing that again gives the same message.
func FuzzParse(f *testing.F) {
	for _, m := range samples() {
		b, err := control.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(pad(b))
	}
	f.Add([]byte{})
	f.Add([]byte{0x45, 0, 0, 20})
	f.Add([]byte{6, 0, 0})
	f.Add([]byte{5, 0xff, 0xff})
	f.Add(raw(2, uint64(1), make([]byte, 32), uint64(0), uint64(0), 0, 0, 2, 1, "b", uint16(0), 1, "a", uint16(0)))

	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := control.Parse(b)
		if err != nil {
			if m != nil {
				t.Fatalf("message with error %v", err)
			}
			for _, want := range []error{control.ErrTruncated, control.ErrTooLarge, control.ErrMalformed, control.ErrUnknownType} {
				if errors.Is(err, want) {
					return
				}
			}
			t.Fatalf("untyped error %v", err)
		}
		if !control.IsControl(b) {
			t.Fatalf("parsed a non-control plaintext %x", b)
		}
		c, err := control.Marshal(m)
		if err != nil {
			t.Fatalf("parsed %+v does not marshal: %v", m, err)
		}
		n := control.HeaderLen + int(binary.BigEndian.Uint16(b[1:]))
		if !bytes.Equal(c, b[:n]) {
			t.Fatalf("not canonical:\nread    %x\nwritten %x", b[:n], c)
		}
		m2, err := control.Parse(c)
		if err != nil || !reflect.DeepEqual(m, m2) {
			t.Fatalf("second parse: %v\n%+v\n%+v", err, m, m2)
		}
	})
}
