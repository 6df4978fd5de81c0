package postgres

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/avonzt/avon/core/store"
)

// TestPoolSettings: the pool settings a DSN gives reach the pool's
// configuration and not the server; the others get this package's
// defaults.
func TestPoolSettings(t *testing.T) {
	cfg, err := parseDSN("host=db dbname=avon user=avon")
	if err != nil {
		t.Fatal(err)
	}
	if want := int32(max(4, runtime.NumCPU())); cfg.MaxConns != want {
		t.Errorf("default MaxConns %d, want %d", cfg.MaxConns, want)
	}
	for _, c := range []struct {
		name      string
		got, want time.Duration
	}{
		{"lifetime", cfg.MaxConnLifetime, DefaultMaxConnLifetime},
		{"lifetime jitter", cfg.MaxConnLifetimeJitter, DefaultMaxConnLifetime / 6},
		{"idle time", cfg.MaxConnIdleTime, DefaultMaxConnIdleTime},
		{"health check", cfg.HealthCheckPeriod, DefaultHealthCheckPeriod},
		{"ping timeout (set by Open)", cfg.PingTimeout, 0},
	} {
		if c.got != c.want {
			t.Errorf("default %s %v, want %v", c.name, c.got, c.want)
		}
	}

	for _, dsn := range []string{
		"postgres://avon@db/avon?pool_max_conns=7&pool_min_conns=2&pool_min_idle_conns=1&pool_max_conn_lifetime=20m" +
			"&pool_max_conn_lifetime_jitter=0s&pool_max_conn_idle_time=90s&pool_health_check_period=3s&pool_ping_timeout=2s",
		"host=db dbname=avon pool_max_conns=7 pool_min_conns=2 pool_min_idle_conns=1 pool_max_conn_lifetime=20m " +
			"pool_max_conn_lifetime_jitter=0s pool_max_conn_idle_time=90s pool_health_check_period=3s pool_ping_timeout=2s",
	} {
		cfg, err := parseDSN(dsn)
		if err != nil {
			t.Fatal(err)
		}
		got := fmt.Sprint(cfg.MaxConns, cfg.MinConns, cfg.MinIdleConns, cfg.MaxConnLifetime, cfg.MaxConnLifetimeJitter,
			cfg.MaxConnIdleTime, cfg.HealthCheckPeriod, cfg.PingTimeout)
		if want := "7 2 1 20m0s 0s 1m30s 3s 2s"; got != want {
			t.Errorf("%s:\n got %s\nwant %s", dsn, got, want)
		}
		if msg := runnable(cfg); msg != "" {
			t.Error(msg)
		}
	}
	// A lifetime without a jitter gets a jitter in proportion.
	if cfg, err := parseDSN("host=db pool_max_conn_lifetime=60s"); err != nil || cfg.MaxConnLifetimeJitter != 10*time.Second {
		t.Fatalf("jitter for a 60s lifetime: %v, %v", cfg, err)
	}
}

// TestConnectionLifetime: a connection older than pool_max_conn_lifetime
// is replaced at its next use, and the call on it succeeds.
func TestConnectionLifetime(t *testing.T) {
	s := openTest(t, newDB(t)+"&pool_max_conn_lifetime=300ms&pool_max_conn_lifetime_jitter=0s", WithMaxConns(1))
	ctx := context.Background()
	if _, err := s.Put(ctx, "k", []byte("v"), store.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	d0 := s.Stat().Dialled
	if d0 < 1 {
		t.Fatalf("Stat %+v after a call", s.Stat())
	}
	time.Sleep(400 * time.Millisecond)
	if _, err := s.Get(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	if st := s.Stat(); st.Dialled <= d0 || st.MaxConns != 1 {
		t.Fatalf("the connection outlived its lifetime: %+v (dialled %d before)", st, d0)
	}
}

// TestIdleConnectionsClosed: the health check closes connections idle
// longer than pool_max_conn_idle_time, with no call to prompt it.
func TestIdleConnectionsClosed(t *testing.T) {
	s := openTest(t, newDB(t)+"&pool_max_conn_idle_time=100ms&pool_health_check_period=50ms", WithMaxConns(4))
	ctx := context.Background()
	busy(t, s, 4)
	deadline := time.Now().Add(5 * time.Second)
	for st := s.Stat(); st.Idle+st.InUse > 0 && time.Now().Before(deadline); st = s.Stat() {
		time.Sleep(20 * time.Millisecond)
	}
	if st := s.Stat(); st.Idle != 0 || st.InUse != 0 {
		t.Fatalf("idle connections left open: %+v", st)
	}
	if _, err := s.Get(ctx, "w0/0"); err != nil {
		t.Fatal(err)
	}
}

// busy runs n concurrent writers for a moment, so the pool opens several
// connections.
func busy(t *testing.T, s *Store, n int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 10 {
				if _, err := s.Put(context.Background(), fmt.Sprintf("w%d/%d", w, i), []byte("v"), store.PutOptions{}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// TestRestartIdleConnections: after a server restart, connections that
// died while idle cost no failed call: each is pinged before use, dropped,
// and the call runs on a new one.
func TestRestartIdleConnections(t *testing.T) {
	ensureRunning(t)
	s := openTest(t, newDB(t), WithMaxConns(4))
	busy(t, s, 4)
	idleSince := time.Now()
	before := s.Stat()
	if before.Idle < 2 {
		t.Fatalf("want several idle connections before the restart: %+v", before)
	}
	if err := server(t).Stop(); err != nil {
		t.Fatal(err)
	}
	if err := server(t).Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(idleSince.Add(pingIdleAfter + 100*time.Millisecond)))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Every call succeeds at once, writes included (no retry there: a
	// write on a dead connection would fail).
	for i := range 2 * before.Idle {
		if _, err := s.Put(ctx, fmt.Sprintf("after/%d", i), []byte("v"), store.PutOptions{}); err != nil {
			t.Fatalf("Put %d after the restart: %v", i, err)
		}
		if _, err := s.Get(ctx, fmt.Sprintf("w%d/0", i%4)); err != nil {
			t.Fatalf("Get %d after the restart: %v", i, err)
		}
	}
	if st := s.Stat(); st.Dialled <= before.Dialled {
		t.Fatalf("no new connection after the restart: %+v, before %+v", st, before)
	}
}
