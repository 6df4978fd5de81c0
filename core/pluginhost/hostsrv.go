package pluginhost

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/avonzt/avon/core/store"
	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/host"
	hostv1 "github.com/avonzt/avon/sdk/proto/host/v1"
)

// Clock is the core's calibrated clock as the host services need it.
type Clock interface {
	Now() host.Time
}

// SystemClock is the uncalibrated system clock: the default until the
// calibration service runs. It reports itself calibrated with an unknown
// (zero) uncertainty; calibration replaces it.
type SystemClock struct{}

// Now returns the system time.
func (SystemClock) Now() host.Time { return host.Time{Time: time.Now(), Calibrated: true} }

// AuditSink receives audit events from plugins. An error means the event was
// not recorded; the plugin is told and must refuse the audited operation.
type AuditSink interface {
	Emit(ctx context.Context, source string, ev host.Event) error
}

// Services are what the core lends every plugin.
type Services struct {
	Rand  io.Reader // the core RNG
	Clock Clock
	Store store.KV // root store; each plugin sees only plugins/<kind>/<name>/
	Audit AuditSink
}

// MaxRandomRequest bounds one Random call.
const MaxRandomRequest = 1 << 16

// hostServer serves avon.host.v1.Host to one plugin instance.
type hostServer struct {
	hostv1.UnimplementedHostServer
	source string   // "<kind>.<name>", stamped on audit events
	svc    Services // Store is already the plugin's namespace view
}

func (s *hostServer) Random(_ context.Context, req *hostv1.RandomRequest) (*hostv1.RandomResponse, error) {
	n := int(req.GetLength())
	if n <= 0 || n > MaxRandomRequest {
		return nil, errdef.ToStatus(fmt.Errorf("random length %d outside 1..%d: %w", n, MaxRandomRequest, errdef.ErrInvalidArgument))
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(s.svc.Rand, b); err != nil {
		clear(b)
		return nil, errdef.ToStatus(fmt.Errorf("core rng: %v: %w", err, host.ErrRandomUnavailable))
	}
	return &hostv1.RandomResponse{Random: b}, nil
}

func (s *hostServer) Now(context.Context, *hostv1.NowRequest) (*hostv1.NowResponse, error) {
	t := s.svc.Clock.Now()
	return &hostv1.NowResponse{
		Time:             timestamppb.New(t.Time),
		UncertaintyNs:    int64(t.Uncertainty),
		CalibrationAgeNs: int64(t.CalibrationAge),
		Calibrated:       t.Calibrated,
	}, nil
}

// storeErr maps core store errors onto the host protocol's.
func storeErr(op, key string, err error) error {
	var target error
	switch {
	case errors.Is(err, store.ErrNotFound):
		target = host.ErrNotFound
	case errors.Is(err, store.ErrVersionConflict):
		target = host.ErrVersionConflict
	case errors.Is(err, store.ErrInvalidKey):
		target = host.ErrInvalidKey
	case errors.Is(err, store.ErrValueTooLarge):
		target = host.ErrValueTooLarge
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return errdef.ToStatus(err)
	default:
		target = host.ErrStorageFailed
	}
	return errdef.ToStatus(fmt.Errorf("storage %s %q: %v: %w", op, key, err, target))
}

func (s *hostServer) StorageGet(ctx context.Context, req *hostv1.StorageGetRequest) (*hostv1.StorageGetResponse, error) {
	e, err := s.svc.Store.Get(ctx, req.GetKey())
	if err != nil {
		return nil, storeErr("get", req.GetKey(), err)
	}
	return &hostv1.StorageGetResponse{Entry: &hostv1.Entry{Key: e.Key, Value: e.Value, Version: e.Version}}, nil
}

func (s *hostServer) StoragePut(ctx context.Context, req *hostv1.StoragePutRequest) (*hostv1.StoragePutResponse, error) {
	v, err := s.svc.Store.Put(ctx, req.GetKey(), req.GetValue(), store.PutOptions{Check: req.GetCheck(), Version: req.GetVersion()})
	if err != nil {
		return nil, storeErr("put", req.GetKey(), err)
	}
	return &hostv1.StoragePutResponse{Version: v}, nil
}

func (s *hostServer) StorageDelete(ctx context.Context, req *hostv1.StorageDeleteRequest) (*hostv1.StorageDeleteResponse, error) {
	if err := s.svc.Store.Delete(ctx, req.GetKey(), store.DeleteOptions{Check: req.GetCheck(), Version: req.GetVersion()}); err != nil {
		return nil, storeErr("delete", req.GetKey(), err)
	}
	return &hostv1.StorageDeleteResponse{}, nil
}

func (s *hostServer) StorageList(ctx context.Context, req *hostv1.StorageListRequest) (*hostv1.StorageListResponse, error) {
	es, err := s.svc.Store.List(ctx, store.ListOptions{Prefix: req.GetPrefix(), After: req.GetAfter(), Limit: int(req.GetLimit())})
	if err != nil {
		return nil, storeErr("list", req.GetPrefix(), err)
	}
	out := &hostv1.StorageListResponse{Entries: make([]*hostv1.Entry, 0, len(es))}
	for _, e := range es {
		out.Entries = append(out.Entries, &hostv1.Entry{Key: e.Key, Value: e.Value, Version: e.Version})
	}
	return out, nil
}

func (s *hostServer) EmitAudit(ctx context.Context, req *hostv1.EmitAuditRequest) (*hostv1.EmitAuditResponse, error) {
	ev := req.GetEvent()
	if ev == nil || ev.GetAction() == "" {
		return nil, errdef.ToStatus(fmt.Errorf("audit event without action: %w", errdef.ErrInvalidArgument))
	}
	err := s.svc.Audit.Emit(ctx, s.source, host.Event{
		Action: ev.GetAction(), Target: ev.GetTarget(), Outcome: ev.GetOutcome(), Reason: ev.GetReason(),
		Actor: ev.GetActor(), RequestID: ev.GetRequestId(), Fields: ev.GetFields(),
	})
	if err != nil {
		return nil, errdef.ToStatus(fmt.Errorf("audit: %v: %w", err, host.ErrAuditFailed))
	}
	return &hostv1.EmitAuditResponse{}, nil
}
