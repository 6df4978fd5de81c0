package server

import (
	"context"
	"crypto/sha256"
	"errors"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/avonzt/avon/plugins/acme/jose"
	"github.com/avonzt/avon/sdk/host"
)

// dnsLabelRE is one lowercase LDH label.
var dnsLabelRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// checkIdentifier normalizes and checks one identifier of a new order.
func (s *Server) checkIdentifier(id Identifier) (Identifier, bool, *Problem) {
	if id.Type != "dns" {
		return id, false, prob(ProbUnsupportedIdentifier, "identifier type %q: only dns is supported", id.Type)
	}
	if strings.ToLower(id.Value) != id.Value {
		return id, false, prob(ProbRejectedIdentifier, "%q is not lowercase", id.Value)
	}
	name := id.Value
	wildcard := false
	if rest, ok := strings.CutPrefix(name, "*."); ok {
		if !s.cfg.Wildcards {
			return id, false, prob(ProbRejectedIdentifier, "%q: wildcard names are not allowed", id.Value)
		}
		name, wildcard = rest, true
	}
	if len(name) > 253 || net.ParseIP(name) != nil || !strings.Contains(name, ".") {
		return id, false, prob(ProbRejectedIdentifier, "%q is not a fully qualified lowercase DNS name", id.Value)
	}
	for _, l := range strings.Split(name, ".") {
		if !dnsLabelRE.MatchString(l) {
			return id, false, prob(ProbRejectedIdentifier, "%q: label %q is not a DNS label", id.Value, l)
		}
	}
	if len(s.cfg.AllowedDomains) > 0 {
		ok := false
		for _, d := range s.cfg.AllowedDomains {
			if name == d || strings.HasSuffix(name, "."+d) {
				ok = true
				break
			}
		}
		if !ok {
			return id, false, prob(ProbRejectedIdentifier, "%q is outside the domains this server issues for", id.Value)
		}
	}
	return Identifier{Type: "dns", Value: id.Value}, wildcard, nil
}

type newOrderPayload struct {
	Identifiers []Identifier `json:"identifiers"`
	NotBefore   string       `json:"notBefore"`
	NotAfter    string       `json:"notAfter"`
	Profile     string       `json:"profile"`
	Replaces    string       `json:"replaces"`
}

// newOrder is RFC 8555 7.4.
func (s *Server) newOrder(ctx context.Context, r *request) (*response, *Problem) {
	v, p := s.verifyPOST(ctx, r, byKID)
	if p != nil {
		return nil, p
	}
	var in newOrderPayload
	if p := decodePayload(v.payload, &in); p != nil {
		return nil, p
	}
	if len(in.Identifiers) == 0 {
		return nil, prob(ProbMalformed, "an order needs at least one identifier")
	}
	if len(in.Identifiers) > s.cfg.MaxIdentifiers {
		return nil, prob(ProbRejectedIdentifier, "%d identifiers; at most %d", len(in.Identifiers), s.cfg.MaxIdentifiers)
	}
	if in.NotBefore != "" || in.NotAfter != "" {
		return nil, prob(ProbMalformed, "notBefore and notAfter are not supported; the profile sets the validity")
	}
	if in.Profile != "" {
		if _, ok := s.cfg.Profiles[in.Profile]; !ok {
			return nil, prob(ProbInvalidProfile, "no profile %q", in.Profile)
		}
	}
	var subs []Problem
	seen := map[string]bool{}
	type ident struct {
		id       Identifier
		wildcard bool
	}
	var ids []ident
	for _, id := range in.Identifiers {
		n, wc, p := s.checkIdentifier(id)
		if p != nil {
			sp := *p.stored()
			sp.Identifier = &Identifier{Type: id.Type, Value: id.Value}
			subs = append(subs, sp)
			continue
		}
		if !seen[n.Value] {
			seen[n.Value] = true
			ids = append(ids, ident{n, wc})
		}
	}
	if len(subs) > 0 {
		kind := subs[0].kind
		for _, sp := range subs {
			if sp.kind != kind {
				kind = ProbRejectedIdentifier
			}
		}
		p := prob(kind, "%d of the order's identifiers cannot be issued for", len(subs))
		if len(subs) == 1 {
			p.Detail = subs[0].Detail
		}
		p.Subproblems = subs
		return nil, p
	}
	if in.Replaces != "" {
		if p := s.checkReplaces(ctx, v.account, in.Replaces, seen); p != nil {
			return nil, p
		}
	}
	if p := s.rateLimit(ctx, "orders/"+v.account.ID, s.cfg.OrdersPerHour); p != nil {
		return nil, p
	}
	slices.SortFunc(ids, func(a, b ident) int { return strings.Compare(a.id.Value, b.id.Value) })
	orderID, err := s.randomID()
	if err != nil {
		return nil, internal("order id", err)
	}
	o := &Order{ID: orderID, AccountID: v.account.ID, Status: StatusPending, Expires: r.now.Add(s.cfg.OrderTTL),
		Profile: in.Profile, Replaces: in.Replaces, CreatedAt: r.now}
	authzExpires := r.now.Add(s.cfg.AuthzTTL)
	if authzExpires.After(o.Expires) {
		authzExpires = o.Expires
	}
	var authzs []*Authz
	for _, id := range ids {
		o.Identifiers = append(o.Identifiers, id.id)
		a := &Authz{AccountID: v.account.ID, Identifier: id.id, Wildcard: id.wildcard, Status: StatusPending, Expires: authzExpires}
		if id.wildcard {
			a.Identifier.Value = strings.TrimPrefix(id.id.Value, "*.")
		}
		if a.ID, err = s.randomID(); err != nil {
			return nil, internal("authz id", err)
		}
		types := []string{ChallengeHTTP01, ChallengeDNS01, ChallengeTLSALPN01}
		if id.wildcard {
			types = []string{ChallengeDNS01}
		}
		for _, t := range types {
			tok := make([]byte, 32)
			if _, err := s.deps.Rand.Read(tok); err != nil {
				return nil, internal("challenge token", err)
			}
			a.Challenges = append(a.Challenges, &Challenge{Type: t, Token: jose.Encode(tok), Status: StatusPending})
		}
		authzs = append(authzs, a)
		o.AuthzIDs = append(o.AuthzIDs, a.ID)
	}
	if p := s.storeNewOrder(ctx, o, authzs); p != nil {
		return nil, p
	}
	resp := jsonResponse(http.StatusCreated, r.orderJSON(o))
	resp.header.Set("Location", r.url("/order/"+o.ID))
	return resp, nil
}

// storeNewOrder creates the authorizations, the order and its entry in
// the account's index, in one transaction (apply.go). Without batches, the
// writes are independent create-only puts made
// concurrently, so the store commits them together (one fsync) rather
// than one after the other. The order is acknowledged only once every
// write is; when one fails, those that succeeded are deleted again (best
// effort: the ids are random and were never handed out, so what a failed
// delete leaves is unreachable but for an index entry, whose URL in the
// account's orders list then answers 404).
func (s *Server) storeNewOrder(ctx context.Context, o *Order, authzs []*Authz) *Problem {
	// One transaction when the storage can: all or nothing.
	ops := make([]writeOp, 0, len(authzs)+2)
	for _, a := range authzs {
		ops = append(ops, writeOp{key: pfxAuthz + a.ID, v: a, check: true})
	}
	ops = append(ops, writeOp{key: pfxOrder + o.ID, v: o, check: true}, writeOp{key: indexKey(o)})
	_, err := s.applyJSON(ctx, ops)
	switch {
	case err == nil:
		return nil
	case !errors.Is(err, errNoApply):
		return internal("store order", err)
	}
	type write struct {
		key  string
		what string
		v    any // nil: the empty index entry
	}
	ws := make([]write, 0, len(authzs)+2)
	for _, a := range authzs {
		ws = append(ws, write{pfxAuthz + a.ID, "store authz", a})
	}
	ws = append(ws, write{pfxOrder + o.ID, "store order", o}, write{indexKey(o), "index order", nil})
	errs := make([]error, len(ws))
	fs := make([]func() error, len(ws))
	for i, w := range ws {
		fs[i] = func() error {
			if w.v == nil {
				_, errs[i] = s.deps.Storage.Put(ctx, w.key, nil, host.PutOptions{})
			} else {
				_, errs[i] = putJSON(ctx, s.deps.Storage, w.key, w.v, true, 0)
			}
			return errs[i]
		}
	}
	if all(fs...) == nil {
		return nil
	}
	var p *Problem
	for i, w := range ws {
		if errs[i] != nil {
			if p == nil {
				p = internal(w.what, errs[i])
			}
			continue
		}
		if err := s.deps.Storage.Delete(ctx, w.key, host.DeleteOptions{}); err != nil {
			s.deps.Log.Warn("write of a failed new order left in storage", "key", w.key, "error", err)
		}
	}
	return p
}

// indexKey is the entry of an order in its account's index.
func indexKey(o *Order) string { return "acctorder/" + o.AccountID + "/" + o.ID }

// orderJSON is the order resource (RFC 8555 7.1.3).
func (r *request) orderJSON(o *Order) map[string]any {
	authzs := make([]string, 0, len(o.AuthzIDs))
	for _, id := range o.AuthzIDs {
		authzs = append(authzs, r.url("/authz/"+id))
	}
	m := map[string]any{
		"status":         o.Status,
		"expires":        o.Expires.UTC().Format(time.RFC3339),
		"identifiers":    o.Identifiers,
		"authorizations": authzs,
		"finalize":       r.url("/order/" + o.ID + "/finalize"),
	}
	if o.Profile != "" {
		m["profile"] = o.Profile
	}
	if o.Replaces != "" {
		m["replaces"] = o.Replaces
	}
	if o.CertSerial != "" {
		m["certificate"] = r.url("/cert/" + o.CertSerial)
	}
	if o.Error != nil {
		m["error"] = o.Error
	}
	return m
}

// loadOrder reads an order the account owns, with its status brought up
// to date from its authorizations and the clock. It returns the version
// the status was read at.
func (s *Server) loadOrder(ctx context.Context, r *request, acct *Account, id string) (*Order, int64, *Problem) {
	if !validID(id) {
		return nil, 0, prob(ProbMalformed, "no order %q", id).withStatus(http.StatusNotFound)
	}
	var o Order
	ver, err := s.getJSON(ctx, r, pfxOrder+id, &o)
	if isNotFound(err) {
		return nil, 0, prob(ProbMalformed, "no order %q", id).withStatus(http.StatusNotFound)
	}
	if err != nil {
		return nil, 0, internal("load order", err)
	}
	if o.AccountID != acct.ID {
		return nil, 0, prob(ProbUnauthorized, "the order belongs to another account")
	}
	switch o.Status {
	case StatusPending:
		status := StatusReady
		// The authorizations are read concurrently: one round trip.
		as := make([]*Authz, len(o.AuthzIDs))
		ps := make([]*Problem, len(o.AuthzIDs))
		fs := make([]func() error, len(o.AuthzIDs))
		for i, aid := range o.AuthzIDs {
			fs[i] = func() error {
				as[i], _, ps[i] = s.loadAuthz(ctx, r, aid)
				return nil
			}
		}
		_ = all(fs...)
		for i, a := range as {
			if ps[i] != nil {
				return nil, 0, ps[i]
			}
			switch a.Status {
			case StatusValid:
			case StatusPending:
				if status == StatusReady {
					status = StatusPending
				}
			default:
				status = StatusInvalid
			}
		}
		if !r.now.Before(o.Expires) {
			status = StatusInvalid
		}
		o.Status = status
	case StatusReady:
		if !r.now.Before(o.Expires) {
			o.Status = StatusInvalid
		}
	}
	return &o, ver, nil
}

// getOrder is POST-as-GET on an order.
func (s *Server) getOrder(ctx context.Context, r *request, id string) (*response, *Problem) {
	v, p := s.verifyPOST(ctx, r, byKID)
	if p != nil {
		return nil, p
	}
	if !v.postAsGet() {
		return nil, prob(ProbMalformed, "POST-as-GET must have an empty payload")
	}
	o, _, p := s.loadOrder(ctx, r, v.account, id)
	if p != nil {
		return nil, p
	}
	resp := jsonResponse(http.StatusOK, r.orderJSON(o))
	if o.Status == StatusProcessing {
		resp.header.Set("Retry-After", "1")
	}
	return resp, nil
}

// loadAuthz reads an authorization, its status brought up to date with
// the clock.
func (s *Server) loadAuthz(ctx context.Context, r *request, id string) (*Authz, int64, *Problem) {
	if !validID(id) {
		return nil, 0, prob(ProbMalformed, "no authorization %q", id).withStatus(http.StatusNotFound)
	}
	var a Authz
	ver, err := s.getJSON(ctx, r, pfxAuthz+id, &a)
	if isNotFound(err) {
		return nil, 0, prob(ProbMalformed, "no authorization %q", id).withStatus(http.StatusNotFound)
	}
	if err != nil {
		return nil, 0, internal("load authorization", err)
	}
	if (a.Status == StatusPending || a.Status == StatusValid) && !r.now.Before(a.Expires) {
		a.Status = StatusExpired
	}
	return &a, ver, nil
}

// authzJSON is the authorization resource (RFC 8555 7.1.4).
func (r *request) authzJSON(a *Authz) map[string]any {
	chs := make([]map[string]any, 0, len(a.Challenges))
	for _, c := range a.Challenges {
		chs = append(chs, r.challengeJSON(a, c))
	}
	m := map[string]any{
		"identifier": a.Identifier,
		"status":     a.Status,
		"expires":    a.Expires.UTC().Format(time.RFC3339),
		"challenges": chs,
	}
	if a.Wildcard {
		m["wildcard"] = true
	}
	return m
}

func (r *request) challengeJSON(a *Authz, c *Challenge) map[string]any {
	m := map[string]any{"type": c.Type, "url": r.url("/chall/" + a.ID + "/" + c.Type), "token": c.Token, "status": c.Status}
	if c.Validated != nil {
		m["validated"] = c.Validated.UTC().Format(time.RFC3339)
	}
	if c.Error != nil {
		m["error"] = c.Error
	}
	return m
}

// authz is POST-as-GET on an authorization, or its deactivation.
func (s *Server) authz(ctx context.Context, r *request, id string) (*response, *Problem) {
	v, p := s.verifyPOST(ctx, r, byKID)
	if p != nil {
		return nil, p
	}
	a, ver, p := s.loadAuthz(ctx, r, id)
	if p != nil {
		return nil, p
	}
	if a.AccountID != v.account.ID {
		return nil, prob(ProbUnauthorized, "the authorization belongs to another account")
	}
	if !v.postAsGet() {
		var in struct {
			Status string `json:"status"`
		}
		if p := decodePayload(v.payload, &in); p != nil {
			return nil, p
		}
		if in.Status != StatusDeactivated {
			return nil, prob(ProbMalformed, "status %q: only \"deactivated\" may be requested", in.Status)
		}
		if a.Status != StatusPending && a.Status != StatusValid {
			return nil, prob(ProbMalformed, "an authorization with status %q cannot be deactivated", a.Status)
		}
		a.Status = StatusDeactivated
		if _, err := putJSON(ctx, s.deps.Storage, pfxAuthz+a.ID, a, true, ver); err != nil {
			if isConflict(err) {
				return nil, prob(ProbMalformed, "the authorization changed concurrently; retry").withStatus(http.StatusConflict)
			}
			return nil, internal("update authorization", err)
		}
	}
	return jsonResponse(http.StatusOK, r.authzJSON(a)), nil
}

// challenge is POST-as-GET on a challenge, or ({}) the request to
// validate it: done here, synchronously.
func (s *Server) challenge(ctx context.Context, r *request, authzID, typ string) (*response, *Problem) {
	v, p := s.verifyPOST(ctx, r, byKID)
	if p != nil {
		return nil, p
	}
	a, ver, p := s.loadAuthz(ctx, r, authzID)
	if p != nil {
		return nil, p
	}
	if a.AccountID != v.account.ID {
		return nil, prob(ProbUnauthorized, "the authorization belongs to another account")
	}
	var ch *Challenge
	for _, c := range a.Challenges {
		if c.Type == typ {
			ch = c
		}
	}
	if ch == nil {
		return nil, prob(ProbMalformed, "no challenge %q", typ).withStatus(http.StatusNotFound)
	}
	link := `<` + r.url("/authz/"+a.ID) + `>;rel="up"`
	if v.postAsGet() || ch.Status != StatusPending || a.Status != StatusPending {
		// Nothing to do: report where it stands.
		resp := jsonResponse(http.StatusOK, r.challengeJSON(a, ch))
		resp.header.Add("Link", link)
		return resp, nil
	}
	var in map[string]any
	if p := decodePayload(v.payload, &in); p != nil {
		return nil, p
	}
	keyAuth := ch.Token + "." + v.key.Thumbprint()
	vctx, cancel := context.WithTimeout(ctx, s.cfg.ValidationTimeout)
	vp := s.deps.Validator.Validate(vctx, ValidationRequest{Type: ch.Type, Domain: a.Identifier.Value, Token: ch.Token, KeyAuthorization: keyAuth})
	cancel()
	now := r.since()
	if vp == nil {
		ch.Status, a.Status = StatusValid, StatusValid
		ch.Validated = &now
	} else {
		ch.Status, a.Status = StatusInvalid, StatusInvalid
		ch.Error = vp.stored()
		ch.Error.Status = 0
	}
	if _, err := putJSON(ctx, s.deps.Storage, pfxAuthz+a.ID, a, true, ver); err != nil {
		if !isConflict(err) {
			return nil, internal("update authorization", err)
		}
		// Another request validated it meanwhile: report its outcome.
		if a, _, p = s.loadAuthz(ctx, r, authzID); p != nil {
			return nil, p
		}
		for _, c := range a.Challenges {
			if c.Type == typ {
				ch = c
			}
		}
	}
	resp := jsonResponse(http.StatusOK, r.challengeJSON(a, ch))
	resp.header.Add("Link", link)
	return resp, nil
}

// DNS01Value is the TXT record value for a key authorization.
func DNS01Value(keyAuth string) string {
	s := sha256.Sum256([]byte(keyAuth))
	return jose.Encode(s[:])
}
