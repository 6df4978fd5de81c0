// Package cache defines the core's ephemeral shared state: sessions with a
// time to live, one-time tokens and replay sets, rate-limit counters and
// pub/sub between core replicas. Durable state lives in core/store; what is
// here may vanish (a restart of the backend, an eviction) and the core must
// stay correct, if less convenient, when it does.
//
// Backends: core/cache/memcache keeps everything in the process (one node);
// core/cache/redis shares it between core replicas through Redis. Both pass
// the conformance suite in core/cache/cachetest. The package also holds the
// rules every backend shares (ValidateName, ValidateSet, CheckTTL, ...), so
// they cannot drift apart, and the fail-open helper for rate limits.
//
// # Failure policy
//
// Replay sets and one-time tokens FAIL CLOSED. MarkUsed reports first=true
// only when the backend confirmed that this call created the mark; on any
// error it returns first=false and the error, and the caller must refuse the
// request (a JWT whose JTI cannot be recorded is rejected, an enrollment
// token that cannot be consumed does not enroll). ConsumeToken returns the
// value only to the one caller whose atomic get-and-delete removed it.
//
// Rate limits FAIL OPEN, with an alert: AllowFailOpen turns any error of
// Allow into an allowed decision, logs a rate-limited warning naming the
// error and counts it in avon_cache_ratelimit_fail_open_total. A cache
// outage must not lock every user out; authentication still runs on every
// request, so failing open only removes the brake, not the lock.
//
// Sessions are plain reads and writes; an error is returned as is and the
// caller decides (the API answers 503).
//
// # Pub/sub delivery
//
// Publish/Subscribe carry revocation and policy-change events between core
// replicas. Delivery is AT MOST ONCE: a message published while a
// subscriber is disconnected, or that arrives while the subscriber's buffer
// is full, is lost; nothing is replayed. Every Subscription therefore
// signals on Gaps() whenever messages may have been lost (a dropped message,
// a reconnect), and consumers treat the stream as a hint: on a gap the core
// re-reads the durable state (revocations and the policy version from the
// store) and re-checks every live session at its next pulse; besides, the
// pulse re-verifies each session against the store on its own schedule, so
// a lost event delays an action by at most one pulse interval and never
// skips it.
//
// # Rules for every method
//
//   - Safe for concurrent use; shared backends are also safe across
//     processes, and the atomic operations (MarkUsed, ConsumeToken, Allow)
//     are atomic across replicas.
//   - Arguments are checked before the backend is touched; a refused call
//     returns an error wrapping ErrInvalidArgument and changes nothing.
//   - ctx bounds the call; an error caused by ctx wraps ctx.Err(). A
//     deadline that expires while the backend does not answer wraps both
//     context.DeadlineExceeded and ErrUnavailable.
//   - TTLs and windows have millisecond resolution: a duration that is not
//     a whole number of milliseconds is rounded up.
//   - Values passed in are copied; returned slices belong to the caller.
//   - After Close every method returns ErrClosed.
//
// The package must not log (except AllowFailOpen's warning), know what the
// values mean, or hold I/O of its own.
package cache

import (
	"context"
	"time"
)

// Limits every backend enforces.
const (
	// MaxNameSize is the largest session id, token id, rate-limit key or
	// channel name, in bytes.
	MaxNameSize = 256
	// MaxSetSize is the largest replay-set or token-set name, in bytes.
	MaxSetSize = 64
	// MaxValueSize is the largest session or token value, and the largest
	// pub/sub payload, in bytes (1 MiB).
	MaxValueSize = 1 << 20
	// MinTTL is the shortest TTL or rate-limit window.
	MinTTL = time.Millisecond
	// MaxTTL is the longest TTL or rate-limit window (30 days).
	MaxTTL = 30 * 24 * time.Hour
	// MaxLimit is the largest rate limit per window.
	MaxLimit = 1 << 30
	// MaxChannels is the most channels one Subscribe accepts.
	MaxChannels = 64
)

// Decision is the outcome of one Allow.
type Decision struct {
	// Allowed is true when the call fits within the limit (and was
	// counted).
	Allowed bool
	// Remaining is how many more calls the current window allows.
	Remaining int
	// RetryAfter is, when denied, the time until the window resets; 0 when
	// allowed.
	RetryAfter time.Duration
}

// Message is one pub/sub message.
type Message struct {
	Channel string
	Payload []byte // never nil; belongs to the receiver
}

// Subscription receives the messages published on its channels.
type Subscription interface {
	// C delivers the messages in the order one publisher sent them. It is
	// closed after Close (or after the Cache is closed). When the buffer
	// is full a new message is dropped and Gaps signals.
	C() <-chan Message
	// Gaps receives a value (coalesced: capacity 1) whenever messages may
	// have been lost since the last signal: a message dropped on a full
	// buffer, or the connection to the backend re-established. The
	// consumer re-reads the durable state it mirrors.
	Gaps() <-chan struct{}
	// Close ends the subscription and closes C. It is idempotent.
	Close() error
}

// Cache is the ephemeral shared state. See the package documentation for
// the rules every method follows.
type Cache interface {
	// PutSession stores value under the session id for ttl, replacing any
	// previous value and TTL.
	PutSession(ctx context.Context, id string, value []byte, ttl time.Duration) error
	// GetSession returns the session's value and the time it has left, or
	// ErrNotFound when it is absent or expired.
	GetSession(ctx context.Context, id string) (value []byte, ttlLeft time.Duration, err error)
	// TouchSession sets the session's time to live to ttl from now, or
	// returns ErrNotFound.
	TouchSession(ctx context.Context, id string, ttl time.Duration) error
	// DeleteSession removes the session; an absent one is not an error.
	DeleteSession(ctx context.Context, id string) error

	// MarkUsed records id in the replay set for ttl and reports whether
	// this call recorded it (first=true) or it was already there. Of many
	// concurrent callers with the same (set, id), on any replica, exactly
	// one gets true. On any error first is false: refuse the request.
	MarkUsed(ctx context.Context, set, id string, ttl time.Duration) (first bool, err error)
	// PutToken issues a one-time token: value stored under (set, id) for
	// ttl, replacing any previous one.
	PutToken(ctx context.Context, set, id string, value []byte, ttl time.Duration) error
	// ConsumeToken atomically reads and removes the token and returns its
	// value; ErrNotFound when it never existed, expired or was consumed.
	// Of concurrent callers exactly one gets the value.
	ConsumeToken(ctx context.Context, set, id string) ([]byte, error)
	// AddToken stores value under (set, id) for ttl only if no live token
	// is there, and reports whether it did. Of concurrent callers with the
	// same (set, id), on any replica, exactly one gets true.
	AddToken(ctx context.Context, set, id string, value []byte, ttl time.Duration) (added bool, err error)
	// PeekToken returns the token's value and the time it has left without
	// consuming it; ErrNotFound when it is absent or expired.
	PeekToken(ctx context.Context, set, id string) (value []byte, ttlLeft time.Duration, err error)
	// DeleteToken removes the token; an absent one is not an error.
	DeleteToken(ctx context.Context, set, id string) error

	// Allow counts one call against key's fixed window: the first counted
	// call starts a window of length window, at most limit calls are
	// allowed in it, and denied calls are not counted. A window already
	// running keeps its length even if a later call passes another one.
	Allow(ctx context.Context, key string, limit int, window time.Duration) (Decision, error)

	// Publish sends msg to every current subscriber of channel, on every
	// replica. It succeeds without subscribers.
	Publish(ctx context.Context, channel string, msg []byte) error
	// Subscribe subscribes to the channels (1..MaxChannels of them,
	// duplicates ignored). When it returns, the subscription is active:
	// messages published afterwards are delivered unless lost (see the
	// package documentation). It re-subscribes by itself after the backend
	// connection is re-established.
	Subscribe(ctx context.Context, channels ...string) (Subscription, error)

	// Ping reports whether the backend serves: nil, ErrClosed,
	// ErrUnavailable or a ctx error. /readyz calls it.
	Ping(ctx context.Context) error
	// Close releases the cache and closes its subscriptions. It is
	// idempotent.
	Close() error
}
