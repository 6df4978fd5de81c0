// Package tunnel is the agent's tunnel client engine: it runs the AVON
// tunnel protocol v1 (docs/protocol.md) as the initiator against one
// gateway, over a TUN device and a UDP bind from wireguard-go.
//
// An Engine owns, while Run runs, every goroutine it starts: one reading
// the TUN device (seal and send in batches), one per receive function of
// the bind (open, write to the TUN in batches, hand everything else to the
// main loop), a status writer, an optional local-address watcher, and the
// main loop, which drives the handshake (retries with jittered exponential
// backoff, cookie replies answered with mac2, HandshakeError reasons
// surfaced), waits for the gateway's SessionConfig and hands it to the
// OnConfig hook, then keeps the session alive: keepalives after idle time,
// pulses with posture facts and rotating session tokens, signature-free
// rekeys before the keys age out, and a new handshake when the gateway
// stops answering or closes the session.
//
// The engine decides nothing about the host: addresses, routes and the MTU
// of the interface are applied by the OnConfig hook (avon-agent up uses
// internal/netcfg). It must not log key material or tokens. Protocol time
// (Initiation timestamps, pulse times) comes from Config.Now, the agent's
// calibrated clock; local timers use the monotonic clock.
//
// # Status
//
// Status returns a snapshot (state connecting/up/backoff/stopped, gateway,
// last handshake, tunnel addresses, bytes, last error, last denials). When
// Config.StateDir is set it is also written atomically as JSON to
// StateDir/status.json every few seconds, for `avon-agent status`;
// ParseStatus reads it back.
package tunnel
