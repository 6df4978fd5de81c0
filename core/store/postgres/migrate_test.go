package postgres

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5"

	"github.com/avonzt/avon/core/store"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newLogger(w *syncBuffer) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Output: w, Level: hclog.Debug})
}

func TestMigrationFiles(t *testing.T) {
	ms, err := knownMigrations()
	if err != nil {
		t.Fatal(err)
	}
	if ms[0].name != "0001_kv" || ms[0].version != 1 || len(ms[0].checksum) != 64 {
		t.Fatalf("first migration %+v", ms[0])
	}
	for _, m := range ms {
		if !strings.HasPrefix(strings.TrimSpace(m.sql), "--") {
			t.Errorf("migration %s does not start with a comment saying what it does", m.name)
		}
	}
}

func TestLoadMigrationsRefuses(t *testing.T) {
	file := func(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }
	for _, c := range []struct {
		name string
		fs   fstest.MapFS
		want string
	}{
		{"none", fstest.MapFS{"other/x.sql": file("x")}, "no migration files"},
		{"bad name", fstest.MapFS{"migrations/0001_kv.sql": file("x"), "migrations/2_more.sql": file("y")}, "not NNNN_name.sql"},
		{"upper case", fstest.MapFS{"migrations/0001_KV.sql": file("x")}, "not NNNN_name.sql"},
		{"gap", fstest.MapFS{"migrations/0001_kv.sql": file("x"), "migrations/0003_more.sql": file("y")}, "number 3, want 2"},
		{"not from one", fstest.MapFS{"migrations/0002_kv.sql": file("x")}, "number 2, want 1"},
		{"duplicate number", fstest.MapFS{"migrations/0001_a.sql": file("x"), "migrations/0001_b.sql": file("y")}, "number 1, want 2"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := loadMigrations(c.fs); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("want error containing %q, got %v", c.want, err)
			}
		})
	}
	ms, err := loadMigrations(fstest.MapFS{"migrations/0002_b.sql": file("2"), "migrations/0001_a.sql": file("1")})
	if err != nil || len(ms) != 2 || ms[0].name != "0001_a" || ms[1].sql != "2" {
		t.Fatalf("ordered load: %+v, %v", ms, err)
	}
}

func records(t testing.TB, c *pgx.Conn) []string {
	t.Helper()
	rows, err := c.Query(context.Background(), `SELECT version || ':' || name FROM avon_schema_migrations ORDER BY version`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

func TestMigrateFreshAndIdempotent(t *testing.T) {
	dsn := newDB(t)
	ctx := context.Background()
	st, err := MigrationStatus(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 1 || st[0].Applied || !st[0].Known || st[0].Name != "0001_kv" {
		t.Fatalf("status of a fresh database: %+v", st)
	}
	var logbuf syncBuffer
	applied, err := Migrate(ctx, dsn, newLogger(&logbuf))
	if err != nil || strings.Join(applied, ",") != "0001_kv" {
		t.Fatalf("Migrate = %q, %v", applied, err)
	}
	if !strings.Contains(logbuf.String(), "0001_kv") {
		t.Fatalf("migration not logged: %s", logbuf.String())
	}
	applied, err = Migrate(ctx, dsn, nil)
	if err != nil || len(applied) != 0 {
		t.Fatalf("second Migrate = %q, %v; want nothing to do", applied, err)
	}
	// Open and reopen: nothing more applied, the data stays.
	s := openTest(t, dsn)
	v, err := s.Put(ctx, "k", []byte("v"), store.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	s = openTest(t, dsn, WithoutMigrate())
	if e, err := s.Get(ctx, "k"); err != nil || e.Version != v {
		t.Fatalf("after reopen: %+v, %v", e, err)
	}
	st, err = MigrationStatus(ctx, dsn)
	if err != nil || len(st) != 1 || !st[0].Applied || st[0].Drift || time.Since(st[0].AppliedAt) > time.Hour {
		t.Fatalf("status after migrating: %+v, %v", st, err)
	}
	if got := records(t, sqlConn(t, dsn)); strings.Join(got, ",") != "1:0001_kv" {
		t.Fatalf("recorded %q", got)
	}
}

func TestWithoutMigrateRefusesUnmigrated(t *testing.T) {
	dsn := newDB(t)
	ctx := context.Background()
	_, err := Open(ctx, dsn, WithoutMigrate())
	if !errors.Is(err, ErrSchemaBehind) || !strings.Contains(err.Error(), "0001_kv") {
		t.Fatalf("want ErrSchemaBehind naming 0001_kv, got %v", err)
	}
	var exists bool
	if err := sqlConn(t, dsn).QueryRow(ctx, `SELECT to_regclass('avon_kv') IS NOT NULL`).Scan(&exists); err != nil || exists {
		t.Fatalf("WithoutMigrate created the schema (%v)", err)
	}
	if _, err := Migrate(ctx, dsn, nil); err != nil {
		t.Fatal(err)
	}
	openTest(t, dsn, WithoutMigrate())
}

func TestChecksumDrift(t *testing.T) {
	dsn := newDB(t)
	ctx := context.Background()
	if _, err := Migrate(ctx, dsn, nil); err != nil {
		t.Fatal(err)
	}
	execSQL(t, sqlConn(t, dsn), `UPDATE avon_schema_migrations SET checksum = 'deadbeef' || checksum WHERE version = 1`)
	for name, err := range map[string]error{
		"Open":         func() error { _, err := Open(ctx, dsn); return err }(),
		"Open without": func() error { _, err := Open(ctx, dsn, WithoutMigrate()); return err }(),
		"Migrate":      func() error { _, err := Migrate(ctx, dsn, nil); return err }(),
	} {
		if !errors.Is(err, ErrSchemaDrift) || !strings.Contains(err.Error(), "migration 0001_kv") {
			t.Errorf("%s: want ErrSchemaDrift naming 0001_kv, got %v", name, err)
		}
	}
	st, err := MigrationStatus(ctx, dsn)
	if err != nil || !st[0].Drift {
		t.Fatalf("status does not show the drift: %+v, %v", st, err)
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	dsn := newDB(t)
	ctx := context.Background()
	if _, err := Migrate(ctx, dsn, nil); err != nil {
		t.Fatal(err)
	}
	execSQL(t, sqlConn(t, dsn), `INSERT INTO avon_schema_migrations (version, name, checksum) VALUES (2, '0002_future', 'x'), (3, '0003_later', 'y')`)
	for name, err := range map[string]error{
		"Open":    func() error { _, err := Open(ctx, dsn); return err }(),
		"Migrate": func() error { _, err := Migrate(ctx, dsn, nil); return err }(),
	} {
		if !errors.Is(err, ErrSchemaNewer) || !strings.Contains(err.Error(), "0003_later") || !strings.Contains(err.Error(), "0001_kv") {
			t.Errorf("%s: want ErrSchemaNewer naming both versions, got %v", name, err)
		}
	}
	st, err := MigrationStatus(ctx, dsn)
	if err != nil || len(st) != 3 || st[2].Known || !st[2].Applied || st[2].Name != "0003_later" {
		t.Fatalf("status: %+v, %v", st, err)
	}
}

func TestHistoryGap(t *testing.T) {
	known := []migration{{version: 1, name: "0001_a", checksum: "a"}, {version: 2, name: "0002_b", checksum: "b"}}
	_, err := checkHistory([]record{{version: 2, name: "0002_b", checksum: "b"}}, known)
	if !errors.Is(err, ErrSchemaDrift) || !strings.Contains(err.Error(), "gap") {
		t.Fatalf("want a gap error, got %v", err)
	}
	if n, err := checkHistory([]record{{version: 1, name: "0001_a", checksum: "a"}}, known); err != nil || n != 1 {
		t.Fatalf("prefix of history: %d, %v", n, err)
	}
	if _, err := checkHistory([]record{{version: 1, name: "0001_renamed", checksum: "a"}}, known); !errors.Is(err, ErrSchemaDrift) {
		t.Fatalf("renamed migration: %v", err)
	}
}

// TestConcurrentOpen: replicas starting at once on a fresh database all
// open it; the schema is created exactly once.
func TestConcurrentOpen(t *testing.T) {
	dsn := newDB(t)
	const n = 8
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			s, err := Open(ctx, dsn, WithMaxConns(1))
			if err == nil {
				_, err = s.Put(ctx, "k", nil, store.PutOptions{})
				_ = s.Close()
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := records(t, sqlConn(t, dsn)); strings.Join(got, ",") != "1:0001_kv" {
		t.Fatalf("recorded %q", got)
	}
}

// TestConcurrentMigrateSlow widens the race with slow migrations that have
// side effects: each must run exactly once however many sessions migrate
// at the same moment.
func TestConcurrentMigrateSlow(t *testing.T) {
	dsn := newDB(t)
	ms, err := loadMigrations(fstest.MapFS{
		"migrations/0001_log.sql":  {Data: []byte(`CREATE TABLE side_effects (step text); INSERT INTO side_effects VALUES ('one'); SELECT pg_sleep(0.2);`)},
		"migrations/0002_more.sql": {Data: []byte(`INSERT INTO side_effects VALUES ('two'); SELECT pg_sleep(0.2);`)},
	})
	if err != nil {
		t.Fatal(err)
	}
	const n = 6
	var wg sync.WaitGroup
	var mu sync.Mutex
	var total []string
	errs := make(chan error, n)
	start := make(chan struct{})
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			c, err := pgx.Connect(ctx, dsn)
			if err != nil {
				errs <- err
				return
			}
			defer closeConn(c)
			<-start
			applied, err := migrateWith(ctx, c, ms, hclog.NewNullLogger())
			mu.Lock()
			total = append(total, applied...)
			mu.Unlock()
			errs <- err
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(total) != 2 {
		t.Fatalf("applied %q across sessions, want each migration once", total)
	}
	c := sqlConn(t, dsn)
	var steps string
	if err := c.QueryRow(context.Background(), `SELECT string_agg(step, ',' ORDER BY step) FROM side_effects`).Scan(&steps); err != nil {
		t.Fatal(err)
	}
	if steps != "one,two" {
		t.Fatalf("side effects %q, want one,two", steps)
	}
	if got := records(t, c); strings.Join(got, ",") != "1:0001_log,2:0002_more" {
		t.Fatalf("recorded %q", got)
	}
}

// TestFailedMigrationRecordsNothing: a failing migration leaves neither its
// effects nor its record, and the lock is released for the next attempt.
func TestFailedMigrationRecordsNothing(t *testing.T) {
	dsn := newDB(t)
	ctx := context.Background()
	ms, err := loadMigrations(fstest.MapFS{
		"migrations/0001_ok.sql":  {Data: []byte(`CREATE TABLE t1 (x int);`)},
		"migrations/0002_bad.sql": {Data: []byte(`CREATE TABLE t2 (x int); SELECT * FROM no_such_table;`)},
	})
	if err != nil {
		t.Fatal(err)
	}
	c := sqlConn(t, dsn)
	applied, err := migrateWith(ctx, c, ms, hclog.NewNullLogger())
	if err == nil || !strings.Contains(err.Error(), "migration 0002_bad") || strings.Join(applied, ",") != "0001_ok" {
		t.Fatalf("migrateWith = %q, %v", applied, err)
	}
	var t2 bool
	if err := c.QueryRow(ctx, `SELECT to_regclass('t2') IS NOT NULL`).Scan(&t2); err != nil || t2 {
		t.Fatalf("failed migration left its table (%v)", err)
	}
	if got := records(t, c); strings.Join(got, ",") != "1:0001_ok" {
		t.Fatalf("recorded %q", got)
	}
	// Another session can take the lock at once.
	c2 := sqlConn(t, dsn)
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var got bool
	if err := c2.QueryRow(lctx, `SELECT pg_try_advisory_lock($1)`, migrationLock).Scan(&got); err != nil || !got {
		t.Fatalf("migration lock still held after the failure (%v)", err)
	}
}

func migrateChild(dsn string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	applied, err := Migrate(ctx, dsn, nil)
	if err != nil {
		fmt.Println("ERR", err)
		return 1
	}
	fmt.Println("APPLIED", strings.Join(applied, ","))
	return 0
}

// TestConcurrentMigrateProcesses runs Migrate from several processes at
// once: all succeed and exactly one applies the schema.
func TestConcurrentMigrateProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	dsn := newDB(t)
	const n = 4
	type result struct {
		line string
		err  error
	}
	results := make(chan result, n)
	for range n {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), migrateChildEnv+"="+dsn)
			out, err := cmd.Output()
			sc := bufio.NewScanner(bytes.NewReader(out))
			var last string
			for sc.Scan() {
				last = sc.Text()
			}
			results <- result{last, err}
		}()
	}
	applied := 0
	for range n {
		r := <-results
		if r.err != nil || !strings.HasPrefix(r.line, "APPLIED") {
			t.Fatalf("child: %q, %v", r.line, r.err)
		}
		if r.line == "APPLIED 0001_kv" {
			applied++
		} else if r.line != "APPLIED " && r.line != "APPLIED" {
			t.Fatalf("child reported %q", r.line)
		}
	}
	if applied != 1 {
		t.Fatalf("%d processes applied the migration, want 1", applied)
	}
}
