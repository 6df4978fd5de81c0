package server

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/avonzt/avon/core/adminapi"
	"github.com/avonzt/avon/core/oauth"
)

// The API token routes: scoped bearer tokens for automation against the
// Admin API on the HTTPS listener. Making and revoking one is a change of
// credentials: on HTTPS it needs an operator with the admin role (never an
// API token); on the admin socket the kernel-authenticated local admin.

// APITokenRequest is the body of POST /v1/api-tokens.
type APITokenRequest struct {
	Name   string   `json:"name"`
	Scopes []string `json:"scopes"`
	// TTL is a Go duration ("720h"); empty means 90 days, at most 366 days.
	TTL string `json:"ttl,omitempty"`
}

// APITokenCreated is the answer to POST /v1/api-tokens: the bearer token,
// shown this once, and the token's public view.
type APITokenCreated struct {
	Token string `json:"token"`
	oauth.APITokenInfo
}

func (s *Server) apiTokenRoutes() []adminapi.Route {
	return []adminapi.Route{
		{Method: "GET", Pattern: "/v1/api-tokens", Scope: adminapi.ScopeRead, OperationID: "listAPITokens",
			Summary: "API tokens (never their secrets)", Response: []oauth.APITokenInfo{}, Handler: s.adminListAPITokens},
		{Method: "POST", Pattern: "/v1/api-tokens", Scope: adminapi.ScopeWrite, OperationID: "createAPIToken", Status: http.StatusCreated,
			Summary: "Create a scoped API token for automation; the token is shown once", Request: APITokenRequest{},
			Response: APITokenCreated{}, Audit: "apitoken.create", Target: "apitoken", MaxBody: 8192, Handler: s.adminCreateAPIToken},
		{Method: "GET", Pattern: "/v1/api-tokens/{id}", Scope: adminapi.ScopeRead, OperationID: "getAPIToken",
			Summary: "One API token", Response: oauth.APITokenInfo{}, Handler: s.adminGetAPIToken},
		{Method: "DELETE", Pattern: "/v1/api-tokens/{id}", Scope: adminapi.ScopeWrite, OperationID: "revokeAPIToken",
			Summary: "Revoke an API token (at once, on every replica)", Response: oauth.APITokenInfo{}, Audit: "apitoken.revoke",
			Target: "apitoken/{id}", Handler: s.adminRevokeAPIToken},
	}
}

// apiTokenCall runs do with the token operations and a bounded context.
func (s *Server) apiTokenCall(r *adminapi.Request, do func(ctx context.Context, t *oauth.APITokens) error) error {
	o := s.OAuth()
	if o == nil {
		return adminapi.NewProblem(adminapi.TypeUnavailable, "operator login is off (auth { enabled = false }, or no kms plugin): API tokens need it")
	}
	ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
	defer cancel()
	return userProblem(do(ctx, o.APITokens()))
}

func (s *Server) adminListAPITokens(w http.ResponseWriter, r *adminapi.Request) error {
	return s.apiTokenCall(r, func(ctx context.Context, t *oauth.APITokens) error {
		list, err := t.List(ctx)
		if err == nil {
			adminapi.JSON(w, http.StatusOK, list)
		}
		return err
	})
}

func (s *Server) adminGetAPIToken(w http.ResponseWriter, r *adminapi.Request) error {
	return s.apiTokenCall(r, func(ctx context.Context, t *oauth.APITokens) error {
		info, err := t.Get(ctx, r.PathValue("id"))
		if err == nil {
			adminapi.JSON(w, http.StatusOK, info)
		}
		return err
	})
}

func (s *Server) adminCreateAPIToken(w http.ResponseWriter, r *adminapi.Request) error {
	var body APITokenRequest
	if err := r.Decode(&body); err != nil {
		return err
	}
	var ttl time.Duration
	if body.TTL != "" {
		d, err := time.ParseDuration(body.TTL)
		if err != nil {
			return adminapi.NewProblem(adminapi.TypeBadRequest, fmt.Sprintf("ttl %q: want a duration such as 720h", body.TTL))
		}
		ttl = d
	}
	r.AuditField("name", body.Name)
	r.AuditField("scopes", strings.Join(body.Scopes, " "))
	return s.apiTokenCall(r, func(ctx context.Context, t *oauth.APITokens) error {
		tok, info, err := t.Create(ctx, body.Name, body.Scopes, ttl, r.Principal.Actor)
		if err != nil {
			return err
		}
		r.AuditField("id", info.ID)
		s.log.Info("API token created", "id", info.ID, "name", info.Name, "scopes", strings.Join(info.Scopes, " "),
			"expires", info.ExpiresAt, "by", r.Principal.Actor)
		adminapi.JSON(w, http.StatusCreated, APITokenCreated{Token: tok, APITokenInfo: info})
		return nil
	})
}

func (s *Server) adminRevokeAPIToken(w http.ResponseWriter, r *adminapi.Request) error {
	return s.apiTokenCall(r, func(ctx context.Context, t *oauth.APITokens) error {
		info, err := t.Revoke(ctx, r.PathValue("id"), r.Principal.Actor)
		if err != nil {
			return err
		}
		s.log.Info("API token revoked", "id", info.ID, "name", info.Name, "by", r.Principal.Actor)
		adminapi.JSON(w, http.StatusOK, info)
		return nil
	})
}
