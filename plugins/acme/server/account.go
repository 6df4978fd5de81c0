package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/mail"
	"strings"

	"github.com/avonzt/avon/plugins/acme/jose"
	"github.com/avonzt/avon/sdk/host"
)

// accountJSON is the account resource (RFC 8555 7.1.2).
func (r *request) accountJSON(a *Account) map[string]any {
	m := map[string]any{
		"status":               a.Status,
		"termsOfServiceAgreed": a.TermsAgreed,
		"orders":               r.url("/account/" + a.ID + "/orders"),
		"key":                  json.RawMessage(a.Key),
	}
	if len(a.Contact) > 0 {
		m["contact"] = a.Contact
	}
	if a.EABKeyID != "" {
		m["externalAccountBinding"] = map[string]string{"kid": a.EABKeyID}
	}
	return m
}

func (r *request) accountResponse(status int, a *Account) *response {
	resp := jsonResponse(status, r.accountJSON(a))
	resp.header.Set("Location", r.url("/account/"+a.ID))
	return resp
}

// maxContacts bounds an account's contacts.
const maxContacts = 10

// checkContacts accepts mailto: URIs of one address each.
func checkContacts(cs []string) *Problem {
	if len(cs) > maxContacts {
		return prob(ProbInvalidContact, "%d contacts; at most %d", len(cs), maxContacts)
	}
	for _, c := range cs {
		addr, ok := strings.CutPrefix(c, "mailto:")
		if !ok {
			return prob(ProbUnsupportedContact, "contact %q: only mailto: is supported", c)
		}
		if addr == "" || strings.ContainsAny(addr, "?,") || len(c) > 254 {
			return prob(ProbInvalidContact, "contact %q is not one email address", c)
		}
		if a, err := mail.ParseAddress(addr); err != nil || a.Name != "" || a.Address != addr {
			return prob(ProbInvalidContact, "contact %q is not an email address", c)
		}
	}
	return nil
}

type newAccountPayload struct {
	Contact                []string        `json:"contact"`
	TermsOfServiceAgreed   bool            `json:"termsOfServiceAgreed"`
	OnlyReturnExisting     bool            `json:"onlyReturnExisting"`
	ExternalAccountBinding json.RawMessage `json:"externalAccountBinding"`
}

// newAccount is RFC 8555 7.3.
func (s *Server) newAccount(ctx context.Context, r *request) (*response, *Problem) {
	v, p := s.verifyPOST(ctx, r, byJWK)
	if p != nil {
		return nil, p
	}
	var in newAccountPayload
	if p := decodePayload(v.payload, &in); p != nil {
		return nil, p
	}
	thumb := v.key.Thumbprint()
	// An existing account for this key is returned as is.
	var owner string
	if _, err := getJSON(ctx, s.deps.Storage, pfxAcctKey+thumb, &owner); err == nil {
		a, _, p := s.loadAccount(ctx, r, owner)
		if p != nil {
			return nil, p
		}
		if a.Status == StatusDeactivated {
			return nil, prob(ProbUnauthorized, "the account of this key is deactivated")
		}
		return r.accountResponse(http.StatusOK, a), nil
	} else if !isNotFound(err) {
		return nil, internal("look up the key", err)
	}
	if in.OnlyReturnExisting {
		return nil, prob(ProbAccountDoesNotExist, "no account for this key")
	}
	if s.cfg.RequireTerms && !in.TermsOfServiceAgreed {
		return nil, prob(ProbUserActionRequired, "you must agree to the terms of service (termsOfServiceAgreed: true): %s", s.cfg.TermsOfService).
			withHeader("Link", `<`+s.cfg.TermsOfService+`>;rel="terms-of-service"`)
	}
	if p := checkContacts(in.Contact); p != nil {
		return nil, p
	}
	if p := s.rateLimit(ctx, "accounts/"+clientAddr(r.RemoteAddr), s.cfg.AccountsPerHour); p != nil {
		return nil, p
	}
	var eab *EABKey
	var eabVer int64
	if len(in.ExternalAccountBinding) > 0 && string(in.ExternalAccountBinding) != "null" {
		if eab, eabVer, p = s.checkEAB(ctx, r, in.ExternalAccountBinding, v.key); p != nil {
			return nil, p
		}
	} else if s.cfg.RequireEAB {
		return nil, prob(ProbExternalAccountRequired, "this server requires an external account binding")
	}
	id, err := s.randomID()
	if err != nil {
		return nil, internal("account id", err)
	}
	// Bind the key first, create-only: of two concurrent newAccounts for
	// one key exactly one creates the account.
	if _, err := putJSON(ctx, s.deps.Storage, pfxAcctKey+thumb, id, true, 0); err != nil {
		if isConflict(err) {
			// Lost the race to a concurrent newAccount for this key:
			// answer with the winner's account.
			if _, err := getJSON(ctx, s.deps.Storage, pfxAcctKey+thumb, &owner); err != nil {
				return nil, internal("look up the key", err)
			}
			a, _, p := s.loadAccount(ctx, r, owner)
			if p != nil {
				return nil, p
			}
			return r.accountResponse(http.StatusOK, a), nil
		}
		return nil, internal("bind the key", err)
	}
	a := &Account{ID: id, Status: StatusValid, Contact: in.Contact, TermsAgreed: in.TermsOfServiceAgreed,
		Key: v.key.JSON(), Thumbprint: thumb, CreatedAt: r.now}
	if eab != nil {
		a.EABKeyID = eab.KID
		eab.Account = id
		if _, err := putJSON(ctx, s.deps.Storage, pfxEAB+eab.KID, eab, true, eabVer); err != nil {
			_ = s.deps.Storage.Delete(ctx, pfxAcctKey+thumb, host.DeleteOptions{})
			if isConflict(err) {
				return nil, prob(ProbUnauthorized, "external account binding key %q was used by another account", eab.KID)
			}
			return nil, internal("bind the EAB key", err)
		}
	}
	if _, err := putJSON(ctx, s.deps.Storage, pfxAccount+id, a, true, 0); err != nil {
		return nil, internal("store account", err)
	}
	if err := s.deps.Audit(ctx, host.Event{Action: "acme.account.create", Target: "account/" + id, Outcome: "success",
		Fields: map[string]string{"thumbprint": thumb, "eab_kid": a.EABKeyID}}); err != nil {
		return nil, internal("audit", err)
	}
	return r.accountResponse(http.StatusCreated, a), nil
}

type accountUpdate struct {
	Contact              *[]string `json:"contact"`
	Status               string    `json:"status"`
	TermsOfServiceAgreed *bool     `json:"termsOfServiceAgreed"`
}

// account is POST-as-GET, update and deactivation (RFC 8555 7.3.2, 7.3.6).
func (s *Server) account(ctx context.Context, r *request, id string) (*response, *Problem) {
	v, p := s.verifyPOST(ctx, r, byKID)
	if p != nil {
		return nil, p
	}
	if v.account.ID != id {
		return nil, prob(ProbUnauthorized, "the request is signed by another account's key")
	}
	if v.postAsGet() {
		return r.accountResponse(http.StatusOK, v.account), nil
	}
	var in accountUpdate
	if p := decodePayload(v.payload, &in); p != nil {
		return nil, p
	}
	a := *v.account
	switch in.Status {
	case "":
	case StatusDeactivated:
		a.Status = StatusDeactivated
	default:
		return nil, prob(ProbMalformed, "status %q: only \"deactivated\" may be requested", in.Status)
	}
	if in.Contact != nil {
		if p := checkContacts(*in.Contact); p != nil {
			return nil, p
		}
		a.Contact = *in.Contact
	}
	if in.TermsOfServiceAgreed != nil && *in.TermsOfServiceAgreed {
		a.TermsAgreed = true
	}
	if _, err := putJSON(ctx, s.deps.Storage, pfxAccount+id, &a, true, v.version); err != nil {
		if isConflict(err) {
			return nil, prob(ProbMalformed, "the account changed concurrently; retry").withStatus(http.StatusConflict)
		}
		return nil, internal("update account", err)
	}
	action := "acme.account.update"
	if a.Status == StatusDeactivated {
		action = "acme.account.deactivate"
	}
	if err := s.deps.Audit(ctx, host.Event{Action: action, Target: "account/" + id, Outcome: "success"}); err != nil {
		return nil, internal("audit", err)
	}
	return r.accountResponse(http.StatusOK, &a), nil
}

type keyChangePayload struct {
	Account string          `json:"account"`
	OldKey  json.RawMessage `json:"oldKey"`
}

// keyChange is RFC 8555 7.3.5: the outer JWS by the account's key, the
// inner by the new key, over the account URL and the old key.
func (s *Server) keyChange(ctx context.Context, r *request) (*response, *Problem) {
	v, p := s.verifyPOST(ctx, r, byKID)
	if p != nil {
		return nil, p
	}
	inner, err := jose.Parse(v.payload)
	if err != nil {
		p := joseProblem(err)
		p.Detail = "inner JWS: " + p.Detail
		return nil, p
	}
	ih := inner.Header
	if !ih.HasJWK || ih.HasKID {
		return nil, prob(ProbMalformed, "inner JWS must carry the new key as jwk, and no kid")
	}
	if err := inner.Verify(ih.JWK); err != nil {
		p := joseProblem(err)
		p.Detail = "inner JWS: " + p.Detail
		return nil, p
	}
	if ih.URL != v.jws.Header.URL {
		return nil, prob(ProbMalformed, "inner JWS url %q differs from the outer %q", ih.URL, v.jws.Header.URL)
	}
	var in keyChangePayload
	if p := decodePayload(inner.Payload, &in); p != nil {
		return nil, p
	}
	acct := v.account
	if in.Account != v.jws.Header.KID {
		return nil, prob(ProbUnauthorized, "inner payload names account %q, the request is signed by %q", in.Account, v.jws.Header.KID)
	}
	old, err := jose.ParseJWK(in.OldKey)
	if err != nil || !old.Equal(v.key) {
		return nil, prob(ProbUnauthorized, "inner payload oldKey is not the account's current key")
	}
	newKey := ih.JWK
	if newKey.Equal(v.key) {
		return nil, prob(ProbMalformed, "the new key is the account's current key")
	}
	thumb := newKey.Thumbprint()
	if _, err := putJSON(ctx, s.deps.Storage, pfxAcctKey+thumb, acct.ID, true, 0); err != nil {
		if isConflict(err) {
			var owner string
			_, _ = getJSON(ctx, s.deps.Storage, pfxAcctKey+thumb, &owner)
			return nil, prob(ProbMalformed, "the new key is already bound to another account").withStatus(http.StatusConflict).
				withHeader("Location", r.url("/account/"+owner))
		}
		return nil, internal("bind the new key", err)
	}
	a := *acct
	a.Key, a.Thumbprint = newKey.JSON(), thumb
	if _, err := putJSON(ctx, s.deps.Storage, pfxAccount+a.ID, &a, true, v.version); err != nil {
		_ = s.deps.Storage.Delete(ctx, pfxAcctKey+thumb, host.DeleteOptions{})
		if isConflict(err) {
			return nil, prob(ProbMalformed, "the account changed concurrently; retry").withStatus(http.StatusConflict)
		}
		return nil, internal("update account", err)
	}
	if err := s.deps.Storage.Delete(ctx, pfxAcctKey+acct.Thumbprint, host.DeleteOptions{}); err != nil {
		s.deps.Log.Warn("old key binding not removed", "account", a.ID, "error", err)
	}
	if err := s.deps.Audit(ctx, host.Event{Action: "acme.account.key_change", Target: "account/" + a.ID, Outcome: "success",
		Fields: map[string]string{"old_thumbprint": acct.Thumbprint, "new_thumbprint": thumb}}); err != nil {
		return nil, internal("audit", err)
	}
	return r.accountResponse(http.StatusOK, &a), nil
}

// accountOrders lists the account's orders (RFC 8555 7.1.2.1).
func (s *Server) accountOrders(ctx context.Context, r *request, id string) (*response, *Problem) {
	v, p := s.verifyPOST(ctx, r, byKID)
	if p != nil {
		return nil, p
	}
	if v.account.ID != id {
		return nil, prob(ProbUnauthorized, "the request is signed by another account's key")
	}
	if !v.postAsGet() {
		return nil, prob(ProbMalformed, "POST-as-GET must have an empty payload")
	}
	es, err := s.deps.Storage.List(ctx, host.ListOptions{Prefix: "acctorder/" + id + "/", Limit: 1000})
	if err != nil {
		return nil, internal("list orders", err)
	}
	urls := make([]string, 0, len(es))
	for _, e := range es {
		urls = append(urls, r.url("/order/"+strings.TrimPrefix(e.Key, "acctorder/"+id+"/")))
	}
	return jsonResponse(http.StatusOK, map[string]any{"orders": urls}), nil
}

// rateLimit counts one call against key; limit 0 means none. A cache
// outage lets the call through (rate limits fail open) and is logged.
func (s *Server) rateLimit(ctx context.Context, key string, limit int) *Problem {
	if limit <= 0 {
		return nil
	}
	if len(key) > 120 {
		key = key[:120]
	}
	d, err := s.deps.Cache.Count(ctx, "rl/"+key, limit, timeHour)
	if err != nil {
		if !errors.Is(err, host.ErrCacheInvalid) {
			s.deps.Log.Warn("rate limit not enforced: cache failed, request allowed", "key", key, "error", err)
		}
		return nil
	}
	if !d.Allowed {
		return prob(ProbRateLimited, "rate limit of %d per hour reached for %s; retry after %s", limit, key, d.RetryAfter).
			withHeader("Retry-After", retryAfter(d.RetryAfter))
	}
	return nil
}

// clientAddr is the host part of a remote address.
func clientAddr(remote string) string {
	if i := strings.LastIndexByte(remote, ':'); i > 0 {
		remote = remote[:i]
	}
	remote = strings.Trim(remote, "[]")
	if remote == "" {
		return "unknown"
	}
	return remote
}
