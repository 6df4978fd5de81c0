package server_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/avonzt/avon/plugins/acme/acmetest"
	"github.com/avonzt/avon/plugins/acme/server"
	"github.com/avonzt/avon/sdk/ca"
	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/host"
)

// olderCA is the real CA seen as a plugin of ca protocol minor 5: no
// IssueOnce (hidden), or (unimplemented) an IssueOnce that answers
// ErrNotImplemented, as a core or plugin without the RPC does. It counts
// the IssueOnce calls.
type olderCA struct {
	ca.CA
	onceCalls *atomic.Int64
}

type unimplementedOnce struct{ olderCA }

func (c unimplementedOnce) IssueOnce(context.Context, *ca.IssueOnceRequest) (*ca.IssueOnceResponse, error) {
	c.onceCalls.Add(1)
	return nil, fmt.Errorf("issue once: %w", errdef.ErrNotImplemented)
}

// lister keeps ListCertificates visible through the wrappers (countCerts).
func (c olderCA) ListCertificates(ctx context.Context, r *ca.ListCertificatesRequest) (*ca.ListCertificatesResponse, error) {
	return c.CA.(ca.CertificateLister).ListCertificates(ctx, r)
}

// TestFinalizeOlderCA: with a CA that cannot issue under the order's key
// the finalization claims the order first (a put, then the batch), asks
// the CA for IssueOnce at most once, and concurrent finalizations still
// get exactly one certificate.
func TestFinalizeOlderCA(t *testing.T) {
	real := acmetest.StartCA(t)
	for _, tc := range []struct {
		name      string
		ca        func(*atomic.Int64) ca.CA
		onceCalls int64
	}{
		{"without IssueOnce", func(n *atomic.Int64) ca.CA { return olderCA{CA: real, onceCalls: n} }, 0},
		{"IssueOnce unimplemented", func(n *atomic.Int64) ca.CA { return unimplementedOnce{olderCA{CA: real, onceCalls: n}} }, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var calls atomic.Int64
			log := &writeLog{}
			e := newEnvStorage(t, tc.ca(&calls), nil, func(st host.Storage) host.Storage { return loggedStorage{Storage: st, log: log} })
			c := e.client()
			for _, name := range []string{"a.older.test", "b.older.test"} {
				_, o := e.newOrder(c, name)
				e.solve(c, o, server.ChallengeHTTP01)
				log.reset()
				r := c.Post(acmetest.Path(t, str(o, "finalize")), finalizePayload(csr(t, ecKey(t), "", name)))
				if r.Status != http.StatusOK || str(r.JSON, "status") != "valid" {
					t.Fatalf("finalize: %d %s", r.Status, r.Body)
				}
				puts, applies := log.reset()
				if len(puts) != 1 || !strings.HasPrefix(puts[0], "order/") || len(applies) != 1 || prefixes(applies[0]) != "cert,order" {
					t.Fatalf("finalize wrote puts %v, batches %v; want the order claimed, then one batch cert,order", puts, applies)
				}
			}
			if n := calls.Load(); n != tc.onceCalls {
				t.Fatalf("%d IssueOnce calls for two finalizations, want %d", n, tc.onceCalls)
			}
			e.t = t
			testFinalizeConcurrently(e)
		})
	}
}

// failingFinal is a storage whose audited batches fail while fail is set:
// a core that stopped after the CA recorded the certificate and before
// the order was stored.
type failingFinal struct {
	host.Storage
	fail *atomic.Bool
}

func (s failingFinal) Apply(ctx context.Context, ops []host.Op) ([]int64, error) {
	return s.Storage.(host.Applier).Apply(ctx, ops)
}

func (s failingFinal) ApplyAudited(ctx context.Context, ops []host.Op, ev host.Event) ([]int64, error) {
	if s.fail.Load() {
		return nil, fmt.Errorf("storage apply audited: test failure: %w", host.ErrStorageFailed)
	}
	return s.Storage.(host.AuditedApplier).ApplyAudited(ctx, ops, ev)
}

// TestFinalizeAfterLostWrite: when the order's final write fails after
// the CA recorded the certificate, the order stays ready; finalizing it
// again with the same CSR completes it with that certificate, nothing
// more issued; another CSR is orderNotReady.
func TestFinalizeAfterLostWrite(t *testing.T) {
	var fail atomic.Bool
	e := newEnvStorage(t, acmetest.StartCA(t), nil, func(st host.Storage) host.Storage { return failingFinal{Storage: st, fail: &fail} })
	c := e.client()
	path, o := e.newOrder(c, "lost.once.test")
	e.solve(c, o, server.ChallengeHTTP01)
	fin := acmetest.Path(t, str(o, "finalize"))
	der := csr(t, ecKey(t), "", "lost.once.test")
	before := countCerts(t, e.ca)
	fail.Store(true)
	if r := c.Post(fin, finalizePayload(der)); r.Status != http.StatusInternalServerError {
		t.Fatalf("finalize with a failing store: %d %s", r.Status, r.Body)
	}
	fail.Store(false)
	if r := c.Post(path, nil); str(r.JSON, "status") != "ready" {
		t.Fatalf("order after a lost final write: %s", r.Body)
	}
	want(t, c.Post(fin, finalizePayload(csr(t, ecKey(t), "", "lost.once.test"))), http.StatusForbidden, "orderNotReady")
	r := c.Post(fin, finalizePayload(der))
	if r.Status != http.StatusOK || str(r.JSON, "status") != "valid" {
		t.Fatalf("finalize again with the same CSR: %d %s", r.Status, r.Body)
	}
	if got := countCerts(t, e.ca) - before; got != 1 {
		t.Fatalf("the CA issued %d certificates for one order; want 1", got)
	}
	if cert := c.Post(acmetest.Path(t, str(r.JSON, "certificate")), nil); cert.Status != http.StatusOK || !strings.Contains(string(cert.Body), "BEGIN CERTIFICATE") {
		t.Fatalf("download: %d %s", cert.Status, cert.Body)
	}
}

// TestFinalizeConcurrentCSRs: concurrent finalizations of one order with
// different CSRs: one succeeds, the others are orderNotReady, the CA
// issued one certificate, and it is the one the order names.
func TestFinalizeConcurrentCSRs(t *testing.T) {
	e := newEnv(t, acmetest.StartCA(t), nil)
	c := e.client()
	path, o := e.newOrder(c, "csrs.once.test")
	e.solve(c, o, server.ChallengeHTTP01)
	fin := acmetest.Path(t, str(o, "finalize"))
	const n = 6
	bodies := make([][]byte, n)
	for i := range bodies {
		bodies[i] = c.Sign(fin, finalizePayload(csr(t, ecKey(t), "", "csrs.once.test")), nil)
	}
	before := countCerts(t, e.ca)
	results := postAtOnce(c, fin, bodies)
	ok, cert := 0, ""
	for _, r := range results {
		switch {
		case r.Status == http.StatusOK:
			ok++
			cert = str(r.JSON, "certificate")
		case r.ProblemType() != "orderNotReady":
			t.Fatalf("concurrent finalize: %d %s", r.Status, r.Body)
		}
	}
	if ok != 1 {
		t.Fatalf("%d of %d concurrent finalizations succeeded; want 1", ok, n)
	}
	if got := countCerts(t, e.ca) - before; got != 1 {
		t.Fatalf("the CA issued %d certificates for one order; want 1", got)
	}
	if r := c.Post(path, nil); str(r.JSON, "status") != "valid" || str(r.JSON, "certificate") != cert {
		t.Fatalf("order after the race: %s (the winner got %s)", r.Body, cert)
	}
}

// TestFinalizeRefusedLeavesOrderReady: a CSR the CA refuses is badCSR and
// leaves the order ready: nothing holds the order during an issuance
// under its key, so writing it invalid could orphan the certificate of a
// concurrent finalization. The order can then be finalized.
func TestFinalizeRefusedLeavesOrderReady(t *testing.T) {
	real := acmetest.StartCA(t)
	refusing := true
	var mu sync.Mutex
	e := newEnv(t, switchCA{CA: real, refuse: func() bool { mu.Lock(); defer mu.Unlock(); return refusing }}, nil)
	c := e.client()
	path, o := e.newOrder(c, "refuse.once.test")
	e.solve(c, o, server.ChallengeHTTP01)
	fin := acmetest.Path(t, str(o, "finalize"))
	r := c.Post(fin, finalizePayload(csr(t, ecKey(t), "", "refuse.once.test")))
	if r.Status != http.StatusBadRequest || r.ProblemType() != "badCSR" {
		t.Fatalf("finalize refused by the CA: %d %s", r.Status, r.Body)
	}
	if r := c.Post(path, nil); str(r.JSON, "status") != "ready" {
		t.Fatalf("order after a refused finalization: %s", r.Body)
	}
	mu.Lock()
	refusing = false
	mu.Unlock()
	if r := c.Post(fin, finalizePayload(csr(t, ecKey(t), "", "refuse.once.test"))); r.Status != http.StatusOK || str(r.JSON, "status") != "valid" {
		t.Fatalf("finalize after the refusal: %d %s", r.Status, r.Body)
	}
}

// switchCA is the real CA whose IssueOnce refuses every CSR as the CA's
// own checks may refuse what the acme plugin let through (a profile's
// key policy, say), while refuse says so.
type switchCA struct {
	ca.CA
	refuse func() bool
}

func (c switchCA) IssueOnce(ctx context.Context, r *ca.IssueOnceRequest) (*ca.IssueOnceResponse, error) {
	if c.refuse() {
		return nil, fmt.Errorf("test: key policy: %w", ca.ErrBadCSR)
	}
	return c.CA.(ca.OnceIssuer).IssueOnce(ctx, r)
}
