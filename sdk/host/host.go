// Package host is what the AVON core offers a plugin: randomness from the
// core RNG, calibrated time, storage in the plugin's own namespace, audit
// emission, and typed access to the plugins the operator wired to it
// (`uses = { kms = "soft" }`).
//
// A plugin receives a Host in its Configure call. Every method is safe for
// concurrent use. The package must not keep secrets: random bytes handed out
// are zeroized in its buffer once consumed.
package host

import (
	"context"
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
