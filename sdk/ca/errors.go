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
	// ErrAlreadyIssued: IssueOnce under a key already recorded with a
	// certificate for another request.
	ErrAlreadyIssued = errdef.New("ca.already_issued", codes.AlreadyExists, "a certificate is already issued under that key")
	// ErrNotInitialized: the CA was started without a hierarchy
	// (init = "manual") and nobody ran Initialize yet.
	ErrNotInitialized = errdef.New("ca.not_initialized", codes.FailedPrecondition, "CA not initialized (run avon ca init)")
	// ErrAlreadyInitialized: Initialize on a CA that has a hierarchy.
	ErrAlreadyInitialized = errdef.New("ca.already_initialized", codes.AlreadyExists, "CA already initialized")
	// ErrUnknownKMS: a request names a kms plugin not wired to the CA.
	ErrUnknownKMS = errdef.New("ca.unknown_kms", codes.InvalidArgument, "no kms plugin of that name is wired to the CA")
)
