package server

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/avonzt/avon/core/oauth"
	"github.com/avonzt/avon/core/oauth/login"
)

// TestAPITokens runs scoped API tokens in a whole core (the token store
// beside operator login, kms-soft as a plugin process): tokens made on the
// admin socket call the Admin API on the HTTPS listener with exactly their
// scopes, never change credentials, are named in the audit log, and stop
// working the moment they are revoked.
func TestAPITokens(t *testing.T) {
	s, _ := startServer(t, writeConfig(t, t.TempDir(), `
data_dir = "data"
api {
  listen = "127.0.0.1:0"
}
`+kmsSoftBlock(t)))
	if s.OAuth() == nil {
		t.Fatal("operator login is off")
	}
	sc := socketClient(s)
	create := func(req APITokenRequest) APITokenCreated {
		t.Helper()
		st, b := socketDo(t, sc, "POST", "/v1/api-tokens", req)
		var out APITokenCreated
		if st != http.StatusCreated || json.Unmarshal(b, &out) != nil || !oauth.IsAPIToken(out.Token) {
			t.Fatalf("create %+v: %d %s", req, st, b)
		}
		return out
	}
	reader := create(APITokenRequest{Name: "ci-read", Scopes: []string{"admin:read"}, TTL: "1h"})
	writer := create(APITokenRequest{Name: "ci-deploy", Scopes: []string{"admin:read", "admin:write"}})
	for _, bad := range []APITokenRequest{
		{Name: "x", Scopes: []string{"admin"}},
		{Name: "x", Scopes: nil},
		{Name: "Bad Name", Scopes: []string{"admin:read"}},
		{Name: "x", Scopes: []string{"admin:read"}, TTL: "forever"},
		{Name: "x", Scopes: []string{"admin:read"}, TTL: "9000h"},
	} {
		if st, b := socketDo(t, sc, "POST", "/v1/api-tokens", bad); st != http.StatusBadRequest {
			t.Errorf("create %+v: %d %s", bad, st, b)
		}
	}
	st, b := socketDo(t, sc, "GET", "/v1/api-tokens", nil)
	var list []oauth.APITokenInfo
	if st != http.StatusOK || json.Unmarshal(b, &list) != nil || len(list) != 2 ||
		strings.Contains(string(b), reader.Token[len(reader.Token)-20:]) || strings.Contains(string(b), "secret") {
		t.Fatalf("list: %d %s", st, b)
	}

	hc, err := login.HTTPClient(s.APIFingerprint(), "")
	if err != nil {
		t.Fatal(err)
	}
	base := "https://" + s.APIAddr()
	call := func(tok, method, path string, body any) (int, http.Header, []byte) {
		t.Helper()
		var rd io.Reader
		if body != nil {
			j, _ := json.Marshal(body)
			rd = bytes.NewReader(j)
		}
		req, _ := http.NewRequest(method, base+path, rd)
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, out
	}

	if st, _, b := call(reader.Token, "GET", "/v1/agents", nil); st != http.StatusOK {
		t.Fatalf("read token, GET /v1/agents: %d %s", st, b)
	}
	if st, _, b := call(reader.Token, "POST", "/v1/tokens", TokenCreateRequest{Group: "eng"}); st != http.StatusForbidden ||
		!strings.Contains(string(b), "admin:write") {
		t.Fatalf("read token, POST /v1/tokens: %d %s", st, b)
	}
	if st, _, b := call(writer.Token, "POST", "/v1/tokens", TokenCreateRequest{Group: "eng"}); st != http.StatusCreated {
		t.Fatalf("write token, POST /v1/tokens: %d %s", st, b)
	}
	// No API token changes credentials, whatever its scopes.
	if st, _, b := call(writer.Token, "POST", "/v1/api-tokens", APITokenRequest{Name: "more", Scopes: []string{"admin:write"}}); st != http.StatusForbidden {
		t.Fatalf("write token mints a token: %d %s", st, b)
	}
	if st, _, b := call(writer.Token, "POST", "/v1/users", UserRequest{Name: "mallory", Password: "mallory's long password", Roles: []string{"admin"}}); st != http.StatusForbidden {
		t.Fatalf("write token adds a user: %d %s", st, b)
	}
	if st, _, b := call(writer.Token, "DELETE", "/v1/api-tokens/"+reader.ID, nil); st != http.StatusForbidden {
		t.Fatalf("write token revokes a token: %d %s", st, b)
	}
	// Bad tokens: 401 with a challenge, whatever is wrong.
	i := len(oauth.APITokenPrefix) + 21
	forged := reader.Token[:i] + map[bool]string{true: "B", false: "A"}[reader.Token[i] == 'A'] + reader.Token[i+1:]
	for _, tok := range []string{"", "avon_pat_", forged, reader.Token + "x"} {
		st, h, b := call(tok, "GET", "/v1/agents", nil)
		if st != http.StatusUnauthorized || !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer ") {
			t.Errorf("token %q: %d %q %s", tok, st, h.Get("WWW-Authenticate"), b)
		}
	}

	// The audit log names the token as the actor.
	q := url.Values{"action": {"enroll.token.create"}, "actor": {writer.APITokenInfo.Actor()}, "outcome": {"success"}}
	st, b = socketDo(t, sc, "GET", "/v1/audit/records?"+q.Encode(), nil)
	var al AuditList
	if st != http.StatusOK || json.Unmarshal(b, &al) != nil || len(al.Records) != 1 {
		t.Fatalf("audit of the write token: %d %s", st, b)
	}
	q = url.Values{"action": {"apitoken.create"}, "outcome": {"success"}}
	st, b = socketDo(t, sc, "GET", "/v1/audit/records?"+q.Encode(), nil)
	if st != http.StatusOK || json.Unmarshal(b, &al) != nil || len(al.Records) != 2 || strings.Contains(string(b), reader.Token) {
		t.Fatalf("audit of token creation: %d %s", st, b)
	}

	// Revoked on the socket: refused at once.
	if st, b := socketDo(t, sc, "DELETE", "/v1/api-tokens/"+reader.ID, nil); st != http.StatusOK || !strings.Contains(string(b), `"revoked":true`) {
		t.Fatalf("revoke: %d %s", st, b)
	}
	if st, _, b := call(reader.Token, "GET", "/v1/agents", nil); st != http.StatusUnauthorized || !strings.Contains(string(b), "revoked") {
		t.Fatalf("revoked token: %d %s", st, b)
	}
	if st, b := socketDo(t, sc, "GET", "/v1/api-tokens/"+strings.Repeat("0", 20), nil); st != http.StatusNotFound {
		t.Fatalf("get unknown: %d %s", st, b)
	}
}
