// Package store defines the core's storage interface: a key/value store with
// versioned compare-and-set and ordered listing, which every backend
// (embedded SQLite, PostgreSQL) implements and which the conformance suite in
// storetest checks. The domain owns this interface; backends adapt to it.
//
// It must not know what is stored: plugins get a Namespace view of it, the
// audit log and the auth service their own prefixes.
package store

import (
	"context"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits every backend enforces.
const (
	MaxKeySize   = 512
	MaxValueSize = 32 << 20
	DefaultLimit = 1000
	MaxLimit     = 10000
)

// Entry is a stored value and its version.
type Entry struct {
	Key     string
	Value   []byte
	Version int64
}

// PutOptions makes Put conditional. Check=false writes unconditionally.
// Check=true with Version 0 requires the key to be absent; with Version v it
// requires the current version to be v. On mismatch ErrVersionConflict and
// nothing is written.
type PutOptions struct {
	Check   bool
	Version int64
}

// DeleteOptions makes Delete conditional with the same rules as PutOptions.
type DeleteOptions struct {
	Check   bool
	Version int64
}

// ListOptions selects keys: those starting with Prefix and strictly greater
// than After, in ascending byte order, at most Limit (0: DefaultLimit).
type ListOptions struct {
	Prefix string
	After  string
	Limit  int
}

// KV is a key/value store. Every method is safe for concurrent use, honours
// ctx, validates keys with ValidateKey, and returns errors wrapping this
// package's sentinels. Returned slices belong to the caller; the store keeps
// no reference to slices passed in.
type KV interface {
	// Get returns the entry, or ErrNotFound.
	Get(ctx context.Context, key string) (Entry, error)
	// Put writes atomically and returns the new version: positive and
	// greater than every version the store handed out before (one global
	// sequence, so a deleted and re-created key never repeats a version).
	Put(ctx context.Context, key string, value []byte, opts PutOptions) (int64, error)
	// Delete removes the key. Deleting an absent key without Check is not
	// an error; with Check it is ErrVersionConflict.
	Delete(ctx context.Context, key string, opts DeleteOptions) error
	// List returns entries in ascending key order.
	List(ctx context.Context, opts ListOptions) ([]Entry, error)
	// Ping reports whether the backend can serve.
	Ping(ctx context.Context) error
	// Close releases the backend; later calls return ErrClosed.
	Close() error
}

// ValidateKey checks the key rules: non-empty, at most MaxKeySize bytes,
// valid UTF-8, no control characters (NUL included).
func ValidateKey(key string) error {
	if key == "" {
		return fmt.Errorf("empty key: %w", ErrInvalidKey)
	}
	if len(key) > MaxKeySize {
		return fmt.Errorf("key of %d bytes exceeds %d: %w", len(key), MaxKeySize, ErrInvalidKey)
	}
	if !utf8.ValidString(key) {
		return fmt.Errorf("key is not valid UTF-8: %w", ErrInvalidKey)
	}
	for _, r := range key {
		if unicode.IsControl(r) {
			return fmt.Errorf("key %q contains a control character: %w", key, ErrInvalidKey)
		}
	}
	return nil
}

// CheckList validates list options and returns the effective limit.
func CheckList(opts ListOptions) (int, error) {
	switch {
	case opts.Limit < 0 || opts.Limit > MaxLimit:
		return 0, fmt.Errorf("list limit %d outside 0..%d: %w", opts.Limit, MaxLimit, ErrInvalidArgument)
	case opts.Limit == 0:
		return DefaultLimit, nil
	}
	return opts.Limit, nil
}

// CheckValue validates a value's size.
func CheckValue(v []byte) error {
	if len(v) > MaxValueSize {
		return fmt.Errorf("value of %d bytes exceeds %d: %w", len(v), MaxValueSize, ErrValueTooLarge)
	}
	return nil
}

// NewNamespace returns a view of kv in which only keys under prefix exist,
// with the prefix stripped. prefix must be a valid key ending in "/". Close
// on the view does not close kv.
func NewNamespace(kv KV, prefix string) (KV, error) {
	if err := ValidateKey(prefix); err != nil {
		return nil, fmt.Errorf("namespace prefix: %w", err)
	}
	if !strings.HasSuffix(prefix, "/") {
		return nil, fmt.Errorf("namespace prefix %q must end in '/': %w", prefix, ErrInvalidKey)
	}
	return &namespace{kv: kv, prefix: prefix}, nil
}

type namespace struct {
	kv     KV
	prefix string
}

func (n *namespace) key(k string) (string, error) {
	if err := ValidateKey(k); err != nil {
		return "", err
	}
	full := n.prefix + k
	if len(full) > MaxKeySize {
		return "", fmt.Errorf("key of %d bytes exceeds %d inside namespace: %w", len(k), MaxKeySize-len(n.prefix), ErrInvalidKey)
	}
	return full, nil
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
	inner := ListOptions{Prefix: n.prefix + o.Prefix, Limit: o.Limit}
	if o.After != "" {
		inner.After = n.prefix + o.After
	}
	es, err := n.kv.List(ctx, inner)
	if err != nil {
		return nil, err
	}
	for i := range es {
		es[i].Key = strings.TrimPrefix(es[i].Key, n.prefix)
	}
	return es, nil
}

func (n *namespace) Ping(ctx context.Context) error { return n.kv.Ping(ctx) }
func (n *namespace) Close() error                   { return nil }
