package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/avonzt/avon/sdk/plugintest"
)

func TestMain(m *testing.M) { plugintest.Main(m) }

const testPluginPkg = "github.com/avonzt/avon/core/pluginhost/testdata/testkms"

func TestUsageAndVersion(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(nil, &out, &errb); code != 2 || !strings.Contains(errb.String(), "Usage: avon") {
		t.Fatalf("no args: %d %q", code, errb.String())
	}
	errb.Reset()
	if code := run([]string{"frobnicate"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), `unknown command "frobnicate"`) {
		t.Fatalf("unknown command: %d %q", code, errb.String())
	}
	out.Reset()
	if code := run([]string{"version"}, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "avon ") {
		t.Fatalf("version: %d %q", code, out.String())
	}
}

func TestConfigValidateCommand(t *testing.T) {
	bin := plugintest.Build(t, testPluginPkg)
	dir := t.TempDir()
	good := filepath.Join(dir, "good.hcl")
	os.WriteFile(good, []byte(fmt.Sprintf("plugin \"kms\" \"t\" {\n  command = %q\n  config {\n    label = \"x\"\n  }\n}\n", bin.Path)), 0o600)
	var out, errb bytes.Buffer
	if code := run([]string{"config", "validate", "-config", good}, &out, &errb); code != 0 {
		t.Fatalf("valid config: %d\n%s", code, errb.String())
	}
	if !strings.Contains(out.String(), "configuration is valid (1 plugins checked)") {
		t.Fatalf("stdout %q", out.String())
	}
	bad := filepath.Join(dir, "bad.hcl")
	os.WriteFile(bad, []byte("log_level = \"loud\"\nplugin \"kmz\" \"t\" {\n  command = \"x\"\n}\napi {\n  listen = 5\n}\n"), 0o600)
	out.Reset()
	errb.Reset()
	if code := run([]string{"config", "validate", "-config", bad}, &out, &errb); code != 1 {
		t.Fatalf("bad config exit %d", code)
	}
	for _, want := range []string{"bad.hcl:1:13: error: Invalid log level", "bad.hcl:2:8: error: Unknown plugin kind", "bad.hcl:6:12: error:"} {
		if !strings.Contains(errb.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, errb.String())
		}
	}
}

// TestKilledCoreLeavesNoPlugin runs the real avon binary, SIGKILLs it, and
// checks that its plugin process exits on its own (parent-death watchdog).
// The test process becomes a child subreaper so the orphaned plugin is
// re-parented to it and can be waited for.
func TestKilledCoreLeavesNoPlugin(t *testing.T) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatalf("prctl(PR_SET_CHILD_SUBREAPER): %v", err)
	}
	avon := plugintest.Build(t, "github.com/avonzt/avon/core/cmd/avon")
	plug := plugintest.Build(t, testPluginPkg)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.hcl")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`
data_dir = %q
api {
  listen = "127.0.0.1:0"
}
# The test plugin holds no real keys: nothing to sign with.
calibration {
  attestations = false
}
audit {
  checkpoints = false
}
plugin "kms" "t" {
  command = %q
  sha256  = %q
  config {
    label = "x"
  }
}
`, filepath.Join(dir, "data"), plug.Path, plug.SHA256)), 0o600)

	for _, tc := range []struct {
		name string
		sig  syscall.Signal
	}{{"SIGKILL", syscall.SIGKILL}, {"SIGTERM", syscall.SIGTERM}} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(avon.Path, "server", "-config", cfg)
			stderr, _ := cmd.StderrPipe()
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer cmd.Process.Kill()
			addrRE := regexp.MustCompile(`api listening: addr=(\S+)`)
			pidRE := regexp.MustCompile(`plugin running: pid=(\d+)`)
			var addr string
			pid := 0
			sc := bufio.NewScanner(stderr)
			deadline := time.Now().Add(30 * time.Second)
			for (addr == "" || pid == 0) && time.Now().Before(deadline) && sc.Scan() {
				if m := addrRE.FindStringSubmatch(sc.Text()); m != nil {
					addr = m[1]
				}
				if m := pidRE.FindStringSubmatch(sc.Text()); m != nil {
					pid, _ = strconv.Atoi(m[1])
				}
			}
			if addr == "" || pid == 0 {
				t.Fatalf("core did not come up (addr %q, plugin pid %d)", addr, pid)
			}
			go func() {
				for sc.Scan() {
				}
			}()
			c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
			resp, err := c.Get("https://" + addr + "/readyz")
			if err != nil {
				t.Fatal(err)
			}
			var r struct{ Ready bool }
			json.NewDecoder(resp.Body).Decode(&r)
			resp.Body.Close()
			if !r.Ready {
				t.Fatal("core not ready")
			}
			if err := cmd.Process.Signal(tc.sig); err != nil {
				t.Fatal(err)
			}
			_ = cmd.Wait()
			// The plugin is now our child (subreaper) or already reaped by
			// its parent; wait for it for at most 10 seconds.
			done := make(chan error, 1)
			go func() {
				var ws unix.WaitStatus
				for {
					_, err := unix.Wait4(pid, &ws, 0, nil)
					if errors.Is(err, unix.EINTR) {
						continue
					}
					done <- err
					return
				}
			}()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatalf("plugin process %d still running 10s after the core got %s", pid, tc.sig)
			}
			if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
				t.Fatalf("plugin process %d still exists after the core got %s: %v", pid, tc.sig, err)
			}
		})
	}
}
