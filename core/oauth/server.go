package oauth

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/avonzt/avon/core/cache"
	"github.com/avonzt/avon/core/store"
	"github.com/avonzt/avon/sdk/host"
)

// Paths this server mounts on the API listener.
const (
	PathAuthorize = "/oauth/authorize"
	PathToken     = "/oauth/token"
	PathRevoke    = "/oauth/revoke"
	PathJWKS      = "/oauth/jwks.json"
	PathMetadata  = "/.well-known/oauth-authorization-server"
)

// Defaults and bounds of Config.
const (
	DefaultAccessTTL  = 5 * time.Minute
	DefaultRefreshTTL = 30 * 24 * time.Hour
	MinAccessTTL      = 30 * time.Second
	MaxAccessTTL      = time.Hour
	MinRefreshTTL     = time.Hour
	MaxRefreshTTL     = 90 * 24 * time.Hour
	// CodeTTL is the lifetime of an authorization code.
	CodeTTL = 60 * time.Second
	// LoginTTL is how long a login form stays usable.
	LoginTTL = 10 * time.Minute
	// DefaultAudience is the aud of access tokens: the Admin API.
	DefaultAudience = "avon-admin-api"
	// CLIClientID is the registered public client of `avon login`.
	CLIClientID = "avon-cli"
	// CLIRedirectPath is the exact path of the CLI's loopback redirect.
	CLIRedirectPath = "/callback"
)

// Client is a registered public client (OAuth 2.1 section 2.1: no secret;
// PKCE with S256 is its proof).
type Client struct {
	ID string
	// LoopbackPath, when set, allows redirects to http://127.0.0.1:<any
	// port><LoopbackPath> and http://[::1]:<any port><LoopbackPath>
	// (RFC 8252 section 7.3), the path exact.
	LoopbackPath string
	// RedirectURIs are the other allowed redirect URIs, compared exactly.
	RedirectURIs []string
}

// CLIClient is the `avon login` client.
var CLIClient = Client{ID: CLIClientID, LoopbackPath: CLIRedirectPath}

// Throttle is a login rate limit: Attempts per Window.
type Throttle struct {
	Attempts int
	Window   time.Duration
}

// Config configures the authorization server.
type Config struct {
	// Issuer is the https URL of this server (RFC 8414); it is the iss of
	// every token and the base of the endpoints in the metadata.
	Issuer     string
	Audience   string        // default DefaultAudience
	AccessTTL  time.Duration // default DefaultAccessTTL
	RefreshTTL time.Duration // default DefaultRefreshTTL; a grant's absolute lifetime
	// MaxSkew is the calibration's max_skew: how far ahead of calibrated
	// time a token's nbf and iat may be.
	MaxSkew time.Duration
	Clients []Client      // default: CLIClient
	Argon2  *Argon2Params // default DefaultArgon2
	// Login throttles per user name and per source address (defaults: 10
	// per 15 minutes per user, 30 per 15 minutes per address).
	PerUser, PerSource Throttle
}

// Deps are the services the server uses.
type Deps struct {
	KV    store.KV
	Cache cache.Cache
	Rand  io.Reader                 // the core DRBG
	Now   func() (time.Time, error) // calibrated time; an error fails closed
	// Signer signs access tokens; Keys verifies them (every key version
	// with live tokens).
	Signer Signer
	Keys   KeySet
	Audit  Auditor
	Logger hclog.Logger
}

// Auditor records security events; an error means the event is not on
// record. *audit.Log implements it.
type Auditor interface {
	Emit(ctx context.Context, source string, ev host.Event) error
}

// Server is the OAuth 2.1 authorization server and the verifier of the
// tokens it issues. Its methods are safe for concurrent use.
type Server struct {
	cfg      Config
	deps     Deps
	log      hclog.Logger
	users    *Users
	tokens   *APITokens
	grants   *grants
	verifier *Verifier
	clients  map[string]Client
}

// CheckIssuer checks an issuer URL: https, a host, no query or fragment
// (RFC 8414 section 2).
func CheckIssuer(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil ||
		strings.HasSuffix(s, "/") || strings.Contains(s, "?") || strings.Contains(s, "#") {
		return fmt.Errorf("%w: issuer %q: want an https URL without query, fragment or trailing slash", ErrInvalidArgument, s)
	}
	return nil
}

// New checks cfg, fills its defaults and returns the server.
func New(cfg Config, deps Deps) (*Server, error) {
	if deps.KV == nil || deps.Cache == nil || deps.Rand == nil || deps.Now == nil || deps.Signer == nil || deps.Keys == nil || deps.Audit == nil {
		return nil, fmt.Errorf("%w: a dependency is missing", ErrInvalidArgument)
	}
	if deps.Logger == nil {
		deps.Logger = hclog.NewNullLogger()
	}
	if err := CheckIssuer(cfg.Issuer); err != nil {
		return nil, err
	}
	if cfg.Audience == "" {
		cfg.Audience = DefaultAudience
	}
	if cfg.AccessTTL == 0 {
		cfg.AccessTTL = DefaultAccessTTL
	}
	if cfg.RefreshTTL == 0 {
		cfg.RefreshTTL = DefaultRefreshTTL
	}
	if cfg.AccessTTL < MinAccessTTL || cfg.AccessTTL > MaxAccessTTL {
		return nil, fmt.Errorf("%w: access ttl %s outside %s..%s", ErrInvalidArgument, cfg.AccessTTL, MinAccessTTL, MaxAccessTTL)
	}
	if cfg.RefreshTTL < MinRefreshTTL || cfg.RefreshTTL > MaxRefreshTTL || cfg.RefreshTTL <= cfg.AccessTTL {
		return nil, fmt.Errorf("%w: refresh ttl %s outside %s..%s or not above the access ttl", ErrInvalidArgument, cfg.RefreshTTL, MinRefreshTTL, MaxRefreshTTL)
	}
	if cfg.MaxSkew < 0 || cfg.MaxSkew > time.Minute {
		return nil, fmt.Errorf("%w: max skew %s outside 0..1m", ErrInvalidArgument, cfg.MaxSkew)
	}
	if len(cfg.Clients) == 0 {
		cfg.Clients = []Client{CLIClient}
	}
	params := DefaultArgon2
	if cfg.Argon2 != nil {
		params = *cfg.Argon2
	}
	if cfg.PerUser == (Throttle{}) {
		cfg.PerUser = Throttle{Attempts: 10, Window: 15 * time.Minute}
	}
	if cfg.PerSource == (Throttle{}) {
		cfg.PerSource = Throttle{Attempts: 30, Window: 15 * time.Minute}
	}
	for _, t := range []Throttle{cfg.PerUser, cfg.PerSource} {
		if t.Attempts < 1 || t.Window < time.Second || t.Window > cache.MaxTTL {
			return nil, fmt.Errorf("%w: login throttle %d per %s", ErrInvalidArgument, t.Attempts, t.Window)
		}
	}
	s := &Server{cfg: cfg, deps: deps, log: deps.Logger, clients: map[string]Client{},
		grants:   &grants{kv: deps.KV, rand: deps.Rand},
		verifier: NewVerifier(deps.Keys, cfg.Issuer, cfg.Audience, cfg.MaxSkew)}
	for _, c := range cfg.Clients {
		if c.ID == "" || (c.LoopbackPath == "" && len(c.RedirectURIs) == 0) {
			return nil, fmt.Errorf("%w: client %q needs an id and a redirect", ErrInvalidArgument, c.ID)
		}
		if c.LoopbackPath != "" && !strings.HasPrefix(c.LoopbackPath, "/") {
			return nil, fmt.Errorf("%w: client %q loopback path %q does not start with /", ErrInvalidArgument, c.ID, c.LoopbackPath)
		}
		for _, u := range c.RedirectURIs {
			if p, err := url.Parse(u); err != nil || p.Fragment != "" || p.Host == "" || (p.Scheme != "https" && !isLoopbackHost(p.Hostname())) {
				return nil, fmt.Errorf("%w: client %q redirect %q: want https (or http on loopback), no fragment", ErrInvalidArgument, c.ID, u)
			}
		}
		s.clients[c.ID] = c
	}
	users, err := NewUsers(deps.KV, deps.Rand, deps.Now, params)
	if err != nil {
		return nil, err
	}
	s.users = users
	s.tokens = NewAPITokens(deps.KV, deps.Rand, deps.Now)
	return s, nil
}

// APITokens returns the API token operations (scoped tokens for
// automation; see APITokens).
func (s *Server) APITokens() *APITokens { return s.tokens }

// Users returns the user operations (for the admin socket and the CLI).
func (s *Server) Users() *Users { return s.users }

// Verifier returns the access token verifier.
func (s *Server) Verifier() *Verifier { return s.verifier }

// Config returns the configuration in force, defaults filled in.
func (s *Server) Config() Config { return s.cfg }

// Mount registers the endpoints with handle (api.Server.Handle).
func (s *Server) Mount(handle func(pattern string, h http.Handler)) {
	handle("GET "+PathAuthorize, http.HandlerFunc(s.authorizeForm))
	handle("POST "+PathAuthorize, http.HandlerFunc(s.authorizeLogin))
	handle("POST "+PathToken, http.HandlerFunc(s.token))
	handle("POST "+PathRevoke, http.HandlerFunc(s.revoke))
	handle("GET "+PathJWKS, http.HandlerFunc(s.jwks))
	handle("GET "+PathMetadata, http.HandlerFunc(s.metadata))
}

// Metadata is the RFC 8414 document.
type Metadata struct {
	Issuer                           string   `json:"issuer"`
	AuthorizationEndpoint            string   `json:"authorization_endpoint"`
	TokenEndpoint                    string   `json:"token_endpoint"`
	RevocationEndpoint               string   `json:"revocation_endpoint"`
	JWKSURI                          string   `json:"jwks_uri"`
	ScopesSupported                  []string `json:"scopes_supported"`
	ResponseTypesSupported           []string `json:"response_types_supported"`
	GrantTypesSupported              []string `json:"grant_types_supported"`
	TokenEndpointAuthMethods         []string `json:"token_endpoint_auth_methods_supported"`
	RevocationEndpointAuthMethods    []string `json:"revocation_endpoint_auth_methods_supported"`
	CodeChallengeMethodsSupported    []string `json:"code_challenge_methods_supported"`
	AuthorizationResponseIssSupports bool     `json:"authorization_response_iss_parameter_supported"`
}

// MetadataDocument returns the server's RFC 8414 metadata.
func (s *Server) MetadataDocument() Metadata {
	i := s.cfg.Issuer
	return Metadata{Issuer: i, AuthorizationEndpoint: i + PathAuthorize, TokenEndpoint: i + PathToken,
		RevocationEndpoint: i + PathRevoke, JWKSURI: i + PathJWKS, ScopesSupported: slices.Clone(Roles),
		ResponseTypesSupported: []string{"code"}, GrantTypesSupported: []string{"authorization_code", "refresh_token"},
		TokenEndpointAuthMethods: []string{"none"}, RevocationEndpointAuthMethods: []string{"none"},
		CodeChallengeMethodsSupported: []string{"S256"}, AuthorizationResponseIssSupports: true}
}

func (s *Server) metadata(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Cache-Control", "max-age=300")
	writeJSON(w, http.StatusOK, s.MetadataDocument())
}

func (s *Server) jwks(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Cache-Control", "max-age=300")
	w.Header().Set("Content-Type", "application/jwk-set+json")
	w.WriteHeader(http.StatusOK)
	_ = json.NewEncoder(w).Encode(JWKS(s.deps.Keys.Keys()))
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	if w.Header().Get("Cache-Control") == "" {
		w.Header().Set("Cache-Control", "no-store")
	}
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// emit records an event; it returns the audit error so callers that must
// fail closed can.
func (s *Server) emit(ctx context.Context, ev host.Event) error {
	err := s.deps.Audit.Emit(ctx, "core", ev)
	if err != nil {
		s.log.Error("audit record failed", "action", ev.Action, "outcome", ev.Outcome, "error", err)
	}
	return err
}

// sourceOf is the client's address (the TCP peer; a proxy in front is not
// trusted to say otherwise).
func sourceOf(r *http.Request) string {
	h, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return h
}

func isLoopbackHost(h string) bool {
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// HasScope reports whether the space-separated scope list grants want:
// it names want, or admin.
func HasScope(scope, want string) bool {
	for _, s := range strings.Fields(scope) {
		if s == want || s == RoleAdmin {
			return true
		}
	}
	return false
}

// now is calibrated time or ErrNoTime.
func (s *Server) now() (time.Time, error) {
	t, err := s.deps.Now()
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: %w", ErrNoTime, err)
	}
	return t, nil
}
