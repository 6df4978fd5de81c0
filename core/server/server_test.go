package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/avonzt/avon/core/api"
	"github.com/avonzt/avon/core/pluginhost"
	"github.com/avonzt/avon/plugins/kms-hsm/softhsmtest"
	"github.com/avonzt/avon/sdk/kms"
	"github.com/avonzt/avon/sdk/plugintest"
)

// TestMain builds plugins once per process (plugintest) and prepares a
// SoftHSM2 token directory for the kms-hsm tests (softhsmtest).
func TestMain(m *testing.M) {
	teardown := softhsmtest.Setup()
	code := plugintest.Run(m)
	teardown()
	os.Exit(code)
}

const testPluginPkg = "github.com/avonzt/avon/core/pluginhost/testdata/testkms"

func writeConfig(t testing.TB, dir, body string) string {
	t.Helper()
	p := filepath.Join(dir, "config.hcl")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func testConfig(bin plugintest.Binary, label string) string {
	return fmt.Sprintf(`
data_dir = "data"
log_level = "debug"
api {
  listen = "127.0.0.1:0"
}
plugins {
  health_interval     = "200ms"
  restart_backoff_min = "50ms"
  restart_backoff_max = "200ms"
}
# The test plugin holds no real keys: nothing to sign with.
calibration {
  attestations = false
}
audit {
  checkpoints = false
}
auth {
  enabled = false
}
plugin "kms" "test" {
  command = %q
  sha256  = %q
  config {
    label = %q
  }
}
`, bin.Path, bin.SHA256, label)
}

func httpsClient() *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, // self-signed API certificate under test
	}}
}

func get(t *testing.T, c *http.Client, url string) (int, []byte) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func readiness(t *testing.T, c *http.Client, base string) (int, api.Readiness) {
	t.Helper()
	code, b := get(t, c, base+"/readyz")
	var r api.Readiness
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("readyz body %s: %v", b, err)
	}
	return code, r
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(25 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out after %s waiting for %s", d, what)
}

func startServer(t *testing.T, cfgPath string) (*Server, *syncWriter) {
	t.Helper()
	logs := &syncWriter{w: &bytes.Buffer{}}
	var diags bytes.Buffer
	s, err := Start(context.Background(), Options{
		ConfigPath:  cfgPath,
		Logger:      hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Debug}),
		Diagnostics: &diags,
	})
	if err != nil {
		t.Fatalf("start: %v\n%s", err, diags.String())
	}
	t.Cleanup(func() { _ = s.Stop(context.Background()) })
	return s, logs
}

func TestServerEndToEnd(t *testing.T) {
	bin := plugintest.Build(t, testPluginPkg)
	dir := t.TempDir()
	s, _ := startServer(t, writeConfig(t, dir, testConfig(bin, "first")))
	c := httpsClient()
	base := "https://" + s.APIAddr()

	if code, b := get(t, c, base+"/healthz"); code != 200 || !strings.Contains(string(b), `"ok"`) {
		t.Fatalf("healthz %d %s", code, b)
	}
	code, r := readiness(t, c, base)
	if code != 200 || !r.Ready {
		t.Fatalf("readyz %d %+v", code, r)
	}
	var names []string
	for _, c := range r.Checks {
		names = append(names, c.Name)
	}
	if got := strings.Join(names, ","); got != "store,rng,calibration,cache,audit,plugin.kms.test" {
		t.Fatalf("readyz checks %s", got)
	}
	inst, _ := s.Plugins().Get("kms", "test")
	k := inst.KMS()
	got, err := k.GetKey(context.Background(), &kms.GetKeyRequest{ID: "x"})
	if err != nil || got.Key.Labels["label"] != "first" {
		t.Fatalf("call through the server: %+v %v", got, err)
	}
	_, m := get(t, c, base+"/metrics")
	for _, want := range []string{
		`avon_plugin_calls_total{kind="kms",method="GetKey",name="test"} 1`,
		`avon_plugin_up{kind="kms",name="test"} 1`,
		`avon_plugin_restarts_total{kind="kms",name="test"} 0`,
		`avon_plugin_call_duration_seconds_bucket{kind="kms",method="GetKey",name="test"`,
		"avon_rng_healthy 1",
		"avon_calibration_fresh 1",
		"avon_cache_up 1",
		"avon_store_up 1",
		"avon_audit_head_seq 1",
	} {
		if !strings.Contains(string(m), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	// The API certificate was generated into data_dir, 0600.
	st, err := os.Stat(filepath.Join(dir, "data", "api-tls", "api.key"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("api key file: %v %v", st, err)
	}

	// kill -9 the plugin: readiness turns false, then recovers, and a call succeeds.
	pid := inst.Status().PID
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "readyz to report the dead plugin", func() bool {
		code, r := readiness(t, c, base)
		return code == 503 && !r.Ready
	})
	waitFor(t, 15*time.Second, "readyz to recover", func() bool {
		code, r := readiness(t, c, base)
		return code == 200 && r.Ready && strings.Contains(r.Checks[len(r.Checks)-1].Detail, "restarts=1")
	})
	if _, err := k.GetKey(context.Background(), &kms.GetKeyRequest{ID: "y"}); err != nil {
		t.Fatalf("call after recovery: %v", err)
	}
	_, m = get(t, c, base+"/metrics")
	if !strings.Contains(string(m), `avon_plugin_restarts_total{kind="kms",name="test"} 1`) {
		t.Error("restart not counted in metrics")
	}
}

func TestReload(t *testing.T) {
	bin := plugintest.Build(t, testPluginPkg)
	dir := t.TempDir()
	path := writeConfig(t, dir, testConfig(bin, "first"))
	s, _ := startServer(t, path)
	inst, _ := s.Plugins().Get("kms", "test")

	// Plugin body and log level reload; the API address needs a restart.
	cfg := strings.Replace(testConfig(bin, "second"), `log_level = "debug"`, `log_level = "warn"`, 1)
	cfg = strings.Replace(cfg, `listen = "127.0.0.1:0"`, `listen = "127.0.0.1:1"`, 1)
	writeConfig(t, dir, cfg)
	rep, err := s.Reload(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(rep.Applied, ",") != "plugin kms.test config,log_level" || strings.Join(rep.NeedRestart, ",") != "api" {
		t.Fatalf("reload report %+v", rep)
	}
	got, err := inst.KMS().GetKey(context.Background(), &kms.GetKeyRequest{ID: "x"})
	if err != nil || got.Key.Labels["label"] != "second" {
		t.Fatalf("after reload: %+v %v", got, err)
	}

	// A body the plugin refuses changes nothing.
	writeConfig(t, dir, strings.Replace(testConfig(bin, "third"), "label = \"third\"", "label = \"third\"\n    size = -4", 1))
	if _, err := s.Reload(context.Background()); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("want ErrInvalidConfig, got %v", err)
	}
	got, _ = inst.KMS().GetKey(context.Background(), &kms.GetKeyRequest{ID: "x"})
	if got.Key.Labels["label"] != "second" {
		t.Fatalf("refused reload changed the plugin: %+v", got.Key)
	}
	// A syntax error changes nothing either.
	writeConfig(t, dir, "plugin {")
	if _, err := s.Reload(context.Background()); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("want ErrInvalidConfig, got %v", err)
	}
}

func TestValidateReportsEveryMistake(t *testing.T) {
	bin := plugintest.Build(t, testPluginPkg)
	dir := t.TempDir()
	cfg := fmt.Sprintf(`
plugin "kms" "test" {
  command = %q
  config {
    labell = "x"
    size   = "big"
  }
}
plugin "kms" "two" {
  command = %q
  config {
    label = "ok"
    size  = 0
  }
}
`, bin.Path, bin.Path)
	var diag bytes.Buffer
	_, err := Validate(context.Background(), Options{ConfigPath: writeConfig(t, dir, cfg), Diagnostics: &diag}, pluginhost.Options{})
	if !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("want ErrInvalidConfig, got %v", err)
	}
	out := diag.String()
	for _, want := range []string{
		"config.hcl:5:5: error: plugin \"kms\" \"test\": Unsupported argument", // schema: unknown attribute
		`Did you mean "label"?`,
		"config.hcl:6:14: error: plugin \"kms\" \"test\": Incorrect attribute value type", // schema: wrong type
		"config.hcl:9:1: error: plugin kms.two: size must be positive",                    // the plugin's own validation
	} {
		if !strings.Contains(out, want) {
			t.Errorf("diagnostics lack %q:\n%s", want, out)
		}
	}

	// A tampered binary is refused before it runs, and the other plugins
	// are still checked.
	cfg = fmt.Sprintf("plugin \"kms\" \"test\" {\n  command = %q\n  sha256 = %q\n}\nplugin \"kms\" \"two\" {\n  command = %q\n  config {\n    labell = \"x\"\n  }\n}\n",
		bin.Path, strings.Repeat("0", 64), bin.Path)
	diag.Reset()
	_, err = Validate(context.Background(), Options{ConfigPath: writeConfig(t, dir, cfg), Diagnostics: &diag}, pluginhost.Options{})
	if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(diag.String(), bin.SHA256) ||
		!strings.Contains(diag.String(), "config.hcl:1:1: error: Plugin kms.test failed to start") ||
		!strings.Contains(diag.String(), "config.hcl:8:5: error: plugin \"kms\" \"two\": Unsupported argument") {
		t.Fatalf("tampered binary: %v\n%s", err, diag.String())
	}
}
