package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloudflare/circl/sign/mldsa/mldsa65"

	"github.com/avonzt/avon/core/enroll"
	"github.com/avonzt/avon/internal/pqx509"
	sdkca "github.com/avonzt/avon/sdk/ca"
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
	// A renewal proof is good once: the same request replayed is refused.
	{
		kb, _ := os.ReadFile(filepath.Join(state, "agent.key"))
		kblk, _ := pem.Decode(kb)
		var sd [mldsa65.SeedSize]byte
		copy(sd[:], kblk.Bytes)
		_, oldSK := mldsa65.NewKeyFromSeed(&sd)
		pk, sk, _ := mldsa65.GenerateKey(rand.Reader)
		raw, _ := pk.MarshalBinary()
		csr, err := pqx509.CreateCSR(ctx, pqx509.CSRTemplate{}, &testKey{sk: sk, pub: pqx509.PublicKey{Algorithm: "ML-DSA-65", Raw: raw}})
		if err != nil {
			t.Fatal(err)
		}
		ts := time.Now().UTC().Format(time.RFC3339Nano)
		proof := make([]byte, mldsa65.SignatureSize)
		if err := mldsa65.SignTo(oldSK, RenewMessage(csr, ts), nil, true, proof); err != nil {
			t.Fatal(err)
		}
		body, _ := json.Marshal(RenewRequest{Certificate: chain[0].Raw, CSR: csr, Time: ts, Proof: proof})
		for i, want := range []int{200, 401} {
			hr, err := httpsClient().Post(server+"/v1/renew", "application/json", bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			rb, _ := io.ReadAll(hr.Body)
			hr.Body.Close()
			if hr.StatusCode != want || (i == 1 && !strings.Contains(string(rb), "already used")) {
				t.Fatalf("renew attempt %d: %d %s", i, hr.StatusCode, rb)
			}
		}
		// A tampered proof is refused.
		proof[0] ^= 1
		body, _ = json.Marshal(RenewRequest{Certificate: chain[0].Raw, CSR: csr, Time: ts, Proof: proof})
		hr, _ := httpsClient().Post(server+"/v1/renew", "application/json", bytes.NewReader(body))
		rb, _ := io.ReadAll(hr.Body)
		hr.Body.Close()
		if hr.StatusCode != 401 || !strings.Contains(string(rb), "proof of the current key") {
			t.Fatalf("tampered proof: %d %s", hr.StatusCode, rb)
		}
	}

	// Renewal: a new key, the same agent id, authenticated by the current
	// certificate; "not due" without --force.
	renew := func(args ...string) (string, error) {
		out, err := exec.Command(agent.Path, append([]string{"renew", "--server-fingerprint", s.APIFingerprint(), "--state-dir", state}, args...)...).CombinedOutput()
		return string(out), err
	}
	if out, err := renew(); err != nil || !strings.Contains(out, "not due") {
		t.Fatalf("renew when not due: %v\n%s", err, out)
	}
	if out, err := renew("--force"); err != nil || !strings.Contains(out, "renewed agent") {
		t.Fatalf("renew: %v\n%s", err, out)
	}
	b, _ := os.ReadFile(filepath.Join(state, "agent.crt"))
	blk, _ := pem.Decode(b)
	renewed, err := pqx509.ParseCertificate(blk.Bytes)
	if err != nil || renewed.URIs[0].String() != chain[0].URIs[0].String() || renewed.PublicKey.Equal(chain[0].PublicKey) ||
		renewed.SerialNumber.Cmp(chain[0].SerialNumber) == 0 {
		t.Fatalf("renewed certificate: same id %v, new key %v (%v)", renewed.URIs, !renewed.PublicKey.Equal(chain[0].PublicKey), err)
	}
	// The old certificate revoked: renewing with it is refused.
	inst, _ := s.Plugins().Get("ca", "dilithium")
	if _, err := inst.CA().Revoke(ctx, &sdkca.RevokeRequest{Serial: fmt.Sprintf("%x", renewed.SerialNumber), Reason: 1}); err != nil {
		t.Fatal(err)
	}
	if out, err := renew("--force"); err == nil || !strings.Contains(out, "revoked") {
		t.Fatalf("renew with a revoked certificate: %v\n%s", err, out)
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
