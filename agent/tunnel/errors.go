package tunnel

import "errors"

// Errors of this package; match with errors.Is. Run's session and
// handshake failures are reported in Status.LastError and retried; Run
// itself returns only ErrConfig, ErrRunning or an error of the bind or TUN
// device it cannot recover from.
var (
	// ErrConfig: a Config that New refuses.
	ErrConfig = errors.New("invalid tunnel configuration")
	// ErrRunning: Run was called a second time on the same Engine.
	ErrRunning = errors.New("engine already ran")
	// ErrNoAnswer: the gateway did not complete the handshake in time.
	ErrNoAnswer = errors.New("no answer from the gateway")
	// ErrRefused: the gateway refused the handshake (a HandshakeError; an
	// unauthenticated one is only a hint and says so).
	ErrRefused = errors.New("gateway refused the handshake")
	// ErrClockSkew: the gateway refused the handshake because our clock is
	// too far from its own; the error says by how much.
	ErrClockSkew = errors.New("clock skew")
	// ErrSilent: no authenticated packet from the gateway for three pulse
	// intervals.
	ErrSilent = errors.New("the gateway stopped answering")
	// ErrClosed: the gateway closed the session (a Close control message).
	ErrClosed = errors.New("the gateway closed the session")
	// ErrConnectDenied: the gateway's access policy denies this agent a
	// session (a Close with code control.CloseConnectDenied, at the
	// handshake or during a session); the error carries the policy's
	// reason and policy ids. The engine backs off and tries again.
	ErrConnectDenied = errors.New("connect denied")
	// ErrKeysExpired: the session's keys reached their reject limit before
	// a rekey succeeded.
	ErrKeysExpired = errors.New("session keys expired")
	// ErrOnConfig: the OnConfig hook refused the gateway's SessionConfig.
	ErrOnConfig = errors.New("session config not applied")
	// ErrCredentials: Config.Credentials failed or returned no signer or
	// chain.
	ErrCredentials = errors.New("agent credentials unavailable")
	// ErrStatus: a status file that ParseStatus refuses.
	ErrStatus = errors.New("invalid status file")
)
