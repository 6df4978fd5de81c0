package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloudflare/circl/sign/mldsa/mldsa65"
	"github.com/hashicorp/go-hclog"

	"github.com/avonzt/avon/core/agents"
	"github.com/avonzt/avon/core/audit"
	"github.com/avonzt/avon/core/enroll"
	"github.com/avonzt/avon/core/server"
	"github.com/avonzt/avon/internal/pqx509"
	"github.com/avonzt/avon/sdk/plugintest"
)

// adminCore starts an in-process core with kms-soft and ca-dilithium as
// plugin processes and returns its configuration path and the core.
func adminCore(t *testing.T) (string, *server.Server) {
	t.Helper()
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
  uses    = { kms = "soft" }
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
	return cfg, s
}

// enrollAgent enrolls a fresh key with token over the core's HTTPS API, as
// avon-agent enroll does, and returns the agent id.
func enrollAgent(t *testing.T, s *server.Server, token string) string {
	t.Helper()
	pk, sk, _ := mldsa65.GenerateKey(rand.Reader)
	raw, _ := pk.MarshalBinary()
	csr, err := pqx509.CreateCSR(context.Background(), pqx509.CSRTemplate{Subject: pkix.Name{CommonName: "laptop"}},
		&mldsaKey{sk: sk, pub: pqx509.PublicKey{Algorithm: "ML-DSA-65", Raw: raw}})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(server.EnrollRequest{Token: token, CSR: csr})
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} // the core's self-signed API certificate under test
	resp, err := c.Post("https://"+s.APIAddr()+"/v1/enroll", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out server.EnrollResponse
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 || out.AgentID == "" {
		t.Fatalf("enroll: %d %v %+v", resp.StatusCode, err, out)
	}
	return out.AgentID
}

// TestOperatorCommands drives the operator CLI (run, as the binary would)
// against a real core over its admin socket: tokens, enrollment, agents
// (disable with the ETag read first; a stale one refused), keys, plugins,
// sessions, the audit query with the caller's uid, and verify via the core.
func TestOperatorCommands(t *testing.T) {
	cfg, s := adminCore(t)
	avon := func(args ...string) (string, string, int) {
		t.Helper()
		var out, errb bytes.Buffer
		code := run(append(args, "-config", cfg), &out, &errb)
		return out.String(), errb.String(), code
	}

	// Tokens: create (shown once), list (never the token), revoke.
	out, errs, code := avon("token", "create", "-group", "eng", "-ttl", "30m", "-o", "json")
	var created server.TokenCreated
	if code != 0 || json.Unmarshal([]byte(out), &created) != nil || !strings.HasPrefix(created.Token, enroll.TokenPrefix) || created.Group != "eng" ||
		!strings.HasPrefix(created.CreatedBy, fmt.Sprintf("local-admin:uid=%d,", os.Getuid())) {
		t.Fatalf("token create: %d %s %s", code, out, errs)
	}
	out2, _, _ := avon("token", "create", "-group", "ops")
	second := strings.TrimSpace(out2)
	out, _, code = avon("token", "list")
	if code != 0 || !strings.Contains(out, created.ID) || strings.Contains(out, strings.TrimPrefix(created.Token, enroll.TokenPrefix)) {
		t.Fatalf("token list: %d %s", code, out)
	}
	if _, errs, code := avon("token", "create"); code != 2 || !strings.Contains(errs, "-group is required") {
		t.Fatalf("create without group: %d %s", code, errs)
	}
	if _, errs, code := avon("token", "create", "-group", "Not A Group"); code != 1 || !strings.Contains(errs, "400 Bad request") ||
		!strings.Contains(errs, "[bad-request, request ") {
		t.Fatalf("bad group: %d %s", code, errs)
	}

	// Enroll with the first token: the agent appears.
	id := enrollAgent(t, s, created.Token)
	if _, errs, code := avon("token", "revoke", created.ID); code != 1 || !strings.Contains(errs, "409") || !strings.Contains(errs, "already used") {
		t.Fatalf("revoke a used token: %d %s", code, errs)
	}
	out, _, code = avon("agent", "list")
	if code != 0 || !strings.Contains(out, id) || !strings.Contains(out, "eng") || !strings.Contains(out, "enabled") {
		t.Fatalf("agent list: %d %s", code, out)
	}

	// Disable, read it back, enable.
	if out, errs, code := avon("agent", "disable", id, "-reason", "lost laptop"); code != 0 || !strings.Contains(out, "disabled") {
		t.Fatalf("agent disable: %d %s %s", code, out, errs)
	}
	out, _, _ = avon("agent", "get", id, "-o", "json")
	var a agents.Agent
	if json.Unmarshal([]byte(out), &a) != nil || !a.Disabled || a.ChangeReason != "lost laptop" || !strings.HasPrefix(a.ChangedBy, "local-admin:uid=") {
		t.Fatalf("agent get: %s", out)
	}
	if out, _, code := avon("agent", "list", "-disabled"); code != 0 || !strings.Contains(out, id) {
		t.Fatalf("agent list -disabled: %s", out)
	}
	if _, _, code := avon("agent", "enable", id); code != 0 {
		t.Fatal("agent enable failed")
	}
	if _, errs, code := avon("agent", "get", "no-such-agent"); code != 1 || !strings.Contains(errs, "404 Not found") || !strings.Contains(errs, "[not-found") {
		t.Fatalf("unknown agent: %d %s", code, errs)
	}

	// A stale ETag is refused, and changes nothing.
	c, ok := adminClient(cfg, os.Stderr)
	if !ok {
		t.Fatal("no admin client")
	}
	hdr, err := c.call("GET", "/v1/agents/"+id, nil, nil, &a)
	if err != nil {
		t.Fatal(err)
	}
	stale := hdr.Get("ETag")
	yes := true
	if _, err := c.call("PATCH", "/v1/agents/"+id, map[string]string{"If-Match": stale}, server.AgentPatch{Reason: "x", Disabled: new(bool)}, &a); err != nil {
		t.Fatal(err)
	}
	_, err = c.call("PATCH", "/v1/agents/"+id, map[string]string{"If-Match": stale}, server.AgentPatch{Disabled: &yes}, &a)
	if pe, ok := err.(*problemError); !ok || pe.Status != 412 {
		t.Fatalf("stale ETag: %v", err)
	}
	_, err = c.call("PATCH", "/v1/agents/"+id, nil, server.AgentPatch{Disabled: &yes}, &a)
	if pe, ok := err.(*problemError); !ok || pe.Status != 428 {
		t.Fatalf("no If-Match: %v", err)
	}
	if out, _, _ := avon("agent", "get", id); !strings.Contains(out, "enabled") {
		t.Fatalf("a refused change took effect: %s", out)
	}

	// Revoke the second token by id.
	tokID := ""
	var list []enroll.Token
	out, _, _ = avon("token", "list", "-o", "json")
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatal(err)
	}
	for _, tk := range list {
		if tk.Group == "ops" {
			tokID = tk.ID
		}
	}
	if _, errs, code := avon("token", "revoke", tokID); code != 0 || second == "" {
		t.Fatalf("token revoke: %d %s", code, errs)
	}
	if _, errs, code := avon("token", "revoke", tokID); code != 1 || !strings.Contains(errs, "404") {
		t.Fatalf("revoke twice: %d %s", code, errs)
	}

	// Keys of kms-soft: the CA's; rotate one.
	out, _, code = avon("key", "list", "-o", "json")
	var keys []server.KeyInfo
	if code != 0 || json.Unmarshal([]byte(out), &keys) != nil || len(keys) < 2 {
		t.Fatalf("key list: %d %s", code, out)
	}
	k := keys[len(keys)-1]
	if out, errs, code := avon("key", "rotate", "soft/"+k.ID); code != 0 || !strings.Contains(out, fmt.Sprintf("version %d is primary", k.PrimaryVersion+1)) {
		t.Fatalf("key rotate: %d %s %s", code, out, errs)
	}
	if _, errs, code := avon("key", "rotate", "nokms/x"); code != 1 || !strings.Contains(errs, "404") {
		t.Fatalf("rotate on an unknown kms: %d %s", code, errs)
	}

	// Plugins and sessions (no gateway here: none).
	out, _, code = avon("plugin", "list")
	if code != 0 || !strings.Contains(out, "kms") || !strings.Contains(out, "dilithium") || !strings.Contains(out, "running") {
		t.Fatalf("plugin list: %d %s", code, out)
	}
	if out, _, code := avon("session", "list", "-o", "json"); code != 0 || strings.TrimSpace(out) != "[]" {
		t.Fatalf("session list: %d %s", code, out)
	}
	if _, errs, code := avon("session", "kill", "zz"); code != 1 || !strings.Contains(errs, "400") {
		t.Fatalf("kill a malformed id: %d %s", code, errs)
	}

	// Every change is in the audit log with the caller's uid, found by the
	// query; the chain verifies through the core.
	out, _, code = avon("audit", "query", "-action", "agent.*", "-outcome", "success", "-o", "json")
	var recs []audit.Record
	if code != 0 || json.Unmarshal([]byte(out), &recs) != nil {
		t.Fatalf("audit query: %d %s", code, out)
	}
	updates := 0
	for _, r := range recs {
		if r.Action == "agent.update" && r.Target == "agent/"+id && strings.HasPrefix(r.Actor, fmt.Sprintf("local-admin:uid=%d,", os.Getuid())) {
			updates++
		}
	}
	if updates != 3 { // disable, enable, the API's PATCH
		t.Fatalf("%d audited agent updates, want 3: %s", updates, out)
	}
	if out, _, code := avon("audit", "query", "-action", "enroll.token.*", "-n", "2"); code != 0 || strings.Count(out, "enroll.token.") != 2 {
		t.Fatalf("audit query -n 2: %s", out)
	}
	if _, errs, code := avon("audit", "query", "-since", "yesterday"); code != 1 || !strings.Contains(errs, "RFC 3339") {
		t.Fatalf("bad since: %d %s", code, errs)
	}
	if out, errs, code := avon("audit", "verify", "-via-core"); code != 0 || strings.Contains(out, "PROBLEM") {
		t.Fatalf("audit verify -via-core: %d %s %s", code, out, errs)
	}
}

// TestPolicyCommands drives `avon policy` against a core with a policy
// plugin process (core/server/testdata/testpolicy).
func TestPolicyCommands(t *testing.T) {
	bin := plugintest.Build(t, "github.com/avonzt/avon/core/server/testdata/testpolicy")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.hcl")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`
data_dir = %q
api {
  listen = "127.0.0.1:0"
}
plugin "policy" "test" {
  command = %q
  sha256  = %q
}
`, filepath.Join(dir, "data"), bin.Path, bin.SHA256)), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s, err := server.Start(ctx, server.Options{ConfigPath: cfg, Logger: hclog.NewNullLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Stop(ctx) })
	avon := func(args ...string) (string, string, int) {
		t.Helper()
		var out, errb bytes.Buffer
		code := run(append(args, "-config", cfg), &out, &errb)
		return out.String(), errb.String(), code
	}
	good := filepath.Join(dir, "eng.pol")
	bad := filepath.Join(dir, "bad.pol")
	_ = os.WriteFile(good, []byte("permit Agent::a1 reach Service::10.20.0.10:443\n"), 0o600)
	_ = os.WriteFile(bad, []byte("permit Agent::a1 reach Service::x\nallow everything\n"), 0o600)

	if _, errs, code := avon("policy", "validate", bad); code != 1 || !strings.Contains(errs, bad+":2:1: error:") {
		t.Fatalf("validate bad: %d %s", code, errs)
	}
	if out, _, code := avon("policy", "validate", good); code != 0 || !strings.Contains(out, "valid") {
		t.Fatalf("validate good: %d %s", code, out)
	}
	if _, errs, code := avon("policy", "apply", bad); code != 1 || !strings.Contains(errs, "nothing was applied") || !strings.Contains(errs, ":2:1:") {
		t.Fatalf("apply bad: %d %s", code, errs)
	}
	if out, errs, code := avon("policy", "apply", good); code != 0 || !strings.Contains(out, "version 1") {
		t.Fatalf("apply: %d %s %s", code, out, errs)
	}
	if out, errs, code := avon("policy", "apply", good, "-set", "ops"); code != 0 || !strings.Contains(out, "policy set ops") {
		t.Fatalf("apply a new set: %d %s %s", code, out, errs)
	}
	if out, _, code := avon("policy", "get"); code != 0 || !strings.Contains(out, "permit Agent::a1") {
		t.Fatalf("get: %d %s", code, out)
	}
	out, _, code := avon("policy", "dry-run", "-principal", "Agent::a1", "-resource", "Service::10.20.0.10:443")
	if code != 0 || !strings.HasPrefix(out, "ALLOW") || !strings.Contains(out, "determined by line1") {
		t.Fatalf("dry-run allow: %d %s", code, out)
	}
	out, _, code = avon("policy", "dry-run", "-principal", "Agent::a1", "-resource", "Service::10.20.0.10:22", "-context", `{"posture":"ok"}`)
	if code != 0 || !strings.HasPrefix(out, "DENY") {
		t.Fatalf("dry-run deny: %d %s", code, out)
	}
	if _, _, code := avon("policy", "dry-run", "-principal", "a1"); code != 2 {
		t.Fatalf("dry-run without TYPE::ID: %d", code)
	}
}
