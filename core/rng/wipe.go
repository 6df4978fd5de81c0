package rng

import (
	"reflect"
	"sync"
	"unsafe"
)

// wipeObject overwrites with zeros the memory of key material held by a
// crypto object the package owns exclusively: the pointer-free value x
// points to (an AES block with its expanded key schedule), or the
// pointer-free values a struct x points to (a CTR stream wrapper holding a
// copy of the schedule). Anything that is not pointer-free is left alone, so
// the garbage collector's view of memory is never corrupted. This is best
// effort: copies the runtime made on goroutine stacks are out of reach.
func wipeObject(x any) {
	v := reflect.ValueOf(x)
	switch v.Kind() {
	case reflect.Pointer:
		wipePointee(v)
	case reflect.Struct:
		for i := range v.NumField() {
			if f := v.Field(i); f.Kind() == reflect.Pointer {
				wipePointee(f)
			}
		}
	}
}

func wipePointee(v reflect.Value) {
	if v.IsNil() {
		return
	}
	t := v.Type().Elem()
	if !pointerFreeCached(t) || t.Size() == 0 {
		return
	}
	clear(unsafe.Slice((*byte)(v.UnsafePointer()), t.Size()))
}

// pointerFreeTypes caches pointerFree per type: the same few crypto types
// are wiped on every DRBG update.
var pointerFreeTypes sync.Map // reflect.Type -> bool

func pointerFreeCached(t reflect.Type) bool {
	if v, ok := pointerFreeTypes.Load(t); ok {
		return v.(bool)
	}
	pf := pointerFree(t)
	pointerFreeTypes.Store(t, pf)
	return pf
}

// pointerFree reports whether values of t contain no pointers.
func pointerFree(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64, reflect.Complex64, reflect.Complex128:
		return true
	case reflect.Array:
		return t.Len() == 0 || pointerFree(t.Elem())
	case reflect.Struct:
		for i := range t.NumField() {
			if !pointerFree(t.Field(i).Type) {
				return false
			}
		}
		return true
	}
	return false
}
