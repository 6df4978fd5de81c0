// Command avon-bench is the gateway's handshake load generator: it starts a
// real gateway engine (core/gateway over wireguard-go's UDP bind on
// loopback, with the in-memory channel TUN instead of a TUN device) in a
// child process, and drives simulated agents against it from this process:
// full handshakes (a cookie round trip first, as every new source gets under
// load), then pulses while the sessions idle, and optionally one
// signature-free rekey per session.
//
// It reports handshakes per second, handshake latency (p50/p99), the
// gateway process's CPU seconds per handshake and per rekey (getrusage of
// the child, read by the child itself), and the gateway's heap per idle
// session (live heap after GC with the sessions up, minus the live heap
// before the first agent, divided by the sessions). Agents and gateway are
// separate processes so that the gateway's figures are its own; the agents'
// side (ML-DSA signing, X-Wing key generation and decapsulation) costs about
// twice the gateway's per handshake, so on a small machine the agents limit
// the achieved rate and the gateway's capacity is what its CPU per
// handshake says (see bench/README.md).
//
// The keys and certificates come from core/handshake/handshaketest, the
// test PKI (deterministic keys from labels): avon-bench is a benchmark, and
// nothing it does is fit for production use.
//
// Usage:
//
//	avon-bench -agents 10000 -concurrency 64 -idle 20s -rekey
//
// The same binary runs the gateway side when AVON_BENCH_ROLE=gateway is set
// in its environment (avon-bench sets it for its child).
package main

import (
	"fmt"
	"os"
)

func main() {
	var err error
	if os.Getenv(roleEnv) == roleGateway {
		err = gatewayMain(os.Args[1:], os.Stdin, os.Stdout)
	} else {
		err = driverMain(os.Args[1:], os.Stdout)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "avon-bench:", err)
		os.Exit(1)
	}
}
