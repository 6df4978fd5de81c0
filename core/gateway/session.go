package gateway

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/avonzt/avon/core/gateway/flow"
	"github.com/avonzt/avon/core/handshake"
	"github.com/avonzt/avon/core/pulse"
	"github.com/avonzt/avon/core/tunnel/transport"
)

// keyState is one generation of a session's keys: the handshake or rekey
// Result (for the next rekey) and the transport keypair built from it.
type keyState struct {
	res *handshake.Result
	kp  *transport.Keypair
}

// keySet is what the data path reads without a lock: the keypair that
// sends (current), a rekeyed one not yet confirmed by the agent (next), and
// the one a confirmed rekey replaced (previous, until prevUntil). A keySet
// is never modified after it was published; writers build a new one under
// session.mu.
type keySet struct {
	current, next, previous *keyState
	prevUntil               time.Time
}

// find returns the keyState whose keypair has local index idx.
func (ks *keySet) find(idx uint32) *keyState {
	for _, k := range [...]*keyState{ks.current, ks.next, ks.previous} {
		if k != nil && k.kp.LocalIndex() == idx {
			return k
		}
	}
	return nil
}

// epRef is a session's endpoint: where its last authenticated packet came
// from.
type epRef struct {
	ep   conn.Endpoint
	addr netip.AddrPort
}

// session is one established tunnel to one agent.
type session struct {
	// Fixed at creation.
	id          pulse.ID
	agentID     string
	serial      string
	addr        netip.Addr // IPv4 tunnel address (invalid on an IPv6-only tunnel)
	addr6       netip.Addr // IPv6 tunnel address (invalid on an IPv4-only tunnel)
	established time.Time
	notAfter    time.Time

	// mu serializes changes of keys (rekeys, promotion, retirement,
	// zeroization); readers use the atomic pointer.
	mu   sync.Mutex
	keys atomic.Pointer[keySet]

	endpoint atomic.Pointer[epRef]
	ended    atomic.Bool
	// flow is the session's flow table when policy is enforced (set
	// before the session is published, then fixed).
	flow *flow.Session

	// timer files the session in the Gateway's timer wheel; guarded by
	// Gateway.timers.
	timer wheelEntry[*session]

	// lastRecv and lastSent are calibrated unix ns of the last
	// authenticated packet in and the last packet out.
	lastRecv, lastSent atomic.Int64
	rxBytes, txBytes   atomic.Uint64
	rekeys             atomic.Uint64
}

// SessionInfo describes a live session for status and the admin API.
type SessionInfo struct {
	ID          pulse.ID
	AgentID     string
	CertSerial  string
	Address     netip.Addr // IPv4 tunnel address, if the tunnel has IPv4
	Address6    netip.Addr // IPv6 tunnel address, if the tunnel has IPv6
	Endpoint    netip.AddrPort
	Established time.Time
	LastSeen    time.Time
	RxBytes     uint64 // inner bytes from the agent written to the TUN
	TxBytes     uint64 // inner bytes sent to the agent
	Rekeys      uint64
}

func (s *session) info() SessionInfo {
	si := SessionInfo{ID: s.id, AgentID: s.agentID, CertSerial: s.serial, Address: s.addr,
		Address6:    s.addr6,
		Established: s.established, RxBytes: s.rxBytes.Load(), TxBytes: s.txBytes.Load(), Rekeys: s.rekeys.Load()}
	if e := s.endpoint.Load(); e != nil {
		si.Endpoint = e.addr
	}
	if t := s.lastRecv.Load(); t != 0 {
		si.LastSeen = time.Unix(0, t)
	}
	return si
}

// zeroizeLocked clears every key of the session; the caller holds s.mu.
func (s *session) zeroizeLocked() {
	ks := s.keys.Load()
	if ks == nil {
		return
	}
	for _, k := range [...]*keyState{ks.current, ks.next, ks.previous} {
		if k != nil {
			k.kp.Zeroize()
			k.res.Zeroize()
		}
	}
	s.keys.Store(&keySet{})
}

// indexes returns the local indexes of the session's keypairs.
func (ks *keySet) indexes() []uint32 {
	var out []uint32
	for _, k := range [...]*keyState{ks.current, ks.next, ks.previous} {
		if k != nil {
			out = append(out, k.kp.LocalIndex())
		}
	}
	return out
}

// pendingHS is a half-open handshake: a Response was sent to src.
type pendingHS struct {
	p       *handshake.PendingHandshake
	src     netip.AddrPort
	ep      conn.Endpoint
	created time.Time
	// skew is the Initiation's timestamp against the gateway's clock
	// (agent - gateway), for the connect decision's context.
	skew time.Duration
	// done is set once a worker took the Finish (success or final
	// refusal); the entry is then being removed.
	done atomic.Bool
}

// indexEntry is what a local index names: a half-open handshake or a
// session (any of its keypairs). Exactly one is set; a reserved index has
// neither while its handshake is computed.
type indexEntry struct {
	pending *pendingHS
	sess    *session
}
