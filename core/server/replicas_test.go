package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/avonzt/avon/core/cache/memcache"
	"github.com/avonzt/avon/core/events"
	"github.com/avonzt/avon/core/store"
	"github.com/avonzt/avon/core/store/memstore"
)

// fakeClock is a settable clock for the memory cache's TTLs.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// presenceReplica is a Server with what the presence code uses: the
// shared store, its own view of the shared cache, a bus naming it, no
// gateway (so no live sessions of its own).
func presenceReplica(kv store.KV, b *memcache.Backend, origin string) *Server {
	c := b.Open()
	return &Server{log: hclog.NewNullLogger(), store: kv, cache: c, events: events.New(c, origin, nil)}
}

func fakeRows(n int, replica string) []SessionInfo {
	out := make([]SessionInfo, n)
	for i := range out {
		out[i] = SessionInfo{ID: fmt.Sprintf("%016x", i*7919%n), AgentID: fmt.Sprintf("agent-%d", i), Replica: replica}
	}
	return out
}

// publishRows writes rows as replica origin would (its chunks and name).
func publishRows(t *testing.T, s *Server, rows []SessionInfo, ttl time.Duration, now time.Time) {
	t.Helper()
	ctx := context.Background()
	if err := s.registerReplica(ctx, now); err != nil {
		t.Fatal(err)
	}
	for i, ch := range chunkRows(rows, now) {
		b, _ := json.Marshal(ch)
		if err := s.cache.PutSession(ctx, rowsName(s.events.Origin(), i), b, ttl); err != nil {
			t.Fatal(err)
		}
	}
}

func TestChunkRows(t *testing.T) {
	for _, n := range []int{0, 1, replicaChunk - 1, replicaChunk, replicaChunk + 1, 3*replicaChunk + 17} {
		rows := fakeRows(n, "r")
		chunks := chunkRows(rows, time.Unix(0, 0))
		want := max(1, (n+replicaChunk-1)/replicaChunk)
		if len(chunks) != want {
			t.Fatalf("%d rows: %d chunks, want %d", n, len(chunks), want)
		}
		got := 0
		for i, c := range chunks {
			if c.Chunks != want || len(c.Sessions) > replicaChunk {
				t.Fatalf("%d rows: chunk %d says %d chunks with %d rows", n, i, c.Chunks, len(c.Sessions))
			}
			for j, r := range c.Sessions {
				if r != rows[got+j] {
					t.Fatalf("%d rows: chunk %d row %d is %+v, want %+v", n, i, j, r, rows[got+j])
				}
			}
			got += len(c.Sessions)
		}
		if got != n {
			t.Fatalf("%d rows: chunks hold %d", n, got)
		}
	}
}

// TestClusterSessions: replica 1 lists what replica 2 published (several
// chunks, in id order, each row naming replica 2); replica 2's clean stop
// removes its rows and name; rows of a replica that died expire with
// their TTL.
func TestClusterSessions(t *testing.T) {
	ctx := context.Background()
	clk := &fakeClock{now: time.Now()} // registerReplica stamps the wall clock
	b := memcache.NewBackend(memcache.Options{Now: clk.Now})
	kv := memstore.New()
	r1 := presenceReplica(kv, b, "host/1")
	r2 := presenceReplica(kv, b, "host/2")
	r3 := presenceReplica(kv, b, "host/3")

	if l, err := r1.clusterSessions(ctx); err != nil || len(l) != 0 {
		t.Fatalf("empty cluster lists %d sessions, %v", len(l), err)
	}
	rows := fakeRows(2*replicaChunk+5, "host/2")
	publishRows(t, r2, rows, time.Minute, clk.Now())
	l, err := r1.clusterSessions(ctx)
	if err != nil || len(l) != len(rows) {
		t.Fatalf("r1 lists %d sessions (%v), want %d", len(l), err, len(rows))
	}
	for i := range l {
		if l[i].Replica != "host/2" || (i > 0 && l[i-1].ID >= l[i].ID) {
			t.Fatalf("row %d: %+v (previous %+v): want replica host/2, ids ascending", i, l[i], l[max(i-1, 0)])
		}
	}

	// r3 dies: its rows expire with the TTL, its name stays until pruned.
	publishRows(t, r3, []SessionInfo{{ID: "ffffffffffffffff", AgentID: "a3", Replica: "host/3"}}, 10*time.Second, clk.Now())
	if l, _ := r1.clusterSessions(ctx); len(l) != len(rows)+1 {
		t.Fatalf("r1 lists %d sessions with r3's, want %d", len(l), len(rows)+1)
	}
	clk.Add(11 * time.Second)
	if l, _ := r1.clusterSessions(ctx); len(l) != len(rows) {
		t.Fatalf("r1 lists %d sessions after r3's rows expired, want %d", len(l), len(rows))
	}
	if n, err := r1.pruneReplicaNames(ctx, clk.Now()); err != nil || n != 0 {
		t.Fatalf("pruned %d fresh names (%v)", n, err)
	}
	if n, err := r1.pruneReplicaNames(ctx, clk.Now().Add(replicaForget+time.Second)); err != nil || n != 2 {
		t.Fatalf("pruned %d names after replicaForget (%v), want 2", n, err)
	}
	if names, err := r1.replicaNames(ctx); err != nil || len(names) != 0 {
		t.Fatalf("names left after pruning: %+v %v", names, err)
	}

	// A clean stop removes the rows and the name.
	publishRows(t, r2, rows, time.Minute, clk.Now())
	r2.unpublishSessions(ctx)
	if l, err := r1.clusterSessions(ctx); err != nil || len(l) != 0 {
		t.Fatalf("r1 lists %d sessions after r2 stopped (%v)", len(l), err)
	}
	for i := range 3 {
		if _, _, err := r1.cache.GetSession(ctx, rowsName("host/2", i)); err == nil {
			t.Fatalf("chunk %d of r2's rows left after its clean stop", i)
		}
	}
	// A replica publishing through publishSessions (no gateway: no rows).
	if err := r1.publishSessions(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := r2.remoteRows(ctx, "host/1"); err != nil || len(got) != 0 {
		t.Fatalf("r1 with no gateway published %+v (%v)", got, err)
	}
	if _, ttl, err := r2.cache.GetSession(ctx, rowsName("host/1", 0)); err != nil || ttl != rowsTTL(r1.publishInterval()) {
		t.Fatalf("r1's rows: ttl %v (%v), want %v", ttl, err, rowsTTL(r1.publishInterval()))
	}
}

// TestPruneKillRecords: kill records older than the max age go, younger
// ones, unreadable ones and other keys stay.
func TestPruneKillRecords(t *testing.T) {
	ctx := context.Background()
	kv := memstore.New()
	now := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	put := func(key string, v []byte) {
		t.Helper()
		if _, err := kv.Put(ctx, key, v, store.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	rec := func(at time.Time) []byte { b, _ := json.Marshal(killRecord{At: at, By: "op"}); return b }
	put(killedPrefix+"00000000000000a1", rec(now.Add(-KillRecordMaxAge-time.Second))) // old
	put(killedPrefix+"00000000000000a2", rec(now.Add(-48*time.Hour)))                 // older
	put(killedPrefix+"00000000000000a3", rec(now.Add(-KillRecordMaxAge+time.Minute))) // still in use
	put(killedPrefix+"00000000000000a4", rec(now))                                    // fresh
	put(killedPrefix+"00000000000000a5", []byte("{not json"))                         // unreadable
	put(killedPrefix+"00000000000000a6", []byte(`{"by":"op"}`))                       // no time
	put("sessions/other", rec(now.Add(-100*time.Hour)))                               // not a kill record

	n, err := pruneKillRecords(ctx, kv, now, KillRecordMaxAge)
	if err != nil || n != 2 {
		t.Fatalf("pruned %d (%v), want 2", n, err)
	}
	es, err := kv.List(ctx, store.ListOptions{Prefix: "sessions/"})
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, e := range es {
		left = append(left, e.Key)
	}
	want := []string{killedPrefix + "00000000000000a3", killedPrefix + "00000000000000a4", killedPrefix + "00000000000000a5",
		killedPrefix + "00000000000000a6", "sessions/other"}
	if fmt.Sprint(left) != fmt.Sprint(want) {
		t.Fatalf("left %v, want %v", left, want)
	}
	// Idempotent: a second pass (another replica) prunes nothing more.
	if n, err := pruneKillRecords(ctx, kv, now, KillRecordMaxAge); err != nil || n != 0 {
		t.Fatalf("second pass pruned %d (%v)", n, err)
	}
}

// FuzzDecodeRows: any bytes in a replica's cache record give rows within
// the limits or ErrBadRows, never a panic.
func FuzzDecodeRows(f *testing.F) {
	for _, n := range []int{0, 1, 3} {
		b, _ := json.Marshal(chunkRows(fakeRows(n, "host/1"), time.Unix(1, 0))[0])
		f.Add(b)
	}
	f.Add([]byte(`{"chunks":1001,"sessions":[]}`))
	f.Add([]byte(`{"chunks":-1}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeRows(b)
		if err != nil {
			if !errors.Is(err, ErrBadRows) {
				t.Fatalf("error %v does not wrap ErrBadRows", err)
			}
			return
		}
		if r.Chunks < 1 || r.Chunks > replicaMaxChunks || len(r.Sessions) > replicaChunk {
			t.Fatalf("accepted %d chunks, %d rows", r.Chunks, len(r.Sessions))
		}
	})
}

// FuzzKillRecordExpired: any stored bytes give a decision, never a panic;
// a record is never expired before maxAge has passed since its time.
func FuzzKillRecordExpired(f *testing.F) {
	b, _ := json.Marshal(killRecord{At: time.Unix(1000, 0).UTC(), By: "op", Reason: "r"})
	f.Add(b, int64(1000), int64(time.Hour))
	f.Add([]byte(`{"at":"0001-01-01T00:00:00Z"}`), int64(0), int64(1))
	f.Add([]byte(`{"at":"9999-12-31T23:59:59Z"}`), int64(1<<40), int64(0))
	f.Fuzz(func(t *testing.T, v []byte, nowUnix int64, maxAge int64) {
		now := time.Unix(nowUnix%(1<<40), 0)
		if !killRecordExpired(v, now, time.Duration(maxAge)) {
			return
		}
		var k killRecord
		if json.Unmarshal(v, &k) != nil || k.At.IsZero() || now.Sub(k.At) <= time.Duration(maxAge) {
			t.Fatalf("%q expired at %v with max age %v", v, now, time.Duration(maxAge))
		}
	})
}
