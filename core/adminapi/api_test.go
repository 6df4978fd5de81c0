package adminapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/avonzt/avon/sdk/host"
)

// recorder is an Auditor that keeps events and can be made to fail.
type recorder struct {
	mu     sync.Mutex
	events []host.Event
	fail   error
}

func (r *recorder) Emit(_ context.Context, _ string, ev host.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		return r.fail
	}
	r.events = append(r.events, ev)
	return nil
}

func (r *recorder) all() []host.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]host.Event(nil), r.events...)
}

// widgets is a versioned resource for the tests.
type widgets struct {
	mu      sync.Mutex
	version int64
	items   map[string]widgetRec
	calls   int // handler calls that changed something
}

type widgetRec struct {
	v    int64
	Name string `json:"name"`
	Size int    `json:"size"`
}

type widget struct {
	ID   string `json:"id"`
	Size int    `json:"size"`
}

type widgetList struct {
	Widgets       []widget `json:"widgets"`
	NextPageToken string   `json:"next_page_token,omitempty"`
}

type widgetPatch struct {
	Size *int `json:"size"`
}

var errNoWidget = errors.New("no such widget")

func newWidgets(n int) *widgets {
	w := &widgets{items: map[string]widgetRec{}}
	for i := range n {
		w.version++
		w.items[fmt.Sprintf("w%03d", i)] = widgetRec{v: w.version, Size: i}
	}
	return w
}

func (ws *widgets) routes() []Route {
	return []Route{
		{Method: "GET", Pattern: "/v1/widgets", Scope: ScopeRead, OperationID: "listWidgets", Summary: "list", Paged: true,
			Query: []Param{{Name: "min_size", Type: "integer"}}, Response: widgetList{},
			Handler: func(w http.ResponseWriter, r *Request) error {
				minSize := r.URL.Query().Get("min_size")
				pg, err := r.Page("widgets?min_size=" + minSize)
				if err != nil {
					return err
				}
				ws.mu.Lock()
				defer ws.mu.Unlock()
				var ids []string
				for id := range ws.items {
					ids = append(ids, id)
				}
				sort.Strings(ids)
				out := widgetList{Widgets: []widget{}}
				for _, id := range ids {
					if id <= pg.After {
						continue
					}
					if n, _ := strconv.Atoi(minSize); ws.items[id].Size < n {
						continue
					}
					if len(out.Widgets) == pg.Size {
						out.NextPageToken = EncodePageToken("widgets?min_size="+minSize, out.Widgets[len(out.Widgets)-1].ID)
						break
					}
					out.Widgets = append(out.Widgets, widget{ID: id, Size: ws.items[id].Size})
				}
				JSON(w, 200, out)
				return nil
			}},
		{Method: "GET", Pattern: "/v1/widgets/{id}", Scope: ScopeRead, OperationID: "getWidget", Summary: "get", Response: widget{}, ETag: true,
			Handler: func(w http.ResponseWriter, r *Request) error {
				ws.mu.Lock()
				defer ws.mu.Unlock()
				rec, ok := ws.items[r.PathValue("id")]
				if !ok {
					return errNoWidget
				}
				w.Header().Set("ETag", ETag(rec.v))
				JSON(w, 200, widget{ID: r.PathValue("id"), Size: rec.Size})
				return nil
			}},
		{Method: "PATCH", Pattern: "/v1/widgets/{id}", Scope: ScopeWrite, OperationID: "updateWidget", Summary: "update",
			Request: widgetPatch{}, Response: widget{}, ETag: true, Conditional: true, Audit: "widget.update", Target: "widget/{id}", MaxBody: 256,
			Handler: func(w http.ResponseWriter, r *Request) error {
				var p widgetPatch
				if err := r.Decode(&p); err != nil {
					return err
				}
				if p.Size == nil {
					return NewProblem(TypeBadRequest, "size is required")
				}
				ws.mu.Lock()
				defer ws.mu.Unlock()
				rec, ok := ws.items[r.PathValue("id")]
				if !ok {
					return errNoWidget
				}
				if err := r.CheckIfMatch(ETag(rec.v)); err != nil {
					return err
				}
				ws.version++
				ws.calls++
				rec.v, rec.Size = ws.version, *p.Size
				ws.items[r.PathValue("id")] = rec
				r.AuditField("size", strconv.Itoa(rec.Size))
				w.Header().Set("ETag", ETag(rec.v))
				JSON(w, 200, widget{ID: r.PathValue("id"), Size: rec.Size})
				return nil
			}},
		{Method: "POST", Pattern: "/v1/widgets/{id}/explode", Scope: ScopeWrite, OperationID: "explodeWidget", Summary: "panics",
			Audit: "widget.explode", Target: "widget/{id}",
			Handler: func(http.ResponseWriter, *Request) error { panic("boom") }},
	}
}

// headerAuth authenticates by the X-Test-Actor and X-Test-Scopes headers.
var headerAuth = AuthenticatorFunc(func(r *http.Request, scope Scope) (Principal, error) {
	actor := r.Header.Get("X-Test-Actor")
	if actor == "" {
		return Principal{}, fmt.Errorf("%w: no actor", ErrUnauthenticated)
	}
	p := Principal{Actor: actor}
	for _, s := range strings.Split(r.Header.Get("X-Test-Scopes"), " ") {
		p.Scopes = append(p.Scopes, Scope(s))
	}
	if !p.Has(scope) {
		return Principal{}, fmt.Errorf("%w: %s lacks %s", ErrForbidden, actor, scope)
	}
	return p, nil
})

func newTestAPI(t *testing.T, n int) (*httptest.Server, *widgets, *recorder) {
	t.Helper()
	ws := newWidgets(n)
	rec := &recorder{}
	a, err := New(ws.routes(), Options{Authenticator: headerAuth, Auditor: rec,
		MapError: func(err error) *Problem {
			if errors.Is(err, errNoWidget) {
				return Wrap(TypeNotFound, err)
			}
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a)
	t.Cleanup(srv.Close)
	return srv, ws, rec
}

type call struct {
	method, path, body string
	header             map[string]string
}

func do(t *testing.T, srv *httptest.Server, c call) (*http.Response, []byte) {
	t.Helper()
	var body io.Reader
	if c.body != "" {
		body = strings.NewReader(c.body)
	}
	req, err := http.NewRequest(c.method, srv.URL+c.path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Test-Actor", "alice")
	req.Header.Set("X-Test-Scopes", "admin:read admin:write")
	if c.body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range c.header {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, b
}

func problemOf(t *testing.T, resp *http.Response, b []byte) Problem {
	t.Helper()
	if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("status %d content type %q: %s", resp.StatusCode, ct, b)
	}
	var p Problem
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		t.Fatalf("problem %s: %v", b, err)
	}
	if p.Status != resp.StatusCode || p.Title == "" || p.Instance != resp.Request.URL.Path || p.RequestID != resp.Header.Get("X-Request-Id") {
		t.Fatalf("problem fields %+v (status %d, path %s, request id %q)", p, resp.StatusCode, resp.Request.URL.Path, resp.Header.Get("X-Request-Id"))
	}
	return p
}

func TestProblems(t *testing.T) {
	srv, ws, rec := newTestAPI(t, 3)
	cases := []struct {
		name string
		c    call
		want ProblemType
	}{
		{"unknown route", call{method: "GET", path: "/v1/nothing"}, TypeRouteNotFound},
		{"unknown resource", call{method: "GET", path: "/v1/widgets/nope"}, TypeNotFound},
		{"method not allowed", call{method: "DELETE", path: "/v1/widgets/w001"}, TypeMethodNotAllowed},
		{"unauthenticated", call{method: "GET", path: "/v1/widgets", header: map[string]string{"X-Test-Actor": ""}}, TypeUnauthenticated},
		{"read scope only", call{method: "PATCH", path: "/v1/widgets/w001", body: `{"size":1}`,
			header: map[string]string{"X-Test-Scopes": "admin:read", "If-Match": `"1"`}}, TypeForbidden},
		{"no if-match", call{method: "PATCH", path: "/v1/widgets/w001", body: `{"size":1}`}, TypePreconditionRequired},
		{"stale if-match", call{method: "PATCH", path: "/v1/widgets/w001", body: `{"size":1}`, header: map[string]string{"If-Match": `"1"`}}, TypePreconditionFailed},
		{"weak if-match", call{method: "PATCH", path: "/v1/widgets/w001", body: `{"size":1}`, header: map[string]string{"If-Match": `W/"2"`}}, TypePreconditionFailed},
		{"bad if-match", call{method: "PATCH", path: "/v1/widgets/w001", body: `{"size":1}`, header: map[string]string{"If-Match": `2`}}, TypeBadRequest},
		{"unknown field", call{method: "PATCH", path: "/v1/widgets/w001", body: `{"size":1,"colour":"red"}`, header: map[string]string{"If-Match": `"2"`}}, TypeInvalidJSON},
		{"duplicate field", call{method: "PATCH", path: "/v1/widgets/w001", body: `{"size":1,"size":9}`, header: map[string]string{"If-Match": `"2"`}}, TypeInvalidJSON},
		{"trailing data", call{method: "PATCH", path: "/v1/widgets/w001", body: `{"size":1}{}`, header: map[string]string{"If-Match": `"2"`}}, TypeInvalidJSON},
		{"not an object", call{method: "PATCH", path: "/v1/widgets/w001", body: `[1]`, header: map[string]string{"If-Match": `"2"`}}, TypeInvalidJSON},
		{"wrong type", call{method: "PATCH", path: "/v1/widgets/w001", body: `{"size":"big"}`, header: map[string]string{"If-Match": `"2"`}}, TypeInvalidJSON},
		{"no body", call{method: "PATCH", path: "/v1/widgets/w001", header: map[string]string{"If-Match": `"2"`}}, TypeInvalidJSON},
		{"too large", call{method: "PATCH", path: "/v1/widgets/w001", body: `{"size":1` + strings.Repeat(" ", 300) + `}`, header: map[string]string{"If-Match": `"2"`}}, TypePayloadTooLarge},
		{"not json", call{method: "PATCH", path: "/v1/widgets/w001", body: `{"size":1}`, header: map[string]string{"If-Match": `"2"`, "Content-Type": "text/plain"}}, TypeUnsupportedMedia},
		{"bad page size", call{method: "GET", path: "/v1/widgets?page_size=0"}, TypeBadRequest},
		{"huge page size", call{method: "GET", path: "/v1/widgets?page_size=1001"}, TypeBadRequest},
		{"garbage page token", call{method: "GET", path: "/v1/widgets?page_token=%21%21"}, TypeInvalidPageToken},
		{"panic", call{method: "POST", path: "/v1/widgets/w001/explode"}, TypeInternal},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, b := do(t, srv, tc.c)
			p := problemOf(t, resp, b)
			if p.Type != tc.want.URI() || p.Status != tc.want.Status {
				t.Fatalf("got %s %d (%s), want %s", p.Type, p.Status, p.Detail, tc.want.URI())
			}
			if tc.want == TypeMethodNotAllowed && resp.Header.Get("Allow") != "GET, PATCH" {
				t.Fatalf("Allow %q", resp.Header.Get("Allow"))
			}
		})
	}
	// None of the refused changes changed anything.
	if ws.calls != 0 || ws.items["w001"].v != 2 || ws.items["w001"].Size != 1 {
		t.Fatalf("a refused request changed the widget: %+v calls %d", ws.items["w001"], ws.calls)
	}
	// Refusals before the audit (401/403/428) leave a denied record only
	// for the unauthorized write; refusals by the handler are audited as
	// failures after the request record.
	var denied, requested, failures int
	for _, ev := range rec.all() {
		switch ev.Outcome {
		case "denied":
			denied++
		case "requested":
			requested++
		case "failure":
			failures++
		}
	}
	if denied != 1 || requested != failures || requested != 12 {
		t.Fatalf("audit: %d denied, %d requested, %d failures: %+v", denied, requested, failures, rec.all())
	}
}

func TestConditionalUpdate(t *testing.T) {
	srv, ws, rec := newTestAPI(t, 3)
	resp, b := do(t, srv, call{method: "GET", path: "/v1/widgets/w002"})
	etag := resp.Header.Get("ETag")
	if resp.StatusCode != 200 || etag != ETag(3) {
		t.Fatalf("get: %d %s etag %q", resp.StatusCode, b, etag)
	}
	resp, b = do(t, srv, call{method: "PATCH", path: "/v1/widgets/w002", body: `{"size":42}`,
		header: map[string]string{"If-Match": `"ffff", ` + etag, "X-Request-Id": "ticket-17"}})
	if resp.StatusCode != 200 || resp.Header.Get("ETag") == etag || resp.Header.Get("X-Request-Id") != "ticket-17" {
		t.Fatalf("patch: %d %s %v", resp.StatusCode, b, resp.Header)
	}
	// The old tag no longer works; the new one does.
	resp, b = do(t, srv, call{method: "PATCH", path: "/v1/widgets/w002", body: `{"size":43}`, header: map[string]string{"If-Match": etag}})
	if p := problemOf(t, resp, b); p.Type != TypePreconditionFailed.URI() {
		t.Fatalf("stale: %+v", p)
	}
	if ws.items["w002"].Size != 42 || ws.calls != 1 {
		t.Fatalf("widget %+v after %d changes", ws.items["w002"], ws.calls)
	}
	evs := rec.all()
	if len(evs) != 4 || evs[0].Outcome != "requested" || evs[1].Outcome != "success" || evs[1].Actor != "alice" ||
		evs[1].Target != "widget/w002" || evs[1].RequestID != "ticket-17" || evs[1].Fields["size"] != "42" || evs[3].Outcome != "failure" {
		t.Fatalf("audit %+v", evs)
	}
	// A malformed request id is replaced.
	resp, _ = do(t, srv, call{method: "GET", path: "/v1/widgets/w002", header: map[string]string{"X-Request-Id": strings.Repeat("x", 65)}})
	if id := resp.Header.Get("X-Request-Id"); len(id) != 24 {
		t.Fatalf("request id %q", id)
	}
}

func TestAuditFailureRefusesChange(t *testing.T) {
	srv, ws, rec := newTestAPI(t, 2)
	rec.fail = errors.New("disk full")
	resp, b := do(t, srv, call{method: "PATCH", path: "/v1/widgets/w001", body: `{"size":7}`, header: map[string]string{"If-Match": ETag(2)}})
	if p := problemOf(t, resp, b); p.Type != TypeAuditUnavailable.URI() || p.Status != 503 {
		t.Fatalf("%+v", p)
	}
	if ws.calls != 0 || ws.items["w001"].Size != 1 {
		t.Fatal("the change was made without an audit record")
	}
}

func TestPagination(t *testing.T) {
	srv, _, _ := newTestAPI(t, 25)
	for _, size := range []int{1, 4, 7, 25, 100} {
		var got []string
		token := ""
		for pages := 0; pages < 30; pages++ {
			path := fmt.Sprintf("/v1/widgets?page_size=%d&page_token=%s", size, token)
			resp, b := do(t, srv, call{method: "GET", path: path})
			if resp.StatusCode != 200 {
				t.Fatalf("%s: %d %s", path, resp.StatusCode, b)
			}
			var l widgetList
			if err := json.Unmarshal(b, &l); err != nil {
				t.Fatal(err)
			}
			if len(l.Widgets) > size {
				t.Fatalf("page of %d > %d", len(l.Widgets), size)
			}
			for _, w := range l.Widgets {
				got = append(got, w.ID)
			}
			if token = l.NextPageToken; token == "" {
				break
			}
		}
		if len(got) != 25 || !sort.StringsAreSorted(got) || got[0] != "w000" || got[24] != "w024" {
			t.Fatalf("size %d: walked %v", size, got)
		}
	}
	// A token is bound to its listing's filters.
	resp, b := do(t, srv, call{method: "GET", path: "/v1/widgets?page_size=2"})
	var l widgetList
	_ = json.Unmarshal(b, &l)
	resp, b = do(t, srv, call{method: "GET", path: "/v1/widgets?min_size=3&page_token=" + l.NextPageToken})
	if p := problemOf(t, resp, b); p.Type != TypeInvalidPageToken.URI() {
		t.Fatalf("%+v", p)
	}
}

func TestRouteTableChecks(t *testing.T) {
	h := func(http.ResponseWriter, *Request) error { return nil }
	ok := Route{Method: "GET", Pattern: "/v1/x", Scope: ScopeRead, OperationID: "getX", Handler: h}
	for name, rt := range map[string]Route{
		"no scope":             {Method: "GET", Pattern: "/v1/y", OperationID: "getY", Handler: h},
		"bad pattern":          {Method: "GET", Pattern: "/v1/y/{rest...}", Scope: ScopeRead, OperationID: "getY", Handler: h},
		"outside v1":           {Method: "GET", Pattern: "/admin/y", Scope: ScopeRead, OperationID: "getY", Handler: h},
		"duplicate":            ok,
		"duplicate op":         {Method: "GET", Pattern: "/v1/y", Scope: ScopeRead, OperationID: "getX", Handler: h},
		"unaudited change":     {Method: "POST", Pattern: "/v1/y", Scope: ScopeWrite, OperationID: "postY", Handler: h},
		"change with read":     {Method: "POST", Pattern: "/v1/y", Scope: ScopeRead, OperationID: "postY", Audit: "y", Handler: h},
		"no handler":           {Method: "GET", Pattern: "/v1/y", Scope: ScopeRead, OperationID: "getY"},
		"conditional get":      {Method: "GET", Pattern: "/v1/y", Scope: ScopeRead, OperationID: "getY", Conditional: true, Handler: h},
		"method":               {Method: "TRACE", Pattern: "/v1/y", Scope: ScopeRead, OperationID: "traceY", Handler: h},
		"openapi path is used": {Method: "GET", Pattern: OpenAPIPath, Scope: ScopeRead, OperationID: "getY", Handler: h},
	} {
		if _, err := New([]Route{ok, rt}, Options{Authenticator: headerAuth, Auditor: &recorder{}}); !errors.Is(err, ErrInvalidRoute) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := New([]Route{ok}, Options{}); !errors.Is(err, ErrInvalidRoute) {
		t.Errorf("no authenticator: %v", err)
	}
}

func TestOpenAPIDocument(t *testing.T) {
	srv, _, _ := newTestAPI(t, 1)
	resp, b := do(t, srv, call{method: "GET", path: OpenAPIPath})
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	var doc struct {
		OpenAPI string                               `json:"openapi"`
		Paths   map[string]map[string]map[string]any `json:"paths"`
		Comps   struct {
			Schemas map[string]map[string]any `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.OpenAPI != "3.1.0" {
		t.Fatalf("openapi %q", doc.OpenAPI)
	}
	want := map[string][]string{"/v1/widgets": {"get"}, "/v1/widgets/{id}": {"get", "patch"}, "/v1/widgets/{id}/explode": {"post"},
		OpenAPIPath: {"get"}}
	if len(doc.Paths) != len(want) {
		t.Fatalf("paths %v", doc.Paths)
	}
	for p, ms := range want {
		if len(doc.Paths[p]) != len(ms) {
			t.Fatalf("%s: %v", p, doc.Paths[p])
		}
		for _, m := range ms {
			if doc.Paths[p][m]["operationId"] == nil {
				t.Fatalf("%s %s undocumented", m, p)
			}
		}
	}
	patch := doc.Paths["/v1/widgets/{id}"]["patch"]
	if patch["x-avon-scope"] != "admin:write" || patch["requestBody"] == nil {
		t.Fatalf("patch %v", patch)
	}
	w := doc.Comps.Schemas["widget"]
	if w["type"] != "object" || w["additionalProperties"] != false || fmt.Sprint(w["required"]) != "[id size]" {
		t.Fatalf("widget schema %v", w)
	}
	if doc.Comps.Schemas["Problem"] == nil {
		t.Fatal("no Problem schema")
	}
}

// TestPeerCredAuthenticator serves the API on a real unix socket: the
// kernel's credentials of this process pass; a policy without this uid is
// refused.
func TestPeerCredAuthenticator(t *testing.T) {
	ws := newWidgets(1)
	for _, tc := range []struct {
		name string
		uids []uint32
		want int
	}{{"own uid", nil, 200}, {"other uid only", []uint32{4242424}, 403}} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := New(ws.routes(), Options{Authenticator: PeerCredAuthenticator{UIDs: tc.uids}, Auditor: &recorder{}})
			if err != nil {
				t.Fatal(err)
			}
			sock := filepath.Join(t.TempDir(), "a.sock")
			ln, err := net.Listen("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			srv := &http.Server{Handler: a, ConnContext: PeerConnContext, ReadHeaderTimeout: 5 * time.Second}
			go func() { _ = srv.Serve(ln) }()
			t.Cleanup(func() { _ = srv.Close() })
			c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "unix", sock)
			}}}
			resp, err := c.Get("http://admin/v1/widgets")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d (uid %d)", resp.StatusCode, tc.want, os.Getuid())
			}
		})
	}
	// Over TCP there are no peer credentials: refused.
	a, _ := New(ws.routes(), Options{Authenticator: PeerCredAuthenticator{}, Auditor: &recorder{}})
	srv := httptest.NewServer(a)
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/v1/widgets")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("tcp: %d", resp.StatusCode)
	}
}

type challengeErr struct{ error }

func (challengeErr) WWWAuthenticate() string { return `Bearer realm="avon"` }
func (c challengeErr) Unwrap() error         { return c.error }

// TestChallengeAndSafeRoutes: an authenticator's challenge reaches the
// 401; a safe POST needs only admin:read and writes no audit record.
func TestChallengeAndSafeRoutes(t *testing.T) {
	rec := &recorder{}
	auth := AuthenticatorFunc(func(r *http.Request, scope Scope) (Principal, error) {
		if r.Header.Get("Authorization") == "" {
			return Principal{}, challengeErr{fmt.Errorf("%w: no bearer token", ErrUnauthenticated)}
		}
		return Principal{Actor: "user:bob", Scopes: []Scope{ScopeRead}}, nil
	})
	a, err := New([]Route{{Method: "POST", Pattern: "/v1/things/check", Scope: ScopeRead, Safe: true, OperationID: "checkThing",
		Handler: func(w http.ResponseWriter, r *Request) error { JSON(w, 200, map[string]bool{"ok": true}); return nil }}},
		Options{Authenticator: auth, Auditor: rec})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a)
	defer srv.Close()
	resp, err := srv.Client().Post(srv.URL+"/v1/things/check", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") != `Bearer realm="avon"` {
		t.Fatalf("%d %v", resp.StatusCode, resp.Header)
	}
	req, _ := http.NewRequest("POST", srv.URL+"/v1/things/check", strings.NewReader("{}"))
	req.Header.Set("Authorization", "Bearer x")
	resp, err = srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || len(rec.all()) != 0 {
		t.Fatalf("safe route: %d, audit %+v", resp.StatusCode, rec.all())
	}
	if _, err := New([]Route{{Method: "GET", Pattern: "/v1/x", Scope: ScopeRead, Safe: true, OperationID: "getX",
		Handler: func(http.ResponseWriter, *Request) error { return nil }}}, Options{Authenticator: auth}); !errors.Is(err, ErrInvalidRoute) {
		t.Fatalf("a safe GET: %v", err)
	}
}
