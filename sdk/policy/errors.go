package policy

import (
	"google.golang.org/grpc/codes"

	"github.com/avonzt/avon/sdk/errdef"
)

// Errors a policy engine returns, wrapped with context.
var (
	ErrInvalidPolicy    = errdef.New("policy.invalid_policy", codes.InvalidArgument, "invalid policy")
	ErrUnknownPolicySet = errdef.New("policy.unknown_policy_set", codes.NotFound, "unknown policy set")
	ErrBatchTooLarge    = errdef.New("policy.batch_too_large", codes.InvalidArgument, "too many queries in one batch")
	// ErrVersionConflict: a conditional SetPolicies (Check) whose IfVersion
	// is not the set's current version; nothing changed.
	ErrVersionConflict = errdef.New("policy.version_conflict", codes.FailedPrecondition, "policy set changed since it was read")
)
