package abac

import (
	"google.golang.org/grpc/codes"

	"github.com/avonzt/avon/sdk/errdef"
)

// Errors of the engine. They are errdef sentinels so that their codes
// survive the plugin boundary; every one means nothing was decided or
// changed.
var (
	// ErrInvalidEntity: an entity of a batch does not conform to the schema
	// (unknown type, wrong attribute, parent of a type it may not have).
	ErrInvalidEntity = errdef.New("policyabac.invalid_entity", codes.InvalidArgument, "invalid entity")
	// ErrInvalidContext: a query's context does not conform to the
	// schema's context type for its action. The query is denied with it.
	ErrInvalidContext = errdef.New("policyabac.invalid_context", codes.InvalidArgument, "invalid context")
	// ErrInvalidQuery: a query names an unknown action or a principal or
	// resource type its action does not apply to. The query is denied.
	ErrInvalidQuery = errdef.New("policyabac.invalid_query", codes.InvalidArgument, "invalid query")
	// ErrNoTime: a context omits its time and no calibrated time was given.
	// The query is denied (time-dependent decisions fail closed).
	ErrNoTime = errdef.New("policyabac.no_time", codes.FailedPrecondition, "no calibrated time for the decision")
)
