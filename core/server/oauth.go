package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/avonzt/avon/core/adminapi"
	"github.com/avonzt/avon/core/api"
	"github.com/avonzt/avon/core/oauth"
	"github.com/avonzt/avon/sdk/kms"
	sdkplugin "github.com/avonzt/avon/sdk/plugin"
)

// startOAuth readies the token signing key of operator login when auth is
// on and a kms plugin holds it (created with auth.algorithm at first
// start); mountOAuth then serves the authorization server on the API
// listener.
func (s *Server) startOAuth(ctx context.Context) error {
	err := s.readyOAuthKey(ctx)
	if err != nil && !s.cfg.Auth.Explicit {
		// Login was not asked for in the file: the core runs without it,
		// and says why (the admin socket still works).
		s.log.Warn("operator login is off: its token signing key is not usable; add an auth block to make this fatal", "error", err)
		return nil
	}
	return err
}

func (s *Server) readyOAuthKey(ctx context.Context) error {
	a := s.cfg.Auth
	if !a.Enabled {
		s.log.Info("operator login is off (auth { enabled = false }); the admin socket still works")
		return nil
	}
	if a.KMS == "" {
		s.log.Warn("operator login is off: no kms plugin to sign access tokens; the admin socket still works")
		return nil
	}
	inst, ok := s.plugins.Get(sdkplugin.Kind("kms"), a.KMS)
	if !ok {
		return fmt.Errorf("auth: no running kms plugin %q", a.KMS)
	}
	c := inst.KMS()
	if _, err := c.GetKey(ctx, &kms.GetKeyRequest{ID: a.Key}); errors.Is(err, kms.ErrKeyNotFound) {
		_, err = c.GenerateKey(ctx, &kms.GenerateKeyRequest{ID: a.Key, Algorithm: kms.Algorithm(a.Algorithm),
			Labels: map[string]string{"avon.purpose": "oauth-token"}})
		if err != nil && !errors.Is(err, kms.ErrKeyExists) { // another replica made it meanwhile
			return fmt.Errorf("auth: create token signing key %s in kms.%s: %w", a.Key, a.KMS, err)
		}
	} else if err != nil {
		return fmt.Errorf("auth: token signing key %s in kms.%s: %w", a.Key, a.KMS, err)
	}
	ks, err := newKMSSigner(ctx, s.plugins, a.KMS, a.Key, "oauth-token")
	if err != nil {
		return err
	}
	_, alg, _ := ks.current()
	if oauth.JOSEAlgorithm(string(alg)) == "" {
		return fmt.Errorf("auth: token signing key %s in kms.%s is %s; want ML-DSA-65 or Ed25519 (pick another auth { key })", a.Key, a.KMS, alg)
	}
	s.oauthKeys = &oauthKeys{kmsSigner: ks}
	return nil
}

// mountOAuth builds the authorization server for the API listener a (just
// started: with `listen = "host:0"` the issuer takes the bound port) and
// mounts its routes.
func (s *Server) mountOAuth(a *api.Server) error {
	if s.oauthKeys == nil {
		return nil
	}
	issuer := s.cfg.AuthIssuer()
	if !s.cfg.Auth.IssuerSet {
		if _, port, err := net.SplitHostPort(s.cfg.API.Listen); err == nil && port == "0" {
			if host, bound, err := net.SplitHostPort(a.Addr()); err == nil {
				if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
					host = "localhost"
				}
				issuer = "https://" + net.JoinHostPort(host, bound)
			}
		}
		s.log.Info("operator login issuer derived from the api listen address; set auth { issuer } to the URL operators use",
			"issuer", issuer)
	}
	a2 := s.cfg.Auth
	srv, err := oauth.New(oauth.Config{Issuer: issuer, AccessTTL: a2.AccessTTL, RefreshTTL: a2.RefreshTTL,
		MaxSkew: s.calib.Config().MaxSkew}, oauth.Deps{KV: s.store, Cache: s.cache, Rand: s.opts.Rand, Now: s.calib.Now,
		Signer: s.oauthKeys, Keys: s.oauthKeys, Audit: s.audit, Logger: s.log.Named("oauth")})
	if err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	// The Admin API on the HTTPS listener, its callers identified by their
	// access tokens (the admin socket keeps the peer credentials).
	admin, err := s.AdminAPI(oauthAuthenticator{srv})
	if err != nil {
		return err
	}
	srv.Mount(a.Handle)
	a.Handle("/v1/", admin)
	s.mu.Lock()
	s.oauth = srv
	s.mu.Unlock()
	return nil
}

// oauthAuthenticator identifies Admin API callers on the HTTPS listener by
// their access tokens or API tokens. Roles map onto the Admin API's
// scopes: admin:read needs auditor, operator or admin; admin:write needs
// operator or admin, except on the credential routes (/v1/users... and
// /v1/api-tokens...), where a change needs admin: an operator must not
// make themselves or anyone else an admin, nor mint a token. An API token
// carries admin:read and/or admin:write itself and holds no role, so it
// never changes credentials.
type oauthAuthenticator struct{ o *oauth.Server }

// usersPath and apiTokensPath are the prefixes of the credential routes.
const (
	usersPath     = "/v1/users"
	apiTokensPath = "/v1/api-tokens"
)

func underPath(p, prefix string) bool { return p == prefix || strings.HasPrefix(p, prefix+"/") }

func (a oauthAuthenticator) Authenticate(r *http.Request, scope adminapi.Scope) (adminapi.Principal, error) {
	need := []string{oauth.RoleAuditor, oauth.RoleOperator, oauth.RoleAdmin}
	userRoute := underPath(r.URL.Path, usersPath) || underPath(r.URL.Path, apiTokensPath)
	if tok, err := oauth.BearerToken(r); err == nil && oauth.IsAPIToken(tok) {
		return a.apiToken(r, tok, scope, userRoute)
	}
	switch {
	case scope != adminapi.ScopeRead && userRoute:
		need = []string{oauth.RoleAdmin}
	case scope != adminapi.ScopeRead:
		need = []string{oauth.RoleOperator, oauth.RoleAdmin}
	}
	p, err := a.o.Check(r, need...)
	var ce *oauth.ChallengeError
	switch {
	case err == nil:
	case errors.As(err, &ce) && ce.Status == http.StatusForbidden:
		return adminapi.Principal{}, fmt.Errorf("%w: %w", adminapi.ErrForbidden, err)
	case errors.As(err, &ce):
		return adminapi.Principal{}, fmt.Errorf("%w: %w", adminapi.ErrUnauthenticated, err)
	default:
		return adminapi.Principal{}, err // no trusted time, store down: 503
	}
	out := adminapi.Principal{Actor: p.Actor()}
	if p.Has(oauth.RoleAuditor) || p.Has(oauth.RoleOperator) {
		out.Scopes = append(out.Scopes, adminapi.ScopeRead)
	}
	if p.Has(oauth.RoleOperator) {
		out.Scopes = append(out.Scopes, adminapi.ScopeWrite)
	}
	return out, nil
}

// apiToken identifies a caller by an API token: its own scopes, and never
// a change of credentials.
func (a oauthAuthenticator) apiToken(r *http.Request, tok string, scope adminapi.Scope, credentialRoute bool) (adminapi.Principal, error) {
	t, err := a.o.APITokens().Check(r.Context(), tok)
	switch {
	case errors.Is(err, oauth.ErrNoTime), errors.Is(err, oauth.ErrUnavailable):
		return adminapi.Principal{}, err // 503: fail closed
	case err != nil:
		return adminapi.Principal{}, &apiTokenChallenge{err: fmt.Errorf("%w: %w", adminapi.ErrUnauthenticated, err)}
	}
	p := adminapi.Principal{Actor: t.Actor()}
	for _, s := range t.Scopes {
		p.Scopes = append(p.Scopes, adminapi.Scope(s))
	}
	switch {
	case scope != adminapi.ScopeRead && credentialRoute:
		return adminapi.Principal{}, fmt.Errorf("%w: API tokens cannot change operator users or API tokens; an operator with the admin role can", adminapi.ErrForbidden)
	case !p.Has(scope):
		return adminapi.Principal{}, fmt.Errorf("%w: API token %s holds %s; this route needs %s", adminapi.ErrForbidden,
			t.Name, strings.Join(t.Scopes, " "), scope)
	}
	return p, nil
}

// apiTokenChallenge is a refused API token, with its RFC 6750 challenge.
type apiTokenChallenge struct{ err error }

func (e *apiTokenChallenge) Error() string { return e.err.Error() }
func (e *apiTokenChallenge) Unwrap() error { return e.err }
func (e *apiTokenChallenge) WWWAuthenticate() string {
	return `Bearer realm="avon", error="invalid_token"`
}

// tidyEvery is how often operator login's expired records are tidied
// (the first pass a minute after start); tidyBudget bounds one pass.
var (
	tidyEvery  = time.Hour
	tidyFirst  = time.Minute
	tidyBudget = 10_000
)

// tidyOAuth deletes operator login's records that can no longer matter
// (oauth.Server.Tidy) until ctx ends: each round runs passes until nothing
// is left or ten passes ran. Every replica runs it; their deletes are
// conditional, so they never undo each other's work.
func (s *Server) tidyOAuth(ctx context.Context, o *oauth.Server) {
	log := s.log.Named("oauth")
	t := time.NewTimer(tidyFirst)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var total oauth.TidyReport
		for range 10 {
			pctx, cancel := context.WithTimeout(ctx, time.Minute)
			rep, err := o.Tidy(pctx, tidyBudget)
			cancel()
			total.Grants += rep.Grants
			total.RefreshTokens += rep.RefreshTokens
			total.APITokens += rep.APITokens
			if err != nil {
				log.Warn("tidy of expired logins and API tokens failed; retried next round", "error", err)
				break
			}
			if !rep.More {
				break
			}
		}
		if total.Grants+total.RefreshTokens+total.APITokens > 0 {
			log.Info("tidied expired logins and API tokens", "grants", total.Grants, "refresh_tokens", total.RefreshTokens,
				"api_tokens", total.APITokens)
		}
		t.Reset(tidyEvery)
	}
}

// OAuth returns the operator authorization server (nil when operator login
// is off). The Admin API wraps its routes in OAuth().Middleware(scope).
func (s *Server) OAuth() *oauth.Server {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.oauth
}

// oauthKeys adapts the KMS signer to oauth.Signer and oauth.KeySet. kid is
// the KMS key id and version ("kms.soft/avon-oauth/v2"); every version the
// core has seen verifies. A kid of this key not yet seen (rotated on
// another replica) re-reads the key, at most once every 5 seconds.
type oauthKeys struct {
	*kmsSigner

	refreshMu   sync.Mutex
	lastRefresh time.Time
}

func (k *oauthKeys) Current() oauth.Key {
	v, alg, pub := k.current()
	return oauth.Key{ID: k.keyID(v), Algorithm: oauth.JOSEAlgorithm(string(alg)), Public: pub}
}

func (k *oauthKeys) Sign(ctx context.Context, msg []byte) ([]byte, error) {
	sig, _, err := k.sign(ctx, msg)
	return sig, err
}

func (k *oauthKeys) lookup(kid string) (oauth.Key, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for v, p := range k.pubs {
		if k.keyID(v) == kid {
			return oauth.Key{ID: kid, Algorithm: oauth.JOSEAlgorithm(string(k.alg)), Public: p}, true
		}
	}
	return oauth.Key{}, false
}

func (k *oauthKeys) Lookup(kid string) (oauth.Key, bool) {
	if key, ok := k.lookup(kid); ok {
		return key, true
	}
	if !strings.HasPrefix(kid, fmt.Sprintf("kms.%s/%s/v", k.plugin, k.id)) {
		return oauth.Key{}, false
	}
	k.refreshMu.Lock()
	if time.Since(k.lastRefresh) < 5*time.Second {
		k.refreshMu.Unlock()
		return oauth.Key{}, false
	}
	k.lastRefresh = time.Now()
	k.refreshMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if resp, err := k.inst.KMS().GetKey(ctx, &kms.GetKeyRequest{ID: k.id}); err == nil {
		k.setKey(resp.Key)
	}
	return k.lookup(kid)
}

func (k *oauthKeys) Keys() []oauth.Key {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := make([]oauth.Key, 0, len(k.pubs))
	for v, p := range k.pubs {
		out = append(out, oauth.Key{ID: k.keyID(v), Algorithm: oauth.JOSEAlgorithm(string(k.alg)), Public: p})
	}
	return out
}

var (
	_ oauth.Signer = (*oauthKeys)(nil)
	_ oauth.KeySet = (*oauthKeys)(nil)
)

// UserRequest is the body of POST /v1/users on the admin socket.
type UserRequest struct {
	Name     string   `json:"name"`
	Password string   `json:"password"`
	Roles    []string `json:"roles"`
}

// TOTPResult is what enabling TOTP answers: shown once.
type TOTPResult struct {
	User   string `json:"user"`
	Secret string `json:"secret"` // base32
	URI    string `json:"uri"`    // otpauth://
}
