package server_test

import (
	"net/http"
	"testing"

	"github.com/avonzt/avon/plugins/acme/acmetest"
	"github.com/avonzt/avon/plugins/acme/server"
)

// BenchmarkCompleteOrder measures whole orders, the way a busy ACME client
// runs them with its account reused: new order, authorization, http-01
// validated over loopback, finalize (a P-256 CSR made beforehand, the
// certificate signed by the real CA plugin process), download. State and
// nonces go to an in-memory host here; through the core they cross a gRPC
// hop to the core's storage and cache.
func BenchmarkCompleteOrder(b *testing.B) {
	caClient := acmetest.StartCA(b)
	e := newEnv(b, caClient, nil)
	c := acmetest.NewClient(b, e.acme, ecKey(b))
	c.Register()
	csrDER := csr(b, ecKey(b), "", "bench.svc.test")
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
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "orders/s")
}
