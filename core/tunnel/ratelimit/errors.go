package ratelimit

import "errors"

// ErrInvalidConfig: a Config or LoadConfig value out of range; match with
// errors.Is.
var ErrInvalidConfig = errors.New("ratelimit: invalid config")
