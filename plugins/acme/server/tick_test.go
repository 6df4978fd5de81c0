package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/avonzt/avon/plugins/acme/acmetest"
	"github.com/avonzt/avon/plugins/acme/server"
	"github.com/avonzt/avon/sdk/host"
)

// snapshot is every key of the plugin's storage with its value.
func snapshot(t testing.TB, st host.Storage) map[string]string {
	t.Helper()
	out := map[string]string{}
	after := ""
	for range 100 {
		es, err := st.List(context.Background(), host.ListOptions{After: after, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			out[e.Key] = string(e.Value)
		}
		if len(es) < 1000 {
			return out
		}
		after = es[len(es)-1].Key
	}
	t.Fatal("storage listing does not end")
	return nil
}

func storedStatus(t testing.TB, snap map[string]string, key string) string {
	t.Helper()
	v, ok := snap[key]
	if !ok {
		return "(absent)"
	}
	var m struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal([]byte(v), &m); err != nil {
		t.Fatal(err)
	}
	return m.Status
}

func idOf(url string) string { return url[strings.LastIndexByte(url, '/')+1:] }

// TestTickCleanup: an expired pending order becomes invalid (its
// authorization expired) on the first sweep after it expired, and its
// storage is reclaimed once the retention passed; a valid order, its
// authorization and certificate are untouched throughout.
func TestTickCleanup(t *testing.T) {
	caClient := acmetest.StartCA(t)
	const ttl, retention = time.Hour, 24 * time.Hour
	e := newEnv(t, caClient, func(c *server.Config) {
		c.OrderTTL, c.AuthzTTL, c.Retention, c.SweepBatch = ttl, ttl, retention, 2
	})
	ctx := context.Background()
	c := e.client()
	start := time.Now()

	validOrder, _ := e.issue(c, server.ChallengeHTTP01, "kept.svc.test")
	pendingPath, pending := e.newOrder(c, "stale.svc.test", "stale2.svc.test")
	pendingID := idOf(pendingPath)
	pendingAuthz := strs(pending, "authorizations")
	var validID string
	for k, v := range snapshot(t, e.host.Storage()) {
		if strings.HasPrefix(k, "order/") && strings.Contains(v, `"status":"valid"`) {
			validID = strings.TrimPrefix(k, "order/")
		}
	}
	if validID == "" || str(validOrder, "status") != "valid" {
		t.Fatal("no valid order stored")
	}
	keep := func(snap map[string]string) map[string]string {
		out := map[string]string{}
		for k, v := range snap {
			if strings.Contains(k, validID) || strings.HasPrefix(k, "cert/") || strings.HasPrefix(k, "acct") && !strings.HasPrefix(k, "acctorder/") {
				out[k] = v
			}
		}
		var o server.Order
		_ = json.Unmarshal([]byte(snap["order/"+validID]), &o)
		for _, a := range o.AuthzIDs {
			out["authz/"+a] = snap["authz/"+a]
		}
		return out
	}
	before := keep(snapshot(t, e.host.Storage()))
	if len(before) < 5 {
		t.Fatalf("valid objects %v", before)
	}
	sameValid := func(when string) {
		t.Helper()
		after := keep(snapshot(t, e.host.Storage()))
		for k, v := range before {
			if after[k] != v {
				t.Fatalf("%s: valid object %s changed", when, k)
			}
		}
	}

	// Before the expiry a full sweep changes nothing.
	sweep := func(now time.Time) server.TickResult {
		t.Helper()
		var total server.TickResult
		for i := range 10 {
			r, err := e.srv.Tick(ctx, now)
			if err != nil {
				t.Fatal(err)
			}
			if r.Examined > 2 {
				t.Fatalf("tick %d examined %d orders, batch is 2", i, r.Examined)
			}
			total.Examined += r.Examined
			total.Invalidated += r.Invalidated
			total.Expired += r.Expired
			total.Deleted += r.Deleted
			if r.Wrapped {
				return total
			}
		}
		t.Fatal("the sweep did not reach the end in 10 ticks")
		return total
	}
	if r := sweep(start.Add(ttl / 2)); r.Invalidated+r.Deleted != 0 || r.Examined != 2 {
		t.Fatalf("early sweep %+v", r)
	}
	snap := snapshot(t, e.host.Storage())
	if got := storedStatus(t, snap, "order/"+pendingID); got != "pending" {
		t.Fatalf("pending order stored %s before its expiry", got)
	}

	// Expired: invalid, its authorizations expired; the valid order stays.
	if r := sweep(start.Add(ttl + time.Minute)); r.Invalidated != 1 || r.Expired != 2 || r.Deleted != 0 {
		t.Fatalf("sweep after expiry %+v", r)
	}
	snap = snapshot(t, e.host.Storage())
	if got := storedStatus(t, snap, "order/"+pendingID); got != "invalid" {
		t.Fatalf("expired order stored %s, want invalid", got)
	}
	for _, a := range pendingAuthz {
		if got := storedStatus(t, snap, "authz/"+idOf(a)); got != "expired" {
			t.Fatalf("authorization of the expired order stored %s, want expired", got)
		}
	}
	sameValid("after invalidation")
	if r := c.Post(pendingPath, nil); r.Status != http.StatusOK || str(r.JSON, "status") != "invalid" {
		t.Fatalf("expired order reads %d %s", r.Status, r.Body)
	}
	var acts []string
	for _, ev := range e.host.Events() {
		acts = append(acts, ev.Action)
	}
	if !strings.Contains(strings.Join(acts, ","), "acme.sweep") {
		t.Fatalf("no acme.sweep audit event in %v", acts)
	}

	// Within the retention it is kept; after it, reclaimed.
	if r := sweep(start.Add(ttl + retention - time.Minute)); r.Deleted != 0 || r.Invalidated != 0 {
		t.Fatalf("sweep within the retention %+v", r)
	}
	if r := sweep(start.Add(ttl + retention + 2*time.Minute)); r.Deleted != 1 {
		t.Fatalf("sweep after the retention %+v", r)
	}
	snap = snapshot(t, e.host.Storage())
	for k := range snap {
		if strings.Contains(k, pendingID) {
			t.Fatalf("%s left after the retention", k)
		}
	}
	for _, a := range pendingAuthz {
		if _, ok := snap["authz/"+idOf(a)]; ok {
			t.Fatalf("authorization %s left after the retention", a)
		}
	}
	sameValid("after deletion")
	want(t, c.Post(pendingPath, nil), http.StatusNotFound, "malformed")
	r := c.Post("/account/"+kidID(c)+"/orders", nil)
	if got := strs(r.JSON, "orders"); len(got) != 1 || idOf(got[0]) != validID {
		t.Fatalf("account orders after the clean-up %v", got)
	}
	// Once everything is clean a sweep does nothing.
	if r := sweep(start.Add(2 * retention)); r.Invalidated+r.Deleted != 0 || r.Examined != 1 {
		t.Fatalf("sweep of a clean store %+v", r)
	}
}
