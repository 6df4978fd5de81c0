package flow

import "errors"

// Errors of this package, wrapped with context; match with errors.Is.
var (
	// ErrPacket: an inner packet the tracker cannot place in a flow (an
	// ICMP echo or error message cut short, an ICMP error whose embedded
	// header is unreadable, a fragment without its identification). The
	// packet is dropped.
	ErrPacket = errors.New("flow: packet not trackable")
	// ErrConfig: a Config value out of range; New refused it.
	ErrConfig = errors.New("flow: invalid config")
	// ErrClosed: the enforcer or batcher was closed.
	ErrClosed = errors.New("flow: closed")
	// ErrEngine: the policy engine failed, answered out of shape, or is
	// absent; the decision fails closed (deny) and is not cached.
	ErrEngine = errors.New("flow: policy engine unavailable")

	// errQueueFull: the batcher refused a query (MaxPending wait); the
	// engine itself may be fine.
	errQueueFull = errors.New("flow: too many queries waiting")
)
