package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/avonzt/avon/core/audit"
	"github.com/avonzt/avon/core/config"
	"github.com/avonzt/avon/core/server"
	"github.com/avonzt/avon/internal/pqx509"
	"github.com/avonzt/avon/sdk/plugintest"
)

// TestCACommands runs the real core with kms-soft and ca-dilithium, then
// `avon ca info`, `avon cert show`, `avon cert revoke` and `avon crl` against
// it over the admin socket, on the gateway certificate the core issued itself.
func TestCACommands(t *testing.T) {
	avon := plugintest.Build(t, "github.com/avonzt/avon/core/cmd/avon")
	kmsBin := plugintest.Build(t, "github.com/avonzt/avon/plugins/kms-soft")
	caBin := plugintest.Build(t, "github.com/avonzt/avon/plugins/ca-dilithium")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.hcl")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`
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
`, filepath.Join(dir, "data"), kmsBin.Path, kmsBin.SHA256, caBin.Path, caBin.SHA256)), 0o600)
	cmd := exec.Command(avon.Path, "server", "-config", cfg)
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	serialRE := regexp.MustCompile(`gateway certificate issued: id=\S+ serial=([0-9a-f]+)`)
	readyRE := regexp.MustCompile(`avon core started`)
	var serial string
	ready := false
	sc := bufio.NewScanner(stderr)
	deadline := time.Now().Add(60 * time.Second)
	for !ready && time.Now().Before(deadline) && sc.Scan() {
		if m := serialRE.FindStringSubmatch(sc.Text()); m != nil {
			serial = m[1]
		}
		ready = readyRE.MatchString(sc.Text())
	}
	if !ready || serial == "" {
		t.Fatalf("core did not come up with a gateway certificate (serial %q)", serial)
	}
	go func() {
		for sc.Scan() {
		}
	}()

	var out, errb bytes.Buffer
	if code := run([]string{"ca", "info", "-config", cfg}, &out, &errb); code != 0 ||
		!strings.Contains(out.String(), "root") || !strings.Contains(out.String(), "ML-DSA-87") || !strings.Contains(out.String(), "ML-DSA-65") {
		t.Fatalf("ca info: %d %s %s", code, out.String(), errb.String())
	}
	out.Reset()
	if code := run([]string{"cert", "show", serial, "-config", cfg}, &out, &errb); code != 0 ||
		!strings.Contains(out.String(), "status     good") || !strings.Contains(out.String(), "uri:avon://gateway/") {
		t.Fatalf("cert show: %d %s %s", code, out.String(), errb.String())
	}
	out.Reset()
	if code := run([]string{"cert", "revoke", serial, "-reason", "superseded", "-config", cfg}, &out, &errb); code != 0 {
		t.Fatalf("cert revoke: %d %s", code, errb.String())
	}
	errb.Reset()
	if code := run([]string{"cert", "revoke", serial, "-reason", "superseded", "-config", cfg}, &out, &errb); code != 1 ||
		!strings.Contains(errb.String(), "409") {
		t.Fatalf("revoke twice: %d %s", code, errb.String())
	}
	errb.Reset()
	if code := run([]string{"cert", "revoke", serial, "-reason", "bored", "-config", cfg}, &out, &errb); code != 1 ||
		!strings.Contains(errb.String(), "not an RFC 5280 CRLReason") {
		t.Fatalf("bad reason: %d %s", code, errb.String())
	}
	crlPath := filepath.Join(dir, "issuing.crl")
	if code := run([]string{"crl", "-o", crlPath, "-config", cfg}, &out, &errb); code != 0 {
		t.Fatalf("crl: %d %s", code, errb.String())
	}
	der, _ := os.ReadFile(crlPath)
	crl, err := pqx509.ParseCRL(der)
	if err != nil || len(crl.Revoked) != 1 || fmt.Sprintf("%032x", crl.Revoked[0].SerialNumber) != serial || crl.Revoked[0].ReasonCode != 4 {
		t.Fatalf("CRL: %v %+v", err, crl)
	}
	// The operator's revocation is in the audit log with the caller's uid.
	_ = cmd.Process.Signal(os.Interrupt)
	_ = cmd.Wait()
	c, _ := config.Load(cfg)
	kv, err := server.OpenStoreToInspect(context.Background(), c, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer kv.Close()
	recs, err := audit.List(context.Background(), kv, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range recs {
		if r.Action == "cert.revoke.request" && strings.HasPrefix(r.Actor, fmt.Sprintf("local-admin:uid=%d,", os.Getuid())) {
			found = true
		}
	}
	if !found {
		b, _ := json.Marshal(recs)
		t.Fatalf("no audited revocation request with the caller's uid: %s", b)
	}
}
