package flow

import (
	"errors"
	"fmt"
	"hash/maphash"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/avonzt/avon/core/tunnel/transport"
	"github.com/avonzt/avon/sdk/policy"
)

// Config configures an Enforcer. Zero fields take the defaults documented
// on each; New validates the rest.
type Config struct {
	// Engine decides; nil denies every flow (fail closed) and says so once.
	Engine      policy.Engine
	PolicySetID string
	// Now is the calibrated clock (required).
	Now func() time.Time
	// Logger; nil logs nothing.
	Logger hclog.Logger
	// Limits of the flow tables.
	Limits Limits
	// MaxBatch, BatchDelay and EvalTimeout tune the Batcher (defaults
	// policy.MaxBatch, 2 ms, 2 s).
	MaxBatch    int
	BatchDelay  time.Duration
	EvalTimeout time.Duration
	// CacheSize bounds the decision cache (default 65536); CacheTTL is how
	// long a decision is reused (default 60 s: what a query carries beyond
	// the cache key, the time, is at most this stale).
	CacheSize int
	CacheTTL  time.Duration
	// DenialsPerSecond bounds the denials of one session handed to Denied
	// and logged (default 10); more are counted only.
	DenialsPerSecond int
	// Query builds the engine's query for a flow (default DefaultQuery);
	// ConnectQuery the query of a connect decision (AskConnect; default
	// DefaultConnectQuery).
	Query        QueryFunc
	ConnectQuery ConnectQueryFunc
	// Release receives the held packets of a pending flow that was allowed
	// (each after Limits.Headroom free bytes), to forward them. Denied
	// receives each denial (a new flow refused, or an open flow cut by a
	// re-evaluation), for the agent and the decision log. Both are called
	// without any lock of the Enforcer held, from the goroutine that
	// decided (a packet path, Reevaluate's caller or the batcher's); they
	// must not block for long. Nil: ignored.
	Release func(s *Session, pkts [][]byte)
	Denied  func(s *Session, d Denial)
}

// Defaults of Config.
const (
	DefaultCacheSize        = 1 << 16
	DefaultCacheTTL         = 60 * time.Second
	DefaultDenialsPerSecond = 10
)

// Subject is what the enforcer knows of a session for its queries.
type Subject struct {
	SessionID string
	AgentID   string
	// Address and Address6 are the agent's IPv4 and IPv6 tunnel
	// addresses (either may be the zero Addr: a single-stack session).
	Address  netip.Addr
	Address6 netip.Addr
	// Groups the agent belongs to (the parents of its Agent entity);
	// read-only once given.
	Groups []string
	// Posture of the last accepted pulse (empty before the first).
	OS           string
	AgentVersion string
	Facts        map[string]string // read-only once given
	// ClockOffset is the agent's calibration offset and Skew its clock
	// against the gateway's, as of the last accepted pulse.
	ClockOffset time.Duration
	Skew        time.Duration

	// posture is the JSON of the context's posture, made once per change
	// for DefaultQuery (postureJSON).
	posture []byte
}

// Posture is what an accepted pulse tells the enforcer (SetPulse).
type Posture struct {
	OS           string
	AgentVersion string
	Facts        map[string]string // read-only once given
	ClockOffset  time.Duration
	Skew         time.Duration
}

// Dest is what a flow reaches: the destination of its opening packet.
type Dest struct {
	Addr  netip.Addr
	Port  uint16 // 0 for protocols without ports
	Proto uint8
}

// QueryFunc builds the query (and the entities it refers to) deciding
// whether s may open a flow to d at now.
type QueryFunc func(s *Subject, d Dest, now time.Time) (policy.Query, []policy.Entity)

// Denial is a flow refused by policy: new, or cut by a re-evaluation.
type Denial struct {
	Key      Key // the flow's opening direction
	Decision Decision
	// Cut: the flow was open (allowed) and a re-evaluation denied it.
	Cut bool
}

// Session is one tunnel session's flows and subject. Its methods are
// safe for concurrent use.
type Session struct {
	e    *Enforcer
	t    *table
	data any
	subj atomic.Pointer[subjectState]

	denyMu     sync.Mutex
	denyWindow int64
	denyCount  int
}

type subjectState struct {
	Subject
	hash uint64
}

// Data returns the value given to AddSession.
func (s *Session) Data() any { return s.data }

// Subject returns the session's current subject.
func (s *Session) Subject() Subject { return s.subj.Load().Subject }

// Flows lists the session's flows.
func (s *Session) Flows() []FlowInfo {
	s.t.mu.Lock()
	defer s.t.mu.Unlock()
	out := make([]FlowInfo, 0, s.t.n)
	for _, sl := range s.t.m {
		if !sl.reply {
			out = append(out, sl.c.info())
		}
	}
	return out
}

// Enforcer is per-flow policy enforcement for the gateway: a flow table
// per session, the decision cache, the batcher in front of the policy
// engine, and re-evaluation. See the package documentation.
type Enforcer struct {
	cfg   Config
	lim   Limits
	log   hclog.Logger
	stats Stats
	cache *Cache
	batch *Batcher
	seed  maphash.Seed

	version    atomic.Uint64 // the policy set version of the last answer
	engineDown atomic.Bool   // the last call failed: logged once per transition
	closed     atomic.Bool
	lastSweep  atomic.Int64 // unix ns of Sweep's last walk

	// epochMu orders ReevaluateAll's purge against the batcher's cache
	// writes: an answer asked before a policy change is not cached after
	// it.
	epochMu sync.Mutex
	epoch   uint64

	sessMu   sync.RWMutex
	sessions map[*Session]struct{}

	// waiting holds the flows waiting for each query on its way, by key
	// and epoch: after ReevaluateAll a flow asks again and never joins a
	// query asked before the policy change.
	waitMu  sync.Mutex
	waiting map[waitKey][]waiter
}

type waitKey struct {
	key   CacheKey
	epoch uint64
}

// waiter is a flow waiting for the decision of a query.
type waiter struct {
	s   *Session
	c   *conn
	gen uint32
}

// New validates cfg and returns an Enforcer with its batcher running;
// Close stops it.
func New(cfg Config) (*Enforcer, error) {
	lim, ok := cfg.Limits.withDefaults()
	if !ok || cfg.Now == nil || cfg.CacheSize < 0 || cfg.CacheTTL < 0 || cfg.DenialsPerSecond < 0 {
		return nil, fmt.Errorf("flow: Now is required, limits must not be negative: %w", ErrConfig)
	}
	if cfg.CacheSize == 0 {
		cfg.CacheSize = DefaultCacheSize
	}
	if cfg.CacheTTL == 0 {
		cfg.CacheTTL = DefaultCacheTTL
	}
	if cfg.DenialsPerSecond == 0 {
		cfg.DenialsPerSecond = DefaultDenialsPerSecond
	}
	if cfg.Query == nil {
		cfg.Query = DefaultQuery
	}
	if cfg.ConnectQuery == nil {
		cfg.ConnectQuery = DefaultConnectQuery
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	e := &Enforcer{cfg: cfg, lim: lim, log: cfg.Logger, cache: NewCache(cfg.CacheSize, cfg.CacheTTL), seed: maphash.MakeSeed(),
		sessions: map[*Session]struct{}{}, waiting: map[waitKey][]waiter{}}
	b, err := NewBatcher(BatcherConfig{Engine: cfg.Engine, PolicySetID: cfg.PolicySetID, MaxBatch: cfg.MaxBatch,
		Delay: cfg.BatchDelay, Timeout: cfg.EvalTimeout, Stats: &e.stats}, e.deliver)
	if err != nil {
		return nil, err
	}
	e.batch = b
	if cfg.Engine == nil {
		e.engineDown.Store(true)
		e.log.Error("no policy engine: every new flow is denied (fail closed)")
	}
	return e, nil
}

// Stats returns the live counters.
func (e *Enforcer) Stats() *Stats { return &e.stats }

// Cache returns the decision cache (for tests and metrics).
func (e *Enforcer) Cache() *Cache { return e.cache }

// Batcher returns the batcher (for tests: Flush, Pending).
func (e *Enforcer) Batcher() *Batcher { return e.batch }

// Close stops the batcher; queries still waiting fail closed, silently.
func (e *Enforcer) Close() {
	e.closed.Store(true)
	e.batch.Close()
}

// AddSession starts tracking a session; data is returned by Session.Data.
func (e *Enforcer) AddSession(subj Subject, data any) *Session {
	s := &Session{e: e, t: newTable(), data: data}
	subj.posture = subj.postureJSON()
	s.subj.Store(&subjectState{Subject: subj, hash: e.subjectHash(&subj)})
	e.sessMu.Lock()
	e.sessions[s] = struct{}{}
	e.sessMu.Unlock()
	return s
}

// RemoveSession forgets a session and its flows; decisions still on their
// way for it are ignored.
func (e *Enforcer) RemoveSession(s *Session) {
	if s == nil {
		return
	}
	e.sessMu.Lock()
	delete(e.sessions, s)
	e.sessMu.Unlock()
	s.t.mu.Lock()
	e.clearLocked(s.t)
	s.t.mu.Unlock()
}

// subjectHash hashes everything of the subject a query carries.
func (e *Enforcer) subjectHash(s *Subject) uint64 {
	var h maphash.Hash
	h.SetSeed(e.seed)
	str := func(v string) {
		var n [8]byte
		l := len(v)
		for i := range n {
			n[i] = byte(l >> (8 * i))
		}
		h.Write(n[:])
		h.WriteString(v)
	}
	str(s.AgentID)
	str(s.Address.String())
	str(s.Address6.String())
	str(s.OS)
	str(s.AgentVersion)
	for _, k := range slices.Sorted(maps.Keys(s.Facts)) {
		str(k)
		str(s.Facts[k])
	}
	for _, g := range s.Groups {
		str(g)
	}
	// What queries carry of the clocks: milliseconds.
	str(strconv.FormatInt(s.ClockOffset.Milliseconds(), 10))
	str(strconv.FormatInt(s.Skew.Milliseconds(), 10))
	return h.Sum64()
}

// dest is the destination a flow's decision is about.
func dest(k Key) Dest {
	d := Dest{Addr: k.Dst, Port: k.DstPort, Proto: k.Proto}
	if k.Proto != ProtoTCP && k.Proto != ProtoUDP {
		d.Port = 0
	}
	return d
}

func (e *Enforcer) cacheKey(ss *subjectState, k Key) CacheKey {
	d := dest(k)
	return CacheKey{Version: e.version.Load(), Principal: ss.AgentID, Subject: ss.hash, Dst: d.Addr, Port: d.Port, Proto: d.Proto}
}

// FromAgent decides a packet the session's agent sent: in is what
// transport.ParseInner read of pkt. A packet of an allowed flow is
// Forward; the first packets of a new flow are Held until the decision
// (Release forwards them), unless the cache answers at once.
func (e *Enforcer) FromAgent(s *Session, pkt []byte, in transport.Inner, now time.Time) Action {
	p, err := FromInner(in, pkt)
	if err != nil {
		e.stats.DropMalformed.Add(1)
		return Drop
	}
	return e.track(s, &p, FromAgent, pkt[:p.Length], nil, now)
}

// ToAgent decides a packet for the session's agent. peer is the session
// whose tunnel address is the packet's source (agent-to-agent traffic),
// nil when none. A packet passes when it belongs to a flow the agent
// opened (return traffic needs no decision) or, from a peer, to a flow
// the peer opened and was allowed; anything else is unsolicited and
// dropped.
func (e *Enforcer) ToAgent(s *Session, pkt []byte, in transport.Inner, peer *Session, now time.Time) Action {
	p, err := FromInner(in, pkt)
	if err != nil {
		e.stats.DropMalformed.Add(1)
		return Drop
	}
	return e.track(s, &p, ToAgent, pkt[:p.Length], peer, now)
}

func (e *Enforcer) track(s *Session, p *Packet, dir Dir, raw []byte, peer *Session, now time.Time) Action {
	ns := now.UnixNano()
	t := s.t
	t.mu.Lock()
	var a Action
	switch p.Kind {
	case KindFragment:
		a = e.fragmentLocked(t, p, raw, ns)
	case KindRelated:
		a = Drop
		if sl, ok := t.m[p.Key]; ok && sl.c.verdict == Allow {
			sl.c.last = ns
			a = Forward
		} else {
			e.stats.DropRelated.Add(1)
		}
	default:
		sl, ok := t.m[p.Key]
		if ok && dir == FromAgent && e.retryLocked(t, sl, ns) {
			ok = false
		}
		if !ok {
			t.mu.Unlock()
			if dir == ToAgent {
				return e.openFromPeer(s, p, raw, peer, ns)
			}
			return e.open(s, p, raw, now)
		}
		a = e.hitLocked(t, sl, p, raw, ns)
	}
	if a == Forward {
		e.forwardedLocked(t)
	}
	t.mu.Unlock()
	return a
}

// FailClosedRetry is how long a flow denied because the engine could not
// decide (Decision.FailClosed: the engine down, restarting, timing out, or
// its queue full) stays denied before the next packet the agent sends on
// it asks again. A policy denial stays until a re-evaluation changes it;
// a fail-closed one is about the engine, not the flow, and waiting for the
// next pulse would keep a retransmitted SYN failing long after the engine
// is back. One second: TCP's first SYN retransmission.
const FailClosedRetry = time.Second

// retryLocked forgets the flow of sl when the agent's packet is its
// opening direction and its fail-closed denial is FailClosedRetry old, so
// that the packet opens it again (asking the engine); the caller holds
// t.mu.
func (e *Enforcer) retryLocked(t *table, sl slot, now int64) bool {
	c := sl.c
	if sl.reply || c.origin != FromAgent || c.verdict != Deny || c.decision == nil || !c.decision.FailClosed ||
		now-c.decided < int64(FailClosedRetry) {
		return false
	}
	e.removeLocked(t, c)
	e.stats.FlowsExpired.Add(^uint64(0)) // removeLocked counted an expiry: this is a retry
	e.stats.FailClosedRetries.Add(1)
	return true
}

// forwardBatch is how many forwarded packets a table counts before it
// adds them to Stats.Forwarded: one shared atomic per packet would bounce
// its cache line between the cores of the data path.
const forwardBatch = 64

// forwardedLocked counts a forwarded packet; the caller holds t.mu.
func (e *Enforcer) forwardedLocked(t *table) {
	if t.fwd++; t.fwd == forwardBatch {
		e.stats.Forwarded.Add(forwardBatch)
		t.fwd = 0
	}
}

// open starts a flow the agent opens: decided from the cache when it can
// be, else pending with its first packet held while the engine is asked.
func (e *Enforcer) open(s *Session, p *Packet, raw []byte, now time.Time) Action {
	ns := now.UnixNano()
	ss := s.subj.Load()
	key := e.cacheKey(ss, p.Key)
	d, hit := e.cache.Get(&key, ns)
	if hit {
		e.stats.CacheHits.Add(1)
	} else {
		e.stats.CacheMisses.Add(1)
	}
	t := s.t
	t.mu.Lock()
	if sl, ok := t.m[p.Key]; ok {
		// Another packet of the flow opened it meanwhile.
		a := e.hitLocked(t, sl, p, raw, ns)
		t.mu.Unlock()
		if a == Forward {
			e.stats.Forwarded.Add(1)
		}
		return a
	}
	if hit {
		v := Deny
		if d.Allow {
			v = Allow
		}
		c := e.createLocked(t, p, FromAgent, v, d, nil, ns)
		t.mu.Unlock()
		if c == nil {
			return Drop
		}
		e.counted(s, p.Key, d)
		if d.Allow {
			e.stats.Forwarded.Add(1)
			return Forward
		}
		e.stats.DropDenied.Add(1)
		e.denied(s, p.Key, d, false, ns)
		return Drop
	}
	c := e.createLocked(t, p, FromAgent, Pending, nil, raw, ns)
	var gen uint32
	if c != nil {
		gen = c.gen
	}
	t.mu.Unlock()
	if c == nil {
		return Drop
	}
	e.request(key, ss, dest(p.Key), waiter{s: s, c: c, gen: gen}, now)
	return Held
}

// openFromPeer starts a flow towards the agent that a peer agent opened
// and was allowed to.
func (e *Enforcer) openFromPeer(s *Session, p *Packet, raw []byte, peer *Session, ns int64) Action {
	allowed := false
	if peer != nil && peer != s {
		peer.t.mu.Lock()
		sl, ok := peer.t.m[p.Key]
		allowed = ok && !sl.reply && sl.c.origin == FromAgent && sl.c.verdict == Allow
		peer.t.mu.Unlock()
	}
	if !allowed {
		e.stats.DropUnsolicited.Add(1)
		return Drop
	}
	t := s.t
	t.mu.Lock()
	var a Action
	if sl, ok := t.m[p.Key]; ok {
		a = e.hitLocked(t, sl, p, raw, ns)
	} else if c := e.createLocked(t, p, ToAgent, Allow, nil, nil, ns); c != nil {
		a = Forward
	} else {
		a = Drop
	}
	t.mu.Unlock()
	if a == Forward {
		e.stats.Forwarded.Add(1)
	}
	return a
}

// request asks the engine about key for w, joining a query already on its
// way for the same key.
func (e *Enforcer) request(key CacheKey, ss *subjectState, d Dest, w waiter, now time.Time) {
	e.epochMu.Lock()
	epoch := e.epoch
	e.epochMu.Unlock()
	wk := waitKey{key: key, epoch: epoch}
	e.waitMu.Lock()
	if ws, ok := e.waiting[wk]; ok {
		e.waiting[wk] = append(ws, w)
		e.waitMu.Unlock()
		return
	}
	e.waiting[wk] = []waiter{w}
	e.waitMu.Unlock()
	q, ents := e.cfg.Query(&ss.Subject, d, now)
	if err := e.batch.Submit(Item{Key: key, Query: q, Entities: ents, epoch: epoch}); err != nil {
		e.deliver([]Item{{Key: key, epoch: epoch}}, nil, 0, err)
	}
}

// deliver is the batcher's DeliverFunc: it caches the answers, settles
// the flows waiting for them, and fails closed on an engine error.
func (e *Enforcer) deliver(items []Item, ds []policy.Decision, version uint64, err error) {
	now := e.cfg.Now().UnixNano()
	items = e.deliverConnect(items, ds, err)
	if len(items) == 0 {
		return
	}
	if err != nil {
		if errors.Is(err, ErrClosed) {
			return
		}
		if !errors.Is(err, errQueueFull) {
			e.engineFailed(err)
		}
	} else if e.engineDown.CompareAndSwap(true, false) {
		e.log.Info("policy engine available again: flows are decided by policy", "version", version)
	}
	if err == nil && version != e.version.Load() {
		e.epochMu.Lock()
		e.version.Store(version)
		e.cache.Purge()
		e.epochMu.Unlock()
	}
	var todo []settled
	for i, it := range items {
		var d *Decision
		if err != nil {
			d = &Decision{FailClosed: true, Reason: "the policy engine could not decide: denied (fail closed)"}
		} else {
			d = fromPolicy(&ds[i])
			k := it.Key
			k.Version = version
			e.epochMu.Lock()
			if it.epoch == e.epoch {
				e.cache.Put(&k, d, now)
			}
			e.epochMu.Unlock()
		}
		wk := waitKey{key: it.Key, epoch: it.epoch}
		e.waitMu.Lock()
		ws := e.waiting[wk]
		delete(e.waiting, wk)
		e.waitMu.Unlock()
		for _, w := range ws {
			if f, ok := e.settle(w, d, now); ok {
				todo = append(todo, f)
			}
		}
	}
	for _, f := range todo {
		e.follow(f, now)
	}
}

// deliverConnect hands the connect decisions of a batch to their
// callbacks and returns the flow items, in order, with ds cut to match.
func (e *Enforcer) deliverConnect(items []Item, ds []policy.Decision, err error) []Item {
	n := 0
	for _, it := range items {
		if it.connect != nil {
			n++
		}
	}
	if n == 0 {
		return items
	}
	if err != nil && !errors.Is(err, ErrClosed) && !errors.Is(err, errQueueFull) {
		e.engineFailed(err)
	} else if err == nil && e.engineDown.CompareAndSwap(true, false) {
		e.log.Info("policy engine available again: sessions and flows are decided by policy")
	}
	rest := make([]Item, 0, len(items)-n)
	var restDs []policy.Decision
	if ds != nil {
		restDs = make([]policy.Decision, 0, len(items)-n)
	}
	type call struct {
		f func(*Decision)
		d *Decision
	}
	calls := make([]call, 0, n)
	for i, it := range items {
		if it.connect == nil {
			rest = append(rest, it)
			if ds != nil {
				restDs = append(restDs, ds[i])
			}
			continue
		}
		var pd *policy.Decision
		if err == nil {
			pd = &ds[i]
		}
		calls = append(calls, call{f: it.connect, d: e.connectDecision(pd, err)})
	}
	if ds != nil {
		copy(ds, restDs)
	}
	for _, c := range calls {
		c.f(c.d)
	}
	return rest
}

// engineFailed records that an Evaluate call failed: the engine is
// unavailable (stopped, restarting, timing out or answering out of
// shape). The decision cache is emptied so that no cached allow outlives
// the engine: until it answers again every new flow is asked for, and
// fails closed.
func (e *Enforcer) engineFailed(err error) {
	e.epochMu.Lock()
	e.cache.Purge()
	e.epochMu.Unlock()
	e.stats.CachePurges.Add(1)
	if e.engineDown.CompareAndSwap(false, true) {
		e.log.Error("policy engine unavailable: decision cache emptied; new sessions, new flows and re-checked flows are denied (fail closed)",
			"error", err)
	}
}

// EngineUnavailable is for whoever supervises the engine (the plugin
// host): the engine stopped. The decision cache is emptied at once
// (engineFailed), before any call fails.
func (e *Enforcer) EngineUnavailable(cause error) { e.engineFailed(cause) }

// fromPolicy turns an engine's decision into ours. A decision with
// evaluation errors is a denial.
func fromPolicy(pd *policy.Decision) *Decision {
	d := &Decision{Allow: pd.Allow && len(pd.Errors) == 0, ReportOnly: pd.ReportOnly, PolicyIDs: slices.Clone(pd.DeterminingPolicies)}
	switch {
	case len(pd.Errors) > 0:
		d.Reason = "policy evaluation failed: " + strings.Join(pd.Errors, "; ")
	case len(pd.Reasons) > 0:
		d.Reason = strings.Join(pd.Reasons, "; ")
	case !d.Allow:
		d.Reason = "no policy allows this flow"
	}
	return d
}

// settled is what remains to do after a decision was applied to a flow:
// counting, releasing its held packets, telling of a denial.
type settled struct {
	s       *Session
	key     Key
	d       *Decision
	prev    Verdict
	release [][]byte
	dropped int
}

// settle applies decision d to the flow w waits for and reports what
// remains to do (follow); ok is false when nothing changed (the flow is
// gone or waits for a newer decision). Callers apply a whole batch before
// following up on any, so a cut takes effect before the callbacks and
// logs of the others run.
func (e *Enforcer) settle(w waiter, d *Decision, now int64) (settled, bool) {
	if e.closed.Load() {
		return settled{}, false
	}
	t := w.s.t
	t.mu.Lock()
	defer t.mu.Unlock()
	c := w.c
	if c.removed || c.gen != w.gen {
		return settled{}, false
	}
	f := settled{s: w.s, key: c.key, d: d, prev: c.verdict}
	c.decision, c.decided = d, now
	if d.Allow {
		c.verdict = Allow
		f.release, c.hold = c.hold, nil
	} else {
		c.verdict = Deny
		f.dropped = len(c.hold)
		c.hold = nil
	}
	return f, true
}

// follow counts, releases and reports a settled decision.
func (e *Enforcer) follow(f settled, now int64) {
	if f.prev == Pending {
		e.counted(f.s, f.key, f.d)
	}
	switch {
	case f.prev == Pending && f.d.Allow:
		if len(f.release) > 0 {
			e.stats.Released.Add(uint64(len(f.release)))
			if e.cfg.Release != nil && !e.closed.Load() {
				e.cfg.Release(f.s, f.release)
			}
		}
	case f.prev == Pending:
		e.stats.DropHold.Add(uint64(f.dropped))
		e.denied(f.s, f.key, f.d, false, now)
	case f.prev == Allow && !f.d.Allow:
		e.stats.Cut.Add(1)
		e.denied(f.s, f.key, f.d, true, now)
	case f.prev == Deny && f.d.Allow:
		e.stats.Restored.Add(1)
		e.log.Info("flow allowed again after re-evaluation", "session", f.s.Subject().SessionID, "flow", f.key.String())
	}
}

// counted counts a new flow's decision and logs report-only allowances.
func (e *Enforcer) counted(s *Session, k Key, d *Decision) {
	switch {
	case d.FailClosed:
		e.stats.FailClosed.Add(1)
		e.stats.Denied.Add(1)
	case !d.Allow:
		e.stats.Denied.Add(1)
	case d.ReportOnly:
		e.stats.Allowed.Add(1)
		e.stats.ReportOnly.Add(1)
		e.log.Info("flow allowed in report-only mode; the policy would deny it", "session", s.Subject().SessionID,
			"agent", s.Subject().AgentID, "flow", k.String(), "policies", d.PolicyIDs, "reason", d.Reason)
	default:
		e.stats.Allowed.Add(1)
	}
}

// denied hands a denial to the callback and the log, at most
// DenialsPerSecond per session.
func (e *Enforcer) denied(s *Session, k Key, d *Decision, cut bool, now int64) {
	s.denyMu.Lock()
	if now-s.denyWindow >= int64(time.Second) || now < s.denyWindow {
		s.denyWindow, s.denyCount = now, 0
	}
	ok := s.denyCount < e.cfg.DenialsPerSecond
	if ok {
		s.denyCount++
	}
	s.denyMu.Unlock()
	if !ok {
		e.stats.DenialsSuppressed.Add(1)
		return
	}
	e.stats.Denials.Add(1)
	subj := s.Subject()
	msg := "flow denied"
	if cut {
		msg = "open flow cut: re-evaluation denied it"
	}
	e.log.Info(msg, "session", subj.SessionID, "agent", subj.AgentID, "flow", k.String(), "policies", d.PolicyIDs,
		"reason", d.Reason, "fail_closed", d.FailClosed)
	if e.cfg.Denied != nil {
		e.cfg.Denied(s, Denial{Key: k, Decision: *d, Cut: cut})
	}
}

// SetPosture records the posture of a session's accepted pulse and
// re-evaluates its flows (Reevaluate): a changed posture changes the
// cache key, so every flow is decided for the new one.
func (e *Enforcer) SetPosture(s *Session, os, agentVersion string, facts map[string]string) int {
	cur := s.subj.Load()
	next := &subjectState{Subject: cur.Subject}
	next.OS, next.AgentVersion, next.Facts = os, agentVersion, facts
	next.posture = next.postureJSON()
	next.hash = e.subjectHash(&next.Subject)
	s.subj.Store(next)
	return e.Reevaluate(s)
}

// SetPulse is SetPosture with the clock figures of the pulse
// (calibration offset and skew), which queries carry too.
func (e *Enforcer) SetPulse(s *Session, p Posture) int {
	cur := s.subj.Load()
	next := &subjectState{Subject: cur.Subject}
	next.OS, next.AgentVersion, next.Facts = p.OS, p.AgentVersion, p.Facts
	next.ClockOffset, next.Skew = p.ClockOffset, p.Skew
	next.posture = next.postureJSON()
	next.hash = e.subjectHash(&next.Subject)
	s.subj.Store(next)
	return e.Reevaluate(s)
}

// Reevaluate re-checks the decided flows the session's agent opened,
// against the current posture and policy: from the cache when it has the
// answer, else through the engine. Flows now denied are cut (their
// packets dropped from the moment the answer is in, which is within the
// batch delay and the engine's answer time) and reported to Denied; flows
// now allowed pass again. It returns how many flows it re-checks.
func (e *Enforcer) Reevaluate(s *Session) int { return e.reevaluate(s, false) }

func (e *Enforcer) reevaluate(s *Session, pending bool) int {
	now := e.cfg.Now()
	ns := now.UnixNano()
	ss := s.subj.Load()
	type job struct {
		w   waiter
		key Key
	}
	var jobs []job
	t := s.t
	t.mu.Lock()
	for _, sl := range t.m {
		c := sl.c
		if sl.reply || c.removed || c.origin != FromAgent || (c.verdict == Pending && !pending) {
			continue
		}
		c.gen++
		jobs = append(jobs, job{w: waiter{s: s, c: c, gen: c.gen}, key: c.key})
	}
	t.mu.Unlock()
	e.stats.Reevaluations.Add(uint64(len(jobs)))
	var todo []settled
	for _, j := range jobs {
		ck := e.cacheKey(ss, j.key)
		if d, ok := e.cache.Get(&ck, ns); ok {
			e.stats.CacheHits.Add(1)
			if f, ok := e.settle(j.w, d, ns); ok {
				todo = append(todo, f)
			}
			continue
		}
		e.stats.CacheMisses.Add(1)
		e.request(ck, ss, dest(j.key), j.w, now)
	}
	for _, f := range todo {
		e.follow(f, ns)
	}
	return len(jobs)
}

// ReevaluateAll re-checks every session's flows after a policy change:
// the cache is emptied first (the new version is learnt from the engine's
// next answer), and answers to queries asked before are not cached.
// Pending flows are asked again too. It returns how many flows it
// re-checks.
func (e *Enforcer) ReevaluateAll() int {
	e.epochMu.Lock()
	e.epoch++
	e.cache.Purge()
	e.epochMu.Unlock()
	e.sessMu.RLock()
	all := make([]*Session, 0, len(e.sessions))
	for s := range e.sessions {
		all = append(all, s)
	}
	e.sessMu.RUnlock()
	n := 0
	for _, s := range all {
		n += e.reevaluate(s, true)
	}
	return n
}

// SweepInterval is how often Sweep walks the tables: idle flows go at
// most this long after their timeout, and a timer that ticks every second
// walks every flow only every SweepInterval.
const SweepInterval = 5 * time.Second

// Sweep is Expire at most once per SweepInterval (or when the clock went
// back); it returns how many flows went (0 when it did not walk).
func (e *Enforcer) Sweep(now time.Time) int {
	ns := now.UnixNano()
	last := e.lastSweep.Load()
	if ns-last < int64(SweepInterval) && ns >= last {
		return 0
	}
	if !e.lastSweep.CompareAndSwap(last, ns) {
		return 0
	}
	return e.Expire(now)
}

// Expire forgets idle flows of every session at now; it returns how many
// went.
func (e *Enforcer) Expire(now time.Time) int {
	ns := now.UnixNano()
	e.sessMu.RLock()
	all := make([]*Session, 0, len(e.sessions))
	for s := range e.sessions {
		all = append(all, s)
	}
	e.sessMu.RUnlock()
	n := 0
	for _, s := range all {
		s.t.mu.Lock()
		n += e.expireLocked(s.t, ns)
		s.t.mu.Unlock()
	}
	return n
}
