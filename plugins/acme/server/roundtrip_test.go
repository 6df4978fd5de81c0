package server_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/avonzt/avon/plugins/acme/acmetest"
	"github.com/avonzt/avon/plugins/acme/server"
	"github.com/avonzt/avon/plugins/acme/validate"
	"github.com/avonzt/avon/sdk/host"
	"github.com/avonzt/avon/sdk/plugintest"
)

// watchedStorage is the in-memory storage with the calls counted: Gets
// by key, Puts in flight at once (with gate > 0 each Put waits, 5 s at
// most, until gate Puts are in flight, so that concurrent Puts are seen
// together), and Puts under failPrefix failing.
type watchedStorage struct {
	host.Storage

	mu         sync.Mutex
	gets       map[string]int
	inflight   int
	maxFlight  int
	gate       int
	open       chan struct{}
	failPrefix string
}

func (w *watchedStorage) Get(ctx context.Context, key string) (host.Entry, error) {
	w.mu.Lock()
	w.gets[key]++
	w.mu.Unlock()
	return w.Storage.Get(ctx, key)
}

func (w *watchedStorage) Put(ctx context.Context, key string, value []byte, o host.PutOptions) (int64, error) {
	w.mu.Lock()
	w.inflight++
	w.maxFlight = max(w.maxFlight, w.inflight)
	open, gate, fail := w.open, w.gate, w.failPrefix != "" && strings.HasPrefix(key, w.failPrefix)
	if gate > 0 && w.inflight >= gate {
		close(w.open)
		w.open = make(chan struct{})
	}
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		w.inflight--
		w.mu.Unlock()
	}()
	if gate > 0 {
		select {
		case <-open:
		case <-time.After(5 * time.Second):
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	if fail {
		return 0, fmt.Errorf("put %q: injected failure: %w", key, host.ErrStorageFailed)
	}
	return w.Storage.Put(ctx, key, value, o)
}

// set changes the gate and the failing prefix and resets the counts.
func (w *watchedStorage) set(gate int, failPrefix string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.gate, w.failPrefix, w.maxFlight, w.gets = gate, failPrefix, 0, map[string]int{}
	w.open = make(chan struct{})
}

func (w *watchedStorage) counts() (maxFlight int, gets map[string]int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	g := map[string]int{}
	for k, v := range w.gets {
		g[k] = v
	}
	return w.maxFlight, g
}

// keys lists the stored keys under prefix.
func keys(t testing.TB, st host.Storage, prefix string) []string {
	t.Helper()
	es, err := st.List(context.Background(), host.ListOptions{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Key)
	}
	return out
}

// TestRoundTrips checks how the server uses storage: the independent
// writes of a new order are made together and undone together, and a
// POST reads the account and the resource it names once each.
func TestRoundTrips(t *testing.T) {
	e := &env{t: t, host: plugintest.NewHost(), dns: acmetest.StartDNS(t), http01: acmetest.StartHTTP01(t), alpn: startALPN(t)}
	st := &watchedStorage{Storage: e.host.Storage()}
	st.set(0, "")
	v := validate.New(validate.Config{Resolver: e.dns.Addr, HTTPPort: e.http01.Port, TLSALPNPort: e.alpn.port})
	s, err := server.New(server.Config{}, server.Deps{Storage: st, Cache: e.host.Cache(), CA: acmetest.StartCA(t), Rand: rand.Reader,
		Clock: e.host.Now, Audit: e.host.Audit, Validator: v})
	if err != nil {
		t.Fatal(err)
	}
	e.srv, e.acme = s, handler{s}
	c := e.client()

	t.Run("new order writes together", func(t *testing.T) {
		st.set(3, "")
		_, o := e.newOrder(c, "together.svc.test")
		if n, _ := st.counts(); n != 3 {
			t.Fatalf("at most %d puts in flight; want the authorization, the order and the index entry (3) together", n)
		}
		if len(strs(o, "authorizations")) != 1 {
			t.Fatalf("order: %v", o)
		}
	})
	t.Run("failed new order leaves nothing", func(t *testing.T) {
		st.set(0, "order/")
		authzs, index := keys(t, st, "authz/"), keys(t, st, "acctorder/")
		r := c.Post("/new-order", []byte(`{"identifiers":[{"type":"dns","value":"a.svc.test"},{"type":"dns","value":"b.svc.test"}]}`))
		want(t, r, http.StatusInternalServerError, "serverInternal")
		st.set(0, "")
		if got := keys(t, st, "authz/"); len(got) != len(authzs) {
			t.Fatalf("authorizations %v after a failed new order; before %v", got, authzs)
		}
		if got := keys(t, st, "acctorder/"); len(got) != len(index) {
			t.Fatalf("index %v after a failed new order; before %v", got, index)
		}
	})
	t.Run("POST reads once", func(t *testing.T) {
		path, o := e.newOrder(c, "once.svc.test")
		au := acmetest.Path(t, strs(o, "authorizations")[0])
		for _, p := range []string{au, path} {
			st.set(0, "")
			want(t, c.Post(p, nil), http.StatusOK, "")
			_, gets := st.counts()
			key := strings.TrimPrefix(p, "/")
			if p == au {
				key = "authz/" + strings.TrimPrefix(au, "/authz/")
			}
			if gets[key] != 1 || gets["acct/"+kidID(c)] != 1 {
				t.Fatalf("POST %s read %v; want %s and the account once each", p, gets, key)
			}
		}
	})
}
