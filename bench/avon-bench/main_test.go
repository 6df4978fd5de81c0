package main

import (
	"context"
	"io"
	"os"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary play the gateway child: run re-executes
// os.Executable (here, this test binary) with AVON_BENCH_ROLE=gateway.
func TestMain(m *testing.M) {
	if os.Getenv(roleEnv) == roleGateway {
		if err := gatewayMain(os.Args[1:], os.Stdin, os.Stdout); err != nil {
			os.Stderr.WriteString("gateway child: " + err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestRunSmall runs the whole benchmark with a few agents against a real
// gateway child process over loopback UDP: every agent connects (through a
// cookie round trip), pulses in the idle phase and rekeys once, and the
// figures are filled in.
func TestRunSmall(t *testing.T) {
	o, err := parseOptions([]string{"-agents", "24", "-concurrency", "8", "-idle", "2s", "-pulse", "500ms", "-rekey", "-floor", "3"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	r, err := run(ctx, o, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if r.Connected != 24 || r.Failed != 0 || r.CookieReplies < 24 {
		t.Fatalf("connected %d, failed %d, cookie replies %d", r.Connected, r.Failed, r.CookieReplies)
	}
	if r.End.SessionsEstablished != 24 || r.IdleSessions != 24 || r.End.Sessions != 24 {
		t.Fatalf("gateway: established %d, idle sessions %d, end sessions %d", r.End.SessionsEstablished, r.IdleSessions, r.End.Sessions)
	}
	// Every acked pulse was accepted; a pulse in flight when the idle phase
	// ended (at most one per agent) may be accepted with its ack unread.
	if r.PulsesAcked == 0 || r.PulseFailures != 0 || r.End.PulsesAccepted < uint64(r.PulsesAcked) ||
		r.End.PulsesAccepted > uint64(r.PulsesAcked)+24 {
		t.Fatalf("pulses: %d acked, %d failed, gateway accepted %d", r.PulsesAcked, r.PulseFailures, r.End.PulsesAccepted)
	}
	if r.Rekeys != 24 || r.RekeyFailures != 0 || r.End.Rekeys != 24 {
		t.Fatalf("rekeys: %d ok, %d failed, gateway %d", r.Rekeys, r.RekeyFailures, r.End.Rekeys)
	}
	if r.GatewayCPUPerHSus <= 0 || r.FloorUS <= 0 || r.HeapIdleBytes <= r.HeapBaseBytes || r.LatencyP99ms < r.LatencyP50ms {
		t.Fatalf("figures not measured: %+v", r)
	}
	var b strings.Builder
	printReport(&b, r)
	for _, want := range []string{"24 ok, 0 failed", "per handshake", "B per session", "per rekey"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
}

func TestParseOptions(t *testing.T) {
	for _, args := range [][]string{
		{"-agents", "0"}, {"-agents", "70000"}, {"-concurrency", "0"}, {"-rate", "-1"},
		{"-idle", "151s"}, {"-pulse", "0s"}, {"-floor", "0"}, {"-duration", "0s"}, {"-bogus"},
	} {
		if _, err := parseOptions(args); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
	if o, err := parseOptions(nil); err != nil || o.agents != 1000 || o.pulse != 10*time.Second {
		t.Fatalf("defaults: %+v %v", o, err)
	}
}

// TestRunRate: with -rate the handshakes start at k/rate, so the phase
// lasts at least (agents-1)/rate.
func TestRunRate(t *testing.T) {
	o, err := parseOptions([]string{"-agents", "6", "-rate", "20", "-idle", "0s", "-floor", "1"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := run(ctx, o, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if r.Connected != 6 || r.HandshakeSeconds < 5.0/20 {
		t.Fatalf("%d connected in %.3f s, want 6 in at least 0.25 s", r.Connected, r.HandshakeSeconds)
	}
}
