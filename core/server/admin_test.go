package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/avonzt/avon/core/adminapi"
	"github.com/avonzt/avon/core/agents"
	"github.com/avonzt/avon/internal/testsvc/pgtest"
	"github.com/avonzt/avon/sdk/plugintest"
)

// adminCall sends one request over the admin socket and returns the
// status, headers and body.
func adminCall(t *testing.T, c *http.Client, method, path string, hdr map[string]string, body string) (int, http.Header, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://avon-admin"+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

func problemType(b []byte) string {
	var p adminapi.Problem
	_ = json.Unmarshal(b, &p)
	return p.Type
}

var pathParam = regexp.MustCompile(`\{[a-z_]+\}`)

type openAPIDoc struct {
	OpenAPI string                                `json:"openapi"`
	Paths   map[string]map[string]json.RawMessage `json:"paths"`
}

// TestAdminAPIMatchesOpenAPI checks the OpenAPI document the core serves
// against the routes it really serves: every documented operation is
// routed (never the router's 404 or 405), every other method on a
// documented path is a 405 whose Allow lists exactly the documented ones,
// and every pattern registered on the mux is documented.
func TestAdminAPIMatchesOpenAPI(t *testing.T) {
	bin := plugintest.Build(t, testPluginPkg)
	s, _ := startServer(t, writeConfig(t, t.TempDir(), testConfig(bin, "first")))
	c := adminHTTP(s)
	code, _, b := adminCall(t, c, "GET", adminapi.OpenAPIPath, nil, "")
	var doc openAPIDoc
	if code != 200 || json.Unmarshal(b, &doc) != nil || doc.OpenAPI != "3.1.0" || len(doc.Paths) < 20 {
		t.Fatalf("openapi: %d %.300s", code, b)
	}
	// Every schema reference resolves.
	var whole struct {
		Components struct {
			Schemas map[string]json.RawMessage `json:"schemas"`
		} `json:"components"`
	}
	_ = json.Unmarshal(b, &whole)
	refs := regexp.MustCompile(`"\$ref":\s*"#/components/schemas/([^"]+)"`).FindAllSubmatch(b, -1)
	if len(refs) < 20 {
		t.Errorf("only %d schema references in the document", len(refs))
	}
	for _, m := range refs {
		if whole.Components.Schemas[string(m[1])] == nil {
			t.Errorf("unresolved schema reference %s", m[1])
		}
	}
	routeMiss := adminapi.TypeRouteNotFound.URI()
	notAllowed := adminapi.TypeMethodNotAllowed.URI()
	ops := 0
	for path, item := range doc.Paths {
		concrete := pathParam.ReplaceAllString(path, "x0")
		var documented []string
		for m := range item {
			documented = append(documented, strings.ToUpper(m))
		}
		sort.Strings(documented)
		for _, m := range []string{"GET", "POST", "PUT", "PATCH", "DELETE"} {
			body := ""
			if m != "GET" && m != "DELETE" {
				body = "{}"
			}
			code, hdr, b := adminCall(t, c, m, concrete, nil, body)
			pt := problemType(b)
			if slices.Contains(documented, m) {
				ops++
				if pt == routeMiss || pt == notAllowed {
					t.Errorf("%s %s is documented but not served: %d %s", m, path, code, b)
				}
				if hdr.Get("X-Request-Id") == "" {
					t.Errorf("%s %s: no X-Request-Id", m, path)
				}
				continue
			}
			if code != 405 || pt != notAllowed || hdr.Get("Allow") != strings.Join(documented, ", ") {
				t.Errorf("%s %s is not documented but answered %d %s (Allow %q, documented %v)", m, path, code, pt, hdr.Get("Allow"), documented)
			}
		}
	}
	// Every pattern on the real mux is documented (the method-less ones
	// are the 405 fallbacks of documented paths, "/" the 404).
	a, err := s.AdminAPI(adminapi.PeerCredAuthenticator{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range a.Patterns() {
		method, path, found := strings.Cut(p, " ")
		if !found {
			method, path = "", p
		}
		switch {
		case p == "/":
		case method == "":
			if doc.Paths[path] == nil {
				t.Errorf("mux path %s is not documented", path)
			}
		case doc.Paths[path][strings.ToLower(method)] == nil:
			t.Errorf("mux route %s is not documented", p)
		}
	}
	if ops != len(a.Routes()) {
		t.Errorf("%d documented operations, %d routes", ops, len(a.Routes()))
	}
	// An unknown path is the router's 404 problem.
	if code, _, b := adminCall(t, c, "GET", "/v1/nothing/here", nil, ""); code != 404 || problemType(b) != routeMiss {
		t.Errorf("unknown path: %d %s", code, b)
	}
	// Without a policy plugin the policy routes say so.
	if code, _, b := adminCall(t, c, "GET", "/v1/policies/default", nil, ""); code != 503 || problemType(b) != adminapi.TypeNoPolicyEngine.URI() {
		t.Errorf("policies without an engine: %d %s", code, b)
	}
	if code, _, b := adminCall(t, c, "POST", "/v1/policies/default/dry-run", nil,
		`{"principal":{"type":"Agent","id":"a1"},"action":{"type":"Action","id":"reach"},"resource":{"type":"Service","id":"10.1.2.3:443"}}`); code != 503 ||
		problemType(b) != adminapi.TypeNoPolicyEngine.URI() {
		t.Errorf("dry run without an engine: %d %s", code, b)
	}
}

// TestAdminPagingAndETagsPostgres runs the listing and conditional-update
// conventions on PostgreSQL: every item exactly once across pages, tokens
// bound to their listing, If-Match required and compared, and of two
// concurrent updates at the same ETag exactly one wins.
func TestAdminPagingAndETagsPostgres(t *testing.T) {
	pg := pgtest.Start(t)
	dsn := pg.CreateDatabase(t, "admin")
	bin := plugintest.Build(t, testPluginPkg)
	cfg := strings.Replace(testConfig(bin, "first"), "plugins {", fmt.Sprintf("storage \"postgres\" {\n  dsn = %q\n}\nplugins {", dsn), 1)
	s, _ := startServer(t, writeConfig(t, t.TempDir(), cfg))
	if s.cfg.Storage.Type != "postgres" {
		t.Fatalf("storage %q", s.cfg.Storage.Type)
	}
	c := adminHTTP(s)
	ctx := context.Background()

	// 23 tokens, listed 5 at a time.
	var ids []string
	for i := range 23 {
		code, hdr, b := adminCall(t, c, "POST", "/v1/tokens", nil, fmt.Sprintf(`{"group":"g%d","ttl":"1h"}`, i%3))
		var tc TokenCreated
		if code != 201 || json.Unmarshal(b, &tc) != nil || hdr.Get("ETag") == "" {
			t.Fatalf("create token: %d %s", code, b)
		}
		ids = append(ids, tc.ID)
	}
	sort.Strings(ids)
	var walked []string
	tok, pages := "", 0
	for ; pages < 50; pages++ {
		code, _, b := adminCall(t, c, "GET", "/v1/tokens?page_size=5&page_token="+tok, nil, "")
		var l TokenList
		if code != 200 || json.Unmarshal(b, &l) != nil || len(l.Tokens) > 5 {
			t.Fatalf("list: %d %s", code, b)
		}
		for _, tk := range l.Tokens {
			walked = append(walked, tk.ID)
		}
		if tok = l.NextPageToken; tok == "" {
			break
		}
	}
	if !slices.Equal(walked, ids) || pages != 4 {
		t.Fatalf("walked %d tokens in %d pages, want the 23 created in id order in 5", len(walked), pages+1)
	}

	// 17 enrolled agents, two groups, paged 4 at a time per group.
	reg := agents.New(s.store)
	for i := range 17 {
		group := []string{"eng", "ops"}[i%2]
		if _, err := reg.Enrolled(ctx, agents.Agent{ID: fmt.Sprintf("agent-%02d", i), Group: group, CertSerial: "0a"}, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	var engs []string
	tok = ""
	var firstTok string
	for range 20 {
		code, _, b := adminCall(t, c, "GET", "/v1/agents?group=eng&page_size=4&page_token="+tok, nil, "")
		var l AgentList
		if code != 200 || json.Unmarshal(b, &l) != nil {
			t.Fatalf("agents: %d %s", code, b)
		}
		for _, a := range l.Agents {
			if a.Group != "eng" {
				t.Fatalf("group filter let %+v through", a)
			}
			engs = append(engs, a.ID)
		}
		if firstTok == "" {
			firstTok = l.NextPageToken
		}
		if tok = l.NextPageToken; tok == "" {
			break
		}
	}
	if len(engs) != 9 || !sort.StringsAreSorted(engs) {
		t.Fatalf("eng agents %v", engs)
	}
	// A token from one listing is refused by another (filters included).
	for _, path := range []string{"/v1/agents?group=ops&page_token=" + firstTok, "/v1/tokens?page_token=" + firstTok} {
		if code, _, b := adminCall(t, c, "GET", path, nil, ""); code != 400 || problemType(b) != adminapi.TypeInvalidPageToken.URI() {
			t.Fatalf("%s: %d %s", path, code, b)
		}
	}

	// Conditional updates.
	code, hdr, _ := adminCall(t, c, "GET", "/v1/agents/agent-03", nil, "")
	etag := hdr.Get("ETag")
	if code != 200 || !strings.HasPrefix(etag, `"`) {
		t.Fatalf("get agent: %d etag %q", code, etag)
	}
	if code, _, b := adminCall(t, c, "PATCH", "/v1/agents/agent-03", nil, `{"disabled":true}`); code != 428 || problemType(b) != adminapi.TypePreconditionRequired.URI() {
		t.Fatalf("no If-Match: %d %s", code, b)
	}
	if code, _, b := adminCall(t, c, "PATCH", "/v1/agents/agent-03", map[string]string{"If-Match": `"1"`}, `{"disabled":true}`); code != 412 ||
		problemType(b) != adminapi.TypePreconditionFailed.URI() {
		t.Fatalf("stale If-Match: %d %s", code, b)
	}
	if e, _ := reg.Get(ctx, "agent-03"); e.Disabled {
		t.Fatal("a refused update changed the agent")
	}
	// Two operators at the same ETag: exactly one wins.
	var wg sync.WaitGroup
	codes := make([]int, 2)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i], _, _ = adminCall(t, c, "PATCH", "/v1/agents/agent-03", map[string]string{"If-Match": etag},
				fmt.Sprintf(`{"disabled":true,"reason":"operator %d"}`, i))
		}()
	}
	wg.Wait()
	sort.Ints(codes)
	if codes[0] != 200 || codes[1] != 412 {
		t.Fatalf("concurrent updates at one ETag: %v, want one 200 and one 412", codes)
	}
	code, hdr, b := adminCall(t, c, "GET", "/v1/agents/agent-03", nil, "")
	var a agents.Agent
	if code != 200 || json.Unmarshal(b, &a) != nil || !a.Disabled || hdr.Get("ETag") == etag {
		t.Fatalf("after the update: %d %s etag %q", code, b, hdr.Get("ETag"))
	}

	// Token revocation is conditional too.
	code, hdr, _ = adminCall(t, c, "GET", "/v1/tokens/"+ids[0], nil, "")
	if code != 200 {
		t.Fatalf("get token: %d", code)
	}
	if code, _, _ := adminCall(t, c, "DELETE", "/v1/tokens/"+ids[0], nil, ""); code != 428 {
		t.Fatalf("revoke without If-Match: %d", code)
	}
	if code, _, b := adminCall(t, c, "DELETE", "/v1/tokens/"+ids[0], map[string]string{"If-Match": hdr.Get("ETag")}, ""); code != 204 || len(b) != 0 {
		t.Fatalf("revoke: %d %s", code, b)
	}
	if code, _, _ := adminCall(t, c, "GET", "/v1/tokens/"+ids[0], nil, ""); code != 404 {
		t.Fatalf("revoked token still there: %d", code)
	}
}

// BenchmarkAdminListAgents measures a page of 100 agents over the admin
// socket on the embedded store.
func BenchmarkAdminListAgents(b *testing.B) {
	bin := plugintest.Build(b, testPluginPkg)
	s, _ := startServerB(b, writeConfig(b, b.TempDir(), testConfig(bin, "first")))
	reg := agents.New(s.store)
	for i := range 1000 {
		if _, err := reg.Enrolled(context.Background(), agents.Agent{ID: fmt.Sprintf("a%04d", i), CertSerial: "01"}, time.Now()); err != nil {
			b.Fatal(err)
		}
	}
	c := adminHTTP(s)
	b.ResetTimer()
	for b.Loop() {
		resp, err := c.Get("http://avon-admin/v1/agents?page_size=100")
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatal(resp.Status)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pages/s")
}

func startServerB(b *testing.B, cfgPath string) (*Server, *bytes.Buffer) {
	b.Helper()
	s, err := Start(context.Background(), Options{ConfigPath: cfgPath, Diagnostics: io.Discard, Logger: hclog.NewNullLogger()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Stop(context.Background()) })
	return s, nil
}

// TestAdminPolicies runs the policy routes against a policy plugin process
// (testdata/testpolicy): conditional create and replace, a set that does
// not validate refused with its diagnostics and nothing applied, the
// policy.changed event, validate, dry-run and delete.
func TestAdminPolicies(t *testing.T) {
	bin := plugintest.Build(t, "github.com/avonzt/avon/core/server/testdata/testpolicy")
	s, _ := startServer(t, writeConfig(t, t.TempDir(), fmt.Sprintf(`
data_dir = "data"
api {
  listen = "127.0.0.1:0"
}
plugin "policy" "test" {
  command = %q
  sha256  = %q
}
`, bin.Path, bin.SHA256)))
	c := adminHTTP(s)
	sub, err := s.Events().Subscribe(context.Background(), "policy.changed")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()

	code, hdr, b := adminCall(t, c, "GET", "/v1/policies/default", nil, "")
	if code != 200 || hdr.Get("ETag") != `"p0"` {
		t.Fatalf("get: %d %s %q", code, b, hdr.Get("ETag"))
	}
	good := `{"policies":"permit Agent::a1 reach Service::10.1.2.3:443\n"}`
	if code, _, _ := adminCall(t, c, "PUT", "/v1/policies/default", nil, good); code != 428 {
		t.Fatalf("put without If-Match: %d", code)
	}
	code, _, b = adminCall(t, c, "PUT", "/v1/policies/default", map[string]string{"If-Match": `"p0"`},
		`{"policies":"permit Agent::a1 reach Service::x\nallow everything\n"}`)
	var p struct {
		Type        string               `json:"type"`
		Diagnostics []struct{ Line int } `json:"diagnostics"`
	}
	if code != 422 || json.Unmarshal(b, &p) != nil || p.Type != adminapi.TypeInvalidPolicy.URI() || len(p.Diagnostics) != 1 || p.Diagnostics[0].Line != 2 {
		t.Fatalf("invalid set: %d %s", code, b)
	}
	if _, hdr, _ := adminCall(t, c, "GET", "/v1/policies/default", nil, ""); hdr.Get("ETag") != `"p0"` {
		t.Fatal("an invalid set changed the policy")
	}
	code, hdr, b = adminCall(t, c, "PUT", "/v1/policies/default", map[string]string{"If-Match": `"p0"`}, good)
	if code != 200 || hdr.Get("ETag") != `"p1"` {
		t.Fatalf("put: %d %s", code, b)
	}
	select {
	case ev := <-sub.C():
		if ev.Subject != "default" || ev.Fields["version"] != "1" {
			t.Fatalf("event %+v", ev)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no policy.changed event")
	}
	if code, _, _ := adminCall(t, c, "PUT", "/v1/policies/default", map[string]string{"If-Match": `"p0"`}, good); code != 412 {
		t.Fatalf("put at a stale version: %d", code)
	}
	// Operators who read the same version race: exactly one wins, the
	// others get 412 (the plugin repeats the check with its write).
	codes := make(chan int, 6)
	var wg sync.WaitGroup
	for i := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, _, _ := adminCall(t, c, "PUT", "/v1/policies/default", map[string]string{"If-Match": `"p1"`},
				fmt.Sprintf(`{"policies":"# race 6\npermit Agent::a%d reach Service::10.1.2.3:443\n"}`, i))
			codes <- code
		}()
	}
	wg.Wait()
	close(codes)
	won := 0
	for code := range codes {
		switch code {
		case 200:
			won++
		case 412:
		default:
			t.Errorf("racing put: %d", code)
		}
	}
	if won != 1 {
		t.Fatalf("%d racing puts at the same version succeeded, want 1", won)
	}
	for range 6 { // drain the winner's event
		select {
		case <-sub.C():
		case <-time.After(100 * time.Millisecond):
		}
	}
	if _, hdr, _ := adminCall(t, c, "GET", "/v1/policies/default", nil, ""); hdr.Get("ETag") != `"p2"` {
		t.Fatalf("after the race: %q", hdr.Get("ETag"))
	}
	code, hdr, _ = adminCall(t, c, "PUT", "/v1/policies/default", map[string]string{"If-Match": `"p2"`}, good)
	if code != 200 || hdr.Get("ETag") != `"p3"` {
		t.Fatalf("put after the race: %d %q", code, hdr.Get("ETag"))
	}
	// A set that does not exist: 404, created only with If-Match: *.
	if code, _, _ := adminCall(t, c, "GET", "/v1/policies/eng", nil, ""); code != 404 {
		t.Fatalf("unknown set: %d", code)
	}
	if code, _, _ := adminCall(t, c, "PUT", "/v1/policies/eng", map[string]string{"If-Match": `"p1"`}, good); code != 412 {
		t.Fatalf("create without *: %d", code)
	}
	if code, _, _ := adminCall(t, c, "PUT", "/v1/policies/eng", map[string]string{"If-Match": "*"}, good); code != 200 {
		t.Fatalf("create with *: %d", code)
	}

	// Validate and dry-run change nothing.
	code, _, b = adminCall(t, c, "POST", "/v1/policies/default/validate", nil, `{"policies":"nonsense"}`)
	var v PolicyValidation
	if code != 200 || json.Unmarshal(b, &v) != nil || v.Valid || len(v.Diagnostics) != 1 {
		t.Fatalf("validate: %d %s", code, b)
	}
	dry := func(resource string) DryRunResult {
		t.Helper()
		code, _, b := adminCall(t, c, "POST", "/v1/policies/default/dry-run", nil, fmt.Sprintf(
			`{"principal":{"type":"Agent","id":"a1"},"action":{"type":"Action","id":"reach"},"resource":{"type":"Service","id":%q},"context":{"posture":"ok"}}`, resource))
		var d DryRunResult
		if code != 200 || json.Unmarshal(b, &d) != nil {
			t.Fatalf("dry-run: %d %s", code, b)
		}
		return d
	}
	if d := dry("10.1.2.3:443"); !d.Allow || len(d.DeterminingPolicies) != 1 || d.DeterminingPolicies[0] != "line1" || d.Version != 3 {
		t.Fatalf("allowed query: %+v", d)
	}
	if d := dry("10.1.2.3:22"); d.Allow || len(d.Reasons) == 0 {
		t.Fatalf("denied query: %+v", d)
	}
	if code, _, b := adminCall(t, c, "POST", "/v1/policies/default/dry-run", nil, `{"principal":{"type":"Agent","id":"a1"}}`); code != 400 {
		t.Fatalf("incomplete dry-run: %d %s", code, b)
	}

	// Delete empties the set: the query is denied now.
	_, hdr, _ = adminCall(t, c, "GET", "/v1/policies/default", nil, "")
	if code, _, b := adminCall(t, c, "DELETE", "/v1/policies/default", map[string]string{"If-Match": hdr.Get("ETag")}, ""); code != 204 {
		t.Fatalf("delete: %d %s", code, b)
	}
	if d := dry("10.1.2.3:443"); d.Allow {
		t.Fatalf("allowed after delete: %+v", d)
	}
}
