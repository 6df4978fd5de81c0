package pulse

import "errors"

// Errors of this package, wrapped with context; match with errors.Is. The
// errors of Beat and Handle mean "drop this pulse, send no ack"; the session
// itself is unchanged (a session whose pulses keep failing dies by missed
// beats).
var (
	// ErrUnknownSession: no session with this id is tracked (never added,
	// or removed).
	ErrUnknownSession = errors.New("pulse: unknown session")
	// ErrExists: Add of a session id that is already tracked.
	ErrExists = errors.New("pulse: session already tracked")
	// ErrToken: the pulse carries neither the current session token nor
	// the previous one (still usable once).
	ErrToken = errors.New("pulse: invalid session token")
	// ErrReplay: the pulse's sequence number is not above the last
	// accepted one.
	ErrReplay = errors.New("pulse: sequence number not increasing")
	// ErrEnded: the session was ended (End, or a failed re-verification)
	// and awaits removal; it accepts no more pulses.
	ErrEnded = errors.New("pulse: session ended")
	// ErrInvalidArgument: a SessionInfo without id, agent, serial or
	// establishment time, a serial that is not hex, a nil pulse, or a
	// configuration out of range.
	ErrInvalidArgument = errors.New("pulse: invalid argument")
	// ErrRandom: the random source failed in New.
	ErrRandom = errors.New("pulse: random source failed")
	// ErrClosed: the tracker was closed and its secrets wiped.
	ErrClosed = errors.New("pulse: tracker closed")
	// ErrStarted: Start of a Revocations that was already started.
	ErrStarted = errors.New("pulse: revocations already started")
	// ErrSubscriptionClosed: the event subscription ended without Stop
	// (the cache was closed); the owner restarts the component.
	ErrSubscriptionClosed = errors.New("pulse: event subscription closed")
)
