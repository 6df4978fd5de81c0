package calibration_test

import (
	"context"
	"testing"
	"time"

	"github.com/avonzt/avon/core/calibration"
)

// BenchmarkAttestVerify: issue an ML-DSA-65 attestation, encode it, and
// check it as a request path would (parse, time checks, verify).
func BenchmarkAttestVerify(b *testing.B) {
	f := newFixture(b, calibration.Config{})
	f.calibrate(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		att, err := f.cal.Attest(ctx, "agent:bench", []byte("nonce"))
		if err != nil {
			b.Fatal(err)
		}
		if err := f.cal.CheckAttestation(att.Marshal(), f.key); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAttest(b *testing.B) {
	f := newFixture(b, calibration.Config{})
	f.calibrate(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.cal.Attest(ctx, "agent:bench", nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCheckAttestation(b *testing.B) {
	f := newFixture(b, calibration.Config{})
	f.calibrate(b)
	_, enc := attest(b, f, "agent:bench", nil)
	b.ReportAllocs()
	for b.Loop() {
		if err := f.cal.CheckAttestation(enc, f.key); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCheckTimestamp on the system clock, as in production.
func BenchmarkCheckTimestamp(b *testing.B) {
	cal, err := calibration.New(calibration.Config{})
	if err != nil {
		b.Fatal(err)
	}
	if err := cal.Calibrate(context.Background()); err != nil {
		b.Fatal(err)
	}
	claimed := time.Now().Add(time.Second)
	b.ReportAllocs()
	for b.Loop() {
		if err := cal.CheckTimestamp(claimed); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCheckTimestampParallel(b *testing.B) {
	cal, err := calibration.New(calibration.Config{})
	if err != nil {
		b.Fatal(err)
	}
	if err := cal.Calibrate(context.Background()); err != nil {
		b.Fatal(err)
	}
	claimed := time.Now()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := cal.CheckTimestamp(claimed); err != nil {
				b.Fatal(err)
			}
		}
	})
}
