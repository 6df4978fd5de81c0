// Package kmstest is the conformance kit every KMS backend runs, ours and
// third parties': Run(t, factory) checks the kms.KMS contract method by
// method, and the optional capabilities the backend declares. Signatures
// and KEM results are checked by independent implementations (circl and
// the Go standard library), not only by the backend's own Verify; every
// error is matched with errors.Is against the sentinels of kms and errdef.
//
// The kit is for tests only. It does no I/O of its own and must not depend
// on any backend; a backend's own tests call it:
//
//	func TestConformance(t *testing.T) {
//		kmstest.Run(t, func(t *testing.T) kms.KMS { return newEmptyBackend(t) },
//			kmstest.WithAlgorithms(kms.ECDSAP256, kms.AES256), kmstest.WithExporter(false))
//	}
package kmstest

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/avonzt/avon/sdk/kms"
)

// Option adapts the suite to what a backend declares it supports.
type Option func(*suite)

// WithAlgorithms declares the algorithms the backend supports (default: all
// of kms.AllAlgorithms). GenerateKey with any other must fail with
// kms.ErrUnsupportedAlgorithm.
func WithAlgorithms(a ...kms.Algorithm) Option {
	return func(s *suite) { s.algs = slices.Clone(a) }
}

// WithExporter declares whether the backend offers kms.Exporter. Offered:
// the backend must implement it and pass its checks. Not offered: if the
// backend's type implements the interface anyway (a gRPC client does),
// ExportKey must fail with errdef.ErrNotImplemented. Without this option the
// export checks run if the backend implements kms.Exporter and does not
// answer errdef.ErrNotImplemented.
func WithExporter(offered bool) Option {
	return func(s *suite) { s.exporter = capabilityOf(offered) }
}

// WithoutExporter is WithExporter(false).
func WithoutExporter() Option { return WithExporter(false) }

// WithRandomSource declares whether the backend offers kms.RandomSource,
// with the same rules as WithExporter.
func WithRandomSource(offered bool) Option {
	return func(s *suite) { s.random = capabilityOf(offered) }
}

type capability int

const (
	capAuto capability = iota
	capOffered
	capAbsent
)

func capabilityOf(offered bool) capability {
	if offered {
		return capOffered
	}
	return capAbsent
}

type suite struct {
	newKMS   func(t *testing.T) kms.KMS
	algs     []kms.Algorithm
	exporter capability
	random   capability
}

// Run runs the conformance suite as subtests of t. newKMS must return a
// new, empty backend for each call, cleaned up through t.Cleanup.
func Run(t *testing.T, newKMS func(t *testing.T) kms.KMS, opts ...Option) {
	t.Helper()
	s := &suite{newKMS: newKMS, algs: slices.Clone(kms.AllAlgorithms)}
	for _, o := range opts {
		o(s)
	}
	if len(s.algs) == 0 {
		t.Fatal("kmstest: WithAlgorithms declared no algorithm")
	}
	for _, a := range s.algs {
		if _, ok := kms.PurposeOf(a); !ok {
			t.Fatalf("kmstest: WithAlgorithms names %q, which the protocol does not define", a)
		}
	}
	t.Run("GenerateKey", s.testGenerate)
	t.Run("ListKeys", s.testList)
	t.Run("PublicKey", s.testPublicKey)
	t.Run("SignVerify", s.testSignVerify)
	t.Run("KEM", s.testKEM)
	t.Run("Envelope", s.testEnvelope)
	t.Run("WrongPurpose", s.testWrongPurpose)
	t.Run("Rotate", s.testRotate)
	t.Run("Destroy", s.testDestroy)
	t.Run("UnknownKey", s.testUnknownKey)
	t.Run("UnknownVersion", s.testUnknownVersion)
	t.Run("MessageSize", s.testMessageSize)
	t.Run("Concurrency", s.testConcurrency)
	t.Run("Exporter", s.testExporter)
	t.Run("RandomSource", s.testRandomSource)
}

// Helpers shared by the checks.

func purpose(a kms.Algorithm) kms.Purpose { p, _ := kms.PurposeOf(a); return p }

func isMLDSA(a kms.Algorithm) bool { return a == kms.MLDSA44 || a == kms.MLDSA65 || a == kms.MLDSA87 }

// idFor makes a valid key ID from a prefix and an algorithm name.
func idFor(prefix string, a kms.Algorithm) string {
	return prefix + "-" + strings.ToLower(string(a))
}

func (s *suite) algsOf(p kms.Purpose) []kms.Algorithm {
	var out []kms.Algorithm
	for _, a := range s.algs {
		if purpose(a) == p {
			out = append(out, a)
		}
	}
	return out
}

func (s *suite) supports(a kms.Algorithm) bool { return slices.Contains(s.algs, a) }

// wantErr reports a failure unless errors.Is(err, target).
func wantErr(t *testing.T, err, target error, what string) bool {
	t.Helper()
	if !errors.Is(err, target) {
		t.Errorf("%s: want an error wrapping %q, got %v", what, target, err)
		return false
	}
	return true
}

// wantOneOf reports a failure unless err wraps one of targets.
func wantOneOf(t *testing.T, err error, what string, targets ...error) {
	t.Helper()
	for _, target := range targets {
		if errors.Is(err, target) {
			return
		}
	}
	t.Errorf("%s: want an error wrapping one of %v, got %v", what, targets, err)
}

func generate(t *testing.T, k kms.KMS, req *kms.GenerateKeyRequest) *kms.Key {
	t.Helper()
	r, err := k.GenerateKey(t.Context(), req)
	if err != nil {
		t.Fatalf("GenerateKey %q %s: %v", req.ID, req.Algorithm, err)
	}
	if r == nil || r.Key == nil {
		t.Fatalf("GenerateKey %q %s: no key in the response", req.ID, req.Algorithm)
	}
	return r.Key
}

func gen(t *testing.T, k kms.KMS, id string, a kms.Algorithm) *kms.Key {
	t.Helper()
	return generate(t, k, &kms.GenerateKeyRequest{ID: id, Algorithm: a})
}

func getKey(t *testing.T, k kms.KMS, id string) *kms.Key {
	t.Helper()
	r, err := k.GetKey(t.Context(), &kms.GetKeyRequest{ID: id})
	if err != nil {
		t.Fatalf("GetKey %q: %v", id, err)
	}
	return r.Key
}

func publicKey(t *testing.T, k kms.KMS, id string, version int) *kms.PublicKeyResponse {
	t.Helper()
	r, err := k.PublicKey(t.Context(), &kms.PublicKeyRequest{ID: id, Version: version})
	if err != nil {
		t.Fatalf("PublicKey %q version %d: %v", id, version, err)
	}
	return r
}

func listAll(t *testing.T, k kms.KMS) []*kms.Key {
	t.Helper()
	var out []*kms.Key
	token := ""
	for range 10000 {
		r, err := k.ListKeys(t.Context(), &kms.ListKeysRequest{PageSize: 1000, PageToken: token})
		if err != nil {
			t.Fatalf("ListKeys: %v", err)
		}
		out = append(out, r.Keys...)
		if r.NextPageToken == "" {
			return out
		}
		token = r.NextPageToken
	}
	t.Fatal("ListKeys never returned an empty page token")
	return nil
}

// labelsEqual treats nil and empty alike (a gRPC round trip does not
// keep the difference).
func labelsEqual(a, b map[string]string) bool { return maps.Equal(a, b) }

// diffKey describes how two metadata records differ ("" if they do not).
func diffKey(got, want *kms.Key) string {
	switch {
	case got.ID != want.ID:
		return fmt.Sprintf("ID %q, want %q", got.ID, want.ID)
	case got.Algorithm != want.Algorithm:
		return fmt.Sprintf("algorithm %s, want %s", got.Algorithm, want.Algorithm)
	case !labelsEqual(got.Labels, want.Labels):
		return fmt.Sprintf("labels %v, want %v", got.Labels, want.Labels)
	case got.Exportable != want.Exportable:
		return fmt.Sprintf("exportable %v, want %v", got.Exportable, want.Exportable)
	case got.PrimaryVersion != want.PrimaryVersion:
		return fmt.Sprintf("primary version %d, want %d", got.PrimaryVersion, want.PrimaryVersion)
	case !got.CreatedAt.Equal(want.CreatedAt):
		return fmt.Sprintf("created %v, want %v", got.CreatedAt, want.CreatedAt)
	case len(got.Versions) != len(want.Versions):
		return fmt.Sprintf("%d versions, want %d", len(got.Versions), len(want.Versions))
	}
	for i, g := range got.Versions {
		w := want.Versions[i]
		switch {
		case g.Version != w.Version, g.State != w.State, !g.CreatedAt.Equal(w.CreatedAt), !g.DestroyedAt.Equal(w.DestroyedAt):
			return fmt.Sprintf("version %d %s created %v destroyed %v, want version %d %s created %v destroyed %v",
				g.Version, g.State, g.CreatedAt, g.DestroyedAt, w.Version, w.State, w.CreatedAt, w.DestroyedAt)
		case !bytes.Equal(g.PublicKey, w.PublicKey):
			return fmt.Sprintf("version %d: public key differs", g.Version)
		}
	}
	return ""
}

// checkVersions checks the shape of a key's versions: numbered 1..n, the
// given states, public keys of the right size on enabled versions and none
// on destroyed ones, times set.
func checkVersions(t *testing.T, key *kms.Key, primary int, states ...kms.VersionState) {
	t.Helper()
	if key.PrimaryVersion != primary {
		t.Errorf("key %q: primary version %d, want %d", key.ID, key.PrimaryVersion, primary)
	}
	if len(key.Versions) != len(states) {
		t.Fatalf("key %q: %d versions, want %d", key.ID, len(key.Versions), len(states))
	}
	if key.CreatedAt.IsZero() {
		t.Errorf("key %q: no creation time", key.ID)
	}
	for i, v := range key.Versions {
		if v.Version != i+1 || v.State != states[i] || v.CreatedAt.IsZero() {
			t.Errorf("key %q: version %d is version %d %s created %v, want version %d %s with a creation time", key.ID, i+1, v.Version, v.State, v.CreatedAt, i+1, states[i])
		}
		want := 0
		if v.State == kms.StateEnabled {
			want = PublicKeySizes[key.Algorithm]
		} else if v.DestroyedAt.IsZero() {
			t.Errorf("key %q: destroyed version %d has no destruction time", key.ID, v.Version)
		}
		if v.State == kms.StateEnabled && !v.DestroyedAt.IsZero() {
			t.Errorf("key %q: enabled version %d has a destruction time", key.ID, v.Version)
		}
		if len(v.PublicKey) != want {
			t.Errorf("key %q version %d (%s): public key of %d bytes in the metadata, want %d", key.ID, v.Version, v.State, len(v.PublicKey), want)
		}
	}
	allDestroyed := true
	for _, st := range states {
		allDestroyed = allDestroyed && st == kms.StateDestroyed
	}
	if key.Destroyed() != allDestroyed {
		t.Errorf("key %q: Destroyed() = %v, want %v", key.ID, key.Destroyed(), allDestroyed)
	}
}
