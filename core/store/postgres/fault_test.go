package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/avonzt/avon/core/store"
)

// Fault tests act on the package's shared server: they pause it, or stop
// and restart it, and always leave it running (t.Cleanup) for the tests
// that follow.

const (
	callDeadline = 2 * time.Second
	// slack is what a call may take past its deadline before the test
	// calls it a hang (generous: this is a liveness bound, not a speed
	// goal).
	slack       = 3 * time.Second
	recoverTime = 10 * time.Second
)

// ensureRunning restarts the shared server at the end of a fault test,
// whatever state the test left it in.
func ensureRunning(t *testing.T) {
	t.Helper()
	s := server(t)
	t.Cleanup(func() {
		_ = s.Resume()
		_ = s.Start() // fails harmlessly when already running
	})
}

// waitReady polls Ping until the store answers, at most recoverTime.
func waitReady(t *testing.T, s *Store) {
	t.Helper()
	deadline := time.Now().Add(recoverTime)
	var err error
	for attempt := 0; time.Now().Before(deadline); attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err = s.Ping(ctx)
		cancel()
		if err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("store did not reconnect within %v: %v", recoverTime, err)
}

// TestPausedServer: with the server frozen (SIGSTOP), calls fail by their
// deadline with a clear error, and work again after SIGCONT without
// reopening the store.
func TestPausedServer(t *testing.T) {
	ensureRunning(t)
	s := openTest(t, newDB(t), WithMaxConns(4))
	ctx := context.Background()
	v1, err := s.Put(ctx, "before", []byte("v"), store.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := server(t).Pause(); err != nil {
		t.Fatal(err)
	}

	calls := []struct {
		name  string
		write bool
		call  func(ctx context.Context) error
	}{
		{"Put", true, func(ctx context.Context) error {
			_, err := s.Put(ctx, "during", []byte("paused"), store.PutOptions{})
			return err
		}},
		{"Get", false, func(ctx context.Context) error { _, err := s.Get(ctx, "before"); return err }},
		{"List", false, func(ctx context.Context) error { _, err := s.List(ctx, store.ListOptions{}); return err }},
		{"Ping", false, func(ctx context.Context) error { return s.Ping(ctx) }},
	}
	for _, c := range calls {
		cctx, cancel := context.WithTimeout(ctx, callDeadline)
		start := time.Now()
		err := c.call(cctx)
		took := time.Since(start)
		cancel()
		if err == nil {
			t.Fatalf("%s succeeded against a paused server", c.name)
		}
		if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("%s: want DeadlineExceeded or ErrUnavailable, got %v", c.name, err)
		}
		if took > callDeadline+slack {
			t.Fatalf("%s took %v with a %v deadline", c.name, took, callDeadline)
		}
		if c.write && !containsAll(err.Error(), server(t).Addr(), "outcome unknown") {
			t.Fatalf("%s: message names neither the server nor the unknown outcome: %v", c.name, err)
		}
		t.Logf("%s after %v: %v", c.name, took.Round(time.Millisecond), err)
	}

	if err := server(t).Resume(); err != nil {
		t.Fatal(err)
	}
	// The next calls work, on the same store.
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if e, err := s.Get(cctx, "before"); err != nil || e.Version != v1 {
		t.Fatalf("Get after Resume: %+v, %v", e, err)
	}
	v2, err := s.Put(cctx, "after", []byte("v"), store.PutOptions{})
	if err != nil || v2 <= v1 {
		t.Fatalf("Put after Resume: %d, %v", v2, err)
	}
	// The Put whose outcome was unknown is there whole or not at all.
	switch e, err := s.Get(cctx, "during"); {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		t.Fatal(err)
	case string(e.Value) != "paused" || e.Version <= v1:
		t.Fatalf("unknown-outcome Put left %q@%d", e.Value, e.Version)
	}
	if err := s.Ping(cctx); err != nil {
		t.Fatal(err)
	}
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// TestStoppedServer: a stopped server gives ErrUnavailable at once; once it
// is back the pool reconnects by itself and every acknowledged write is
// there with its version.
func TestStoppedServer(t *testing.T) {
	ensureRunning(t)
	s := openTest(t, newDB(t))
	ctx := context.Background()
	acked := map[string]int64{}
	for i := range 50 {
		k := fmt.Sprintf("k/%02d", i)
		v, err := s.Put(ctx, k, []byte("v-"+k), store.PutOptions{})
		if err != nil {
			t.Fatal(err)
		}
		acked[k] = v
	}
	if err := server(t).StopImmediate(); err != nil {
		t.Fatal(err)
	}
	for name, call := range map[string]func(ctx context.Context) error{
		"Put": func(ctx context.Context) error {
			_, err := s.Put(ctx, "down", nil, store.PutOptions{})
			return err
		},
		"Get":    func(ctx context.Context) error { _, err := s.Get(ctx, "k/00"); return err },
		"Delete": func(ctx context.Context) error { return s.Delete(ctx, "k/00", store.DeleteOptions{}) },
		"List":   func(ctx context.Context) error { _, err := s.List(ctx, store.ListOptions{}); return err },
		"Ping":   func(ctx context.Context) error { return s.Ping(ctx) },
	} {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := call(cctx)
		cancel()
		if !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("%s on a stopped server: want ErrUnavailable, got %v", name, err)
		}
		if !strings.Contains(err.Error(), server(t).Addr()) {
			t.Fatalf("%s: message does not name the server: %v", name, err)
		}
	}

	if err := server(t).Start(); err != nil {
		t.Fatal(err)
	}
	waitReady(t, s)
	// Every acknowledged write is there, and the Delete refused while the
	// server was down did not happen.
	var maxV int64
	for k, v := range acked {
		e, err := s.Get(ctx, k)
		if err != nil || e.Version != v || string(e.Value) != "v-"+k {
			t.Fatalf("acknowledged %s@%d after restart: %+v, %v", k, v, e, err)
		}
		maxV = max(maxV, v)
	}
	if v, err := s.Put(ctx, "after", nil, store.PutOptions{}); err != nil || v <= maxV {
		t.Fatalf("version after restart %d, acknowledged up to %d (%v)", v, maxV, err)
	}
}

// TestWritesDuringStop: writers keep going while the server is stopped
// under them (immediate mode, like a crash). After the restart every write
// they saw acknowledged is there with its version and value, and every
// write whose outcome was unknown is there whole or absent.
func TestWritesDuringStop(t *testing.T) {
	ensureRunning(t)
	s := openTest(t, newDB(t), WithMaxConns(8))
	type put struct {
		key, value string
		version    int64
	}
	var mu sync.Mutex
	var acked, unknown []put
	var counterAcked int // last acknowledged counter value
	stopWriters := make(chan struct{})
	var wg sync.WaitGroup
	const writers, perWriter = 4, 5000
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWriter {
				select {
				case <-stopWriters:
					return
				default:
				}
				p := put{key: fmt.Sprintf("w%d/%05d", w, i), value: fmt.Sprintf("value-%d-%d", w, i)}
				ctx, cancel := context.WithTimeout(context.Background(), callDeadline)
				v, err := s.Put(ctx, p.key, []byte(p.value), store.PutOptions{Check: true})
				cancel()
				mu.Lock()
				if err == nil {
					p.version = v
					acked = append(acked, p)
				} else {
					unknown = append(unknown, p)
				}
				mu.Unlock()
				if err != nil {
					time.Sleep(20 * time.Millisecond) // a down server: do not spin
				}
			}
		}()
	}
	// A CAS counter alongside.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range perWriter {
			select {
			case <-stopWriters:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), callDeadline)
			var ver int64
			n := 0
			e, err := s.Get(ctx, "counter")
			if err == nil {
				ver = e.Version
				n, _ = strconv.Atoi(string(e.Value))
			}
			if err == nil || errors.Is(err, store.ErrNotFound) {
				if _, err = s.Put(ctx, "counter", []byte(strconv.Itoa(n+1)), store.PutOptions{Check: true, Version: ver}); err == nil {
					mu.Lock()
					counterAcked = n + 1
					mu.Unlock()
				}
			}
			cancel()
			if err != nil {
				time.Sleep(20 * time.Millisecond)
			}
		}
	}()

	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	// Stop after a first batch of commits, with writes in flight.
	for deadline := time.Now().Add(20 * time.Second); count() < 200 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	before := count()
	if err := server(t).StopImmediate(); err != nil {
		close(stopWriters)
		wg.Wait()
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // writers now hit a stopped server
	if err := server(t).Start(); err != nil {
		close(stopWriters)
		wg.Wait()
		t.Fatal(err)
	}
	waitReady(t, s)
	time.Sleep(100 * time.Millisecond) // and write again for a moment
	close(stopWriters)
	wg.Wait()

	if before < 50 {
		t.Fatalf("only %d commits before the stop", before)
	}
	ctx := context.Background()
	for _, p := range acked {
		e, err := s.Get(ctx, p.key)
		if err != nil || e.Version != p.version || string(e.Value) != p.value {
			t.Fatalf("acknowledged %s=%q@%d lost or changed: %+v, %v", p.key, p.value, p.version, e, err)
		}
	}
	present := 0
	for _, p := range unknown {
		e, err := s.Get(ctx, p.key)
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			t.Fatal(err)
		case string(e.Value) != p.value || e.Version <= 0:
			t.Fatalf("unknown-outcome %s holds %q@%d", p.key, e.Value, e.Version)
		default:
			present++
		}
	}
	if len(unknown) == 0 {
		t.Fatal("no write failed: the stop did not happen under the writers")
	}
	if counterAcked > 0 {
		e, err := s.Get(ctx, "counter")
		n, _ := strconv.Atoi(string(e.Value))
		if err != nil || n < counterAcked {
			t.Fatalf("counter %d (%v), acknowledged up to %d", n, err, counterAcked)
		}
	}
	t.Logf("%d acknowledged writes verified (%d before the stop); %d failed writes, %d of them committed; counter %d", len(acked), before, len(unknown), present, counterAcked)
}
