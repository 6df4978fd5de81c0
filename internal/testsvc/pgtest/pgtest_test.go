package pgtest

import (
	"context"
	"errors"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func query(t *testing.T, dsn, sql string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer func() { _ = conn.Close(context.Background()) }()
	var s string
	if err := conn.QueryRow(ctx, sql).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

// TestLifecycle starts a cluster, checks its settings, creates databases,
// pauses, stops and restarts it, and finds nothing left after cleanup.
func TestLifecycle(t *testing.T) {
	s, stop, err := StartMain()
	s = Need(t, s, err)
	defer stop()

	dsn := s.CreateDatabase(t, "Life Cycle!")
	if !strings.Contains(dsn, "/life_cycle_") {
		t.Fatalf("database name not sanitized: %s", dsn)
	}
	for setting, want := range map[string]string{
		"SHOW fsync":              "on",
		"SHOW server_encoding":    "UTF8",
		"SHOW lc_collate":         "C",
		"SHOW listen_addresses":   "127.0.0.1",
		"SHOW max_connections":    "100",
		"SHOW synchronous_commit": "on",
		"SELECT current_user":     Superuser,
	} {
		if got := query(t, dsn, setting); got != want {
			t.Errorf("%s = %q, want %q", setting, got, want)
		}
	}
	if got := query(t, dsn, "SHOW unix_socket_directories"); got != s.Dir() {
		t.Errorf("unix_socket_directories = %q, want %q", got, s.Dir())
	}
	if dsn2 := s.CreateDatabase(t, "Life Cycle!"); dsn2 == dsn {
		t.Fatal("CreateDatabase returned the same database twice")
	}
	if os.Geteuid() == 0 {
		if got := query(t, dsn, "SELECT current_setting('data_directory')"); !strings.HasPrefix(got, s.Dir()) {
			t.Errorf("data directory %q outside %q", got, s.Dir())
		}
	}

	pids, err := s.PIDs()
	if err != nil || len(pids) < 2 {
		t.Fatalf("PIDs = %v, %v; want the postmaster and its children", pids, err)
	}

	// Paused: a query cannot complete; resumed: it does.
	if err := s.Pause(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, err = pgx.Connect(ctx, dsn)
	cancel()
	if err == nil {
		t.Fatal("connected to a paused server")
	}
	if err := s.Resume(); err != nil {
		t.Fatal(err)
	}
	if got := query(t, dsn, "SELECT 'back'"); got != "back" {
		t.Fatal(got)
	}

	// Stopped: refused; started again on the same port and data.
	if _, err := s.NewDatabase("keep"); err != nil {
		t.Fatal(err)
	}
	if err := s.StopImmediate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 2*time.Second)
	_, err = pgx.Connect(ctx, dsn)
	cancel()
	if err == nil {
		t.Fatal("connected to a stopped server")
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	if got := query(t, dsn, "SELECT count(*)::text FROM pg_database WHERE datname LIKE 'keep_%'"); got != "1" {
		t.Fatalf("database created before the crash: count %s", got)
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	pids, err = s.PIDs()
	if err != nil {
		t.Fatal(err)
	}
	dir := s.Dir()

	stop()
	stop() // idempotent
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("directory %s left behind: %v", dir, err)
	}
	// Every server process is gone (bounded wait: backends exit after the
	// postmaster).
	for _, pid := range pids {
		deadline := time.Now().Add(5 * time.Second)
		for syscall.Kill(pid, 0) == nil && time.Now().Before(deadline) {
			if b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); strings.Contains(string(b), ") Z ") {
				break // a zombie awaiting its reaper is not running
			}
			time.Sleep(20 * time.Millisecond)
		}
		if b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline"); err == nil && strings.Contains(string(b), "postgres") {
			t.Errorf("server process %d still running: %q", pid, b)
		}
	}
}

// TestReapStale: a cluster whose owner died is stopped and removed by the
// next start.
func TestReapStale(t *testing.T) {
	s, stop, err := StartMain()
	s = Need(t, s, err)
	defer stop()
	pm, err := s.postmasterPID()
	if err != nil {
		t.Fatal(err)
	}
	// Pretend the owner died: a pid that cannot be alive.
	if err := os.WriteFile(s.Dir()+"/"+ownerFile, []byte("2147483646"), 0o600); err != nil {
		t.Fatal(err)
	}
	reapStale()
	if _, err := os.Stat(s.Dir()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stale directory kept: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile("/proc/" + strconv.Itoa(pm) + "/stat"); err != nil || strings.Contains(string(b), ") Z ") {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("postmaster %d of a stale cluster still running", pm)
}

func TestNeedSkipsOrFails(t *testing.T) {
	// A missing server skips, or fails under AVON_REQUIRE_SERVICES=1; the
	// decision is Need's, so check it on a fake test (this runs in CI too).
	missing := errors.Join(ErrMissing, errors.New("initdb not in PATH"))
	srv := &Server{}
	for _, c := range []struct {
		env         string
		s           *Server
		err         error
		skip, fail  bool
		returnsSelf bool
	}{
		{"", srv, nil, false, false, true},
		{"1", srv, nil, false, false, true},
		{"", nil, missing, true, false, false},
		{"1", nil, missing, false, true, false},
		{"", nil, errors.New("initdb failed"), false, true, false},
		{"", nil, nil, false, true, false},
	} {
		t.Setenv(RequireEnv, c.env)
		ft := &fakeTB{}
		var got *Server
		done := make(chan struct{})
		go func() {
			defer close(done)
			got = Need(ft, c.s, c.err)
		}()
		<-done
		if ft.skipped != c.skip || ft.failed != c.fail || (got == srv) != c.returnsSelf {
			t.Errorf("env %q err %v: skipped %v failed %v returned %v", c.env, c.err, ft.skipped, ft.failed, got != nil)
		}
	}
}

// fakeTB records Skip and Fatal; both end the goroutine like the real ones.
type fakeTB struct {
	testing.TB
	skipped, failed bool
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Skipf(string, ...any) {
	f.skipped = true
	runtime.Goexit()
}
func (f *fakeTB) Fatal(...any) {
	f.failed = true
	runtime.Goexit()
}
func (f *fakeTB) Fatalf(string, ...any) {
	f.failed = true
	runtime.Goexit()
}
