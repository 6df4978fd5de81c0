package host

import (
	"context"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/avonzt/avon/sdk/errdef"
	hostv1 "github.com/avonzt/avon/sdk/proto/host/v1"
)

// MaxRandomRequest bounds one Random call on the wire.
const MaxRandomRequest = 1 << 16

// Register serves impl as avon.host.v1.Host on s. Hosts (the core, and
// plugintest's in-memory host) implement Host in-process and register it on
// the broker for one plugin; KMS and PQC are not served here but as their
// own services on separate broker streams. Errors impl returns must wrap
// this package's sentinels to keep their identity on the plugin side.
func Register(s grpc.ServiceRegistrar, impl Host) {
	hostv1.RegisterHostServer(s, &server{impl: impl})
}

type server struct {
	hostv1.UnimplementedHostServer
	impl Host
}

func (s *server) Random(_ context.Context, req *hostv1.RandomRequest) (*hostv1.RandomResponse, error) {
	n := int(req.GetLength())
	if n <= 0 || n > MaxRandomRequest {
		return nil, errdef.ToStatus(fmt.Errorf("random length %d outside 1..%d: %w", n, MaxRandomRequest, errdef.ErrInvalidArgument))
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(s.impl.Rand(), b); err != nil {
		clear(b)
		return nil, errdef.ToStatus(fmt.Errorf("core rng: %v: %w", err, ErrRandomUnavailable))
	}
	return &hostv1.RandomResponse{Random: b}, nil
}

func (s *server) Now(ctx context.Context, _ *hostv1.NowRequest) (*hostv1.NowResponse, error) {
	t, err := s.impl.Now(ctx)
	if err != nil {
		return nil, errdef.ToStatus(err)
	}
	return &hostv1.NowResponse{
		Time:             timestamppb.New(t.Time),
		UncertaintyNs:    int64(t.Uncertainty),
		CalibrationAgeNs: int64(t.CalibrationAge),
		Calibrated:       t.Calibrated,
	}, nil
}

func (s *server) StorageGet(ctx context.Context, req *hostv1.StorageGetRequest) (*hostv1.StorageGetResponse, error) {
	e, err := s.impl.Storage().Get(ctx, req.GetKey())
	if err != nil {
		return nil, errdef.ToStatus(err)
	}
	return &hostv1.StorageGetResponse{Entry: &hostv1.Entry{Key: e.Key, Value: e.Value, Version: e.Version}}, nil
}

func (s *server) StoragePut(ctx context.Context, req *hostv1.StoragePutRequest) (*hostv1.StoragePutResponse, error) {
	v, err := s.impl.Storage().Put(ctx, req.GetKey(), req.GetValue(), PutOptions{Check: req.GetCheck(), Version: req.GetVersion()})
	if err != nil {
		return nil, errdef.ToStatus(err)
	}
	return &hostv1.StoragePutResponse{Version: v}, nil
}

func (s *server) StorageDelete(ctx context.Context, req *hostv1.StorageDeleteRequest) (*hostv1.StorageDeleteResponse, error) {
	if err := s.impl.Storage().Delete(ctx, req.GetKey(), DeleteOptions{Check: req.GetCheck(), Version: req.GetVersion()}); err != nil {
		return nil, errdef.ToStatus(err)
	}
	return &hostv1.StorageDeleteResponse{}, nil
}

func (s *server) StorageList(ctx context.Context, req *hostv1.StorageListRequest) (*hostv1.StorageListResponse, error) {
	es, err := s.impl.Storage().List(ctx, ListOptions{Prefix: req.GetPrefix(), After: req.GetAfter(), Limit: int(req.GetLimit())})
	if err != nil {
		return nil, errdef.ToStatus(err)
	}
	out := &hostv1.StorageListResponse{Entries: make([]*hostv1.Entry, 0, len(es))}
	for _, e := range es {
		out.Entries = append(out.Entries, &hostv1.Entry{Key: e.Key, Value: e.Value, Version: e.Version})
	}
	return out, nil
}

func (s *server) EmitAudit(ctx context.Context, req *hostv1.EmitAuditRequest) (*hostv1.EmitAuditResponse, error) {
	ev := req.GetEvent()
	if ev == nil || ev.GetAction() == "" {
		return nil, errdef.ToStatus(fmt.Errorf("audit event without action: %w", errdef.ErrInvalidArgument))
	}
	err := s.impl.Audit(ctx, eventFromWire(ev))
	if err != nil {
		return nil, errdef.ToStatus(err)
	}
	return &hostv1.EmitAuditResponse{}, nil
}

// checkMillis turns a wire duration into a Duration, refusing what would
// overflow before the range check sees it.
func checkMillis(ms int64) time.Duration {
	if ms <= 0 || ms > int64(MaxCacheTTL/time.Millisecond) {
		return 0 // refused by the range check
	}
	return time.Duration(ms) * time.Millisecond
}

func (s *server) CachePut(ctx context.Context, req *hostv1.CachePutRequest) (*hostv1.CachePutResponse, error) {
	ttl := checkMillis(req.GetTtlMs())
	if err := CheckCachePut(req.GetKey(), req.GetValue(), ttl); err != nil {
		return nil, errdef.ToStatus(err)
	}
	stored, err := s.impl.Cache().Put(ctx, req.GetKey(), req.GetValue(), CachePutOptions{TTL: ttl, IfAbsent: req.GetIfAbsent()})
	if err != nil {
		return nil, errdef.ToStatus(err)
	}
	return &hostv1.CachePutResponse{Stored: stored}, nil
}

func (s *server) CacheGet(ctx context.Context, req *hostv1.CacheGetRequest) (*hostv1.CacheGetResponse, error) {
	if err := CheckCacheKey(req.GetKey()); err != nil {
		return nil, errdef.ToStatus(err)
	}
	v, left, err := s.impl.Cache().Get(ctx, req.GetKey())
	if err != nil {
		return nil, errdef.ToStatus(err)
	}
	return &hostv1.CacheGetResponse{Value: v, TtlLeftMs: CacheMillis(left)}, nil
}

func (s *server) CacheDelete(ctx context.Context, req *hostv1.CacheDeleteRequest) (*hostv1.CacheDeleteResponse, error) {
	if err := CheckCacheKey(req.GetKey()); err != nil {
		return nil, errdef.ToStatus(err)
	}
	if err := s.impl.Cache().Delete(ctx, req.GetKey()); err != nil {
		return nil, errdef.ToStatus(err)
	}
	return &hostv1.CacheDeleteResponse{}, nil
}

func (s *server) CacheConsume(ctx context.Context, req *hostv1.CacheConsumeRequest) (*hostv1.CacheConsumeResponse, error) {
	if err := CheckCacheKey(req.GetKey()); err != nil {
		return nil, errdef.ToStatus(err)
	}
	v, err := s.impl.Cache().Consume(ctx, req.GetKey())
	if err != nil {
		return nil, errdef.ToStatus(err)
	}
	return &hostv1.CacheConsumeResponse{Value: v}, nil
}

func (s *server) CacheCount(ctx context.Context, req *hostv1.CacheCountRequest) (*hostv1.CacheCountResponse, error) {
	limit := int(min(req.GetLimit(), uint32(MaxCacheLimit)+1))
	window := checkMillis(req.GetWindowMs())
	if err := CheckCacheCount(req.GetKey(), limit, window); err != nil {
		return nil, errdef.ToStatus(err)
	}
	d, err := s.impl.Cache().Count(ctx, req.GetKey(), limit, window)
	if err != nil {
		return nil, errdef.ToStatus(err)
	}
	return &hostv1.CacheCountResponse{Allowed: d.Allowed, Remaining: uint32(max(d.Remaining, 0)), RetryAfterMs: CacheMillis(d.RetryAfter)}, nil
}
