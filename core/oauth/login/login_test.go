package login

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/avonzt/avon/core/oauth"
)

func TestParseCallback(t *testing.T) {
	const st, iss = "state-1", "https://avon.example:8443"
	for _, tc := range []struct {
		name, q string
		code    string
		want    error
	}{
		{"good", "code=abc&state=state-1&iss=https%3A%2F%2Favon.example%3A8443", "abc", nil},
		{"wrong state", "code=abc&state=state-2&iss=https%3A%2F%2Favon.example%3A8443", "", ErrState},
		{"no state", "code=abc&iss=https%3A%2F%2Favon.example%3A8443", "", ErrState},
		{"wrong iss (mix-up)", "code=abc&state=state-1&iss=https%3A%2F%2Fevil.example", "", ErrState},
		{"no iss", "code=abc&state=state-1", "", ErrState},
		{"error", "error=access_denied&error_description=no&state=state-1&iss=https%3A%2F%2Favon.example%3A8443", "", ErrDenied},
		{"error with a wrong state", "error=access_denied&state=x&iss=https%3A%2F%2Favon.example%3A8443", "", ErrState},
		{"no code", "state=state-1&iss=https%3A%2F%2Favon.example%3A8443", "", ErrState},
		{"code twice", "code=a&code=b&state=state-1&iss=https%3A%2F%2Favon.example%3A8443", "", ErrState},
	} {
		cb := parseCallback(tc.q, st, iss)
		if !errors.Is(cb.err, tc.want) || (tc.want == nil && cb.err != nil) || cb.code != tc.code {
			t.Errorf("%s: %+v", tc.name, cb)
		}
	}
}

func FuzzParseCallback(f *testing.F) {
	f.Add("code=abc&state=s&iss=https%3A%2F%2Fa")
	f.Add("error=x&state=s&iss=https%3A%2F%2Fa")
	f.Add("code=&state=")
	f.Fuzz(func(t *testing.T, q string) {
		cb := parseCallback(q, "s", "https://a")
		if (cb.err == nil) == (cb.code == "") {
			t.Fatalf("%q: %+v", q, cb)
		}
		if cb.err == nil {
			v, _ := url.ParseQuery(q)
			if v.Get("state") != "s" || v.Get("iss") != "https://a" {
				t.Fatalf("%q accepted", q)
			}
		}
		if cb.err != nil && !errors.Is(cb.err, ErrState) && !errors.Is(cb.err, ErrDenied) {
			t.Fatalf("untyped error %v", cb.err)
		}
	})
}

// fakeAS is a stand-in authorization server for the client's refusals;
// the real one runs in core/oauth's end-to-end tests.
func fakeAS(t *testing.T, issuer func(base string) string, redirect func(w http.ResponseWriter, r *http.Request, base string)) (*httptest.Server, string) {
	t.Helper()
	var srv *httptest.Server
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+oauth.PathMetadata, func(w http.ResponseWriter, r *http.Request) {
		base := srv.URL
		_ = json.NewEncoder(w).Encode(oauth.Metadata{Issuer: issuer(base), AuthorizationEndpoint: base + oauth.PathAuthorize,
			TokenEndpoint: base + oauth.PathToken, CodeChallengeMethodsSupported: []string{"S256"}})
	})
	mux.HandleFunc("GET "+oauth.PathAuthorize, func(w http.ResponseWriter, r *http.Request) { redirect(w, r, srv.URL) })
	srv = httptest.NewTLSServer(mux)
	t.Cleanup(srv.Close)
	fp := sha256.Sum256(srv.Certificate().Raw)
	return srv, hex.EncodeToString(fp[:])
}

// follow plays the browser: it opens the authorization URL on the fake
// server and follows its redirect to the CLI's listener.
func follow(t *testing.T, srv *httptest.Server) func(string) {
	return func(u string) {
		go func() {
			c := srv.Client()
			c.Timeout = 10 * time.Second
			resp, err := c.Get(u)
			if err == nil {
				resp.Body.Close()
			}
		}()
	}
}

func TestLoginRefusals(t *testing.T) {
	before := runtime.NumGoroutine()
	// The redirect comes back with an error: ErrDenied, nothing redeemed.
	var srv *httptest.Server
	srv, fp := fakeAS(t, func(b string) string { return b }, func(w http.ResponseWriter, r *http.Request, base string) {
		q := r.URL.Query()
		http.Redirect(w, r, q.Get("redirect_uri")+"?"+url.Values{"error": {"access_denied"}, "state": {q.Get("state")}, "iss": {base}}.Encode(), http.StatusSeeOther)
	})
	hc, err := HTTPClient(fp, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Login(context.Background(), Options{Server: srv.URL, HTTP: hc, Show: follow(t, srv), Timeout: 20 * time.Second}); !errors.Is(err, ErrDenied) {
		t.Fatalf("denied: %v", err)
	}
	// A forged redirect (another state) is refused.
	srv2, fp2 := fakeAS(t, func(b string) string { return b }, func(w http.ResponseWriter, r *http.Request, base string) {
		http.Redirect(w, r, r.URL.Query().Get("redirect_uri")+"?"+url.Values{"code": {"c"}, "state": {"forged"}, "iss": {base}}.Encode(), http.StatusSeeOther)
	})
	hc2, _ := HTTPClient(fp2, "")
	if _, err := Login(context.Background(), Options{Server: srv2.URL, HTTP: hc2, Show: follow(t, srv2), Timeout: 20 * time.Second}); !errors.Is(err, ErrState) {
		t.Fatalf("forged state: %v", err)
	}
	// Metadata naming another issuer is refused before anything else.
	srv3, fp3 := fakeAS(t, func(string) string { return "https://elsewhere.example" }, nil)
	hc3, _ := HTTPClient(fp3, "")
	if _, err := Login(context.Background(), Options{Server: srv3.URL, HTTP: hc3, Timeout: 5 * time.Second}); err == nil || !strings.Contains(err.Error(), "elsewhere") {
		t.Fatalf("issuer mismatch: %v", err)
	}
	// A wrong pin: no connection.
	bad, _ := HTTPClient(strings.Repeat("00", 32), "")
	if _, err := Login(context.Background(), Options{Server: srv.URL, HTTP: bad, Timeout: 5 * time.Second}); err == nil || !strings.Contains(err.Error(), "not the pinned") {
		t.Fatalf("wrong pin: %v", err)
	}
	if _, err := HTTPClient("abc", ""); err == nil {
		t.Fatal("short fingerprint accepted")
	}
	// No browser: the wait ends at the timeout and the listener is closed.
	srv4, fp4 := fakeAS(t, func(b string) string { return b }, nil)
	hc4, _ := HTTPClient(fp4, "")
	if _, err := Login(context.Background(), Options{Server: srv4.URL, HTTP: hc4, Timeout: 300 * time.Millisecond}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("timeout: %v", err)
	}
	for _, s := range []*httptest.Server{srv, srv2, srv3, srv4} {
		s.CloseClientConnections()
		s.Close()
	}
	for _, c := range []*http.Client{hc, hc2, hc3, hc4, bad} {
		c.CloseIdleConnections()
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) && runtime.NumGoroutine() > before {
		time.Sleep(50 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d goroutines left, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}

func TestTokensFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cfg", "avon", "tokens.json")
	if _, err := Load(path); !errors.Is(err, ErrNotLoggedIn) {
		t.Fatalf("no file: %v", err)
	}
	tok := Tokens{Server: "https://a:1", AccessToken: "at", RefreshToken: "rt", ExpiresAt: time.Unix(1_800_000_000, 0).UTC()}
	if err := Save(path, tok); err != nil {
		t.Fatal(err)
	}
	for p, mode := range map[string]os.FileMode{path: 0o600, filepath.Dir(path): 0o700} {
		if st, err := os.Stat(p); err != nil || st.Mode().Perm() != mode {
			t.Fatalf("%s: %v %v", p, st.Mode(), err)
		}
	}
	got, err := Load(path)
	if err != nil || got != tok {
		t.Fatalf("load: %+v %v", got, err)
	}
	// A token with time left is used as is (no network).
	if got, err := Access(context.Background(), path, tok.ExpiresAt.Add(-time.Minute)); err != nil || got.AccessToken != "at" {
		t.Fatalf("access: %+v %v", got, err)
	}
	if err := os.WriteFile(path, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); !errors.Is(err, ErrNotLoggedIn) {
		t.Fatalf("corrupt: %v", err)
	}
}
