package host

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	spb "google.golang.org/genproto/googleapis/rpc/status"

	"github.com/avonzt/avon/sdk/errdef"
	hostv1 "github.com/avonzt/avon/sdk/proto/host/v1"
)

// MaxGatherCalls is the largest number of calls one Gather takes.
const MaxGatherCalls = 64

// A Call is one call of a Gather: *GetCall, *CachePutCall, *CacheGetCall,
// *CacheConsumeCall or *CacheCountCall. Gather fills in its result.
type Call interface{ gatherCall() }

// GetCall is Storage.Get of Key; Entry and Err are its result.
type GetCall struct {
	Key   string
	Entry Entry
	Err   error
}

// CachePutCall is Cache.Put; Stored and Err are its result.
type CachePutCall struct {
	Key    string
	Value  []byte
	Opts   CachePutOptions
	Stored bool
	Err    error
}

// CacheGetCall is Cache.Get of Key; Value, TTLLeft and Err are its
// result.
type CacheGetCall struct {
	Key     string
	Value   []byte
	TTLLeft time.Duration
	Err     error
}

// CacheConsumeCall is Cache.Consume of Key; Value and Err are its result.
type CacheConsumeCall struct {
	Key   string
	Value []byte
	Err   error
}

// CacheCountCall is Cache.Count; Decision and Err are its result.
type CacheCountCall struct {
	Key      string
	Limit    int
	Window   time.Duration
	Decision RateDecision
	Err      error
}

func (*GetCall) gatherCall()          {}
func (*CachePutCall) gatherCall()     {}
func (*CacheGetCall) gatherCall()     {}
func (*CacheConsumeCall) gatherCall() {}
func (*CacheCountCall) gatherCall()   {}

// Gatherer is implemented by a Storage whose host runs several
// independent calls in one round trip (host protocol minor 4): the core
// runs them concurrently and answers each as the single call would have.
// Use the Gather function rather than the interface: it falls back to
// single calls where the host cannot gather.
type Gatherer interface {
	// Gather runs calls and fills in their results; cache calls run on
	// the cache of the same host. Calls must not depend on each other:
	// they run in any order, concurrently. It returns ErrNotImplemented
	// (and fills nothing) on a core older than minor 4.
	Gather(ctx context.Context, calls []Call) error
}

// Gather runs calls, independent reads and cache calls of one plugin, and
// fills in each one's result: in one round trip when st and c are the
// Storage and Cache of one host on a core that offers it, else as single
// calls on st and c, concurrently (also when the answer would not fit in
// one message). Each call's own error is in its Err; Gather itself never
// fails.
func Gather(ctx context.Context, st Storage, c Cache, calls ...Call) {
	if len(calls) == 0 {
		return
	}
	if g, ok := st.(Gatherer); ok && len(calls) <= MaxGatherCalls && cacheOf(st, c, calls) {
		err := g.Gather(ctx, calls)
		if err == nil {
			return
		}
		if !errors.Is(err, errdef.ErrNotImplemented) && !errors.Is(err, errGatherTooLarge) {
			for _, call := range calls {
				setErr(call, err)
			}
			return
		}
	}
	if len(calls) == 1 {
		single(ctx, st, c, calls[0])
		return
	}
	var wg sync.WaitGroup
	for _, call := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			single(ctx, st, c, call)
		}()
	}
	wg.Wait()
}

// cacheOf reports whether st's Gather would run calls' cache calls on c:
// the host's storage gathers them on its own host's cache, so c must be
// that cache (not a wrapper of it, nor another), or calls have none.
func cacheOf(st Storage, c Cache, calls []Call) bool {
	sc, ok := st.(*storageClient)
	if cc, isHost := c.(*cacheClient); ok && isHost && cc.rpc == sc.rpc {
		return true
	}
	for _, call := range calls {
		if _, isGet := call.(*GetCall); !isGet {
			return false
		}
	}
	return true
}

// errGatherTooLarge: the core refused a Gather whose answer would not fit
// in one message; its calls are made one by one instead.
var errGatherTooLarge = errors.New("gather: answer over the message size limit")

// single runs one call on its own.
func single(ctx context.Context, st Storage, c Cache, call Call) {
	switch x := call.(type) {
	case *GetCall:
		x.Entry, x.Err = st.Get(ctx, x.Key)
	case *CachePutCall:
		x.Stored, x.Err = c.Put(ctx, x.Key, x.Value, x.Opts)
	case *CacheGetCall:
		x.Value, x.TTLLeft, x.Err = c.Get(ctx, x.Key)
	case *CacheConsumeCall:
		x.Value, x.Err = c.Consume(ctx, x.Key)
	case *CacheCountCall:
		x.Decision, x.Err = c.Count(ctx, x.Key, x.Limit, x.Window)
	}
}

func setErr(call Call, err error) {
	switch x := call.(type) {
	case *GetCall:
		x.Err = err
	case *CachePutCall:
		x.Err = err
	case *CacheGetCall:
		x.Err = err
	case *CacheConsumeCall:
		x.Err = err
	case *CacheCountCall:
		x.Err = err
	}
}

var _ Gatherer = (*storageClient)(nil)

// Gather implements Gatherer over the wire. Calls refused by the client's
// checks get their error without being sent.
func (s *storageClient) Gather(ctx context.Context, calls []Call) error {
	if s.noGather.Load() {
		return fmt.Errorf("gather: %w", errdef.ErrNotImplemented)
	}
	if len(calls) == 0 || len(calls) > MaxGatherCalls {
		return fmt.Errorf("gather of %d calls outside 1..%d: %w", len(calls), MaxGatherCalls, errdef.ErrInvalidArgument)
	}
	req := &hostv1.GatherRequest{Calls: make([]*hostv1.GatherCall, 0, len(calls))}
	sent := make([]Call, 0, len(calls))
	for _, call := range calls {
		gc, err := gatherCallOf(call)
		if err != nil {
			setErr(call, err)
			continue
		}
		req.Calls = append(req.Calls, gc)
		sent = append(sent, call)
	}
	if len(sent) == 0 {
		return nil
	}
	r, err := s.rpc.Gather(ctx, req)
	if status.Code(err) == codes.ResourceExhausted {
		return fmt.Errorf("gather of %d calls: %w: %w", len(sent), errGatherTooLarge, errdef.FromStatus(err))
	}
	if err != nil {
		err = errdef.FromStatus(err)
		if errors.Is(err, errdef.ErrNotImplemented) {
			s.noGather.Store(true)
		}
		return fmt.Errorf("gather of %d calls: %w", len(sent), err)
	}
	rs := r.GetResults()
	if len(rs) != len(sent) {
		return fmt.Errorf("gather: %d results for %d calls: %w", len(rs), len(sent), ErrStorageFailed)
	}
	for i, call := range sent {
		fillResult(call, rs[i])
	}
	return nil
}

// gatherCallOf checks a call as its single call's client does and
// encodes it.
func gatherCallOf(call Call) (*hostv1.GatherCall, error) {
	switch x := call.(type) {
	case *GetCall:
		return &hostv1.GatherCall{Call: &hostv1.GatherCall_StorageGet{StorageGet: &hostv1.StorageGetRequest{Key: x.Key}}}, nil
	case *CachePutCall:
		if err := CheckCachePut(x.Key, x.Value, x.Opts.TTL); err != nil {
			return nil, err
		}
		return &hostv1.GatherCall{Call: &hostv1.GatherCall_CachePut{CachePut: &hostv1.CachePutRequest{
			Key: x.Key, Value: x.Value, TtlMs: CacheMillis(x.Opts.TTL), IfAbsent: x.Opts.IfAbsent}}}, nil
	case *CacheGetCall:
		if err := CheckCacheKey(x.Key); err != nil {
			return nil, err
		}
		return &hostv1.GatherCall{Call: &hostv1.GatherCall_CacheGet{CacheGet: &hostv1.CacheGetRequest{Key: x.Key}}}, nil
	case *CacheConsumeCall:
		if err := CheckCacheKey(x.Key); err != nil {
			return nil, err
		}
		return &hostv1.GatherCall{Call: &hostv1.GatherCall_CacheConsume{CacheConsume: &hostv1.CacheConsumeRequest{Key: x.Key}}}, nil
	case *CacheCountCall:
		if err := CheckCacheCount(x.Key, x.Limit, x.Window); err != nil {
			return nil, err
		}
		return &hostv1.GatherCall{Call: &hostv1.GatherCall_CacheCount{CacheCount: &hostv1.CacheCountRequest{
			Key: x.Key, Limit: uint32(x.Limit), WindowMs: CacheMillis(x.Window)}}}, nil
	}
	return nil, fmt.Errorf("gather: unknown call %T: %w", call, errdef.ErrInvalidArgument)
}

// fillResult decodes the result of call as its single call's client does.
func fillResult(call Call, r *hostv1.GatherResult) {
	var err error
	if b, ok := r.GetResult().(*hostv1.GatherResult_Error); ok {
		var st spb.Status
		if uerr := proto.Unmarshal(b.Error, &st); uerr != nil {
			err = fmt.Errorf("gather: error that does not parse: %w", ErrStorageFailed)
		} else {
			err = errdef.FromStatus(status.FromProto(&st).Err())
		}
	}
	mismatch := fmt.Errorf("gather: result of another kind: %w", ErrStorageFailed)
	switch x := call.(type) {
	case *GetCall:
		switch {
		case err != nil:
			x.Err = fmt.Errorf("storage get %q: %w", x.Key, err)
		case r.GetStorageGet() == nil:
			x.Err = mismatch
		default:
			x.Entry = entryOf(r.GetStorageGet().GetEntry())
		}
	case *CachePutCall:
		switch {
		case err != nil:
			x.Err = fmt.Errorf("cache put %q: %w", x.Key, err)
		case r.GetCachePut() == nil:
			x.Err = mismatch
		default:
			x.Stored = r.GetCachePut().GetStored()
		}
	case *CacheGetCall:
		switch {
		case err != nil:
			x.Err = fmt.Errorf("cache get %q: %w", x.Key, err)
		case r.GetCacheGet() == nil:
			x.Err = mismatch
		default:
			x.Value, x.TTLLeft = nonNil(r.GetCacheGet().GetValue()), time.Duration(r.GetCacheGet().GetTtlLeftMs())*time.Millisecond
		}
	case *CacheConsumeCall:
		switch {
		case err != nil:
			x.Err = fmt.Errorf("cache consume %q: %w", x.Key, err)
		case r.GetCacheConsume() == nil:
			x.Err = mismatch
		default:
			x.Value = nonNil(r.GetCacheConsume().GetValue())
		}
	case *CacheCountCall:
		switch {
		case err != nil:
			x.Err = fmt.Errorf("cache count %q: %w", x.Key, err)
		case r.GetCacheCount() == nil:
			x.Err = mismatch
		default:
			x.Decision = decisionOf(r.GetCacheCount())
		}
	}
}

// Gather serves Gatherer: each call goes to the single call's server
// method (same checks, same answers), all of them concurrently.
func (s *server) Gather(ctx context.Context, req *hostv1.GatherRequest) (*hostv1.GatherResponse, error) {
	calls := req.GetCalls()
	if len(calls) == 0 || len(calls) > MaxGatherCalls {
		return nil, errdef.ToStatus(fmt.Errorf("gather of %d calls outside 1..%d: %w", len(calls), MaxGatherCalls, errdef.ErrInvalidArgument))
	}
	out := &hostv1.GatherResponse{Results: make([]*hostv1.GatherResult, len(calls))}
	run := func(i int) { out.Results[i] = s.gatherOne(ctx, calls[i]) }
	if len(calls) == 1 {
		run(0)
		return out, nil
	}
	var wg sync.WaitGroup
	for i := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			run(i)
		}()
	}
	wg.Wait()
	return out, nil
}

func (s *server) gatherOne(ctx context.Context, c *hostv1.GatherCall) *hostv1.GatherResult {
	var (
		res *hostv1.GatherResult
		err error
	)
	switch x := c.GetCall().(type) {
	case *hostv1.GatherCall_StorageGet:
		var r *hostv1.StorageGetResponse
		if r, err = s.StorageGet(ctx, x.StorageGet); err == nil {
			res = &hostv1.GatherResult{Result: &hostv1.GatherResult_StorageGet{StorageGet: r}}
		}
	case *hostv1.GatherCall_CachePut:
		var r *hostv1.CachePutResponse
		if r, err = s.CachePut(ctx, x.CachePut); err == nil {
			res = &hostv1.GatherResult{Result: &hostv1.GatherResult_CachePut{CachePut: r}}
		}
	case *hostv1.GatherCall_CacheGet:
		var r *hostv1.CacheGetResponse
		if r, err = s.CacheGet(ctx, x.CacheGet); err == nil {
			res = &hostv1.GatherResult{Result: &hostv1.GatherResult_CacheGet{CacheGet: r}}
		}
	case *hostv1.GatherCall_CacheConsume:
		var r *hostv1.CacheConsumeResponse
		if r, err = s.CacheConsume(ctx, x.CacheConsume); err == nil {
			res = &hostv1.GatherResult{Result: &hostv1.GatherResult_CacheConsume{CacheConsume: r}}
		}
	case *hostv1.GatherCall_CacheCount:
		var r *hostv1.CacheCountResponse
		if r, err = s.CacheCount(ctx, x.CacheCount); err == nil {
			res = &hostv1.GatherResult{Result: &hostv1.GatherResult_CacheCount{CacheCount: r}}
		}
	default:
		err = errdef.ToStatus(fmt.Errorf("gather: a call of no known kind: %w", errdef.ErrInvalidArgument))
	}
	if err == nil {
		return res
	}
	b, merr := proto.Marshal(status.Convert(errdef.ToStatus(err)).Proto())
	if merr != nil {
		b, _ = proto.Marshal(status.New(13, "gather: error not encodable").Proto())
	}
	return &hostv1.GatherResult{Result: &hostv1.GatherResult_Error{Error: b}}
}
