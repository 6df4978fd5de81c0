// Package host is what the AVON core offers a plugin: randomness from the
// core RNG, calibrated time, storage in the plugin's own namespace, an
// ephemeral cache in the same namespace (nonces, one-time values, rate
// limits), audit emission (alone, or with storage writes in one
// transaction: AuditedApplier), and typed access to the plugins the operator
// wired to it (`uses = { kms = "soft" }`).
//
// A plugin receives a Host in its Configure call. Every method is safe for
// concurrent use. The package must not keep secrets: random bytes handed out
// are zeroized in its buffer once consumed.
package host

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/avonzt/avon/sdk/ca"
	"github.com/avonzt/avon/sdk/kms"
	"github.com/avonzt/avon/sdk/policy"
	"github.com/avonzt/avon/sdk/pqc"
)

// Host is the plugin's view of the core.
type Host interface {
	// Rand returns a reader of the core's SP 800-90A DRBG output. Every key,
	// nonce and salt a plugin makes must come from it. Read fails (and
	// returns no bytes) when the core RNG fails its health tests.
	Rand() io.Reader
	// Now returns the core's calibrated time. When Calibrated is false,
	// time-dependent decisions must fail closed.
	Now(ctx context.Context) (Time, error)
	// Storage returns the plugin's namespaced key/value store.
	Storage() Storage
	// Cache returns the plugin's namespaced ephemeral store, shared by
	// every core replica (host protocol minor 2). Against an older core
	// every call fails with errdef.ErrNotImplemented.
	Cache() Cache
	// Audit records a security-relevant event in the core's audit log. An
	// error means it was not recorded: refuse the operation that needed it.
	Audit(ctx context.Context, ev Event) error
	// KMS returns the kms plugin wired to this one (the first name of a
	// list: `uses = { kms = ["soft", "hsm"] }`); ErrNotWired if none.
	KMS() (kms.KMS, error)
	// KMSNamed returns the kms plugin of that name among those wired to this
	// one ("" = the default, as KMS); ErrNotWired, naming the wired ones,
	// if none has that name.
	KMSNamed(name string) (kms.KMS, error)
	// PQC returns the pqc plugin wired to this one; ErrNotWired if none.
	PQC() (pqc.Provider, error)
	// CA returns the ca plugin wired to this one; ErrNotWired if none.
	CA() (ca.CA, error)
	// Policy returns the policy plugin wired to this one; ErrNotWired if none.
	Policy() (policy.Engine, error)
}

// Time is a calibrated reading of the core's clock.
type Time struct {
	Time           time.Time
	Uncertainty    time.Duration // bound on |Time - true time|
	CalibrationAge time.Duration // since the calibration was last confirmed
	Calibrated     bool
}

// Event is an audit event. Never put secrets in it.
type Event struct {
	Action    string // e.g. "kms.sign"
	Target    string // e.g. "key/ca-root"
	Outcome   string // "success", "failure" or "denied"
	Reason    string
	Actor     string
	RequestID string
	Fields    map[string]string
}

// Entry is a stored value with its version.
type Entry struct {
	Key     string
	Value   []byte
	Version int64
}

// PutOptions makes Put conditional: with Check, Version 0 means the key must
// not exist, any other Version must equal the current one.
type PutOptions struct {
	Check   bool
	Version int64
}

// DeleteOptions makes Delete conditional like PutOptions.
type DeleteOptions struct {
	Check   bool
	Version int64
}

// ListOptions selects keys: those with Prefix, strictly after After, in
// ascending byte order, at most Limit (0: 1000; at most 10000).
type ListOptions struct {
	Prefix string
	After  string
	Limit  int
}

// Storage is a key/value store private to one plugin instance. Keys are
// non-empty UTF-8 of at most 512 bytes without control characters; values
// at most 32 MiB. Versions strictly increase and are never reused.
type Storage interface {
	// Get returns ErrNotFound for an absent key.
	Get(ctx context.Context, key string) (Entry, error)
	// Put returns the new version; ErrVersionConflict if a check failed.
	Put(ctx context.Context, key string, value []byte, opts PutOptions) (int64, error)
	// Delete of an absent key without Check is not an error.
	Delete(ctx context.Context, key string, opts DeleteOptions) error
	List(ctx context.Context, opts ListOptions) ([]Entry, error)
}

// Limits of the cache, checked on both sides of the wire.
const (
	// MaxCacheKeySize is the longest cache key, in bytes.
	MaxCacheKeySize = 160
	// MaxCacheValueSize is the largest cache value, in bytes.
	MaxCacheValueSize = 64 << 10
	// MinCacheTTL and MaxCacheTTL bound a TTL or a rate-limit window;
	// durations have millisecond resolution (rounded up).
	MinCacheTTL = time.Millisecond
	MaxCacheTTL = 30 * 24 * time.Hour
	// MaxCacheLimit is the largest rate limit per window.
	MaxCacheLimit = 1 << 30
)

// CachePutOptions are the options of Cache.Put.
type CachePutOptions struct {
	// TTL is how long the value lives: MinCacheTTL..MaxCacheTTL.
	TTL time.Duration
	// IfAbsent stores the value only when no live value is under the key.
	IfAbsent bool
}

// RateDecision is the outcome of Cache.Count.
type RateDecision struct {
	Allowed    bool          // the call fits within the limit and was counted
	Remaining  int           // calls the current window still allows
	RetryAfter time.Duration // when denied: until the window resets
}

// Cache is a plugin's ephemeral key/value store, private to the plugin
// instance and shared by every core replica (memory on one node, Redis when
// the core is configured with it). Values may vanish before their TTL (a
// restart of the backend, an eviction): keep nothing here that must last;
// that is what Storage is for.
//
// Keys are 1..MaxCacheKeySize bytes of UTF-8 without control characters;
// values at most MaxCacheValueSize bytes. A refused argument returns an
// error wrapping ErrCacheInvalid and changes nothing; a backend failure
// wraps ErrCacheUnavailable (for a write, the outcome is unknown).
type Cache interface {
	// Put stores value under key for opts.TTL and reports whether it did:
	// always true without IfAbsent; with IfAbsent, false when a live
	// value is already there. Of concurrent IfAbsent puts of one key, on
	// any replica, exactly one stores.
	Put(ctx context.Context, key string, value []byte, opts CachePutOptions) (stored bool, err error)
	// Get returns the value and the time it has left; ErrCacheMiss when
	// it is absent or expired.
	Get(ctx context.Context, key string) (value []byte, ttlLeft time.Duration, err error)
	// Delete removes the value; an absent one is not an error.
	Delete(ctx context.Context, key string) error
	// Consume atomically reads and removes the value: of concurrent
	// Consumes of one key, on any replica, exactly one gets it, the others
	// ErrCacheMiss. Single-use values (nonces) are consumed, never read.
	Consume(ctx context.Context, key string) ([]byte, error)
	// Count counts one call against key's fixed window: the first counted
	// call starts a window of length window, at most limit calls are
	// allowed in it, denied calls are not counted. Rate limits may fail
	// open on ErrCacheUnavailable; replay checks must not.
	Count(ctx context.Context, key string, limit int, window time.Duration) (RateDecision, error)
}

// CheckCacheKey checks a cache key; the error wraps ErrCacheInvalid.
func CheckCacheKey(key string) error {
	return checkKeyText("cache key", key, MaxCacheKeySize, ErrCacheInvalid)
}

// CheckCachePut checks the arguments of Put; the error wraps
// ErrCacheInvalid.
func CheckCachePut(key string, value []byte, ttl time.Duration) error {
	if err := CheckCacheKey(key); err != nil {
		return err
	}
	if len(value) > MaxCacheValueSize {
		return fmt.Errorf("cache value of %d bytes exceeds %d: %w", len(value), MaxCacheValueSize, ErrCacheInvalid)
	}
	return checkCacheTTL("ttl", ttl)
}

// CheckCacheCount checks the arguments of Count; the error wraps
// ErrCacheInvalid.
func CheckCacheCount(key string, limit int, window time.Duration) error {
	if err := CheckCacheKey(key); err != nil {
		return err
	}
	if limit < 1 || limit > MaxCacheLimit {
		return fmt.Errorf("rate limit %d outside 1..%d: %w", limit, MaxCacheLimit, ErrCacheInvalid)
	}
	return checkCacheTTL("window", window)
}

func checkCacheTTL(what string, d time.Duration) error {
	if d < MinCacheTTL || d > MaxCacheTTL {
		return fmt.Errorf("cache %s %v outside %v..%v: %w", what, d, MinCacheTTL, MaxCacheTTL, ErrCacheInvalid)
	}
	return nil
}

// CacheMillis is d in whole milliseconds, rounded up: the resolution of
// TTLs and windows on the wire.
func CacheMillis(d time.Duration) int64 {
	return int64((d + time.Millisecond - 1) / time.Millisecond)
}
