package keystore

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/avonzt/avon/sdk/kms"
)

// seedFile makes a keystore image with keys of every algorithm, versions,
// labels and a tombstone, and returns it with its plaintext key set.
func seedFile(f *testing.F) (file, set []byte) {
	f.Helper()
	path := filepath.Join(f.TempDir(), "seed.avks")
	ks, err := Open(testOptions(path, rand.Reader))
	if err != nil {
		f.Fatal(err)
	}
	ctx := context.Background()
	for _, a := range kms.AllAlgorithms {
		if _, err := ks.GenerateKey(ctx, &kms.GenerateKeyRequest{ID: "f-" + string(a), Algorithm: a, Labels: map[string]string{"a": "b", "c": ""}}); err != nil {
			f.Fatal(err)
		}
	}
	ks.RotateKey(ctx, &kms.RotateKeyRequest{ID: "f-Ed25519"})
	ks.DestroyKey(ctx, &kms.DestroyKeyRequest{ID: "f-Ed25519", Version: 1})
	ks.DestroyKey(ctx, &kms.DestroyKeyRequest{ID: "f-AES-256"})
	ks.Close()
	file, err = os.ReadFile(path)
	if err != nil {
		f.Fatal(err)
	}
	fk, set, err := openFile(file, []byte(pass))
	if err != nil {
		f.Fatal(err)
	}
	fk.clear()
	return file, set
}

// FuzzOpenFile: the file parser and decryption never panic on any bytes,
// and what opens decodes or fails cleanly.
func FuzzOpenFile(f *testing.F) {
	file, _ := seedFile(f)
	f.Add(file)
	f.Add(file[:headerSize])
	f.Add([]byte(magic))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, _, err := parseHeader(data)
		if err != nil {
			return
		}
		// Keep each input cheap: the fuzzer is free to write any KDF cost.
		if p.MemoryKiB > 1024 || p.Time > 2 {
			return
		}
		fk, pt, err := openFile(data, []byte(pass))
		if err != nil {
			return
		}
		fk.clear()
		if keys, err := decodeSet(pt); err == nil {
			for _, e := range keys {
				e.clear()
			}
		}
	})
}

// FuzzDecodeSet: the key set decoder never panics, keeps its invariants,
// and is canonical: what it accepts re-encodes to the same bytes.
func FuzzDecodeSet(f *testing.F) {
	_, set := seedFile(f)
	f.Add(set)
	f.Add([]byte{setVersion1, 0, 0, 0, 0})
	f.Add([]byte{setVersion1, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		keys, err := decodeSet(data)
		if err != nil {
			return
		}
		defer func() {
			for _, e := range keys {
				e.clear()
			}
		}()
		for id, e := range keys {
			if e.meta.ID != id || !validID(id) {
				t.Fatalf("accepted ID %q", id)
			}
			if e.meta.PrimaryVersion < 1 || e.meta.PrimaryVersion > len(e.meta.Versions) {
				t.Fatalf("accepted primary %d of %d", e.meta.PrimaryVersion, len(e.meta.Versions))
			}
			if len(e.material) > 0 && e.material[e.meta.PrimaryVersion] == nil {
				t.Fatal("accepted a destroyed primary with enabled versions")
			}
		}
		again, err := encodeSet(keys)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(again, data) {
			t.Fatalf("not canonical: %x re-encodes to %x", data, again)
		}
	})
}

// FuzzSharedRefresh: whatever bytes a shared store returns, Refresh
// refuses them with ErrTampered or adopts them, never panics, and a
// refused image leaves the keys in force.
func FuzzSharedRefresh(f *testing.F) {
	sh := &memShared{}
	ks, err := Open(sharedOpts(sh))
	if err != nil {
		f.Fatal(err)
	}
	if _, err := ks.GenerateKey(context.Background(), &kms.GenerateKeyRequest{ID: "k", Algorithm: kms.Ed25519}); err != nil {
		f.Fatal(err)
	}
	good, _, _ := sh.Load(context.Background())
	f.Add(good)
	f.Add(good[:headerSize])
	f.Add(good[:nonceOffset])
	f.Add([]byte(magic))
	f.Fuzz(func(t *testing.T, data []byte) {
		sh.set(append([]byte{}, data...)) // never nil: nil is "no image" to memShared
		err := ks.Refresh(context.Background())
		if err != nil && !errors.Is(err, ErrTampered) {
			t.Fatalf("untyped error: %v", err)
		}
		if err != nil {
			if _, err := ks.GetKey(context.Background(), &kms.GetKeyRequest{ID: "k"}); err != nil {
				t.Fatalf("a refused image changed the keys in force: %v", err)
			}
		}
		// Back to the good image for the next input.
		sh.set(good)
		if err := ks.Refresh(context.Background()); err != nil {
			t.Fatal(err)
		}
	})
}
