package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/avonzt/avon/plugins/policy-abac/abac"
	"github.com/avonzt/avon/sdk/policy"
)

// benchPolicies is the set the gateway child decides with under -policy
// cedar: every agent may connect and reach anything, through policies that
// read the connect context, so each handshake costs one real Cedar decision.
const benchPolicies = `@id("agents-connect")
permit (principal is Agent, action == Action::"connect", resource is Gateway)
when { context.source.port > 0 && context.calibration_skew_ms < 60000 && resource.name != "" };

@id("agents-reach")
permit (principal is Agent, action == Action::"reach", resource);
`

// cedarEngine is an in-process policy.Engine over one compiled policy-abac
// set: the gateway's connect decisions cost their batching and a Cedar
// evaluation, without a plugin process (whose gRPC round trip the
// benchmark is not about).
type cedarEngine struct{ set *abac.Set }

func newCedarEngine() (*cedarEngine, error) {
	set, diags := abac.Compile(abac.Source{ID: "default", Policies: benchPolicies})
	if set == nil || abac.HasErrors(diags) {
		return nil, fmt.Errorf("bench policies: %v", diags)
	}
	return &cedarEngine{set: set}, nil
}

func (c *cedarEngine) Evaluate(_ context.Context, req *policy.EvaluateRequest) (*policy.EvaluateResponse, error) {
	ds, err := c.set.Evaluate(req.Entities, req.Queries, time.Now)
	if err != nil {
		return nil, err
	}
	return &policy.EvaluateResponse{Version: 1, Decisions: ds}, nil
}

func (c *cedarEngine) SetPolicies(context.Context, *policy.SetPoliciesRequest) (*policy.SetPoliciesResponse, error) {
	return nil, errors.New("avon-bench: the policy set is fixed")
}

func (c *cedarEngine) GetPolicies(context.Context, *policy.GetPoliciesRequest) (*policy.GetPoliciesResponse, error) {
	return &policy.GetPoliciesResponse{Policies: benchPolicies, Version: 1}, nil
}

var _ policy.Engine = (*cedarEngine)(nil)
