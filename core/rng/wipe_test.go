package rng

import (
	"crypto/aes"
	"crypto/cipher"
	"reflect"
	"testing"
	"unsafe"
)

// objectBytes returns a copy of the bytes wipeObject would overwrite, for
// tests that check the wipe happened.
func objectBytes(x any) []byte {
	var out []byte
	collect := func(v reflect.Value) {
		if v.IsNil() || !pointerFree(v.Type().Elem()) {
			return
		}
		out = append(out, unsafe.Slice((*byte)(v.UnsafePointer()), v.Type().Elem().Size())...)
	}
	v := reflect.ValueOf(x)
	switch v.Kind() {
	case reflect.Pointer:
		collect(v)
	case reflect.Struct:
		for i := range v.NumField() {
			if f := v.Field(i); f.Kind() == reflect.Pointer {
				collect(f)
			}
		}
	}
	return out
}

// TestWipeObject checks the wipe reaches both shapes the package relies
// on: an AES block (pointer to its schedule) and a CTR stream (a wrapper
// struct pointing at a copy of the schedule), and leaves other values
// alone.
func TestWipeObject(t *testing.T) {
	key := make([]byte, 32)
	key[0] = 1
	blk, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	stream := cipher.NewCTR(blk, make([]byte, 16))
	for name, x := range map[string]any{"stream": stream, "block": blk} {
		if b := objectBytes(x); len(b) == 0 || allZero(b) {
			t.Fatalf("%s: nothing to inspect", name)
		}
		wipeObject(x)
		if !allZero(objectBytes(x)) {
			t.Fatalf("%s not wiped", name)
		}
	}
	// Values holding pointers are not touched.
	s := []byte{1, 2, 3}
	wipeObject(&s)
	if s[0] != 1 || len(s) != 3 {
		t.Fatal("wiped a value that holds pointers")
	}
}
