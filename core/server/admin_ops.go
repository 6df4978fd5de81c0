package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/avonzt/avon/core/adminapi"
	"github.com/avonzt/avon/core/audit"
	"github.com/avonzt/avon/core/events"
	"github.com/avonzt/avon/sdk/kms"
	sdkplugin "github.com/avonzt/avon/sdk/plugin"
	"github.com/avonzt/avon/sdk/policy"
)

// The key, plugin, audit and policy routes.

// KeyInfo is one key of a KMS plugin (never private material).
type KeyInfo struct {
	KMS            string            `json:"kms"`
	ID             string            `json:"id"`
	Algorithm      string            `json:"algorithm"`
	PrimaryVersion int               `json:"primary_version"`
	Versions       []KeyVersionInfo  `json:"versions"`
	Labels         map[string]string `json:"labels,omitempty"`
	Exportable     bool              `json:"exportable"`
	CreatedAt      time.Time         `json:"created_at"`
}

// KeyVersionInfo is one version of a key.
type KeyVersionInfo struct {
	Version     int       `json:"version"`
	State       string    `json:"state"`
	CreatedAt   time.Time `json:"created_at"`
	DestroyedAt time.Time `json:"destroyed_at,omitzero"`
}

// KeyList is a page of GET /v1/keys.
type KeyList struct {
	Keys          []KeyInfo `json:"keys"`
	NextPageToken string    `json:"next_page_token,omitempty"`
}

// PluginInfo is the state of one plugin.
type PluginInfo struct {
	ID       string    `json:"id"` // kind.name
	Kind     string    `json:"kind"`
	Name     string    `json:"name"`
	Version  string    `json:"version"`
	State    string    `json:"state"`
	Healthy  bool      `json:"healthy"`
	Message  string    `json:"message,omitempty"`
	Restarts int       `json:"restarts"`
	PID      int       `json:"pid"`
	Since    time.Time `json:"since"`
}

// PluginList is GET /v1/plugins.
type PluginList struct {
	Plugins []PluginInfo `json:"plugins"`
}

// AuditList is a page of GET /v1/audit/records.
type AuditList struct {
	Records []audit.Record `json:"records"`
	// NextPageToken is set while records remain to be scanned; a page may
	// hold fewer than page_size records (or none) when the filters skip
	// many.
	NextPageToken string `json:"next_page_token,omitempty"`
}

// AuditVerification is GET /v1/audit/verify.
type AuditVerification struct {
	OK bool `json:"ok"`
	audit.Report
}

// PolicySet is a policy set as the policy engine keeps it.
type PolicySet struct {
	ID         string `json:"id"`
	Policies   string `json:"policies"`
	Schema     string `json:"schema,omitempty"`
	ReportOnly bool   `json:"report_only"`
	Version    uint64 `json:"version"`
}

// PolicySetBody is the body of PUT /v1/policies/{set} and of validate.
type PolicySetBody struct {
	Policies   string `json:"policies"`
	Schema     string `json:"schema,omitempty"`
	ReportOnly bool   `json:"report_only,omitempty"`
}

// PolicyValidation is what POST /v1/policies/{set}/validate answers.
type PolicyValidation struct {
	Valid       bool                `json:"valid"`
	Diagnostics []policy.Diagnostic `json:"diagnostics"`
}

// EntityRef names a policy entity, e.g. {"type": "Agent", "id": "a1"}.
type EntityRef struct {
	Type string `json:"type"`
	ID   string `json:"id"`
}

// PolicyEntity is an entity with attributes and parents for a dry run.
type PolicyEntity struct {
	Ref        EntityRef       `json:"ref"`
	Attributes json.RawMessage `json:"attributes,omitempty"`
	Parents    []EntityRef     `json:"parents,omitempty"`
}

// DryRunRequest asks "would principal do action on resource?", e.g. would
// Agent a1 reach Service 10.1.2.3:443.
type DryRunRequest struct {
	Principal EntityRef       `json:"principal"`
	Action    EntityRef       `json:"action"`
	Resource  EntityRef       `json:"resource"`
	Context   json.RawMessage `json:"context,omitempty"` // a JSON object
	Entities  []PolicyEntity  `json:"entities,omitempty"`
}

// DryRunResult is the engine's decision, changed nothing.
type DryRunResult struct {
	Allow               bool     `json:"allow"`
	ReportOnly          bool     `json:"report_only"`
	DeterminingPolicies []string `json:"determining_policies"`
	Reasons             []string `json:"reasons"`
	Errors              []string `json:"errors,omitempty"`
	Version             uint64   `json:"version"`
}

func (s *Server) keyRoutes() []adminapi.Route {
	return []adminapi.Route{
		{Method: "GET", Pattern: "/v1/keys", Scope: adminapi.ScopeRead, OperationID: "listKeys", Paged: true,
			Summary: "Keys of every KMS plugin (metadata only)", Response: KeyList{},
			Query: []adminapi.Param{{Name: "kms", Description: "only this KMS plugin"}}, Handler: s.adminListKeys},
		{Method: "GET", Pattern: "/v1/keys/{kms}/{id}", Scope: adminapi.ScopeRead, OperationID: "getKey", Summary: "One key",
			Response: KeyInfo{}, Handler: s.adminGetKey},
		{Method: "POST", Pattern: "/v1/keys/{kms}/{id}/rotate", Scope: adminapi.ScopeWrite, OperationID: "rotateKey",
			Summary: "A new primary version of a key, in its KMS plugin", Response: KeyInfo{},
			Audit: "kms.key.rotate.request", Target: "key/{kms}/{id}", Handler: s.adminRotateKey},
	}
}

func (s *Server) pluginRoutes() []adminapi.Route {
	return []adminapi.Route{
		{Method: "GET", Pattern: "/v1/plugins", Scope: adminapi.ScopeRead, OperationID: "listPlugins",
			Summary: "Every plugin: kind, name, version, state, health, restarts", Response: PluginList{}, Handler: s.adminListPlugins},
	}
}

func (s *Server) auditRoutes() []adminapi.Route {
	return []adminapi.Route{
		{Method: "GET", Pattern: "/v1/audit/records", Scope: adminapi.ScopeRead, OperationID: "queryAudit", Paged: true,
			Summary: "Audit records in sequence order, filtered", Response: AuditList{}, Query: []adminapi.Param{
				{Name: "since", Description: "RFC 3339: records at or after"}, {Name: "until", Description: "RFC 3339: records before"},
				{Name: "action", Description: "exact action, or a prefix ending in * (cert.*)"}, {Name: "actor", Description: "exact actor, or a prefix ending in *"},
				{Name: "target", Description: "exact target, or a prefix ending in *"}, {Name: "outcome", Description: "success, failure, denied, requested"}},
			Handler: s.adminQueryAudit},
		{Method: "GET", Pattern: "/v1/audit/verify", Scope: adminapi.ScopeRead, OperationID: "verifyAudit",
			Summary: "Walk the hash chain and the signed checkpoints", Response: AuditVerification{}, Handler: s.adminVerifyAudit},
	}
}

func (s *Server) policyRoutes() []adminapi.Route {
	return []adminapi.Route{
		{Method: "GET", Pattern: "/v1/policies/{set}", Scope: adminapi.ScopeRead, OperationID: "getPolicySet",
			Summary: "A policy set (default: the default set)", Response: PolicySet{}, ETag: true, Handler: s.adminGetPolicies},
		{Method: "PUT", Pattern: "/v1/policies/{set}", Scope: adminapi.ScopeWrite, OperationID: "putPolicySet",
			Summary: "Replace a policy set after validating it (If-Match: * to create)", Request: PolicySetBody{}, Response: PolicySet{},
			ETag: true, Conditional: true, Audit: "policy.set", Target: "policy/{set}", MaxBody: 4 << 20, Handler: s.adminPutPolicies},
		{Method: "DELETE", Pattern: "/v1/policies/{set}", Scope: adminapi.ScopeWrite, OperationID: "deletePolicySet",
			Summary: "Empty a policy set (everything it governed is denied)", Status: http.StatusNoContent, Conditional: true,
			Audit: "policy.delete", Target: "policy/{set}", Handler: s.adminDeletePolicies},
		{Method: "POST", Pattern: "/v1/policies/{set}/validate", Scope: adminapi.ScopeRead, OperationID: "validatePolicySet", Safe: true,
			Summary: "Validate policies against the schema without applying them", Request: PolicySetBody{}, Response: PolicyValidation{},
			MaxBody: 4 << 20, Handler: s.adminValidatePolicies},
		{Method: "POST", Pattern: "/v1/policies/{set}/dry-run", Scope: adminapi.ScopeRead, OperationID: "dryRunPolicy", Safe: true,
			Summary: "Would a principal do an action on a resource? (nothing is enforced or logged as a decision)",
			Request: DryRunRequest{}, Response: DryRunResult{}, MaxBody: 1 << 20, Handler: s.adminDryRun},
	}
}

func keyInfo(plugin string, k *kms.Key) KeyInfo {
	out := KeyInfo{KMS: plugin, ID: k.ID, Algorithm: string(k.Algorithm), PrimaryVersion: k.PrimaryVersion, Labels: k.Labels,
		Exportable: k.Exportable, CreatedAt: k.CreatedAt.UTC(), Versions: []KeyVersionInfo{}}
	for _, v := range k.Versions {
		out.Versions = append(out.Versions, KeyVersionInfo{Version: v.Version, State: string(v.State), CreatedAt: v.CreatedAt.UTC(),
			DestroyedAt: v.DestroyedAt.UTC()})
	}
	if k.Versions == nil {
		out.Versions = []KeyVersionInfo{}
	}
	return out
}

// maxKeyRounds bounds the KMS calls of one key listing page.
const maxKeyRounds = 32

func (s *Server) adminListKeys(w http.ResponseWriter, r *adminapi.Request) error {
	only := r.URL.Query().Get("kms")
	listing := "keys?kms=" + only
	pg, err := r.Page(listing)
	if err != nil {
		return err
	}
	var names []string
	for _, inst := range s.plugins.Instances() {
		if inst.Spec().Kind == sdkplugin.Kind("kms") && (only == "" || inst.Spec().Name == only) {
			names = append(names, inst.Spec().Name)
		}
	}
	if only != "" && len(names) == 0 {
		return adminapi.NewProblem(adminapi.TypeNotFound, fmt.Sprintf("no kms plugin %q", only))
	}
	// The cursor is "plugin/plugin's page token": the plugins in
	// configuration order, each paged by its own token.
	start, tok := 0, ""
	if pg.After != "" {
		name, t, _ := strings.Cut(pg.After, "/")
		start = -1
		for i, n := range names {
			if n == name {
				start, tok = i, t
			}
		}
		if start < 0 {
			return adminapi.NewProblem(adminapi.TypeInvalidPageToken, "the KMS plugin this token pages is no longer configured")
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
	defer cancel()
	out := KeyList{Keys: []KeyInfo{}}
	i := start
	for round := 0; i < len(names) && len(out.Keys) < pg.Size && round < maxKeyRounds; round++ {
		inst, _ := s.plugins.Get(sdkplugin.Kind("kms"), names[i])
		resp, err := inst.KMS().ListKeys(ctx, &kms.ListKeysRequest{PageSize: min(pg.Size-len(out.Keys), 1000), PageToken: tok})
		if err != nil {
			return fmt.Errorf("kms.%s: %w", names[i], err)
		}
		for _, k := range resp.Keys {
			out.Keys = append(out.Keys, keyInfo(names[i], k))
		}
		if tok = resp.NextPageToken; tok == "" {
			i++
		}
	}
	if i < len(names) {
		out.NextPageToken = adminapi.EncodePageToken(listing, names[i]+"/"+tok)
	}
	adminapi.JSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) kmsPlugin(name string) (kms.KMS, error) {
	inst, ok := s.plugins.Get(sdkplugin.Kind("kms"), name)
	if !ok {
		return nil, adminapi.NewProblem(adminapi.TypeNotFound, fmt.Sprintf("no kms plugin %.80q", name))
	}
	return inst.KMS(), nil
}

func (s *Server) adminGetKey(w http.ResponseWriter, r *adminapi.Request) error {
	k, err := s.kmsPlugin(r.PathValue("kms"))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
	defer cancel()
	resp, err := k.GetKey(ctx, &kms.GetKeyRequest{ID: r.PathValue("id")})
	if err != nil {
		return err
	}
	adminapi.JSON(w, http.StatusOK, keyInfo(r.PathValue("kms"), resp.Key))
	return nil
}

func (s *Server) adminRotateKey(w http.ResponseWriter, r *adminapi.Request) error {
	k, err := s.kmsPlugin(r.PathValue("kms"))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Minute)
	defer cancel()
	resp, err := k.RotateKey(ctx, &kms.RotateKeyRequest{ID: r.PathValue("id")})
	if err != nil {
		return err
	}
	r.AuditField("primary_version", strconv.Itoa(resp.Key.PrimaryVersion))
	s.log.Info("key rotated", "kms", r.PathValue("kms"), "key", resp.Key.ID, "version", resp.Key.PrimaryVersion, "by", r.Principal.Actor)
	adminapi.JSON(w, http.StatusOK, keyInfo(r.PathValue("kms"), resp.Key))
	return nil
}

func (s *Server) adminListPlugins(w http.ResponseWriter, _ *adminapi.Request) error {
	out := PluginList{Plugins: []PluginInfo{}}
	for _, inst := range s.plugins.Instances() {
		st := inst.Status()
		out.Plugins = append(out.Plugins, PluginInfo{ID: inst.ID(), Kind: string(inst.Spec().Kind), Name: inst.Spec().Name,
			Version: st.Info.Version, State: string(st.State), Healthy: st.Healthy, Message: st.Message, Restarts: st.Restarts,
			PID: st.PID, Since: st.Since.UTC()})
	}
	adminapi.JSON(w, http.StatusOK, out)
	return nil
}

// auditScan bounds the records one audit query page reads.
const auditScan = 5000

// match is an exact match, or a prefix match when want ends in "*".
func match(want, got string) bool {
	if p, ok := strings.CutSuffix(want, "*"); ok {
		return strings.HasPrefix(got, p)
	}
	return want == got
}

func (s *Server) adminQueryAudit(w http.ResponseWriter, r *adminapi.Request) error {
	q := r.URL.Query()
	var since, until time.Time
	for name, dst := range map[string]*time.Time{"since": &since, "until": &until} {
		if v := q.Get(name); v != "" {
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return adminapi.NewProblem(adminapi.TypeBadRequest, fmt.Sprintf("%s=%.40q: want RFC 3339, e.g. 2026-12-01T00:00:00Z", name, v))
			}
			*dst = t
		}
	}
	action, actor, target, outcome := q.Get("action"), q.Get("actor"), q.Get("target"), q.Get("outcome")
	listing := fmt.Sprintf("audit?since=%s&until=%s&action=%s&actor=%s&target=%s&outcome=%s", q.Get("since"), q.Get("until"), action, actor, target, outcome)
	pg, err := r.Page(listing)
	if err != nil {
		return err
	}
	var after uint64
	if pg.After != "" {
		if after, err = strconv.ParseUint(pg.After, 10, 64); err != nil {
			return adminapi.NewProblem(adminapi.TypeInvalidPageToken, "bad position")
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
	defer cancel()
	out := AuditList{Records: []audit.Record{}}
	scanned := 0
	for scanned < auditScan && len(out.Records) < pg.Size {
		recs, err := s.audit.List(ctx, after, 500)
		if err != nil {
			return err
		}
		for _, rec := range recs {
			scanned++
			after = rec.Seq
			if (!since.IsZero() && rec.Time.Before(since)) || (!until.IsZero() && !rec.Time.Before(until)) ||
				(action != "" && !match(action, rec.Action)) || (actor != "" && !match(actor, rec.Actor)) ||
				(target != "" && !match(target, rec.Target)) || (outcome != "" && rec.Outcome != outcome) {
				continue
			}
			out.Records = append(out.Records, rec)
			if len(out.Records) == pg.Size {
				break
			}
		}
		if len(recs) < 500 {
			if len(out.Records) == pg.Size {
				// Maybe the last record: the next page says so, empty.
				out.NextPageToken = adminapi.EncodePageToken(listing, strconv.FormatUint(after, 10))
			}
			adminapi.JSON(w, http.StatusOK, out)
			return nil
		}
	}
	out.NextPageToken = adminapi.EncodePageToken(listing, strconv.FormatUint(after, 10))
	adminapi.JSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) adminVerifyAudit(w http.ResponseWriter, r *adminapi.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Minute)
	defer cancel()
	var opts audit.VerifyOptions
	if s.checkpointer != nil {
		opts.MaxUnsigned = uint64(s.cfg.Audit.CheckpointEvery)
	}
	rep, err := audit.Verify(ctx, s.store, opts)
	if err != nil {
		return err
	}
	if rep.Problems == nil {
		rep.Problems = []audit.Problem{}
	}
	adminapi.JSON(w, http.StatusOK, AuditVerification{OK: rep.OK(), Report: *rep})
	return nil
}

// policyEngine returns the wired policy plugin's engine, or a 503
// no-policy-engine problem.
func (s *Server) policyEngine() (policy.Engine, error) {
	for _, inst := range s.plugins.Instances() {
		if inst.Spec().Kind == sdkplugin.Kind("policy") {
			return inst.Policy(), nil
		}
	}
	return nil, adminapi.NewProblem(adminapi.TypeNoPolicyEngine, `no policy plugin is configured (plugin "policy" "abac" { ... })`)
}

// policySetID maps the path's set name onto the engine's id ("default"
// is the engine's default set, "").
func policySetID(name string) string {
	if name == "default" {
		return ""
	}
	return name
}

func policyETag(v uint64) string { return fmt.Sprintf(`"p%x"`, v) }

func (s *Server) currentPolicies(ctx context.Context, eng policy.Engine, set string) (*policy.GetPoliciesResponse, error) {
	return eng.GetPolicies(ctx, &policy.GetPoliciesRequest{PolicySetID: policySetID(set)})
}

func (s *Server) adminGetPolicies(w http.ResponseWriter, r *adminapi.Request) error {
	eng, err := s.policyEngine()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
	defer cancel()
	cur, err := s.currentPolicies(ctx, eng, r.PathValue("set"))
	if err != nil {
		return err
	}
	w.Header().Set("ETag", policyETag(cur.Version))
	adminapi.JSON(w, http.StatusOK, PolicySet{ID: r.PathValue("set"), Policies: cur.Policies, Schema: cur.Schema, ReportOnly: cur.ReportOnly,
		Version: cur.Version})
	return nil
}

// setPolicies applies body to set when If-Match matches its current
// version ("*" also when the set does not exist yet).
func (s *Server) setPolicies(r *adminapi.Request, body PolicySetBody) (*policy.SetPoliciesResponse, error) {
	eng, err := s.policyEngine()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
	defer cancel()
	set := r.PathValue("set")
	// The If-Match check here is repeated by the engine atomically with
	// its write (Check/IfVersion: a compare-and-set in its storage), so
	// two operators who read the same version cannot both apply: the
	// second gets 412.
	req := &policy.SetPoliciesRequest{PolicySetID: policySetID(set), Policies: body.Policies, Schema: body.Schema,
		ReportOnly: body.ReportOnly}
	m, _ := adminapi.ParseIfMatch(r.Header.Get("If-Match"))
	cur, err := s.currentPolicies(ctx, eng, set)
	switch {
	case err == nil:
		if err := r.CheckIfMatch(policyETag(cur.Version)); err != nil {
			return nil, err
		}
		if !m.Any { // If-Match: * on an existing set applies over any version
			req.Check, req.IfVersion = true, cur.Version
		}
	case isNotFound(err):
		if !m.Any {
			return nil, adminapi.NewProblem(adminapi.TypePreconditionFailed, "the policy set does not exist: create it with If-Match: *")
		}
		req.Check, req.IfVersion = true, 0 // create: it must still not exist
	default:
		return nil, err
	}
	resp, err := eng.SetPolicies(ctx, req)
	if errors.Is(err, policy.ErrVersionConflict) {
		return nil, adminapi.NewProblem(adminapi.TypePreconditionFailed,
			fmt.Sprintf("the policy set changed while this request was checked (%v); read it again and retry", err))
	}
	if err != nil {
		return nil, err
	}
	if req.Check && !resp.Checked {
		s.log.Warn("the policy plugin does not make conditional writes: the change was applied without the atomic If-Match check",
			"policy_set", set)
	}
	if !resp.Applied {
		p := adminapi.NewProblem(adminapi.TypeInvalidPolicy, fmt.Sprintf("%d problems; nothing was applied", len(resp.Diagnostics)))
		p.Diagnostics = resp.Diagnostics
		return nil, p
	}
	r.AuditField("version", strconv.FormatUint(resp.Version, 10))
	r.AuditField("report_only", strconv.FormatBool(body.ReportOnly))
	// Every replica's gateway re-evaluates its flows and sessions.
	pctx, pcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer pcancel()
	if _, err := s.events.Publish(pctx, events.PolicyChanged, set, map[string]string{"version": strconv.FormatUint(resp.Version, 10)}); err != nil {
		s.log.Warn("policy.changed not published; gateways re-read the policy at their next event gap", "set", set, "error", err)
	}
	return resp, nil
}

func isNotFound(err error) bool {
	p := adminProblem(err)
	return p.Status == http.StatusNotFound
}

func (s *Server) adminPutPolicies(w http.ResponseWriter, r *adminapi.Request) error {
	var body PolicySetBody
	if err := r.Decode(&body); err != nil {
		return err
	}
	resp, err := s.setPolicies(r, body)
	if err != nil {
		return err
	}
	w.Header().Set("ETag", policyETag(resp.Version))
	adminapi.JSON(w, http.StatusOK, PolicySet{ID: r.PathValue("set"), Policies: body.Policies, Schema: body.Schema, ReportOnly: body.ReportOnly,
		Version: resp.Version})
	return nil
}

func (s *Server) adminDeletePolicies(w http.ResponseWriter, r *adminapi.Request) error {
	if _, err := s.setPolicies(r, PolicySetBody{}); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) adminValidatePolicies(w http.ResponseWriter, r *adminapi.Request) error {
	var body PolicySetBody
	if err := r.Decode(&body); err != nil {
		return err
	}
	eng, err := s.policyEngine()
	if err != nil {
		return err
	}
	v, ok := eng.(policy.Validator)
	if !ok {
		return adminapi.NewProblem(adminapi.TypeNotImplemented, "the policy plugin cannot validate without applying")
	}
	ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
	defer cancel()
	resp, err := v.ValidatePolicies(ctx, &policy.SetPoliciesRequest{PolicySetID: policySetID(r.PathValue("set")), Policies: body.Policies,
		Schema: body.Schema, ReportOnly: body.ReportOnly})
	if err != nil {
		return err
	}
	out := PolicyValidation{Valid: true, Diagnostics: []policy.Diagnostic{}}
	for _, d := range resp.Diagnostics {
		out.Valid = out.Valid && d.Severity != "error"
		out.Diagnostics = append(out.Diagnostics, d)
	}
	adminapi.JSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) adminDryRun(w http.ResponseWriter, r *adminapi.Request) error {
	var body DryRunRequest
	if err := r.Decode(&body); err != nil {
		return err
	}
	if body.Principal.ID == "" || body.Action.ID == "" || body.Resource.ID == "" {
		return adminapi.NewProblem(adminapi.TypeBadRequest, "principal, action and resource are required")
	}
	if len(body.Context) > 0 && adminapi.CheckJSON(body.Context) != nil {
		return adminapi.NewProblem(adminapi.TypeBadRequest, "context must be a JSON object")
	}
	eng, err := s.policyEngine()
	if err != nil {
		return err
	}
	ref := func(e EntityRef) policy.EntityRef { return policy.EntityRef{Type: e.Type, ID: e.ID} }
	req := &policy.EvaluateRequest{PolicySetID: policySetID(r.PathValue("set")), Queries: []policy.Query{{Principal: ref(body.Principal),
		Action: ref(body.Action), Resource: ref(body.Resource), Context: body.Context}}}
	for _, e := range body.Entities {
		pe := policy.Entity{Ref: ref(e.Ref), Attributes: e.Attributes}
		for _, p := range e.Parents {
			pe.Parents = append(pe.Parents, ref(p))
		}
		req.Entities = append(req.Entities, pe)
	}
	ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
	defer cancel()
	resp, err := eng.Evaluate(ctx, req)
	if err != nil {
		return err
	}
	if len(resp.Decisions) != 1 {
		return fmt.Errorf("the policy plugin answered %d decisions to 1 query", len(resp.Decisions))
	}
	d := resp.Decisions[0]
	out := DryRunResult{Allow: d.Allow, ReportOnly: d.ReportOnly, DeterminingPolicies: d.DeterminingPolicies, Reasons: d.Reasons, Errors: d.Errors,
		Version: resp.Version}
	if out.DeterminingPolicies == nil {
		out.DeterminingPolicies = []string{}
	}
	if out.Reasons == nil {
		out.Reasons = []string{}
	}
	adminapi.JSON(w, http.StatusOK, out)
	return nil
}
