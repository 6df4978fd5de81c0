package netcfg

import "errors"

// Errors returned by this package, wrapped with context; match with
// errors.Is. Refusals by the kernel also wrap its unix.Errno, so
// errors.Is(err, unix.EEXIST) works as well.
var (
	// ErrInvalid: an argument this package refuses before asking the
	// kernel: an interface name that is empty, too long or holds '/', ':'
	// or white space; an invalid, IPv4-mapped or non-canonical prefix; a
	// gateway of the other address family or with a zone; an MTU or
	// metric out of range; a Plan that contradicts itself.
	ErrInvalid = errors.New("netcfg: invalid argument")

	// ErrExists: the kernel already has the address or route (EEXIST).
	ErrExists = errors.New("netcfg: already exists")

	// ErrNotFound: the interface, address or route does not exist
	// (ENODEV, ESRCH, EADDRNOTAVAIL).
	ErrNotFound = errors.New("netcfg: not found")

	// ErrPermission: the kernel refused the change for lack of privilege
	// (EPERM, EACCES); configuring interfaces needs CAP_NET_ADMIN.
	ErrPermission = errors.New("netcfg: permission denied")

	// ErrRefused: the kernel refused the request for another reason; the
	// errno and, where the kernel gave one, its message are in the error.
	ErrRefused = errors.New("netcfg: refused by the kernel")

	// ErrMalformed: a reply broke the netlink format (a length that does
	// not fit, a truncated datagram, an attribute of the wrong size).
	ErrMalformed = errors.New("netcfg: malformed reply")

	// ErrTimeout: no reply arrived within ReadTimeout.
	ErrTimeout = errors.New("netcfg: no reply from the kernel")

	// ErrInterrupted: a dump kept changing while it was read and gave no
	// consistent answer in dumpAttempts tries.
	ErrInterrupted = errors.New("netcfg: dump interrupted")

	// ErrSocket: a system call on the netlink socket failed.
	ErrSocket = errors.New("netcfg: netlink socket error")

	// ErrClosed: the Conn was closed.
	ErrClosed = errors.New("netcfg: connection closed")
)
