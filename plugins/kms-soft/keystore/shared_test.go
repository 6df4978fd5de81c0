package keystore

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"testing"

	"github.com/avonzt/avon/sdk/kms"
	"github.com/avonzt/avon/sdk/kms/kmstest"
)

// memShared is an in-memory Shared store: one image and its version.
type memShared struct {
	mu        sync.Mutex
	data      []byte
	version   int64
	next      int64
	stores    int
	conflicts int
}

func (m *memShared) Load(context.Context) ([]byte, int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.data == nil {
		return nil, 0, fmt.Errorf("memShared: %w", fs.ErrNotExist)
	}
	return append([]byte(nil), m.data...), m.version, nil
}

func (m *memShared) Store(_ context.Context, data []byte, ifVersion int64) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if ifVersion != m.version {
		m.conflicts++
		return 0, fmt.Errorf("memShared: have %d, asked %d: %w", m.version, ifVersion, ErrConflict)
	}
	m.next++
	m.data, m.version = append([]byte(nil), data...), m.next
	m.stores++
	return m.version, nil
}

// set replaces the image behind the keystores' backs.
func (m *memShared) set(data []byte) {
	m.mu.Lock()
	m.next++
	m.data, m.version = data, m.next
	m.mu.Unlock()
}

func sharedOpts(sh Shared) Options {
	o := testOptions("shared:test", rand.Reader)
	o.Shared = sh
	return o
}

func TestSharedConformance(t *testing.T) {
	kmstest.Run(t, func(t *testing.T) kms.KMS { return openOpts(t, sharedOpts(&memShared{})) },
		kmstest.WithExporter(true), kmstest.WithRandomSource(false))
}

// TestSharedReplicas: two keystores on one shared image (two replicas).
// A key made by one signs on the other after a Refresh; a rotation and a
// destruction on one take effect on the other; nothing is written to a
// file.
func TestSharedReplicas(t *testing.T) {
	ctx := context.Background()
	sh := &memShared{}
	a := openOpts(t, sharedOpts(sh))
	b := openOpts(t, sharedOpts(sh))
	mustGen(t, a, "ca", kms.MLDSA65)
	msg := []byte("tbs")
	if _, err := b.Sign(ctx, &kms.SignRequest{ID: "ca", Message: msg}); !errors.Is(err, kms.ErrKeyNotFound) {
		t.Fatalf("before a refresh: %v, want ErrKeyNotFound", err)
	}
	if err := b.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	sig, err := b.Sign(ctx, &kms.SignRequest{ID: "ca", Message: msg})
	if err != nil {
		t.Fatal(err)
	}
	if v, err := a.Verify(ctx, &kms.VerifyRequest{ID: "ca", Version: sig.Version, Message: msg, Signature: sig.Signature}); err != nil || !v.Valid {
		t.Fatalf("a signature of replica b does not verify on a: %v %v", v, err)
	}
	// b rotates (its mutation starts from the current image).
	rot, err := b.RotateKey(ctx, &kms.RotateKeyRequest{ID: "ca"})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	s2, err := a.Sign(ctx, &kms.SignRequest{ID: "ca", Message: msg})
	if err != nil || s2.Version != rot.Key.PrimaryVersion {
		t.Fatalf("after b rotated, a signs with version %d (%v), want %d", s2.Version, err, rot.Key.PrimaryVersion)
	}
	// a destroys it; b stops signing with it after a refresh.
	if _, err := a.DestroyKey(ctx, &kms.DestroyKeyRequest{ID: "ca"}); err != nil {
		t.Fatal(err)
	}
	if err := b.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Sign(ctx, &kms.SignRequest{ID: "ca", Message: msg}); err == nil {
		t.Fatal("b signs with a key a destroyed")
	}
}

// TestSharedConcurrentWriters: replicas generating keys at the same time
// lose none of them (a write that lost the race starts again from the
// winner's image).
func TestSharedConcurrentWriters(t *testing.T) {
	ctx := context.Background()
	sh := &memShared{}
	kss := []*Keystore{openOpts(t, sharedOpts(sh)), openOpts(t, sharedOpts(sh)), openOpts(t, sharedOpts(sh))}
	const per = 6
	var wg sync.WaitGroup
	errs := make(chan error, len(kss)*per)
	for i, ks := range kss {
		wg.Go(func() {
			for j := range per {
				if _, err := ks.GenerateKey(ctx, &kms.GenerateKeyRequest{ID: fmt.Sprintf("k-%d-%d", i, j), Algorithm: kms.Ed25519}); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for i, ks := range kss {
		if err := ks.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
		l, err := ks.ListKeys(ctx, &kms.ListKeysRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if len(l.Keys) != len(kss)*per {
			t.Fatalf("replica %d sees %d keys, want %d", i, len(l.Keys), len(kss)*per)
		}
	}
	t.Logf("%d writes, %d conflicts retried", sh.stores, sh.conflicts)
	// Two replicas racing to create the same key: one creates it, the
	// other is told it exists.
	_, e1 := kss[0].GenerateKey(ctx, &kms.GenerateKeyRequest{ID: "same", Algorithm: kms.Ed25519})
	_, e2 := kss[1].GenerateKey(ctx, &kms.GenerateKeyRequest{ID: "same", Algorithm: kms.Ed25519})
	if e1 != nil || !errors.Is(e2, kms.ErrKeyExists) {
		t.Fatalf("creating one id on two replicas: %v, %v; want nil, ErrKeyExists", e1, e2)
	}
}

// TestSharedCreateRace: replicas that start together on an empty store
// end up with one keystore.
func TestSharedCreateRace(t *testing.T) {
	sh := &memShared{}
	kss := make([]*Keystore, 4)
	var wg sync.WaitGroup
	errs := make([]error, len(kss))
	for i := range kss {
		wg.Go(func() { kss[i], errs[i] = Open(sharedOpts(sh)) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
		t.Cleanup(func() { kss[i].Close() })
	}
	mustGen(t, kss[0], "k", kms.Ed25519)
	for i, ks := range kss {
		if err := ks.Refresh(context.Background()); err != nil {
			t.Fatalf("replica %d cannot read what replica 0 wrote: %v", i, err)
		}
	}
}

// TestSharedBadImages: a wrong passphrase, a damaged image and an image of
// another keystore (another salt) are refused with typed errors, and a
// refused refresh leaves the keys in force.
func TestSharedBadImages(t *testing.T) {
	ctx := context.Background()
	sh := &memShared{}
	a := openOpts(t, sharedOpts(sh))
	mustGen(t, a, "k", kms.Ed25519)
	wrong := sharedOpts(sh)
	wrong.Passphrase = []byte("not the passphrase at all")
	if _, err := Open(wrong); !errors.Is(err, ErrWrongPassphrase) {
		t.Fatalf("wrong passphrase: %v", err)
	}
	good, _, _ := sh.Load(ctx)

	damaged := append([]byte(nil), good...)
	damaged[len(damaged)-1] ^= 1
	sh.set(damaged)
	if err := a.Refresh(ctx); !errors.Is(err, ErrTampered) {
		t.Fatalf("damaged image: %v, want ErrTampered", err)
	}
	if _, err := a.Sign(ctx, &kms.SignRequest{ID: "k", Message: []byte("m")}); err != nil {
		t.Fatalf("a refused refresh changed the keys in force: %v", err)
	}
	// A mutation must not overwrite what it cannot read.
	if _, err := a.GenerateKey(ctx, &kms.GenerateKeyRequest{ID: "k2", Algorithm: kms.Ed25519}); !errors.Is(err, ErrTampered) {
		t.Fatalf("generate over a damaged image: %v, want ErrTampered", err)
	}

	other := &memShared{}
	openOpts(t, sharedOpts(other))
	img, _, _ := other.Load(ctx)
	sh.set(img)
	if err := a.Refresh(ctx); !errors.Is(err, ErrTampered) {
		t.Fatalf("another keystore's image: %v, want ErrTampered", err)
	}
	for _, n := range []int{0, 1, headerSize, headerSize + tagSize - 1} {
		sh.set(good[:n])
		if err := a.Refresh(ctx); !errors.Is(err, ErrTampered) {
			t.Fatalf("image cut to %d bytes: %v, want ErrTampered", n, err)
		}
	}
	sh.set(good)
	if err := a.Refresh(ctx); err != nil {
		t.Fatalf("the good image again: %v", err)
	}
}
