package gateway

import "sync/atomic"

// Stats counts what the engine did with every datagram and packet, for
// metrics and tests. Every field is an atomic counter that only grows; read
// them with Load. A drop is counted exactly once, under its first reason.
type Stats struct {
	// Datagrams received from the bind.
	RxDatagrams atomic.Uint64
	// Dropped before any cryptography: shorter than a header
	// (DropShort), version or reserved bytes wrong (DropHeader), a type the
	// gateway does not take (DropType), a length the type does not allow
	// (DropLength).
	DropShort, DropHeader, DropType, DropLength atomic.Uint64

	// Initiations: bad mac1 (dropped silently), over the per-source rate
	// (dropped), answered with a CookieReply (no proof, or under load
	// without a cookie), proven by cookie or by address token.
	DropMAC1, DropRateLimited, CookieReplies, ProofCookie, ProofToken atomic.Uint64
	// HandshakeQueueFull: proven handshake messages dropped because the
	// workers were behind.
	HandshakeQueueFull atomic.Uint64
	// HandshakesStarted counts calls of Responder.HandleInitiation;
	// Responses the ones answered with a Response; InitiationRefused the
	// ones refused (clock skew, replay, suite, key...); Busy the ones
	// refused because a table was full.
	HandshakesStarted, Responses, InitiationRefused, Busy atomic.Uint64

	// Fragments dropped because the source has no half-open handshake
	// (FragNoState) or the reassembler refused them (FragRefused);
	// FragNotFinish: a reassembled message that is not a Finish.
	FragNoState, FragRefused, FragNotFinish atomic.Uint64
	// FinishRefused: a Finish that failed (final refusals and ones that did
	// not decrypt); HandshakeErrors: HandshakeError messages sent.
	FinishRefused, HandshakeErrors atomic.Uint64

	// Sessions established, ended (any reason), replaced by a newer
	// session of the same agent, and ended because the keypair expired or
	// pulses stopped.
	SessionsEstablished, SessionsEnded, SessionsReplaced, SessionsExpired, SessionsDead atomic.Uint64
	// Connect policy (Config.Policy enforcing): sessions refused at their
	// handshake because Action "connect" was denied (or could not be
	// decided: fail closed), and live sessions ended because a re-check
	// (pulse, policy change) denied it.
	ConnectRefused, ConnectCut atomic.Uint64
	// Rekeys done; RekeyRefused: RekeyInits that failed.
	Rekeys, RekeyRefused atomic.Uint64

	// Transport packets: no session for the receiver index, keypair
	// expired, replayed or too old, forged or corrupted (AEAD), inner
	// packet unparsable, inner source not the agent's address (cryptokey
	// routing), accepted keepalives.
	DropNoSession, DropExpired, DropReplay, DropAuth, DropInner, DropSpoofed, KeepalivesRx atomic.Uint64
	// Control messages: accepted pulses, refused pulses, Close received,
	// unknown types (ignored), malformed ones.
	PulsesAccepted, PulsesRefused, ClosesRx, ControlUnknown, ControlMalformed atomic.Uint64

	// Packets written to the TUN and bytes of them.
	TunTxPackets, TunTxBytes atomic.Uint64
	// Packets read from the TUN: sealed and sent, no session for the
	// destination, unparsable.
	TunRxPackets, TunNoRoute, TunRxBad atomic.Uint64
	// Keepalives sent; SendErrors: bind.Send failures.
	KeepalivesTx, SendErrors atomic.Uint64
}
