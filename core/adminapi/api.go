package adminapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/avonzt/avon/sdk/host"
)

// HandlerFunc serves one route. It writes a success response (JSON, with
// an ETag when the resource has one) or returns an error, which the
// framework sends as a problem; it must not write anything before
// returning an error.
type HandlerFunc func(w http.ResponseWriter, r *Request) error

// Param documents a query parameter.
type Param struct {
	Name        string
	Description string
	Type        string // JSON Schema type: "string" (default), "integer", "boolean"
	Required    bool
}

// Route is one entry of the route table.
type Route struct {
	Method  string // GET, POST, PUT, PATCH or DELETE
	Pattern string // a net/http pattern path under /v1/, e.g. "/v1/agents/{id}"
	Scope   Scope  // what the caller must hold
	// OperationID and Summary name the route in the OpenAPI document.
	OperationID string
	Summary     string
	Tag         string // OpenAPI tag (default: the first path segment after /v1/)
	Query       []Param
	// Paged routes take page_size and page_token and answer a
	// next_page_token (documented automatically).
	Paged bool
	// Request is a value of the body type (nil: no body). Response is a
	// value of the success body type (nil: no body). Status is the
	// success status (default 200). ContentType replaces
	// application/json for a non-JSON success body (the CRL).
	Request     any
	Response    any
	Status      int
	ContentType string
	// ETag: the success response carries a strong ETag.
	ETag bool
	// Conditional routes require If-Match (428 without it, before the
	// handler runs); the handler compares it with CheckIfMatch (412).
	Conditional bool
	// Audit is the audit action of a route that changes state (required
	// for every method but GET), Target the audit target with {name}
	// replaced by the path value, e.g. "agent/{id}".
	Audit  string
	Target string
	// Safe marks a POST that changes nothing (validation, a dry run): it
	// may need only admin:read and is not audited.
	Safe bool
	// MaxBody bounds the request body (default DefaultMaxBody).
	MaxBody int64
	Handler HandlerFunc
}

func (rt *Route) mutating() bool { return rt.Method != http.MethodGet && !rt.Safe }

// Auditor records audit events; core/audit.Log is one.
type Auditor interface {
	Emit(ctx context.Context, source string, ev host.Event) error
}

// Options configure an API.
type Options struct {
	Authenticator Authenticator // required
	Auditor       Auditor       // required when a route changes state
	Logger        hclog.Logger  // nil: no logging
	// MapError turns a handler's domain error into a problem; nil or a
	// nil result leaves it an internal error (500).
	MapError func(error) *Problem
	// Rand makes request ids (default crypto/rand).
	Rand io.Reader
	// Title and Version go into the OpenAPI document's info.
	Title   string
	Version string
}

// API is a route table served over HTTP.
type API struct {
	opts     Options
	routes   []Route
	mux      *http.ServeMux
	patterns []string // every pattern registered on mux
	doc      []byte   // the OpenAPI document
}

// OpenAPIPath is where the OpenAPI document is served.
const OpenAPIPath = "/v1/openapi.json"

var (
	methods    = []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete}
	patternRE  = regexp.MustCompile(`^/v1(/([a-z0-9._-]+|\{[a-z_]+\}))+$`)
	opIDRE     = regexp.MustCompile(`^[a-z][A-Za-z0-9]*$`)
	requestIDR = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,64}$`)
)

// New checks the route table and returns the API serving it, with
// GET /v1/openapi.json added. A table mistake is an error wrapping
// ErrInvalidRoute.
func New(routes []Route, opts Options) (*API, error) {
	if opts.Authenticator == nil {
		return nil, fmt.Errorf("%w: an Authenticator is required", ErrInvalidRoute)
	}
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	if opts.Rand == nil {
		opts.Rand = rand.Reader
	}
	if opts.Title == "" {
		opts.Title = "AVON Admin API"
	}
	if opts.Version == "" {
		opts.Version = "v1"
	}
	a := &API{opts: opts, mux: http.NewServeMux()}
	all := append(slices.Clone(routes), Route{Method: http.MethodGet, Pattern: OpenAPIPath, Scope: ScopeRead, OperationID: "getOpenAPI",
		Summary: "This OpenAPI 3.1 document", Tag: "meta", Response: map[string]any{},
		Handler: func(w http.ResponseWriter, _ *Request) error {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(a.doc)
			return nil
		}})
	seen := map[string]bool{}
	ops := map[string]bool{}
	byPath := map[string][]string{}
	for i := range all {
		rt := &all[i]
		key := rt.Method + " " + rt.Pattern
		switch {
		case !slices.Contains(methods, rt.Method):
			return nil, fmt.Errorf("%w: %s: method", ErrInvalidRoute, key)
		case !patternRE.MatchString(rt.Pattern):
			return nil, fmt.Errorf("%w: %s: pattern must be /v1/ then lowercase segments or {name}", ErrInvalidRoute, key)
		case seen[key]:
			return nil, fmt.Errorf("%w: %s twice", ErrInvalidRoute, key)
		case rt.Scope != ScopeRead && rt.Scope != ScopeWrite:
			return nil, fmt.Errorf("%w: %s: scope %q", ErrInvalidRoute, key, rt.Scope)
		case !opIDRE.MatchString(rt.OperationID) || ops[rt.OperationID]:
			return nil, fmt.Errorf("%w: %s: operation id %q missing, malformed or repeated", ErrInvalidRoute, key, rt.OperationID)
		case rt.Handler == nil:
			return nil, fmt.Errorf("%w: %s: no handler", ErrInvalidRoute, key)
		case rt.mutating() && (rt.Audit == "" || opts.Auditor == nil):
			return nil, fmt.Errorf("%w: %s changes state: it needs an audit action and the API an Auditor", ErrInvalidRoute, key)
		case rt.mutating() && rt.Scope != ScopeWrite:
			return nil, fmt.Errorf("%w: %s changes state: it needs %s", ErrInvalidRoute, key, ScopeWrite)
		case rt.Safe && rt.Method != http.MethodPost:
			return nil, fmt.Errorf("%w: %s: only a POST can be safe", ErrInvalidRoute, key)
		case rt.Conditional && rt.Method != http.MethodPut && rt.Method != http.MethodPatch && rt.Method != http.MethodDelete && rt.Method != http.MethodPost:
			return nil, fmt.Errorf("%w: %s: only changes are conditional", ErrInvalidRoute, key)
		}
		seen[key], ops[rt.OperationID] = true, true
		if rt.Status == 0 {
			rt.Status = http.StatusOK
		}
		if rt.MaxBody == 0 {
			rt.MaxBody = DefaultMaxBody
		}
		if rt.Tag == "" {
			rt.Tag = strings.SplitN(strings.TrimPrefix(rt.Pattern, "/v1/"), "/", 2)[0]
		}
		byPath[rt.Pattern] = append(byPath[rt.Pattern], rt.Method)
		a.handle(key, a.serve(rt))
	}
	paths := make([]string, 0, len(byPath))
	for p := range byPath {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		allow := byPath[p]
		sort.Strings(allow)
		a.handle(p, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			a.fail(w, r, "", Problemf(TypeMethodNotAllowed, "%s %s: allowed %s", r.Method, p, strings.Join(allow, ", ")))
		}))
	}
	a.handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.fail(w, r, "", NewProblem(TypeRouteNotFound, fmt.Sprintf("no route %s %.200s (see %s)", r.Method, r.URL.Path, OpenAPIPath)))
	}))
	a.routes = all
	doc, err := a.openAPI()
	if err != nil {
		return nil, err
	}
	a.doc = doc
	return a, nil
}

func (a *API) handle(pattern string, h http.Handler) {
	a.patterns = append(a.patterns, pattern)
	a.mux.Handle(pattern, h)
}

// ServeHTTP implements http.Handler.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.mux.ServeHTTP(w, r) }

// Routes returns the route table (with the OpenAPI route and defaults).
func (a *API) Routes() []Route { return slices.Clone(a.routes) }

// Patterns returns every pattern registered on the mux: one per route, one
// method-less fallback per path (405) and "/" (404).
func (a *API) Patterns() []string { return slices.Clone(a.patterns) }

// OpenAPI returns the OpenAPI 3.1 document.
func (a *API) OpenAPI() []byte { return slices.Clone(a.doc) }

// Request is an authenticated request to a route.
type Request struct {
	*http.Request
	Principal Principal
	ID        string // the request id
	route     *Route
	fields    map[string]string
}

// Route returns the route being served.
func (r *Request) Route() Route { return *r.route }

// Decode reads the body, which must be present, into v strictly (see
// DecodeStrict). Its errors are problems.
func (r *Request) Decode(v any) error {
	present, err := r.DecodeOptional(v)
	if err == nil && !present {
		err = NewProblem(TypeInvalidJSON, "a JSON body is required")
	}
	return err
}

// DecodeOptional is Decode for an optional body: an empty body leaves v
// alone and reports false.
func (r *Request) DecodeOptional(v any) (bool, error) {
	if r.Body == nil {
		return false, nil
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, r.route.MaxBody+1))
	if err != nil {
		return false, Problemf(TypeBadRequest, "reading the body: %v", err)
	}
	if int64(len(b)) > r.route.MaxBody {
		return false, NewProblem(TypePayloadTooLarge, fmt.Sprintf("at most %d bytes", r.route.MaxBody))
	}
	if len(strings.TrimSpace(string(b))) == 0 {
		return false, nil
	}
	if !isJSONMedia(r.Header.Get("Content-Type")) {
		return false, NewProblem(TypeUnsupportedMedia, fmt.Sprintf("Content-Type %.80q: want application/json", r.Header.Get("Content-Type")))
	}
	if err := DecodeStrict(b, v); err != nil {
		return false, Wrap(TypeInvalidJSON, err)
	}
	return true, nil
}

// Page parses page_size and page_token for listing (see ParsePage).
func (r *Request) Page(listing string) (Page, error) {
	q := r.URL.Query()
	return ParsePage(listing, q.Get("page_size"), q.Get("page_token"))
}

// CheckIfMatch compares the request's If-Match with the resource's
// current strong ETag: a precondition-failed problem when it does not
// match. (A Conditional route never runs without If-Match.)
func (r *Request) CheckIfMatch(current string) error {
	m, err := ParseIfMatch(r.Header.Get("If-Match"))
	if err != nil {
		return Wrap(TypeBadRequest, err)
	}
	if !m.Matches(current) {
		return NewProblem(TypePreconditionFailed, fmt.Sprintf("the resource is at %s; read it again and retry", current))
	}
	return nil
}

// AuditField adds a field to the route's outcome audit record.
func (r *Request) AuditField(k, v string) {
	if r.fields == nil {
		r.fields = map[string]string{}
	}
	r.fields[k] = v
}

// JSON writes v as the success response with status.
func JSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeProblem(w, Wrap(TypeInternal, err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// statusWriter remembers the status written.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// requestID returns the caller's X-Request-Id when well formed, else a
// new one.
func (a *API) requestID(r *http.Request) string {
	if id := r.Header.Get("X-Request-Id"); requestIDR.MatchString(id) {
		return id
	}
	b := make([]byte, 12)
	if _, err := io.ReadFull(a.opts.Rand, b); err != nil {
		return fmt.Sprintf("t%x", time.Now().UnixNano())
	}
	return hex.EncodeToString(b)
}

// fail sends p for r.
func (a *API) fail(w http.ResponseWriter, r *http.Request, id string, p *Problem) {
	if id == "" {
		id = a.requestID(r)
		w.Header().Set("X-Request-Id", id)
	}
	q := *p
	q.Instance, q.RequestID = r.URL.Path, id
	writeProblem(w, &q)
}

// problemOf turns a handler's error into a problem.
func (a *API) problemOf(err error) *Problem {
	var p *Problem
	if errors.As(err, &p) {
		return p
	}
	if a.opts.MapError != nil {
		if p := a.opts.MapError(err); p != nil {
			return p
		}
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return Wrap(TypeUnavailable, err)
	}
	return Wrap(TypeInternal, err)
}

// target expands the route's audit target with the path values.
func target(rt *Route, r *http.Request) string {
	t := rt.Target
	for {
		i := strings.IndexByte(t, '{')
		j := strings.IndexByte(t, '}')
		if i < 0 || j < i {
			break
		}
		v := r.PathValue(t[i+1 : j])
		if len(v) > 256 {
			v = v[:256]
		}
		v = strings.ToValidUTF8(v, "?")
		t = t[:i] + v + t[j+1:]
	}
	return t
}

// serve wraps a route's handler with the conventions.
func (a *API) serve(rt *Route) http.Handler {
	return http.HandlerFunc(func(hw http.ResponseWriter, hr *http.Request) {
		start := time.Now()
		id := a.requestID(hr)
		hw.Header().Set("X-Request-Id", id)
		w := &statusWriter{ResponseWriter: hw}
		r := &Request{Request: hr, ID: id, route: rt}
		var actor string
		defer func() {
			if v := recover(); v != nil {
				a.opts.Logger.Error("admin handler panicked", "route", rt.Method+" "+rt.Pattern, "request_id", id, "panic", fmt.Sprint(v))
				if w.status == 0 {
					a.fail(w, hr, id, NewProblem(TypeInternal, "the handler failed; see the core's log"))
				}
				if rt.mutating() && actor != "" {
					a.auditOutcome(hr.Context(), rt, r, actor, "failure", "handler panicked")
				}
			}
			a.opts.Logger.Debug("admin request", "method", hr.Method, "path", hr.URL.Path, "status", w.status, "actor", actor,
				"request_id", id, "duration", time.Since(start))
		}()

		p, err := a.opts.Authenticator.Authenticate(hr, rt.Scope)
		if err != nil {
			var prob *Problem
			switch {
			case errors.Is(err, ErrUnauthenticated):
				prob = Wrap(TypeUnauthenticated, err)
			case errors.Is(err, ErrForbidden):
				prob = Wrap(TypeForbidden, err)
			default:
				prob = Wrap(TypeUnavailable, fmt.Errorf("authentication could not be checked: %w", err))
			}
			var ch interface{ WWWAuthenticate() string }
			if errors.As(err, &ch) && ch.WWWAuthenticate() != "" {
				w.Header().Set("WWW-Authenticate", ch.WWWAuthenticate())
			}
			if rt.mutating() {
				a.auditOutcome(hr.Context(), rt, r, "unauthenticated", "denied", err.Error())
			}
			a.fail(w, hr, id, prob)
			return
		}
		if !p.Has(rt.Scope) { // an Authenticator that forgot to check
			a.fail(w, hr, id, NewProblem(TypeForbidden, fmt.Sprintf("%s needs the %s scope", rt.OperationID, rt.Scope)))
			return
		}
		r.Principal, actor = p, p.Actor
		if rt.Conditional && strings.TrimSpace(hr.Header.Get("If-Match")) == "" {
			a.fail(w, hr, id, NewProblem(TypePreconditionRequired, "this change needs If-Match with the ETag of the resource as last read"))
			return
		}
		if rt.mutating() {
			// Recorded first: a change that cannot be audited is not made.
			if err := a.opts.Auditor.Emit(hr.Context(), "core", host.Event{Actor: actor, Action: rt.Audit, Target: target(rt, hr),
				Outcome: "requested", RequestID: id}); err != nil {
				a.opts.Logger.Error("admin change refused: audit failed", "action", rt.Audit, "request_id", id, "error", err)
				a.fail(w, hr, id, Wrap(TypeAuditUnavailable, err))
				return
			}
		}
		herr := rt.Handler(w, r)
		if herr != nil {
			prob := a.problemOf(herr)
			if prob.Status >= 500 {
				a.opts.Logger.Warn("admin request failed", "route", rt.Method+" "+rt.Pattern, "request_id", id, "actor", actor, "error", herr)
			}
			if w.status == 0 {
				a.fail(w, hr, id, prob)
			}
			if rt.mutating() {
				a.auditOutcome(hr.Context(), rt, r, actor, "failure", prob.Detail)
			}
			return
		}
		if w.status == 0 {
			w.WriteHeader(rt.Status)
		}
		if rt.mutating() {
			a.auditOutcome(hr.Context(), rt, r, actor, "success", "")
		}
	})
}

// auditOutcome records how a change ended; a failure to record it is
// logged (the change was recorded as requested before it was made).
func (a *API) auditOutcome(ctx context.Context, rt *Route, r *Request, actor, outcome, reason string) {
	if actor == "" {
		actor = "unauthenticated"
	}
	if len(reason) > 1000 {
		reason = strings.ToValidUTF8(reason[:1000], "")
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := a.opts.Auditor.Emit(ctx, "core", host.Event{Actor: actor, Action: rt.Audit, Target: target(rt, r.Request),
		Outcome: outcome, Reason: reason, RequestID: r.ID, Fields: r.fields}); err != nil {
		a.opts.Logger.Error("audit of an admin change's outcome failed", "action", rt.Audit, "outcome", outcome, "request_id", r.ID, "error", err)
	}
}
