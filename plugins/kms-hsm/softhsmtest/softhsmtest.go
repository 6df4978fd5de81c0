// Package softhsmtest runs kms-hsm's tests against a real SoftHSM2 token in
// a temporary directory: TestMain calls Main, which writes a softhsm2.conf
// (file object store, token directory in a temp dir) and points
// SOFTHSM2_CONF at it before any PKCS#11 module is loaded; tests call
// Require and initialize the tokens they need with InitToken.
//
// When SoftHSM2 is not installed, Require skips the test naming what is
// missing, unless AVON_REQUIRE_SERVICES=1, where it fails it. It is for
// tests only.
package softhsmtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// Candidate paths of libsofthsm2.so, most common first.
var modules = []string{
	"/usr/lib/softhsm/libsofthsm2.so",
	"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/local/lib/softhsm/libsofthsm2.so",
}

// PINs of every token InitToken makes.
const (
	PIN   = "1234"
	SOPIN = "5678"
)

var env struct {
	module  string // "" when unavailable
	util    string
	dir     string
	missing string // why SoftHSM2 cannot be used
	mu      sync.Mutex
	tokens  map[string]bool
}

// Main prepares the SoftHSM2 configuration, runs the tests and removes the
// token directory. Call it from TestMain.
func Main(m *testing.M) {
	teardown := Setup()
	code := m.Run()
	teardown()
	os.Exit(code)
}

// Setup is Main without running the tests, for a TestMain that composes it
// with another (plugintest.Run): it prepares the configuration and returns
// the function that removes the token directory.
func Setup() (teardown func()) {
	if err := setup(); err != nil {
		env.missing = err.Error()
	}
	return func() {
		if env.dir != "" {
			_ = os.RemoveAll(env.dir)
		}
	}
}

func setup() error {
	for _, p := range modules {
		if _, err := os.Stat(p); err == nil {
			env.module = p
			break
		}
	}
	util, err := exec.LookPath("softhsm2-util")
	switch {
	case env.module == "" && err != nil:
		return fmt.Errorf("SoftHSM2 is not installed (no libsofthsm2.so in %s, no softhsm2-util in PATH)", strings.Join(modules, ", "))
	case env.module == "":
		return fmt.Errorf("libsofthsm2.so not found in %s", strings.Join(modules, ", "))
	case err != nil:
		return fmt.Errorf("softhsm2-util not in PATH")
	}
	env.util = util
	dir, err := os.MkdirTemp("", "avon-softhsm-")
	if err != nil {
		return err
	}
	env.dir = dir
	tokens := filepath.Join(dir, "tokens")
	if err := os.Mkdir(tokens, 0o700); err != nil {
		return err
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	body := fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", tokens)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		return err
	}
	env.tokens = map[string]bool{}
	return os.Setenv("SOFTHSM2_CONF", conf)
}

// HSM describes the test process's SoftHSM2.
type HSM struct {
	Module    string // path of libsofthsm2.so
	Conf      string // the softhsm2.conf SOFTHSM2_CONF points at
	TokenDir  string // where the token files are
	UtilPath  string // softhsm2-util
	TestToken string // "avon-test", initialized by Require
}

// Require returns the SoftHSM2 set up by Main with the token "avon-test"
// initialized, or skips (fails under AVON_REQUIRE_SERVICES=1) when
// SoftHSM2 is missing.
func Require(t testing.TB) *HSM {
	t.Helper()
	if env.module == "" {
		why := env.missing
		if why == "" {
			why = "softhsmtest.Main (or Setup) was not called from TestMain"
		}
		if os.Getenv("AVON_REQUIRE_SERVICES") == "1" {
			t.Fatalf("SoftHSM2 unavailable and AVON_REQUIRE_SERVICES=1: %s", why)
		}
		t.Skipf("SoftHSM2 unavailable: %s", why)
	}
	h := &HSM{Module: env.module, Conf: os.Getenv("SOFTHSM2_CONF"), TokenDir: filepath.Join(env.dir, "tokens"), UtilPath: env.util, TestToken: "avon-test"}
	h.InitToken(t, h.TestToken)
	return h
}

// InitToken initializes a token with label in a free slot, with PIN and
// SOPIN, once per test process (later calls find it made).
func (h *HSM) InitToken(t testing.TB, label string) {
	t.Helper()
	env.mu.Lock()
	defer env.mu.Unlock()
	if env.tokens[label] {
		return
	}
	out, err := exec.Command(h.UtilPath, "--init-token", "--free", "--label", label, "--pin", PIN, "--so-pin", SOPIN).CombinedOutput()
	if err != nil {
		t.Fatalf("softhsm2-util --init-token %s: %v\n%s", label, err, out)
	}
	env.tokens[label] = true
}

// Env is the environment a plugin process needs to see the test's tokens.
func (h *HSM) Env() []string { return []string{"SOFTHSM2_CONF=" + h.Conf} }

// TempDir is a directory removed when Main returns ("" without SoftHSM2).
func TempDir() string { return env.dir }
