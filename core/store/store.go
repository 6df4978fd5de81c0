// Package store defines the core's storage interface, KV: a key/value store
// with one global version sequence, compare-and-set on that version, and
// ordered, paged listing. Every backend (embedded SQLite in store/embedded,
// PostgreSQL later, the in-memory double in store/memstore) implements KV and
// proves it by passing the conformance suite in store/storetest. The domain
// owns this interface; backends adapt to it, never the other way round.
//
// The package also holds the rules every backend shares, so they cannot drift
// apart: ValidateKey, CheckValue, CheckList, and NewNamespace, the view that
// confines a caller (a plugin, the audit log) to its own key prefix.
//
// It must not know what is stored, interpret values, cache, log, or hold any
// I/O of its own: values are opaque bytes, and everything that touches a disk
// or a network lives in a backend package.
package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"unicode"
	"unicode/utf8"
)

// Limits every backend enforces.
const (
	// MaxKeySize is the largest key, in bytes.
	MaxKeySize = 512
	// MaxValueSize is the largest value, in bytes (32 MiB).
	MaxValueSize = 32 << 20
	// DefaultLimit is the number of entries List returns when Limit is 0.
	DefaultLimit = 1000
	// MaxLimit is the largest Limit List accepts.
	MaxLimit = 10000
)

// Entry is a stored value and its version.
type Entry struct {
	Key     string
	Value   []byte // never nil in a returned Entry; empty for an empty value
	Version int64  // positive; see KV.Put
}

// PutOptions makes Put conditional.
//
//   - Check false: unconditional write; Version is ignored.
//   - Check true, Version 0: the key must not exist (create).
//   - Check true, Version v: the key's current version must be v (update).
//
// When the condition does not hold, Put returns ErrVersionConflict and writes
// nothing.
type PutOptions struct {
	Check   bool
	Version int64
}

// DeleteOptions makes Delete conditional, with the same rules as PutOptions:
// Check true with Version 0 succeeds only when the key is absent (a no-op),
// with Version v only when the key's current version is v.
type DeleteOptions struct {
	Check   bool
	Version int64
}

// ListOptions selects the entries List returns: keys that start with Prefix
// and are strictly greater than After, in ascending bytewise order, at most
// Limit of them. Limit 0 means DefaultLimit; a negative Limit or one above
// MaxLimit is refused with ErrInvalidArgument. Prefix and After may be empty;
// when not, they follow the key rules (ErrInvalidKey). To page, pass the last
// key of one page as After of the next; a page shorter than the limit is the
// last.
type ListOptions struct {
	Prefix string
	After  string
	Limit  int
}

// KV is a key/value store.
//
// Rules for every method:
//   - Safe for concurrent use by many goroutines (and, for shared backends, by
//     many processes).
//   - Arguments are checked before anything is touched: keys with ValidateKey
//     (ErrInvalidKey), values with CheckValue (ErrValueTooLarge), list options
//     with CheckList. A refused call changes nothing.
//   - ctx bounds the call. A call whose ctx is done returns an error that
//     wraps ctx.Err() (context.Canceled or context.DeadlineExceeded).
//   - Errors wrap this package's sentinels (or ctx.Err()); match them with
//     errors.Is. ErrUnavailable means the backend could not be reached or
//     failed; for a write it leaves the outcome unknown on a remote backend
//     (re-read the key: versions tell whether the write landed). The embedded
//     backend never reports a failed write that took effect.
//   - After Close every method returns ErrClosed.
//   - Returned slices belong to the caller; the store keeps no reference to a
//     slice passed in once the call returns.
type KV interface {
	// Get returns the entry stored under key, or ErrNotFound. It reflects
	// every write that completed before Get was called.
	Get(ctx context.Context, key string) (Entry, error)

	// Put stores value under key atomically, subject to opts, and returns
	// the entry's new version. Versions come from one sequence shared by
	// the whole store: each successful Put returns a positive version
	// greater than every version the store handed out before, so a key
	// deleted and re-created never repeats a version (no ABA). A nil value
	// is stored as an empty one. Errors: ErrInvalidKey, ErrValueTooLarge,
	// ErrVersionConflict (nothing written), ErrClosed, ErrUnavailable,
	// ctx.Err().
	Put(ctx context.Context, key string, value []byte, opts PutOptions) (version int64, err error)

	// Delete removes key atomically, subject to opts. Deleting an absent
	// key without Check is not an error. Errors: ErrInvalidKey,
	// ErrVersionConflict (nothing deleted), ErrClosed, ErrUnavailable,
	// ctx.Err().
	Delete(ctx context.Context, key string, opts DeleteOptions) error

	// List returns the entries selected by opts (see ListOptions), in
	// ascending bytewise key order, as one consistent snapshot. An empty
	// result is not an error. Errors: ErrInvalidKey, ErrInvalidArgument,
	// ErrClosed, ErrUnavailable, ctx.Err().
	List(ctx context.Context, opts ListOptions) ([]Entry, error)

	// Ping reports whether the backend can serve: nil, ErrClosed,
	// ErrUnavailable or ctx.Err(). /readyz calls it.
	Ping(ctx context.Context) error

	// Close releases the backend. It is idempotent; calls made after it
	// returns get ErrClosed. Calls in flight when Close is called either
	// complete or fail with ErrClosed.
	Close() error
}

// ValidateKey checks the key rules every backend enforces: non-empty, at most
// MaxKeySize bytes, valid UTF-8, no control characters (NUL, C0, DEL, C1).
// Anything else is an ordinary key: "../x" and "/" mean nothing special.
// The error wraps ErrInvalidKey.
func ValidateKey(key string) error {
	if key == "" {
		return fmt.Errorf("empty key: %w", ErrInvalidKey)
	}
	return validateKeyText(key)
}

func validateKeyText(key string) error {
	if len(key) > MaxKeySize {
		return fmt.Errorf("key of %d bytes exceeds %d: %w", len(key), MaxKeySize, ErrInvalidKey)
	}
	if !utf8.ValidString(key) {
		return fmt.Errorf("key %q is not valid UTF-8: %w", key, ErrInvalidKey)
	}
	for _, r := range key {
		if unicode.IsControl(r) {
			return fmt.Errorf("key %q contains control character %U: %w", key, r, ErrInvalidKey)
		}
	}
	return nil
}

// CheckValue checks a value's size; the error wraps ErrValueTooLarge.
func CheckValue(v []byte) error {
	if len(v) > MaxValueSize {
		return fmt.Errorf("value of %d bytes exceeds %d: %w", len(v), MaxValueSize, ErrValueTooLarge)
	}
	return nil
}

// CheckList checks list options and returns the effective limit. Prefix and
// After, when not empty, follow the key rules (ErrInvalidKey); Limit must be
// within 0..MaxLimit (ErrInvalidArgument).
func CheckList(opts ListOptions) (int, error) {
	if opts.Prefix != "" {
		if err := validateKeyText(opts.Prefix); err != nil {
			return 0, fmt.Errorf("list prefix: %w", err)
		}
	}
	if opts.After != "" {
		if err := validateKeyText(opts.After); err != nil {
			return 0, fmt.Errorf("list after: %w", err)
		}
	}
	switch {
	case opts.Limit < 0 || opts.Limit > MaxLimit:
		return 0, fmt.Errorf("list limit %d outside 0..%d: %w", opts.Limit, MaxLimit, ErrInvalidArgument)
	case opts.Limit == 0:
		return DefaultLimit, nil
	}
	return opts.Limit, nil
}

// NewNamespace returns a view of kv in which only the keys under prefix
// exist: the view adds prefix to every key on the way in and strips it on
// the way out, and its List never leaves the prefix. The core gives each
// plugin the view "plugins/<kind>/<name>/".
//
// prefix must be a valid key ending in "/" (otherwise ErrInvalidKey and no
// view), so that "a/" cannot see "ab/". Keys inside the view follow the key
// rules and, with the prefix added, must still fit MaxKeySize. Versions are
// those of kv. Close on the view makes the view return ErrClosed and leaves
// kv open; closing kv closes every view of it. When kv is a Batcher, so is
// the view: its Apply prefixes every op's key as Put does.
func NewNamespace(kv KV, prefix string) (KV, error) {
	if err := ValidateKey(prefix); err != nil {
		return nil, fmt.Errorf("namespace prefix: %w", err)
	}
	if !strings.HasSuffix(prefix, "/") {
		return nil, fmt.Errorf("namespace prefix %q does not end in '/': %w", prefix, ErrInvalidKey)
	}
	n := &namespace{kv: kv, prefix: prefix}
	if b, ok := kv.(Batcher); ok {
		return &batchNamespace{namespace: n, b: b}, nil
	}
	return n, nil
}

type namespace struct {
	kv     KV
	prefix string
	closed atomic.Bool
}

// key checks the view's key and returns the parent's key.
func (n *namespace) key(k string) (string, error) {
	if n.closed.Load() {
		return "", fmt.Errorf("namespace %q: %w", n.prefix, ErrClosed)
	}
	if err := ValidateKey(k); err != nil {
		return "", err
	}
	if len(n.prefix)+len(k) > MaxKeySize {
		return "", fmt.Errorf("key of %d bytes exceeds %d in namespace %q: %w", len(k), MaxKeySize-len(n.prefix), n.prefix, ErrInvalidKey)
	}
	return n.prefix + k, nil
}

func (n *namespace) Get(ctx context.Context, k string) (Entry, error) {
	full, err := n.key(k)
	if err != nil {
		return Entry{}, err
	}
	e, err := n.kv.Get(ctx, full)
	if err != nil {
		return Entry{}, err
	}
	e.Key = k
	return e, nil
}

func (n *namespace) Put(ctx context.Context, k string, v []byte, o PutOptions) (int64, error) {
	full, err := n.key(k)
	if err != nil {
		return 0, err
	}
	return n.kv.Put(ctx, full, v, o)
}

func (n *namespace) Delete(ctx context.Context, k string, o DeleteOptions) error {
	full, err := n.key(k)
	if err != nil {
		return err
	}
	return n.kv.Delete(ctx, full, o)
}

func (n *namespace) List(ctx context.Context, o ListOptions) ([]Entry, error) {
	if n.closed.Load() {
		return nil, fmt.Errorf("namespace %q: %w", n.prefix, ErrClosed)
	}
	// Check the view's own options first so errors speak of the caller's
	// strings; the parent then sees prefix+Prefix, which confines the scan.
	if _, err := CheckList(o); err != nil {
		return nil, err
	}
	inner := ListOptions{Prefix: n.prefix + o.Prefix, Limit: o.Limit}
	if o.After != "" {
		inner.After = n.prefix + o.After
	}
	es, err := n.kv.List(ctx, inner)
	if err != nil {
		return nil, err
	}
	out := es[:0]
	for _, e := range es {
		// The parent returned only keys under inner.Prefix; the check
		// guards against a backend that does not.
		if k, ok := strings.CutPrefix(e.Key, n.prefix); ok {
			e.Key = k
			out = append(out, e)
		}
	}
	return out, nil
}

func (n *namespace) Ping(ctx context.Context) error {
	if n.closed.Load() {
		return fmt.Errorf("namespace %q: %w", n.prefix, ErrClosed)
	}
	return n.kv.Ping(ctx)
}

// Close closes the view, not the store under it.
func (n *namespace) Close() error {
	n.closed.Store(true)
	return nil
}

// batchNamespace is the view of a KV that is also a Batcher: the view is
// then a Batcher too.
type batchNamespace struct {
	*namespace
	b Batcher
}

// Scoper is implemented by the views NewNamespace returns over a Batcher:
// Scope checks a batch as the view's Apply does and returns it with the
// parent's keys, for a caller that writes it to the parent within a
// larger batch (the audit log writes a plugin's ops in the batch of the
// event recording them). Index i of the result is op i of ops.
type Scoper interface {
	Scope(ops []Op) ([]Op, error)
}

// Scope implements Scoper: the view's ops are checked like its Put keys
// (the Batcher rules, and MaxKeySize with the prefix added); ops is left
// unchanged.
func (n *batchNamespace) Scope(ops []Op) ([]Op, error) {
	if n.closed.Load() {
		return nil, fmt.Errorf("namespace %q: %w", n.prefix, ErrClosed)
	}
	if err := CheckBatch(ops); err != nil {
		return nil, err
	}
	inner := make([]Op, len(ops))
	for i, op := range ops {
		full, err := n.key(op.Key)
		if err != nil {
			return nil, fmt.Errorf("batch op %d: %w", i, err)
		}
		op.Key = full
		inner[i] = op
	}
	return inner, nil
}

// Apply implements Batcher. The view's ops are checked as Scope checks
// them before the parent sees them; a *BatchError names the view's key.
func (n *batchNamespace) Apply(ctx context.Context, ops []Op) ([]int64, error) {
	inner, err := n.Scope(ops)
	if err != nil {
		return nil, err
	}
	vs, err := n.b.Apply(ctx, inner)
	var be *BatchError
	if errors.As(err, &be) && be.Index >= 0 && be.Index < len(ops) {
		return nil, &BatchError{Index: be.Index, Key: ops[be.Index].Key, Err: be.Err}
	}
	return vs, err
}

var (
	_ KV      = (*namespace)(nil)
	_ Batcher = (*batchNamespace)(nil)
	_ Scoper  = (*batchNamespace)(nil)
)

// MaxBatchOps is the largest number of writes one Batcher.Apply takes.
const MaxBatchOps = 1024

// Op is one write of a batch: a put of Value under Key, or with Delete a
// delete of Key; Check and Version mean what they mean in PutOptions and
// DeleteOptions.
type Op struct {
	Key     string
	Value   []byte
	Delete  bool
	Check   bool
	Version int64
}

// Batcher is implemented by backends that apply several writes atomically.
// Every backend in this module implements it; code that takes a KV from
// elsewhere checks with a type assertion and falls back to single writes.
type Batcher interface {
	// Apply performs ops in order as one atomic write: either every op
	// takes effect, or none does. On success it returns one version per op
	// (the new version of a put, 0 for a delete), taken from the store's
	// sequence in op order. When an op's check fails, nothing is written
	// and the error is a *BatchError naming that op and wrapping
	// ErrVersionConflict. Ops are checked before anything is touched: at
	// least 1 and at most MaxBatchOps ops, keys valid and distinct
	// (ErrInvalidArgument otherwise), values within MaxValueSize. The
	// other errors are those of Put; ErrUnavailable leaves the outcome
	// unknown on a remote backend, as for Put.
	Apply(ctx context.Context, ops []Op) ([]int64, error)
}

// BatchError reports which op of a batch failed its check.
type BatchError struct {
	Index int // the op's index in the batch
	Key   string
	Err   error // wraps ErrVersionConflict
}

func (e *BatchError) Error() string {
	return fmt.Sprintf("batch op %d (%q): %v", e.Index, e.Key, e.Err)
}

func (e *BatchError) Unwrap() error { return e.Err }

// CheckBatch checks ops against the Batcher.Apply rules; backends call it
// before touching anything.
func CheckBatch(ops []Op) error {
	if len(ops) == 0 || len(ops) > MaxBatchOps {
		return fmt.Errorf("%w: a batch of %d ops (allowed 1..%d)", ErrInvalidArgument, len(ops), MaxBatchOps)
	}
	seen := make(map[string]struct{}, len(ops))
	for i, op := range ops {
		if err := ValidateKey(op.Key); err != nil {
			return fmt.Errorf("batch op %d: %w", i, err)
		}
		if _, dup := seen[op.Key]; dup {
			return fmt.Errorf("%w: batch op %d repeats key %q", ErrInvalidArgument, i, op.Key)
		}
		seen[op.Key] = struct{}{}
		if !op.Delete {
			if err := CheckValue(op.Value); err != nil {
				return fmt.Errorf("batch op %d: %w", i, err)
			}
		}
	}
	return nil
}
