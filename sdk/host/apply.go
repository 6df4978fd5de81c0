package host

import (
	"context"
	"fmt"
	"unicode"
	"unicode/utf8"

	"github.com/avonzt/avon/sdk/errdef"
	hostv1 "github.com/avonzt/avon/sdk/proto/host/v1"
)

// Limits of Applier.Apply, checked by the client before sending and by the
// Applier that serves it.
const (
	// MaxApplyOps is the largest number of writes one Apply takes.
	MaxApplyOps = 1024
	// MaxApplySize is the largest sum of the values of one Apply, in
	// bytes (32 MiB, the largest single value).
	MaxApplySize = 32 << 20
	// maxKeySize is the longest storage key, in bytes.
	maxKeySize = 512
)

// Op is one write of an Apply: a put of Value under Key, or with Delete a
// delete of Key. Check and Version mean what they mean in PutOptions and
// DeleteOptions (Check with Version 0: the key must not exist).
type Op struct {
	Key     string
	Value   []byte
	Delete  bool
	Check   bool
	Version int64
}

// Applier is implemented by a Storage that writes several keys in one
// transaction and one round trip (host protocol minor 3). Find it with a
// type assertion on Storage(); against an older core Apply fails with
// errdef.ErrNotImplemented, and the plugin falls back to single writes.
type Applier interface {
	// Apply performs ops in order as one atomic write: either every op
	// takes effect or none does, and on success the write is as durable
	// as a Put. It returns one version per op (the new version of a put,
	// 0 for a delete). When an op's check fails nothing is written and
	// the error is an *ApplyError naming the op, wrapping
	// ErrVersionConflict. Refused before anything is touched: no op or
	// more than MaxApplyOps, a key twice, or values over MaxApplySize in
	// all (errdef.ErrInvalidArgument); an invalid key (ErrInvalidKey); a
	// value over 32 MiB (ErrValueTooLarge). ErrStorageFailed leaves the
	// outcome unknown, as for Put.
	Apply(ctx context.Context, ops []Op) ([]int64, error)
}

// ApplyError reports the op of an Apply whose check failed.
type ApplyError struct {
	Index int // the op's index in the batch
	Key   string
	Err   error // wraps ErrVersionConflict
}

func (e *ApplyError) Error() string {
	return fmt.Sprintf("storage apply: op %d (%q): %v", e.Index, e.Key, e.Err)
}

func (e *ApplyError) Unwrap() error { return e.Err }

// CheckApply checks ops against the Apply rules; see Applier.
func CheckApply(ops []Op) error {
	if len(ops) == 0 || len(ops) > MaxApplyOps {
		return fmt.Errorf("storage apply: %d ops (allowed 1..%d): %w", len(ops), MaxApplyOps, errdef.ErrInvalidArgument)
	}
	seen := make(map[string]struct{}, len(ops))
	total := 0
	for i, op := range ops {
		if err := checkKey(op.Key); err != nil {
			return fmt.Errorf("storage apply: op %d: %w", i, err)
		}
		if _, dup := seen[op.Key]; dup {
			return fmt.Errorf("storage apply: op %d: key %q twice: %w", i, op.Key, errdef.ErrInvalidArgument)
		}
		seen[op.Key] = struct{}{}
		if len(op.Value) > MaxApplySize {
			return fmt.Errorf("storage apply: op %d: value of %d bytes exceeds %d: %w", i, len(op.Value), MaxApplySize, ErrValueTooLarge)
		}
		total += len(op.Value)
		if total > MaxApplySize {
			return fmt.Errorf("storage apply: values of %d bytes or more exceed %d in all: %w", total, MaxApplySize, errdef.ErrInvalidArgument)
		}
	}
	return nil
}

// checkKey is the storage key rule: 1..512 bytes of UTF-8 without control
// characters; the error wraps ErrInvalidKey.
func checkKey(key string) error { return checkKeyText("key", key, maxKeySize, ErrInvalidKey) }

// checkKeyText is the rule storage and cache keys share: 1..max bytes of
// UTF-8 without control characters; the error names what and wraps
// sentinel.
func checkKeyText(what, key string, max int, sentinel error) error {
	if key == "" || len(key) > max {
		return fmt.Errorf("%s of %d bytes outside 1..%d: %w", what, len(key), max, sentinel)
	}
	if !utf8.ValidString(key) {
		return fmt.Errorf("%s %q is not valid UTF-8: %w", what, key, sentinel)
	}
	for _, r := range key {
		if unicode.IsControl(r) {
			return fmt.Errorf("%s %q contains control character %U: %w", what, key, r, sentinel)
		}
	}
	return nil
}

// Apply implements Applier over the wire: the ops are checked here, so a
// refused batch costs no round trip.
func (s *storageClient) Apply(ctx context.Context, ops []Op) ([]int64, error) {
	if err := CheckApply(ops); err != nil {
		return nil, err
	}
	r, err := s.rpc.StorageApply(ctx, &hostv1.StorageApplyRequest{Ops: opsToWire(ops)})
	if err != nil {
		return nil, fmt.Errorf("storage apply of %d ops: %w", len(ops), errdef.FromStatus(err))
	}
	return applyResult(r, ops)
}

// StorageApply serves Applier: a host whose storage is no Applier answers
// Unimplemented, as an older core does. The batch is not checked here: the
// Applier checks it (Applier's contract; the core's with CheckApply), and
// its typed refusals reach the caller through errdef.ToStatus, so a raw
// request that bypasses the client is refused as a checked one is.
func (s *server) StorageApply(ctx context.Context, req *hostv1.StorageApplyRequest) (*hostv1.StorageApplyResponse, error) {
	ap, ok := s.impl.Storage().(Applier)
	if !ok {
		return nil, errdef.ToStatus(fmt.Errorf("storage apply: %w", errdef.ErrNotImplemented))
	}
	ops := opsFromWire(req.GetOps())
	vs, err := ap.Apply(ctx, ops)
	return applyResponse(vs, err, len(ops))
}

var _ Applier = (*storageClient)(nil)
