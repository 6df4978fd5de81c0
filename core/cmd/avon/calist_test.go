package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cloudflare/circl/sign/mldsa/mldsa65"
	"github.com/hashicorp/go-hclog"

	"github.com/avonzt/avon/core/server"
	"github.com/avonzt/avon/internal/pqx509"
	sdkca "github.com/avonzt/avon/sdk/ca"
	"github.com/avonzt/avon/sdk/plugintest"
)

type mldsaKey struct {
	sk  *mldsa65.PrivateKey
	pub pqx509.PublicKey
}

func (k *mldsaKey) Public() pqx509.PublicKey { return k.pub }
func (k *mldsaKey) Sign(_ context.Context, msg []byte) ([]byte, error) {
	sig := make([]byte, mldsa65.SignatureSize)
	return sig, mldsa65.SignTo(k.sk, msg, nil, true, sig)
}

// TestCertListInitRotate runs `avon ca init`, `avon cert list` (paged, with
// filters), `avon ca rotate` and `avon ca info` as the real avon binary
// against a core with a manual CA (kms-soft, ca-dilithium as processes).
func TestCertListInitRotate(t *testing.T) {
	avon := plugintest.Build(t, "github.com/avonzt/avon/core/cmd/avon")
	kmsBin := plugintest.Build(t, "github.com/avonzt/avon/plugins/kms-soft")
	caBin := plugintest.Build(t, "github.com/avonzt/avon/plugins/ca-dilithium")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.hcl")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`
data_dir = %q
api {
  listen = "127.0.0.1:0"
}
plugin "kms" "soft" {
  command = %q
  sha256  = %q
  config {
    key_file        = "k"
    create_key_file = true
    kdf_time        = 2
    kdf_memory_kib  = 19456
    kdf_threads     = 1
  }
}
plugin "ca" "dilithium" {
  command = %q
  sha256  = %q
  uses    = { kms = ["soft"] }
  config {
    init = "manual"
  }
}
`, filepath.Join(dir, "data"), kmsBin.Path, kmsBin.SHA256, caBin.Path, caBin.SHA256)), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s, err := server.Start(ctx, server.Options{ConfigPath: cfg, Logger: hclog.NewNullLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Stop(ctx) })
	inst, _ := s.Plugins().Get("ca", "dilithium")
	ca := inst.CA()

	avonCmd := func(args ...string) (string, string, int) {
		t.Helper()
		cmd := exec.Command(avon.Path, append(args, "-config", cfg)...)
		var out, errb strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return out.String(), errb.String(), code
	}

	out, errs, code := avonCmd("ca", "init")
	if code != 0 || !strings.Contains(out, "root SHA-256") || !strings.Contains(out, "gateway certificate: issued") {
		t.Fatalf("ca init: %d %s %s", code, out, errs)
	}
	issuers, err := ca.ListIssuers(ctx, &sdkca.ListIssuersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, is := range issuers.Issuers {
		if is.Name == "root" {
			sum := sha256.Sum256(is.Certificate)
			c, _ := pqx509.ParseCertificate(is.Certificate)
			if !strings.Contains(out, hex.EncodeToString(sum[:])) || !strings.Contains(out, c.Subject.String()) {
				t.Fatalf("ca init printed another root:\n%s", out)
			}
		}
	}
	if _, errs, code := avonCmd("ca", "init"); code != 1 || !strings.Contains(errs, "409") || !strings.Contains(errs, "already initialized") {
		t.Fatalf("second init: %d %s", code, errs)
	}

	// Seven agents (and the gateway certificate the init issued).
	var serials []string
	for i := range 7 {
		pk, sk, _ := mldsa65.GenerateKey(rand.Reader)
		raw, _ := pk.MarshalBinary()
		u, _ := url.Parse(fmt.Sprintf("avon://agent/a%d", i))
		csr, err := pqx509.CreateCSR(ctx, pqx509.CSRTemplate{Subject: pkix.Name{CommonName: fmt.Sprintf("a%d", i)}, URIs: []*url.URL{u}},
			&mldsaKey{sk: sk, pub: pqx509.PublicKey{Algorithm: "ML-DSA-65", Raw: raw}})
		if err != nil {
			t.Fatal(err)
		}
		r, err := ca.Issue(ctx, &sdkca.IssueRequest{CSR: csr, Profile: "agent"})
		if err != nil {
			t.Fatal(err)
		}
		serials = append(serials, r.Serial)
	}
	for _, sn := range serials[:2] {
		if _, errs, code := avonCmd("cert", "revoke", sn, "-reason", "keyCompromise"); code != 0 {
			t.Fatalf("revoke: %s", errs)
		}
	}
	list := func(args ...string) []server.CertListEntry {
		t.Helper()
		out, errs, code := avonCmd(append([]string{"cert", "list", "-json"}, args...)...)
		if code != 0 {
			t.Fatalf("cert list %v: %d %s", args, code, errs)
		}
		var got []server.CertListEntry
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("cert list %v: %v\n%s", args, err, out)
		}
		return got
	}
	for _, tc := range []struct {
		args []string
		want int
	}{
		{nil, 8},
		{[]string{"-page-size", "3"}, 8}, // three pages
		{[]string{"-page-size", "3", "-limit", "5"}, 5},
		{[]string{"-status", "revoked", "-page-size", "1"}, 2},
		{[]string{"-status", "good"}, 6},
		{[]string{"-profile", "gateway"}, 1},
		{[]string{"-profile", "agent", "-status", "revoked"}, 2},
	} {
		if got := list(tc.args...); len(got) != tc.want {
			t.Fatalf("cert list %v: %d, want %d", tc.args, len(got), tc.want)
		}
	}
	paged := list("-page-size", "3")
	for i := 1; i < len(paged); i++ {
		if paged[i-1].Serial >= paged[i].Serial {
			t.Fatal("pages overlap or are out of order")
		}
	}
	out, _, code = avonCmd("cert", "list", "-status", "revoked")
	if code != 0 || !strings.Contains(out, "SERIAL") || !strings.Contains(out, serials[0]) || !strings.Contains(out, "revoked") ||
		strings.Contains(out, serials[2]) {
		t.Fatalf("table:\n%s", out)
	}
	if _, errs, code := avonCmd("cert", "list", "-status", "expired"); code != 1 || !strings.Contains(errs, "400") {
		t.Fatalf("bad status: %d %s", code, errs)
	}

	// Rotation by name; an unknown kms names the wired ones.
	if _, errs, code := avonCmd("ca", "rotate", "-kms", "hsm"); code != 1 || !strings.Contains(errs, "wired: soft") {
		t.Fatalf("rotate to an unwired kms: %d %s", code, errs)
	}
	out, errs, code = avonCmd("ca", "rotate", "-kms", "soft")
	if code != 0 || !strings.Contains(out, "generation 2 is active") || !strings.Contains(out, "kms        soft") {
		t.Fatalf("rotate: %d %s %s", code, out, errs)
	}
	out, _, code = avonCmd("ca", "info")
	if code != 0 || !strings.Contains(out, "issuing.1") || !strings.Contains(out, "retired") || !strings.Contains(out, "active") {
		t.Fatalf("ca info:\n%s", out)
	}
	if got := list("-issuer", "issuing.1"); len(got) != 8 {
		t.Fatalf("certificates of generation 1: %d", len(got))
	}
}
