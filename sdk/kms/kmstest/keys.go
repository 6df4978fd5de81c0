package kmstest

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/kms"
)

// validGeneratedID is the ID grammar of kms.GenerateKeyRequest.
func validGeneratedID(id string) bool {
	if len(id) == 0 || len(id) > 128 {
		return false
	}
	for _, c := range id {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func (s *suite) testGenerate(t *testing.T) {
	k := s.newKMS(t)
	ctx := t.Context()
	labels := map[string]string{"team": "pki", "env": "kmstest"}

	for _, a := range s.algs {
		t.Run("Metadata/"+string(a), func(t *testing.T) {
			id := idFor("gen", a)
			key := generate(t, k, &kms.GenerateKeyRequest{ID: id, Algorithm: a, Labels: labels})
			if key.ID != id || key.Algorithm != a || key.Exportable || !labelsEqual(key.Labels, labels) {
				t.Errorf("GenerateKey returned %q %s exportable=%v labels=%v", key.ID, key.Algorithm, key.Exportable, key.Labels)
			}
			checkVersions(t, key, 1, kms.StateEnabled)
			if d := diffKey(getKey(t, k, id), key); d != "" {
				t.Errorf("GetKey differs from GenerateKey's answer: %s", d)
			}
		})
	}

	t.Run("Exportable", func(t *testing.T) {
		key := generate(t, k, &kms.GenerateKeyRequest{ID: "gen-exportable", Algorithm: s.algs[0], Exportable: true})
		if !key.Exportable || !getKey(t, k, "gen-exportable").Exportable {
			t.Error("Exportable=true was not recorded")
		}
	})

	t.Run("ChosenID", func(t *testing.T) {
		a := gen(t, k, "", s.algs[0])
		b := gen(t, k, "", s.algs[0])
		for _, key := range []*kms.Key{a, b} {
			if !validGeneratedID(key.ID) {
				t.Errorf("chosen ID %q does not match [A-Za-z0-9._-]{1,128}", key.ID)
			}
			if g := getKey(t, k, key.ID); g.ID != key.ID {
				t.Errorf("GetKey(%q) returned %q", key.ID, g.ID)
			}
		}
		if a.ID == b.ID {
			t.Errorf("two generated keys got the same ID %q", a.ID)
		}
	})

	t.Run("Duplicate", func(t *testing.T) {
		orig := gen(t, k, "gen-dup", s.algs[0])
		for _, a := range s.algs {
			_, err := k.GenerateKey(ctx, &kms.GenerateKeyRequest{ID: "gen-dup", Algorithm: a})
			wantErr(t, err, kms.ErrKeyExists, "GenerateKey with a taken ID, "+string(a))
		}
		if d := diffKey(getKey(t, k, "gen-dup"), orig); d != "" {
			t.Errorf("a refused duplicate changed the original key: %s", d)
		}
	})

	t.Run("UnsupportedAlgorithm", func(t *testing.T) {
		before := len(listAll(t, k))
		bad := []kms.Algorithm{"", "RSA-2048", "ml-dsa-65", "ML-DSA-65 ", "AES-128"}
		for _, a := range kms.AllAlgorithms {
			if !s.supports(a) {
				bad = append(bad, a)
			}
		}
		for i, a := range bad {
			_, err := k.GenerateKey(ctx, &kms.GenerateKeyRequest{ID: fmt.Sprintf("gen-unsupported-%d", i), Algorithm: a})
			wantErr(t, err, kms.ErrUnsupportedAlgorithm, fmt.Sprintf("GenerateKey %q", a))
		}
		if after := len(listAll(t, k)); after != before {
			t.Errorf("refused GenerateKey calls changed the key count from %d to %d", before, after)
		}
	})

	t.Run("InvalidID", func(t *testing.T) {
		before := len(listAll(t, k))
		for _, id := range []string{"has space", "slash/x", "colon:x", "tab\tx", "nul\x00x", "ünïcode", "star*", strings.Repeat("a", 129), "newline\n"} {
			_, err := k.GenerateKey(ctx, &kms.GenerateKeyRequest{ID: id, Algorithm: s.algs[0]})
			wantErr(t, err, errdef.ErrInvalidArgument, fmt.Sprintf("GenerateKey with ID %q", id))
		}
		if after := len(listAll(t, k)); after != before {
			t.Errorf("refused GenerateKey calls changed the key count from %d to %d", before, after)
		}
	})

	t.Run("ValidID", func(t *testing.T) {
		for _, id := range []string{"a", "Z", "0", "A.b_c-9", "..", strings.Repeat("x", 128)} {
			if key := gen(t, k, id, s.algs[0]); key.ID != id {
				t.Errorf("GenerateKey %q returned ID %q", id, key.ID)
			}
		}
	})

	t.Run("NotAliased", func(t *testing.T) {
		req := &kms.GenerateKeyRequest{ID: "gen-alias", Algorithm: s.algs[0], Labels: map[string]string{"a": "1"}}
		key := generate(t, k, req)
		want := getKey(t, k, "gen-alias")
		req.Labels["a"] = "changed by the caller"
		if key.Labels != nil {
			key.Labels["b"] = "added by the caller"
		}
		for _, v := range key.Versions {
			for i := range v.PublicKey {
				v.PublicKey[i] ^= 0xff
			}
		}
		got := getKey(t, k, "gen-alias")
		if d := diffKey(got, want); d != "" {
			t.Errorf("changing the request or the returned key changed the stored key: %s", d)
		}
		if got.Labels["a"] != "1" {
			t.Errorf("labels %v, want a=1", got.Labels)
		}
	})

	t.Run("CanceledContext", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		_, err := k.GenerateKey(cctx, &kms.GenerateKeyRequest{ID: "gen-canceled", Algorithm: s.algs[0]})
		wantErr(t, err, context.Canceled, "GenerateKey with a canceled context")
		_, err = k.GetKey(ctx, &kms.GetKeyRequest{ID: "gen-canceled"})
		wantErr(t, err, kms.ErrKeyNotFound, "GetKey of a key generated under a canceled context")
	})
}

func (s *suite) testList(t *testing.T) {
	k := s.newKMS(t)
	ctx := t.Context()

	r, err := k.ListKeys(ctx, &kms.ListKeysRequest{})
	if err != nil || len(r.Keys) != 0 || r.NextPageToken != "" {
		t.Fatalf("ListKeys of an empty backend: %+v %v, want no keys and no token", r, err)
	}

	const n = 23
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("list-%02d", i)
	}
	// Create them out of ID order, across the algorithms.
	byID := map[string]*kms.Key{}
	for i := range n {
		j := i * 7 % n
		byID[ids[j]] = gen(t, k, ids[j], s.algs[j%len(s.algs)])
	}

	// walk pages of size through the listing, checking each page is
	// exactly the next slice of ids.
	walk := func(t *testing.T, size int) {
		t.Helper()
		token, pos := "", 0
		for page := 0; ; page++ {
			if page > n+1 {
				t.Fatal("paging does not terminate")
			}
			r, err := k.ListKeys(ctx, &kms.ListKeysRequest{PageSize: size, PageToken: token})
			if err != nil {
				t.Fatalf("page %d of size %d: %v", page, size, err)
			}
			want := ids[pos:min(pos+size, n)]
			got := make([]string, len(r.Keys))
			for i, key := range r.Keys {
				got[i] = key.ID
				if d := diffKey(key, byID[key.ID]); byID[key.ID] == nil || d != "" {
					t.Errorf("listed key %q differs from GenerateKey's answer: %s", key.ID, d)
				}
			}
			// A backend may end with an empty page after a full one.
			if len(got) == 0 && pos == n && r.NextPageToken == "" {
				return
			}
			if !slices.Equal(got, want) {
				t.Fatalf("page %d of size %d: %v, want %v", page, size, got, want)
			}
			pos += len(got)
			if r.NextPageToken == "" {
				if pos != n {
					t.Fatalf("paging with size %d stopped after %d of %d keys", size, pos, n)
				}
				return
			}
			token = r.NextPageToken
		}
	}
	for _, size := range []int{1, 5, 22, 23, 24, 1000} {
		t.Run(fmt.Sprintf("PageSize%d", size), func(t *testing.T) { walk(t, size) })
	}
	t.Run("DefaultPageSize", func(t *testing.T) {
		r, err := k.ListKeys(ctx, &kms.ListKeysRequest{PageSize: 0})
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Keys) != n || r.NextPageToken != "" {
			t.Errorf("default page size listed %d keys with token %q, want all %d (the default is 100)", len(r.Keys), r.NextPageToken, n)
		}
	})
	t.Run("BadPageSize", func(t *testing.T) {
		_, err := k.ListKeys(ctx, &kms.ListKeysRequest{PageSize: -1})
		wantErr(t, err, errdef.ErrInvalidArgument, "ListKeys with page size -1")
		// Over the limit: refused, or served with at most 1000 keys.
		r, err := k.ListKeys(ctx, &kms.ListKeysRequest{PageSize: 1001})
		if err != nil {
			wantErr(t, err, errdef.ErrInvalidArgument, "ListKeys with page size 1001")
		} else if len(r.Keys) > 1000 {
			t.Errorf("page of %d keys", len(r.Keys))
		}
	})
}

func (s *suite) testPublicKey(t *testing.T) {
	k := s.newKMS(t)
	ctx := t.Context()
	for _, a := range s.algs {
		t.Run(string(a), func(t *testing.T) {
			id := idFor("pub", a)
			key := gen(t, k, id, a)
			if purpose(a) == kms.PurposeEncrypt {
				for _, v := range []int{0, 1} {
					_, err := k.PublicKey(ctx, &kms.PublicKeyRequest{ID: id, Version: v})
					wantErr(t, err, kms.ErrWrongPurpose, fmt.Sprintf("PublicKey of an %s key, version %d", a, v))
				}
				return
			}
			p0, p1 := publicKey(t, k, id, 0), publicKey(t, k, id, 1)
			if p0.Algorithm != a || p0.Version != 1 || p1.Version != 1 {
				t.Errorf("PublicKey reported %s version %d / %d, want %s version 1", p0.Algorithm, p0.Version, p1.Version, a)
			}
			if len(p0.PublicKey) != PublicKeySizes[a] {
				t.Errorf("public key of %d bytes, want %d", len(p0.PublicKey), PublicKeySizes[a])
			}
			if !bytes.Equal(p0.PublicKey, p1.PublicKey) || !bytes.Equal(p0.PublicKey, key.Versions[0].PublicKey) {
				t.Error("version 0, version 1 and the metadata disagree on the public key")
			}
			// The key parses with an independent implementation.
			switch purpose(a) {
			case kms.PurposeSign:
				if _, err := VerifyIndependently(a, p0.PublicKey, nil, nil, nil); err != nil {
					t.Errorf("public key does not parse: %v", err)
				}
			case kms.PurposeKEM:
				if _, _, err := EncapsulateIndependently(a, p0.PublicKey); err != nil {
					t.Errorf("public key does not parse: %v", err)
				}
			}
			p0.PublicKey[0] ^= 0xff
			if p := publicKey(t, k, id, 0); p.PublicKey[0] == p0.PublicKey[0] {
				t.Error("changing a returned public key changed the stored one")
			}
		})
	}
	t.Run("Distinct", func(t *testing.T) {
		// Two keys of one algorithm are two key pairs.
		for _, a := range s.algs {
			if purpose(a) == kms.PurposeEncrypt {
				continue
			}
			p1 := publicKey(t, k, idFor("pub", a), 0)
			gen(t, k, idFor("pub2", a), a)
			p2 := publicKey(t, k, idFor("pub2", a), 0)
			if bytes.Equal(p1.PublicKey, p2.PublicKey) {
				t.Errorf("%s: two keys share a public key", a)
			}
		}
	})
}
