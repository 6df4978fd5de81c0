package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/avonzt/avon/core/adminapi"
	"github.com/avonzt/avon/core/agents"
	"github.com/avonzt/avon/core/enroll"
	"github.com/avonzt/avon/core/events"
	"github.com/avonzt/avon/core/gateway"
	"github.com/avonzt/avon/core/pulse"
	"github.com/avonzt/avon/core/store"
)

// The agent, enrollment token and session routes.

// AgentList is a page of GET /v1/agents.
type AgentList struct {
	Agents        []agents.Agent `json:"agents"`
	NextPageToken string         `json:"next_page_token,omitempty"`
}

// AgentPatch is the body of PATCH /v1/agents/{id}.
type AgentPatch struct {
	// Disabled true ends every session of the agent on every replica and
	// refuses its handshakes and renewals until it is false again.
	Disabled *bool  `json:"disabled"`
	Reason   string `json:"reason,omitempty"`
}

// TokenCreateRequest is the body of POST /v1/tokens.
type TokenCreateRequest struct {
	Group string `json:"group"`
	TTL   string `json:"ttl,omitempty"` // a Go duration, default 1h, at most 720h
}

// TokenCreated is what POST /v1/tokens answers: the token, shown once.
type TokenCreated struct {
	Token     string    `json:"token"`
	ID        string    `json:"id"`
	Group     string    `json:"group"`
	ExpiresAt time.Time `json:"expires_at"`
	CreatedBy string    `json:"created_by"`
}

// TokenList is a page of GET /v1/tokens.
type TokenList struct {
	Tokens        []enroll.Token `json:"tokens"`
	NextPageToken string         `json:"next_page_token,omitempty"`
}

// SessionInfo is a live tunnel session on one of the replicas; Replica
// names the replica whose gateway holds it, Gateway that gateway's
// endpoint.
type SessionInfo struct {
	ID         string    `json:"id"`
	AgentID    string    `json:"agent_id"`
	CertSerial string    `json:"cert_serial"`
	Address    string    `json:"address"`            // the agent's tunnel address
	Address6   string    `json:"address6,omitempty"` // its IPv6 tunnel address (tunnel_cidr6)
	Endpoint   string    `json:"endpoint"`           // where its packets come from
	Since      time.Time `json:"since"`
	LastSeen   time.Time `json:"last_seen,omitzero"`
	RxBytes    uint64    `json:"rx_bytes"` // from the agent
	TxBytes    uint64    `json:"tx_bytes"` // to the agent
	Rekeys     uint64    `json:"rekeys"`
	Replica    string    `json:"replica"`
	Gateway    string    `json:"gateway,omitempty"`
}

// SessionList is a page of GET /v1/sessions.
type SessionList struct {
	Sessions      []SessionInfo `json:"sessions"`
	NextPageToken string        `json:"next_page_token,omitempty"`
}

// KillRequest is the optional body of POST /v1/sessions/{id}/kill.
type KillRequest struct {
	Reason string `json:"reason,omitempty"`
}

// KillResult is what POST /v1/sessions/{id}/kill answers.
type KillResult struct {
	Session string `json:"session"`
	// EndedHere: the session was live on this replica and has ended.
	EndedHere bool `json:"ended_here"`
	// Published: every replica was told (session.killed event); a replica
	// that misses the event ends the session when it next re-reads the
	// durable state (the kill is recorded in the store).
	Published bool   `json:"published"`
	By        string `json:"by"`
}

// killedPrefix holds the durable record of killed sessions.
const killedPrefix = "sessions/killed/"

// maxReason bounds an operator's reason in a kill or a disable.
const maxReason = 256

func (s *Server) agentRoutes() []adminapi.Route {
	return []adminapi.Route{
		{Method: "GET", Pattern: "/v1/agents", Scope: adminapi.ScopeRead, OperationID: "listAgents", Paged: true,
			Summary: "Enrolled agents in id order", Response: AgentList{}, Query: []adminapi.Param{
				{Name: "group", Description: "only agents of this group"}, {Name: "disabled", Type: "boolean", Description: "only disabled agents"}},
			Handler: s.adminListAgents},
		{Method: "GET", Pattern: "/v1/agents/{id}", Scope: adminapi.ScopeRead, OperationID: "getAgent", Summary: "One agent",
			Response: agents.Agent{}, ETag: true, Handler: s.adminGetAgent},
		{Method: "PATCH", Pattern: "/v1/agents/{id}", Scope: adminapi.ScopeWrite, OperationID: "updateAgent",
			Summary: "Disable (every session ends on every replica) or enable an agent", Request: AgentPatch{}, Response: agents.Agent{},
			ETag: true, Conditional: true, Audit: "agent.update", Target: "agent/{id}", Handler: s.adminPatchAgent},
	}
}

func (s *Server) tokenRoutes() []adminapi.Route {
	return []adminapi.Route{
		{Method: "POST", Pattern: "/v1/tokens", Scope: adminapi.ScopeWrite, OperationID: "createToken", Status: http.StatusCreated,
			Summary: "An enrollment token (one use; shown once, only its hash is stored)", Request: TokenCreateRequest{},
			Response: TokenCreated{}, ETag: true, Audit: "enroll.token.create", Target: "token", Handler: s.adminCreateToken},
		{Method: "GET", Pattern: "/v1/tokens", Scope: adminapi.ScopeRead, OperationID: "listTokens", Paged: true,
			Summary: "Enrollment tokens not yet used (expired ones included)", Response: TokenList{},
			Query: []adminapi.Param{{Name: "used", Type: "boolean", Description: "include used tokens"}}, Handler: s.adminListTokens},
		{Method: "GET", Pattern: "/v1/tokens/{id}", Scope: adminapi.ScopeRead, OperationID: "getToken", Summary: "One enrollment token's record",
			Response: enroll.Token{}, ETag: true, Handler: s.adminGetToken},
		{Method: "DELETE", Pattern: "/v1/tokens/{id}", Scope: adminapi.ScopeWrite, OperationID: "revokeToken", Status: http.StatusNoContent,
			Summary: "Revoke an unused enrollment token", Conditional: true, Audit: "enroll.token.revoke", Target: "token/{id}",
			Handler: s.adminRevokeToken},
	}
}

func (s *Server) sessionRoutes() []adminapi.Route {
	return []adminapi.Route{
		{Method: "GET", Pattern: "/v1/sessions", Scope: adminapi.ScopeRead, OperationID: "listSessions", Paged: true,
			Summary: "Live tunnel sessions on every replica (each row names its replica)", Response: SessionList{},
			Query: []adminapi.Param{{Name: "agent", Description: "only sessions of this agent"}}, Handler: s.adminListSessions},
		{Method: "GET", Pattern: "/v1/sessions/{id}", Scope: adminapi.ScopeRead, OperationID: "getSession", Summary: "One live session",
			Response: SessionInfo{}, Handler: s.adminGetSession},
		{Method: "POST", Pattern: "/v1/sessions/{id}/kill", Scope: adminapi.ScopeWrite, OperationID: "killSession",
			Summary: "End a session on whichever replica holds it", Request: KillRequest{}, Response: KillResult{},
			Audit: "session.kill", Target: "session/{id}", Handler: s.adminKillSession},
	}
}

// calibratedNow is the calibrated time, or the system time marked as such
// when the calibration is stale (records of operator changes are not
// time-critical; the audit record has its own time).
func (s *Server) calibratedNow() time.Time {
	if t, err := s.calib.Now(); err == nil {
		return t
	}
	return time.Now()
}

func boolQuery(r *adminapi.Request, name string) (bool, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, adminapi.NewProblem(adminapi.TypeBadRequest, fmt.Sprintf("%s=%.20q: want true or false", name, v))
	}
	return b, nil
}

func (s *Server) adminListAgents(w http.ResponseWriter, r *adminapi.Request) error {
	group := r.URL.Query().Get("group")
	disabled, err := boolQuery(r, "disabled")
	if err != nil {
		return err
	}
	listing := fmt.Sprintf("agents?group=%s&disabled=%v", group, disabled)
	pg, err := r.Page(listing)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
	defer cancel()
	es, more, err := agents.New(s.store).List(ctx, agents.ListOptions{After: pg.After, Limit: pg.Size, Group: group, Disabled: disabled})
	if errors.Is(err, agents.ErrInvalid) {
		return adminapi.Wrap(adminapi.TypeInvalidPageToken, err)
	}
	if err != nil {
		return err
	}
	out := AgentList{Agents: []agents.Agent{}}
	for _, e := range es {
		out.Agents = append(out.Agents, e.Agent)
	}
	if more && len(es) > 0 {
		out.NextPageToken = adminapi.EncodePageToken(listing, es[len(es)-1].ID)
	}
	adminapi.JSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) adminGetAgent(w http.ResponseWriter, r *adminapi.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
	defer cancel()
	e, err := agents.New(s.store).Get(ctx, r.PathValue("id"))
	if err != nil {
		return err
	}
	w.Header().Set("ETag", adminapi.ETag(e.Version))
	adminapi.JSON(w, http.StatusOK, e.Agent)
	return nil
}

func (s *Server) adminPatchAgent(w http.ResponseWriter, r *adminapi.Request) error {
	var p AgentPatch
	if err := r.Decode(&p); err != nil {
		return err
	}
	if p.Disabled == nil {
		return adminapi.NewProblem(adminapi.TypeBadRequest, `nothing to change: want {"disabled": true|false, "reason": "..."}`)
	}
	if len(p.Reason) > maxReason {
		return adminapi.NewProblem(adminapi.TypeBadRequest, fmt.Sprintf("reason of %d bytes: at most %d", len(p.Reason), maxReason))
	}
	ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
	defer cancel()
	reg := agents.New(s.store)
	id := r.PathValue("id")
	cur, err := reg.Get(ctx, id)
	if err != nil {
		return err
	}
	if err := r.CheckIfMatch(adminapi.ETag(cur.Version)); err != nil {
		return err
	}
	e, err := reg.SetDisabled(ctx, id, cur.Version, *p.Disabled, r.Principal.Actor, p.Reason, s.calibratedNow())
	if err != nil {
		return err
	}
	r.AuditField("disabled", strconv.FormatBool(*p.Disabled))
	r.AuditField("reason", p.Reason)
	if *p.Disabled {
		// This replica at once; every replica (this one too, a no-op
		// then) through the event; one that misses it re-reads the
		// registry at its next event gap, and refuses the agent's next
		// handshake in any case.
		n := s.terminateAgent(id, "agent disabled: "+p.Reason)
		r.AuditField("sessions_ended_here", strconv.Itoa(n))
		pctx, pcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		_, perr := s.events.Publish(pctx, events.AgentDisabled, id, map[string]string{"reason": p.Reason, "by": r.Principal.Actor})
		pcancel()
		if perr != nil {
			s.log.Warn("agent.disabled not published; other replicas end its sessions at their next re-read", "agent", id, "error", perr)
		}
		r.AuditField("published", strconv.FormatBool(perr == nil))
	}
	w.Header().Set("ETag", adminapi.ETag(e.Version))
	adminapi.JSON(w, http.StatusOK, e.Agent)
	return nil
}

func (s *Server) tokens() *enroll.Tokens { return enroll.NewTokens(s.store, s.opts.Rand, s.calib.Now) }

func (s *Server) adminCreateToken(w http.ResponseWriter, r *adminapi.Request) error {
	var body TokenCreateRequest
	if err := r.Decode(&body); err != nil {
		return err
	}
	ttl := time.Hour
	if body.TTL != "" {
		d, err := time.ParseDuration(body.TTL)
		if err != nil {
			return adminapi.NewProblem(adminapi.TypeBadRequest, fmt.Sprintf("ttl %.40q: want a duration such as 1h or 30m", body.TTL))
		}
		ttl = d
	}
	ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
	defer cancel()
	tok, rec, err := s.tokens().Create(ctx, body.Group, ttl, r.Principal.Actor)
	if err != nil {
		return err
	}
	r.AuditField("id", rec.ID)
	r.AuditField("group", rec.Group)
	r.AuditField("expires", rec.ExpiresAt.Format(time.RFC3339))
	if e, err := s.tokens().Get(ctx, rec.ID); err == nil {
		w.Header().Set("ETag", adminapi.ETag(e.Version))
	}
	adminapi.JSON(w, http.StatusCreated, TokenCreated{Token: tok, ID: rec.ID, Group: rec.Group, ExpiresAt: rec.ExpiresAt, CreatedBy: rec.CreatedBy})
	return nil
}

func (s *Server) adminListTokens(w http.ResponseWriter, r *adminapi.Request) error {
	used, err := boolQuery(r, "used")
	if err != nil {
		return err
	}
	listing := fmt.Sprintf("tokens?used=%v", used)
	pg, err := r.Page(listing)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
	defer cancel()
	es, more, err := s.tokens().Page(ctx, pg.After, pg.Size, used)
	if errors.Is(err, enroll.ErrInvalid) {
		return adminapi.Wrap(adminapi.TypeInvalidPageToken, err)
	}
	if err != nil {
		return err
	}
	out := TokenList{Tokens: []enroll.Token{}}
	for _, e := range es {
		out.Tokens = append(out.Tokens, e.Token)
	}
	if more && len(es) > 0 {
		out.NextPageToken = adminapi.EncodePageToken(listing, es[len(es)-1].ID)
	}
	adminapi.JSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) adminGetToken(w http.ResponseWriter, r *adminapi.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
	defer cancel()
	e, err := s.tokens().Get(ctx, r.PathValue("id"))
	if err != nil {
		return err
	}
	w.Header().Set("ETag", adminapi.ETag(e.Version))
	adminapi.JSON(w, http.StatusOK, e.Token)
	return nil
}

func (s *Server) adminRevokeToken(w http.ResponseWriter, r *adminapi.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
	defer cancel()
	tk := s.tokens()
	cur, err := tk.Get(ctx, r.PathValue("id"))
	if err != nil {
		return err
	}
	if err := r.CheckIfMatch(adminapi.ETag(cur.Version)); err != nil {
		return err
	}
	if err := tk.RevokeAt(ctx, cur.ID, cur.Version); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) sessionInfo(si gateway.SessionInfo) SessionInfo {
	out := SessionInfo{ID: si.ID.String(), AgentID: si.AgentID, CertSerial: si.CertSerial, Since: si.Established.UTC(),
		LastSeen: si.LastSeen.UTC(), RxBytes: si.RxBytes, TxBytes: si.TxBytes, Rekeys: si.Rekeys, Replica: s.events.Origin()}
	out.Gateway = s.presence.gateway
	if si.Address.IsValid() {
		out.Address = si.Address.String()
	}
	if si.Address6.IsValid() {
		out.Address6 = si.Address6.String()
	}
	if si.Endpoint.IsValid() {
		out.Endpoint = si.Endpoint.String()
	}
	if si.LastSeen.IsZero() {
		out.LastSeen = time.Time{}
	}
	return out
}

func (s *Server) adminListSessions(w http.ResponseWriter, r *adminapi.Request) error {
	agent := r.URL.Query().Get("agent")
	listing := "sessions?agent=" + agent
	pg, err := r.Page(listing)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
	defer cancel()
	all, err := s.clusterSessions(ctx)
	if err != nil {
		return err
	}
	out := SessionList{Sessions: []SessionInfo{}}
	for _, si := range all {
		if si.ID <= pg.After || (agent != "" && si.AgentID != agent) {
			continue
		}
		if len(out.Sessions) == pg.Size {
			out.NextPageToken = adminapi.EncodePageToken(listing, out.Sessions[len(out.Sessions)-1].ID)
			break
		}
		out.Sessions = append(out.Sessions, si)
	}
	adminapi.JSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) adminGetSession(w http.ResponseWriter, r *adminapi.Request) error {
	id, err := pulse.ParseID(r.PathValue("id"))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
	defer cancel()
	all, err := s.clusterSessions(ctx)
	if err != nil {
		return err
	}
	for _, si := range all {
		if si.ID == id.String() {
			adminapi.JSON(w, http.StatusOK, si)
			return nil
		}
	}
	return adminapi.NewProblem(adminapi.TypeNotFound, fmt.Sprintf("no live session %s on any replica", id))
}

// killRecord is the durable record of a killed session.
type killRecord struct {
	At     time.Time `json:"at"`
	By     string    `json:"by"`
	Reason string    `json:"reason,omitempty"`
}

func (s *Server) adminKillSession(w http.ResponseWriter, r *adminapi.Request) error {
	var body KillRequest
	if _, err := r.DecodeOptional(&body); err != nil {
		return err
	}
	if len(body.Reason) > maxReason {
		return adminapi.NewProblem(adminapi.TypeBadRequest, fmt.Sprintf("reason of %d bytes: at most %d", len(body.Reason), maxReason))
	}
	id, err := pulse.ParseID(r.PathValue("id"))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
	defer cancel()
	// The record first: a replica that misses the event finds it when it
	// re-reads the durable state.
	rec, _ := json.Marshal(killRecord{At: s.calibratedNow().UTC(), By: r.Principal.Actor, Reason: body.Reason})
	if _, err := s.store.Put(ctx, killedPrefix+id.String(), rec, store.PutOptions{}); err != nil {
		return err
	}
	reason := "session killed by an operator"
	if body.Reason != "" {
		reason += ": " + body.Reason
	}
	out := KillResult{Session: id.String(), EndedHere: s.terminateSession(id, reason), By: r.Principal.Actor}
	pctx, pcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	_, perr := s.events.Publish(pctx, events.SessionKilled, id.String(), map[string]string{"reason": body.Reason, "by": r.Principal.Actor})
	pcancel()
	if perr != nil {
		s.log.Warn("session.killed not published; other replicas end it at their next re-read", "session", id.String(), "error", perr)
	}
	out.Published = perr == nil
	r.AuditField("ended_here", strconv.FormatBool(out.EndedHere))
	r.AuditField("published", strconv.FormatBool(out.Published))
	adminapi.JSON(w, http.StatusOK, out)
	return nil
}

// killed reports whether session id was killed by an operator (the
// durable record adminKillSession writes).
func (s *Server) killed(ctx context.Context, id pulse.ID) (bool, error) {
	_, err := s.store.Get(ctx, killedPrefix+id.String())
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}
