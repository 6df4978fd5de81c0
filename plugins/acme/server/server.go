// Package server is the RFC 8555 protocol of the acme plugin: directory,
// nonces, accounts (with key rollover and external account binding),
// orders, authorizations and challenges, finalization through the CA
// plugin, certificate download, revocation and renewal information
// (RFC 9773). The core forwards every HTTP request under /acme/ to the
// plugin, which hands it to Server.Handle.
//
// State lives in the plugin's host storage (accounts, orders,
// authorizations, certificates) and is changed only by conditional puts on
// the version read, so several core replicas serving one storage agree:
// of two concurrent finalizations of one order exactly one issues. Nonces
// live in the host cache and are consumed atomically, so a nonce is good
// once across every replica (nonce.go).
//
// Requests are checked in the order Boulder's wfe2 checks them: content
// type, JWS structure and algorithm, jwk-or-kid, the account, the
// algorithm against the key, the signature, the nonce, then the url. The
// nonce is used up as soon as the request arrives, together with the
// request's reads, and its verdict applied in that order: a request that
// fails an earlier check has used its nonce up all the same.
//
// Challenge validation is synchronous: the POST that answers a challenge
// returns it valid or invalid. Finalization is too: the POST returns the
// order valid with its certificate URL (or the error). A request's
// independent round trips to the core (clock, account, resource, the
// answer's nonce, the writes of one step) are made concurrently; see
// prefetch.go. The package does no I/O of its own beyond its dependencies
// (storage, cache, CA, validator) and takes randomness and the calibrated
// time from them (a calibrated reading aged by the local monotonic clock
// for up to Config.ClockReuse, one second by default);
// it must not log secrets (keys, EAB MAC keys).
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/avonzt/avon/plugins/acme/jose"
	"github.com/avonzt/avon/sdk/acme"
	"github.com/avonzt/avon/sdk/ca"
	"github.com/avonzt/avon/sdk/host"
)

// Validator checks that a challenge was met: it returns nil when it was,
// else the problem (connection, dns, tls, incorrectResponse, ...).
type Validator interface {
	Validate(ctx context.Context, req ValidationRequest) *Problem
}

// ValidationRequest is one challenge to check.
type ValidationRequest struct {
	Type             string // http-01, dns-01, tls-alpn-01
	Domain           string // without a wildcard label
	Token            string
	KeyAuthorization string // token "." account key thumbprint
}

// Deps are what the server works with.
type Deps struct {
	Storage   host.Storage
	Cache     host.Cache
	CA        ca.CA
	Rand      io.Reader
	Clock     func(ctx context.Context) (host.Time, error)
	Audit     func(ctx context.Context, ev host.Event) error
	Validator Validator
	Log       hclog.Logger
}

// Profile is a certificate profile offered to clients (the "profile" of
// a new order): the CA profile it issues under and its lifetime.
type Profile struct {
	Description string
	CAProfile   string
	Lifetime    time.Duration // 0: the CA profile's default
}

// Config is what the operator sets.
type Config struct {
	// CAProfile is the CA profile orders without a profile issue under
	// ("server").
	CAProfile string
	// Profiles are extra profiles a new order may name; "" is the default.
	Profiles map[string]Profile
	// ClassicalIssuer and PQIssuer name the CA issuers for ECDSA and
	// ML-DSA CSRs ("" lets the CA choose: its classical issuer for a
	// classical key when it has one).
	ClassicalIssuer string
	PQIssuer        string
	// KeyTypes are the CSR key algorithms accepted (pqx509 names).
	KeyTypes []string
	// TermsOfService is the URL in the directory; with RequireTerms, new
	// accounts must agree.
	TermsOfService string
	RequireTerms   bool
	// RequireEAB makes external account binding mandatory.
	RequireEAB bool
	// AllowedDomains, when not empty, are the domains (and their
	// subdomains) orders may name.
	AllowedDomains []string
	// Wildcards allows wildcard identifiers (dns-01 only).
	Wildcards bool
	// NonceTTL, OrderTTL and AuthzTTL bound the lifetimes.
	NonceTTL, OrderTTL, AuthzTTL time.Duration
	// ClockReuse is how long a calibrated reading of the core's clock
	// is reused, aged by the local monotonic clock (default
	// DefaultClockReuse; negative: read the core's clock on every
	// request).
	ClockReuse time.Duration
	// ValidationTimeout bounds one challenge validation.
	ValidationTimeout time.Duration
	// MaxIdentifiers bounds the identifiers of one order.
	MaxIdentifiers int
	// Rate limits (0 = none): new orders per account per hour, new
	// accounts per client address per hour.
	OrdersPerHour, AccountsPerHour int
	// Retention is how long an invalid order and its authorizations are
	// kept after the order expired, before Tick deletes them; SweepBatch
	// bounds the orders one Tick examines (tick.go).
	Retention  time.Duration
	SweepBatch int
}

// Defaults of Config.
const (
	DefaultNonceTTL          = time.Hour
	DefaultOrderTTL          = 24 * time.Hour
	DefaultAuthzTTL          = 24 * time.Hour
	DefaultValidationTimeout = 10 * time.Second
	DefaultMaxIdentifiers    = 100
	DefaultClockReuse        = time.Second
)

// DefaultKeyTypes are the CSR key algorithms accepted by default.
var DefaultKeyTypes = []string{"ECDSA-P256", "ECDSA-P384", "Ed25519", "RSA-2048", "RSA-3072", "RSA-4096", "ML-DSA-44", "ML-DSA-65", "ML-DSA-87"}

// Server answers ACME requests. It is safe for concurrent use.
type Server struct {
	cfg    Config
	deps   Deps
	chains chainCache // the CA's alternate chains (chains.go)
	// clk reads the core's clock, reusing a calibrated reading for up
	// to ClockReuse.
	clk *host.ReusedClock
	// noApply is set once the storage answered that it cannot apply
	// batches (apply.go).
	noApply atomic.Bool
	// noAudited is set once the storage answered that it cannot apply
	// audited batches (apply.go).
	noAudited atomic.Bool
	// noOnce is set once the CA answered that it cannot issue under a
	// key (ca.OnceIssuer); finalizations then claim the order first.
	noOnce atomic.Bool

	// sweep is the clean-up's position (tick.go); mu is held by the one
	// Tick running.
	sweep struct {
		mu    sync.Mutex
		after string // the last order key examined; "" = from the start
	}
}

// New returns a server; it checks the configuration and the dependencies.
func New(cfg Config, deps Deps) (*Server, error) {
	if deps.Storage == nil || deps.Cache == nil || deps.CA == nil || deps.Rand == nil || deps.Clock == nil || deps.Validator == nil {
		return nil, fmt.Errorf("storage, cache, CA, rand, clock and validator are required: %w", ErrConfig)
	}
	if deps.Audit == nil {
		deps.Audit = func(context.Context, host.Event) error { return nil }
	}
	if deps.Log == nil {
		deps.Log = hclog.NewNullLogger()
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.NonceTTL, DefaultNonceTTL)
	def(&cfg.OrderTTL, DefaultOrderTTL)
	def(&cfg.AuthzTTL, DefaultAuthzTTL)
	def(&cfg.ValidationTimeout, DefaultValidationTimeout)
	if cfg.ClockReuse == 0 {
		cfg.ClockReuse = DefaultClockReuse
	}
	def(&cfg.Retention, DefaultRetention)
	if cfg.SweepBatch <= 0 {
		cfg.SweepBatch = DefaultSweepBatch
	}
	cfg.SweepBatch = min(cfg.SweepBatch, maxSweepBatch)
	if cfg.MaxIdentifiers <= 0 {
		cfg.MaxIdentifiers = DefaultMaxIdentifiers
	}
	if cfg.CAProfile == "" {
		cfg.CAProfile = "server"
	}
	if len(cfg.KeyTypes) == 0 {
		cfg.KeyTypes = DefaultKeyTypes
	}
	for i, d := range cfg.AllowedDomains {
		cfg.AllowedDomains[i] = strings.TrimSuffix(strings.ToLower(d), ".")
	}
	if cfg.NonceTTL > host.MaxCacheTTL {
		return nil, fmt.Errorf("nonce ttl %v exceeds %v: %w", cfg.NonceTTL, host.MaxCacheTTL, ErrConfig)
	}
	return &Server{cfg: cfg, deps: deps, clk: host.NewReusedClock(deps.Clock, cfg.ClockReuse)}, nil
}

// request is one HTTP request being answered.
type request struct {
	*acme.HTTPRequest
	base string    // BaseURL without a trailing slash
	now  time.Time // the core's calibrated time when the request arrived
	read time.Time // the local clock then (monotonic), to age now by
	jws  *jose.JWS // the body parsed by readAhead; nil: verifyPOST parses it
	// nonce is the use of the JWS nonce readAhead started; nil: none.
	nonce *pendingNonce
	// fresh stores the answer's nonce (Handle); ahead is closed once
	// readAhead's round trip, which carries it, is done (nil: none).
	fresh *host.CachePutCall
	ahead chan struct{}

	wg      sync.WaitGroup // goroutines of the request; Handle waits for them
	mu      sync.Mutex     // guards pending
	pending map[string]*pendingGet
}

// url is the absolute URL of a path under the mount point.
func (r *request) url(path string) string { return r.base + path }

// response is built by the handlers.
type response struct {
	status int
	header http.Header
	body   []byte
}

func jsonResponse(status int, v any) *response {
	b, _ := json.Marshal(v)
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	return &response{status: status, header: h, body: b}
}

// Handle answers one request. Protocol errors are responses; an error is
// returned only when no answer can be given at all.
func (s *Server) Handle(ctx context.Context, hr *acme.HTTPRequest) (*acme.HTTPResponse, error) {
	r := &request{HTTPRequest: hr, base: strings.TrimSuffix(hr.BaseURL, "/")}
	defer r.wg.Wait()
	// Every response to a POST carries a fresh nonce (RFC 8555 6.5): it
	// is stored with the request's reads (readAhead), or on its own when
	// the request did not get that far.
	var n string
	if hr.Method == http.MethodPost {
		var err error
		if n, r.fresh, err = s.freshNonce(); err != nil {
			s.deps.Log.Warn("no nonce for the response", "error", err)
		}
	}
	resp, p := s.route(ctx, r)
	if p != nil {
		resp = &response{status: p.Status, header: http.Header{}, body: p.body()}
		for k, v := range p.header {
			resp.header[k] = v
		}
		resp.header.Set("Content-Type", "application/problem+json")
		if p.kind == ProbServerInternal {
			s.deps.Log.Warn("request failed", "method", hr.Method, "path", hr.Path, "detail", p.Detail)
		}
	}
	if resp.header == nil {
		resp.header = http.Header{}
	}
	resp.header.Set("Cache-Control", "no-store")
	resp.header.Add("Link", `<`+r.url("/directory")+`>;rel="index"`)
	// badNonce always carries a fresh nonce too.
	switch {
	case r.fresh != nil:
		if r.ahead != nil {
			<-r.ahead
		} else {
			host.Gather(ctx, s.deps.Storage, s.deps.Cache, r.fresh)
		}
		if r.fresh.Err == nil {
			resp.header.Set("Replay-Nonce", n)
		} else {
			s.deps.Log.Warn("no nonce for the response", "error", r.fresh.Err)
		}
	case p != nil && p.kind == ProbBadNonce:
		if fresh, err := s.newNonce(ctx); err == nil {
			resp.header.Set("Replay-Nonce", fresh)
		} else {
			s.deps.Log.Warn("no nonce for the response", "error", err)
		}
	}
	return &acme.HTTPResponse{Status: resp.status, Header: resp.header, Body: resp.body}, nil
}

// internal turns an unexpected error into a serverInternal problem.
func internal(what string, err error) *Problem {
	if errors.Is(err, ErrNotCalibrated) {
		return prob(ProbServerInternal, "%s: the server's clock is not calibrated; try again later", what).withStatus(http.StatusServiceUnavailable)
	}
	return prob(ProbServerInternal, "%s: %v", what, err)
}

// clock reads the calibrated time; it fails closed. A calibrated reading
// is reused for up to ClockReuse, aged by the local monotonic clock (which
// drifts by parts per million over that time), so a busy server asks the
// core about once per ClockReuse instead of on every request; a core that
// lost its calibration is noticed within ClockReuse.
func (s *Server) clock(ctx context.Context) (time.Time, error) {
	t, err := s.clk.Now(ctx)
	if errors.Is(err, host.ErrNotCalibrated) {
		return time.Time{}, ErrNotCalibrated
	}
	return t, err
}

// since is the core's time now, without a round trip: the time read when
// the request arrived aged by the local monotonic clock since.
func (r *request) since() time.Time { return r.now.Add(time.Since(r.read)) }

// route dispatches on method and path.
func (s *Server) route(ctx context.Context, r *request) (*response, *Problem) {
	path := r.Path
	seg := strings.Split(strings.Trim(path, "/"), "/")
	method := r.Method
	if method == http.MethodHead && path != "/new-nonce" {
		method = http.MethodGet
	}
	switch {
	case path == "/directory" || path == "/" || path == "":
		if method != http.MethodGet {
			return nil, methodNotAllowed("GET")
		}
		return s.directory(r), nil
	case path == "/new-nonce":
		return s.handleNewNonce(ctx, r)
	case len(seg) == 2 && seg[0] == "renewal-info" && method == http.MethodGet:
		return s.renewalInfo(ctx, r, seg[1])
	case path == "/admin/eab":
		// The core forwards this from its admin socket only; it never
		// forwards /admin/ from the network.
		if method != http.MethodPost {
			return nil, methodNotAllowed("POST")
		}
		return s.adminEAB(ctx, r)
	}
	if method != http.MethodPost {
		return nil, methodNotAllowed("POST")
	}
	// The clock is read while the account and the resource are.
	var now time.Time
	clock := r.async(func() (err error) {
		now, err = s.clock(ctx)
		r.read = time.Now()
		return err
	})
	s.readAhead(ctx, r)
	if err := clock(); err != nil {
		return nil, internal("time", err)
	}
	r.now = now
	switch {
	case path == "/new-account":
		return s.newAccount(ctx, r)
	case path == "/key-change":
		return s.keyChange(ctx, r)
	case path == "/revoke-cert":
		return s.revokeCert(ctx, r)
	case path == "/new-order":
		return s.newOrder(ctx, r)
	case len(seg) == 2 && seg[0] == "account":
		return s.account(ctx, r, seg[1])
	case len(seg) == 3 && seg[0] == "account" && seg[2] == "orders":
		return s.accountOrders(ctx, r, seg[1])
	case len(seg) == 2 && seg[0] == "order":
		return s.getOrder(ctx, r, seg[1])
	case len(seg) == 3 && seg[0] == "order" && seg[2] == "finalize":
		return s.finalize(ctx, r, seg[1])
	case len(seg) == 2 && seg[0] == "authz":
		return s.authz(ctx, r, seg[1])
	case len(seg) == 3 && seg[0] == "chall":
		return s.challenge(ctx, r, seg[1], seg[2])
	case len(seg) == 2 && seg[0] == "cert":
		return s.certificate(ctx, r, seg[1], "")
	case len(seg) == 3 && seg[0] == "cert":
		return s.certificate(ctx, r, seg[1], seg[2])
	}
	return nil, prob(ProbMalformed, "no resource at %s", path).withStatus(http.StatusNotFound)
}

func methodNotAllowed(allow string) *Problem {
	return prob(ProbMalformed, "method not allowed; use %s", allow).withStatus(http.StatusMethodNotAllowed).withHeader("Allow", allow)
}

// directory is RFC 8555 7.1.1.
func (s *Server) directory(r *request) *response {
	meta := map[string]any{"externalAccountRequired": s.cfg.RequireEAB}
	if s.cfg.TermsOfService != "" {
		meta["termsOfService"] = s.cfg.TermsOfService
	}
	if len(s.cfg.Profiles) > 0 {
		ps := map[string]string{}
		for name, p := range s.cfg.Profiles {
			ps[name] = p.Description
		}
		meta["profiles"] = ps
	}
	return jsonResponse(http.StatusOK, map[string]any{
		"newNonce":    r.url("/new-nonce"),
		"newAccount":  r.url("/new-account"),
		"newOrder":    r.url("/new-order"),
		"revokeCert":  r.url("/revoke-cert"),
		"keyChange":   r.url("/key-change"),
		"renewalInfo": r.url("/renewal-info"),
		"meta":        meta,
	})
}

// randomID is 128 bits from the host RNG, base64url.
func (s *Server) randomID() (string, error) {
	var b [16]byte
	if _, err := io.ReadFull(s.deps.Rand, b[:]); err != nil {
		return "", fmt.Errorf("random: %w", err)
	}
	return jose.Encode(b[:]), nil
}

// handleNewNonce is RFC 8555 7.2: HEAD 200, GET 204. The nonce header is
// added here, not by Handle, for HEAD and GET.
func (s *Server) handleNewNonce(ctx context.Context, r *request) (*response, *Problem) {
	var status int
	switch r.Method {
	case http.MethodHead:
		status = http.StatusOK
	case http.MethodGet:
		status = http.StatusNoContent
	case http.MethodPost:
		// POST-as-GET is not defined for newNonce; RFC 8555 allows
		// HEAD and GET only.
		return nil, methodNotAllowed("HEAD, GET")
	default:
		return nil, methodNotAllowed("HEAD, GET")
	}
	n, err := s.newNonce(ctx)
	if err != nil {
		return nil, internal("nonce", err)
	}
	h := http.Header{}
	h.Set("Replay-Nonce", n)
	return &response{status: status, header: h}, nil
}

// retryAfter formats seconds for a Retry-After header.
func retryAfter(d time.Duration) string {
	return strconv.Itoa(max(1, int((d+time.Second-1)/time.Second)))
}
