package postgres

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/avonzt/avon/core/store"
	"github.com/avonzt/avon/core/store/storetest"
	"github.com/avonzt/avon/internal/testsvc/pgtest"
)

// One cluster serves the whole package (started once in TestMain); each
// test gets its own database. Tests that stop or pause the server run
// sequentially like every other test here (none calls t.Parallel).
var (
	srv    *pgtest.Server
	srvErr error
)

// migrateChildEnv, when set to a DSN, turns the test binary into a process
// that runs Migrate once (TestConcurrentMigrateProcesses).
const migrateChildEnv = "AVON_PG_MIGRATE_CHILD"

func TestMain(m *testing.M) {
	if dsn := os.Getenv(migrateChildEnv); dsn != "" {
		os.Exit(migrateChild(dsn))
	}
	var stop func()
	srv, stop, srvErr = pgtest.StartMain()
	code := m.Run()
	stop()
	os.Exit(code)
}

func server(t testing.TB) *pgtest.Server {
	t.Helper()
	return pgtest.Need(t, srv, srvErr)
}

// newDB returns the DSN of a fresh database named after the test.
func newDB(t testing.TB) string {
	t.Helper()
	return server(t).CreateDatabase(t, t.Name())
}

func openTest(t testing.TB, dsn string, opts ...Option) *Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Open(ctx, dsn, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// sqlConn is a direct connection for checking what the store wrote.
func sqlConn(t testing.TB, dsn string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeConn(c) })
	return c
}

func execSQL(t testing.TB, c *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := c.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func TestConformance(t *testing.T) {
	server(t)
	storetest.Run(t, func(t *testing.T) store.KV {
		return openTest(t, newDB(t))
	})
}

// TestSchema checks what the migration created: the C collation on keys,
// bytea values, the sequence, and that the primary key serves List's range
// scan.
func TestSchema(t *testing.T) {
	dsn := newDB(t)
	s := openTest(t, dsn)
	ctx := context.Background()
	if _, err := s.Put(ctx, "a/é", []byte{0, 1}, store.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	c := sqlConn(t, dsn)
	var coll, typ string
	if err := c.QueryRow(ctx, `SELECT collation_name, (SELECT data_type FROM information_schema.columns WHERE table_name = 'avon_kv' AND column_name = 'value')
		FROM information_schema.columns WHERE table_name = 'avon_kv' AND column_name = 'key'`).Scan(&coll, &typ); err != nil {
		t.Fatal(err)
	}
	if coll != "C" || typ != "bytea" {
		t.Fatalf("key collation %q, value type %q; want C and bytea", coll, typ)
	}
	execSQL(t, c, `SET enable_seqscan = off`)
	q, args := listQuery(store.ListOptions{Prefix: "a/"}, 10)
	rows, err := c.Query(ctx, "EXPLAIN "+q, args...)
	if err != nil {
		t.Fatal(err)
	}
	var plan []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, line)
	}
	rows.Close()
	if p := strings.Join(plan, "\n"); !strings.Contains(p, "avon_kv_pkey") || !strings.Contains(p, "Index Cond") {
		t.Fatalf("List does not range-scan the primary key:\n%s", p)
	}
	// The table refuses what the store would never write.
	for _, bad := range []string{
		`INSERT INTO avon_kv VALUES ('', '\x00', 1)`,
		`INSERT INTO avon_kv VALUES ('k', '\x00', 0)`,
		`INSERT INTO avon_kv VALUES ('k', NULL, 5)`,
	} {
		if _, err := c.Exec(ctx, bad); err == nil {
			t.Errorf("accepted: %s", bad)
		}
	}
}

// TestNonASCIIOrderInSQL: the database itself orders keys bytewise, also
// where a linguistic collation would not (case, accents, astral planes).
func TestNonASCIIOrderInSQL(t *testing.T) {
	dsn := newDB(t)
	s := openTest(t, dsn)
	ctx := context.Background()
	keys := []string{"B", "a", "é", "e", "\U0001f600", "\uff5e", "Z", "z", "ä", "~"}
	for _, k := range keys {
		if _, err := s.Put(ctx, k, nil, store.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	es, err := s.List(ctx, store.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := make([]string, 0, len(es))
	for _, e := range es {
		got = append(got, e.Key)
	}
	want := "B,Z,a,e,z,~,ä,é,\uff5e,\U0001f600"
	if strings.Join(got, ",") != want {
		t.Fatalf("order %q, want %q", strings.Join(got, ","), want)
	}
}

func TestOptions(t *testing.T) {
	dsn := newDB(t)
	var logbuf syncBuffer
	s := openTest(t, dsn, WithMaxConns(2), WithConnectTimeout(3*time.Second), WithLogger(newLogger(&logbuf)))
	if st := s.Stat(); st.MaxConns != 2 {
		t.Fatalf("MaxConns %d, want 2", st.MaxConns)
	}
	// Many concurrent callers never get more than two connections.
	ctx := context.Background()
	var wg sync.WaitGroup
	var failed atomic.Value
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				if _, err := s.Put(ctx, fmt.Sprintf("w%d/%d", w, i), nil, store.PutOptions{}); err != nil {
					failed.Store(err)
					return
				}
				if st := s.Stat(); st.InUse > 2 || st.InUse+st.Idle > 2 {
					failed.Store(fmt.Errorf("pool state %+v over its bound", st))
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		t.Fatal(err)
	}
	var n int
	c := sqlConn(t, dsn)
	if err := c.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'avon'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n < 1 || n > 2 {
		t.Fatalf("%d server sessions for a pool of 2", n)
	}
	if st := s.Stat(); st.Dialled > 2 {
		t.Fatalf("dialled %d connections for a pool of 2 on a healthy server", st.Dialled)
	}
	// Eight callers on two connections queued for them.
	if st := s.Stat(); st.Waits < 1 || st.WaitTime <= 0 || st.InUse != 0 || st.Saturated {
		t.Fatalf("pool state after the callers returned: %+v", st)
	}
	if out := logbuf.String(); !strings.Contains(out, "applied migration") || !strings.Contains(out, "0001_kv") {
		t.Fatalf("log does not report the migration:\n%s", out)
	}
	// pool_max_conns in the DSN is the pool's bound, not a server setting.
	s2 := openTest(t, dsn+"&pool_max_conns=3")
	if st := s2.Stat(); st.MaxConns != 3 {
		t.Fatalf("pool_max_conns=3 gave MaxConns %d", st.MaxConns)
	}
}

// TestCloseWhileBusy closes the store under concurrent callers: each call
// either succeeds or fails with ErrClosed, nothing hangs.
func TestCloseWhileBusy(t *testing.T) {
	s := openTest(t, newDB(t), WithMaxConns(3))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var bad atomic.Value
	var started atomic.Int64
	for w := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100000; i++ {
				k := fmt.Sprintf("w%d/%d", w, i%10)
				var err error
				switch i % 3 {
				case 0:
					_, err = s.Put(ctx, k, []byte("v"), store.PutOptions{})
				case 1:
					_, err = s.List(ctx, store.ListOptions{Prefix: "w"})
				default:
					err = s.Ping(ctx)
				}
				started.Add(1)
				if errors.Is(err, store.ErrClosed) {
					return
				}
				if err != nil {
					bad.Store(err)
					return
				}
			}
		}()
	}
	for started.Load() < 30 && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if err := bad.Load(); err != nil {
		t.Fatalf("call racing Close: %v", err)
	}
	if st := s.Stat(); st.Idle != 0 || st.InUse != 0 {
		t.Fatalf("connections left after Close: %+v", st)
	}
}

// TestNoGoroutineLeak: Close stops every goroutine the store started.
func TestNoGoroutineLeak(t *testing.T) {
	dsn := newDB(t)
	before := runtime.NumGoroutine()
	s, err := Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	for i := range 20 {
		if _, err := s.Put(ctx, fmt.Sprint("k", i), nil, store.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.List(ctx, store.ListOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		t.Fatalf("%d goroutines after Close, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}

func TestPrefixEnd(t *testing.T) {
	for _, c := range []struct {
		in, want string
		ok       bool
	}{
		{"", "", false},
		{"a", "b", true},
		{"a/", "a0", true},
		{"a\u007e", "a\u007f", true},
		{"\u00ff", "\u0100", true},
		{"x\ud7ff", "x\ue000", true},
		{"x\U0010ffff", "y", true},
		{"\U0010ffff\U0010ffff", "", false},
		{"é", "ê", true},
	} {
		got, ok := prefixEnd(c.in)
		if got != c.want || ok != c.ok {
			t.Errorf("prefixEnd(%q) = %q, %v; want %q, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}

// FuzzPrefixEnd: for valid keys k and prefixes p, k has prefix p exactly
// when p <= k < prefixEnd(p) (bytewise), and the bound is valid UTF-8
// without NUL.
func FuzzPrefixEnd(f *testing.F) {
	for _, s := range [][2]string{{"a", "ab"}, {"a/", "a0"}, {"é", "ê"}, {"\U0010ffff", "\U0010ffffa"}, {"x\ud7ff", "x\ue000"}, {"", "z"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, p, k string) {
		if store.ValidateKey(k) != nil || (p != "" && store.ValidateKey(p) != nil) {
			return
		}
		end, ok := prefixEnd(p)
		if ok && (!isText(end) || end <= p) {
			t.Fatalf("prefixEnd(%q) = %q: not a valid upper bound", p, end)
		}
		in := k >= p && (!ok || k < end)
		if in != strings.HasPrefix(k, p) {
			t.Fatalf("prefix %q, key %q: range says %v, HasPrefix %v (end %q)", p, k, in, !in, end)
		}
	})
}

func isText(s string) bool {
	return !strings.ContainsRune(s, 0) && strings.ToValidUTF8(s, "\ufffd") == s
}
