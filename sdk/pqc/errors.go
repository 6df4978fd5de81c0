package pqc

import (
	"google.golang.org/grpc/codes"

	"github.com/avonzt/avon/sdk/errdef"
)

// Errors a pqc provider returns, wrapped with context.
var (
	ErrUnknownAlgorithm  = errdef.New("pqc.unknown_algorithm", codes.NotFound, "unknown algorithm")
	ErrWrongType         = errdef.New("pqc.wrong_type", codes.InvalidArgument, "operation does not apply to this algorithm type")
	ErrInvalidKey        = errdef.New("pqc.invalid_key", codes.InvalidArgument, "invalid key")
	ErrInvalidCiphertext = errdef.New("pqc.invalid_ciphertext", codes.InvalidArgument, "invalid ciphertext")
)
