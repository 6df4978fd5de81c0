package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/host"
)

// A request that writes several keys (a new order with its
// authorizations and index entry; a finalized order with its certificate)
// writes them with one host.Applier call when the core offers it (host
// protocol minor 3): one round trip, one transaction, one commit, and all
// or nothing, so no clean-up is needed when a write fails. Against an
// older core, or a test double without it, the writes are made one by one
// as before; the first ErrNotImplemented switches the server to that path
// for good.

// errNoApply means the storage cannot apply a batch; the caller writes
// one key at a time.
var errNoApply = errors.New("acme: storage has no batch writes")

// writeOp is one write of a batch, its value to be marshalled.
type writeOp struct {
	key     string
	v       any // nil: an empty value
	check   bool
	version int64
}

// canApply reports whether the storage takes batches, as far as known.
func (s *Server) canApply() bool {
	_, ok := s.deps.Storage.(host.Applier)
	return ok && !s.noApply.Load()
}

// applyJSON writes ops in one transaction. It returns errNoApply when the
// storage cannot, having written nothing; a failed check is a
// *host.ApplyError wrapping host.ErrVersionConflict.
func (s *Server) applyJSON(ctx context.Context, ops []writeOp) ([]int64, error) {
	ap, ok := s.deps.Storage.(host.Applier)
	if !ok || s.noApply.Load() {
		return nil, errNoApply
	}
	hops := make([]host.Op, len(ops))
	for i, op := range ops {
		hops[i] = host.Op{Key: op.key, Check: op.check, Version: op.version}
		if op.v != nil {
			b, err := json.Marshal(op.v)
			if err != nil {
				return nil, fmt.Errorf("marshal %s: %w", op.key, err)
			}
			hops[i].Value = b
		}
	}
	vs, err := ap.Apply(ctx, hops)
	if errors.Is(err, errdef.ErrNotImplemented) {
		s.noApply.Store(true)
		s.deps.Log.Info("the core has no storage batches (host protocol minor 3); writing keys one by one")
		return nil, errNoApply
	}
	return vs, err
}
