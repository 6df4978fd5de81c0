package server_test

import (
	"context"
	"crypto/rand"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/avonzt/avon/plugins/acme/acmetest"
	"github.com/avonzt/avon/plugins/acme/server"
	"github.com/avonzt/avon/plugins/acme/validate"
	"github.com/avonzt/avon/sdk/host"
	"github.com/avonzt/avon/sdk/plugintest"
)

// countedStorage and countedCache count the calls that, through the core,
// are each a round trip.
type countedStorage struct {
	host.Storage
	gets, puts, others, applies atomic.Int64
}

// Apply counts a storage batch (host protocol minor 3): one round trip.
func (s *countedStorage) Apply(ctx context.Context, ops []host.Op) ([]int64, error) {
	s.applies.Add(1)
	return s.Storage.(host.Applier).Apply(ctx, ops)
}

func (s *countedStorage) Get(ctx context.Context, key string) (host.Entry, error) {
	s.gets.Add(1)
	return s.Storage.Get(ctx, key)
}

func (s *countedStorage) Put(ctx context.Context, key string, value []byte, o host.PutOptions) (int64, error) {
	s.puts.Add(1)
	return s.Storage.Put(ctx, key, value, o)
}

func (s *countedStorage) Delete(ctx context.Context, key string, o host.DeleteOptions) error {
	s.others.Add(1)
	return s.Storage.Delete(ctx, key, o)
}

func (s *countedStorage) List(ctx context.Context, o host.ListOptions) ([]host.Entry, error) {
	s.others.Add(1)
	return s.Storage.List(ctx, o)
}

type countedCache struct {
	host.Cache
	calls atomic.Int64
}

func (c *countedCache) Put(ctx context.Context, key string, value []byte, o host.CachePutOptions) (bool, error) {
	c.calls.Add(1)
	return c.Cache.Put(ctx, key, value, o)
}

func (c *countedCache) Consume(ctx context.Context, key string) ([]byte, error) {
	c.calls.Add(1)
	return c.Cache.Consume(ctx, key)
}

func (c *countedCache) Count(ctx context.Context, key string, limit int, window time.Duration) (host.RateDecision, error) {
	c.calls.Add(1)
	return c.Cache.Count(ctx, key, limit, window)
}

// BenchmarkCompleteOrder measures whole orders, the way a busy ACME client
// runs them with its account reused: new order, authorization, http-01
// validated over loopback, finalize (a P-256 CSR made beforehand, the
// certificate signed by the real CA plugin process), download. State and
// nonces go to an in-memory host here; through the core each storage,
// cache, clock and audit call crosses a gRPC hop to the core, so the
// benchmark also reports those calls per order.
func BenchmarkCompleteOrder(b *testing.B) {
	caClient := acmetest.StartCA(b)
	e := &env{t: b, host: plugintest.NewHost(), dns: acmetest.StartDNS(b), http01: acmetest.StartHTTP01(b), alpn: startALPN(b)}
	st := &countedStorage{Storage: e.host.Storage()}
	ch := &countedCache{Cache: e.host.Cache()}
	var clock, audit atomic.Int64
	v := validate.New(validate.Config{Resolver: e.dns.Addr, HTTPPort: e.http01.Port, TLSALPNPort: e.alpn.port})
	s, err := server.New(server.Config{Wildcards: true, ValidationTimeout: 5 * time.Second}, server.Deps{Storage: st, Cache: ch,
		CA: caClient, Rand: rand.Reader, Validator: v,
		Clock: func(ctx context.Context) (host.Time, error) { clock.Add(1); return e.host.Now(ctx) },
		Audit: func(ctx context.Context, ev host.Event) error { audit.Add(1); return e.host.Audit(ctx, ev) }})
	if err != nil {
		b.Fatal(err)
	}
	e.srv, e.acme = s, handler{s}
	c := acmetest.NewClient(b, e.acme, ecKey(b))
	c.Register()
	csrDER := csr(b, ecKey(b), "", "bench.svc.test")
	count := func() [7]int64 {
		return [7]int64{st.gets.Load(), st.puts.Load(), st.applies.Load(), st.others.Load(), ch.calls.Load(), clock.Load(), audit.Load()}
	}
	// The client's own HEAD new-nonce calls are not the server's.
	before := count()
	b.ResetTimer()
	for range b.N {
		r := c.Post("/new-order", []byte(`{"identifiers":[{"type":"dns","value":"bench.svc.test"}]}`))
		if r.Status != http.StatusCreated {
			b.Fatalf("new-order: %d %s", r.Status, r.Body)
		}
		e.solve(c, r.JSON, server.ChallengeHTTP01)
		f := c.Post(acmetest.Path(b, str(r.JSON, "finalize")), finalizePayload(csrDER))
		if f.Status != http.StatusOK {
			b.Fatalf("finalize: %d %s", f.Status, f.Body)
		}
		if d := c.Post(acmetest.Path(b, str(f.JSON, "certificate")), nil); d.Status != http.StatusOK {
			b.Fatalf("download: %d", d.Status)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "orders/s")
	after := count()
	for i, name := range []string{"storage-gets", "storage-puts", "storage-batches", "storage-other", "cache-calls", "clock-reads", "audits"} {
		b.ReportMetric(float64(after[i]-before[i])/float64(b.N), name+"/order")
	}
}
