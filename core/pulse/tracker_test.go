package pulse_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/avonzt/avon/core/pulse"
)

func TestTokenDerivation(t *testing.T) {
	tr := newTracker(t, pulse.Config{})
	first := add(t, tr, info(1, "agent-a", "0a1b"))
	if first != refToken(sid(1), 0) {
		t.Fatal("first token is not HMAC(secret, label || 0)")
	}
	if other := add(t, tr, info(2, "agent-a", "0a1b")); other == first {
		t.Fatal("two sessions share a first token")
	}
	d, err := tr.Beat(sid(1), beatMsg(7, first, t0), t0)
	if err != nil {
		t.Fatal(err)
	}
	if d.Ack.NextToken != refToken(sid(1), 7) || d.Ack.Seq != 7 || d.Ack.ServerTime != t0.UnixNano() || d.Ack.AddressToken != nil {
		t.Fatalf("ack %+v", d.Ack)
	}
}

// TestTokenSequence walks a session through pulses. Each step names the
// token it presents: "cur" (the last ack's), "prev" (the one before),
// "old" (two rotations back), "zero", or the first token "t0".
func TestTokenSequence(t *testing.T) {
	type step struct {
		seq  uint64
		tok  string
		want error
	}
	for _, c := range []struct {
		name  string
		steps []step
	}{
		{"rotation", []step{{1, "cur", nil}, {2, "cur", nil}, {3, "cur", nil}}},
		{"gaps in seq are fine", []step{{1, "cur", nil}, {10, "cur", nil}, {1 << 40, "cur", nil}}},
		{"replayed pulse refused", []step{{1, "cur", nil}, {1, "prev", pulse.ErrReplay}, {2, "cur", nil}}},
		{"replay with the current token", []step{{5, "cur", nil}, {5, "cur", pulse.ErrReplay}, {4, "cur", pulse.ErrReplay}}},
		{"seq 0 never accepted", []step{{0, "cur", pulse.ErrReplay}, {1, "cur", nil}}},
		{"lost ack tolerated once", []step{{1, "cur", nil}, {2, "prev", nil}, {3, "cur", nil}}},
		{"two lost acks in a row refused", []step{{1, "cur", nil}, {2, "prev", nil}, {3, "old", pulse.ErrToken}, {3, "cur", nil}}},
		{"previous token only once", []step{{1, "cur", nil}, {2, "prev", nil}, {3, "prev", pulse.ErrToken}}},
		{"lost ack again after a good pulse", []step{{1, "cur", nil}, {2, "prev", nil}, {3, "cur", nil}, {4, "prev", nil}}},
		{"no previous token before the first pulse", []step{{1, "zero", pulse.ErrToken}, {1, "cur", nil}}},
		{"tokens two rotations back refused", []step{{1, "cur", nil}, {2, "cur", nil}, {3, "t0", pulse.ErrToken}, {3, "cur", nil}}},
		{"garbage token", []step{{1, "garbage", pulse.ErrToken}, {1, "cur", nil}}},
		{"refusal changes nothing", []step{{1, "cur", nil}, {9, "garbage", pulse.ErrToken}, {2, "cur", nil}, {2, "prev", pulse.ErrReplay}, {3, "prev", nil}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			tr := newTracker(t, pulse.Config{})
			first := add(t, tr, info(1, "agent-a", "01"))
			// history[len-1] is the latest token the gateway issued.
			history := []pulse.Token{first}
			now := t0
			for i, s := range c.steps {
				var tok pulse.Token
				switch s.tok {
				case "cur":
					tok = history[len(history)-1]
				case "prev":
					tok = history[max(len(history)-2, 0)]
				case "old":
					tok = history[max(len(history)-3, 0)]
				case "t0":
					tok = first
				case "garbage":
					tok[0] = 1
				}
				now = now.Add(time.Second)
				d, err := tr.Beat(sid(1), beatMsg(s.seq, tok, now), now)
				if !errors.Is(err, s.want) {
					t.Fatalf("step %d %+v: %v", i, s, err)
				}
				if err != nil {
					continue
				}
				if d.Ack.NextToken != refToken(sid(1), s.seq) {
					t.Fatalf("step %d: next token is not the one for seq %d", i, s.seq)
				}
				history = append(history, d.Ack.NextToken)
			}
		})
	}
}

func TestDead(t *testing.T) {
	for _, c := range []struct {
		name     string
		cfg      pulse.Config
		interval time.Duration
		missed   int
	}{
		{"defaults", pulse.Config{}, pulse.DefaultInterval, pulse.DefaultMissed},
		{"5 of 2s", pulse.Config{Interval: 2 * time.Second, Missed: 5}, 2 * time.Second, 5},
		{"1 of 1m", pulse.Config{Interval: time.Minute, Missed: 1}, time.Minute, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			tr := newTracker(t, c.cfg)
			limit := c.interval * time.Duration(c.missed)
			tokA := add(t, tr, info(1, "a", "1"))
			add(t, tr, info(2, "b", "2"))
			// Before any pulse the clock starts at Established.
			if d := tr.Dead(t0.Add(limit)); len(d) != 0 {
				t.Fatalf("dead at exactly %s: %v", limit, d)
			}
			if d := tr.Dead(t0.Add(limit + 1)); len(d) != 2 {
				t.Fatalf("dead past %s: %v", limit, d)
			}
			// Session 1 beats just in time; session 2 never does.
			at := t0.Add(limit - time.Millisecond)
			if _, err := tr.Beat(sid(1), beatMsg(1, tokA, at), at); err != nil {
				t.Fatal(err)
			}
			for _, probe := range []struct {
				at   time.Time
				want []pulse.ID
			}{
				{t0.Add(limit), nil},
				{t0.Add(limit + 1), []pulse.ID{sid(2)}},
				{at.Add(limit), []pulse.ID{sid(2)}},
				{at.Add(limit + 1), []pulse.ID{sid(1), sid(2)}},
				{t0.Add(-time.Hour), nil}, // a clock step back kills nobody
			} {
				got := tr.Dead(probe.at)
				slices.SortFunc(got, func(a, b pulse.ID) int { return strings.Compare(a.String(), b.String()) })
				if !reflect.DeepEqual(got, probe.want) {
					t.Fatalf("Dead(%s) = %v, want %v", probe.at.Sub(t0), got, probe.want)
				}
			}
			// Dead keeps reporting until Remove.
			if !tr.Remove(sid(2)) || tr.Remove(sid(2)) {
				t.Fatal("remove")
			}
			if d := tr.Dead(at.Add(limit)); len(d) != 0 {
				t.Fatalf("after remove: %v", d)
			}
		})
	}
}

func TestClockSkew(t *testing.T) {
	for _, c := range []struct {
		name      string
		agentTime int64
		wantSkew  time.Duration
		flagged   bool
	}{
		{"in sync", t0.UnixNano(), 0, false},
		{"4.9s ahead", t0.Add(4900 * time.Millisecond).UnixNano(), 4900 * time.Millisecond, false},
		{"exactly max", t0.Add(5 * time.Second).UnixNano(), 5 * time.Second, false},
		{"6s ahead", t0.Add(6 * time.Second).UnixNano(), 6 * time.Second, true},
		{"6s behind", t0.Add(-6 * time.Second).UnixNano(), -6 * time.Second, true},
		{"year 2262", math.MaxInt64, time.Duration(math.MaxInt64 - t0.UnixNano()), true},
		{"min int64 saturates", math.MinInt64, math.MinInt64, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			tr := newTracker(t, pulse.Config{MaxSkew: 5 * time.Second})
			tok := add(t, tr, info(1, "a", "1"))
			p := beatMsg(1, tok, t0)
			p.AgentTime = c.agentTime
			d, err := tr.Beat(sid(1), p, t0)
			if err != nil {
				t.Fatal(err)
			}
			if d.Posture.Skew != c.wantSkew || d.ClockSkew != c.flagged || d.End {
				t.Fatalf("skew %v flagged %v end %v", d.Posture.Skew, d.ClockSkew, d.End)
			}
			if d.Ack.ServerTime != t0.UnixNano() {
				t.Fatal("ack without the server time")
			}
		})
	}
}

func TestIndexesAndFacts(t *testing.T) {
	tr := newTracker(t, pulse.Config{})
	tok := add(t, tr, info(1, "agent-a", "00:0A:1B"))
	add(t, tr, info(2, "agent-a", "7f01"))
	add(t, tr, info(3, "agent-b", "a1b"))
	sorted := func(ids []pulse.ID) []pulse.ID {
		slices.SortFunc(ids, func(a, b pulse.ID) int { return strings.Compare(a.String(), b.String()) })
		return ids
	}
	for _, c := range []struct {
		got, want []pulse.ID
	}{
		{tr.ByAgent("agent-a"), []pulse.ID{sid(1), sid(2)}},
		{tr.ByAgent("agent-b"), []pulse.ID{sid(3)}},
		{tr.ByAgent("agent-c"), nil},
		{tr.BySerial("a1b"), []pulse.ID{sid(1), sid(3)}},
		{tr.BySerial("0000000000000000000000000000A1B"), []pulse.ID{sid(1), sid(3)}},
		{tr.BySerial("7F:01"), []pulse.ID{sid(2)}},
		{tr.BySerial("7f02"), nil},
		{tr.BySerial("not hex"), nil},
	} {
		if got := sorted(c.got); !reflect.DeepEqual(got, c.want) {
			t.Errorf("got %v, want %v", got, c.want)
		}
	}

	if _, ok := tr.Facts(sid(1)); ok {
		t.Fatal("facts before the first pulse")
	}
	p := beatMsg(1, tok, t0)
	if _, err := tr.Beat(sid(1), p, t0.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	p.Facts["disk.encrypted"] = "false" // the caller's map is not the tracker's
	got, ok := tr.Facts(sid(1))
	if !ok || got.Seq != 1 || got.OS != "linux" || got.AgentVersion != "1.0.0" || got.Facts["disk.encrypted"] != "true" ||
		got.ClockOffset != 3*time.Millisecond || !got.Received.Equal(t0.Add(time.Second)) || !got.AgentTime.Equal(t0) ||
		got.Skew != -time.Second {
		t.Fatalf("facts %+v", got)
	}
	if in, ok := tr.Info(sid(1)); !ok || in.AgentID != "agent-a" {
		t.Fatalf("info %+v", in)
	}

	tr.Remove(sid(1))
	if _, ok := tr.Facts(sid(1)); ok {
		t.Fatal("facts of a removed session")
	}
	if got := tr.ByAgent("agent-a"); !reflect.DeepEqual(got, []pulse.ID{sid(2)}) {
		t.Fatalf("by agent after remove: %v", got)
	}
	if got := tr.BySerial("a1b"); !reflect.DeepEqual(got, []pulse.ID{sid(3)}) {
		t.Fatalf("by serial after remove: %v", got)
	}
	tr.Remove(sid(3))
	if got := tr.BySerial("a1b"); got != nil {
		t.Fatalf("by serial after removing all: %v", got)
	}
	if tr.Len() != 1 || !reflect.DeepEqual(tr.Sessions(), []pulse.ID{sid(2)}) {
		t.Fatalf("len %d sessions %v", tr.Len(), tr.Sessions())
	}
	if _, err := tr.Beat(sid(1), beatMsg(2, tok, t0), t0); !errors.Is(err, pulse.ErrUnknownSession) {
		t.Fatalf("beat after remove: %v", err)
	}
}

func TestNormalizeSerial(t *testing.T) {
	for in, want := range map[string]string{
		"0a1b": "a1b", "0A:1B": "a1b", "000000000000000000000000000000ff": "ff", "7F": "7f", "0": "0", "00:00": "0",
		"": "", ":": "", "xyz": "", "0x1f": "", "1 2": "", strings.Repeat("f", 64): strings.Repeat("f", 64),
		strings.Repeat("f", 65): "", "issuer/1": "",
	} {
		if got := pulse.NormalizeSerial(in); got != want {
			t.Errorf("NormalizeSerial(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestAddRefusals(t *testing.T) {
	tr := newTracker(t, pulse.Config{})
	add(t, tr, info(1, "a", "1"))
	for _, c := range []struct {
		name string
		in   pulse.SessionInfo
		want error
	}{
		{"duplicate", info(1, "b", "2"), pulse.ErrExists},
		{"zero id", pulse.SessionInfo{AgentID: "a", CertSerial: "1", Established: t0}, pulse.ErrInvalidArgument},
		{"no agent", info(2, "", "1"), pulse.ErrInvalidArgument},
		{"no serial", info(2, "a", ""), pulse.ErrInvalidArgument},
		{"serial not hex", info(2, "a", "g1"), pulse.ErrInvalidArgument},
		{"no time", pulse.SessionInfo{ID: sid(2), AgentID: "a", CertSerial: "1"}, pulse.ErrInvalidArgument},
	} {
		if _, err := tr.Add(c.in); !errors.Is(err, c.want) {
			t.Errorf("%s: %v", c.name, err)
		}
	}
	if tr.Len() != 1 {
		t.Fatalf("%d sessions after refusals", tr.Len())
	}
	if _, err := tr.Beat(sid(1), nil, t0); !errors.Is(err, pulse.ErrInvalidArgument) {
		t.Fatalf("nil pulse: %v", err)
	}

	tr.Close()
	if _, err := tr.Add(info(3, "a", "1")); !errors.Is(err, pulse.ErrClosed) {
		t.Fatalf("add after close: %v", err)
	}
	if _, err := tr.Beat(sid(1), beatMsg(1, pulse.Token{}, t0), t0); !errors.Is(err, pulse.ErrClosed) {
		t.Fatalf("beat after close: %v", err)
	}
	if tr.Len() != 0 || tr.Dead(t0.Add(time.Hour)) != nil {
		t.Fatal("sessions survive close")
	}
	tr.Close()
}

func TestNewRefusals(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  pulse.Config
		want error
	}{
		{"negative interval", pulse.Config{Interval: -1}, pulse.ErrInvalidArgument},
		{"negative missed", pulse.Config{Missed: -1}, pulse.ErrInvalidArgument},
		{"negative skew", pulse.Config{MaxSkew: -1}, pulse.ErrInvalidArgument},
	} {
		if _, err := pulse.New(c.cfg, strings.NewReader(strings.Repeat("k", 32))); !errors.Is(err, c.want) {
			t.Errorf("%s: %v", c.name, err)
		}
	}
	if _, err := pulse.New(pulse.Config{}, iotest.ErrReader(errors.New("no entropy"))); !errors.Is(err, pulse.ErrRandom) {
		t.Errorf("failing rand: %v", err)
	}
	if _, err := pulse.New(pulse.Config{}, strings.NewReader("short")); !errors.Is(err, pulse.ErrRandom) {
		t.Errorf("short rand: %v", err)
	}
	if _, err := pulse.New(pulse.Config{}, nil); !errors.Is(err, pulse.ErrInvalidArgument) {
		t.Errorf("nil rand: %v", err)
	}
	tr := newTracker(t, pulse.Config{})
	if cfg := tr.Config(); cfg.Interval != pulse.DefaultInterval || cfg.Missed != pulse.DefaultMissed || cfg.MaxSkew != pulse.DefaultMaxSkew {
		t.Fatalf("defaults %+v", cfg)
	}
}

// TestHandleVerifier: the verifier sees the session and the posture, runs
// outside the tracker's lock (it calls back into the tracker), and its
// failure ends the session.
func TestHandleVerifier(t *testing.T) {
	tr := newTracker(t, pulse.Config{})
	tok := add(t, tr, info(1, "agent-a", "1"))
	var calls int
	refuse := false
	v := func(ctx context.Context, s pulse.SessionInfo, p pulse.Posture) error {
		calls++
		// Calling the tracker here deadlocks if the lock were held.
		if got, ok := tr.Facts(s.ID); !ok || got.Seq != p.Seq {
			return fmt.Errorf("posture not recorded before verify")
		}
		if len(tr.ByAgent(s.AgentID)) != 1 {
			return fmt.Errorf("agent index")
		}
		if refuse || p.Facts["disk.encrypted"] != "true" {
			return errors.New("not authorized: disk not encrypted")
		}
		return nil
	}
	d, err := tr.Handle(context.Background(), sid(1), beatMsg(1, tok, t0), t0, v)
	if err != nil || d.End || calls != 1 {
		t.Fatalf("first: %v %+v calls %d", err, d, calls)
	}
	// A refused pulse never reaches the verifier.
	if _, err := tr.Handle(context.Background(), sid(1), beatMsg(1, d.Ack.NextToken, t0), t0, v); !errors.Is(err, pulse.ErrReplay) || calls != 1 {
		t.Fatalf("replay: %v calls %d", err, calls)
	}
	p := beatMsg(2, d.Ack.NextToken, t0.Add(time.Second))
	p.Facts["disk.encrypted"] = "false"
	d, err = tr.Handle(context.Background(), sid(1), p, t0.Add(time.Second), v)
	if err != nil || !d.End || d.Reason != "not authorized: disk not encrypted" || d.Err == nil || calls != 2 {
		t.Fatalf("refusal: %v %+v", err, d)
	}
	// The session is ended: no more pulses, Dead reports it at once.
	if _, err := tr.Beat(sid(1), beatMsg(3, d.Ack.NextToken, t0), t0); !errors.Is(err, pulse.ErrEnded) {
		t.Fatalf("beat after end: %v", err)
	}
	if dead := tr.Dead(t0.Add(time.Second)); !reflect.DeepEqual(dead, []pulse.ID{sid(1)}) {
		t.Fatalf("dead %v", dead)
	}
	if tr.End(sid(9)) {
		t.Fatal("ended an unknown session")
	}
	// Without a verifier Handle is Beat.
	tok2 := add(t, tr, info(2, "agent-b", "2"))
	if d, err := tr.Handle(context.Background(), sid(2), beatMsg(1, tok2, t0), t0, nil); err != nil || d.End {
		t.Fatalf("nil verifier: %v %+v", err, d)
	}
}

// TestConcurrent runs beats, lookups, sweeps and removals on many sessions
// at once; with -race it checks the locking.
func TestConcurrent(t *testing.T) {
	tr := newTracker(t, pulse.Config{})
	const sessions, beats = 32, 50
	toks := make([]pulse.Token, sessions)
	for i := range sessions {
		toks[i] = add(t, tr, info(i+1, fmt.Sprintf("agent-%d", i%4), fmt.Sprintf("%x", i%8+1)))
	}
	var wg sync.WaitGroup
	errs := make(chan error, sessions)
	for i := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok := toks[i]
			for seq := uint64(1); seq <= beats; seq++ {
				now := t0.Add(time.Duration(seq) * time.Second)
				d, err := tr.Beat(sid(i+1), beatMsg(seq, tok, now), now)
				if err != nil {
					errs <- err
					return
				}
				tok = d.Ack.NextToken
				tr.Facts(sid(i + 1))
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range beats {
			tr.Dead(t0.Add(time.Duration(i) * time.Second))
			tr.ByAgent("agent-1")
			tr.BySerial("3")
			tr.Sessions()
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for i := range sessions {
		if p, ok := tr.Facts(sid(i + 1)); !ok || p.Seq != beats {
			t.Fatalf("session %d at seq %d", i+1, p.Seq)
		}
	}
}
