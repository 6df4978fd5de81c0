package store_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/avonzt/avon/core/store"
	"github.com/avonzt/avon/core/store/memstore"
)

// validKeyRef is the key rule written the slow, obvious way, byte by byte
// and rune by rune, for differential testing of ValidateKey.
func validKeyRef(k string) bool {
	if len(k) == 0 || len(k) > store.MaxKeySize {
		return false
	}
	for i := 0; i < len(k); {
		r, size := utf8.DecodeRuneInString(k[i:])
		if r == utf8.RuneError && size <= 1 {
			return false
		}
		if r < 0x20 || (r >= 0x7f && r <= 0x9f) {
			return false
		}
		i += size
	}
	return true
}

func TestValidateKey(t *testing.T) {
	for _, c := range []struct {
		key string
		ok  bool
	}{
		{"a", true},
		{"plugins/kms/soft/key-1", true},
		{"../x", true},
		{"\u00e9\U0001f600", true},
		{"\ufffd", true}, // the replacement character itself is valid UTF-8
		{strings.Repeat("x", store.MaxKeySize), true},
		{"", false},
		{strings.Repeat("x", store.MaxKeySize+1), false},
		{"a\x00", false},
		{"\x1f", false},
		{"\x7f", false},
		{"\u009f", false},
		{"\xff", false},
		{"\xc0\x80", false}, // overlong NUL
	} {
		err := store.ValidateKey(c.key)
		if c.ok != (err == nil) || (err != nil && !errors.Is(err, store.ErrInvalidKey)) {
			t.Errorf("ValidateKey(%q) = %v, want ok=%v", c.key, err, c.ok)
		}
		if validKeyRef(c.key) != c.ok {
			t.Errorf("reference disagrees on %q", c.key)
		}
	}
}

func TestCheckList(t *testing.T) {
	for _, c := range []struct {
		o       store.ListOptions
		limit   int
		wantErr error
	}{
		{store.ListOptions{}, store.DefaultLimit, nil},
		{store.ListOptions{Limit: 1}, 1, nil},
		{store.ListOptions{Limit: store.MaxLimit}, store.MaxLimit, nil},
		{store.ListOptions{Limit: store.MaxLimit + 1}, 0, store.ErrInvalidArgument},
		{store.ListOptions{Limit: -1}, 0, store.ErrInvalidArgument},
		{store.ListOptions{Prefix: "a\x00"}, 0, store.ErrInvalidKey},
		{store.ListOptions{After: "\xff"}, 0, store.ErrInvalidKey},
		{store.ListOptions{Prefix: "a/", After: "a/b"}, store.DefaultLimit, nil},
	} {
		limit, err := store.CheckList(c.o)
		if limit != c.limit || !errors.Is(err, c.wantErr) || (c.wantErr == nil) != (err == nil) {
			t.Errorf("CheckList(%+v) = %d, %v; want %d, %v", c.o, limit, err, c.limit, c.wantErr)
		}
	}
}

// FuzzValidateKey: no panic on any string, agreement with the reference,
// and every accepted key is one a backend can store and find again.
func FuzzValidateKey(f *testing.F) {
	for _, s := range []string{"", "a", "../x", "a\x00", "\xff", "\u0085", "\xed\xa0\x80", strings.Repeat("k", 513)} {
		f.Add(s)
	}
	kv := memstore.New()
	f.Fuzz(func(t *testing.T, key string) {
		err := store.ValidateKey(key)
		if ref := validKeyRef(key); ref != (err == nil) {
			t.Fatalf("ValidateKey(%q) = %v, reference says valid=%v", key, err, ref)
		}
		if err != nil {
			if !errors.Is(err, store.ErrInvalidKey) {
				t.Fatalf("ValidateKey(%q) = %v, not ErrInvalidKey", key, err)
			}
			return
		}
		ctx := context.Background()
		v, err := kv.Put(ctx, key, []byte(key), store.PutOptions{})
		if err != nil {
			t.Fatalf("valid key %q refused: %v", key, err)
		}
		if e, err := kv.Get(ctx, key); err != nil || e.Version != v || string(e.Value) != key {
			t.Fatalf("valid key %q did not round-trip: %+v %v", key, e, err)
		}
	})
}

// FuzzNamespace: no panic on any prefix and key, and a view never writes,
// reads, lists or deletes outside its prefix.
func FuzzNamespace(f *testing.F) {
	for _, s := range [][2]string{
		{"plugins/kms/soft/", "k"}, {"a/", "../x"}, {"a/", "/"}, {"", "a"}, {"a", "b"},
		{"a\x00/", "k"}, {"\xff/", "k"}, {"p/", "\xff"}, {"p/", strings.Repeat("k", 510)},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, prefix, key string) {
		ctx := context.Background()
		kv := memstore.New()
		// Neighbours of the prefix, and the parent's view of the key.
		canaries := map[string]bool{}
		for _, k := range []string{"outside", "a", "a0", "plugins/kms/other/k", strings.TrimSuffix(prefix, "/"),
			strings.TrimSuffix(prefix, "/") + "0", key, "../" + key} {
			if store.ValidateKey(k) == nil {
				canaries[k] = true
				if _, err := kv.Put(ctx, k, []byte("canary"), store.PutOptions{}); err != nil {
					t.Fatal(err)
				}
			}
		}
		ns, err := store.NewNamespace(kv, prefix)
		if err != nil {
			if !errors.Is(err, store.ErrInvalidKey) || ns != nil {
				t.Fatalf("NewNamespace(%q) = %v, %v", prefix, ns, err)
			}
			return
		}
		if store.ValidateKey(prefix) != nil || !strings.HasSuffix(prefix, "/") {
			t.Fatalf("NewNamespace accepted prefix %q", prefix)
		}
		_, err = ns.Put(ctx, key, []byte("inside"), store.PutOptions{})
		if (err == nil) != (store.ValidateKey(key) == nil && len(prefix)+len(key) <= store.MaxKeySize) {
			t.Fatalf("view Put(%q) under %q: %v", key, prefix, err)
		}
		if e, err := ns.Get(ctx, key); err == nil && string(e.Value) != "inside" {
			t.Fatalf("view Get(%q) under %q read %q", key, prefix, e.Value)
		}
		for _, o := range []store.ListOptions{{}, {Prefix: key}, {After: key}, {Prefix: "../"}} {
			es, _ := ns.List(ctx, o)
			for _, e := range es {
				if string(e.Value) != "inside" && !canaries[prefix+e.Key] {
					t.Fatalf("view %q listed %q = %q", prefix, e.Key, e.Value)
				}
				if pe, err := kv.Get(ctx, prefix+e.Key); err != nil || pe.Version != e.Version {
					t.Fatalf("view %q listed %q, parent has %+v %v", prefix, e.Key, pe, err)
				}
			}
		}
		_ = ns.Delete(ctx, "../"+key, store.DeleteOptions{})
		_ = ns.Delete(ctx, key, store.DeleteOptions{})

		es, err := kv.List(ctx, store.ListOptions{Limit: store.MaxLimit})
		if err != nil {
			t.Fatal(err)
		}
		left := map[string]bool{}
		for _, e := range es {
			if string(e.Value) == "inside" {
				t.Fatalf("view %q: %q survived its delete", prefix, e.Key)
			}
			left[e.Key] = true
		}
		for k := range canaries {
			if !strings.HasPrefix(k, prefix) && !left[k] {
				t.Fatalf("view %q deleted %q outside itself", prefix, k)
			}
		}
	})
}
