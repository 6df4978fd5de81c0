package store_test

import (
	"context"
	"strings"
	"testing"

	"github.com/avonzt/avon/core/store"
	"github.com/avonzt/avon/core/store/memstore"
)

func FuzzNamespaceKeys(f *testing.F) {
	for _, s := range []string{"", "a", "../x", "a\x00", "\xff", "plugins/"} {
		f.Add(s, s)
	}
	f.Fuzz(func(t *testing.T, prefix, key string) {
		kv := memstore.New()
		if err := store.ValidateKey(key); err == nil {
			if _, err := kv.Put(context.Background(), key, []byte("x"), store.PutOptions{}); err != nil {
				t.Fatalf("valid key %q refused: %v", key, err)
			}
		}
		ns, err := store.NewNamespace(kv, prefix)
		if err != nil {
			return
		}
		ctx := context.Background()
		_, _ = ns.Put(ctx, key, []byte("y"), store.PutOptions{})
		es, err := kv.List(ctx, store.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			if string(e.Value) == "y" && !strings.HasPrefix(e.Key, prefix) {
				t.Fatalf("namespace %q wrote %q outside itself", prefix, e.Key)
			}
		}
	})
}
