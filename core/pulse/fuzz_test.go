package pulse_test

import (
	"strings"
	"testing"
	"time"

	"github.com/avonzt/avon/core/pulse"
	"github.com/avonzt/avon/core/tunnel/control"
)

// FuzzSubject: event subjects come from a shared Redis. NormalizeSerial
// and ParseID never panic; a normalized serial is canonical (lowercase hex,
// no leading zero, at most 64 digits, a fixed point), and a parsed id
// prints back as the subject in lowercase.
func FuzzSubject(f *testing.F) {
	for _, s := range []string{"0a1b", "00:0A:1B", "issuing-1/7f00", "0", "", "g", strings.Repeat("f", 64), sid(1).String(), strings.ToUpper(sid(2).String())} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n := pulse.NormalizeSerial(s)
		if n != "" {
			if len(n) > 64 || strings.Trim(n, "0123456789abcdef") != "" || (len(n) > 1 && n[0] == '0') {
				t.Fatalf("NormalizeSerial(%q) = %q", s, n)
			}
			if pulse.NormalizeSerial(n) != n {
				t.Fatalf("not a fixed point: %q", n)
			}
		}
		if id, err := pulse.ParseID(s); err == nil && id.String() != strings.ToLower(s) {
			t.Fatalf("ParseID(%q) = %s", s, id)
		}
	})
}

// FuzzBeat: arbitrary plaintexts reach the tracker through control.Parse.
// A pulse is accepted only with the current token (the fuzzer cannot know
// the others) and a sequence number above the last; then the session's
// posture is what it said.
func FuzzBeat(f *testing.F) {
	// Every tracker of these tests has the same key: the seeds carry the
	// token the fuzzed tracker issues.
	first := add(f, newTracker(f, pulse.Config{}), info(1, "agent", "1"))
	for _, seq := range []uint64{0, 1, 2, 1 << 63} {
		b, _ := control.Marshal(beatMsg(seq, first, t0))
		f.Add(b, int64(seq))
	}
	f.Add([]byte{2, 0, 0}, int64(-1))
	f.Fuzz(func(t *testing.T, b []byte, at int64) {
		tr := newTracker(t, pulse.Config{})
		tok := add(t, tr, info(1, "agent", "1"))
		m, err := control.Parse(b)
		if err != nil {
			return
		}
		p, ok := m.(*control.Pulse)
		if !ok {
			return
		}
		now := t0.Add(time.Duration(at))
		d, err := tr.Beat(sid(1), p, now)
		accept := p.SessionToken == tok && p.Seq > 0
		if (err == nil) != accept {
			t.Fatalf("accepted %v, want %v: %v", err == nil, accept, err)
		}
		if err != nil {
			return
		}
		got, ok := tr.Facts(sid(1))
		if !ok || got.Seq != p.Seq || got.OS != p.OS || len(got.Facts) != len(p.Facts) || d.Ack.Seq != p.Seq {
			t.Fatalf("posture %+v for pulse %+v", got, p)
		}
		// The same pulse again is a replay.
		if _, err := tr.Beat(sid(1), p, now); err == nil {
			t.Fatal("replay accepted")
		}
	})
}
