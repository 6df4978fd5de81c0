package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/avonzt/avon/core/oauth"
	"github.com/avonzt/avon/core/oauth/login"
	"github.com/avonzt/avon/sdk/plugintest"
)

// TestUserAndLoginCommands runs the real core and the real avon binary:
// `avon user add` and `avon user list` over the admin socket, then
// `avon login` (the test plays the browser) and `avon logout`.
func TestUserAndLoginCommands(t *testing.T) {
	avon := plugintest.Build(t, "github.com/avonzt/avon/core/cmd/avon")
	kmsBin := plugintest.Build(t, "github.com/avonzt/avon/plugins/kms-soft")
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
`, filepath.Join(dir, "data"), kmsBin.Path, kmsBin.SHA256)), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(avon.Path, "server", "-config", cfg)
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	addrRE := regexp.MustCompile(`api listening: addr=(\S+)`)
	fpRE := regexp.MustCompile(`api certificate: sha256=([0-9a-f]{64})`)
	var addr, fp string
	ready := false
	sc := bufio.NewScanner(stderr)
	for deadline := time.Now().Add(60 * time.Second); !ready && time.Now().Before(deadline) && sc.Scan(); {
		if m := addrRE.FindStringSubmatch(sc.Text()); m != nil {
			addr = m[1]
		}
		if m := fpRE.FindStringSubmatch(sc.Text()); m != nil {
			fp = m[1]
		}
		ready = strings.Contains(sc.Text(), "avon core started")
	}
	if !ready || addr == "" || fp == "" {
		t.Fatalf("core did not come up (addr %q fingerprint %q)", addr, fp)
	}
	go func() {
		for sc.Scan() {
		}
	}()

	var out, errb bytes.Buffer
	if code := runIO([]string{"user", "add", "alice", "-role", "operator", "-role", "auditor", "-config", cfg},
		strings.NewReader("alice's long password\n"), &out, &errb); code != 0 || !strings.Contains(out.String(), "created") {
		t.Fatalf("user add: %d %s %s", code, out.String(), errb.String())
	}
	errb.Reset()
	if code := runIO([]string{"user", "add", "bob", "-role", "operator", "-config", cfg}, strings.NewReader("short\n"), &out, &errb); code != 1 ||
		!strings.Contains(errb.String(), "400") || !strings.Contains(errb.String(), "at least 12") {
		t.Fatalf("short password: %d %s", code, errb.String())
	}
	errb.Reset()
	if code := runIO([]string{"user", "add", "bob", "-config", cfg}, strings.NewReader("bob's long password\n"), &out, &errb); code != 2 {
		t.Fatalf("no role: %d %s", code, errb.String())
	}
	out.Reset()
	if code := run([]string{"user", "list", "-json", "-config", cfg}, &out, &errb); code != 0 {
		t.Fatalf("user list: %d %s", code, errb.String())
	}
	var list []oauth.UserInfo
	if err := json.Unmarshal(out.Bytes(), &list); err != nil || len(list) != 1 || list[0].Name != "alice" ||
		strings.Join(list[0].Roles, ",") != "operator,auditor" || list[0].TOTP {
		t.Fatalf("list: %s %v", out.String(), err)
	}

	// avon login, as a separate process with its own config dir.
	home := t.TempDir()
	issuer := "https://" + addr
	lg := exec.Command(avon.Path, "login", "-server", issuer, "-fingerprint", fp, "-no-browser", "-timeout", "1m")
	lg.Env = append(os.Environ(), "XDG_CONFIG_HOME="+home, "HOME="+home)
	lgErr, _ := lg.StderrPipe()
	var lgOut bytes.Buffer
	lg.Stdout = &lgOut
	if err := lg.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = lg.Process.Kill(); _ = lg.Wait() }()
	urlRE := regexp.MustCompile(`^\s+(https://\S+/oauth/authorize\?\S+)$`)
	var authURL string
	lsc := bufio.NewScanner(lgErr)
	for deadline := time.Now().Add(30 * time.Second); authURL == "" && time.Now().Before(deadline) && lsc.Scan(); {
		if m := urlRE.FindStringSubmatch(lsc.Text()); m != nil {
			authURL = m[1]
		}
	}
	if authURL == "" {
		t.Fatal("avon login printed no URL")
	}
	go func() { _, _ = io.Copy(io.Discard, lgErr) }()
	browser, _ := login.HTTPClient(fp, "")
	browser.Jar, _ = cookiejar.New(nil)
	resp, err := browser.Get(authURL)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindSubmatch(page)
	if m == nil {
		t.Fatalf("login page: %s", page)
	}
	resp, err = browser.PostForm(issuer+oauth.PathAuthorize, url.Values{"csrf": {string(m[1])}, "username": {"alice"}, "password": {"alice's long password"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cb, err := http.Get(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	cb.Body.Close()
	if err := lg.Wait(); err != nil || !strings.Contains(lgOut.String(), "logged in to "+issuer+" (scope: operator auditor)") {
		t.Fatalf("avon login: %v %s", err, lgOut.String())
	}
	tokPath := filepath.Join(home, "avon", "tokens.json")
	st, err := os.Stat(tokPath)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("tokens file: %v %v", st, err)
	}
	tok, err := login.Load(tokPath)
	if err != nil || tok.Fingerprint != fp || tok.Server != issuer {
		t.Fatalf("tokens: %+v %v", tok, err)
	}
	// The operator commands from elsewhere: AVON_SERVER and the login's
	// token (its pin too), or an API token.
	remote := func(env []string, args ...string) (int, string, string) {
		t.Helper()
		c := exec.Command(avon.Path, args...)
		c.Dir = t.TempDir() // no config.hcl here: nothing local is read
		c.Env = append(os.Environ(), append([]string{"XDG_CONFIG_HOME=" + home, "HOME=" + home, "AVON_SERVER=" + issuer}, env...)...)
		var o, e bytes.Buffer
		c.Stdout, c.Stderr = &o, &e
		_ = c.Run()
		return c.ProcessState.ExitCode(), o.String(), e.String()
	}
	if code, o, e := remote(nil, "agent", "list"); code != 0 || !strings.Contains(o, "ID") {
		t.Fatalf("agent list with the login: %d %s %s", code, o, e)
	}
	if code, o, e := remote(nil, "token", "create", "-group", "eng"); code != 0 || len(strings.TrimSpace(o)) < 20 {
		t.Fatalf("token create with the login (operator): %d %s %s", code, o, e)
	}
	// An operator is not an admin: no API tokens.
	if code, _, e := remote(nil, "apitoken", "create", "ci", "-scope", "admin:read"); code != 1 || !strings.Contains(e, "403") {
		t.Fatalf("apitoken create by an operator: %d %s", code, e)
	}
	out.Reset()
	errb.Reset()
	if code := run([]string{"apitoken", "create", "ci-read", "-scope", "admin:read", "-ttl", "1h", "-config", cfg}, &out, &errb); code != 0 ||
		!oauth.IsAPIToken(strings.TrimSpace(out.String())) || !strings.Contains(errb.String(), "shown once") {
		t.Fatalf("apitoken create: %d %s %s", code, out.String(), errb.String())
	}
	apiTok := strings.TrimSpace(out.String())
	pin := []string{"AVON_API_TOKEN=" + apiTok, "AVON_API_FINGERPRINT=" + fp, "XDG_CONFIG_HOME=" + t.TempDir()}
	if code, o, e := remote(pin, "agent", "list", "-o", "json"); code != 0 || !strings.HasPrefix(strings.TrimSpace(o), "[") {
		t.Fatalf("agent list with the API token: %d %s %s", code, o, e)
	}
	if code, _, e := remote(pin, "token", "create", "-group", "eng"); code != 1 || !strings.Contains(e, "403") || !strings.Contains(e, "admin:write") {
		t.Fatalf("token create with a read-only API token: %d %s", code, e)
	}
	// A wrong pin is refused before any token is sent.
	badPin := append(slices.Clone(pin[:1]), "AVON_API_FINGERPRINT="+strings.Repeat("0", 64), "XDG_CONFIG_HOME="+t.TempDir())
	if code, _, e := remote(badPin, "agent", "list"); code != 1 || !strings.Contains(e, "certificate") {
		t.Fatalf("wrong pin: %d %s", code, e)
	}
	out.Reset()
	if code := run([]string{"apitoken", "list", "-o", "json", "-config", cfg}, &out, &errb); code != 0 {
		t.Fatalf("apitoken list: %d %s", code, errb.String())
	}
	var toks []oauth.APITokenInfo
	if err := json.Unmarshal(out.Bytes(), &toks); err != nil || len(toks) != 1 || toks[0].Name != "ci-read" || toks[0].LastUsedAt.IsZero() {
		t.Fatalf("apitoken list: %s %v", out.String(), err)
	}
	out.Reset()
	if code := run([]string{"apitoken", "revoke", toks[0].ID, "-config", cfg}, &out, &errb); code != 0 || !strings.Contains(out.String(), "revoked") {
		t.Fatalf("apitoken revoke: %d %s %s", code, out.String(), errb.String())
	}
	if code, _, e := remote(pin, "agent", "list"); code != 1 || !strings.Contains(e, "401") || !strings.Contains(e, "revoked") {
		t.Fatalf("agent list with a revoked API token: %d %s", code, e)
	}
	// Not logged in to that server and no API token: a clear error.
	if code, _, e := remote([]string{"XDG_CONFIG_HOME=" + t.TempDir()}, "agent", "list"); code != 1 || !strings.Contains(e, "not logged in") {
		t.Fatalf("no credentials: %d %s", code, e)
	}

	lo := exec.Command(avon.Path, "logout")
	lo.Env = append(os.Environ(), "XDG_CONFIG_HOME="+home, "HOME="+home)
	if b, err := lo.CombinedOutput(); err != nil || !strings.Contains(string(b), "logged out") {
		t.Fatalf("avon logout: %v %s", err, b)
	}
	if _, err := os.Stat(tokPath); !os.IsNotExist(err) {
		t.Fatalf("tokens file after logout: %v", err)
	}
	// The refresh token of the logged-out session is dead at the server.
	hc, _ := login.HTTPClient(fp, "")
	if _, err := login.Refresh(t.Context(), hc, tok); err == nil {
		t.Fatal("refresh after logout succeeded")
	}
}
