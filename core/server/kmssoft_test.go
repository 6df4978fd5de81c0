package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/avonzt/avon/sdk/kms"
	"github.com/avonzt/avon/sdk/kms/kmstest"
	"github.com/avonzt/avon/sdk/plugintest"
)

// TestKMSSoftSurvivesKill is the acceptance path with the real keystore
// plugin: a key made before `kill -9` of the plugin signs after the
// supervisor brings it back, and the signature verifies independently.
func TestKMSSoftSurvivesKill(t *testing.T) {
	bin := plugintest.Build(t, "github.com/avonzt/avon/plugins/kms-soft")
	dir := t.TempDir()
	cfg := fmt.Sprintf(`
data_dir = "data"
api {
  listen = "127.0.0.1:0"
}
plugins {
  health_interval     = "200ms"
  restart_backoff_min = "50ms"
}
plugin "kms" "soft" {
  command = %q
  sha256  = %q
  config {
    passphrase     = env("AVON_TEST_KMS_PASSPHRASE")
    kdf_time       = 2
    kdf_memory_kib = 19456
    kdf_threads    = 1
  }
}
`, bin.Path, bin.SHA256)
	t.Setenv("AVON_TEST_KMS_PASSPHRASE", "correct horse battery staple")
	s, logs := startServer(t, writeConfig(t, dir, cfg))
	inst, _ := s.Plugins().Get("kms", "soft")
	k := inst.KMS()
	ctx := context.Background()
	if _, err := k.GenerateKey(ctx, &kms.GenerateKeyRequest{ID: "ca-root", Algorithm: kms.MLDSA65}); err != nil {
		t.Fatal(err)
	}
	pk, err := k.PublicKey(ctx, &kms.PublicKeyRequest{ID: "ca-root"})
	if err != nil {
		t.Fatal(err)
	}
	pid := inst.Status().PID
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	base := "https://" + s.APIAddr()
	waitFor(t, 15*time.Second, "readyz after kill -9 of kms-soft", func() bool {
		code, r := readiness(t, c, base)
		st := inst.Status()
		return code == 200 && r.Ready && st.PID != pid && st.PID != 0 && st.Restarts >= 1
	})
	msg := []byte("signed after the plugin was restarted")
	sig, err := k.Sign(ctx, &kms.SignRequest{ID: "ca-root", Message: msg})
	if err != nil {
		t.Fatalf("sign after recovery: %v", err)
	}
	ok, err := kmstest.VerifyIndependently(kms.MLDSA65, pk.PublicKey, msg, nil, sig.Signature)
	if err != nil || !ok {
		t.Fatalf("signature after recovery does not verify: %v %v", ok, err)
	}
	if !strings.Contains(logs.String(), "plugin process exited") || !strings.Contains(logs.String(), "plugin restarted") {
		t.Fatalf("crash and restart not logged:\n%s", logs.String())
	}
}
