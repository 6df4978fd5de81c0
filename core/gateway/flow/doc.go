// Package flow is the gateway's per-flow policy enforcement: connection
// tracking of the inner packets of each tunnel session, a decision cache,
// a batcher in front of the policy engine (sdk/policy), and continuous
// re-evaluation of open flows.
//
// # Flows
//
// A flow is identified by a Key: addresses, ports and IP protocol of its
// opening packet. TCP and UDP use their ports; ICMP and ICMPv6 echo use the
// identifier (a request is {SrcPort: id}, its reply {DstPort: id}); other
// protocols, and ICMP messages that are neither echo nor errors, use none.
// Each session has its own table; a flow is stored under its Key and the
// Key's Reverse, so a reply finds the flow the request opened and needs
// no decision of its own.
//
// Special packets:
//
//   - ICMP errors (unreachable, packet too big, time exceeded, parameter
//     problem) are placed by the packet they quote: they pass when that flow
//     exists and is allowed (path MTU discovery keeps working), and are
//     dropped otherwise.
//   - Fragments: a first fragment is tracked like any packet and its
//     identification (IPv4 id, IPv6 fragment header id) is remembered for
//     Timeouts.Fragment (at most Limits.MaxFragments per session); later
//     fragments follow the verdict of that flow. A later fragment whose first
//     fragment was not seen (reordered, or never sent) is dropped: without
//     ports it cannot be decided, and reassembling in the gateway is what
//     this design avoids.
//
// Flows the agent opens (FromAgent) are decided by policy. A packet to an
// agent (ToAgent) passes when it belongs to one of the agent's flows, or
// comes from a peer agent's tunnel address on a flow that peer opened and
// was allowed (agent-to-agent traffic is decided once, for the opener);
// anything else to an agent is unsolicited and dropped.
//
// Idle flows expire per protocol and state (Timeouts): TCP follows SYN,
// FIN and RST (a RST or FIN both ways closes the flow, which lingers
// TCPClosed for retransmissions), UDP has a shorter timeout until a reply
// is seen. Tables are bounded per session and globally (Limits); a new
// flow over a bound is dropped and counted.
//
// # Verdicts
//
// A new flow is Pending until its decision: its first packets (at most
// Limits.MaxHold, copied) wait in a hold queue and are handed to
// Config.Release when the flow is allowed, dropped when it is denied. An
// Allow flow forwards both directions; a Deny flow drops both quietly
// until it idles out (Timeouts.Denied), so a retrying client costs one
// decision, not one per packet.
//
// # Decisions
//
// DefaultQuery asks what the policy-abac schema declares: Action "reach"
// by the Agent (its groups as parents) on a Service, with the schema's
// flow context (docs/policy.md, "How the gateway asks").
//
// The cache is keyed on exactly what a decision depends on (CacheKey: the
// policy set Version, the principal, a hash of the session's subject —
// groups, posture facts, OS, agent version, clock offset and skew in
// milliseconds — and the destination address, port
// and protocol), bounded, with a TTL for what queries carry beyond the key
// (the time). A miss becomes a query for the Batcher, which sends up to
// policy.MaxBatch queries per Evaluate call after a short delay; queries
// for the same key share one answer. The engine is never on the per-packet
// path: a packet of a known flow costs one map lookup under the session's
// lock.
//
// Fail closed: when the engine is absent, fails, times out or answers out
// of shape, every query of the batch is denied (Decision.FailClosed), not
// cached, counted, and logged once per transition (unavailable, available
// again). Such a flow is asked again by the agent's next packet on it
// FailClosedRetry after the denial; a policy denial stands until a
// re-evaluation. A decision with evaluation errors is a denial. In report-only
// mode the engine allows and says it would have denied; the flow passes
// and the would-be denial is logged.
//
// # Sessions
//
// AskConnect asks Action "connect" for a session (DefaultConnectQuery: the
// agent, its groups, the Gateway, the outer source address, the clock
// skew, the last pulse's posture) through the same batcher and hands the
// decision to a callback; connect decisions are never cached. The gateway
// asks at the handshake and again on every pulse and policy change.
//
// A failed Evaluate call, or EngineUnavailable (the engine's supervisor
// says it stopped), empties the decision cache: no cached allow outlives
// the engine.
//
// # Re-evaluation
//
// Reevaluate (on every accepted pulse, with its posture: SetPulse) and
// ReevaluateAll (on a policy change: the cache is emptied first) re-check
// open flows; a flow now denied is cut — its packets are dropped from the
// moment the answer is in — and reported to Config.Denied with the policy
// ids and reason, for the agent (a Denial control message) and the
// decision log. Denials are bounded per session (DenialsPerSecond).
//
// # Locks and goroutines
//
// Each session's table has its own mutex; no code holds two tables'
// mutexes at once. The cache, the waiting queries and the session set
// have theirs, never held while calling the engine or a callback. The
// package does no I/O; its one goroutine, the Batcher's, calls the engine
// and is stopped by Close. Time comes from Config.Now or arguments.
//
// The package must not send packets or know the tunnel: the gateway
// (core/gateway) wires it into its data path.
package flow
