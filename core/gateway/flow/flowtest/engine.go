// Package flowtest is an in-memory policy.Engine for tests of per-flow
// enforcement (core/gateway/flow and the gateway): decisions come from a
// Go function, and a test can fail it, hold its answers, change its
// policy (the Version moves) and count its calls and batch sizes.
//
// It must not be used outside tests; the real engines are plugins
// (plugins/policy-abac) reached through core/pluginhost.
package flowtest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/avonzt/avon/sdk/policy"
)

// DecideFunc decides one query.
type DecideFunc func(q policy.Query) policy.Decision

// Engine is a policy.Engine whose decisions come from a DecideFunc. Its
// methods are safe for concurrent use.
type Engine struct {
	mu      sync.Mutex
	decide  DecideFunc
	version uint64
	err     error
	gate    chan struct{}
	calls   int
	queries int
	batches []int
	entered chan struct{}
}

// New returns an engine deciding with decide, at Version 1.
func New(decide DecideFunc) *Engine {
	return &Engine{decide: decide, version: 1, entered: make(chan struct{}, 1024)}
}

// Evaluate implements policy.Engine: ErrBatchTooLarge above
// policy.MaxBatch, the injected error, or one decision per query. While
// held (Hold), it waits for the release or ctx.
func (e *Engine) Evaluate(ctx context.Context, req *policy.EvaluateRequest) (*policy.EvaluateResponse, error) {
	e.mu.Lock()
	e.calls++
	e.batches = append(e.batches, len(req.Queries))
	gate := e.gate
	e.mu.Unlock()
	select {
	case e.entered <- struct{}{}:
	default:
	}
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if len(req.Queries) > policy.MaxBatch {
		return nil, fmt.Errorf("%d queries: %w", len(req.Queries), policy.ErrBatchTooLarge)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.err != nil {
		return nil, e.err
	}
	e.queries += len(req.Queries)
	out := &policy.EvaluateResponse{Version: e.version, Decisions: make([]policy.Decision, len(req.Queries))}
	for i, q := range req.Queries {
		out.Decisions[i] = e.decide(q)
	}
	return out, nil
}

// SetPolicies implements policy.Engine; the fake has no policy text, so
// it only moves the Version. Use SetDecide to change what it decides.
func (e *Engine) SetPolicies(_ context.Context, req *policy.SetPoliciesRequest) (*policy.SetPoliciesResponse, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.version++
	return &policy.SetPoliciesResponse{Applied: true, Version: e.version}, nil
}

// GetPolicies implements policy.Engine.
func (e *Engine) GetPolicies(_ context.Context, req *policy.GetPoliciesRequest) (*policy.GetPoliciesResponse, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return &policy.GetPoliciesResponse{Version: e.version}, nil
}

// SetDecide replaces the decisions (a policy change) and moves the
// Version.
func (e *Engine) SetDecide(d DecideFunc) {
	e.mu.Lock()
	e.decide = d
	e.version++
	e.mu.Unlock()
}

// Version is the current policy version.
func (e *Engine) Version() uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.version
}

// SetError makes every Evaluate fail with err (nil: answer again).
func (e *Engine) SetError(err error) {
	e.mu.Lock()
	e.err = err
	e.mu.Unlock()
}

// Hold makes Evaluate calls wait until the returned function is called.
func (e *Engine) Hold() (release func()) {
	gate := make(chan struct{})
	e.mu.Lock()
	e.gate = gate
	e.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			e.mu.Lock()
			if e.gate == gate {
				e.gate = nil
			}
			e.mu.Unlock()
			close(gate)
		})
	}
}

// Entered is signalled (best effort) each time an Evaluate call starts.
func (e *Engine) Entered() <-chan struct{} { return e.entered }

// Calls is the number of Evaluate calls.
func (e *Engine) Calls() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.calls
}

// Queries is the number of queries answered.
func (e *Engine) Queries() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.queries
}

// Batches returns the size of every Evaluate call's batch.
func (e *Engine) Batches() []int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.batches)
}

// ErrDown is an error for SetError: the engine is unreachable.
var ErrDown = errors.New("flowtest: policy engine down")

// Rule allows (or, with Deny, denies) one resource ID under a policy ID.
type Rule struct {
	Resource string
	PolicyID string
	Deny     bool
	Reason   string
}

// Rules decides by resource ID: the first Rule naming the query's
// resource decides, and no rule is a denial without a determining policy.
// A connect query (Action "connect", resource the Gateway) that no rule
// names is allowed by policy "connect-default", so that tests of flows
// need no connect rule; name the gateway id in a Rule to decide connect.
func Rules(rules ...Rule) DecideFunc {
	return func(q policy.Query) policy.Decision {
		for _, r := range rules {
			if r.Resource == q.Resource.ID {
				d := policy.Decision{Allow: !r.Deny, DeterminingPolicies: []string{r.PolicyID}}
				if r.Reason != "" {
					d.Reasons = []string{r.Reason}
				}
				return d
			}
		}
		if q.Action.ID == "connect" {
			return policy.Decision{Allow: true, DeterminingPolicies: []string{"connect-default"}}
		}
		return policy.Decision{Reasons: []string{"no policy allows " + q.Resource.ID}}
	}
}

// AllowAll allows every query under policy "allow-all".
func AllowAll(policy.Query) policy.Decision {
	return policy.Decision{Allow: true, DeterminingPolicies: []string{"allow-all"}}
}

var _ policy.Engine = (*Engine)(nil)
