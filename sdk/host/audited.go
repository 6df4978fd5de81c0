package host

import (
	"context"
	"errors"
	"fmt"

	"github.com/avonzt/avon/sdk/errdef"
	hostv1 "github.com/avonzt/avon/sdk/proto/host/v1"
)

// MaxAuditedApplyOps is the largest number of writes one ApplyAudited
// takes: fewer than MaxApplyOps, leaving room in the core's transaction for
// the audit record and the move of the audit head.
const MaxAuditedApplyOps = 1000

// AuditedApplier is implemented by a Storage that writes several keys and
// the audit event recording them in one transaction (host protocol minor
// 5): the writes and the event land together or not at all, with one
// durable commit instead of two. Find it with a type assertion on
// Storage(); against an older core ApplyAudited fails with
// errdef.ErrNotImplemented having written nothing, and the plugin falls
// back to Apply (or Put) and Audit.
type AuditedApplier interface {
	// ApplyAudited is Apply (see Applier) with ev recorded in the core's
	// audit log in the same transaction; the event's source is the plugin,
	// as for Host.Audit. It returns one version per op. When an op's check
	// fails nothing is written, ev is not recorded, and the error is an
	// *ApplyError naming the op, wrapping ErrVersionConflict. Refused
	// before anything is touched: the ops as Apply refuses them (at most
	// MaxAuditedApplyOps), and an event without an action
	// (errdef.ErrInvalidArgument). ErrAuditFailed and ErrStorageFailed
	// leave the outcome unknown, as for Put.
	ApplyAudited(ctx context.Context, ops []Op, ev Event) ([]int64, error)
}

// CheckAuditedApply checks ops and ev against the ApplyAudited rules; see
// AuditedApplier. The core's audit log checks the event's sizes too.
func CheckAuditedApply(ops []Op, ev Event) error {
	if ev.Action == "" {
		return fmt.Errorf("storage apply audited: event without action: %w", errdef.ErrInvalidArgument)
	}
	if len(ops) > MaxAuditedApplyOps {
		return fmt.Errorf("storage apply audited: %d ops (allowed 1..%d): %w", len(ops), MaxAuditedApplyOps, errdef.ErrInvalidArgument)
	}
	return CheckApply(ops)
}

// ApplyAudited implements AuditedApplier over the wire: the request is
// checked here, so a refused one costs no round trip.
func (s *storageClient) ApplyAudited(ctx context.Context, ops []Op, ev Event) ([]int64, error) {
	if err := CheckAuditedApply(ops, ev); err != nil {
		return nil, err
	}
	r, err := s.rpc.StorageApplyAudited(ctx, &hostv1.StorageApplyAuditedRequest{Ops: opsToWire(ops), Event: eventToWire(ev)})
	if err != nil {
		return nil, fmt.Errorf("storage apply audited of %d ops: %w", len(ops), errdef.FromStatus(err))
	}
	return applyResult(r, ops)
}

// StorageApplyAudited serves AuditedApplier: a host whose storage is none
// answers Unimplemented, as an older core does. Like StorageApply, the
// request is checked by the AuditedApplier, whose typed refusals reach the
// caller through errdef.ToStatus.
func (s *server) StorageApplyAudited(ctx context.Context, req *hostv1.StorageApplyAuditedRequest) (*hostv1.StorageApplyResponse, error) {
	ap, ok := s.impl.Storage().(AuditedApplier)
	if !ok {
		return nil, errdef.ToStatus(fmt.Errorf("storage apply audited: %w", errdef.ErrNotImplemented))
	}
	ops := opsFromWire(req.GetOps())
	vs, err := ap.ApplyAudited(ctx, ops, eventFromWire(req.GetEvent()))
	return applyResponse(vs, err, len(ops))
}

func opsToWire(ops []Op) []*hostv1.StorageOp {
	out := make([]*hostv1.StorageOp, len(ops))
	for i, op := range ops {
		out[i] = &hostv1.StorageOp{Key: op.Key, Value: op.Value, Delete: op.Delete, Check: op.Check, Version: op.Version}
	}
	return out
}

func opsFromWire(in []*hostv1.StorageOp) []Op {
	ops := make([]Op, len(in))
	for i, op := range in {
		ops[i] = Op{Key: op.GetKey(), Value: op.GetValue(), Delete: op.GetDelete(), Check: op.GetCheck(), Version: op.GetVersion()}
	}
	return ops
}

func eventToWire(ev Event) *hostv1.AuditEvent {
	return &hostv1.AuditEvent{Action: ev.Action, Target: ev.Target, Outcome: ev.Outcome, Reason: ev.Reason,
		Actor: ev.Actor, RequestId: ev.RequestID, Fields: ev.Fields}
}

// eventFromWire reads an event; a missing one reads as an event without
// action, which every check refuses.
func eventFromWire(ev *hostv1.AuditEvent) Event {
	return Event{Action: ev.GetAction(), Target: ev.GetTarget(), Outcome: ev.GetOutcome(), Reason: ev.GetReason(),
		Actor: ev.GetActor(), RequestID: ev.GetRequestId(), Fields: ev.GetFields()}
}

// applyResult reads a StorageApply or StorageApplyAudited answer for ops.
func applyResult(r *hostv1.StorageApplyResponse, ops []Op) ([]int64, error) {
	if r.GetConflict() {
		i := int(r.GetConflictIndex())
		if i >= len(ops) {
			return nil, fmt.Errorf("storage apply: conflict at op %d of %d: %w", i, len(ops), ErrStorageFailed)
		}
		return nil, &ApplyError{Index: i, Key: ops[i].Key, Err: ErrVersionConflict}
	}
	vs := r.GetVersions()
	if len(vs) != len(ops) {
		return nil, fmt.Errorf("storage apply: %d versions for %d ops: %w", len(vs), len(ops), ErrStorageFailed)
	}
	return vs, nil
}

// applyResponse answers an Apply or ApplyAudited of n ops: a failed check
// in-band, any other error as a status.
func applyResponse(vs []int64, err error, n int) (*hostv1.StorageApplyResponse, error) {
	var ae *ApplyError
	if errors.As(err, &ae) && ae.Index >= 0 && ae.Index < n {
		return &hostv1.StorageApplyResponse{Conflict: true, ConflictIndex: uint32(ae.Index)}, nil
	}
	if err != nil {
		return nil, errdef.ToStatus(err)
	}
	return &hostv1.StorageApplyResponse{Versions: vs}, nil
}

var _ AuditedApplier = (*storageClient)(nil)
