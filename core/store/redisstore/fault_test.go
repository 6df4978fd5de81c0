package redisstore

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/avonzt/avon/core/store"
	"github.com/avonzt/avon/internal/testsvc/redistest"
)

// Bounds of the fault tests. A call during an outage must end within its
// deadline plus slack (a liveness bound, not a speed goal) and must fail,
// not pretend success.
const (
	callDeadline = 2 * time.Second
	slack        = 2 * time.Second
	recoverWait  = 10 * time.Second
)

type faultCall struct {
	name  string
	write bool
	call  func(ctx context.Context) error
}

func faultCalls(s *Store) []faultCall {
	return []faultCall{
		{"Put", true, func(ctx context.Context) error {
			_, err := s.Put(ctx, "during", []byte("outage"), store.PutOptions{})
			return err
		}},
		{"checked Put", true, func(ctx context.Context) error {
			_, err := s.Put(ctx, "during-cas", []byte("outage"), store.PutOptions{Check: true})
			return err
		}},
		{"Delete", true, func(ctx context.Context) error { return s.Delete(ctx, "absent", store.DeleteOptions{}) }},
		{"Get", false, func(ctx context.Context) error { _, err := s.Get(ctx, "before"); return err }},
		{"List", false, func(ctx context.Context) error { _, err := s.List(ctx, store.ListOptions{}); return err }},
		{"Ping", false, s.Ping},
	}
}

// outageCall runs c with callDeadline and checks it failed in time with
// ErrUnavailable or the deadline, naming the server, and for a write with
// the given note on its outcome.
func outageCall(t *testing.T, addr string, c faultCall, writeNote string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), callDeadline)
	defer cancel()
	start := time.Now()
	err := c.call(ctx)
	took := time.Since(start)
	switch {
	case err == nil:
		t.Fatalf("%s during the outage succeeded", c.name)
	case !errors.Is(err, store.ErrUnavailable) && !errors.Is(err, context.DeadlineExceeded):
		t.Fatalf("%s: %v; want ErrUnavailable or the deadline", c.name, err)
	case !strings.Contains(err.Error(), addr):
		t.Fatalf("%s: error %q does not name the server %s", c.name, err, addr)
	case took > callDeadline+slack:
		t.Fatalf("%s took %v, past its %v deadline", c.name, took, callDeadline)
	case c.write && !strings.Contains(err.Error(), writeNote):
		t.Fatalf("%s: error %q does not say %q", c.name, err, writeNote)
	}
	t.Logf("%s failed after %v: %v", c.name, took.Round(time.Millisecond), err)
	return err
}

// eventually polls cond until it holds, within recoverWait.
func eventually(t *testing.T, what string, cond func(ctx context.Context) error) {
	t.Helper()
	deadline := time.Now().Add(recoverWait)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), callDeadline)
		err := cond(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v; last error %v", what, recoverWait, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestPausedServer: with the server frozen (SIGSTOP), calls fail by their
// deadline (or by ReadTimeout without one) with a clear error, and work
// again after SIGCONT on the same store.
func TestPausedServer(t *testing.T) {
	srv := redistest.Start(t)
	addr := srv.Addr()
	s := openTest(t, Options{Addr: addr})
	short := openTest(t, Options{Addr: addr, KeyPrefix: uniquePrefix(), ReadTimeout: time.Second})
	ctx := context.Background()
	v1, err := s.Put(ctx, "before", []byte("v"), store.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Pause(); err != nil {
		t.Fatal(err)
	}
	for _, c := range faultCalls(s) {
		err := outageCall(t, addr, c, "outcome unknown")
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("%s: %v; want the caller's deadline (ReadTimeout is longer)", c.name, err)
		}
	}
	// Without a deadline, ReadTimeout bounds the call.
	start := time.Now()
	err = short.Ping(context.Background())
	if !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), "i/o timeout") || time.Since(start) > time.Second+slack {
		t.Fatalf("Ping without a deadline on a paused server: %v after %v; want ErrUnavailable (i/o timeout) after about 1s", err, time.Since(start))
	}

	if err := srv.Resume(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "Get after resume", func(ctx context.Context) error {
		e, err := s.Get(ctx, "before")
		if err == nil && e.Version != v1 {
			t.Fatalf("Get after resume = %+v", e)
		}
		return err
	})
	v2, err := s.Put(ctx, "after", []byte("v"), store.PutOptions{})
	if err != nil || v2 <= v1 {
		t.Fatalf("Put after resume = %d, %v", v2, err)
	}
	// The writes whose outcome was unknown are there whole or not at all
	// (the server ran them when it woke up).
	for _, k := range []string{"during", "during-cas"} {
		switch e, err := s.Get(ctx, k); {
		case errors.Is(err, store.ErrNotFound):
			t.Logf("%s: not written", k)
		case err != nil:
			t.Fatal(err)
		case string(e.Value) != "outage" || e.Version <= v1:
			t.Fatalf("unknown-outcome Put left %s=%q@%d", k, e.Value, e.Version)
		default:
			t.Logf("%s: written at %d", k, e.Version)
		}
	}
}

// TestStoppedAndRestartedServer: a stopped server refuses connections, so
// calls fail at once with ErrUnavailable (writes: nothing was written);
// the store reconnects by itself to the restarted server.
func TestStoppedAndRestartedServer(t *testing.T) {
	srv := redistest.Start(t)
	addr := srv.Addr()
	s := openTest(t, Options{Addr: addr})
	ctx := context.Background()
	if _, err := s.Put(ctx, "before", []byte("v"), store.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, c := range faultCalls(s) {
		err := outageCall(t, addr, c, "nothing was written")
		if errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "connection refused") {
			t.Fatalf("%s with the server stopped: %v; want ErrUnavailable (connection refused) before the deadline", c.name, err)
		}
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "Ping after restart", s.Ping)
	// This server keeps nothing across a restart (redistest runs it
	// without persistence), which is what RequireDurable refuses; the
	// store itself works again without reopening.
	if _, err := s.Get(ctx, "before"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get after restart = %v; want ErrNotFound from the empty server", err)
	}
	if _, err := s.Put(ctx, "after", []byte("v"), store.PutOptions{Check: true}); err != nil {
		t.Fatalf("Put after restart: %v", err)
	}
}

// TestKilledAndRestartedDurableServer: the same store, never reopened,
// finds every acknowledged write once an AOF server killed with SIGKILL is
// back, and versions continue above them.
func TestKilledAndRestartedDurableServer(t *testing.T) {
	p := startProc(t, aofArgs...)
	s := openTest(t, Options{Addr: p.Addr(), RequireDurable: true})
	ctx := context.Background()
	v1, err := s.Put(ctx, "k", []byte("v"), store.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.kill9()
	for _, c := range faultCalls(s) {
		outageCall(t, p.Addr(), c, "nothing was written")
	}
	p.restart()
	eventually(t, "Get after restart", func(ctx context.Context) error {
		e, err := s.Get(ctx, "k")
		if err == nil && (e.Version != v1 || string(e.Value) != "v") {
			t.Fatalf("Get after restart = %+v, want v@%d", e, v1)
		}
		return err
	})
	v2, err := s.Put(ctx, "k", []byte("w"), store.PutOptions{Check: true, Version: v1})
	if err != nil || v2 <= v1 {
		t.Fatalf("CAS after restart = %d, %v", v2, err)
	}
}

// TestCloseDuringOutage: a call in flight on a paused server ends with
// ErrClosed when the store is closed, and Close does not hang.
func TestCloseDuringOutage(t *testing.T) {
	srv := redistest.Start(t)
	s, err := Open(context.Background(), Options{Addr: srv.Addr(), ReadTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := srv.Pause(); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := s.Get(context.Background(), "k")
		errc <- err
	}()
	time.Sleep(200 * time.Millisecond) // let the Get reach the server
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(recoverWait):
		t.Fatalf("Close hung for %v with a call in flight", recoverWait)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, store.ErrClosed) {
			t.Fatalf("call in flight at Close: %v; want ErrClosed", err)
		}
	case <-time.After(recoverWait):
		t.Fatalf("call in flight did not end within %v of Close", recoverWait)
	}
}
