package ntp_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/avonzt/avon/core/calibration/ntp"
)

func TestTimestampEras(t *testing.T) {
	for _, s := range []string{
		"1970-01-01T00:00:00Z",
		"1999-12-31T23:59:59.999999999Z",
		"2026-12-02T07:34:05.123456789Z",
		"2036-02-07T06:28:15.5Z", // last second of era 0
		"2036-02-07T06:28:16Z",   // first of era 1
		"2050-06-01T12:00:00.000000001Z",
		"2100-01-01T00:00:00Z",
	} {
		tm, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		ts := ntp.TimestampFrom(tm)
		for _, pivot := range []time.Time{tm, tm.Add(-30 * 24 * time.Hour), tm.Add(50 * 365 * 24 * time.Hour)} {
			got := ts.Time(pivot)
			if d := got.Sub(tm); d > time.Nanosecond || d < -time.Nanosecond {
				t.Errorf("%s via pivot %s: %s", s, pivot.Format(time.DateOnly), got.Format(time.RFC3339Nano))
			}
		}
	}
	// Era 1 starts with seconds field 0.
	era1, _ := time.Parse(time.RFC3339, "2036-02-07T06:28:16Z")
	if ts := ntp.TimestampFrom(era1); ts != 0 {
		t.Fatalf("2036-02-07T06:28:16Z encodes as %#x", uint64(ts))
	}
	if got := ntp.Short(0x0001_8000).Duration(); got != 1500*time.Millisecond {
		t.Fatalf("short 1.5: %s", got)
	}
}

func TestPacketRoundTrip(t *testing.T) {
	p := &ntp.Packet{Leap: 1, Version: 4, Mode: 4, Stratum: 2, Poll: 6, Precision: -23,
		RootDelay: 0x1234, RootDispersion: 0x5678, ReferenceID: [4]byte{'G', 'P', 'S', 0},
		Reference: 1, Origin: 2, Receive: 3, Transmit: 4}
	b := p.Marshal()
	if len(b) != 48 || b[0] != 1<<6|4<<3|4 {
		t.Fatalf("header byte %#x", b[0])
	}
	q, err := ntp.ParsePacket(append(b, 0xde, 0xad)) // trailing extension bytes are ignored
	if err != nil || *q != *p {
		t.Fatalf("round trip %+v %v", q, err)
	}
	if _, err := ntp.ParsePacket(b[:47]); !errors.Is(err, ntp.ErrShortPacket) {
		t.Fatalf("47 bytes: %v", err)
	}
}

func TestCheckReplyOrder(t *testing.T) {
	good := func() *ntp.Packet {
		return &ntp.Packet{Version: 4, Mode: 4, Stratum: 3, Origin: 77, Receive: 1 << 40, Transmit: 1 << 40}
	}
	if err := good().CheckReply(77); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		mod  func(*ntp.Packet)
		want error
	}{
		{"mode", func(p *ntp.Packet) { p.Mode = 2 }, ntp.ErrBadMode},
		{"version 5", func(p *ntp.Packet) { p.Version = 5 }, ntp.ErrBadVersion},
		{"version 3 ok, origin wrong", func(p *ntp.Packet) { p.Version = 3; p.Origin = 78 }, ntp.ErrOriginMismatch},
		// A kiss-of-death that does not answer our request is not believed.
		{"spoofed kiss", func(p *ntp.Packet) { p.Stratum = 0; p.Origin = 1 }, ntp.ErrOriginMismatch},
		{"kiss", func(p *ntp.Packet) { p.Stratum = 0; p.Leap = 3; p.ReferenceID = [4]byte{'R', 'S', 'T', 'R'} }, ntp.ErrKissOfDeath},
		{"alarm", func(p *ntp.Packet) { p.Leap = 3 }, ntp.ErrUnsynchronized},
		{"stratum 200", func(p *ntp.Packet) { p.Stratum = 200 }, ntp.ErrBadStratum},
		{"zero receive", func(p *ntp.Packet) { p.Receive = 0 }, ntp.ErrZeroTimestamp},
		{"zero transmit", func(p *ntp.Packet) { p.Transmit = 0 }, ntp.ErrZeroTimestamp},
		{"root delay", func(p *ntp.Packet) { p.RootDelay = 0xffff_ffff }, ntp.ErrRootDistance},
	}
	for _, tc := range cases {
		p := good()
		tc.mod(p)
		if err := p.CheckReply(77); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	p := good()
	p.Stratum, p.ReferenceID = 0, [4]byte{0, 1, 2, 0xff}
	var ke *ntp.KissError
	if err := p.CheckReply(77); !errors.As(err, &ke) || ke.Code != "0x000102ff" {
		t.Fatalf("binary kiss code: %v", err)
	}
}

func TestMeasureArithmetic(t *testing.T) {
	t1 := time.Date(2026, 12, 2, 7, 0, 0, 0, time.UTC)
	// Server 2s ahead; 10ms each way; 1ms processing.
	t2 := t1.Add(2*time.Second + 10*time.Millisecond)
	t3 := t2.Add(time.Millisecond)
	p := &ntp.Packet{Stratum: 1, Receive: ntp.TimestampFrom(t2), Transmit: ntp.TimestampFrom(t3), RootDelay: 0x0000_0800 /* 31.25ms */, RootDispersion: 0x0000_0400 /* 15.625ms */}
	smp, err := ntp.Measure(p, t1, 21*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	near := func(got, want time.Duration) bool {
		d := got - want
		return d <= time.Microsecond && d >= -time.Microsecond
	}
	if !near(smp.Offset, 2*time.Second) || !near(smp.Delay, 20*time.Millisecond) {
		t.Fatalf("offset %s delay %s", smp.Offset, smp.Delay)
	}
	if want := 10*time.Millisecond + 15625*time.Microsecond + 15625*time.Microsecond; !near(smp.Uncertainty, want) {
		t.Fatalf("uncertainty %s, want %s", smp.Uncertainty, want)
	}
	// Asymmetric path: 30ms out, 0 back. Offset error is within δ/2.
	p.Receive, p.Transmit = ntp.TimestampFrom(t1.Add(30*time.Millisecond)), ntp.TimestampFrom(t1.Add(30*time.Millisecond))
	smp, err = ntp.Measure(p, t1, 30*time.Millisecond)
	if err != nil || !near(smp.Offset, 15*time.Millisecond) || !near(smp.Delay, 30*time.Millisecond) {
		t.Fatalf("asymmetric: %+v %v", smp, err)
	}
}

// FuzzNTPReply: no byte string panics the parser, the checks or the
// arithmetic; every refusal is typed; an accepted header re-encodes to
// its first 48 bytes.
func FuzzNTPReply(f *testing.F) {
	now := time.Date(2026, 12, 2, 7, 0, 0, 0, time.UTC)
	good := (&ntp.Packet{Version: 4, Mode: 4, Stratum: 2, Origin: 42, Receive: ntp.TimestampFrom(now), Transmit: ntp.TimestampFrom(now)}).Marshal()
	f.Add(good, uint64(42), int64(5e6))
	f.Add(good[:47], uint64(42), int64(0))
	kiss := bytes.Clone(good)
	kiss[1] = 0
	copy(kiss[12:], "RATE")
	f.Add(kiss, uint64(42), int64(1))
	f.Add(append(bytes.Clone(good), make([]byte, 20)...), uint64(42), int64(-1))
	f.Add(make([]byte, 48), uint64(0), int64(0))
	typed := []error{ntp.ErrBadMode, ntp.ErrBadVersion, ntp.ErrOriginMismatch, ntp.ErrKissOfDeath, ntp.ErrUnsynchronized,
		ntp.ErrBadStratum, ntp.ErrZeroTimestamp, ntp.ErrRootDistance}
	f.Fuzz(func(t *testing.T, b []byte, sent uint64, rtt int64) {
		p, err := ntp.ParsePacket(b)
		if err != nil {
			if !errors.Is(err, ntp.ErrShortPacket) || len(b) >= 48 {
				t.Fatalf("parse %d bytes: %v", len(b), err)
			}
			return
		}
		if !bytes.Equal(p.Marshal(), b[:48]) {
			t.Fatalf("re-encoding differs")
		}
		err = p.CheckReply(ntp.Timestamp(sent))
		if err != nil {
			for _, e := range typed {
				if errors.Is(err, e) {
					return
				}
			}
			t.Fatalf("untyped refusal %v", err)
		}
		if binary.BigEndian.Uint64(b[24:]) != sent {
			t.Fatal("accepted a reply whose origin differs from what was sent")
		}
		smp, err := ntp.Measure(p, now, time.Duration(rtt))
		if err != nil {
			if !errors.Is(err, ntp.ErrBadTimestamps) {
				t.Fatalf("untyped measure error %v", err)
			}
			return
		}
		if smp.Delay < 0 || smp.Uncertainty < 0 {
			t.Fatalf("negative delay or uncertainty: %+v", smp)
		}
	})
}
