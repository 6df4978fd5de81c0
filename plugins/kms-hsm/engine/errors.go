package engine

import (
	"google.golang.org/grpc/codes"

	"github.com/avonzt/avon/sdk/errdef"
)

// Errors of the engine beyond the kms and token sentinels.
var (
	// ErrCorrupt: a record in host storage is malformed, or a wrapped seed
	// does not authenticate under the token's wrap key (another token, a
	// replaced wrap key, or tampering). Nothing falls back to another key.
	ErrCorrupt = errdef.New("kmshsm.corrupt", codes.DataLoss, "key record is corrupt, tampered with, or not from this token")
)
