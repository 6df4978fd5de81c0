package server

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/avonzt/avon/core/audit"
	"github.com/avonzt/avon/core/oauth"
	"github.com/avonzt/avon/core/oauth/login"
)

// socketClient is an HTTP client over the core's admin socket.
func socketClient(s *Server) *http.Client {
	sock := filepath.Join(s.cfg.DataDir, AdminSocket)
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}}}
}

func socketDo(t *testing.T, c *http.Client, method, path string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, "http://avon-admin"+path, rd)
	if body != nil {
		req.Header.Set("Content-Type", "application/json") // the Admin API refuses other bodies (415)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

type staticKeySet []oauth.Key

func (s staticKeySet) Lookup(kid string) (oauth.Key, bool) {
	for _, k := range s {
		if k.ID == kid {
			return k, true
		}
	}
	return oauth.Key{}, false
}
func (s staticKeySet) Keys() []oauth.Key { return s }

// TestOperatorLogin runs operator login in a whole core: the token key in
// kms-soft (a plugin process), users made on the admin socket, the CLI's
// login code against the API listener, the access token checked by the
// middleware on a route of that listener and by the published JWKS alone.
func TestOperatorLogin(t *testing.T) {
	kmsBlock := kmsSoftBlock(t)
	for _, tc := range []struct {
		alg, jose, kty string
	}{{"ML-DSA-65", oauth.AlgMLDSA65, "AKP"}, {"Ed25519", oauth.AlgEdDSA, "OKP"}} {
		t.Run(tc.alg, func(t *testing.T) {
			s, _ := startServer(t, writeConfig(t, t.TempDir(), `
data_dir = "data"
api {
  listen = "127.0.0.1:0"
}
auth {
  access_ttl = "2m"
  algorithm  = "`+tc.alg+`"
}
`+kmsBlock))
			o := s.OAuth()
			if o == nil {
				t.Fatal("operator login is off")
			}
			issuer := "https://" + s.APIAddr()
			if o.Config().Issuer != issuer {
				t.Fatalf("issuer %s, want %s", o.Config().Issuer, issuer)
			}
			sc := socketClient(s)
			if st, b := socketDo(t, sc, "POST", "/v1/users", UserRequest{Name: "alice", Password: "alice's long password", Roles: []string{"operator"}}); st != http.StatusOK {
				t.Fatalf("add user: %d %s", st, b)
			}
			for _, bad := range []struct {
				req  UserRequest
				want int
			}{{UserRequest{Name: "alice", Password: "alice's long password", Roles: []string{"operator"}}, http.StatusConflict},
				{UserRequest{Name: "bob", Password: "short", Roles: []string{"operator"}}, http.StatusBadRequest},
				{UserRequest{Name: "bob", Password: "bob's long password", Roles: []string{"root"}}, http.StatusBadRequest}} {
				if st, b := socketDo(t, sc, "POST", "/v1/users", bad.req); st != bad.want {
					t.Errorf("add %+v: %d %s", bad.req, st, b)
				}
			}
			st, b := socketDo(t, sc, "GET", "/v1/users", nil)
			var list []oauth.UserInfo
			if st != http.StatusOK || json.Unmarshal(b, &list) != nil || len(list) != 1 || list[0].Name != "alice" || strings.Contains(string(b), "argon2") {
				t.Fatalf("list: %d %s", st, b)
			}
			// A route of the API listener behind the middleware, as the
			// Admin API mounts its routes.
			s.api.Handle("GET /v1/test/whoami", o.Middleware(oauth.RoleOperator)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				p, _ := oauth.PrincipalFrom(r.Context())
				_ = json.NewEncoder(w).Encode(p)
			})))
			hc, err := login.HTTPClient(s.APIFingerprint(), "")
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
				tok, err := login.Login(context.Background(), login.Options{Server: issuer, HTTP: hc, Timeout: time.Minute, Show: func(u string) { shown <- u }})
				done <- result{tok, err}
			}()
			var authURL string
			select {
			case authURL = <-shown:
			case r := <-done:
				t.Fatalf("login: %v", r.err)
			case <-time.After(time.Minute):
				t.Fatal("no authorization URL")
			}
			browser, _ := login.HTTPClient(s.APIFingerprint(), "")
			browser.Jar, _ = cookiejar.New(nil)
			resp, err := browser.Get(authURL)
			if err != nil {
				t.Fatal(err)
			}
			page, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindSubmatch(page)
			if m == nil {
				t.Fatalf("login page: %s %s", resp.Status, page)
			}
			resp, err = browser.PostForm(issuer+oauth.PathAuthorize, url.Values{"csrf": {string(m[1])}, "username": {"alice"}, "password": {"alice's long password"}})
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusSeeOther {
				t.Fatalf("login form: %s", resp.Status)
			}
			cb, err := http.Get(resp.Header.Get("Location"))
			if err != nil {
				t.Fatal(err)
			}
			cb.Body.Close()
			var r result
			select {
			case r = <-done:
			case <-time.After(time.Minute):
				t.Fatal("login did not finish")
			}
			if r.err != nil || r.tok.Scope != "operator" {
				t.Fatalf("login: %+v %v", r.tok, r.err)
			}
			req, _ := http.NewRequest("GET", issuer+"/v1/test/whoami", nil)
			req.Header.Set("Authorization", "Bearer "+r.tok.AccessToken)
			resp, err = hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"User":"alice"`) {
				t.Fatalf("whoami: %s %s", resp.Status, body)
			}
			// The JWKS alone verifies the token: kid names the KMS key.
			resp, err = hc.Get(issuer + oauth.PathJWKS)
			if err != nil {
				t.Fatal(err)
			}
			var set struct {
				Keys []oauth.JWK `json:"keys"`
			}
			_ = json.NewDecoder(resp.Body).Decode(&set)
			resp.Body.Close()
			if len(set.Keys) != 1 || set.Keys[0].Kid != "kms.soft/avon-oauth/v1" || set.Keys[0].Kty != tc.kty || set.Keys[0].Alg != tc.jose {
				t.Fatalf("jwks %+v", set)
			}
			pub := set.Keys[0].Pub + set.Keys[0].X
			raw, _ := base64.RawURLEncoding.DecodeString(pub)
			now, _ := s.calib.Now()
			if _, err := oauth.NewVerifier(staticKeySet{{ID: set.Keys[0].Kid, Algorithm: set.Keys[0].Alg, Public: raw}}, issuer,
				oauth.DefaultAudience, 5*time.Second).Verify(r.tok.AccessToken, now); err != nil {
				t.Fatalf("verify with the JWKS: %v", err)
			}
			// Every step is on record, with its actor.
			recs, err := audit.List(context.Background(), s.store, 0, 1000)
			if err != nil {
				t.Fatal(err)
			}
			var acts []string
			for _, rec := range recs {
				acts = append(acts, rec.Action+"/"+rec.Outcome+"/"+strings.SplitN(rec.Actor, ",", 2)[0])
			}
			for _, want := range []string{"user.add/success/local-admin:uid=", "oauth.login/success/user:alice", "oauth.token.issue/success/user:alice"} {
				if !slices.ContainsFunc(acts, func(a string) bool { return strings.HasPrefix(a, want) }) {
					t.Errorf("no audit record %s in %v", want, acts)
				}
			}
		})
	}
}
