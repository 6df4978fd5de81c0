package pulse_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/avonzt/avon/core/cache"
	"github.com/avonzt/avon/core/cache/memcache"
	"github.com/avonzt/avon/core/cache/redis"
	"github.com/avonzt/avon/core/events"
	"github.com/avonzt/avon/core/pulse"
	"github.com/avonzt/avon/internal/testsvc/redistest"
)

// within bounds every wait of these tests: event delivery is asynchronous,
// and a lost event must fail the test, not hang it.
const within = 10 * time.Second

var bg = context.Background()

type termination struct {
	id     pulse.ID
	reason string
}

// terminator records terminations; while hold is set, each Terminate waits
// for a value on release.
type terminator struct {
	got     chan termination
	hold    atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func newTerminator() *terminator {
	return &terminator{got: make(chan termination, 1024), entered: make(chan struct{}, 1), release: make(chan struct{})}
}

func (f *terminator) Terminate(id pulse.ID, reason string) {
	if f.hold.Load() {
		f.entered <- struct{}{}
		<-f.release
	}
	f.got <- termination{id, reason}
}

// until collects terminations up to and including the one of marker.
func (f *terminator) until(t *testing.T, marker pulse.ID) []termination {
	t.Helper()
	var out []termination
	deadline := time.After(within)
	for {
		select {
		case tm := <-f.got:
			out = append(out, tm)
			if tm.id == marker {
				return out
			}
		case <-deadline:
			t.Fatalf("marker %s not terminated; got %v", marker, out)
		}
	}
}

// resyncs counts Resync calls and signals each.
type resyncs struct {
	calls atomic.Int64
	c     chan struct{}
	fail  atomic.Int64 // fail this many calls first
}

func newResyncs() *resyncs { return &resyncs{c: make(chan struct{}, 1024)} }

func (r *resyncs) resync(ctx context.Context) error {
	r.calls.Add(1)
	defer func() { r.c <- struct{}{} }()
	if r.fail.Add(-1) >= 0 {
		return errors.New("store unavailable")
	}
	return nil
}

func (r *resyncs) wait(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(within)
	for int(r.calls.Load()) < n {
		select {
		case <-r.c:
		case <-deadline:
			t.Fatalf("%d resyncs, want %d", r.calls.Load(), n)
		}
	}
}

type fixture struct {
	tr   *pulse.Tracker
	term *terminator
	rs   *resyncs
	rev  *pulse.Revocations
	pub  *events.Bus
}

// start runs a Revocations over sub (the gateway replica's cache) with
// events published on pub (another replica's, or the same); it waits for
// the initial resync.
func start(t *testing.T, pub, sub cache.Cache, cfg pulse.RevocationsConfig) *fixture {
	t.Helper()
	f := &fixture{tr: newTracker(t, pulse.Config{}), term: newTerminator(), rs: newResyncs(), pub: events.New(pub, "replica-a", nil)}
	cfg.Bus, cfg.Tracker, cfg.Terminator, cfg.Resync = events.New(sub, "replica-b", nil), f.tr, f.term, f.rs.resync
	var err error
	if f.rev, err = pulse.NewRevocations(cfg); err != nil {
		t.Fatal(err)
	}
	if err := f.rev.Start(bg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		close(f.term.release)
		if err := f.rev.Stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	f.rs.wait(t, 1)
	return f
}

func startMem(t *testing.T, cfg pulse.RevocationsConfig) *fixture {
	be := memcache.NewBackend(memcache.Options{})
	return start(t, be.Open(), be.Open(), cfg)
}

func (f *fixture) publish(t *testing.T, kind events.Kind, subject string, fields map[string]string) {
	t.Helper()
	if _, err := f.pub.Publish(bg, kind, subject, fields); err != nil {
		t.Fatal(err)
	}
}

// sessions adds: 1, 2 agent-a with serial 0a1b; 3 agent-a with serial
// 0c0d (a renewed certificate); 4 agent-b with 0e0f; 5 agent-c with 0a1c.
func (f *fixture) sessions(t *testing.T) {
	for _, in := range []pulse.SessionInfo{
		info(1, "agent-a", "0A:1B"), info(2, "agent-a", "0a1b"), info(3, "agent-a", "0c0d"),
		info(4, "agent-b", "0e0f"), info(5, "agent-c", "0a1c"),
	} {
		add(t, f.tr, in)
	}
}

func ids(ts []termination) []pulse.ID {
	var out []pulse.ID
	for _, tm := range ts {
		out = append(out, tm.id)
	}
	slices.SortFunc(out, func(a, b pulse.ID) int { return strings.Compare(a.String(), b.String()) })
	return out
}

func tracked(t *testing.T, tr *pulse.Tracker, want ...pulse.ID) {
	t.Helper()
	got := tr.Sessions()
	slices.SortFunc(got, func(a, b pulse.ID) int { return strings.Compare(a.String(), b.String()) })
	if !slices.Equal(got, want) {
		t.Fatalf("tracked %v, want %v", got, want)
	}
}

// TestRevokedSerialEndsExactlyItsSessions: a revocation ends the sessions of
// that certificate, whatever spelling of the serial the event uses, and no
// other session of the same agent; a SessionKilled published after it is a
// marker that proves nothing else was terminated in between.
func TestRevokedSerialEndsExactlyItsSessions(t *testing.T) {
	f := startMem(t, pulse.RevocationsConfig{})
	f.sessions(t)
	f.publish(t, events.CertRevoked, "issuing-1/00000000000000000000000000000a1b", map[string]string{"reason": "keyCompromise"})
	f.publish(t, events.SessionKilled, sid(4).String(), nil)
	got := f.term.until(t, sid(4))
	if want := []pulse.ID{sid(1), sid(2), sid(4)}; !slices.Equal(ids(got), want) {
		t.Fatalf("terminated %v, want %v", ids(got), want)
	}
	for _, tm := range got {
		want := "certificate revoked: keyCompromise"
		if tm.id == sid(4) {
			want = "session killed by an operator"
		}
		if tm.reason != want {
			t.Errorf("%s: reason %q", tm.id, tm.reason)
		}
	}
	tracked(t, f.tr, sid(3), sid(5))
	// A repeat (another replica, a resync) finds nothing left to end.
	f.publish(t, events.CertRevoked, "issuing-1/0A1B", nil)
	f.publish(t, events.SessionKilled, sid(5).String(), nil)
	if got := f.term.until(t, sid(5)); len(got) != 1 {
		t.Fatalf("repeat terminated %v", ids(got))
	}
	if st := f.rev.Stats(); st.Events != 4 || st.Terminated != 4 || st.Ignored != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestAgentDisabledEndsEveryAgentSession(t *testing.T) {
	f := startMem(t, pulse.RevocationsConfig{})
	f.sessions(t)
	f.publish(t, events.AgentDisabled, "agent-a", map[string]string{"reason": strings.Repeat("é", 200)})
	f.publish(t, events.SessionKilled, sid(5).String(), nil)
	got := f.term.until(t, sid(5))
	if want := []pulse.ID{sid(1), sid(2), sid(3), sid(5)}; !slices.Equal(ids(got), want) {
		t.Fatalf("terminated %v, want %v", ids(got), want)
	}
	for _, tm := range got[:3] {
		if !strings.HasPrefix(tm.reason, "agent disabled: é") || len(tm.reason) > 256 || !strings.HasSuffix(tm.reason, "é") {
			t.Fatalf("reason %d bytes %q", len(tm.reason), tm.reason)
		}
	}
	tracked(t, f.tr, sid(4))
}

func TestEventsNamingNothing(t *testing.T) {
	f := startMem(t, pulse.RevocationsConfig{})
	f.sessions(t)
	for _, e := range []struct {
		kind    events.Kind
		subject string
	}{
		{events.CertRevoked, "issuing-1/not-a-serial"},
		{events.CertRevoked, "issuing-1/"},
		{events.SessionKilled, "sess-1"},
		{events.SessionKilled, strings.Repeat("z", 32)},
	} {
		f.publish(t, e.kind, e.subject, nil)
	}
	f.publish(t, events.AgentDisabled, "agent-unknown", nil) // well formed, no session
	f.publish(t, events.PolicyChanged, "default", nil)       // not subscribed
	f.publish(t, events.SessionKilled, sid(4).String(), nil)
	if got := f.term.until(t, sid(4)); len(got) != 1 {
		t.Fatalf("terminated %v", ids(got))
	}
	if st := f.rev.Stats(); st.Ignored != 4 || st.Events != 6 || st.Terminated != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// TestGapResyncs: while the Terminator is slow, events pile up until the
// subscription drops some; the gap makes Revocations call Resync.
func TestGapResyncs(t *testing.T) {
	f := startMem(t, pulse.RevocationsConfig{})
	f.sessions(t)
	f.term.hold.Store(true)
	f.publish(t, events.SessionKilled, sid(1).String(), nil)
	select { // the loop is now blocked in Terminate
	case <-f.term.entered:
	case <-time.After(within):
		t.Fatal("no termination began")
	}
	for i := range 400 {
		f.publish(t, events.AgentDisabled, fmt.Sprintf("agent-x%d", i), nil)
	}
	f.term.hold.Store(false)
	f.term.release <- struct{}{}
	f.rs.wait(t, 2)
	if st := f.rev.Stats(); st.Gaps == 0 || st.Resyncs < 2 {
		t.Fatalf("stats %+v", st)
	}
	// Still working after the gap. Events published while the backlog
	// drains may be dropped too (at most once), so publish until one lands.
	if tm := <-f.term.got; tm.id != sid(1) {
		t.Fatalf("terminated %v", tm)
	}
	f.publishUntil(t, events.SessionKilled, sid(2).String(), sid(2))
}

// publishUntil publishes an event until the Terminator sees want.
func (f *fixture) publishUntil(t *testing.T, kind events.Kind, subject string, want pulse.ID) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		_, err := f.pub.Publish(bg, kind, subject, nil)
		if err == nil {
			select {
			case tm := <-f.term.got:
				if tm.id != want {
					t.Fatalf("terminated %v, want %v", tm.id, want)
				}
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s %s: no termination (last publish error %v)", kind, subject, err)
		}
	}
}

func TestResyncRetried(t *testing.T) {
	be := memcache.NewBackend(memcache.Options{})
	rs := newResyncs()
	rs.fail.Store(2)
	rev, err := pulse.NewRevocations(pulse.RevocationsConfig{
		Bus: events.New(be.Open(), "b", nil), Tracker: newTracker(t, pulse.Config{}), Terminator: newTerminator(),
		Resync: rs.resync, ResyncRetry: time.Millisecond, MaxResyncRetry: 4 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := rev.Start(bg); err != nil {
		t.Fatal(err)
	}
	defer rev.Stop()
	rs.wait(t, 3)
	deadline := time.Now().Add(within)
	for rev.Stats().Resyncs != 1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if st := rev.Stats(); st.ResyncFailures != 2 || st.Resyncs != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// TestSubscriptionClosed: when the cache ends the subscription, Run returns
// ErrSubscriptionClosed for the owner to restart.
func TestSubscriptionClosed(t *testing.T) {
	be := memcache.NewBackend(memcache.Options{})
	view := be.Open()
	rev, err := pulse.NewRevocations(pulse.RevocationsConfig{
		Bus: events.New(view, "b", nil), Tracker: newTracker(t, pulse.Config{}), Terminator: newTerminator(),
		Resync: func(context.Context) error { return nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- rev.Run(bg) }()
	// Close the view once the subscription exists: a published event
	// reaches it only then. Publishing on the backend's other view is
	// harmless before.
	pub := events.New(be.Open(), "a", nil)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	deadline := time.After(within)
	for rev.Stats().Events == 0 {
		if _, err := pub.Publish(bg, events.AgentDisabled, "nobody", nil); err != nil {
			t.Fatal(err)
		}
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatal("no event reached the subscription")
		}
	}
	_ = view.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, pulse.ErrSubscriptionClosed) {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(within):
		t.Fatal("run did not return after the subscription closed")
	}
	if err := rev.Stop(); !errors.Is(err, pulse.ErrSubscriptionClosed) {
		t.Fatalf("stop after the loop ended: %v", err)
	}
}

func TestLifecycle(t *testing.T) {
	blocking := func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }
	mk := func(resync pulse.Resync) *pulse.Revocations {
		rev, err := pulse.NewRevocations(pulse.RevocationsConfig{
			Bus: events.New(memcache.New(memcache.Options{}), "b", nil), Tracker: newTracker(t, pulse.Config{}),
			Terminator: newTerminator(), Resync: resync,
		})
		if err != nil {
			t.Fatal(err)
		}
		return rev
	}
	before := runtime.NumGoroutine()
	// A Resync in progress is cancelled by Stop.
	rev := mk(blocking)
	if err := rev.Start(bg); err != nil {
		t.Fatal(err)
	}
	if err := rev.Start(bg); !errors.Is(err, pulse.ErrStarted) {
		t.Fatalf("second start: %v", err)
	}
	if err := rev.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := rev.Stop(); err != nil {
		t.Fatalf("second stop: %v", err)
	}
	if st := rev.Stats(); st.ResyncFailures != 0 {
		t.Fatalf("a cancelled resync counted as failed: %+v", st)
	}
	// Stop before Start: it never runs.
	rev = mk(blocking)
	if err := rev.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := rev.Start(bg); !errors.Is(err, pulse.ErrStarted) {
		t.Fatalf("start after stop: %v", err)
	}
	// Run ends with its context.
	running := make(chan struct{})
	rev = mk(func(context.Context) error { close(running); return nil })
	ctx, cancel := context.WithCancel(bg)
	var wg sync.WaitGroup
	wg.Add(1)
	var runErr error
	go func() { defer wg.Done(); runErr = rev.Run(ctx) }()
	<-running
	cancel()
	wg.Wait()
	if runErr != nil {
		t.Fatalf("run after cancel: %v", runErr)
	}
	<-rev.Done()

	deadline := time.Now().Add(within)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d goroutines after stop, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}

func TestNewRevocationsRefusals(t *testing.T) {
	bus := events.New(memcache.New(memcache.Options{}), "b", nil)
	tr := newTracker(t, pulse.Config{})
	ok := func(context.Context) error { return nil }
	for name, cfg := range map[string]pulse.RevocationsConfig{
		"no bus":        {Tracker: tr, Terminator: newTerminator(), Resync: ok},
		"no tracker":    {Bus: bus, Terminator: newTerminator(), Resync: ok},
		"no terminator": {Bus: bus, Tracker: tr, Resync: ok},
		"no resync":     {Bus: bus, Tracker: tr, Terminator: newTerminator()},
	} {
		if _, err := pulse.NewRevocations(cfg); !errors.Is(err, pulse.ErrInvalidArgument) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestAcrossRedis: a revocation published by one core replica ends the
// sessions a gateway on another replica tracks; a Redis restart is a gap
// that triggers a resync, and events flow again afterwards.
func TestAcrossRedis(t *testing.T) {
	rd := redistest.Start(t)
	open := func() cache.Cache {
		c, err := redis.Open(bg, redis.Options{Addr: rd.Addr()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	f := start(t, open(), open(), pulse.RevocationsConfig{})
	f.sessions(t)
	f.publish(t, events.CertRevoked, "issuing-1/0c0d", map[string]string{"reason": "superseded"})
	f.publish(t, events.SessionKilled, sid(5).String(), nil)
	if got := ids(f.term.until(t, sid(5))); !slices.Equal(got, []pulse.ID{sid(3), sid(5)}) {
		t.Fatalf("terminated %v", got)
	}

	if err := rd.Restart(); err != nil {
		t.Fatal(err)
	}
	f.rs.wait(t, 2)
	// Publish until the re-established subscription delivers.
	f.publishUntil(t, events.AgentDisabled, "agent-b", sid(4))
	tracked(t, f.tr, sid(1), sid(2))
}
