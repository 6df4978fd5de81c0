package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
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
	// bumps, when not nil, is how many batches more get the rewrite (the
	// rest none); bumpStatus, when set, is the status the rewrite gives
	// an order (else it is rewritten unchanged).
	bumps      *atomic.Int64
	bumpStatus string
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
		if s.bump != "" && strings.HasPrefix(op.Key, s.bump) && (s.bumps == nil || s.bumps.Add(-1) >= 0) {
			if e, err := s.Storage.Get(ctx, op.Key); err == nil {
				v := e.Value
				if s.bumpStatus != "" {
					var m map[string]any
					if err := json.Unmarshal(v, &m); err != nil {
						return nil, err
					}
					m["status"] = s.bumpStatus
					v, _ = json.Marshal(m)
				}
				if _, err := s.Storage.Put(ctx, op.Key, v, host.PutOptions{}); err != nil {
					return nil, err
				}
			}
		}
	}
	return s.Storage.(host.AuditedApplier).ApplyAudited(ctx, ops, ev)
}

func newAuditedEnv(t *testing.T, oldAudited bool, bump string) (*env, *writeLog, func() []string) {
	return newAuditedEnvBumps(t, oldAudited, bump, nil, "")
}

func newAuditedEnvBumps(t *testing.T, oldAudited bool, bump string, bumps *atomic.Int64, bumpStatus string) (*env, *writeLog, func() []string) {
	var mu sync.Mutex
	var audited []string
	log := &writeLog{}
	e := newEnvStorage(t, acmetest.StartCA(t), nil, func(st host.Storage) host.Storage {
		return auditedStorage{loggedStorage: loggedStorage{Storage: st, log: log}, audited: &audited, mu: &mu,
			oldAudited: oldAudited, bump: bump, bumps: bumps, bumpStatus: bumpStatus}
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

// TestFinalizeAuditedConflict: the final audited batch finds the order
// changed since the finalization read it (a concurrent writer rewrites
// it just before the batch):
//   - still finalizable, once: the batch is tried again under the new
//     version and the order is finalized with the one certificate;
//   - still finalizable, on every try: after three more writes
//     orderNotReady, nothing stored or revoked; the same CSR then gets
//     the certificate back from the CA and finalizes the order with it;
//   - processing (a replica that still claims orders holds it):
//     orderNotReady, nothing revoked;
//   - gone elsewhere (invalid, as the expiry sweep writes it): the
//     certificate the CA recorded under the order's key, which nobody
//     holds, is revoked (superseded) and the failure audited.
func TestFinalizeAuditedConflict(t *testing.T) {
	for _, tc := range []struct {
		name        string
		bumps       int64 // -1: every batch
		status      string
		wantStatus  int
		wantBatches int
		wantRevoked bool
	}{
		{"ready, once", 1, "", http.StatusOK, 2, false},
		{"ready, every try", 4, "", http.StatusForbidden, 4, false},
		{"processing", 1, "processing", http.StatusForbidden, 1, false},
		{"invalid", 1, "invalid", http.StatusForbidden, 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var bumps *atomic.Int64
			if tc.bumps >= 0 {
				bumps = &atomic.Int64{}
				bumps.Store(tc.bumps)
			}
			e, _, audited := newAuditedEnvBumps(t, false, "order/", bumps, tc.status)
			c := e.client()
			path, o := e.newOrder(c, "c.audited.test")
			e.solve(c, o, "http-01")
			if r := c.Post(path, nil); str(r.JSON, "status") != "ready" {
				t.Fatalf("order after the challenges: %s", r.Body)
			}
			audited()
			der := csr(t, ecKey(t), "", "c.audited.test")
			r := c.Post(acmetest.Path(t, str(o, "finalize")), finalizePayload(der))
			if r.Status != tc.wantStatus || (r.Status != http.StatusOK && r.ProblemType() != "orderNotReady") {
				t.Fatalf("finalize of an order changed meanwhile: %d %s", r.Status, r.Body)
			}
			if r.Status == http.StatusOK && (str(r.JSON, "status") != "valid" || str(r.JSON, "certificate") == "") {
				t.Fatalf("order after the retried write: %s", r.Body)
			}
			if got := audited(); len(got) != tc.wantBatches {
				t.Fatalf("audited batches %v, want %d", got, tc.wantBatches)
			}
			certs, err := e.host.Storage().List(context.Background(), host.ListOptions{Prefix: "cert/"})
			if err != nil || (len(certs) == 1) != (tc.wantStatus == http.StatusOK) || len(certs) > 1 {
				t.Fatalf("%d certificates stored (%v)", len(certs), err)
			}
			var failed []host.Event
			for _, ev := range e.host.Events() {
				if ev.Action == "acme.order.finalize" && ev.Outcome == "failure" {
					failed = append(failed, ev)
				}
			}
			l := e.ca.(ca.CertificateLister)
			rv, err := l.ListCertificates(context.Background(), &ca.ListCertificatesRequest{Status: ca.StatusRevoked, Limit: ca.MaxListLimit})
			if err != nil {
				t.Fatal(err)
			}
			good, err := l.ListCertificates(context.Background(), &ca.ListCertificatesRequest{Status: ca.StatusGood, Limit: ca.MaxListLimit})
			if err != nil {
				t.Fatal(err)
			}
			if tc.wantRevoked {
				if len(failed) != 1 || len(rv.Certificates) != 1 || rv.Certificates[0].Serial != failed[0].Fields["serial"] ||
					rv.Certificates[0].Reason != 4 || len(good.Certificates) != 0 {
					t.Fatalf("failure events %+v, revoked %+v, good %d: want the one certificate revoked (superseded) and audited",
						failed, rv.Certificates, len(good.Certificates))
				}
				return
			}
			if len(failed) != 0 || len(rv.Certificates) != 0 || len(good.Certificates) != 1 {
				t.Fatalf("failure events %+v, revoked %d, good %d: want one good certificate, nothing revoked",
					failed, len(rv.Certificates), len(good.Certificates))
			}
			if tc.name != "ready, every try" {
				return
			}
			// The bumps are spent: the same CSR gets the recorded
			// certificate back and the order is finalized with it.
			r = c.Post(acmetest.Path(t, str(o, "finalize")), finalizePayload(der))
			if r.Status != http.StatusOK || str(r.JSON, "status") != "valid" ||
				!strings.HasSuffix(str(r.JSON, "certificate"), "/"+good.Certificates[0].Serial) {
				t.Fatalf("finalize again with the same CSR: %d %s (recorded %s)", r.Status, r.Body, good.Certificates[0].Serial)
			}
			if n := countCerts(t, e.ca); n != 1 {
				t.Fatalf("%d certificates after the second finalization, want the one recorded", n)
			}
		})
	}
}
