package ntp_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/avonzt/avon/core/calibration"
	"github.com/avonzt/avon/core/calibration/ntp"
)

func newSource(t testing.TB, addr string, opts ...ntp.Option) *ntp.Source {
	t.Helper()
	s, err := ntp.New(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestMeasuresServedOffset(t *testing.T) {
	for _, off := range []time.Duration{2500 * time.Millisecond, -7 * time.Second, 0, 90 * time.Minute} {
		t.Run(off.String(), func(t *testing.T) {
			srv := startServer(t, behaviour{offset: off, stratum: 1})
			src := newSource(t, srv.addr(), ntp.WithSamples(4))
			smp, err := src.Sample(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			// The true offset lies within the sample's own bound (plus the
			// timestamp resolution).
			if d := smp.Offset - off; d > smp.Uncertainty+time.Microsecond || d < -smp.Uncertainty-time.Microsecond {
				t.Fatalf("offset %s, served %s, uncertainty %s", smp.Offset, off, smp.Uncertainty)
			}
			if smp.Uncertainty > 50*time.Millisecond || smp.Uncertainty < smp.Delay/2 {
				t.Fatalf("uncertainty %s, delay %s", smp.Uncertainty, smp.Delay)
			}
			if smp.Stratum != 1 || smp.Source != "ntp:"+srv.addr() {
				t.Fatalf("sample %+v", smp)
			}
			if n := srv.queries.Load(); n != 4 {
				t.Fatalf("%d queries, want 4", n)
			}
		})
	}
}

func TestUncertaintyIncludesRootDistance(t *testing.T) {
	srv := startServer(t, behaviour{rootDelay: 0x0000_8000, rootDisp: 0x0001_0000}) // 0.5s, 1s
	smp, err := newSource(t, srv.addr(), ntp.WithSamples(1)).Sample(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if want := time.Second + 250*time.Millisecond + smp.Delay/2; smp.Uncertainty != want {
		t.Fatalf("uncertainty %s, want %s", smp.Uncertainty, want)
	}
}

func TestKeepsSmallestDelay(t *testing.T) {
	srv := startServer(t, behaviour{hold: 30 * time.Millisecond})
	src := newSource(t, srv.addr(), ntp.WithSamples(3))
	smp, err := src.Sample(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// The server's hold is inside T3-T2, so it does not count as delay.
	if smp.Delay > 25*time.Millisecond {
		t.Fatalf("delay %s includes the server's processing time", smp.Delay)
	}
}

func TestBadReplies(t *testing.T) {
	cases := []struct {
		name string
		b    behaviour
		want error
		msg  string
	}{
		{"kiss RATE", behaviour{kiss: "RATE"}, ntp.ErrKissOfDeath, `kiss-of-death "RATE"`},
		{"kiss DENY", behaviour{kiss: "DENY"}, ntp.ErrKissOfDeath, `kiss-of-death "DENY"`},
		{"unsynchronized", behaviour{leap: 3}, ntp.ErrUnsynchronized, "unsynchronized"},
		{"stratum 16", behaviour{stratum: 16}, ntp.ErrBadStratum, "stratum 16"},
		{"zero transmit", behaviour{zeroXmt: true}, ntp.ErrZeroTimestamp, "zero"},
		{"transmit before receive", behaviour{backwards: true}, ntp.ErrBadTimestamps, "before receive"},
		{"root dispersion 17s", behaviour{rootDisp: 17 << 16}, ntp.ErrRootDistance, "root dispersion 17s"},
		// Replies that do not answer the request: discarded until the
		// deadline, then reported with the timeout.
		{"wrong origin", behaviour{wrongOrigin: true}, ntp.ErrOriginMismatch, "last reply rejected"},
		{"client mode", behaviour{mode: 3}, ntp.ErrBadMode, "mode 3"},
		{"broadcast mode", behaviour{mode: 5}, ntp.ErrBadMode, "mode 5"},
		{"version 2", behaviour{version: 2}, ntp.ErrBadVersion, "version 2"},
		{"truncated", behaviour{truncate: 47}, ntp.ErrShortPacket, "47 bytes"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := startServer(t, tc.b)
			src := newSource(t, srv.addr(), ntp.WithSamples(2), ntp.WithQueryTimeout(200*time.Millisecond))
			_, err := src.Sample(context.Background())
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("error %v, want %v containing %q", err, tc.want, tc.msg)
			}
			if tc.want == ntp.ErrKissOfDeath {
				var ke *ntp.KissError
				if !errors.As(err, &ke) || ke.Code != tc.b.kiss {
					t.Fatalf("kiss code: %v", err)
				}
				if n := srv.queries.Load(); n != 1 {
					t.Fatalf("%d queries after a kiss-of-death, want 1", n)
				}
			}
		})
	}
}

func TestStrayReplyIgnored(t *testing.T) {
	srv := startServer(t, behaviour{strayFirst: true, offset: 3 * time.Second})
	smp, err := newSource(t, srv.addr(), ntp.WithSamples(1)).Sample(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if d := smp.Offset - 3*time.Second; d > smp.Uncertainty || d < -smp.Uncertainty {
		t.Fatalf("offset %s: the stray reply was believed", smp.Offset)
	}
}

func TestSilentServerTimesOutWithinDeadline(t *testing.T) {
	srv := startServer(t, behaviour{silent: true})
	src := newSource(t, srv.addr(), ntp.WithSamples(3), ntp.WithQueryTimeout(5*time.Second))
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := src.Sample(ctx)
	el := time.Since(start)
	var te *ntp.TimeoutError
	if !errors.As(err, &te) || !errors.Is(err, ntp.ErrTimeout) {
		t.Fatalf("error %v, want *TimeoutError", err)
	}
	if el > 2*time.Second {
		t.Fatalf("returned after %s with a 300ms ctx deadline", el)
	}
	if srv.queries.Load() < 1 {
		t.Fatal("server saw no query")
	}

	// Cancellation (not a deadline) also ends the wait.
	ctx, cancel = context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start = time.Now()
	_, err = src.Sample(ctx)
	if err == nil || time.Since(start) > 2*time.Second {
		t.Fatalf("cancelled sample: %v after %s", err, time.Since(start))
	}
}

func TestUnreachablePort(t *testing.T) {
	srv := startServer(t, behaviour{})
	addr := srv.addr()
	srv.conn.Close() // nothing listens there now
	_, err := newSource(t, addr, ntp.WithSamples(1), ntp.WithQueryTimeout(300*time.Millisecond)).Sample(context.Background())
	if err == nil {
		t.Fatal("sample from a closed port succeeded")
	}
}

// TestRandomOriginFromReader: the transmit timestamp comes from the
// injected reader, and the server's echo of it is what ties the reply.
func TestRandomOriginFromReader(t *testing.T) {
	srv := startServer(t, behaviour{})
	fixed := bytes.NewReader(bytes.Repeat([]byte{0xA5}, 8*4))
	src := newSource(t, srv.addr(), ntp.WithSamples(1), ntp.WithRand(fixed))
	if _, err := src.Sample(context.Background()); err != nil {
		t.Fatal(err)
	}
	empty := newSource(t, srv.addr(), ntp.WithSamples(1), ntp.WithRand(bytes.NewReader(nil)))
	if _, err := empty.Sample(context.Background()); err == nil || !strings.Contains(err.Error(), "random transmit timestamp") {
		t.Fatalf("exhausted random source: %v", err)
	}
}

func TestNewValidates(t *testing.T) {
	s := newSource(t, "ntp.internal")
	if s.Name() != "ntp:ntp.internal:123" {
		t.Fatalf("name %q", s.Name())
	}
	for _, tc := range []struct {
		addr string
		opts []ntp.Option
	}{
		{"", nil},
		{"h", []ntp.Option{ntp.WithSamples(0)}},
		{"h", []ntp.Option{ntp.WithSamples(17)}},
		{"h", []ntp.Option{ntp.WithQueryTimeout(0)}},
		{"h", []ntp.Option{ntp.WithName("")}},
		{"h", []ntp.Option{ntp.WithClock(nil)}},
	} {
		if _, err := ntp.New(tc.addr, tc.opts...); !errors.Is(err, ntp.ErrInvalidConfig) {
			t.Errorf("New(%q): %v", tc.addr, err)
		}
	}
}

// steppedClock is the system clock with its wall reading moved by step;
// the monotonic reading is untouched, like a host after `date -s`.
type steppedClock struct{ step time.Duration }

func (c steppedClock) Now() time.Time {
	n := time.Now()
	return n.Add(c.step)
}

// TestCalibratorWithNTP: a calibrator on a host whose clock is 1h ahead,
// against a correct NTP server: it measures -1h, serves correct time, and
// Ready names the skew.
func TestCalibratorWithNTP(t *testing.T) {
	srv := startServer(t, behaviour{stratum: 1})
	clock := steppedClock{step: time.Hour}
	src := newSource(t, srv.addr(), ntp.WithClock(clock), ntp.WithName("lab"))
	cal, err := calibration.New(calibration.Config{Sources: []calibration.Source{src}}, calibration.WithClock(clock))
	if err != nil {
		t.Fatal(err)
	}
	if err := cal.Calibrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := cal.Status()
	if d := st.Offset + time.Hour; d > st.Uncertainty || d < -st.Uncertainty || st.Source != "lab" || st.Stratum != 1 {
		t.Fatalf("status %+v", st)
	}
	now, err := cal.Now()
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(now); d > 50*time.Millisecond || d < -50*time.Millisecond {
		t.Fatalf("calibrated time off by %s", d)
	}
	_, err = cal.Ready(context.Background())
	if !errors.Is(err, calibration.ErrSkew) || !strings.HasPrefix(err.Error(), "local clock is 1h0m0") {
		t.Fatalf("Ready: %v", err)
	}
}
