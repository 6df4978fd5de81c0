package kmstest

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/kms"
)

// testConcurrency runs signs, generates (one ID contended by every worker),
// a rotation and listings in parallel, with a bounded number of goroutines;
// run it with -race.
func (s *suite) testConcurrency(t *testing.T) {
	k := s.newKMS(t)
	ctx := t.Context()
	const workers, rounds = 8, 6

	var signAlg kms.Algorithm
	if sigs := s.algsOf(kms.PurposeSign); len(sigs) > 0 {
		signAlg = sigs[0]
		if s.supports(kms.MLDSA65) {
			signAlg = kms.MLDSA65
		}
		gen(t, k, "conc-shared", signAlg)
	}
	type signed struct {
		msg, sig []byte
		version  int
	}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		sigs    []signed
		errs    []error
		winners atomic.Int32
	)
	fail := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}
	for w := range workers {
		wg.Go(func() {
			_, err := k.GenerateKey(ctx, &kms.GenerateKeyRequest{ID: "conc-contended", Algorithm: s.algs[0]})
			switch {
			case err == nil:
				winners.Add(1)
			case !errors.Is(err, kms.ErrKeyExists):
				fail(fmt.Errorf("contended GenerateKey: %w", err))
			}
			for i := range rounds {
				a := s.algs[(w+i)%len(s.algs)]
				if _, err := k.GenerateKey(ctx, &kms.GenerateKeyRequest{ID: fmt.Sprintf("conc-%d-%d", w, i), Algorithm: a}); err != nil {
					fail(fmt.Errorf("GenerateKey %s: %w", a, err))
				}
				if signAlg == "" {
					continue
				}
				msg := fmt.Appendf(nil, "concurrent message %d/%d", w, i)
				r, err := k.Sign(ctx, &kms.SignRequest{ID: "conc-shared", Message: msg, Context: sigContext(signAlg)})
				if err != nil {
					fail(fmt.Errorf("Sign: %w", err))
					continue
				}
				mu.Lock()
				sigs = append(sigs, signed{msg, r.Signature, r.Version})
				mu.Unlock()
			}
		})
	}
	if signAlg != "" {
		wg.Go(func() {
			for range 2 {
				if _, err := k.RotateKey(ctx, &kms.RotateKeyRequest{ID: "conc-shared"}); err != nil {
					fail(fmt.Errorf("RotateKey: %w", err))
				}
			}
		})
	}
	wg.Go(func() {
		for range rounds {
			r, err := k.ListKeys(ctx, &kms.ListKeysRequest{PageSize: 1000})
			if err != nil {
				fail(fmt.Errorf("ListKeys: %w", err))
				return
			}
			if !slices.IsSortedFunc(r.Keys, func(a, b *kms.Key) int { return strings.Compare(a.ID, b.ID) }) {
				fail(errors.New("ListKeys returned keys out of ID order while keys were being added"))
			}
		}
	})
	wg.Wait()
	for _, err := range errs {
		t.Error(err)
	}
	if n := winners.Load(); n != 1 {
		t.Errorf("%d of %d concurrent GenerateKey calls for one ID succeeded, want exactly 1", n, workers)
	}
	want := 1 + workers*rounds
	if signAlg != "" {
		want++
		if len(sigs) != workers*rounds {
			t.Errorf("%d signatures, want %d", len(sigs), workers*rounds)
		}
		pubs := map[int][]byte{}
		for _, sg := range sigs {
			if pubs[sg.version] == nil {
				pubs[sg.version] = publicKey(t, k, "conc-shared", sg.version).PublicKey
			}
			if ok, err := VerifyIndependently(signAlg, pubs[sg.version], sg.msg, sigContext(signAlg), sg.sig); !ok || err != nil {
				t.Errorf("a concurrent signature (version %d) does not verify independently: %v", sg.version, err)
			}
		}
		checkVersions(t, getKey(t, k, "conc-shared"), 3, kms.StateEnabled, kms.StateEnabled, kms.StateEnabled)
	}
	if got := listAll(t, k); len(got) != want {
		t.Errorf("%d keys after the concurrent run, want %d", len(got), want)
	}
}

func (s *suite) testExporter(t *testing.T) {
	k := s.newKMS(t)
	ctx := t.Context()
	ex, ok := k.(kms.Exporter)
	switch {
	case s.exporter == capAbsent:
		if ok {
			gen(t, k, "exp-absent", s.algs[0])
			_, err := ex.ExportKey(ctx, &kms.ExportKeyRequest{ID: "exp-absent"})
			wantErr(t, err, errdef.ErrNotImplemented, "ExportKey of a backend declared without export")
		}
		return
	case !ok && s.exporter == capOffered:
		t.Fatal("the backend was declared with export but does not implement kms.Exporter")
	case !ok:
		t.Skip("the backend does not implement kms.Exporter")
	}

	gen(t, k, "exp-locked", s.algs[0])
	_, err := ex.ExportKey(ctx, &kms.ExportKeyRequest{ID: "exp-locked"})
	if s.exporter == capAuto && errors.Is(err, errdef.ErrNotImplemented) {
		t.Skip("the backend does not offer export")
	}
	wantErr(t, err, kms.ErrNotExportable, "ExportKey of a key made without Exportable")
	rotate(t, k, "exp-locked")
	for _, v := range []int{0, 1, 2} {
		_, err = ex.ExportKey(ctx, &kms.ExportKeyRequest{ID: "exp-locked", Version: v})
		wantErr(t, err, kms.ErrNotExportable, fmt.Sprintf("ExportKey version %d of a rotated non-exportable key", v))
	}

	export := func(t *testing.T, id string, v int) *kms.ExportKeyResponse {
		t.Helper()
		r, err := ex.ExportKey(ctx, &kms.ExportKeyRequest{ID: id, Version: v})
		if err != nil {
			t.Fatalf("ExportKey %q version %d: %v", id, v, err)
		}
		return r
	}
	for _, a := range s.algs {
		t.Run(string(a), func(t *testing.T) {
			id := idFor("exp", a)
			generate(t, k, &kms.GenerateKeyRequest{ID: id, Algorithm: a, Exportable: true})
			r1 := export(t, id, 0)
			if r1.Algorithm != a || r1.Version != 1 || len(r1.PrivateKey) == 0 {
				t.Fatalf("ExportKey: %s version %d, %d bytes", r1.Algorithm, r1.Version, len(r1.PrivateKey))
			}
			if purpose(a) == kms.PurposeEncrypt {
				if len(r1.PrivateKey) != 32 {
					t.Errorf("exported AES-256 key of %d bytes", len(r1.PrivateKey))
				}
			} else {
				pub, err := PublicFromPrivate(a, r1.PrivateKey)
				if err != nil || !bytes.Equal(pub, publicKey(t, k, id, 1).PublicKey) {
					t.Errorf("the exported private key does not derive the key's public key: %v", err)
				}
			}
			saved := bytes.Clone(r1.PrivateKey)
			clear(r1.PrivateKey) // what a caller does
			if again := export(t, id, 1); !bytes.Equal(again.PrivateKey, saved) {
				t.Error("zeroizing an exported key changed the stored one, or export is not stable")
			}

			rotate(t, k, id)
			r2 := export(t, id, 0)
			if r2.Version != 2 || bytes.Equal(r2.PrivateKey, saved) {
				t.Errorf("after rotation ExportKey version 0 gave version %d (same material: %v)", r2.Version, bytes.Equal(r2.PrivateKey, saved))
			}
			destroy(t, k, id, 1)
			_, err := ex.ExportKey(ctx, &kms.ExportKeyRequest{ID: id, Version: 1})
			wantErr(t, err, kms.ErrKeyDestroyed, "ExportKey of a destroyed version")
			_, err = ex.ExportKey(ctx, &kms.ExportKeyRequest{ID: id, Version: 9})
			wantErr(t, err, kms.ErrVersionNotFound, "ExportKey of version 9 of a 2-version key")
		})
	}
}

func (s *suite) testRandomSource(t *testing.T) {
	k := s.newKMS(t)
	ctx := t.Context()
	rs, ok := k.(kms.RandomSource)
	switch {
	case s.random == capAbsent:
		if ok {
			_, err := rs.GenerateRandom(ctx, &kms.GenerateRandomRequest{Length: 32})
			wantErr(t, err, errdef.ErrNotImplemented, "GenerateRandom of a backend declared without a random source")
		}
		return
	case !ok && s.random == capOffered:
		t.Fatal("the backend was declared with a random source but does not implement kms.RandomSource")
	case !ok:
		t.Skip("the backend does not implement kms.RandomSource")
	}
	first, err := rs.GenerateRandom(ctx, &kms.GenerateRandomRequest{Length: 32})
	if s.random == capAuto && errors.Is(err, errdef.ErrNotImplemented) {
		t.Skip("the backend does not offer a random source")
	}
	if err != nil || len(first.Random) != 32 {
		t.Fatalf("GenerateRandom(32): %v", err)
	}
	second, err := rs.GenerateRandom(ctx, &kms.GenerateRandomRequest{Length: 32})
	if err != nil || bytes.Equal(first.Random, second.Random) {
		t.Errorf("two 32-byte draws are equal (or failed: %v)", err)
	}
	for _, n := range []int{1, 16, 1000, kms.MaxRandomLength} {
		r, err := rs.GenerateRandom(ctx, &kms.GenerateRandomRequest{Length: n})
		if err != nil || len(r.Random) != n {
			t.Errorf("GenerateRandom(%d): %v", n, err)
			continue
		}
		if n >= 16 && !slices.ContainsFunc(r.Random, func(b byte) bool { return b != 0 }) {
			t.Errorf("GenerateRandom(%d) returned only zeros", n)
		}
	}
	for _, n := range []int{0, -1, kms.MaxRandomLength + 1} {
		_, err := rs.GenerateRandom(ctx, &kms.GenerateRandomRequest{Length: n})
		wantErr(t, err, errdef.ErrInvalidArgument, fmt.Sprintf("GenerateRandom(%d)", n))
	}
}
