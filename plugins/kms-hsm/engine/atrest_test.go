package engine_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/avonzt/avon/plugins/kms-hsm/engine"
	"github.com/avonzt/avon/plugins/kms-hsm/softhsmtest"
	"github.com/avonzt/avon/sdk/host"
	"github.com/avonzt/avon/sdk/kms"
	"github.com/avonzt/avon/sdk/kms/kmstest"
	"github.com/avonzt/avon/sdk/plugintest"
)

// recordingRand is a deterministic host RNG that remembers every draw, so
// a test can reconstruct the seeds the engine made.
type recordingRand struct {
	mu    sync.Mutex
	r     *rand.ChaCha8
	draws [][]byte
}

func newRecordingRand(seed byte) *recordingRand {
	return &recordingRand{r: rand.NewChaCha8([32]byte{seed, 'a', 'v', 'o', 'n'})}
}

func (r *recordingRand) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n, err := r.r.Read(p)
	r.draws = append(r.draws, bytes.Clone(p[:n]))
	return n, err
}

// seedOf finds the draw that is the seed of a PQ public key, deriving each
// candidate's public key independently.
func (r *recordingRand) seedOf(t *testing.T, a kms.Algorithm, pub []byte) []byte {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	var found [][]byte
	for _, d := range r.draws {
		if p, err := kmstest.PublicFromPrivate(a, d); err == nil && bytes.Equal(p, pub) {
			found = append(found, d)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%s: %d host RNG draws derive the public key, want exactly 1 (the seed must come from the host RNG)", a, len(found))
	}
	return found[0]
}

func requirePkcs11Tool(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("pkcs11-tool"); err != nil {
		if os.Getenv("AVON_REQUIRE_SERVICES") == "1" {
			t.Fatal("pkcs11-tool (opensc) not in PATH and AVON_REQUIRE_SERVICES=1")
		}
		t.Skip("pkcs11-tool (opensc) not in PATH")
	}
}

// p11Object is one object as pkcs11-tool --list-objects prints it.
type p11Object struct {
	kind  string // "Private Key Object; EC", "Secret Key Object; AES length 32", ...
	attrs map[string]string
}

func listObjects(t *testing.T, h *softhsmtest.HSM) []p11Object {
	t.Helper()
	cmd := exec.Command("pkcs11-tool", "--module", h.Module, "--token-label", h.TestToken, "--login", "--pin", softhsmtest.PIN, "--list-objects")
	cmd.Env = append(os.Environ(), h.Env()...)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("pkcs11-tool --list-objects: %v\n%s", err, out)
	}
	var objs []p11Object
	for _, line := range strings.Split(string(out), "\n") {
		switch {
		case line == "":
		case line[0] != ' ' && line[0] != '\t':
			objs = append(objs, p11Object{kind: line, attrs: map[string]string{}})
		case len(objs) > 0:
			if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
				objs[len(objs)-1].attrs[strings.TrimSpace(k)] = strings.TrimSpace(v)
			}
		}
	}
	if len(objs) == 0 {
		t.Fatalf("pkcs11-tool lists no object at all:\n%s", out)
	}
	return objs
}

func byLabel(objs []p11Object, label string) []p11Object {
	var out []p11Object
	for _, o := range objs {
		if o.attrs["label"] == label {
			out = append(out, o)
		}
	}
	return out
}

// What is on the token and what is in host storage: the classical keys
// and the wrap key are sensitive, never-extractable token objects; no PQ
// key has a token object; no PQ seed appears in plaintext in host storage
// or in the token's files.
func TestAtRest(t *testing.T) {
	h := softhsmtest.Require(t)
	requirePkcs11Tool(t)
	rnd := newRecordingRand(1)
	hst := plugintest.NewHost(plugintest.WithRand(rnd))
	e := open(t, h, hst)
	ctx := context.Background()

	classical := []kms.Algorithm{kms.ECDSAP256, kms.ECDSAP384, kms.Ed25519, kms.AES256}
	pq := []kms.Algorithm{kms.MLDSA44, kms.MLDSA65, kms.MLDSA87, kms.MLKEM768, kms.MLKEM1024, kms.XWing}
	id := func(a kms.Algorithm) string { return "atrest-" + strings.ToLower(string(a)) }
	for _, a := range append(append([]kms.Algorithm{}, classical...), pq...) {
		if _, err := e.GenerateKey(ctx, &kms.GenerateKeyRequest{ID: id(a), Algorithm: a}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.RotateKey(ctx, &kms.RotateKeyRequest{ID: id(a)}); err != nil {
			t.Fatal(err)
		}
	}

	objs := listObjects(t, h)
	checkAccess := func(what string, o p11Object) {
		t.Helper()
		acc := o.attrs["Access"]
		for _, want := range []string{"sensitive", "always sensitive", "never extractable"} {
			if !strings.Contains(acc, want) {
				t.Errorf("%s: Access %q lacks %q", what, acc, want)
			}
		}
		if strings.Contains(strings.ReplaceAll(acc, "never extractable", ""), "extractable") {
			t.Errorf("%s: Access %q says extractable", what, acc)
		}
	}
	wrap := byLabel(objs, engine.DefaultWrapKeyLabel)
	if len(wrap) != 1 || !strings.HasPrefix(wrap[0].kind, "Secret Key Object; AES length 32") {
		t.Fatalf("wrap key on the token: %+v", wrap)
	}
	checkAccess("wrap key", wrap[0])
	for _, a := range classical {
		for v := 1; v <= 2; v++ {
			label := fmt.Sprintf("avon/%s/v%d", id(a), v)
			found := byLabel(objs, label)
			wantKind := "Private Key Object"
			if a == kms.AES256 {
				wantKind = "Secret Key Object; AES length 32"
			}
			if len(found) != 1 || !strings.HasPrefix(found[0].kind, wantKind) {
				t.Errorf("%s: objects %+v, want one %s (no public key object is kept on the token)", label, found, wantKind)
				continue
			}
			checkAccess(label, found[0])
		}
	}
	for _, o := range objs {
		if strings.HasPrefix(o.kind, "Data object") {
			t.Errorf("a data object is on the token: %+v", o)
		}
		for _, a := range pq {
			if strings.Contains(o.attrs["label"], id(a)) {
				t.Errorf("a %s key has a token object: %+v", a, o)
			}
		}
	}

	// Reconstruct every PQ seed and look for it where it must not be.
	var seeds [][]byte
	for _, a := range pq {
		for v := 1; v <= 2; v++ {
			pk, err := e.PublicKey(ctx, &kms.PublicKeyRequest{ID: id(a), Version: v})
			if err != nil {
				t.Fatal(err)
			}
			seeds = append(seeds, rnd.seedOf(t, a, pk.PublicKey))
		}
	}
	ents, err := hst.Storage().List(ctx, host.ListOptions{})
	if err != nil || len(ents) < len(classical)+len(pq) {
		t.Fatalf("storage holds %d entries: %v", len(ents), err)
	}
	leaks := func(where string, b []byte) {
		t.Helper()
		for _, s := range seeds {
			for _, form := range [][]byte{s, []byte(hex.EncodeToString(s)), []byte(base64.StdEncoding.EncodeToString(s)),
				[]byte(base64.RawStdEncoding.EncodeToString(s)), []byte(base64.URLEncoding.EncodeToString(s))} {
				if bytes.Contains(b, form) {
					t.Errorf("%s contains a PQ seed in plaintext", where)
				}
			}
		}
	}
	for _, ent := range ents {
		leaks("host storage entry "+ent.Key, ent.Value)
	}
	err = filepath.WalkDir(h.TokenDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err == nil {
			leaks("token file "+p, b)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	// Destroying versions removes their token objects.
	for _, a := range classical {
		if _, err := e.DestroyKey(ctx, &kms.DestroyKeyRequest{ID: id(a)}); err != nil {
			t.Fatal(err)
		}
	}
	objs = listObjects(t, h)
	for _, a := range classical {
		for v := 1; v <= 2; v++ {
			if found := byLabel(objs, fmt.Sprintf("avon/%s/v%d", id(a), v)); len(found) != 0 {
				t.Errorf("destroyed %s version %d still has a token object", a, v)
			}
		}
	}
}

// A wrapped seed opens only for the key, version and algorithm it was
// wrapped for, only under the token's wrap key, and never falls back.
func TestWrappedSeedBinding(t *testing.T) {
	h := softhsmtest.Require(t)
	hst := plugintest.NewHost()
	e := open(t, h, hst)
	ctx := context.Background()
	for _, id := range []string{"bind-a", "bind-b"} {
		if _, err := e.GenerateKey(ctx, &kms.GenerateKeyRequest{ID: id, Algorithm: kms.MLDSA65}); err != nil {
			t.Fatal(err)
		}
	}
	st := hst.Storage()
	get := func(id string) (map[string]any, host.Entry) {
		ent, err := st.Get(ctx, "kms-hsm/keys/"+id)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(ent.Value, &m); err != nil {
			t.Fatal(err)
		}
		return m, ent
	}
	put := func(id string, m map[string]any) {
		b, _ := json.Marshal(m)
		if _, err := st.Put(ctx, "kms-hsm/keys/"+id, b, host.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	sign := func(id string) error {
		_, err := e.Sign(ctx, &kms.SignRequest{ID: id, Message: []byte("m")})
		return err
	}
	if err := sign("bind-b"); err != nil {
		t.Fatal(err)
	}
	a, _ := get("bind-a")
	b, orig := get("bind-b")
	wrappedA := a["versions"].([]any)[0].(map[string]any)["wrapped"]

	// A's wrapped seed moved into B's record: the AAD names A.
	b["versions"].([]any)[0].(map[string]any)["wrapped"] = wrappedA
	put("bind-b", b)
	if err := sign("bind-b"); !errors.Is(err, engine.ErrCorrupt) {
		t.Errorf("sign with another key's wrapped seed: %v, want ErrCorrupt", err)
	}
	// One bit of the wrapped seed flipped.
	raw, _ := base64.StdEncoding.DecodeString(wrappedA.(string))
	raw[20] ^= 1
	b["versions"].([]any)[0].(map[string]any)["wrapped"] = base64.StdEncoding.EncodeToString(raw)
	put("bind-b", b)
	if err := sign("bind-b"); !errors.Is(err, engine.ErrCorrupt) {
		t.Errorf("sign with a tampered wrapped seed: %v, want ErrCorrupt", err)
	}
	if _, err := st.Put(ctx, "kms-hsm/keys/bind-b", orig.Value, host.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := sign("bind-b"); err != nil {
		t.Fatalf("restored record: %v", err)
	}

	// Another wrap key (as after restoring storage onto another token):
	// the seeds do not open, and nothing signs without them.
	tok2 := openToken(t, h)
	e2, err := engine.New(ctx, engine.Options{Token: tok2, Storage: st, Rand: hst.Rand(), WrapKeyLabel: "avon-wrap-other"})
	if err != nil {
		t.Fatal(err)
	}
	defer e2.Close()
	if _, err := e2.Sign(ctx, &kms.SignRequest{ID: "bind-a", Message: []byte("m")}); !errors.Is(err, engine.ErrCorrupt) {
		t.Errorf("sign under another wrap key: %v, want ErrCorrupt", err)
	}
}
