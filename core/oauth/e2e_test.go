package oauth_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/avonzt/avon/core/api"
	"github.com/avonzt/avon/core/audit"
	"github.com/avonzt/avon/core/cache"
	"github.com/avonzt/avon/core/cache/memcache"
	"github.com/avonzt/avon/core/cache/redis"
	"github.com/avonzt/avon/core/calibration"
	"github.com/avonzt/avon/core/calibration/calibtest"
	"github.com/avonzt/avon/core/oauth"
	"github.com/avonzt/avon/core/oauth/login"
	"github.com/avonzt/avon/core/oauth/oauthtest"
	"github.com/avonzt/avon/core/store"
	"github.com/avonzt/avon/core/store/embedded"
	"github.com/avonzt/avon/core/store/postgres"
	"github.com/avonzt/avon/internal/testsvc/pgtest"
	"github.com/avonzt/avon/internal/testsvc/redistest"
)

// testArgon2 keeps the tests fast; production hashes use DefaultArgon2.
var testArgon2 = oauth.Argon2Params{Memory: 8 << 10, Time: 1, Threads: 1}

const (
	alicePW         = "alice's long password"
	bobPW           = "bob's long password!"
	carolPW         = "carol's long password"
	consoleRedirect = "https://console.avon.example/callback"
)

// env is a core's HTTPS listener (core/api, with the calibration guard)
// serving the authorization server and three routes behind its
// middleware, over a real store and cache.
type env struct {
	srv         *oauth.Server
	api         *api.Server
	issuer      string
	fingerprint string
	keys        *oauthtest.Keys
	kv          store.KV
	cache       cache.Cache
	audit       *audit.Log
	cal         *calibration.Calibrator
	offset      atomic.Int64 // calibrated time minus local time, ns
	noTime      atomic.Bool  // make the server's clock fail (stale calibration)
	carolTOTP   []byte
}

type backend struct {
	name string
	open func(t *testing.T) (store.KV, cache.Cache)
}

func embeddedBackend(t *testing.T) (store.KV, cache.Cache) {
	kv, err := embedded.Open(bg, filepath.Join(t.TempDir(), "avon.db"))
	if err != nil {
		t.Fatal(err)
	}
	c := memcache.New(memcache.Options{})
	t.Cleanup(func() { _ = c.Close(); _ = kv.Close() })
	return kv, c
}

func serviceBackend(t *testing.T) (store.KV, cache.Cache) {
	pg := pgtest.Start(t)
	rd := redistest.Start(t)
	kv, err := postgres.Open(bg, pg.CreateDatabase(t, "oauth"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := redis.Open(bg, redis.Options{Addr: rd.Addr(), KeyPrefix: "oauth-test:"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(); _ = kv.Close() })
	return kv, c
}

var backends = []backend{{"embedded+memcache", embeddedBackend}, {"postgres+redis", serviceBackend}}

func newEnv(t *testing.T, kv store.KV, c cache.Cache, tweak func(*oauth.Config)) *env {
	t.Helper()
	e := &env{kv: kv, cache: c, audit: audit.New(kv, nil, nil)}
	cal, err := calibration.New(calibration.Config{MaxAge: time.Hour, MaxSkew: 5 * time.Second, Sources: []calibration.Source{
		calibtest.SourceFunc{SourceName: "test", F: func(context.Context) (calibration.Sample, error) {
			return calibration.Sample{Offset: time.Duration(e.offset.Load()), Uncertainty: time.Millisecond}, nil
		}}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := cal.Calibrate(bg); err != nil {
		t.Fatal(err)
	}
	e.cal = cal
	cert, err := api.LoadOrCreateSelfSigned(t.TempDir(), []string{"localhost", "127.0.0.1"}, rand.Reader, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	fp := sha256.Sum256(cert.Certificate[0])
	e.fingerprint = hex.EncodeToString(fp[:])
	a, err := api.New(api.Options{Listen: "127.0.0.1:0", TLS: &tls.Config{Certificates: []tls.Certificate{cert}},
		Middleware: calibration.NewGuard(cal).Middleware})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(bg, 5*time.Second)
		defer cancel()
		_ = a.Shutdown(ctx)
	})
	e.api, e.issuer = a, "https://"+a.Addr()
	e.keys = newKeys(t, oauth.AlgMLDSA65)
	params := testArgon2
	cfg := oauth.Config{Issuer: e.issuer, MaxSkew: 5 * time.Second, Argon2: &params,
		Clients:   []oauth.Client{oauth.CLIClient, {ID: "console", RedirectURIs: []string{consoleRedirect}}},
		PerUser:   oauth.Throttle{Attempts: 5, Window: time.Minute},
		PerSource: oauth.Throttle{Attempts: 1000, Window: time.Minute}}
	if tweak != nil {
		tweak(&cfg)
	}
	e.srv, err = oauth.New(cfg, oauth.Deps{KV: kv, Cache: c, Rand: rand.Reader, Now: func() (time.Time, error) {
		if e.noTime.Load() {
			return time.Time{}, errors.New("clock calibration is 2m0s old (max age 30s)")
		}
		return cal.Now()
	}, Signer: e.keys, Keys: e.keys, Audit: e.audit})
	if err != nil {
		t.Fatal(err)
	}
	e.srv.Mount(a.Handle)
	whoami := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, ok := oauth.PrincipalFrom(r.Context())
		if !ok {
			http.Error(w, "no principal", http.StatusInternalServerError)
			return
		}
		_ = json.NewEncoder(w).Encode(p)
	})
	a.Handle("GET /v1/whoami", e.srv.Middleware(oauth.RoleAuditor)(whoami))
	a.Handle("POST /v1/sessions/kill", e.srv.Middleware(oauth.RoleOperator)(whoami))
	a.Handle("POST /v1/users", e.srv.Middleware(oauth.RoleAdmin)(whoami))
	u := e.srv.Users()
	for _, x := range []struct {
		name, pw string
		roles    []string
	}{{"alice", alicePW, []string{"admin"}}, {"bob", bobPW, []string{"auditor"}}, {"carol", carolPW, []string{"operator", "auditor"}}} {
		if _, err := u.Add(bg, x.name, x.pw, x.roles, "test"); err != nil {
			t.Fatal(err)
		}
	}
	if e.carolTOTP, err = u.EnableTOTP(bg, "carol"); err != nil {
		t.Fatal(err)
	}
	return e
}

// shift moves calibrated time by d (a new calibration round).
func (e *env) shift(t *testing.T, d time.Duration) {
	t.Helper()
	e.offset.Add(int64(d))
	if err := e.cal.Calibrate(bg); err != nil {
		t.Fatal(err)
	}
}

func (e *env) now(t *testing.T) time.Time {
	t.Helper()
	n, err := e.cal.Now()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// browser is an HTTPS client pinned to the API certificate, with cookies,
// that does not follow redirects.
func (e *env) browser(t *testing.T) *http.Client {
	t.Helper()
	c, err := login.HTTPClient(e.fingerprint, "")
	if err != nil {
		t.Fatal(err)
	}
	c.Jar, _ = cookiejar.New(nil)
	return c
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([A-Za-z0-9_-]+)"`)

func readBody(t *testing.T, r *http.Response) string {
	t.Helper()
	defer r.Body.Close()
	b, err := io.ReadAll(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// loginAt opens the authorization URL in b and submits the form; it
// returns the response to the submission.
func (e *env) loginAt(t *testing.T, b *http.Client, authURL, user, pw, code string) *http.Response {
	t.Helper()
	resp, err := b.Get(authURL)
	if err != nil {
		t.Fatal(err)
	}
	page := readBody(t, resp)
	m := csrfRE.FindStringSubmatch(page)
	if resp.StatusCode != http.StatusOK || m == nil {
		t.Fatalf("authorize page: %s\n%s", resp.Status, page)
	}
	return e.submit(t, b, m[1], user, pw, code)
}

func (e *env) submit(t *testing.T, b *http.Client, csrf, user, pw, code string) *http.Response {
	t.Helper()
	form := url.Values{"csrf": {csrf}, "username": {user}, "password": {pw}}
	if code != "" {
		form.Set("code", code)
	}
	resp, err := b.PostForm(e.issuer+oauth.PathAuthorize, form)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// authorizeURL builds an authorization request.
func (e *env) authorizeURL(q map[string]string) string {
	v := url.Values{"response_type": {"code"}, "client_id": {oauth.CLIClientID}, "redirect_uri": {"http://127.0.0.1:5555/callback"},
		"code_challenge_method": {"S256"}, "state": {"st-1"}}
	for k, x := range q {
		if x == "" {
			v.Del(k)
		} else {
			v.Set(k, x)
		}
	}
	return e.issuer + oauth.PathAuthorize + "?" + v.Encode()
}

// code runs the browser part for a request and returns the code.
func (e *env) code(t *testing.T, q map[string]string, user, pw, totp string) string {
	t.Helper()
	resp := e.loginAt(t, e.browser(t), e.authorizeURL(q), user, pw, totp)
	body := readBody(t, resp)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login: %s\n%s", resp.Status, body)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || loc.Query().Get("code") == "" || loc.Query().Get("iss") != e.issuer {
		t.Fatalf("redirect %q", resp.Header.Get("Location"))
	}
	return loc.Query().Get("code")
}

// tokenCall posts form to the token (or another) endpoint.
func (e *env) post(t *testing.T, path string, form url.Values) (int, map[string]any) {
	t.Helper()
	resp, err := e.browser(t).PostForm(e.issuer+path, form)
	if err != nil {
		t.Fatal(err)
	}
	body := readBody(t, resp)
	out := map[string]any{}
	if body != "" {
		_ = json.Unmarshal([]byte(body), &out)
	}
	return resp.StatusCode, out
}

// call makes an API request with a bearer token.
func (e *env) call(t *testing.T, method, path, token string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(method, e.issuer+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := e.browser(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp, readBody(t, resp)
}

func (e *env) totp(t *testing.T) string {
	return oauth.TOTPCode(e.carolTOTP, oauth.TOTPStepAt(e.now(t)))
}

// auditActions returns "action/outcome" of every audit record.
func (e *env) auditActions(t *testing.T) []string {
	t.Helper()
	recs, err := e.audit.List(bg, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range recs {
		out = append(out, r.Action+"/"+r.Outcome)
	}
	return out
}

func TestEndToEnd(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			kv, c := b.open(t)
			e := newEnv(t, kv, c, nil)
			t.Run("cli login, refresh, reuse, logout", e.testCLIFlow)
			t.Run("pkce and code refusals", e.testPKCE)
			t.Run("scope and expiry", e.testScopeExpiry)
			t.Run("totp over http", e.testTOTP)
			t.Run("login form refusals", e.testForm)
			t.Run("metadata and jwks", e.testDiscovery)
			t.Run("revocation of an access token", e.testRevokeAccess)
			t.Run("tidy", e.testTidy) // last: it moves time 62 days on
			acts := e.auditActions(t)
			for _, want := range []string{"oauth.login/success", "oauth.login/failure", "oauth.token.issue/success",
				"oauth.token.issue/failure", "oauth.refresh.reuse/denied", "oauth.revoke/success"} {
				if !slices.Contains(acts, want) {
					t.Errorf("no %s audit record among %v", want, acts)
				}
			}
			rep, err := audit.Verify(bg, kv, audit.VerifyOptions{})
			if err != nil || !rep.OK() {
				t.Fatalf("audit chain: %+v %v", rep, err)
			}
		})
	}
}

// testCLIFlow drives the CLI's login code (core/oauth/login) against the
// listener, with the test as the browser.
func (e *env) testCLIFlow(t *testing.T) {
	hc, err := login.HTTPClient(e.fingerprint, "")
	if err != nil {
		t.Fatal(err)
	}
	shown := make(chan string, 1)
	type result struct {
		tok login.Tokens
		err error
	}
	done := make(chan result, 1)
	go func() {
		tok, err := login.Login(bg, login.Options{Server: e.issuer, HTTP: hc, Timeout: 30 * time.Second,
			Show: func(u string) { shown <- u }})
		done <- result{tok, err}
	}()
	var authURL string
	select {
	case authURL = <-shown:
	case r := <-done:
		t.Fatalf("login ended before showing a URL: %v", r.err)
	case <-time.After(30 * time.Second):
		t.Fatal("no authorization URL")
	}
	resp := e.loginAt(t, e.browser(t), authURL, "alice", alicePW, "")
	readBody(t, resp)
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "http://127.0.0.1:") {
		t.Fatalf("login: %s -> %q", resp.Status, resp.Header.Get("Location"))
	}
	cb, err := http.Get(resp.Header.Get("Location")) // the browser follows to the CLI's listener
	if err != nil {
		t.Fatal(err)
	}
	if page := readBody(t, cb); cb.StatusCode != http.StatusOK || !strings.Contains(page, "Logged in") {
		t.Fatalf("callback: %s %s", cb.Status, page)
	}
	var r result
	select {
	case r = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("login did not finish")
	}
	if r.err != nil || r.tok.AccessToken == "" || !strings.HasPrefix(r.tok.RefreshToken, oauth.RefreshPrefix) || r.tok.Scope != "admin operator auditor" {
		t.Fatalf("login: %+v %v", r.tok, r.err)
	}
	tok := r.tok
	tok.Fingerprint = e.fingerprint
	path := filepath.Join(t.TempDir(), "avon", "tokens.json")
	if err := login.Save(path, tok); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("tokens file mode: %v %v", st.Mode(), err)
	}
	resp, body := e.call(t, "GET", "/v1/whoami", tok.AccessToken)
	var p oauth.Principal
	if resp.StatusCode != http.StatusOK || json.Unmarshal([]byte(body), &p) != nil || p.User != "alice" || p.Scope != "admin operator auditor" || p.ClientID != oauth.CLIClientID {
		t.Fatalf("whoami: %s %s", resp.Status, body)
	}
	// Access refreshes a token about to expire and saves the rotation.
	tok.ExpiresAt = time.Now().Add(10 * time.Second)
	if err := login.Save(path, tok); err != nil {
		t.Fatal(err)
	}
	fresh, err := login.Access(bg, path, time.Now())
	if err != nil || fresh.RefreshToken == tok.RefreshToken || fresh.AccessToken == tok.AccessToken {
		t.Fatalf("refresh: %v", err)
	}
	if saved, _ := login.Load(path); saved.RefreshToken != fresh.RefreshToken {
		t.Fatal("the rotated refresh token was not saved")
	}
	if resp, body := e.call(t, "GET", "/v1/whoami", fresh.AccessToken); resp.StatusCode != http.StatusOK {
		t.Fatalf("refreshed token: %s %s", resp.Status, body)
	}
	// The spent refresh token presented again: the whole grant goes.
	_, err = login.Refresh(bg, hc, tok)
	if !errors.Is(err, login.ErrNotLoggedIn) || !strings.Contains(err.Error(), "reused") {
		t.Fatalf("reuse: %v", err)
	}
	for _, at := range []string{tok.AccessToken, fresh.AccessToken} {
		resp, body := e.call(t, "GET", "/v1/whoami", at)
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "revoked") ||
			!strings.Contains(resp.Header.Get("WWW-Authenticate"), `error="invalid_token"`) {
			t.Fatalf("access token of a revoked grant: %s %s", resp.Status, body)
		}
	}
	if _, err := login.Refresh(bg, hc, fresh); !errors.Is(err, login.ErrNotLoggedIn) {
		t.Fatalf("the newest refresh token of a revoked grant: %v", err)
	}
	// Logout revokes at the server and removes the file.
	second := e.cliTokens(t, "bob", bobPW)
	second.Fingerprint = e.fingerprint
	if err := login.Save(path, second); err != nil {
		t.Fatal(err)
	}
	if err := login.Logout(bg, path); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("tokens file after logout: %v", err)
	}
	if resp, _ := e.call(t, "GET", "/v1/whoami", second.AccessToken); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("access token after logout: %s", resp.Status)
	}
}

// cliTokens logs user in through the code flow by hand.
func (e *env) cliTokens(t *testing.T, user, pw string) login.Tokens {
	t.Helper()
	verifier := strings.Repeat("v", 43)
	code := e.code(t, map[string]string{"code_challenge": oauth.S256(verifier)}, user, pw, "")
	st, tr := e.post(t, oauth.PathToken, url.Values{"grant_type": {"authorization_code"}, "code": {code}, "client_id": {oauth.CLIClientID},
		"redirect_uri": {"http://127.0.0.1:5555/callback"}, "code_verifier": {verifier}})
	if st != http.StatusOK {
		t.Fatalf("token: %d %v", st, tr)
	}
	return login.Tokens{Server: e.issuer, AccessToken: tr["access_token"].(string), RefreshToken: tr["refresh_token"].(string), Scope: tr["scope"].(string)}
}

func (e *env) testPKCE(t *testing.T) {
	verifier := "0123456789abcdefghijklmnopqrstuvwxyzABCDEFG"
	challenge := oauth.S256(verifier)
	redirect := "http://127.0.0.1:5555/callback"
	exchange := func(code, client, redirect, verifier string) (int, map[string]any) {
		return e.post(t, oauth.PathToken, url.Values{"grant_type": {"authorization_code"}, "code": {code}, "client_id": {client},
			"redirect_uri": {redirect}, "code_verifier": {verifier}})
	}
	// Requests refused before any login: back to the client with an
	// error (a valid client and redirect), or shown to the user.
	for _, tc := range []struct {
		name  string
		q     map[string]string
		error string // in the redirect; "" = an error page, no redirect
	}{
		{"plain method", map[string]string{"code_challenge": verifier, "code_challenge_method": "plain"}, "invalid_request"},
		{"no method", map[string]string{"code_challenge": challenge, "code_challenge_method": ""}, "invalid_request"},
		{"no challenge", map[string]string{"code_challenge": ""}, "invalid_request"},
		{"short challenge", map[string]string{"code_challenge": "abc"}, "invalid_request"},
		{"token response type", map[string]string{"code_challenge": challenge, "response_type": "token"}, "unsupported_response_type"},
		{"unknown scope", map[string]string{"code_challenge": challenge, "scope": "root"}, "invalid_scope"},
		{"unregistered redirect path", map[string]string{"code_challenge": challenge, "redirect_uri": "http://127.0.0.1:5555/other"}, ""},
		{"non-loopback http redirect", map[string]string{"code_challenge": challenge, "redirect_uri": "http://evil.example:5555/callback"}, ""},
		{"localhost is not loopback by name", map[string]string{"code_challenge": challenge, "redirect_uri": "http://localhost:5555/callback"}, ""},
		{"unknown client", map[string]string{"code_challenge": challenge, "client_id": "evil"}, ""},
		{"repeated parameter", nil, ""},
	} {
		u := e.authorizeURL(tc.q)
		if tc.q == nil {
			u += "&state=again"
		}
		resp, err := e.browser(t).Get(u)
		if err != nil {
			t.Fatal(err)
		}
		body := readBody(t, resp)
		if tc.error == "" {
			if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" || strings.Contains(body, `name="csrf"`) {
				t.Errorf("%s: %s %q", tc.name, resp.Status, resp.Header.Get("Location"))
			}
			continue
		}
		loc, _ := url.Parse(resp.Header.Get("Location"))
		if resp.StatusCode != http.StatusSeeOther || loc == nil || loc.Query().Get("error") != tc.error || loc.Query().Get("state") != "st-1" {
			t.Errorf("%s: %s %q", tc.name, resp.Status, resp.Header.Get("Location"))
		}
	}
	// [::1] with any port is a loopback redirect too.
	if resp, _ := e.browser(t).Get(e.authorizeURL(map[string]string{"code_challenge": challenge, "redirect_uri": "http://[::1]:61000/callback"})); resp.StatusCode != http.StatusOK {
		t.Errorf("[::1] redirect: %s", resp.Status)
	}

	// Codes refused at the token endpoint; each is spent by the attempt.
	for _, tc := range []struct {
		name                       string
		client, redirect, verifier string
	}{
		{"wrong verifier", oauth.CLIClientID, redirect, strings.Repeat("w", 43)},
		{"another client", "console", redirect, verifier},
		{"another redirect", oauth.CLIClientID, "http://127.0.0.1:5556/callback", verifier},
	} {
		code := e.code(t, map[string]string{"code_challenge": challenge}, "bob", bobPW, "")
		st, body := exchange(code, tc.client, tc.redirect, tc.verifier)
		if st != http.StatusBadRequest || body["error"] != "invalid_grant" {
			t.Errorf("%s: %d %v", tc.name, st, body)
		}
		st, body = exchange(code, oauth.CLIClientID, redirect, verifier)
		if st != http.StatusBadRequest || body["error"] != "invalid_grant" {
			t.Errorf("%s: the right exchange after a wrong one: %d %v", tc.name, st, body)
		}
	}
	// A verifier that is not one (RFC 7636 form) is a malformed request.
	code := e.code(t, map[string]string{"code_challenge": challenge}, "bob", bobPW, "")
	if st, body := exchange(code, oauth.CLIClientID, redirect, "short"); st != http.StatusBadRequest || body["error"] != "invalid_request" {
		t.Errorf("short verifier: %d %v", st, body)
	}
	// A good exchange works once.
	code = e.code(t, map[string]string{"code_challenge": challenge}, "bob", bobPW, "")
	if st, body := exchange(code, oauth.CLIClientID, redirect, verifier); st != http.StatusOK || body["token_type"] != "Bearer" ||
		body["scope"] != "auditor" || body["expires_in"].(float64) != 300 {
		t.Fatalf("exchange: %d %v", st, body)
	}
	if st, body := exchange(code, oauth.CLIClientID, redirect, verifier); st != http.StatusBadRequest || body["error"] != "invalid_grant" {
		t.Fatalf("reused code: %d %v", st, body)
	}
	// The console (exact redirect) gets its own codes.
	code = e.code(t, map[string]string{"code_challenge": challenge, "client_id": "console", "redirect_uri": consoleRedirect}, "bob", bobPW, "")
	if st, body := exchange(code, oauth.CLIClientID, consoleRedirect, verifier); st != http.StatusBadRequest || body["error"] != "invalid_grant" {
		t.Errorf("console code at the CLI client: %d %v", st, body)
	}
	// Token endpoint form rules.
	for _, tc := range []struct {
		name string
		form url.Values
		want string
	}{
		{"no grant type", url.Values{"client_id": {oauth.CLIClientID}}, "invalid_request"},
		{"password grant", url.Values{"client_id": {oauth.CLIClientID}, "grant_type": {"password"}}, "unsupported_grant_type"},
		{"no client", url.Values{"grant_type": {"authorization_code"}}, "invalid_client"},
		{"refresh without token", url.Values{"client_id": {oauth.CLIClientID}, "grant_type": {"refresh_token"}}, "invalid_request"},
		{"garbage refresh token", url.Values{"client_id": {oauth.CLIClientID}, "grant_type": {"refresh_token"}, "refresh_token": {"avon-rt-v1.x"}}, "invalid_grant"},
	} {
		if _, body := e.post(t, oauth.PathToken, tc.form); body["error"] != tc.want {
			t.Errorf("%s: %v", tc.name, body)
		}
	}
	req, _ := http.NewRequest("POST", e.issuer+oauth.PathToken, strings.NewReader("grant_type=refresh_token&grant_type=authorization_code&client_id=avon-cli"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := e.browser(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if body := readBody(t, resp); resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "more than once") {
		t.Errorf("repeated parameter: %s %s", resp.Status, body)
	}
}

func (e *env) testScopeExpiry(t *testing.T) {
	bob := e.cliTokens(t, "bob", bobPW)
	if resp, _ := e.call(t, "GET", "/v1/whoami", bob.AccessToken); resp.StatusCode != http.StatusOK {
		t.Fatalf("auditor on an auditor route: %s", resp.Status)
	}
	resp, body := e.call(t, "POST", "/v1/sessions/kill", bob.AccessToken)
	var pr oauth.Problem
	if resp.StatusCode != http.StatusForbidden || json.Unmarshal([]byte(body), &pr) != nil || pr.Scope != "operator" ||
		pr.Type != oauth.ProblemForbidden || !strings.Contains(pr.Detail, `"operator"`) ||
		resp.Header.Get("Content-Type") != "application/problem+json" ||
		!strings.Contains(resp.Header.Get("WWW-Authenticate"), `error="insufficient_scope", scope="operator"`) {
		t.Fatalf("auditor on an operator route: %s %s %q", resp.Status, body, resp.Header.Get("WWW-Authenticate"))
	}
	// Check, for routers that map errors themselves.
	req, _ := http.NewRequest("POST", "/v1/sessions/kill", nil)
	req.Header.Set("Authorization", "Bearer "+bob.AccessToken)
	var ce *oauth.ChallengeError
	if _, err := e.srv.Check(req, oauth.RoleOperator); !errors.As(err, &ce) || ce.Status != http.StatusForbidden ||
		!errors.Is(err, oauth.ErrInsufficientScope) || !strings.Contains(ce.WWWAuthenticate(), "insufficient_scope") {
		t.Fatalf("check, wrong scope: %v", err)
	}
	req.Header.Set("Authorization", "Bearer "+bob.AccessToken+"x")
	if _, err := e.srv.Check(req, oauth.RoleAuditor); !errors.As(err, &ce) || ce.Status != http.StatusUnauthorized || !errors.Is(err, oauth.ErrMalformedToken) {
		t.Fatalf("check, bad token: %v", err)
	}
	req.Header.Set("Authorization", "Bearer "+bob.AccessToken)
	if p, err := e.srv.Check(req, oauth.RoleAuditor); err != nil || p.User != "bob" || p.Actor() != "user:bob" {
		t.Fatalf("check: %+v %v", p, err)
	}
	alice := e.cliTokens(t, "alice", alicePW)
	for _, p := range []string{"/v1/whoami", "/v1/sessions/kill", "/v1/users"} {
		m := "POST"
		if p == "/v1/whoami" {
			m = "GET"
		}
		if resp, _ := e.call(t, m, p, alice.AccessToken); resp.StatusCode != http.StatusOK {
			t.Errorf("admin on %s: %s", p, resp.Status)
		}
	}
	// A narrower scope on refresh; never a wider one.
	st, tr := e.post(t, oauth.PathToken, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {alice.RefreshToken},
		"client_id": {oauth.CLIClientID}, "scope": {"auditor"}})
	if st != http.StatusOK || tr["scope"] != "auditor" {
		t.Fatalf("narrowing refresh: %d %v", st, tr)
	}
	if resp, _ := e.call(t, "POST", "/v1/users", tr["access_token"].(string)); resp.StatusCode != http.StatusForbidden {
		t.Errorf("narrowed token on an admin route: %s", resp.Status)
	}
	if st, tr := e.post(t, oauth.PathToken, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {bob.RefreshToken},
		"client_id": {oauth.CLIClientID}, "scope": {"admin"}}); st != http.StatusBadRequest || tr["error"] != "invalid_scope" {
		t.Errorf("widening refresh: %d %v", st, tr)
	}
	// No token, a malformed header.
	resp, body = e.call(t, "GET", "/v1/whoami", "")
	if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer ") ||
		strings.Contains(resp.Header.Get("WWW-Authenticate"), "error=") || !strings.Contains(body, oauth.ProblemUnauthorized) {
		t.Fatalf("no token: %s %q %s", resp.Status, resp.Header.Get("WWW-Authenticate"), body)
	}
	req, _ = http.NewRequest("GET", e.issuer+"/v1/whoami", nil)
	req.Header.Set("Authorization", "Basic "+bob.AccessToken)
	if r, err := e.browser(t).Do(req); err != nil || r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("basic scheme: %v %v", r, err)
	}
	// Expired: calibrated time moves past exp.
	e.shift(t, 5*time.Minute+time.Second)
	resp, body = e.call(t, "GET", "/v1/whoami", bob.AccessToken)
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "expired") ||
		!strings.Contains(resp.Header.Get("WWW-Authenticate"), `error="invalid_token"`) {
		t.Fatalf("expired token: %s %s", resp.Status, body)
	}
	e.shift(t, -(5*time.Minute + time.Second))
	if resp, _ := e.call(t, "GET", "/v1/whoami", bob.AccessToken); resp.StatusCode != http.StatusOK {
		t.Fatalf("back in time: %s", resp.Status)
	}
}

func (e *env) testTOTP(t *testing.T) {
	// Carol has TOTP: her password alone is refused.
	b := e.browser(t)
	resp := e.loginAt(t, b, e.authorizeURL(map[string]string{"code_challenge": oauth.S256(strings.Repeat("c", 43))}), "carol", carolPW, "")
	if body := readBody(t, resp); resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "Invalid user name, password or code") {
		t.Fatalf("no code: %s", resp.Status)
	}
	code := e.totp(t)
	e.code(t, map[string]string{"code_challenge": oauth.S256(strings.Repeat("c", 43)), "scope": "operator"}, "carol", carolPW, code)
	// The same code again: refused, and recorded as a replay.
	resp = e.loginAt(t, e.browser(t), e.authorizeURL(map[string]string{"code_challenge": oauth.S256(strings.Repeat("c", 43))}), "carol", carolPW, code)
	readBody(t, resp)
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("replayed TOTP code: %s", resp.Status)
	}
	recs, _ := e.audit.List(bg, 0, 1000)
	replay := false
	for _, r := range recs {
		replay = replay || (r.Action == "oauth.login" && r.Actor == "user:carol" && strings.Contains(r.Reason, "already used"))
	}
	if !replay {
		t.Fatal("no audit record of the replayed code")
	}
}

func (e *env) testForm(t *testing.T) {
	// The form's token must come back with the cookie of the same browser.
	b1, b2 := e.browser(t), e.browser(t)
	resp, _ := b1.Get(e.authorizeURL(map[string]string{"code_challenge": oauth.S256(strings.Repeat("f", 43))}))
	m := csrfRE.FindStringSubmatch(readBody(t, resp))
	if m == nil {
		t.Fatal("no form")
	}
	if r := e.submit(t, b2, m[1], "bob", bobPW, ""); r.StatusCode != http.StatusForbidden {
		t.Fatalf("another browser's form: %s", r.Status)
	}
	if r := e.submit(t, b1, "forged", "bob", bobPW, ""); r.StatusCode != http.StatusForbidden {
		t.Fatalf("forged csrf: %s", r.Status)
	}
	r := e.submit(t, b1, m[1], "bob", bobPW, "")
	readBody(t, r)
	if r.StatusCode != http.StatusSeeOther {
		t.Fatalf("own form: %s", r.Status)
	}
	// A form is good once.
	if r := e.submit(t, b1, m[1], "bob", bobPW, ""); r.StatusCode != http.StatusForbidden && r.StatusCode != http.StatusBadRequest {
		t.Fatalf("form reused: %s", r.Status)
	}
	// Throttling per user name: 5 attempts a minute in this test's config.
	b := e.browser(t)
	var last *http.Response
	for i := range 6 {
		last = e.loginAt(t, b, e.authorizeURL(map[string]string{"code_challenge": oauth.S256(strings.Repeat("f", 43))}), "dave", "wrong password "+fmt.Sprint(i), "")
		readBody(t, last)
	}
	if last.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("6th attempt for one name: %s", last.Status)
	}
	// An unknown user and a wrong password read alike.
	r1 := e.loginAt(t, b, e.authorizeURL(map[string]string{"code_challenge": oauth.S256(strings.Repeat("f", 43))}), "nobody", "whatever password", "")
	r2 := e.loginAt(t, b, e.authorizeURL(map[string]string{"code_challenge": oauth.S256(strings.Repeat("f", 43))}), "bob", "whatever password", "")
	p1, p2 := csrfRE.ReplaceAllString(readBody(t, r1), ""), csrfRE.ReplaceAllString(readBody(t, r2), "")
	p1 = strings.Replace(p1, `value="nobody"`, `value="bob"`, 1)
	if r1.StatusCode != r2.StatusCode || p1 != p2 {
		t.Fatalf("unknown user and wrong password differ: %s / %s", r1.Status, r2.Status)
	}
}

func (e *env) testDiscovery(t *testing.T) {
	resp, err := e.browser(t).Get(e.issuer + oauth.PathMetadata)
	if err != nil {
		t.Fatal(err)
	}
	var md oauth.Metadata
	if err := json.Unmarshal([]byte(readBody(t, resp)), &md); err != nil || md.Issuer != e.issuer ||
		md.TokenEndpoint != e.issuer+oauth.PathToken || !slices.Equal(md.CodeChallengeMethodsSupported, []string{"S256"}) {
		t.Fatalf("metadata %+v %v", md, err)
	}
	resp, err = e.browser(t).Get(md.JWKSURI)
	if err != nil {
		t.Fatal(err)
	}
	var set struct {
		Keys []oauth.JWK `json:"keys"`
	}
	if err := json.Unmarshal([]byte(readBody(t, resp)), &set); err != nil || len(set.Keys) != 1 || set.Keys[0].Kty != "AKP" ||
		set.Keys[0].Alg != oauth.AlgMLDSA65 || set.Keys[0].Kid != e.keys.Current().ID {
		t.Fatalf("jwks %+v %v", set, err)
	}
	// An access token verifies with nothing but the published JWKS.
	tok := e.cliTokens(t, "bob", bobPW)
	pub, _ := enc.DecodeString(set.Keys[0].Pub)
	ks := staticKeys{oauth.Key{ID: set.Keys[0].Kid, Algorithm: set.Keys[0].Alg, Public: pub}}
	if _, err := oauth.NewVerifier(ks, md.Issuer, oauth.DefaultAudience, 5*time.Second).Verify(tok.AccessToken, e.now(t)); err != nil {
		t.Fatalf("verify with the JWKS: %v", err)
	}
}

type staticKeys []oauth.Key

func (s staticKeys) Lookup(kid string) (oauth.Key, bool) {
	for _, k := range s {
		if k.ID == kid {
			return k, true
		}
	}
	return oauth.Key{}, false
}
func (s staticKeys) Keys() []oauth.Key { return s }

func (e *env) testRevokeAccess(t *testing.T) {
	tok := e.cliTokens(t, "bob", bobPW)
	// Unknown and malformed tokens are not errors (RFC 7009 section 2.2).
	for _, x := range []string{"nonsense", oauth.RefreshPrefix + strings.Repeat("A", 43), tok.AccessToken[:len(tok.AccessToken)-4] + "AAAA"} {
		if st, body := e.post(t, oauth.PathRevoke, url.Values{"token": {x}, "client_id": {oauth.CLIClientID}}); st != http.StatusOK {
			t.Fatalf("revoke %.20q: %d %v", x, st, body)
		}
	}
	if resp, _ := e.call(t, "GET", "/v1/whoami", tok.AccessToken); resp.StatusCode != http.StatusOK {
		t.Fatalf("a forged token revoked the grant: %s", resp.Status)
	}
	// Another client cannot revoke this one's grant.
	if st, _ := e.post(t, oauth.PathRevoke, url.Values{"token": {tok.AccessToken}, "client_id": {"console"}}); st != http.StatusOK {
		t.Fatalf("revoke by another client: %d", st)
	}
	if resp, _ := e.call(t, "GET", "/v1/whoami", tok.AccessToken); resp.StatusCode != http.StatusOK {
		t.Fatalf("another client revoked the grant: %s", resp.Status)
	}
	if st, body := e.post(t, oauth.PathRevoke, url.Values{"token": {tok.AccessToken}, "client_id": {oauth.CLIClientID}, "token_type_hint": {"access_token"}}); st != http.StatusOK {
		t.Fatalf("revoke: %d %v", st, body)
	}
	if resp, body := e.call(t, "GET", "/v1/whoami", tok.AccessToken); resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "revoked") {
		t.Fatalf("revoked access token: %s %s", resp.Status, body)
	}
	if st, body := e.post(t, oauth.PathToken, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok.RefreshToken},
		"client_id": {oauth.CLIClientID}}); st != http.StatusBadRequest || body["error"] != "invalid_grant" {
		t.Fatalf("refresh token of a revoked grant: %d %v", st, body)
	}
}

// TestFailClosed: without trusted time nothing is verified or issued, and
// failed logins from one address lock that address out.
func TestFailClosed(t *testing.T) {
	kv, c := embeddedBackend(t)
	e := newEnv(t, kv, c, func(cfg *oauth.Config) { cfg.PerSource = oauth.Throttle{Attempts: 3, Window: time.Minute} })
	tok := e.cliTokens(t, "bob", bobPW)
	e.noTime.Store(true)
	resp, body := e.call(t, "GET", "/v1/whoami", tok.AccessToken)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, oauth.ProblemUnavailable) || !strings.Contains(body, "no trusted time") {
		t.Fatalf("no time, whoami: %s %s", resp.Status, body)
	}
	st, tr := e.post(t, oauth.PathToken, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok.RefreshToken}, "client_id": {oauth.CLIClientID}})
	if st != http.StatusServiceUnavailable || tr["error"] != "temporarily_unavailable" {
		t.Fatalf("no time, refresh: %d %v", st, tr)
	}
	e.noTime.Store(false)
	// Nothing was spent: the refresh token still works.
	if st, tr := e.post(t, oauth.PathToken, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok.RefreshToken},
		"client_id": {oauth.CLIClientID}}); st != http.StatusOK {
		t.Fatalf("refresh after time came back: %d %v", st, tr)
	}
	b := e.browser(t)
	for i, name := range []string{"x1", "x2", "x3"} {
		r := e.loginAt(t, b, e.authorizeURL(map[string]string{"code_challenge": oauth.S256(strings.Repeat("s", 43))}), name, "wrong password", "")
		readBody(t, r)
		if r.StatusCode != http.StatusUnauthorized {
			t.Fatalf("failure %d: %s", i, r.Status)
		}
	}
	r := e.loginAt(t, b, e.authorizeURL(map[string]string{"code_challenge": oauth.S256(strings.Repeat("s", 43))}), "bob", bobPW, "")
	if body := readBody(t, r); r.StatusCode != http.StatusTooManyRequests || !strings.Contains(body, "Too many failed logins") {
		t.Fatalf("right password from a locked address: %s", r.Status)
	}
}

// testTidy: a pass deletes nothing that still matters; once grants,
// refresh records and revoked or expired API tokens are past their
// retention, it deletes exactly those, in bounded passes.
func (e *env) testTidy(t *testing.T) {
	count := func(prefix string) int {
		t.Helper()
		es, err := e.kv.List(bg, store.ListOptions{Prefix: prefix, Limit: store.MaxLimit})
		if err != nil {
			t.Fatal(err)
		}
		return len(es)
	}
	tok := e.cliTokens(t, "bob", bobPW)
	tokens := e.srv.APITokens()
	_, short, err := tokens.Create(bg, "short", []string{oauth.ScopeAdminRead}, time.Hour, "test")
	if err != nil {
		t.Fatal(err)
	}
	_, revoked, err := tokens.Create(bg, "revoked", []string{oauth.ScopeAdminRead}, 0, "test")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tokens.Revoke(bg, revoked.ID, "test"); err != nil {
		t.Fatal(err)
	}
	longTok, long, err := tokens.Create(bg, "long", []string{oauth.ScopeAdminRead}, oauth.MaxAPITokenTTL, "test")
	if err != nil {
		t.Fatal(err)
	}
	grants, refresh, apiTokens := count("oauth/grant/"), count("oauth/refresh/"), count("oauth/apitoken/")
	if grants == 0 || refresh == 0 || apiTokens < 3 {
		t.Fatalf("nothing to tidy: %d %d %d", grants, refresh, apiTokens)
	}
	rep, err := e.srv.Tidy(bg, 100_000)
	if err != nil || rep.More {
		t.Fatalf("tidy now: %+v %v", rep, err)
	}
	// Nothing live went: bob's login still refreshes.
	hc, _ := login.HTTPClient(e.fingerprint, "")
	tok.Fingerprint = e.fingerprint
	if _, err := login.Refresh(bg, hc, tok); err != nil {
		t.Fatalf("refresh after a tidy: %v", err)
	}
	if _, err := tokens.Get(bg, short.ID); err != nil {
		t.Fatalf("a live API token was deleted: %v", err)
	}

	e.shift(t, oauth.DefaultRefreshTTL+32*24*time.Hour)
	// Bounded: a budget of 1 examines one record and says there is more.
	rep, err = e.srv.Tidy(bg, 1)
	if err != nil || !rep.More || rep.Grants > 1 {
		t.Fatalf("tidy with a budget of 1: %+v %v", rep, err)
	}
	for range 100 {
		if rep, err = e.srv.Tidy(bg, 1000); err != nil {
			t.Fatal(err)
		}
		if !rep.More {
			break
		}
	}
	if g, r := count("oauth/grant/"), count("oauth/refresh/"); g != 0 || r != 0 {
		t.Fatalf("after retention: %d grants, %d refresh records left", g, r)
	}
	left, err := tokens.List(bg)
	if err != nil || len(left) != 1 || left[0].ID != long.ID {
		t.Fatalf("API tokens after retention: %+v %v", left, err)
	}
	if _, err := tokens.Check(bg, longTok); err != nil {
		t.Fatalf("the live API token: %v", err)
	}
	// Without trusted time nothing is deleted.
	e.noTime.Store(true)
	defer e.noTime.Store(false)
	if _, err := e.srv.Tidy(bg, 10); !errors.Is(err, oauth.ErrNoTime) {
		t.Fatalf("tidy without time: %v", err)
	}
}
