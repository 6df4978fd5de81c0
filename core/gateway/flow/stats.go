package flow

import "sync/atomic"

// Stats counts what the enforcer did, for metrics and tests. Every field
// is an atomic counter that only grows, except Flows (a gauge); read them
// with Load. A dropped packet is counted once, under its first reason.
type Stats struct {
	// Flows is the number of flows in every table (a gauge).
	Flows atomic.Int64
	// FlowsCreated and FlowsExpired (idle timeout or session end).
	FlowsCreated, FlowsExpired atomic.Uint64
	// Forwarded: packets of allowed flows (added per session in steps of
	// 64, and when a session ends); Held: packets queued on a pending
	// flow; Released: held packets forwarded once allowed.
	Forwarded, Held, Released atomic.Uint64
	// Drops: a denied flow (DropDenied); the hold queue of a pending flow
	// full, or its packets dropped on denial (DropHold); a flow table full
	// (DropTableFull); a later fragment without its first (DropFragment); an
	// ICMP error quoting no allowed flow (DropRelated); a packet for an agent
	// that no allowed flow expects (DropUnsolicited); an untrackable packet
	// (DropMalformed).
	DropDenied, DropHold, DropTableFull, DropFragment, DropRelated, DropUnsolicited, DropMalformed atomic.Uint64

	// CacheHits and CacheMisses of the decision cache.
	CacheHits, CacheMisses atomic.Uint64
	// Queries sent to the engine, EngineCalls (Evaluate calls),
	// EngineErrors (failed calls or answers out of shape), FailClosed
	// (decisions denied because the engine failed or is absent).
	Queries, EngineCalls, EngineErrors, FailClosed atomic.Uint64
	// FailClosedRetries: flows denied fail-closed that the agent's next
	// packet, FailClosedRetry later, opened again to ask the engine.
	FailClosedRetries atomic.Uint64
	// Decisions: allowed, denied, and allowed in report-only mode (the
	// engine would have denied).
	Allowed, Denied, ReportOnly atomic.Uint64
	// Reevaluations: flows re-checked (pulse, posture or policy change);
	// Cut: allowed flows denied by a re-check; Restored: denied flows
	// allowed by one.
	Reevaluations, Cut, Restored atomic.Uint64
	// Denials handed to the Denied callback, and the ones suppressed by
	// the per-session rate.
	Denials, DenialsSuppressed atomic.Uint64

	// Connect decisions (AskConnect: sessions at their handshake and
	// re-checks): allowed (report-only ones included), denied (fail-closed
	// ones included), allowed in report-only mode, failed closed.
	ConnectAllowed, ConnectDenied, ConnectReportOnly, ConnectFailClosed atomic.Uint64
	// CachePurges: the decision cache emptied because an Evaluate call
	// failed (the engine is unavailable: cached decisions stop answering).
	CachePurges atomic.Uint64
}
