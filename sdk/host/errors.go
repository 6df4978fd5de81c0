package host

import (
	"google.golang.org/grpc/codes"

	"github.com/avonzt/avon/sdk/errdef"
)

// Errors of the host services.
var (
	ErrNotFound          = errdef.New("host.storage_not_found", codes.NotFound, "storage key not found")
	ErrVersionConflict   = errdef.New("host.storage_version_conflict", codes.Aborted, "storage version conflict")
	ErrInvalidKey        = errdef.New("host.storage_invalid_key", codes.InvalidArgument, "invalid storage key")
	ErrValueTooLarge     = errdef.New("host.storage_value_too_large", codes.InvalidArgument, "storage value too large")
	ErrStorageFailed     = errdef.New("host.storage_failed", codes.Unavailable, "storage unavailable")
	ErrRandomUnavailable = errdef.New("host.random_unavailable", codes.Unavailable, "core RNG unavailable")
	ErrAuditFailed       = errdef.New("host.audit_failed", codes.Unavailable, "audit log unavailable")
	ErrNotWired          = errdef.New("host.not_wired", codes.FailedPrecondition, "no plugin of that kind is wired to this plugin")
	ErrCacheMiss         = errdef.New("host.cache_miss", codes.NotFound, "cache key not found")
	ErrCacheInvalid      = errdef.New("host.cache_invalid", codes.InvalidArgument, "invalid cache request")
	ErrCacheUnavailable  = errdef.New("host.cache_unavailable", codes.Unavailable, "cache unavailable")
)
