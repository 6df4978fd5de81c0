package netns

import "errors"

var (
	// ErrUnavailable is wrapped when this host cannot run namespace tests:
	// not root, no /dev/net/tun, no ip (iproute2), no ping, or the kernel
	// refuses to create a network namespace.
	ErrUnavailable = errors.New("netns: network namespaces unavailable")

	// ErrInvalid is wrapped when an argument is malformed: a label, an
	// address list, a route, a ping count.
	ErrInvalid = errors.New("netns: invalid argument")

	// ErrCommand is wrapped when a command run inside a namespace fails or
	// outlives its deadline.
	ErrCommand = errors.New("netns: command failed")

	// ErrSwitch is wrapped when Do cannot move the calling thread into the
	// namespace or back out of it (for example because the namespace has
	// already been deleted).
	ErrSwitch = errors.New("netns: cannot switch network namespace")
)
