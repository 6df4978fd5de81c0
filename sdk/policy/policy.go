// Package policy defines the access policy plugin kind: batched,
// explainable attribute-based decisions (the AVON engine uses Cedar; others
// may add OPA or their own). The core keeps engines off the per-packet
// path: it batches queries and caches decisions keyed on the policy set
// Version and the inputs.
//
// The package does no I/O; the gRPC shim lives in policy/policyrpc.
package policy

import "context"

// MaxBatch bounds the queries in one Evaluate call.
const MaxBatch = 1024

// Engine is the interface every policy plugin implements.
type Engine interface {
	// Evaluate decides a batch of queries, one Decision per Query in order.
	// ErrBatchTooLarge above MaxBatch; ErrUnknownPolicySet.
	Evaluate(ctx context.Context, req *EvaluateRequest) (*EvaluateResponse, error)
	// SetPolicies replaces a policy set after validating it against its
	// schema. An invalid set is not an error: Applied is false, the
	// Diagnostics say why with positions, and nothing changed.
	SetPolicies(ctx context.Context, req *SetPoliciesRequest) (*SetPoliciesResponse, error)
	// GetPolicies returns a policy set as stored.
	GetPolicies(ctx context.Context, req *GetPoliciesRequest) (*GetPoliciesResponse, error)
}

// Validator is an optional capability: validation without applying.
type Validator interface {
	ValidatePolicies(ctx context.Context, req *SetPoliciesRequest) (*ValidatePoliciesResponse, error)
}

// EntityRef names an entity, e.g. {Type: "Agent", ID: "laptop-42"}.
type EntityRef struct {
	Type string
	ID   string
}

// Entity is an entity with attributes (a JSON object) and parents.
type Entity struct {
	Ref        EntityRef
	Attributes []byte // JSON object
	Parents    []EntityRef
}

// Query is one access question.
type Query struct {
	Principal EntityRef
	Action    EntityRef
	Resource  EntityRef
	Context   []byte // JSON object: posture, time, calibration skew, source, location
}

// Decision answers one Query.
type Decision struct {
	Allow               bool
	DeterminingPolicies []string // policy IDs that decided
	Reasons             []string // human-readable
	Errors              []string // evaluation errors (a query with errors is denied)
	// ReportOnly: the set is in report-only mode and would have denied;
	// Allow is true.
	ReportOnly bool
}

// Diagnostic is a validation problem with its position.
type Diagnostic struct {
	Severity string // "error" or "warning"
	PolicyID string
	Line     int
	Column   int
	Message  string
}

type (
	EvaluateRequest struct {
		PolicySetID string // "" = default
		Entities    []Entity
		Queries     []Query
	}
	EvaluateResponse struct {
		Decisions []Decision
		Version   uint64 // policy set version used
	}

	SetPoliciesRequest struct {
		PolicySetID string
		Policies    string // policy language text
		Schema      string // schema text ("" = none)
		ReportOnly  bool
		// Check makes the change conditional, as an HTTP If-Match: apply
		// only when the set's current version is IfVersion (0: the set
		// must not exist yet); otherwise ErrVersionConflict and nothing
		// changes. An engine must make the check and the write one atomic
		// step (a compare-and-set in host storage), so that two operators
		// editing the same version cannot both succeed.
		Check     bool
		IfVersion uint64
	}
	SetPoliciesResponse struct {
		Applied     bool
		Version     uint64 // the set's version after the call
		Diagnostics []Diagnostic
		// Checked: the engine honoured Check. An engine built before the
		// field existed answers false (and applied unconditionally).
		Checked bool
	}
	ValidatePoliciesResponse struct{ Diagnostics []Diagnostic }

	GetPoliciesRequest  struct{ PolicySetID string }
	GetPoliciesResponse struct {
		Policies   string
		Schema     string
		ReportOnly bool
		Version    uint64
	}
)
