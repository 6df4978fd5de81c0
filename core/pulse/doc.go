// Package pulse is the gateway side of continuous session verification: the
// pure bookkeeping of the agents' heartbeats ("pulses") and the component
// that turns revocation events into ended sessions.
//
// # Tracker
//
// A Tracker holds, per live session, what the pulse needs: the session's
// identity (SessionInfo), its current and previous session token, the last
// accepted sequence number and beat time, and the posture facts of the last
// accepted pulse. It does no I/O, starts no goroutines and takes the time as
// an argument; its randomness (the key session secrets derive from) is drawn
// from the reader given to New.
//
// Session tokens rotate on every accepted pulse. A session's secret is
// HMAC-SHA-256(tracker key, "avon-v1 pulse secret" || session id) and the
// token after accepting the pulse with sequence number seq is
//
//	next = HMAC-SHA-256(session secret, "avon-v1 pulse token" || seq u64 BE)
//
// The first token (seq 0) goes to the agent in its SessionConfig, each next
// one in the PulseAck. A pulse must carry the current token, or the previous
// one once (its ack was lost: the agent never learnt the current token); two
// lost acks in a row leave the agent without a valid token, its pulses are
// refused and the session dies by missed beats, after which the agent
// reconnects. Sequence numbers strictly increase (gaps are fine); a replayed
// or reordered pulse is refused even with a valid token. Every refusal
// changes nothing. Token comparisons are constant time.
//
// A session is dead when no pulse was accepted for more than Missed *
// Interval (since Established before the first pulse), or when it was ended
// (End, or a failed re-verification in Handle). Dead lists such sessions
// until the owner Removes them, scanning every session; an owner with many
// sessions schedules each one's deadline itself instead (DeadAt) and asks
// only for the ended ones (Ended), as core/gateway's timer wheel does.
//
// # Re-verification
//
// On every accepted pulse the owner re-checks the session against the
// current state of the world (certificate status, policy, token validity)
// through a Verifier, outside the tracker's lock; Handle does both steps.
// A Verifier error ends the session.
//
// # Revocations
//
// Revocations subscribes to the core's event bus (core/events) and, within
// the dispatch of each CertRevoked, SessionKilled or AgentDisabled event,
// removes the affected sessions from the Tracker and hands them to a
// Terminator (the gateway). Events are at most once: at start and on every
// subscription gap it calls Resync so the owner re-reads the durable state.
//
// The package must not send packets, read the store or decide policy: the
// gateway owns the tunnel, the Verifier and Resync own the lookups.
package pulse
