package postgres

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/avonzt/avon/core/store"
	"github.com/avonzt/avon/core/store/storetest"
)

// TestApplyDeadlockRunsAgain builds a deadlock between two batches that
// write the same two keys in opposite orders: a trigger makes each batch
// wait at a gate (an advisory lock the test holds) after its first key,
// so when the test opens the gate each holds the key the other needs. The
// server aborts one; Apply runs it again, and both batches succeed.
func TestApplyDeadlockRunsAgain(t *testing.T) {
	dsn := newDB(t)
	s := openTest(t, dsn)
	c := sqlConn(t, dsn)
	ctx := context.Background()
	execSQL(t, c, `CREATE FUNCTION avon_test_gate() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN PERFORM pg_advisory_xact_lock_shared(4242); RETURN NEW; END $$`)
	execSQL(t, c, `CREATE TRIGGER avon_test_gate BEFORE INSERT ON avon_kv
		FOR EACH ROW WHEN (NEW.key LIKE 'gate/%') EXECUTE FUNCTION avon_test_gate()`)
	execSQL(t, c, `SELECT pg_advisory_lock(4242)`)
	unlocked := false
	defer func() {
		if !unlocked {
			execSQL(t, c, `SELECT pg_advisory_unlock(4242)`)
		}
	}()

	batches := [][]store.Op{
		{{Key: "a", Value: []byte("1")}, {Key: "gate/1"}, {Key: "b", Value: []byte("1")}},
		{{Key: "b", Value: []byte("2")}, {Key: "gate/2"}, {Key: "a", Value: []byte("2")}},
	}
	type result struct {
		vs  []int64
		err error
	}
	results := make([]chan result, len(batches))
	for i, ops := range batches {
		results[i] = make(chan result, 1)
		go func() {
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			vs, err := s.Apply(cctx, ops)
			results[i] <- result{vs, err}
		}()
	}
	// Wait, bounded, until both batches wait at the gate.
	for tries := 0; ; tries++ {
		var n int
		if err := c.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND NOT granted`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 2 {
			break
		}
		if tries > 3000 {
			t.Fatalf("%d batches at the gate after 30s, want 2", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	execSQL(t, c, `SELECT pg_advisory_unlock(4242)`)
	unlocked = true

	var last [2]int64
	for i := range batches {
		r := <-results[i]
		if r.err != nil {
			t.Fatalf("batch %d: %v", i, r.err)
		}
		last[i] = r.vs[2]
	}
	// The batch that committed last wrote both keys last.
	winner := "1"
	if last[1] > last[0] {
		winner = "2"
	}
	for _, k := range []string{"a", "b"} {
		e, err := s.Get(ctx, k)
		if err != nil || string(e.Value) != winner {
			t.Fatalf("%s = %q, %v; want the value of the batch committed last (%s)", k, e.Value, err, winner)
		}
	}
}

// TestApplyPausedServer: a batch cut off by its deadline before COMMIT
// says nothing was written, and nothing was.
func TestApplyPausedServer(t *testing.T) {
	ensureRunning(t)
	s := openTest(t, newDB(t), WithMaxConns(2))
	ctx := context.Background()
	if _, err := s.Put(ctx, "before", []byte("v"), store.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := server(t).Pause(); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, callDeadline)
	start := time.Now()
	_, err := s.Apply(cctx, []store.Op{{Key: "during/1", Value: []byte("x")}, {Key: "during/2", Value: []byte("y")}})
	took := time.Since(start)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || !containsAll(err.Error(), server(t).Addr(), "nothing was written") {
		t.Fatalf("Apply against a paused server: %v", err)
	}
	if took > callDeadline+slack {
		t.Fatalf("Apply took %v with a %v deadline", took, callDeadline)
	}
	if err := server(t).Resume(); err != nil {
		t.Fatal(err)
	}
	waitReady(t, s)
	es, err := s.List(ctx, store.ListOptions{Prefix: "during/"})
	if err != nil || len(es) != 0 {
		t.Fatalf("after the cut-off batch: %v, %v; want nothing", keysOf(es), err)
	}
	if _, err := s.Apply(ctx, []store.Op{{Key: "during/1", Value: []byte("x")}}); err != nil {
		t.Fatalf("Apply after Resume: %v", err)
	}
}

func keysOf(es []store.Entry) []string {
	ks := make([]string, 0, len(es))
	for _, e := range es {
		ks = append(ks, e.Key)
	}
	return ks
}

// BenchmarkPostgresApply runs storetest.BenchApply: 10 writes as one Apply (one transaction, one pipeline)
// against the same 10 writes as sequential Puts.
func BenchmarkPostgresApply(b *testing.B) {
	storetest.BenchApply(b, func(b *testing.B) store.KV { return benchStore(b) })
}
