package host_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	spb "google.golang.org/genproto/googleapis/rpc/status"

	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/host"
	"github.com/avonzt/avon/sdk/plugintest"
	hostv1 "github.com/avonzt/avon/sdk/proto/host/v1"
)

// gatherHost serves h over loopback gRPC, counting the calls by method;
// refuseGather makes the server answer Gather as a core older than minor
// 4 does.
type gatherHost struct {
	host.Host
	cc    *grpc.ClientConn
	calls map[string]*atomic.Int64
}

func serveCounted(t testing.TB, h host.Host, refuseGather bool) *gatherHost {
	t.Helper()
	g := &gatherHost{calls: map[string]*atomic.Int64{}}
	for _, m := range []string{"Gather", "StorageGet", "CachePut", "CacheGet", "CacheConsume", "CacheCount"} {
		g.calls["/avon.host.v1.Host/"+m] = &atomic.Int64{}
	}
	cc := dial(t, func(s *grpc.Server) { host.Register(s, h) }, grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
		if n := g.calls[info.FullMethod]; n != nil {
			n.Add(1)
		}
		if refuseGather && info.FullMethod == "/avon.host.v1.Host/Gather" {
			return nil, status.Error(codes.Unimplemented, "unknown method Gather")
		}
		return next(ctx, req)
	}))
	g.cc, g.Host = cc, host.NewClient(cc, nil)
	return g
}

func (g *gatherHost) count(method string) int64 { return g.calls["/avon.host.v1.Host/"+method].Load() }

// gatherCalls is one of each kind of call, with the state they expect:
// "acct" stored, "used" in the cache, a rate limit of 1 already reached.
func gatherCalls() (*host.GetCall, *host.GetCall, *host.CachePutCall, *host.CachePutCall, *host.CacheGetCall, *host.CacheConsumeCall, *host.CacheCountCall, *host.CachePutCall) {
	return &host.GetCall{Key: "acct"}, &host.GetCall{Key: "missing"},
		&host.CachePutCall{Key: "fresh", Opts: host.CachePutOptions{TTL: time.Minute, IfAbsent: true}},
		&host.CachePutCall{Key: "used", Opts: host.CachePutOptions{TTL: time.Minute, IfAbsent: true}},
		&host.CacheGetCall{Key: "used"}, &host.CacheConsumeCall{Key: "gone"},
		&host.CacheCountCall{Key: "rate", Limit: 1, Window: time.Minute},
		&host.CachePutCall{Key: "bad\x00key", Opts: host.CachePutOptions{TTL: time.Minute}}
}

// checkGather runs one of each call through Gather on st and c and
// checks every result is what the single call gives.
func checkGather(t *testing.T, st host.Storage, c host.Cache) {
	t.Helper()
	ctx := context.Background()
	get, miss, fresh, used, cget, consume, count, bad := gatherCalls()
	host.Gather(ctx, st, c, get, miss, fresh, used, cget, consume, count, bad)
	if get.Err != nil || string(get.Entry.Value) != "account" || get.Entry.Version == 0 || get.Entry.Key != "acct" {
		t.Errorf("get: %+v", get)
	}
	if !errors.Is(miss.Err, host.ErrNotFound) {
		t.Errorf("get of an absent key: %v, want ErrNotFound", miss.Err)
	}
	if fresh.Err != nil || !fresh.Stored {
		t.Errorf("put if absent of a new key: %+v", fresh)
	}
	if used.Err != nil || used.Stored {
		t.Errorf("put if absent of a live key: %+v", used)
	}
	if cget.Err != nil || string(cget.Value) != "x" || cget.TTLLeft <= 0 {
		t.Errorf("cache get: %+v", cget)
	}
	if !errors.Is(consume.Err, host.ErrCacheMiss) {
		t.Errorf("consume of an absent key: %v, want ErrCacheMiss", consume.Err)
	}
	if count.Err != nil || count.Decision.Allowed {
		t.Errorf("count past the limit: %+v", count)
	}
	if !errors.Is(bad.Err, host.ErrCacheInvalid) {
		t.Errorf("bad key: %v, want ErrCacheInvalid", bad.Err)
	}
}

// seed stores what gatherCalls expects.
func seed(t *testing.T, h *plugintest.MemHost) {
	t.Helper()
	ctx := context.Background()
	if _, err := h.Storage().Put(ctx, "acct", []byte("account"), host.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Cache().Put(ctx, "used", []byte("x"), host.CachePutOptions{TTL: time.Minute}); err != nil {
		t.Fatal(err)
	}
	if d, err := h.Cache().Count(ctx, "rate", 1, time.Minute); err != nil || !d.Allowed {
		t.Fatal(d, err)
	}
}

// TestGatherOverGRPC: every kind of call, in one round trip, answers as
// its single call does.
func TestGatherOverGRPC(t *testing.T) {
	h := plugintest.NewHost()
	seed(t, h)
	g := serveCounted(t, h, false)
	checkGather(t, g.Storage(), g.Cache())
	if n := g.count("Gather"); n != 1 {
		t.Fatalf("%d Gather calls, want 1", n)
	}
	for _, m := range []string{"StorageGet", "CachePut", "CacheGet", "CacheConsume", "CacheCount"} {
		if n := g.count(m); n != 0 {
			t.Fatalf("%d single %s calls, want 0", n, m)
		}
	}
	// The fresh key was stored by the gathered put.
	if v, _, err := h.Cache().Get(context.Background(), "fresh"); err != nil || len(v) != 0 {
		t.Fatalf("fresh: %q %v", v, err)
	}
}

// TestGatherFallsBack: against a core older than minor 4, and on a
// storage that is not the host's, the same calls are made one by one with
// the same results; the older core is asked for Gather only once.
func TestGatherFallsBack(t *testing.T) {
	h := plugintest.NewHost()
	seed(t, h)
	g := serveCounted(t, h, true)
	checkGather(t, g.Storage(), g.Cache())
	if n := g.count("Gather"); n != 1 {
		t.Fatalf("%d Gather calls, want 1", n)
	}
	if n := g.count("StorageGet"); n != 2 {
		t.Fatalf("%d single gets, want 2", n)
	}
	get := &host.GetCall{Key: "acct"}
	host.Gather(context.Background(), g.Storage(), g.Cache(), get, &host.CacheConsumeCall{Key: "x"})
	if get.Err != nil || g.count("Gather") != 1 {
		t.Fatalf("second gather: %v, %d Gather calls", get.Err, g.count("Gather"))
	}

	h2 := plugintest.NewHost()
	seed(t, h2)
	checkGather(t, h2.Storage(), h2.Cache())
}

// wrappedCache is a plugin's own wrapper of the host's cache.
type wrappedCache struct {
	host.Cache
	puts atomic.Int64
}

func (w *wrappedCache) Put(ctx context.Context, key string, value []byte, opts host.CachePutOptions) (bool, error) {
	w.puts.Add(1)
	return w.Cache.Put(ctx, key, value, opts)
}

// TestGatherHonoursTheCache: cache calls gathered with the host's storage
// but another cache (a wrapper) go to that cache, one by one; reads alone
// are still gathered.
func TestGatherHonoursTheCache(t *testing.T) {
	h := plugintest.NewHost()
	seed(t, h)
	g := serveCounted(t, h, false)
	w := &wrappedCache{Cache: g.Cache()}
	get, put := &host.GetCall{Key: "acct"}, &host.CachePutCall{Key: "k", Opts: host.CachePutOptions{TTL: time.Second}}
	host.Gather(context.Background(), g.Storage(), w, get, put)
	if get.Err != nil || put.Err != nil || !put.Stored || w.puts.Load() != 1 || g.count("Gather") != 0 {
		t.Fatalf("get %v, put %+v, %d wrapper puts, %d Gathers; want the put through the wrapper", get.Err, put, w.puts.Load(), g.count("Gather"))
	}
	get = &host.GetCall{Key: "acct"}
	host.Gather(context.Background(), g.Storage(), w, get, &host.GetCall{Key: "missing"})
	if get.Err != nil || g.count("Gather") != 1 {
		t.Fatalf("reads alone: %v, %d Gathers, want 1", get.Err, g.count("Gather"))
	}
}

// TestGatherTooLarge: an answer over the client's message limit (4 MiB
// here) is made as single calls, each of which fits.
func TestGatherTooLarge(t *testing.T) {
	h := plugintest.NewHost()
	big := make([]byte, 3<<20)
	for _, k := range []string{"a", "b"} {
		if _, err := h.Storage().Put(context.Background(), k, big, host.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	g := serveCounted(t, h, false)
	a, b := &host.GetCall{Key: "a"}, &host.GetCall{Key: "b"}
	host.Gather(context.Background(), g.Storage(), g.Cache(), a, b)
	if a.Err != nil || b.Err != nil || len(a.Entry.Value) != len(big) || len(b.Entry.Value) != len(big) {
		t.Fatalf("a %v (%d bytes), b %v (%d bytes)", a.Err, len(a.Entry.Value), b.Err, len(b.Entry.Value))
	}
	if g.count("Gather") != 1 || g.count("StorageGet") != 2 {
		t.Fatalf("%d Gathers, %d single gets; want 1 refused Gather and 2 gets", g.count("Gather"), g.count("StorageGet"))
	}
}

// TestGatherErrorsCrossTheWire: a failing cache fails the cache calls of
// a Gather with the single call's error, and the storage reads succeed;
// a failed round trip fails every call.
func TestGatherErrorsCrossTheWire(t *testing.T) {
	h := plugintest.NewHost()
	seed(t, h)
	g := serveCounted(t, h, false)
	h.SetCacheFailure(true)
	get, put := &host.GetCall{Key: "acct"}, &host.CachePutCall{Key: "k", Opts: host.CachePutOptions{TTL: time.Second}}
	host.Gather(context.Background(), g.Storage(), g.Cache(), get, put)
	if get.Err != nil || !errors.Is(put.Err, host.ErrCacheUnavailable) {
		t.Fatalf("get %v, put %v (want ErrCacheUnavailable)", get.Err, put.Err)
	}
	h.SetCacheFailure(false)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	get, put = &host.GetCall{Key: "acct"}, &host.CachePutCall{Key: "k", Opts: host.CachePutOptions{TTL: time.Second}}
	host.Gather(ctx, g.Storage(), g.Cache(), get, put)
	if !errors.Is(get.Err, context.Canceled) || !errors.Is(put.Err, context.Canceled) {
		t.Fatalf("canceled: get %v, put %v", get.Err, put.Err)
	}
}

// TestGatherRawRequests: requests a client would not send are refused by
// the server, each with a typed error and nothing done.
func TestGatherRawRequests(t *testing.T) {
	h := plugintest.NewHost()
	g := serveCounted(t, h, false)
	rpc := hostv1.NewHostClient(g.cc)
	ctx := context.Background()
	for _, n := range []int{0, host.MaxGatherCalls + 1} {
		req := &hostv1.GatherRequest{}
		for range n {
			req.Calls = append(req.Calls, &hostv1.GatherCall{Call: &hostv1.GatherCall_StorageGet{StorageGet: &hostv1.StorageGetRequest{Key: "k"}}})
		}
		if _, err := rpc.Gather(ctx, req); !errors.Is(errdef.FromStatus(err), errdef.ErrInvalidArgument) {
			t.Fatalf("%d calls: %v, want ErrInvalidArgument", n, err)
		}
	}
	r, err := rpc.Gather(ctx, &hostv1.GatherRequest{Calls: []*hostv1.GatherCall{
		{},
		{Call: &hostv1.GatherCall_CachePut{CachePut: &hostv1.CachePutRequest{Key: "k", TtlMs: 0}}},
		{Call: &hostv1.GatherCall_StorageGet{StorageGet: &hostv1.StorageGetRequest{Key: strings.Repeat("k", 4096)}}},
	}})
	if err != nil || len(r.GetResults()) != 3 {
		t.Fatalf("gather: %v %v", r, err)
	}
	for i, res := range r.GetResults() {
		b, ok := res.GetResult().(*hostv1.GatherResult_Error)
		if !ok {
			t.Fatalf("call %d: %v, want an error", i, res)
		}
		st := new(spb.Status)
		if err := proto.Unmarshal(b.Error, st); err != nil {
			t.Fatalf("call %d: error does not parse: %v", i, err)
		}
		if c := codes.Code(st.GetCode()); c != codes.InvalidArgument {
			t.Fatalf("call %d: %v %q, want InvalidArgument", i, c, st.GetMessage())
		}
	}
	if _, _, err := h.Cache().Get(ctx, "k"); !errors.Is(err, host.ErrCacheMiss) {
		t.Fatalf("a refused put stored: %v", err)
	}
}

// FuzzGatherRequest: no request bytes make the server panic or answer
// with a number of results other than its calls'.
func FuzzGatherRequest(f *testing.F) {
	g := serveCounted(f, plugintest.NewHost(), false)
	f.Add([]byte{})
	seedReq, _ := proto.Marshal(&hostv1.GatherRequest{Calls: []*hostv1.GatherCall{
		{Call: &hostv1.GatherCall_StorageGet{StorageGet: &hostv1.StorageGetRequest{Key: "k"}}},
		{Call: &hostv1.GatherCall_CacheCount{CacheCount: &hostv1.CacheCountRequest{Key: "r", Limit: 2, WindowMs: 1000}}},
		{Call: &hostv1.GatherCall_CacheConsume{CacheConsume: &hostv1.CacheConsumeRequest{Key: "n"}}},
	}})
	f.Add(seedReq)
	f.Fuzz(func(t *testing.T, b []byte) {
		var req hostv1.GatherRequest
		if proto.Unmarshal(b, &req) != nil {
			return
		}
		r, err := hostv1.NewHostClient(g.cc).Gather(context.Background(), &req)
		if err == nil && len(r.GetResults()) != len(req.GetCalls()) {
			t.Fatalf("%d results for %d calls", len(r.GetResults()), len(req.GetCalls()))
		}
	})
}
