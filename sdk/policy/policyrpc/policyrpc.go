// Package policyrpc is the gRPC shim of the policy plugin kind. The shim
// only translates; errors cross in-band (sdk/errdef).
package policyrpc

import (
	"context"
	"fmt"

	"google.golang.org/grpc"

	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/policy"
	policyv1 "github.com/avonzt/avon/sdk/proto/policy/v1"
)

func refTo(r policy.EntityRef) *policyv1.EntityRef {
	return &policyv1.EntityRef{Type: r.Type, Id: r.ID}
}
func refFrom(r *policyv1.EntityRef) policy.EntityRef {
	return policy.EntityRef{Type: r.GetType(), ID: r.GetId()}
}

func diagsTo(ds []policy.Diagnostic) []*policyv1.Diagnostic {
	out := make([]*policyv1.Diagnostic, 0, len(ds))
	for _, d := range ds {
		out = append(out, &policyv1.Diagnostic{Severity: d.Severity, PolicyId: d.PolicyID, Line: int32(d.Line), Column: int32(d.Column), Message: d.Message})
	}
	return out
}

func diagsFrom(ds []*policyv1.Diagnostic) []policy.Diagnostic {
	out := make([]policy.Diagnostic, 0, len(ds))
	for _, d := range ds {
		out = append(out, policy.Diagnostic{Severity: d.GetSeverity(), PolicyID: d.GetPolicyId(), Line: int(d.GetLine()), Column: int(d.GetColumn()), Message: d.GetMessage()})
	}
	return out
}

func setTo(r *policy.SetPoliciesRequest) *policyv1.SetPoliciesRequest {
	return &policyv1.SetPoliciesRequest{PolicySetId: r.PolicySetID, Policies: r.Policies, Schema: r.Schema, ReportOnly: r.ReportOnly,
		Check: r.Check, IfVersion: r.IfVersion}
}

func setFrom(p *policyv1.SetPoliciesRequest) *policy.SetPoliciesRequest {
	return &policy.SetPoliciesRequest{PolicySetID: p.GetPolicySetId(), Policies: p.GetPolicies(), Schema: p.GetSchema(), ReportOnly: p.GetReportOnly(),
		Check: p.GetCheck(), IfVersion: p.GetIfVersion()}
}

// Client is a policy.Engine backed by a remote plugin.
type Client struct{ c policyv1.PolicyClient }

// NewClient returns a client over cc.
func NewClient(cc grpc.ClientConnInterface) *Client { return &Client{c: policyv1.NewPolicyClient(cc)} }

func (c *Client) Evaluate(ctx context.Context, r *policy.EvaluateRequest) (*policy.EvaluateResponse, error) {
	if len(r.Queries) > policy.MaxBatch {
		return nil, fmt.Errorf("%d queries: %w", len(r.Queries), policy.ErrBatchTooLarge)
	}
	// The messages of a batch are allocated together, not one by one.
	p := &policyv1.EvaluateRequest{PolicySetId: r.PolicySetID,
		Entities: make([]*policyv1.Entity, len(r.Entities)), Queries: make([]*policyv1.Query, len(r.Queries))}
	nrefs := 3 * len(r.Queries)
	for _, e := range r.Entities {
		nrefs += 1 + len(e.Parents)
	}
	refs := make([]policyv1.EntityRef, nrefs)
	ref := func(x policy.EntityRef) *policyv1.EntityRef {
		pr := &refs[0]
		refs = refs[1:]
		pr.Type, pr.Id = x.Type, x.ID
		return pr
	}
	ents := make([]policyv1.Entity, len(r.Entities))
	for i, e := range r.Entities {
		pe := &ents[i]
		pe.Ref, pe.Attributes = ref(e.Ref), e.Attributes
		if len(e.Parents) > 0 {
			pe.Parents = make([]*policyv1.EntityRef, len(e.Parents))
			for j, par := range e.Parents {
				pe.Parents[j] = ref(par)
			}
		}
		p.Entities[i] = pe
	}
	qs := make([]policyv1.Query, len(r.Queries))
	for i, q := range r.Queries {
		pq := &qs[i]
		pq.Principal, pq.Action, pq.Resource, pq.Context = ref(q.Principal), ref(q.Action), ref(q.Resource), q.Context
		p.Queries[i] = pq
	}
	resp, err := c.c.Evaluate(ctx, p)
	if err != nil {
		return nil, errdef.FromStatus(err)
	}
	out := &policy.EvaluateResponse{Version: resp.GetVersion(), Decisions: make([]policy.Decision, len(resp.GetDecisions()))}
	for i, d := range resp.GetDecisions() {
		out.Decisions[i] = policy.Decision{Allow: d.GetAllow(), DeterminingPolicies: d.GetDeterminingPolicies(),
			Reasons: d.GetReasons(), Errors: d.GetErrors(), ReportOnly: d.GetReportOnly()}
	}
	return out, nil
}

func (c *Client) SetPolicies(ctx context.Context, r *policy.SetPoliciesRequest) (*policy.SetPoliciesResponse, error) {
	resp, err := c.c.SetPolicies(ctx, setTo(r))
	if err != nil {
		return nil, errdef.FromStatus(err)
	}
	return &policy.SetPoliciesResponse{Applied: resp.GetApplied(), Version: resp.GetVersion(), Diagnostics: diagsFrom(resp.GetDiagnostics()),
		Checked: resp.GetChecked()}, nil
}

func (c *Client) GetPolicies(ctx context.Context, r *policy.GetPoliciesRequest) (*policy.GetPoliciesResponse, error) {
	resp, err := c.c.GetPolicies(ctx, &policyv1.GetPoliciesRequest{PolicySetId: r.PolicySetID})
	if err != nil {
		return nil, errdef.FromStatus(err)
	}
	return &policy.GetPoliciesResponse{Policies: resp.GetPolicies(), Schema: resp.GetSchema(), ReportOnly: resp.GetReportOnly(), Version: resp.GetVersion()}, nil
}

func (c *Client) ValidatePolicies(ctx context.Context, r *policy.SetPoliciesRequest) (*policy.ValidatePoliciesResponse, error) {
	resp, err := c.c.ValidatePolicies(ctx, setTo(r))
	if err != nil {
		return nil, errdef.FromStatus(err)
	}
	return &policy.ValidatePoliciesResponse{Diagnostics: diagsFrom(resp.GetDiagnostics())}, nil
}

// Server serves a policy.Engine over gRPC.
type Server struct {
	policyv1.UnimplementedPolicyServer
	impl policy.Engine
}

// Register registers impl on s.
func Register(s grpc.ServiceRegistrar, impl policy.Engine) {
	policyv1.RegisterPolicyServer(s, &Server{impl: impl})
}

// Capabilities lists the optional capabilities impl offers.
func Capabilities(impl policy.Engine) []string {
	if _, ok := impl.(policy.Validator); ok {
		return []string{"policy.validator"}
	}
	return nil
}

func (s *Server) Evaluate(ctx context.Context, p *policyv1.EvaluateRequest) (*policyv1.EvaluateResponse, error) {
	if len(p.GetQueries()) > policy.MaxBatch {
		return nil, errdef.ToStatus(fmt.Errorf("%d queries: %w", len(p.GetQueries()), policy.ErrBatchTooLarge))
	}
	r := &policy.EvaluateRequest{PolicySetID: p.GetPolicySetId(),
		Entities: make([]policy.Entity, len(p.GetEntities())), Queries: make([]policy.Query, len(p.GetQueries()))}
	for i, e := range p.GetEntities() {
		ent := policy.Entity{Ref: refFrom(e.GetRef()), Attributes: e.GetAttributes()}
		if len(e.GetParents()) > 0 {
			ent.Parents = make([]policy.EntityRef, len(e.GetParents()))
			for j, par := range e.GetParents() {
				ent.Parents[j] = refFrom(par)
			}
		}
		r.Entities[i] = ent
	}
	for i, q := range p.GetQueries() {
		r.Queries[i] = policy.Query{Principal: refFrom(q.GetPrincipal()), Action: refFrom(q.GetAction()), Resource: refFrom(q.GetResource()), Context: q.GetContext()}
	}
	resp, err := s.impl.Evaluate(ctx, r)
	if err != nil {
		return nil, errdef.ToStatus(err)
	}
	out := &policyv1.EvaluateResponse{Version: resp.Version, Decisions: make([]*policyv1.Decision, len(resp.Decisions))}
	ds := make([]policyv1.Decision, len(resp.Decisions))
	for i, d := range resp.Decisions {
		pd := &ds[i]
		pd.Allow, pd.DeterminingPolicies, pd.Reasons, pd.Errors, pd.ReportOnly = d.Allow, d.DeterminingPolicies, d.Reasons, d.Errors, d.ReportOnly
		out.Decisions[i] = pd
	}
	return out, nil
}

func (s *Server) SetPolicies(ctx context.Context, p *policyv1.SetPoliciesRequest) (*policyv1.SetPoliciesResponse, error) {
	r, err := s.impl.SetPolicies(ctx, setFrom(p))
	if err != nil {
		return nil, errdef.ToStatus(err)
	}
	return &policyv1.SetPoliciesResponse{Applied: r.Applied, Version: r.Version, Diagnostics: diagsTo(r.Diagnostics), Checked: r.Checked}, nil
}

func (s *Server) GetPolicies(ctx context.Context, p *policyv1.GetPoliciesRequest) (*policyv1.GetPoliciesResponse, error) {
	r, err := s.impl.GetPolicies(ctx, &policy.GetPoliciesRequest{PolicySetID: p.GetPolicySetId()})
	if err != nil {
		return nil, errdef.ToStatus(err)
	}
	return &policyv1.GetPoliciesResponse{Policies: r.Policies, Schema: r.Schema, ReportOnly: r.ReportOnly, Version: r.Version}, nil
}

func (s *Server) ValidatePolicies(ctx context.Context, p *policyv1.SetPoliciesRequest) (*policyv1.ValidatePoliciesResponse, error) {
	v, ok := s.impl.(policy.Validator)
	if !ok {
		return nil, errdef.ToStatus(fmt.Errorf("validate policies: %w", errdef.ErrNotImplemented))
	}
	r, err := v.ValidatePolicies(ctx, setFrom(p))
	if err != nil {
		return nil, errdef.ToStatus(err)
	}
	return &policyv1.ValidatePoliciesResponse{Diagnostics: diagsTo(r.Diagnostics)}, nil
}

var (
	_ policy.Engine    = (*Client)(nil)
	_ policy.Validator = (*Client)(nil)
)
