package server

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/avonzt/avon/core/enroll"
	"github.com/avonzt/avon/internal/pqx509"
	"github.com/avonzt/avon/sdk/kms"
	"github.com/avonzt/avon/sdk/plugintest"
)

// TestAgentEnrollment: `avon token create` equivalent, then the real
// avon-agent binary enrolls with it against the core (CA and KMS as plugin
// processes): the agent's files are 0600, its certificate is for its key and
// chains to the returned root, the token works once, a wrong pin is refused.
func TestAgentEnrollment(t *testing.T) {
	agent := plugintest.Build(t, "github.com/avonzt/avon/agent/cmd/avon-agent")
	s, _ := startServer(t, writeConfig(t, t.TempDir(), `
data_dir = "data"
api {
  listen = "127.0.0.1:0"
}
`+caConfig(t)))
	ctx := context.Background()
	tokens := enroll.NewTokens(s.store, rand.Reader, s.calib.Now)
	tok, _, err := tokens.Create(ctx, "eng", time.Hour, "test")
	if err != nil {
		t.Fatal(err)
	}
	server := "https://" + s.APIAddr()
	state := filepath.Join(t.TempDir(), "agent")
	run := func(fp, dir string) (string, error) {
		cmd := exec.Command(agent.Path, "enroll", "--server", server, "--server-fingerprint", fp, "--state-dir", dir)
		cmd.Env = append(os.Environ(), "AVON_ENROLL_TOKEN="+tok)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	// A wrong pin: refused before anything is sent; the token survives.
	if out, err := run(strings.Repeat("00", 32), state); err == nil || !strings.Contains(out, "does not match the pinned") {
		t.Fatalf("wrong fingerprint: %v\n%s", err, out)
	}
	out, err := run(s.APIFingerprint(), state)
	if err != nil || !strings.Contains(out, "enrolled as agent") || !strings.Contains(out, "group eng") {
		t.Fatalf("enroll: %v\n%s", err, out)
	}
	for _, f := range []string{"agent.key", "agent.crt", "roots.pem", "bundle.json", "gateway.crt"} {
		st, err := os.Stat(filepath.Join(state, f))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", f, st, err)
		}
	}
	if st, _ := os.Stat(state); st.Mode().Perm() != 0o700 {
		t.Fatalf("state dir mode %o", st.Mode().Perm())
	}
	var chain, roots []*pqx509.Certificate
	for name, into := range map[string]*[]*pqx509.Certificate{"agent.crt": &chain, "roots.pem": &roots} {
		b, _ := os.ReadFile(filepath.Join(state, name))
		for blk, rest := pem.Decode(b); blk != nil; blk, rest = pem.Decode(rest) {
			c, err := pqx509.ParseCertificate(blk.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			*into = append(*into, c)
		}
	}
	if len(chain) != 2 || len(roots) != 1 || len(chain[0].URIs) != 1 || !strings.HasPrefix(chain[0].URIs[0].String(), "avon://agent/") {
		t.Fatalf("chain %d roots %d", len(chain), len(roots))
	}
	if _, err := pqx509.Verify(chain[0], pqx509.VerifyOptions{Roots: roots, Intermediates: chain[1:], CurrentTime: time.Now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatal(err)
	}
	// The token is spent: a second agent is refused with the reason.
	out, err = run(s.APIFingerprint(), filepath.Join(t.TempDir(), "agent2"))
	if err == nil || !strings.Contains(out, "Token already used") {
		t.Fatalf("second use: %v\n%s", err, out)
	}
	// Both attempts are in the audit log.
	recs, _ := s.audit.List(ctx, 0, 100)
	var outcomes []string
	for _, r := range recs {
		if r.Action == "agent.enroll" {
			outcomes = append(outcomes, r.Outcome)
		}
	}
	if strings.Join(outcomes, ",") != "success,failure" {
		t.Fatalf("enroll audit outcomes %v", outcomes)
	}
}

// TestGatewayCertificate: the core's gateway identity is issued at first
// start through the CA plugin from a KMS key, chains to the root with the
// gateway profile, and is kept (not re-issued) across a restart.
func TestGatewayCertificate(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir, `
data_dir = "data"
api {
  listen = "127.0.0.1:0"
}
`+caConfig(t))
	s, _ := startServer(t, cfg)
	ctx := context.Background()
	gc, err := s.GatewayCertificate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := pqx509.ParseCertificate(gc.Certificate)
	if err != nil {
		t.Fatal(err)
	}
	if leaf.PublicKey.Algorithm != "ML-DSA-65" || len(leaf.URIs) != 1 || leaf.URIs[0].String() != "avon://gateway/"+gc.ID {
		t.Fatalf("gateway certificate: %s %v", leaf.PublicKey.Algorithm, leaf.URIs)
	}
	inst, _ := s.Plugins().Get("ca", "dilithium")
	issuers, _ := inst.CA().ListIssuers(ctx, nil)
	var roots []*pqx509.Certificate
	for _, is := range issuers.Issuers {
		if is.Name == "root" {
			c, _ := pqx509.ParseCertificate(is.Certificate)
			roots = append(roots, c)
		}
	}
	var inters []*pqx509.Certificate
	for _, d := range gc.Chain {
		c, _ := pqx509.ParseCertificate(d)
		inters = append(inters, c)
	}
	if _, err := pqx509.Verify(leaf, pqx509.VerifyOptions{Roots: roots, Intermediates: inters, CurrentTime: time.Now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Fatalf("gateway chain: %v", err)
	}
	// The key is the KMS's avon-gateway key.
	k, _ := s.Plugins().Get("kms", "soft")
	pk, err := k.KMS().PublicKey(ctx, &kms.PublicKeyRequest{ID: "avon-gateway"})
	if err != nil || string(pk.PublicKey) != string(leaf.PublicKey.Raw) {
		t.Fatalf("gateway key: %v", err)
	}
	if err := s.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	s2, _ := startServer(t, cfg)
	gc2, err := s2.GatewayCertificate(ctx)
	if err != nil || gc2.Serial != gc.Serial {
		t.Fatalf("after a restart the gateway certificate changed: %v %s -> %s", err, gc.Serial, gc2.Serial)
	}
}
