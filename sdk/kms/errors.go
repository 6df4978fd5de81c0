package kms

import (
	"google.golang.org/grpc/codes"

	"github.com/avonzt/avon/sdk/errdef"
)

// Errors a KMS returns, wrapped with context ("sign key %q: %w").
var (
	ErrKeyNotFound          = errdef.New("kms.key_not_found", codes.NotFound, "key not found")
	ErrKeyExists            = errdef.New("kms.key_exists", codes.AlreadyExists, "key already exists")
	ErrVersionNotFound      = errdef.New("kms.version_not_found", codes.NotFound, "key version not found")
	ErrKeyDestroyed         = errdef.New("kms.key_destroyed", codes.FailedPrecondition, "key version destroyed")
	ErrNotPrimary           = errdef.New("kms.not_primary", codes.FailedPrecondition, "key version is not primary")
	ErrUnsupportedAlgorithm = errdef.New("kms.unsupported_algorithm", codes.InvalidArgument, "unsupported algorithm")
	ErrWrongPurpose         = errdef.New("kms.wrong_purpose", codes.InvalidArgument, "key purpose does not allow this operation")
	ErrInvalidCiphertext    = errdef.New("kms.invalid_ciphertext", codes.InvalidArgument, "invalid ciphertext")
	ErrNotExportable        = errdef.New("kms.not_exportable", codes.PermissionDenied, "key is not exportable")
	ErrKeystoreLocked       = errdef.New("kms.keystore_locked", codes.FailedPrecondition, "keystore is locked")
)
