// Command testpolicy is a minimal policy plugin for the Admin API's tests:
// a policy set is lines of "permit TYPE::ID ACTION TYPE::ID" (principal,
// action id, resource); anything else is a diagnostic with its line and
// column. A query is allowed when a line names it exactly; the line's
// number is the determining policy. Sets live in memory; the default set
// exists from the start, empty.
package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/avonzt/avon/sdk/config"
	"github.com/avonzt/avon/sdk/plugin"
	"github.com/avonzt/avon/sdk/policy"
)

type set struct {
	text       string
	reportOnly bool
	version    uint64
	rules      []rule
}

type rule struct {
	id                          string
	principal, action, resource string
}

type engine struct {
	mu      sync.Mutex
	sets    map[string]*set
	version uint64
	// A set whose text has a line "# race N" waits (up to 5 s) until N
	// such calls have arrived, so that a test's concurrent writers all
	// read the same version before any of them writes.
	raceN    int
	raceGate chan struct{}
}

// raceBarrier holds a "# race N" call until N have arrived.
func (e *engine) raceBarrier(text string) {
	var n int
	for _, line := range strings.Split(text, "\n") {
		if _, err := fmt.Sscanf(strings.TrimSpace(line), "# race %d", &n); err == nil {
			break
		}
	}
	if n <= 1 {
		return
	}
	e.mu.Lock()
	if e.raceGate == nil {
		e.raceGate = make(chan struct{})
	}
	gate := e.raceGate
	if e.raceN++; e.raceN == n {
		close(gate)
		e.raceN, e.raceGate = 0, nil
	}
	e.mu.Unlock()
	select {
	case <-gate:
	case <-time.After(5 * time.Second):
	}
}

func (e *engine) Info() plugin.Info           { return plugin.Info{Name: "testpolicy", Version: "0.0.1"} }
func (e *engine) ConfigSchema() config.Schema { return config.Schema{} }
func (e *engine) Configure(context.Context, *plugin.ConfigureRequest) error {
	return nil
}

func parse(text string) ([]rule, []policy.Diagnostic) {
	var rules []rule
	var diags []policy.Diagnostic
	for n, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 4 || f[0] != "permit" || !strings.Contains(f[1], "::") || !strings.Contains(f[3], "::") {
			diags = append(diags, policy.Diagnostic{Severity: "error", PolicyID: fmt.Sprintf("line%d", n+1), Line: n + 1, Column: 1,
				Message: "want: permit TYPE::ID ACTION TYPE::ID"})
			continue
		}
		rules = append(rules, rule{id: fmt.Sprintf("line%d", n+1), principal: f[1], action: f[2], resource: f[3]})
	}
	return rules, diags
}

func (e *engine) Evaluate(_ context.Context, r *policy.EvaluateRequest) (*policy.EvaluateResponse, error) {
	if len(r.Queries) > policy.MaxBatch {
		return nil, policy.ErrBatchTooLarge
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	s, ok := e.sets[r.PolicySetID]
	if !ok {
		return nil, fmt.Errorf("%q: %w", r.PolicySetID, policy.ErrUnknownPolicySet)
	}
	out := &policy.EvaluateResponse{Version: s.version}
	for _, q := range r.Queries {
		d := policy.Decision{Reasons: []string{"no policy permits it"}}
		for _, ru := range s.rules {
			if ru.principal == q.Principal.Type+"::"+q.Principal.ID && ru.action == q.Action.ID && ru.resource == q.Resource.Type+"::"+q.Resource.ID {
				d = policy.Decision{Allow: true, DeterminingPolicies: []string{ru.id}, Reasons: []string{"permitted by " + ru.id}}
				break
			}
		}
		if !d.Allow && s.reportOnly {
			d.Allow, d.ReportOnly = true, true
		}
		out.Decisions = append(out.Decisions, d)
	}
	return out, nil
}

func (e *engine) SetPolicies(_ context.Context, r *policy.SetPoliciesRequest) (*policy.SetPoliciesResponse, error) {
	e.raceBarrier(r.Policies)
	rules, diags := parse(r.Policies)
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(diags) > 0 {
		v := uint64(0)
		if s, ok := e.sets[r.PolicySetID]; ok {
			v = s.version
		}
		return &policy.SetPoliciesResponse{Version: v, Diagnostics: diags}, nil
	}
	if r.Check {
		cur := uint64(0)
		if s, ok := e.sets[r.PolicySetID]; ok {
			cur = s.version
		}
		if cur != r.IfVersion {
			return nil, fmt.Errorf("%q at version %d, not %d: %w", r.PolicySetID, cur, r.IfVersion, policy.ErrVersionConflict)
		}
	}
	e.version++
	e.sets[r.PolicySetID] = &set{text: r.Policies, reportOnly: r.ReportOnly, version: e.version, rules: rules}
	return &policy.SetPoliciesResponse{Applied: true, Version: e.version, Checked: r.Check}, nil
}

func (e *engine) GetPolicies(_ context.Context, r *policy.GetPoliciesRequest) (*policy.GetPoliciesResponse, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	s, ok := e.sets[r.PolicySetID]
	if !ok {
		return nil, fmt.Errorf("%q: %w", r.PolicySetID, policy.ErrUnknownPolicySet)
	}
	return &policy.GetPoliciesResponse{Policies: s.text, ReportOnly: s.reportOnly, Version: s.version}, nil
}

func (e *engine) ValidatePolicies(_ context.Context, r *policy.SetPoliciesRequest) (*policy.ValidatePoliciesResponse, error) {
	_, diags := parse(r.Policies)
	return &policy.ValidatePoliciesResponse{Diagnostics: diags}, nil
}

func main() {
	plugin.Serve(&plugin.ServeConfig{Policy: &engine{sets: map[string]*set{"": {version: 0}}}})
}
