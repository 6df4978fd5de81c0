package rng

import (
	"reflect"
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
