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
//
// A batch that an audit event records (a finalization: the certificate,
// the order and acme.order.finalize) goes with its event as one
// host.AuditedApplier call when the core offers it (host protocol minor
// 5): the writes and the event in one transaction and one commit, so no
// event is on record for writes that failed, and no writes go unrecorded.
// The event goes to the core whose storage this is, as Deps.Audit's does
// in the plugin. Against an older core the batch and the event are written
// separately, as before.

// errNoApply means the storage cannot apply a batch; the caller writes
// one key at a time.
var errNoApply = errors.New("acme: storage has no batch writes")

// canApplyAudited reports whether the storage takes audited batches, as
// far as known.
func (s *Server) canApplyAudited() bool {
	_, ok := s.deps.Storage.(host.AuditedApplier)
	return ok && !s.noAudited.Load()
}

// applyAuditedJSON writes ops and records ev in one transaction. It
// returns errNoApply when the storage cannot, having written and recorded
// nothing; a failed check is a *host.ApplyError wrapping
// host.ErrVersionConflict, with ev not recorded.
func (s *Server) applyAuditedJSON(ctx context.Context, ops []writeOp, ev host.Event) ([]int64, error) {
	aa, ok := s.deps.Storage.(host.AuditedApplier)
	if !ok || s.noAudited.Load() {
		return nil, errNoApply
	}
	hops, err := marshalOps(ops)
	if err != nil {
		return nil, err
	}
	vs, err := aa.ApplyAudited(ctx, hops, ev)
	if errors.Is(err, errdef.ErrNotImplemented) {
		s.noAudited.Store(true)
		s.deps.Log.Info("the core has no audited storage batches (host protocol minor 5); writing batches and their audit events separately")
		return nil, errNoApply
	}
	return vs, err
}

// marshalOps turns ops into host ops, their values marshalled.
func marshalOps(ops []writeOp) ([]host.Op, error) {
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
	return hops, nil
}

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
	hops, err := marshalOps(ops)
	if err != nil {
		return nil, err
	}
	vs, err := ap.Apply(ctx, hops)
	if errors.Is(err, errdef.ErrNotImplemented) {
		s.noApply.Store(true)
		s.deps.Log.Info("the core has no storage batches (host protocol minor 3); writing keys one by one")
		return nil, errNoApply
	}
	return vs, err
}
