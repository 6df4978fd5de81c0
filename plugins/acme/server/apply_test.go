package server_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/avonzt/avon/plugins/acme/acmetest"
	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/host"
)

// plainStorage is a storage without batches (no host.Applier), as a test
// double or a host that does not offer them.
type plainStorage struct{ host.Storage }

// writeLog records the storage writes of a server.
type writeLog struct {
	mu      sync.Mutex
	puts    []string   // keys of single puts
	applies [][]string // keys of each batch
}

func (l *writeLog) reset() (puts []string, applies [][]string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	puts, applies = l.puts, l.applies
	l.puts, l.applies = nil, nil
	return puts, applies
}

// loggedStorage is a storage with batches that logs every write; with
// oldCore its Apply answers ErrNotImplemented, as a core older than host
// protocol minor 3 does, and with fail it fails every batch.
type loggedStorage struct {
	host.Storage
	log     *writeLog
	oldCore bool
	fail    bool
}

func (s loggedStorage) Put(ctx context.Context, key string, v []byte, o host.PutOptions) (int64, error) {
	s.log.mu.Lock()
	s.log.puts = append(s.log.puts, key)
	s.log.mu.Unlock()
	return s.Storage.Put(ctx, key, v, o)
}

func (s loggedStorage) Apply(ctx context.Context, ops []host.Op) ([]int64, error) {
	keys := make([]string, len(ops))
	for i, op := range ops {
		keys[i] = op.Key
	}
	s.log.mu.Lock()
	s.log.applies = append(s.log.applies, keys)
	s.log.mu.Unlock()
	switch {
	case s.oldCore:
		return nil, fmt.Errorf("storage apply: %w", errdef.ErrNotImplemented)
	case s.fail:
		return nil, fmt.Errorf("storage apply: test failure: %w", host.ErrStorageFailed)
	}
	return s.Storage.(host.Applier).Apply(ctx, ops)
}

func prefixes(keys []string) string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i], _, _ = strings.Cut(k, "/")
	}
	return strings.Join(out, ",")
}

// TestWritesBatched: a new order is one batch (its authorizations, the
// order, the index entry), a finalization one batch (the certificate and
// the order) and no claim of the order (the CA records the order's key).
func TestWritesBatched(t *testing.T) {
	log := &writeLog{}
	e := newEnvStorage(t, acmetest.StartCA(t), nil, func(st host.Storage) host.Storage { return loggedStorage{Storage: st, log: log} })
	c := e.client()
	log.reset()
	path, o := e.newOrder(c, "a.batch.test", "b.batch.test")
	puts, applies := log.reset()
	if len(puts) != 0 || len(applies) != 1 || prefixes(applies[0]) != "authz,authz,order,acctorder" {
		t.Fatalf("new order wrote puts %v, batches %v; want one batch authz,authz,order,acctorder", puts, applies)
	}
	e.solve(c, o, "http-01")
	log.reset()
	r := c.Post(path, nil)
	if puts, applies := log.reset(); len(puts)+len(applies) != 0 {
		t.Fatalf("POST-as-GET on an order wrote puts %v, batches %v", puts, applies)
	}
	r = c.Post(acmetest.Path(t, str(o, "finalize")), finalizePayload(csr(t, ecKey(t), "", "a.batch.test", "b.batch.test")))
	if r.Status != http.StatusOK || str(r.JSON, "status") != "valid" {
		t.Fatalf("finalize: %d %s", r.Status, r.Body)
	}
	puts, applies = log.reset()
	if len(puts) != 0 || len(applies) != 1 || prefixes(applies[0]) != "cert,order" {
		t.Fatalf("finalize wrote puts %v, batches %v; want one batch cert,order", puts, applies)
	}
	if cert := c.Post(acmetest.Path(t, str(r.JSON, "certificate")), nil); cert.Status != http.StatusOK {
		t.Fatalf("download: %d %s", cert.Status, cert.Body)
	}
}

// TestWithoutBatches: on a storage without batches, and on a core that
// answers ErrNotImplemented (asked once, then never again), orders are
// issued with single writes.
func TestWithoutBatches(t *testing.T) {
	ca := acmetest.StartCA(t)
	t.Run("no applier", func(t *testing.T) {
		e := newEnvStorage(t, ca, nil, func(st host.Storage) host.Storage { return plainStorage{st} })
		e.issue(e.client(), "http-01", "plain.batch.test")
	})
	t.Run("older core", func(t *testing.T) {
		log := &writeLog{}
		e := newEnvStorage(t, ca, nil, func(st host.Storage) host.Storage { return loggedStorage{Storage: st, log: log, oldCore: true} })
		c := e.client()
		e.issue(c, "http-01", "old1.batch.test")
		e.issue(c, "http-01", "old2.batch.test")
		if _, applies := log.reset(); len(applies) != 1 {
			t.Fatalf("%d batches tried on an older core; want 1, then single writes", len(applies))
		}
	})
}

// TestNewOrderBatchFails: a failed batch answers serverInternal and
// leaves nothing behind.
func TestNewOrderBatchFails(t *testing.T) {
	log := &writeLog{}
	e := newEnvStorage(t, acmetest.StartCA(t), nil, func(st host.Storage) host.Storage { return loggedStorage{Storage: st, log: log, fail: true} })
	c := e.client()
	before, err := e.host.Storage().List(context.Background(), host.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r := c.Post("/new-order", []byte(`{"identifiers":[{"type":"dns","value":"fail.batch.test"}]}`))
	if r.Status != http.StatusInternalServerError || !strings.Contains(string(r.Body), "serverInternal") {
		t.Fatalf("new order on a failing store: %d %s", r.Status, r.Body)
	}
	after, err := e.host.Storage().List(context.Background(), host.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		t.Fatalf("a failed new order left %d keys behind", len(after)-len(before))
	}
}
