package redis_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/avonzt/avon/core/cache"
	"github.com/avonzt/avon/core/cache/redis"
	"github.com/avonzt/avon/internal/testsvc/redistest"
)

// Bounds of the fault tests. callDeadline is the caller's deadline during
// an outage; a call must end within it plus slack (no hang past the
// deadline), and must fail, not pretend success.
const (
	callDeadline = 2 * time.Second
	slack        = 2 * time.Second
	recoverWait  = 10 * time.Second
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

// outageCall runs one call with callDeadline and checks that it failed in
// time with ErrUnavailable (or the deadline) and a message naming addr.
func outageCall(t *testing.T, addr, name string, call func(ctx context.Context) error) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), callDeadline)
	defer cancel()
	start := time.Now()
	err := call(ctx)
	took := time.Since(start)
	if err == nil {
		t.Fatalf("%s during the outage succeeded", name)
	}
	if !errors.Is(err, cache.ErrUnavailable) && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("%s: %v; want ErrUnavailable or the deadline", name, err)
	}
	if !strings.Contains(err.Error(), "redis "+addr) {
		t.Fatalf("%s: error %q does not name the server %s", name, err, addr)
	}
	if took > callDeadline+slack {
		t.Fatalf("%s took %v, past its %v deadline", name, took, callDeadline)
	}
	t.Logf("%s failed after %v: %v", name, took.Round(time.Millisecond), err)
	return err
}

// outageCalls checks the fail-closed calls during an outage.
func outageCalls(t *testing.T, c *redis.Cache, addr string) {
	t.Helper()
	outageCall(t, addr, "GetSession", func(ctx context.Context) error {
		_, _, err := c.GetSession(ctx, "s")
		return err
	})
	outageCall(t, addr, "MarkUsed", func(ctx context.Context) error {
		first, err := c.MarkUsed(ctx, "jti", "during-outage", time.Minute)
		if first {
			t.Errorf("MarkUsed reported first during the outage (must fail closed)")
		}
		return err
	})
	outageCall(t, addr, "ConsumeToken", func(ctx context.Context) error {
		v, err := c.ConsumeToken(ctx, "enroll", "t")
		if v != nil {
			t.Errorf("ConsumeToken returned a value during the outage")
		}
		return err
	})
	outageCall(t, addr, "Ping", c.Ping)
}

// receiveAfter publishes on pub until sub receives one of those messages,
// within recoverWait: delivery is at most once, so messages published
// before the subscription is back are lost and that is allowed.
func receiveAfter(t *testing.T, pub cache.Cache, sub cache.Subscription, tag string) {
	t.Helper()
	deadline := time.Now().Add(recoverWait)
	for i := 0; time.Now().Before(deadline); i++ {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = pub.Publish(ctx, "ev", fmt.Appendf(nil, "%s-%d", tag, i))
		cancel()
		select {
		case m, ok := <-sub.C():
			if !ok {
				t.Fatalf("subscription closed during the outage")
			}
			if strings.HasPrefix(string(m.Payload), tag+"-") {
				return
			}
		case <-time.After(100 * time.Millisecond):
		}
	}
	t.Fatalf("subscription received nothing published %s within %v", tag, recoverWait)
}

func wantGap(t *testing.T, sub cache.Subscription) {
	t.Helper()
	select {
	case <-sub.Gaps():
	case <-time.After(recoverWait):
		t.Fatalf("no gap signalled after the connection was re-established")
	}
}

// eventually polls cond until it holds, within recoverWait.
func eventually(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(recoverWait)
	var err error
	for {
		if err = cond(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v; last error %v", what, recoverWait, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func seed(t *testing.T, c cache.Cache) {
	t.Helper()
	ctx := context.Background()
	if err := c.PutSession(ctx, "s", []byte("v"), time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := c.PutToken(ctx, "enroll", "t", []byte("tok"), time.Hour); err != nil {
		t.Fatal(err)
	}
}

func TestPausedServer(t *testing.T) {
	srv := redistest.Start(t)
	addr := srv.Addr()
	c := open(t, redis.Options{Addr: addr})
	peer := open(t, redis.Options{Addr: addr})
	seed(t, c)
	sub, err := c.Subscribe(context.Background(), "ev")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()

	if err := srv.Pause(); err != nil {
		t.Fatal(err)
	}
	outageCalls(t, c, addr)

	// Rate limits fail open, counted and logged.
	logs := &syncBuffer{}
	log := hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Warn})
	before := cache.FailOpenCount(cache.ReasonUnavailable) + cache.FailOpenCount(cache.ReasonContext)
	ctx, cancel := context.WithTimeout(context.Background(), callDeadline)
	d := cache.AllowFailOpen(ctx, c, log, "login:alice", 1, time.Minute)
	cancel()
	if !d.Allowed {
		t.Fatalf("AllowFailOpen during the outage = %+v; want allowed", d)
	}
	after := cache.FailOpenCount(cache.ReasonUnavailable) + cache.FailOpenCount(cache.ReasonContext)
	if after != before+1 {
		t.Fatalf("fail-open counter went from %v to %v; want +1", before, after)
	}
	if out := logs.String(); !strings.Contains(out, "rate limit not enforced") || !strings.Contains(out, addr) {
		t.Fatalf("fail-open warning missing or does not name the error: %q", out)
	}

	if err := srv.Resume(); err != nil {
		t.Fatal(err)
	}
	// The same client works again; nothing was lost.
	eventually(t, "GetSession after resume", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), callDeadline)
		defer cancel()
		v, _, err := c.GetSession(ctx, "s")
		if err == nil && string(v) != "v" {
			t.Fatalf("GetSession after resume = %q", v)
		}
		return err
	})
	ctx, cancel = context.WithTimeout(context.Background(), callDeadline)
	defer cancel()
	if first, err := c.MarkUsed(ctx, "jti", "after-resume", time.Minute); err != nil || !first {
		t.Fatalf("MarkUsed after resume = %v, %v", first, err)
	}
	if v, err := c.ConsumeToken(ctx, "enroll", "t"); err != nil || string(v) != "tok" {
		t.Fatalf("ConsumeToken after resume = %q, %v", v, err)
	}
	if d, err := c.Allow(ctx, "login:alice", 1, time.Minute); err != nil || !d.Allowed {
		t.Fatalf("Allow after resume = %+v, %v (the failed-open call must not have been counted)", d, err)
	}
	receiveAfter(t, peer, sub, "after-resume")
}

func TestStoppedAndRestartedServer(t *testing.T) {
	srv := redistest.Start(t)
	addr := srv.Addr()
	c := open(t, redis.Options{Addr: addr})
	peer := open(t, redis.Options{Addr: addr})
	seed(t, c)
	sub, err := c.Subscribe(context.Background(), "ev")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()

	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	// A stopped server refuses connections: calls fail with
	// ErrUnavailable, not by running into the caller's deadline.
	for _, name := range []string{"GetSession", "MarkUsed", "Ping"} {
		err := outageCall(t, addr, name, func(ctx context.Context) error {
			switch name {
			case "GetSession":
				_, _, err := c.GetSession(ctx, "s")
				return err
			case "MarkUsed":
				first, err := c.MarkUsed(ctx, "jti", "x", time.Minute)
				if first {
					t.Errorf("MarkUsed reported first with the server stopped")
				}
				return err
			}
			return c.Ping(ctx)
		})
		if !errors.Is(err, cache.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("%s with the server stopped: %v; want ErrUnavailable before the deadline", name, err)
		}
	}
	if d := cache.AllowFailOpen(context.Background(), c, nil, "k", 1, time.Minute); !d.Allowed {
		t.Fatalf("AllowFailOpen with the server stopped = %+v", d)
	}

	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	// The clients reconnect by themselves.
	eventually(t, "Ping after restart", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), callDeadline)
		defer cancel()
		return c.Ping(ctx)
	})
	ctx, cancel := context.WithTimeout(context.Background(), callDeadline)
	defer cancel()
	// No persistence: the restarted server is empty, and says so.
	if _, _, err := c.GetSession(ctx, "s"); !errors.Is(err, cache.ErrNotFound) {
		t.Fatalf("GetSession after restart = %v; want ErrNotFound", err)
	}
	if first, err := c.MarkUsed(ctx, "jti", "after-restart", time.Minute); err != nil || !first {
		t.Fatalf("MarkUsed after restart = %v, %v", first, err)
	}
	wantGap(t, sub)
	receiveAfter(t, peer, sub, "after-restart")
}

func TestSubscribeWhileDown(t *testing.T) {
	srv := redistest.Start(t)
	c := open(t, redis.Options{Addr: srv.Addr()})
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), callDeadline)
	defer cancel()
	if sub, err := c.Subscribe(ctx, "ev"); !errors.Is(err, cache.ErrUnavailable) {
		if sub != nil {
			_ = sub.Close()
		}
		t.Fatalf("Subscribe with the server stopped = %v; want ErrUnavailable", err)
	}
}

func TestCloseDuringOutage(t *testing.T) {
	// Close must not hang on a subscription that is reconnecting.
	srv := redistest.Start(t)
	c := open(t, redis.Options{Addr: srv.Addr(), HealthInterval: 100 * time.Millisecond})
	sub, err := c.Subscribe(context.Background(), "ev")
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Pause(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // let the health check notice
	done := make(chan struct{})
	go func() { _ = c.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(recoverWait):
		t.Fatalf("Close hung for %v with the server paused", recoverWait)
	}
	if _, ok := <-sub.C(); ok {
		t.Fatalf("subscription delivered after Close")
	}
}
