package keystore

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/kms"
	"github.com/avonzt/avon/sdk/kms/kmstest"
)

// The conformance kit must be able to fail: each mutant below is this
// keystore with one contract violation, and the kit subtest named beside it
// must catch it. The mutants run in child processes (a failing kit fails
// its *testing.T, which cannot be observed from inside the same test).

const mutantEnv = "AVON_KMSTEST_MUTANT"

var mutants = []struct {
	mode, subtest string
}{
	{"none", "SignVerify"}, // control: the unmodified keystore passes
	{"none-random", "RandomSource"},
	{"bad-id-accepted", "GenerateKey"},
	{"canceled-context-ignored", "GenerateKey"},
	{"list-drops-keys", "ListKeys"},
	{"list-unsorted", "ListKeys"},
	{"public-key-truncated", "PublicKey"},
	{"corrupt-signature", "SignVerify"},
	{"verify-accepts-all", "SignVerify"},
	{"deterministic-mldsa", "SignVerify"},
	{"ignores-context-rule", "SignVerify"},
	{"wrong-shared-secret", "KEM"},
	{"no-ciphertext-size-check", "KEM"},
	{"decrypt-unauthenticated", "Envelope"},
	{"untyped-wrong-purpose", "WrongPurpose"},
	{"stale-sign-version", "Rotate"},
	{"destroy-keeps-material", "Destroy"},
	{"list-hides-tombstones", "Destroy"},
	{"unknown-key-misreported", "UnknownKey"},
	{"unknown-version-as-primary", "UnknownVersion"},
	{"accepts-oversized", "MessageSize"},
	{"create-is-idempotent", "Concurrency"},
	{"exports-anything", "Exporter"},
	{"short-random", "RandomSource"},
}

func TestKitCatchesBrokenBackends(t *testing.T) {
	if os.Getenv(mutantEnv) != "" {
		t.Skip("inside a mutant run")
	}
	if testing.Short() {
		t.Skip("starts a child process per mutant")
	}
	for _, m := range mutants {
		t.Run(m.mode, func(t *testing.T) {
			t.Parallel()
			cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestKitMutant$/^"+m.subtest+"$", "-test.count=1")
			cmd.Env = append(os.Environ(), mutantEnv+"="+m.mode)
			out, err := cmd.CombinedOutput()
			if bytes.Contains(out, []byte("panic:")) {
				t.Fatalf("the kit panicked:\n%s", out)
			}
			failed := bytes.Contains(out, []byte("--- FAIL: TestKitMutant/"+m.subtest))
			if strings.HasPrefix(m.mode, "none") {
				if err != nil || failed {
					t.Fatalf("the unmodified keystore fails %s: %v\n%s", m.subtest, err, out)
				}
				return
			}
			if err == nil || !failed {
				t.Fatalf("kmstest %s did not catch the %q mutant (exit: %v)\n%s", m.subtest, m.mode, err, out)
			}
		})
	}
}

// TestKitMutant runs the kit against the mutant named by the environment.
func TestKitMutant(t *testing.T) {
	mode := os.Getenv(mutantEnv)
	if mode == "" {
		t.Skip("run by TestKitCatchesBrokenBackends")
	}
	opts := []kmstest.Option{kmstest.WithExporter(true), kmstest.WithRandomSource(false)}
	if mode == "short-random" || mode == "none-random" {
		opts[1] = kmstest.WithRandomSource(true)
	}
	kmstest.Run(t, func(t *testing.T) kms.KMS {
		ks, _ := newKS(t)
		m := &mutant{Keystore: ks, mode: mode, cache: map[string][]byte{}}
		if mode == "short-random" || mode == "none-random" {
			return &mutantRandom{m}
		}
		return m
	}, opts...)
}

// mutant is the keystore with the violation its mode names.
type mutant struct {
	*Keystore
	mode  string
	mu    sync.Mutex
	cache map[string][]byte
}

func (m *mutant) filter(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case m.mode == "untyped-wrong-purpose" && errors.Is(err, kms.ErrWrongPurpose):
		return errors.New(err.Error())
	case m.mode == "unknown-key-misreported" && op == "Decrypt" && errors.Is(err, kms.ErrKeyNotFound):
		return fmt.Errorf("%v: %w", err.Error(), kms.ErrInvalidCiphertext)
	}
	return err
}

func (m *mutant) GenerateKey(ctx context.Context, req *kms.GenerateKeyRequest) (*kms.GenerateKeyResponse, error) {
	switch m.mode {
	case "bad-id-accepted":
		if req.ID != "" && !validID(req.ID) {
			r := *req
			r.ID = fmt.Sprintf("sanitized-%x", []byte(req.ID))[:min(128, 10+2*len(req.ID))]
			req = &r
		}
	case "canceled-context-ignored":
		ctx = context.WithoutCancel(ctx)
	}
	r, err := m.Keystore.GenerateKey(ctx, req)
	if m.mode == "create-is-idempotent" && errors.Is(err, kms.ErrKeyExists) {
		g, gerr := m.Keystore.GetKey(ctx, &kms.GetKeyRequest{ID: req.ID})
		if gerr == nil {
			return &kms.GenerateKeyResponse{Key: g.Key}, nil
		}
	}
	return r, err
}

func (m *mutant) ListKeys(ctx context.Context, req *kms.ListKeysRequest) (*kms.ListKeysResponse, error) {
	r, err := m.Keystore.ListKeys(ctx, req)
	if err != nil {
		return nil, err
	}
	switch m.mode {
	case "list-drops-keys":
		if r.NextPageToken != "" && len(r.Keys) > 1 {
			r.Keys = r.Keys[:len(r.Keys)-1]
		}
	case "list-unsorted":
		for i, j := 0, len(r.Keys)-1; i < j; i, j = i+1, j-1 {
			r.Keys[i], r.Keys[j] = r.Keys[j], r.Keys[i]
		}
	case "list-hides-tombstones":
		kept := r.Keys[:0]
		for _, k := range r.Keys {
			if !k.Destroyed() {
				kept = append(kept, k)
			}
		}
		r.Keys = kept
	}
	return r, nil
}

func (m *mutant) PublicKey(ctx context.Context, req *kms.PublicKeyRequest) (*kms.PublicKeyResponse, error) {
	if m.mode == "unknown-version-as-primary" {
		if g, err := m.Keystore.GetKey(ctx, &kms.GetKeyRequest{ID: req.ID}); err == nil && req.Version > len(g.Key.Versions) {
			r := *req
			r.Version = 0
			req = &r
		}
	}
	r, err := m.Keystore.PublicKey(ctx, req)
	if err != nil {
		return nil, m.filter("PublicKey", err)
	}
	if m.mode == "public-key-truncated" {
		r.PublicKey = r.PublicKey[:len(r.PublicKey)-1]
	}
	return r, nil
}

func (m *mutant) Sign(ctx context.Context, req *kms.SignRequest) (*kms.SignResponse, error) {
	key := req.ID + "\x00" + string(req.Context) + "\x00" + string(req.Message)
	switch m.mode {
	case "accepts-oversized":
		if len(req.Message) > kms.MaxMessageSize {
			r := *req
			r.Message = r.Message[:kms.MaxMessageSize]
			req = &r
		}
	case "deterministic-mldsa":
		m.mu.Lock()
		sig := m.cache[key]
		m.mu.Unlock()
		if sig != nil {
			return &kms.SignResponse{Signature: bytes.Clone(sig), Version: 1}, nil
		}
	}
	r, err := m.Keystore.Sign(ctx, req)
	if m.mode == "ignores-context-rule" && errors.Is(err, errdef.ErrInvalidArgument) && len(req.Context) > 0 {
		r, err = m.Keystore.Sign(ctx, &kms.SignRequest{ID: req.ID, Message: req.Message})
	}
	if err != nil {
		return nil, m.filter("Sign", err)
	}
	switch m.mode {
	case "corrupt-signature":
		r.Signature[len(r.Signature)-1] ^= 0x01
	case "stale-sign-version":
		r.Version = 1
	case "deterministic-mldsa":
		m.mu.Lock()
		m.cache[key] = bytes.Clone(r.Signature)
		m.mu.Unlock()
	}
	return r, nil
}

func (m *mutant) Verify(ctx context.Context, req *kms.VerifyRequest) (*kms.VerifyResponse, error) {
	r, err := m.Keystore.Verify(ctx, req)
	if err != nil {
		return nil, m.filter("Verify", err)
	}
	if m.mode == "verify-accepts-all" {
		r.Valid = true
	}
	return r, nil
}

func (m *mutant) Decapsulate(ctx context.Context, req *kms.DecapsulateRequest) (*kms.DecapsulateResponse, error) {
	r, err := m.Keystore.Decapsulate(ctx, req)
	if m.mode == "no-ciphertext-size-check" && errors.Is(err, kms.ErrInvalidCiphertext) {
		ss := make([]byte, 32)
		rand.Read(ss)
		return &kms.DecapsulateResponse{SharedSecret: ss}, nil
	}
	if err != nil {
		return nil, m.filter("Decapsulate", err)
	}
	if m.mode == "wrong-shared-secret" {
		r.SharedSecret[0] ^= 0x01
	}
	return r, nil
}

func (m *mutant) Encrypt(ctx context.Context, req *kms.EncryptRequest) (*kms.EncryptResponse, error) {
	r, err := m.Keystore.Encrypt(ctx, req)
	return r, m.filter("Encrypt", err)
}

func (m *mutant) Decrypt(ctx context.Context, req *kms.DecryptRequest) (*kms.DecryptResponse, error) {
	r, err := m.Keystore.Decrypt(ctx, req)
	if m.mode == "decrypt-unauthenticated" && errors.Is(err, kms.ErrInvalidCiphertext) {
		return &kms.DecryptResponse{}, nil
	}
	return r, m.filter("Decrypt", err)
}

func (m *mutant) DestroyKey(ctx context.Context, req *kms.DestroyKeyRequest) (*kms.DestroyKeyResponse, error) {
	if m.mode == "destroy-keeps-material" && req.Version > 0 {
		g, err := m.Keystore.GetKey(ctx, &kms.GetKeyRequest{ID: req.ID})
		if err == nil && req.Version < g.Key.PrimaryVersion {
			v := &g.Key.Versions[req.Version-1]
			v.State, v.DestroyedAt, v.PublicKey = kms.StateDestroyed, m.now(), nil
			return &kms.DestroyKeyResponse{Key: g.Key}, nil
		}
	}
	if m.mode == "unknown-version-as-primary" {
		if g, err := m.Keystore.GetKey(ctx, &kms.GetKeyRequest{ID: req.ID}); err == nil && req.Version > len(g.Key.Versions) {
			return &kms.DestroyKeyResponse{Key: g.Key}, nil
		}
	}
	return m.Keystore.DestroyKey(ctx, req)
}

func (m *mutant) ExportKey(ctx context.Context, req *kms.ExportKeyRequest) (*kms.ExportKeyResponse, error) {
	r, err := m.Keystore.ExportKey(ctx, req)
	if m.mode == "exports-anything" && errors.Is(err, kms.ErrNotExportable) {
		return &kms.ExportKeyResponse{Algorithm: kms.AES256, Version: 1, PrivateKey: make([]byte, 32)}, nil
	}
	return r, err
}

// mutantRandom adds a kms.RandomSource, correct ("none-random") or
// returning one byte too few ("short-random").
type mutantRandom struct{ *mutant }

func (m *mutantRandom) GenerateRandom(_ context.Context, req *kms.GenerateRandomRequest) (*kms.GenerateRandomResponse, error) {
	if req.Length < 1 || req.Length > kms.MaxRandomLength {
		return nil, fmt.Errorf("length %d: %w", req.Length, errdef.ErrInvalidArgument)
	}
	n := req.Length
	if m.mode == "short-random" {
		n--
	}
	b := make([]byte, n)
	rand.Read(b)
	return &kms.GenerateRandomResponse{Random: b}, nil
}
