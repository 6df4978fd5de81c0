package oauth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/avonzt/avon/core/cache"
	"github.com/avonzt/avon/sdk/host"
)

// TokenResponse is the token endpoint's answer (RFC 6749 section 5.1).
type TokenResponse struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	RefreshToken string `json:"refresh_token,omitempty"`
	Scope        string `json:"scope"`
}

// TokenError is the token endpoint's error (RFC 6749 section 5.2).
type TokenError struct {
	Error       string `json:"error"`
	Description string `json:"error_description,omitempty"`
}

// oauthCode returns the RFC 6749 error code an error maps to.
func oauthCode(err error) (string, int) {
	for _, e := range []error{ErrInvalidRequest, ErrInvalidClient, ErrInvalidGrant, ErrUnsupportedGrant, ErrInvalidScope} {
		if errors.Is(err, e) {
			if e == ErrInvalidClient {
				return e.Error(), http.StatusUnauthorized
			}
			return e.Error(), http.StatusBadRequest
		}
	}
	return "temporarily_unavailable", http.StatusServiceUnavailable
}

func (s *Server) tokenError(w http.ResponseWriter, err error) {
	code, status := oauthCode(err)
	desc := err.Error()
	if status == http.StatusServiceUnavailable {
		desc = "temporarily unavailable; try again"
	}
	w.Header().Set("Pragma", "no-cache")
	writeJSON(w, status, TokenError{Error: code, Description: desc})
}

// token is POST /oauth/token.
func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	f, err := readForm(w, r)
	if err != nil {
		s.tokenError(w, err)
		return
	}
	c, ok := s.clients[f.Get("client_id")]
	if !ok {
		s.tokenError(w, fmt.Errorf("%w: unknown or missing client_id", ErrInvalidClient))
		return
	}
	var resp TokenResponse
	switch f.Get("grant_type") {
	case "authorization_code":
		resp, err = s.exchangeCode(ctx, c, f.Get("code"), f.Get("redirect_uri"), f.Get("code_verifier"), sourceOf(r))
	case "refresh_token":
		resp, err = s.refresh(ctx, c, f.Get("refresh_token"), f.Get("scope"), sourceOf(r))
	case "":
		err = fmt.Errorf("%w: grant_type missing", ErrInvalidRequest)
	default:
		err = fmt.Errorf("%w: only authorization_code and refresh_token", ErrUnsupportedGrant)
	}
	if err != nil {
		s.tokenError(w, err)
		return
	}
	w.Header().Set("Pragma", "no-cache")
	writeJSON(w, http.StatusOK, resp)
}

// S256 is the PKCE challenge of a verifier: BASE64URL(SHA-256(verifier)).
func S256(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return b64.EncodeToString(sum[:])
}

// exchangeCode redeems an authorization code. The code is consumed before
// anything is checked, so a code presented with a wrong verifier, client
// or redirect is gone as well (a stolen code gets one guess).
func (s *Server) exchangeCode(ctx context.Context, c Client, code, redirect, verifier, src string) (TokenResponse, error) {
	if code == "" || redirect == "" || verifier == "" {
		return TokenResponse{}, fmt.Errorf("%w: code, redirect_uri and code_verifier are required", ErrInvalidRequest)
	}
	if !verifierRE.MatchString(verifier) {
		return TokenResponse{}, fmt.Errorf("%w: code_verifier must be 43 to 128 unreserved characters", ErrInvalidRequest)
	}
	b, err := s.deps.Cache.ConsumeToken(ctx, setCode, hashHex(code))
	if errors.Is(err, cache.ErrNotFound) || errors.Is(err, cache.ErrInvalidArgument) {
		s.auditIssue(ctx, "", c.ID, "", "failure", "unknown, expired or used authorization code", src)
		return TokenResponse{}, fmt.Errorf("%w: authorization code unknown, expired or already used", ErrInvalidGrant)
	}
	if err != nil {
		return TokenResponse{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	var ar authRequest
	if err := json.Unmarshal(b, &ar); err != nil || ar.User == "" {
		return TokenResponse{}, fmt.Errorf("%w: authorization code record is corrupt", ErrInvalidGrant)
	}
	var why string
	switch {
	case ar.ClientID != c.ID:
		why = "authorization code issued to another client"
	case ar.RedirectURI != redirect:
		why = "redirect_uri differs from the authorization request's"
	case subtle.ConstantTimeCompare([]byte(S256(verifier)), []byte(ar.Challenge)) != 1:
		why = "code_verifier does not match the code_challenge"
	}
	if why != "" {
		s.auditIssue(ctx, ar.User, c.ID, "", "failure", why, src)
		return TokenResponse{}, fmt.Errorf("%w: %s", ErrInvalidGrant, why)
	}
	now, err := s.now()
	if err != nil {
		return TokenResponse{}, err
	}
	u, _, err := s.users.get(ctx, ar.User)
	if err != nil || u.Disabled {
		if err != nil && !errors.Is(err, ErrUnknownUser) {
			return TokenResponse{}, err
		}
		return TokenResponse{}, fmt.Errorf("%w: user no longer exists or is disabled", ErrInvalidGrant)
	}
	scope := grantScope(ar.Scope, u.Roles)
	if scope == "" {
		return TokenResponse{}, fmt.Errorf("%w: the user no longer holds the granted scope", ErrInvalidGrant)
	}
	g, rt, err := s.grants.create(ctx, u.Name, c.ID, scope, now, s.cfg.RefreshTTL)
	if err != nil {
		return TokenResponse{}, err
	}
	return s.issue(ctx, g, scope, rt, now, "authorization_code", src)
}

// refresh rotates a refresh token (RFC 6749 section 6; OAuth 2.1 section
// 4.3.1: rotation with reuse detection for public clients).
func (s *Server) refresh(ctx context.Context, c Client, token, scope, src string) (TokenResponse, error) {
	if token == "" {
		return TokenResponse{}, fmt.Errorf("%w: refresh_token is required", ErrInvalidRequest)
	}
	now, err := s.now()
	if err != nil {
		return TokenResponse{}, err
	}
	g, next, err := s.grants.rotate(ctx, token, c.ID, now)
	if errors.Is(err, ErrRefreshReuse) {
		s.log.Warn("refresh token reused: grant revoked", "user", g.User, "grant", g.ID, "source", src)
		_ = s.emit(ctx, host.Event{Actor: "user:" + g.User, Action: "oauth.refresh.reuse", Target: "grant/" + g.ID,
			Outcome: "denied", Reason: "a rotated refresh token was presented again; the grant and all its tokens are revoked",
			Fields: map[string]string{"source": src, "client": c.ID}})
		return TokenResponse{}, err
	}
	if err != nil {
		if errors.Is(err, ErrInvalidGrant) {
			s.auditIssue(ctx, g.User, c.ID, g.ID, "failure", err.Error(), src)
		}
		return TokenResponse{}, err
	}
	u, _, err := s.users.get(ctx, g.User)
	if err != nil || u.Disabled {
		if err != nil && !errors.Is(err, ErrUnknownUser) {
			return TokenResponse{}, err
		}
		_, _ = s.grants.revoke(ctx, g.ID, "user removed or disabled", now)
		return TokenResponse{}, fmt.Errorf("%w: user no longer exists or is disabled", ErrInvalidGrant)
	}
	// The scope can shrink on refresh (section 6), never grow, and
	// follows the user's current roles.
	granted := grantScope(g.Scope, u.Roles)
	if scope != "" {
		for _, sc := range strings.Fields(scope) {
			if !strings.Contains(" "+granted+" ", " "+sc+" ") {
				return TokenResponse{}, fmt.Errorf("%w: scope %q was not granted", ErrInvalidScope, clip(sc))
			}
		}
		granted = grantScope(scope, u.Roles)
	}
	if granted == "" {
		return TokenResponse{}, fmt.Errorf("%w: the user no longer holds the granted scope", ErrInvalidGrant)
	}
	return s.issue(ctx, g, granted, next, now, "refresh_token", src)
}

// issue signs an access token for a grant and records the issue (fail
// closed: a token whose issue is not on record is not handed out).
func (s *Server) issue(ctx context.Context, g Grant, scope, refresh string, now time.Time, how, src string) (TokenResponse, error) {
	jti, err := s.grants.random(16)
	if err != nil {
		return TokenResponse{}, err
	}
	exp := now.Add(s.cfg.AccessTTL)
	if exp.After(g.ExpiresAt) {
		exp = g.ExpiresAt
	}
	cl := Claims{Issuer: s.cfg.Issuer, Subject: g.User, Audience: s.cfg.Audience, ExpiresAt: exp.Unix(), NotBefore: now.Unix(),
		IssuedAt: now.Unix(), ID: b64.EncodeToString(jti), Scope: scope, ClientID: g.ClientID, SessionID: g.ID}
	at, err := Sign(ctx, s.deps.Signer, cl)
	if err != nil {
		return TokenResponse{}, err
	}
	if err := s.emit(ctx, host.Event{Actor: "user:" + g.User, Action: "oauth.token.issue", Target: "grant/" + g.ID, Outcome: "success",
		Fields: map[string]string{"jti": cl.ID, "grant_type": how, "scope": scope, "client": g.ClientID, "source": src,
			"expires": exp.UTC().Format(time.RFC3339), "generation": fmt.Sprint(g.Generation)}}); err != nil {
		// The refresh token already rotated: revoke the grant so nothing
		// unrecorded stays usable.
		_, _ = s.grants.revoke(context.WithoutCancel(ctx), g.ID, "token issue could not be audited", now)
		return TokenResponse{}, fmt.Errorf("%w: audit: %w", ErrUnavailable, err)
	}
	return TokenResponse{AccessToken: at, TokenType: "Bearer", ExpiresIn: int64(exp.Sub(now) / time.Second), RefreshToken: refresh, Scope: scope}, nil
}

func (s *Server) auditIssue(ctx context.Context, user, client, grant, outcome, reason, src string) {
	target := "client/" + client
	if grant != "" {
		target = "grant/" + grant
	}
	actor := ""
	if user != "" {
		actor = "user:" + user
	}
	_ = s.emit(ctx, host.Event{Actor: actor, Action: "oauth.token.issue", Target: target, Outcome: outcome, Reason: reason,
		Fields: map[string]string{"source": src, "client": client}})
}

// revoke is POST /oauth/revoke (RFC 7009). A refresh token or an access
// token revokes its whole grant (the login): the refresh token family and
// every access token issued under it. An unknown or invalid token is not
// an error (section 2.2); a store failure is 503 so the client retries.
func (s *Server) revoke(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	f, err := readForm(w, r)
	if err != nil {
		s.tokenError(w, err)
		return
	}
	c, ok := s.clients[f.Get("client_id")]
	if !ok {
		s.tokenError(w, fmt.Errorf("%w: unknown or missing client_id", ErrInvalidClient))
		return
	}
	tok := f.Get("token")
	if tok == "" {
		s.tokenError(w, fmt.Errorf("%w: token is required", ErrInvalidRequest))
		return
	}
	now, err := s.now()
	if err != nil {
		s.tokenError(w, err)
		return
	}
	grantID, kind := "", ""
	if strings.HasPrefix(tok, RefreshPrefix) {
		if _, rec, _, err := s.grants.lookupRefresh(ctx, tok); err == nil {
			grantID, kind = rec.Grant, "refresh_token"
		} else if errors.Is(err, ErrUnavailable) {
			s.tokenError(w, err)
			return
		}
	} else if cl, err := s.verifier.Verify(tok, now); err == nil || errors.Is(err, ErrExpired) {
		// The signature is checked (a forged sid revokes nothing); an
		// expired token still names its grant, which may be revoked.
		grantID, kind = cl.SessionID, "access_token"
	}
	if grantID != "" {
		g, _, err := s.grants.get(ctx, grantID)
		if errors.Is(err, ErrUnavailable) {
			s.tokenError(w, err)
			return
		}
		if err == nil && g.ClientID == c.ID {
			if _, err := s.grants.revoke(ctx, grantID, "revoked by the client ("+kind+")", now); err != nil {
				s.tokenError(w, err)
				return
			}
			s.log.Info("grant revoked", "user", g.User, "grant", g.ID, "by", kind)
			_ = s.emit(ctx, host.Event{Actor: "user:" + g.User, Action: "oauth.revoke", Target: "grant/" + g.ID, Outcome: "success",
				Fields: map[string]string{"token_type": kind, "client": c.ID, "source": sourceOf(r)}})
		}
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
}
