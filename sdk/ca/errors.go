package ca

import (
	"google.golang.org/grpc/codes"

	"github.com/avonzt/avon/sdk/errdef"
)

// Errors a CA returns, wrapped with context.
var (
	ErrCertificateNotFound = errdef.New("ca.certificate_not_found", codes.NotFound, "certificate not found")
	ErrUnknownProfile      = errdef.New("ca.unknown_profile", codes.InvalidArgument, "unknown certificate profile")
	ErrUnknownIssuer       = errdef.New("ca.unknown_issuer", codes.NotFound, "unknown issuer")
	ErrBadCSR              = errdef.New("ca.bad_csr", codes.InvalidArgument, "bad certificate signing request")
	ErrPolicyViolation     = errdef.New("ca.policy_violation", codes.PermissionDenied, "request not allowed by the profile")
	ErrAlreadyRevoked      = errdef.New("ca.already_revoked", codes.FailedPrecondition, "certificate already revoked")
)
