package acme

import (
	"google.golang.org/grpc/codes"

	"github.com/avonzt/avon/sdk/errdef"
)

// Errors an ACME plugin returns.
var (
	ErrBodyTooLarge = errdef.New("acme.body_too_large", codes.InvalidArgument, "request body too large")
)
