// Package gateway is the AVON gateway engine: it terminates the tunnel
// protocol (docs/protocol.md) on UDP port 4600, keeps the sessions, and moves
// inner IP packets between the sessions and a TUN device.
//
// It wires the pure building blocks together (core/handshake,
// core/tunnel/cookie, ratelimit, frag, transport, control, core/pulse,
// core/gateway/ipam, core/gateway/flow) and owns the I/O and the goroutines.
// It decides nothing itself beyond the protocol's own rules (cryptokey
// routing, address proof, limits); revocation events reach it through
// Terminate. Access policy per flow is core/gateway/flow's, switched by
// Config.Policy: with PolicyEnforce every packet between an agent and the
// TUN passes the session's flow table (a new flow is held until the policy
// engine, batched and cached, decides; a denial is told to the agent as a
// Denial control message; every accepted pulse and PolicyChanged re-check
// the open flows), and every session is admitted by Action "connect"
// (connect.go: asked asynchronously after the Finish verified, a denial
// sent as a Close connect_denied instead of the SessionConfig, asked again
// on every pulse and policy change); with PolicyOff (the default) flows to
// Routes leave through the kernel, where its firewall applies.
//
// The tunnel is IPv4, IPv6 or dual stack: Config.TunnelPrefix with IPAM
// and Config.TunnelPrefix6 with IPAM6, either or both. A session holds one
// address per configured family (both sent in its SessionConfig), the
// table finds it under each, and cryptokey routing accepts either as the
// inner source.
//
// # Data path
//
// Receive (one goroutine per bind ReceiveFunc), cheapest checks first:
//
//	datagram -> length >= 4, version 1, reserved 0   (else drop, Stats.DropShort/DropHeader)
//	  type 4 Transport:  ParseHeader -> session by receiver index (RLock table)
//	                     -> keypair Expired? -> Keypair.Open in place (replay window
//	                        checked before, updated after the AEAD)
//	                     -> endpoint := source (roaming, only after authentication)
//	                     -> keepalive | control (Pulse -> PulseAck and flow
//	                        re-evaluation, Close -> end)
//	                        | IP: ParseInner, Src == a session address (else DropSpoofed)
//	                          -> flow table (enforcing): forward, hold or drop
//	                     -> batched TUN Write per receive batch
//	  type 1 Initiation: exact length -> mac1 -> per-source rate -> proof
//	                     (mac2 cookie, or address token unless under load)
//	                     -> none: 64-byte CookieReply, no state
//	                     -> queue for the handshake workers
//	  type 9 Fragment:   only from a source with a half-open handshake
//	                     -> Reassembler -> a complete Finish -> queue
//	  type 6 RekeyInit:  exact length, live receiver index -> queue
//
// Handshake workers (Config.Workers goroutines) do the public-key work:
// HandleInitiation -> half-open handshake under a random local index
// (bounded by MaxPending, dropped after PendingTimeout) -> Response split
// into fragments (frag.SplitForGSO: the bind sends the four as one UDP GSO
// datagram, and a Finish sent the same way arrives as one GRO buffer that
// the bind splits); HandleFinish -> (enforcing: Authorize, groups, connect
// query to the batcher; the worker moves on and a worker resumes from
// Gateway.connects when the answer is in) -> IPAM address -> transport keypair ->
// session (replacing the agent's older one) -> SessionConfig as the first
// transport packet; HandleRekeyInit -> the new keypair becomes "next" and is
// promoted to "current" when the agent first uses it (a lost RekeyResp costs
// nothing); the replaced one opens packets for OldKeyLifetime more.
//
// TUN read (one goroutine): batches of BatchSize at offset 16 ->
// ParseInner -> session by destination address -> flow table (enforcing:
// return traffic, or a peer agent's allowed flow) -> Seal in place ->
// grouped per endpoint -> bind.Send. Traffic between agents goes out to the
// kernel and comes back through this path; traffic to Routes is never read
// here.
//
// Timers (one goroutine, every TickInterval, at the calibrated time):
// expire half-open handshakes and reassemblies, retire replaced keys,
// keepalive after KeepaliveAfter without sending, end sessions whose keys
// expired (the agent did not rekey), whose certificate expired, that reached
// MaxSessionAge, or that missed MissedPulses pulses (core/pulse Tracker
// DeadAt, and Tracker.Ended for sessions ended there). A tick touches only
// the sessions due: each session is filed in a hashed timer wheel (wheel.go)
// at the earliest of its deadlines, and re-filed when it comes up, so a
// deadline that moved later (the keepalive deadline moves with every packet
// sent, the pulse deadline with every pulse) costs nothing until then. Every
// session comes up at least every KeepaliveAfter (also after the calibrated
// clock stepped back, when deadlines stamped by the old clock lie far
// ahead and new activity can only move them earlier); an idle gateway whose
// agents pulse every 10 s looks at a tenth of its sessions per second
// instead of all of them.
//
// # Locks
//
// State is grouped by what guards it (see the Gateway struct):
//
//   - Fixed after New (cfg, components, jobs channel): no lock. The
//     components (Responder, cookie Checker, Limiter, Load, Reassembler,
//     Tracker, Keypair) are safe for concurrent use under their own locks.
//   - Gateway.table (RWMutex): byIndex, byAddr, byID, pendings and the
//     pending counters. The data path takes it shared for one map lookup.
//   - session.mu: changes of a session's keys (rekey, promotion,
//     retirement, zeroization). Readers load session.keys (an immutable
//     keySet behind an atomic pointer) without it. Lock order: session.mu
//     before table; no code takes session.mu while holding table.
//   - session.endpoint, counters and the ended flag: atomics.
//   - Gateway.timers: the timer wheel (session.timer) and the limiter's
//     sweep time; a leaf lock (nothing else is taken while it is held).
//     endSession sets ended before it unschedules, and schedule files only
//     sessions not ended, so a tick re-filing a session that ends meanwhile
//     never leaves it in the wheel.
//   - Gateway.life: the lifecycle (Start, Run, Close).
//
// A keypair or half-open handshake is zeroized only after it left the maps;
// a packet that raced past the lookup finds it closed (transport.ErrClosed)
// and is dropped.
//
// # Lifecycle
//
// New validates the Config and takes ownership of the TUN device and the
// bind. Start opens the bind and starts every goroutine; Run is Start and a
// wait. Ending the context or Close sends every agent a Close, closes the
// bind and the device (which ends the blocking reads), waits for every
// goroutine and zeroizes all keys.
package gateway
