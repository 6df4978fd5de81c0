package flow

import (
	"net/netip"
	"sync"
	"time"
)

// Verdict is the state of a flow's policy decision.
type Verdict uint8

const (
	// Pending: the decision was asked for; the first packets wait in the
	// flow's hold queue.
	Pending Verdict = iota + 1
	// Allow: packets of both directions pass.
	Allow
	// Deny: packets of both directions are dropped.
	Deny
)

func (v Verdict) String() string {
	switch v {
	case Pending:
		return "pending"
	case Allow:
		return "allow"
	case Deny:
		return "deny"
	}
	return "unknown"
}

// Dir is a packet's direction relative to a session's agent.
type Dir uint8

const (
	// FromAgent: the session's agent sent it (agent -> network or agent).
	FromAgent Dir = iota + 1
	// ToAgent: it is for the session's agent (network or agent -> agent).
	ToAgent
)

// Action is what to do with a packet.
type Action uint8

const (
	// Forward the packet now.
	Forward Action = iota + 1
	// Held: the tracker kept a copy on a pending flow; forward nothing now.
	Held
	// Drop the packet.
	Drop
)

func (a Action) String() string {
	switch a {
	case Forward:
		return "forward"
	case Held:
		return "held"
	case Drop:
		return "drop"
	}
	return "unknown"
}

// tcpState is the little of TCP the tracker follows: enough to pick the
// idle timeout and to tear a connection down on FIN and RST.
type tcpState uint8

const (
	tcpNone        tcpState = iota // not TCP
	tcpOpening                     // only the opener's packets seen
	tcpEstablished                 // both directions seen
	tcpClosing                     // a FIN seen
	tcpClosed                      // FIN both ways, or RST: lingers for retransmissions
)

// Timeouts are the idle timeouts of flows: a flow with no packet for its
// timeout is forgotten.
type Timeouts struct {
	TCPOpening     time.Duration // SYN sent, no answer (default 30 s)
	TCPEstablished time.Duration // default 1 h
	TCPClosing     time.Duration // a FIN seen (default 2 min)
	TCPClosed      time.Duration // FIN both ways or RST (default 10 s)
	UDP            time.Duration // replied (default 2 min)
	UDPUnreplied   time.Duration // default 30 s
	ICMP           time.Duration // ICMP and ICMPv6 (default 30 s)
	Other          time.Duration // other protocols (default 2 min)
	Pending        time.Duration // waiting for a decision (default 10 s)
	Denied         time.Duration // a denied flow, dropping quietly (default 10 s)
	Fragment       time.Duration // a first fragment's id, for the later ones (default 5 s)
}

// DefaultTimeouts are the timeouts of a zero Timeouts.
var DefaultTimeouts = Timeouts{
	TCPOpening: 30 * time.Second, TCPEstablished: time.Hour, TCPClosing: 2 * time.Minute, TCPClosed: 10 * time.Second,
	UDP: 2 * time.Minute, UDPUnreplied: 30 * time.Second, ICMP: 30 * time.Second, Other: 2 * time.Minute,
	Pending: 10 * time.Second, Denied: 10 * time.Second, Fragment: 5 * time.Second,
}

func (t Timeouts) withDefaults() Timeouts {
	d := DefaultTimeouts
	for _, f := range []struct{ v, def *time.Duration }{
		{&t.TCPOpening, &d.TCPOpening}, {&t.TCPEstablished, &d.TCPEstablished}, {&t.TCPClosing, &d.TCPClosing},
		{&t.TCPClosed, &d.TCPClosed}, {&t.UDP, &d.UDP}, {&t.UDPUnreplied, &d.UDPUnreplied}, {&t.ICMP, &d.ICMP},
		{&t.Other, &d.Other}, {&t.Pending, &d.Pending}, {&t.Denied, &d.Denied}, {&t.Fragment, &d.Fragment},
	} {
		if *f.v <= 0 {
			*f.v = *f.def
		}
	}
	return t
}

// Limits bound the tables.
type Limits struct {
	// MaxFlows bounds the flows of every table together (default 1<<20);
	// MaxFlowsPerSession one session's (default 4096). A new flow over
	// either is dropped (DropTableFull) until idle flows expire.
	MaxFlows           int
	MaxFlowsPerSession int
	// MaxHold is how many packets a pending flow holds (default 4); more
	// are dropped.
	MaxHold int
	// MaxFragments bounds the first-fragment ids one session remembers
	// (default 64).
	MaxFragments int
	// Headroom is the free room before each held packet's copy (the
	// gateway's TUN offset), so a released packet can be written as is.
	Headroom int
	Timeouts Timeouts
}

// Defaults of Limits.
const (
	DefaultMaxFlows           = 1 << 20
	DefaultMaxFlowsPerSession = 4096
	DefaultMaxHold            = 4
	DefaultMaxFragments       = 64
)

func (l Limits) withDefaults() (Limits, bool) {
	if l.MaxFlows < 0 || l.MaxFlowsPerSession < 0 || l.MaxHold < 0 || l.MaxFragments < 0 || l.Headroom < 0 || l.Headroom > 1<<16 {
		return l, false
	}
	if l.MaxFlows == 0 {
		l.MaxFlows = DefaultMaxFlows
	}
	if l.MaxFlowsPerSession == 0 {
		l.MaxFlowsPerSession = DefaultMaxFlowsPerSession
	}
	if l.MaxHold == 0 {
		l.MaxHold = DefaultMaxHold
	}
	if l.MaxFragments == 0 {
		l.MaxFragments = DefaultMaxFragments
	}
	l.Timeouts = l.Timeouts.withDefaults()
	return l, true
}

// conn is one tracked flow. Every field is guarded by its Table's mu.
type conn struct {
	key     Key // the opening direction
	origin  Dir // FromAgent: the agent opened it; ToAgent: the other side did
	verdict Verdict
	tcp     tcpState
	finFwd  bool
	finRev  bool
	replied bool // a packet of the reply direction was seen
	removed bool // expired or cleared: decisions for it are ignored
	created int64
	last    int64
	decided int64 // when the decision in force was made (unix ns)
	hold    [][]byte
	// gen counts decision requests; an answer for an older one is stale.
	gen      uint32
	decision *Decision // the decision in force; nil while pending
	packets  [2]uint64 // opening, reply direction
}

// slot is a table entry: each flow is in the map under its Key and under
// the Key's Reverse, so a reply finds its flow in one lookup.
type slot struct {
	c     *conn
	reply bool
}

type fragKey struct {
	src, dst netip.Addr
	id       uint32
	proto    uint8
}

type fragSlot struct {
	c       *conn
	reply   bool
	expires int64
}

// table is one session's flows. All fields are guarded by mu.
type table struct {
	mu    sync.Mutex
	m     map[Key]slot
	frags map[fragKey]fragSlot
	n     int
	fwd   uint64 // forwarded packets not yet in Stats.Forwarded
}

func newTable() *table {
	return &table{m: make(map[Key]slot, 8), frags: map[fragKey]fragSlot{}}
}

// hitLocked applies the packet p of direction dir to the flow of its slot
// and returns what to do with it; raw is the packet (copied when held).
func (e *Enforcer) hitLocked(t *table, s slot, p *Packet, raw []byte, now int64) Action {
	c := s.c
	c.last = now
	if s.reply {
		c.replied = true
		c.packets[1]++
	} else {
		c.packets[0]++
	}
	if c.key.Proto == ProtoTCP && p.Kind == KindFlow {
		c.tcpUpdate(p.TCPFlags, s.reply)
	}
	if p.Fragmented && c.verdict != Deny {
		e.rememberFragLocked(t, p, s, now)
	}
	switch c.verdict {
	case Allow:
		return Forward
	case Pending:
		if s.reply || len(c.hold) >= e.lim.MaxHold {
			e.stats.DropHold.Add(1)
			return Drop
		}
		c.hold = append(c.hold, e.copyPacket(raw))
		e.stats.Held.Add(1)
		return Held
	}
	e.stats.DropDenied.Add(1)
	return Drop
}

// copyPacket copies raw after Headroom free bytes.
func (e *Enforcer) copyPacket(raw []byte) []byte {
	b := make([]byte, e.lim.Headroom+len(raw))
	copy(b[e.lim.Headroom:], raw)
	return b
}

// tcpUpdate follows FIN and RST. A SYN on a closed flow is a new
// connection on the same ports: it opens again under the same verdict
// (re-evaluation keeps verdicts current).
func (c *conn) tcpUpdate(flags uint8, reply bool) {
	switch {
	case flags&tcpRST != 0:
		c.tcp = tcpClosed
		return
	case !reply && flags&(tcpSYN|tcpACK) == tcpSYN && c.tcp == tcpClosed:
		c.tcp, c.finFwd, c.finRev, c.replied = tcpOpening, false, false, false
		return
	case reply && c.tcp == tcpOpening:
		c.tcp = tcpEstablished
	}
	if flags&tcpFIN != 0 {
		if reply {
			c.finRev = true
		} else {
			c.finFwd = true
		}
		if c.finFwd && c.finRev {
			c.tcp = tcpClosed
		} else if c.tcp != tcpClosed {
			c.tcp = tcpClosing
		}
	}
}

// timeout is the idle timeout of c in its state.
func (c *conn) timeout(t *Timeouts) time.Duration {
	switch c.verdict {
	case Pending:
		return t.Pending
	case Deny:
		return t.Denied
	}
	switch c.key.Proto {
	case ProtoTCP:
		switch c.tcp {
		case tcpEstablished:
			return t.TCPEstablished
		case tcpClosing:
			return t.TCPClosing
		case tcpClosed:
			return t.TCPClosed
		}
		return t.TCPOpening
	case ProtoUDP:
		if c.replied {
			return t.UDP
		}
		return t.UDPUnreplied
	case ProtoICMP, ProtoICMPv6:
		return t.ICMP
	}
	return t.Other
}

// createLocked adds a flow opened by p in direction dir with verdict v
// (holding raw when Pending). It returns nil when a table is full.
func (e *Enforcer) createLocked(t *table, p *Packet, dir Dir, v Verdict, d *Decision, raw []byte, now int64) *conn {
	if t.n >= e.lim.MaxFlowsPerSession || e.stats.Flows.Load() >= int64(e.lim.MaxFlows) {
		e.stats.DropTableFull.Add(1)
		return nil
	}
	c := &conn{key: p.Key, origin: dir, verdict: v, decision: d, created: now, last: now, decided: now}
	c.packets[0] = 1
	if p.Key.Proto == ProtoTCP {
		c.tcp = tcpOpening
		c.tcpUpdate(p.TCPFlags, false)
	}
	t.m[p.Key] = slot{c: c}
	if r := p.Key.Reverse(); r != p.Key {
		t.m[r] = slot{c: c, reply: true}
	}
	t.n++
	e.stats.Flows.Add(1)
	e.stats.FlowsCreated.Add(1)
	if v == Pending && raw != nil && e.lim.MaxHold > 0 {
		c.hold = append(c.hold, e.copyPacket(raw))
		e.stats.Held.Add(1)
	}
	if p.Fragmented && v != Deny {
		e.rememberFragLocked(t, p, slot{c: c}, now)
	}
	return c
}

// rememberFragLocked records a first fragment's id so that the later
// fragments follow its flow.
func (e *Enforcer) rememberFragLocked(t *table, p *Packet, s slot, now int64) {
	k := fragKey{src: p.Key.Src, dst: p.Key.Dst, id: p.FragID, proto: p.Key.Proto}
	if _, ok := t.frags[k]; !ok && len(t.frags) >= e.lim.MaxFragments {
		for fk, fs := range t.frags {
			if now >= fs.expires || fs.c.removed {
				delete(t.frags, fk)
			}
		}
		if len(t.frags) >= e.lim.MaxFragments {
			return
		}
	}
	t.frags[k] = fragSlot{c: s.c, reply: s.reply, expires: now + int64(e.lim.Timeouts.Fragment)}
}

// fragmentLocked places a later fragment in its first fragment's flow.
func (e *Enforcer) fragmentLocked(t *table, p *Packet, raw []byte, now int64) Action {
	fs, ok := t.frags[fragKey{src: p.Key.Src, dst: p.Key.Dst, id: p.FragID, proto: p.Key.Proto}]
	if !ok || now >= fs.expires || fs.c.removed {
		e.stats.DropFragment.Add(1)
		return Drop
	}
	return e.hitLocked(t, slot{c: fs.c, reply: fs.reply}, p, raw, now)
}

// removeLocked forgets c.
func (e *Enforcer) removeLocked(t *table, c *conn) {
	if c.removed {
		return
	}
	c.removed = true
	if s, ok := t.m[c.key]; ok && s.c == c {
		delete(t.m, c.key)
	}
	if r := c.key.Reverse(); r != c.key {
		if s, ok := t.m[r]; ok && s.c == c {
			delete(t.m, r)
		}
	}
	if n := len(c.hold); n > 0 {
		e.stats.DropHold.Add(uint64(n))
		c.hold = nil
	}
	t.n--
	e.stats.Flows.Add(-1)
	e.stats.FlowsExpired.Add(1)
}

// expireLocked forgets the flows idle past their timeout and the expired
// fragment ids; it returns how many flows went.
func (e *Enforcer) expireLocked(t *table, now int64) int {
	n := 0
	for _, s := range t.m {
		if s.reply || s.c.removed {
			continue
		}
		if idle := now - s.c.last; idle >= int64(s.c.timeout(&e.lim.Timeouts)) || idle < -int64(time.Minute) {
			e.removeLocked(t, s.c)
			n++
		}
	}
	for k, fs := range t.frags {
		if now >= fs.expires || fs.c.removed {
			delete(t.frags, k)
		}
	}
	return n
}

// clearLocked forgets every flow of t.
func (e *Enforcer) clearLocked(t *table) {
	e.stats.Forwarded.Add(t.fwd)
	t.fwd = 0
	for _, s := range t.m {
		if !s.reply {
			e.removeLocked(t, s.c)
		}
	}
	clear(t.frags)
}

// FlowInfo describes one flow, for status and tests.
type FlowInfo struct {
	Key      Key // the opening direction
	Origin   Dir
	Verdict  Verdict
	Held     int
	Packets  [2]uint64 // opening, reply direction
	Created  time.Time
	LastSeen time.Time
	// PolicyIDs and Reason of the decision in force.
	PolicyIDs []string
	Reason    string
}

func (c *conn) info() FlowInfo {
	fi := FlowInfo{Key: c.key, Origin: c.origin, Verdict: c.verdict, Held: len(c.hold), Packets: c.packets,
		Created: time.Unix(0, c.created), LastSeen: time.Unix(0, c.last)}
	if c.decision != nil {
		fi.PolicyIDs, fi.Reason = c.decision.PolicyIDs, c.decision.Reason
	}
	return fi
}
