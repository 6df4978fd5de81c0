package control_test

import (
	"testing"

	"github.com/avonzt/avon/core/tunnel/control"
)

// BenchmarkPulseMarshal: a pulse with six posture facts into a reused buffer.
func BenchmarkPulseMarshal(b *testing.B) {
	p := pulse()
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		out, err := control.Append(buf[:0], p)
		if err != nil {
			b.Fatal(err)
		}
		b.SetBytes(int64(len(out)))
	}
}

// BenchmarkPulseParse: the same pulse, padded as it comes out of the transport.
func BenchmarkPulseParse(b *testing.B) {
	in := pad(marshal(b, pulse()))
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := control.Parse(in); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPulseAckRoundTrip: what the gateway writes and the agent reads per
// accepted pulse.
func BenchmarkPulseAckRoundTrip(b *testing.B) {
	ack := &control.PulseAck{Seq: 9, NextToken: tok(4), ServerTime: 1_780_000_000_000_000_000}
	buf := make([]byte, 0, 128)
	b.ReportAllocs()
	for b.Loop() {
		out, err := control.Append(buf[:0], ack)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := control.Parse(out); err != nil {
			b.Fatal(err)
		}
	}
}
