package host

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/avonzt/avon/sdk/ca"
	"github.com/avonzt/avon/sdk/ca/carpc"
	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/kms"
	"github.com/avonzt/avon/sdk/kms/kmsrpc"
	"github.com/avonzt/avon/sdk/policy"
	"github.com/avonzt/avon/sdk/policy/policyrpc"
	"github.com/avonzt/avon/sdk/pqc"
	"github.com/avonzt/avon/sdk/pqc/pqcrpc"
	hostv1 "github.com/avonzt/avon/sdk/proto/host/v1"
)

// callTimeout bounds host calls made without a caller context (Rand).
const callTimeout = 10 * time.Second

// NewClient returns a Host over conn. uses maps a plugin kind to a connection
// serving that kind's protocol (the wired plugin, proxied by the core):
// "<kind>" is the default plugin of that kind, "<kind>/<name>" each plugin
// the operator listed by name.
func NewClient(conn grpc.ClientConnInterface, uses map[string]grpc.ClientConnInterface) Host {
	c := &client{rpc: hostv1.NewHostClient(conn), uses: uses}
	c.rand = &randReader{rpc: c.rpc}
	c.storage = &storageClient{rpc: c.rpc}
	c.cache = &cacheClient{rpc: c.rpc}
	return c
}

type client struct {
	rpc     hostv1.HostClient
	uses    map[string]grpc.ClientConnInterface
	rand    *randReader
	storage *storageClient
	cache   *cacheClient
}

func (c *client) Rand() io.Reader  { return c.rand }
func (c *client) Storage() Storage { return c.storage }
func (c *client) Cache() Cache     { return c.cache }

func (c *client) Now(ctx context.Context) (Time, error) {
	r, err := c.rpc.Now(ctx, &hostv1.NowRequest{})
	if err != nil {
		return Time{}, fmt.Errorf("host now: %w", errdef.FromStatus(err))
	}
	return Time{
		Time:           r.GetTime().AsTime(),
		Uncertainty:    time.Duration(r.GetUncertaintyNs()),
		CalibrationAge: time.Duration(r.GetCalibrationAgeNs()),
		Calibrated:     r.GetCalibrated(),
	}, nil
}

func (c *client) Audit(ctx context.Context, ev Event) error {
	_, err := c.rpc.EmitAudit(ctx, &hostv1.EmitAuditRequest{Event: eventToWire(ev)})
	if err != nil {
		return fmt.Errorf("host audit: %w", errdef.FromStatus(err))
	}
	return nil
}

func (c *client) KMS() (kms.KMS, error) {
	cc, ok := c.uses["kms"]
	if !ok {
		return nil, fmt.Errorf("kms: %w", ErrNotWired)
	}
	return kmsrpc.NewClient(cc), nil
}

func (c *client) KMSNamed(name string) (kms.KMS, error) {
	if name == "" {
		return c.KMS()
	}
	cc, ok := c.uses["kms/"+name]
	if !ok {
		return nil, fmt.Errorf("kms %q (wired: %s): %w", name, wiredNames(c.uses, "kms"), ErrNotWired)
	}
	return kmsrpc.NewClient(cc), nil
}

// wiredNames lists the names wired for kind ("none" when there are none).
func wiredNames(uses map[string]grpc.ClientConnInterface, kind string) string {
	var names []string
	for k := range uses {
		if n, ok := strings.CutPrefix(k, kind+"/"); ok {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return "none"
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

func (c *client) CA() (ca.CA, error) {
	cc, ok := c.uses["ca"]
	if !ok {
		return nil, fmt.Errorf("ca: %w", ErrNotWired)
	}
	return carpc.NewClient(cc), nil
}

func (c *client) Policy() (policy.Engine, error) {
	cc, ok := c.uses["policy"]
	if !ok {
		return nil, fmt.Errorf("policy: %w", ErrNotWired)
	}
	return policyrpc.NewClient(cc), nil
}

func (c *client) PQC() (pqc.Provider, error) {
	cc, ok := c.uses["pqc"]
	if !ok {
		return nil, fmt.Errorf("pqc: %w", ErrNotWired)
	}
	return pqcrpc.NewClient(cc), nil
}

// Random bytes are fetched from the core in chunks of randChunk and handed
// out once; requests of at least randChunk bytes bypass the buffer.
const randChunk = 4096

type randReader struct {
	rpc hostv1.HostClient

	mu  sync.Mutex // guards buf and off
	buf []byte
	off int
}

func (r *randReader) fetch(n int) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	resp, err := r.rpc.Random(ctx, &hostv1.RandomRequest{Length: uint32(n)})
	if err != nil {
		return nil, fmt.Errorf("host random: %w", errdef.FromStatus(err))
	}
	b := resp.GetRandom()
	if len(b) != n {
		clear(b)
		return nil, fmt.Errorf("host random: got %d bytes, asked %d: %w", len(b), n, ErrRandomUnavailable)
	}
	return b, nil
}

// Read fills p entirely or returns an error and no bytes.
func (r *randReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if len(p) >= randChunk {
		for done := 0; done < len(p); {
			n := min(len(p)-done, 1<<16)
			b, err := r.fetch(n)
			if err != nil {
				clear(p[:done])
				return 0, err
			}
			copy(p[done:], b)
			clear(b)
			done += n
		}
		return len(p), nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.buf)-r.off < len(p) {
		clear(r.buf)
		b, err := r.fetch(randChunk)
		if err != nil {
			r.buf, r.off = nil, 0
			return 0, err
		}
		r.buf, r.off = b, 0
	}
	n := copy(p, r.buf[r.off:])
	clear(r.buf[r.off : r.off+n])
	r.off += n
	return n, nil
}

type storageClient struct {
	rpc hostv1.HostClient
	// noGather is set once the core answered Gather with Unimplemented
	// (older than minor 4): later Gathers go straight to single calls.
	noGather atomic.Bool
}

func (s *storageClient) Get(ctx context.Context, key string) (Entry, error) {
	r, err := s.rpc.StorageGet(ctx, &hostv1.StorageGetRequest{Key: key})
	if err != nil {
		return Entry{}, fmt.Errorf("storage get %q: %w", key, errdef.FromStatus(err))
	}
	return entryOf(r.GetEntry()), nil
}

func entryOf(e *hostv1.Entry) Entry {
	return Entry{Key: e.GetKey(), Value: e.GetValue(), Version: e.GetVersion()}
}

// nonNil is v, or an empty value for an absent one (a cache value is
// never nil).
func nonNil(v []byte) []byte {
	if v == nil {
		return []byte{}
	}
	return v
}

func (s *storageClient) Put(ctx context.Context, key string, value []byte, opts PutOptions) (int64, error) {
	r, err := s.rpc.StoragePut(ctx, &hostv1.StoragePutRequest{Key: key, Value: value, Check: opts.Check, Version: opts.Version})
	if err != nil {
		return 0, fmt.Errorf("storage put %q: %w", key, errdef.FromStatus(err))
	}
	return r.GetVersion(), nil
}

func (s *storageClient) Delete(ctx context.Context, key string, opts DeleteOptions) error {
	_, err := s.rpc.StorageDelete(ctx, &hostv1.StorageDeleteRequest{Key: key, Check: opts.Check, Version: opts.Version})
	if err != nil {
		return fmt.Errorf("storage delete %q: %w", key, errdef.FromStatus(err))
	}
	return nil
}

func (s *storageClient) List(ctx context.Context, opts ListOptions) ([]Entry, error) {
	if opts.Limit < 0 {
		return nil, fmt.Errorf("storage list: negative limit: %w", errdef.ErrInvalidArgument)
	}
	r, err := s.rpc.StorageList(ctx, &hostv1.StorageListRequest{Prefix: opts.Prefix, After: opts.After, Limit: uint32(opts.Limit)})
	if err != nil {
		return nil, fmt.Errorf("storage list: %w", errdef.FromStatus(err))
	}
	out := make([]Entry, 0, len(r.GetEntries()))
	for _, e := range r.GetEntries() {
		out = append(out, Entry{Key: e.GetKey(), Value: e.GetValue(), Version: e.GetVersion()})
	}
	return out, nil
}

// cacheClient checks arguments before the round trip, so a refused call
// costs nothing and the core sees only well-formed requests.
type cacheClient struct{ rpc hostv1.HostClient }

func (c *cacheClient) Put(ctx context.Context, key string, value []byte, opts CachePutOptions) (bool, error) {
	if err := CheckCachePut(key, value, opts.TTL); err != nil {
		return false, err
	}
	r, err := c.rpc.CachePut(ctx, &hostv1.CachePutRequest{Key: key, Value: value, TtlMs: CacheMillis(opts.TTL), IfAbsent: opts.IfAbsent})
	if err != nil {
		return false, fmt.Errorf("cache put %q: %w", key, errdef.FromStatus(err))
	}
	return r.GetStored(), nil
}

func (c *cacheClient) Get(ctx context.Context, key string) ([]byte, time.Duration, error) {
	if err := CheckCacheKey(key); err != nil {
		return nil, 0, err
	}
	r, err := c.rpc.CacheGet(ctx, &hostv1.CacheGetRequest{Key: key})
	if err != nil {
		return nil, 0, fmt.Errorf("cache get %q: %w", key, errdef.FromStatus(err))
	}
	return nonNil(r.GetValue()), time.Duration(r.GetTtlLeftMs()) * time.Millisecond, nil
}

func (c *cacheClient) Delete(ctx context.Context, key string) error {
	if err := CheckCacheKey(key); err != nil {
		return err
	}
	if _, err := c.rpc.CacheDelete(ctx, &hostv1.CacheDeleteRequest{Key: key}); err != nil {
		return fmt.Errorf("cache delete %q: %w", key, errdef.FromStatus(err))
	}
	return nil
}

func (c *cacheClient) Consume(ctx context.Context, key string) ([]byte, error) {
	if err := CheckCacheKey(key); err != nil {
		return nil, err
	}
	r, err := c.rpc.CacheConsume(ctx, &hostv1.CacheConsumeRequest{Key: key})
	if err != nil {
		return nil, fmt.Errorf("cache consume %q: %w", key, errdef.FromStatus(err))
	}
	return nonNil(r.GetValue()), nil
}

func (c *cacheClient) Count(ctx context.Context, key string, limit int, window time.Duration) (RateDecision, error) {
	if err := CheckCacheCount(key, limit, window); err != nil {
		return RateDecision{}, err
	}
	r, err := c.rpc.CacheCount(ctx, &hostv1.CacheCountRequest{Key: key, Limit: uint32(limit), WindowMs: CacheMillis(window)})
	if err != nil {
		return RateDecision{}, fmt.Errorf("cache count %q: %w", key, errdef.FromStatus(err))
	}
	return decisionOf(r), nil
}

func decisionOf(r *hostv1.CacheCountResponse) RateDecision {
	return RateDecision{Allowed: r.GetAllowed(), Remaining: int(r.GetRemaining()),
		RetryAfter: time.Duration(r.GetRetryAfterMs()) * time.Millisecond}
}
