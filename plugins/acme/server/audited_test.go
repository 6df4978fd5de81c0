package server_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/avonzt/avon/plugins/acme/acmetest"
	"github.com/avonzt/avon/sdk/ca"
	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/host"
)

// auditedStorage is loggedStorage with audited batches (host protocol
// minor 5), each logged with its event's action. With oldAudited its
// ApplyAudited answers ErrNotImplemented, as a core of minor 3 does; with
// bump it changes the first checked op's key just before the batch, as a
// concurrent writer would, so the batch's check fails.
type auditedStorage struct {
	loggedStorage
	audited    *[]string // "keys prefixes: action" of each audited batch
	mu         *sync.Mutex
	oldAudited bool
	bump       string // key prefix whose op is rewritten first
}

func (s auditedStorage) ApplyAudited(ctx context.Context, ops []host.Op, ev host.Event) ([]int64, error) {
	keys := make([]string, len(ops))
	for i, op := range ops {
		keys[i] = op.Key
	}
	s.mu.Lock()
	*s.audited = append(*s.audited, prefixes(keys)+": "+ev.Action)
	s.mu.Unlock()
	if s.oldAudited {
		return nil, fmt.Errorf("storage apply audited: %w", errdef.ErrNotImplemented)
	}
	for _, op := range ops {
		if s.bump != "" && strings.HasPrefix(op.Key, s.bump) {
			if e, err := s.Storage.Get(ctx, op.Key); err == nil {
				if _, err := s.Storage.Put(ctx, op.Key, e.Value, host.PutOptions{}); err != nil {
					return nil, err
				}
			}
		}
	}
	return s.Storage.(host.AuditedApplier).ApplyAudited(ctx, ops, ev)
}

func newAuditedEnv(t *testing.T, oldAudited bool, bump string) (*env, *writeLog, func() []string) {
	var mu sync.Mutex
	var audited []string
	log := &writeLog{}
	e := newEnvStorage(t, acmetest.StartCA(t), nil, func(st host.Storage) host.Storage {
		return auditedStorage{loggedStorage: loggedStorage{Storage: st, log: log}, audited: &audited, mu: &mu,
			oldAudited: oldAudited, bump: bump}
	})
	return e, log, func() []string {
		mu.Lock()
		defer mu.Unlock()
		out := audited
		audited = nil
		return out
	}
}

func finalizeEvents(h interface{ Events() []host.Event }) int {
	n := 0
	for _, ev := range h.Events() {
		if ev.Action == "acme.order.finalize" {
			n++
		}
	}
	return n
}

// TestFinalizeAudited: a finalization writes the certificate and the order
// and records acme.order.finalize in one audited batch, beside the put
// that claims the order; no separate batch, no separate event.
func TestFinalizeAudited(t *testing.T) {
	e, log, audited := newAuditedEnv(t, false, "")
	c := e.client()
	e.issue(c, "http-01", "a.audited.test")
	puts, applies := log.reset()
	got := audited()
	if len(got) != 1 || got[0] != "cert,order: acme.order.finalize" {
		t.Fatalf("audited batches %v; want one cert,order: acme.order.finalize", got)
	}
	for _, p := range puts {
		if strings.HasPrefix(p, "cert/") {
			t.Fatalf("the certificate was also put on its own: %v", puts)
		}
	}
	for _, a := range applies {
		if prefixes(a) == "cert,order" {
			t.Fatalf("the certificate and order were also a plain batch: %v", applies)
		}
	}
	if n := finalizeEvents(e.host); n != 1 {
		t.Fatalf("%d finalize events for one order", n)
	}
}

// TestFinalizeAuditedOlderCore: a core without audited batches (minor 3)
// is asked once; then finalizations use a plain batch and a separate
// event.
func TestFinalizeAuditedOlderCore(t *testing.T) {
	e, log, audited := newAuditedEnv(t, true, "")
	c := e.client()
	e.issue(c, "http-01", "old1.audited.test")
	e.issue(c, "http-01", "old2.audited.test")
	if got := audited(); len(got) != 1 {
		t.Fatalf("%d audited batches tried on an older core; want 1, then separate writes", len(got))
	}
	_, applies := log.reset()
	n := 0
	for _, a := range applies {
		if prefixes(a) == "cert,order" {
			n++
		}
	}
	if n != 2 {
		t.Fatalf("%d cert,order batches for two orders on an older core: %v", n, applies)
	}
	if n := finalizeEvents(e.host); n != 2 {
		t.Fatalf("%d finalize events for two orders", n)
	}
}

// TestFinalizeAuditedConflict: when the order changed under the
// finalization (another finalization stored it first), the audited batch
// fails: no certificate stored in the acme store, an orderNotReady
// answer, and the certificate the CA recorded under the order's key,
// which nobody holds, revoked (superseded) with the failure audited.
func TestFinalizeAuditedConflict(t *testing.T) {
	e, _, audited := newAuditedEnv(t, false, "order/")
	c := e.client()
	path, o := e.newOrder(c, "c.audited.test")
	e.solve(c, o, "http-01")
	if r := c.Post(path, nil); str(r.JSON, "status") != "ready" {
		t.Fatalf("order after the challenges: %s", r.Body)
	}
	r := c.Post(acmetest.Path(t, str(o, "finalize")), finalizePayload(csr(t, ecKey(t), "", "c.audited.test")))
	if r.Status != http.StatusForbidden || r.ProblemType() != "orderNotReady" {
		t.Fatalf("finalize of an order changed meanwhile: %d %s", r.Status, r.Body)
	}
	if got := audited(); len(got) != 1 {
		t.Fatalf("audited batches %v", got)
	}
	certs, err := e.host.Storage().List(context.Background(), host.ListOptions{Prefix: "cert/"})
	if err != nil || len(certs) != 0 {
		t.Fatalf("%d certificates stored by a failed finalization: %v", len(certs), err)
	}
	// The CA recorded a certificate under the order's key before the
	// order turned out changed: nobody holds it, so it is revoked and the
	// failure audited.
	var failed []host.Event
	for _, ev := range e.host.Events() {
		if ev.Action == "acme.order.finalize" {
			failed = append(failed, ev)
		}
	}
	if len(failed) != 1 || failed[0].Outcome != "failure" || failed[0].Fields["serial"] == "" {
		t.Fatalf("finalize events for a failed finalization: %+v", failed)
	}
	l := e.ca.(ca.CertificateLister)
	rv, err := l.ListCertificates(context.Background(), &ca.ListCertificatesRequest{Status: ca.StatusRevoked, Limit: ca.MaxListLimit})
	if err != nil || len(rv.Certificates) != 1 || rv.Certificates[0].Serial != failed[0].Fields["serial"] || rv.Certificates[0].Reason != 4 {
		t.Fatalf("revoked certificates after the failed finalization: %+v (%v)", rv, err)
	}
	good, err := l.ListCertificates(context.Background(), &ca.ListCertificatesRequest{Status: ca.StatusGood, Limit: ca.MaxListLimit})
	if err != nil || len(good.Certificates) != 0 {
		t.Fatalf("good certificates after the failed finalization: %+v (%v)", good, err)
	}
}
