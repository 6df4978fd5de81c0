package gateway

import "errors"

// Errors of this package, wrapped with context; match with errors.Is.
var (
	// ErrConfig: a Config value missing or out of range; New refused it.
	ErrConfig = errors.New("gateway: invalid config")
	// ErrClosed: the gateway was closed (or Start was called twice).
	ErrClosed = errors.New("gateway: closed")
	// ErrStarted: Start or Run called on a gateway that already runs.
	ErrStarted = errors.New("gateway: already started")
	// ErrBind: the UDP bind could not be opened.
	ErrBind = errors.New("gateway: cannot open the udp bind")
	// ErrDevice: the TUN device failed while the gateway ran.
	ErrDevice = errors.New("gateway: tun device failed")
	// ErrUnknownSession: no session with this id, agent or serial.
	ErrUnknownSession = errors.New("gateway: unknown session")
)
