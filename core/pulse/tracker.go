package pulse

import (
	"context"
	"crypto/subtle"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/avonzt/avon/core/tunnel/control"
)

// Defaults of Config.
const (
	DefaultInterval = 10 * time.Second
	DefaultMissed   = 3
	DefaultMaxSkew  = 5 * time.Second // calibration's default max_skew
)

// Config tunes a Tracker. The zero value takes every default.
type Config struct {
	// Interval is the pulse interval the agents are told (SessionConfig).
	Interval time.Duration
	// Missed is how many intervals may pass without an accepted pulse
	// before a session is dead.
	Missed int
	// MaxSkew bounds |agent time - gateway time| of an accepted pulse
	// before the decision reports ClockSkew.
	MaxSkew time.Duration
}

// SessionInfo is what the tracker knows a session by.
type SessionInfo struct {
	ID          ID
	AgentID     string
	CertSerial  string    // the agent certificate's serial, hex
	Established time.Time // when Finish verified: the beat clock starts here
}

// Posture is what the last accepted pulse said, for policy. Facts is shared
// and read-only: a new pulse replaces the map, never changes it.
type Posture struct {
	Seq          uint64
	Received     time.Time     // gateway time the pulse was accepted
	AgentTime    time.Time     // the agent's calibrated time in the pulse
	ClockOffset  time.Duration // the agent's calibration offset (calibrated - system)
	Skew         time.Duration // AgentTime - Received: positive when the agent is ahead
	OS           string
	AgentVersion string
	Facts        map[string]string
}

// Verifier re-checks a session on an accepted pulse: certificate status
// (revocation, expiry), the agent's state, policy for the posture, token
// validity. Contract:
//   - it is called by the owner after Beat, never under the tracker's lock,
//     so it may call the Tracker, block on I/O and take its time within ctx;
//   - a nil error keeps the session; any error ends it, and the error's text
//     becomes the decision's Reason (keep secrets out of it);
//   - it must be safe for concurrent use (pulses of different sessions are
//     handled concurrently) and must fail closed: a lookup it cannot make
//     within ctx is an error, not a pass.
type Verifier func(ctx context.Context, s SessionInfo, p Posture) error

// Reasons a Decision ends a session or flags it.
const (
	ReasonClockSkew = "clock skew"
)

// Decision is the outcome of an accepted pulse.
type Decision struct {
	Session SessionInfo
	Posture Posture
	// Ack answers the pulse: its NextToken and ServerTime are set; the
	// owner adds an AddressToken when it issues one. Send it unless End.
	Ack control.PulseAck
	// ClockSkew: |Posture.Skew| > MaxSkew. The pulse was still accepted
	// (its token and sequence were right) and the ack's ServerTime lets the
	// agent recalibrate; the Verifier sees the skew in Posture and decides.
	ClockSkew bool
	// End: the session must end (a Close with Reason, then Remove).
	End    bool
	Reason string
	Err    error // the Verifier's error when End
}

// session is one tracked session. All fields are guarded by Tracker.mu.
type session struct {
	info      SessionInfo
	serial    string // normalized CertSerial: the bySerial key
	secret    [32]byte
	cur, prev Token
	prevOK    bool   // prev is still usable once (the last ack may be lost)
	ended     bool   // End was called: no more pulses, Dead reports it
	seq       uint64 // last accepted sequence number
	last      int64  // unix ns of the last accepted pulse, or Established
	posture   *Posture
}

func (s *session) wipe() {
	clear(s.secret[:])
	clear(s.cur[:])
	clear(s.prev[:])
}

// Tracker tracks live sessions' pulses. It is safe for concurrent use.
type Tracker struct {
	cfg Config

	// mu guards everything below; no method calls out while holding it.
	mu struct {
		sync.Mutex
		closed   bool
		key      [32]byte
		sessions map[ID]*session
		byAgent  map[string][]ID
		bySerial map[string][]ID
		ended    map[ID]struct{} // the sessions End marked, until Removed
	}
}

// New returns a tracker whose key is drawn from rand (the core's RNG).
func New(cfg Config, rand io.Reader) (*Tracker, error) {
	if cfg.Interval == 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Missed == 0 {
		cfg.Missed = DefaultMissed
	}
	if cfg.MaxSkew == 0 {
		cfg.MaxSkew = DefaultMaxSkew
	}
	if cfg.Interval < 0 || cfg.Missed < 0 || cfg.MaxSkew < 0 || cfg.Missed > 1000 || cfg.Interval > 24*time.Hour {
		return nil, fmt.Errorf("new tracker: interval %s, missed %d, max skew %s: %w", cfg.Interval, cfg.Missed, cfg.MaxSkew, ErrInvalidArgument)
	}
	t := &Tracker{cfg: cfg}
	if rand == nil {
		return nil, fmt.Errorf("new tracker: no random source: %w", ErrInvalidArgument)
	}
	if _, err := io.ReadFull(rand, t.mu.key[:]); err != nil {
		clear(t.mu.key[:])
		return nil, fmt.Errorf("new tracker: key: %w: %w", ErrRandom, err)
	}
	t.mu.sessions = make(map[ID]*session)
	t.mu.byAgent = make(map[string][]ID)
	t.mu.bySerial = make(map[string][]ID)
	t.mu.ended = make(map[ID]struct{})
	return t, nil
}

// Config returns the configuration in effect (defaults filled in).
func (t *Tracker) Config() Config { return t.cfg }

// Add starts tracking a session whose Finish verified and returns the first
// session token, for the SessionConfig. Errors: ErrInvalidArgument (zero id,
// empty agent id, serial not hex, zero Established), ErrExists, ErrClosed.
func (t *Tracker) Add(info SessionInfo) (Token, error) {
	serial := NormalizeSerial(info.CertSerial)
	switch {
	case info.ID == ID{}:
		return Token{}, fmt.Errorf("add: zero session id: %w", ErrInvalidArgument)
	case info.AgentID == "":
		return Token{}, fmt.Errorf("add %s: no agent id: %w", info.ID, ErrInvalidArgument)
	case serial == "":
		return Token{}, fmt.Errorf("add %s: serial %.70q is not hex: %w", info.ID, info.CertSerial, ErrInvalidArgument)
	case info.Established.IsZero():
		return Token{}, fmt.Errorf("add %s: no establishment time: %w", info.ID, ErrInvalidArgument)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.mu.closed {
		return Token{}, fmt.Errorf("add %s: %w", info.ID, ErrClosed)
	}
	if _, ok := t.mu.sessions[info.ID]; ok {
		return Token{}, fmt.Errorf("add %s: %w", info.ID, ErrExists)
	}
	s := &session{info: info, serial: serial, last: info.Established.UnixNano()}
	s.secret = sessionSecret(&t.mu.key, info.ID)
	s.cur = token(&s.secret, 0)
	t.mu.sessions[info.ID] = s
	t.mu.byAgent[info.AgentID] = append(t.mu.byAgent[info.AgentID], info.ID)
	t.mu.bySerial[serial] = append(t.mu.bySerial[serial], info.ID)
	return s.cur, nil
}

// Beat checks a pulse of session id received at now and, when it passes,
// rotates the session token, records the beat and the posture, and returns
// the decision. Checks, in order: the session is tracked and not ended, the
// token is the current one or (once) the previous one, the sequence number
// is above the last accepted one. Errors: ErrUnknownSession, ErrEnded,
// ErrToken, ErrReplay, ErrInvalidArgument (nil pulse), ErrClosed; on any
// error nothing changed.
func (t *Tracker) Beat(id ID, p *control.Pulse, now time.Time) (Decision, error) {
	if p == nil {
		return Decision{}, fmt.Errorf("beat %s: nil pulse: %w", id, ErrInvalidArgument)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.mu.closed {
		return Decision{}, fmt.Errorf("beat %s: %w", id, ErrClosed)
	}
	s := t.mu.sessions[id]
	if s == nil {
		return Decision{}, fmt.Errorf("beat %s: %w", id, ErrUnknownSession)
	}
	if s.ended {
		return Decision{}, fmt.Errorf("beat %s: %w", id, ErrEnded)
	}
	okCur := subtle.ConstantTimeCompare(p.SessionToken[:], s.cur[:])
	okPrev := subtle.ConstantTimeCompare(p.SessionToken[:], s.prev[:]) & b2i(s.prevOK)
	if okCur|okPrev != 1 {
		return Decision{}, fmt.Errorf("beat %s seq %d: %w", id, p.Seq, ErrToken)
	}
	if p.Seq <= s.seq {
		return Decision{}, fmt.Errorf("beat %s: seq %d after %d: %w", id, p.Seq, s.seq, ErrReplay)
	}

	next := token(&s.secret, p.Seq)
	if okCur == 1 {
		s.prev, s.prevOK = s.cur, true
	} else {
		// The agent missed the last ack; it gets this one or none.
		clear(s.prev[:])
		s.prevOK = false
	}
	s.cur = next
	s.seq = p.Seq
	s.last = now.UnixNano()
	skew := subSat(p.AgentTime, s.last)
	s.posture = &Posture{
		Seq: p.Seq, Received: now, AgentTime: time.Unix(0, p.AgentTime), ClockOffset: time.Duration(p.ClockOffset),
		Skew: skew, OS: p.OS, AgentVersion: p.AgentVersion, Facts: maps.Clone(p.Facts),
	}
	d := Decision{
		Session:   s.info,
		Posture:   *s.posture,
		Ack:       control.PulseAck{Seq: p.Seq, NextToken: next, ServerTime: s.last},
		ClockSkew: skew > t.cfg.MaxSkew || skew < -t.cfg.MaxSkew,
	}
	return d, nil
}

// Handle is Beat followed by v (when not nil) outside the lock. When v
// fails, the session is ended (End) and the decision says End with the
// error's text as Reason; the owner sends a Close instead of the ack and
// Removes the session.
func (t *Tracker) Handle(ctx context.Context, id ID, p *control.Pulse, now time.Time, v Verifier) (Decision, error) {
	d, err := t.Beat(id, p, now)
	if err != nil || v == nil {
		return d, err
	}
	if verr := v(ctx, d.Session, d.Posture); verr != nil {
		t.End(id)
		d.End, d.Reason, d.Err = true, verr.Error(), verr
	}
	return d, nil
}

// End marks a session ended: it accepts no more pulses and Dead reports it
// until it is Removed. It reports whether the session was tracked.
func (t *Tracker) End(id ID) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.mu.sessions[id]
	if s == nil {
		return false
	}
	s.ended = true
	t.mu.ended[id] = struct{}{}
	return true
}

// Ended returns the sessions End marked and not yet Removed. Unlike Dead it
// costs nothing per live session: an owner that schedules each session's
// pulse deadline itself (DeadAt) calls it every tick.
func (t *Tracker) Ended() []ID {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.mu.ended) == 0 {
		return nil
	}
	out := make([]ID, 0, len(t.mu.ended))
	for id := range t.mu.ended {
		out = append(out, id)
	}
	return out
}

// DeadAt returns the time after which session id is dead if no further
// pulse is accepted (the last accepted pulse, or Established, plus
// Missed*Interval: Dead reports it at any later instant), and whether the
// session is tracked. An ended session's deadline is its last pulse's too;
// Ended reports it.
func (t *Tracker) DeadAt(id ID) (time.Time, bool) {
	limit := t.cfg.Interval * time.Duration(t.cfg.Missed)
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.mu.sessions[id]
	if s == nil {
		return time.Time{}, false
	}
	return time.Unix(0, s.last).Add(limit), true
}

// Dead returns the sessions that are ended or had no pulse accepted for
// more than Missed*Interval at now (a session is not dead at exactly that
// age). It keeps reporting them until they are Removed.
func (t *Tracker) Dead(now time.Time) []ID {
	limit := t.cfg.Interval * time.Duration(t.cfg.Missed)
	cut := now.UnixNano()
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []ID
	for id, s := range t.mu.sessions {
		if s.ended || subSat(cut, s.last) > limit {
			out = append(out, id)
		}
	}
	return out
}

// Remove stops tracking a session and wipes its secrets. It reports whether
// the session was tracked.
func (t *Tracker) Remove(id ID) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.mu.sessions[id]
	if s == nil {
		return false
	}
	delete(t.mu.sessions, id)
	delete(t.mu.ended, id)
	unindex(t.mu.byAgent, s.info.AgentID, id)
	unindex(t.mu.bySerial, s.serial, id)
	s.wipe()
	return true
}

func unindex(m map[string][]ID, k string, id ID) {
	ids := slices.DeleteFunc(m[k], func(x ID) bool { return x == id })
	if len(ids) == 0 {
		delete(m, k)
		return
	}
	m[k] = ids
}

// ByAgent returns the sessions of an agent.
func (t *Tracker) ByAgent(agentID string) []ID {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.mu.byAgent[agentID])
}

// BySerial returns the sessions authenticated with the certificate of this
// serial (compared after NormalizeSerial; the issuer is not compared, see
// Revocations).
func (t *Tracker) BySerial(serial string) []ID {
	n := NormalizeSerial(serial)
	if n == "" {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.mu.bySerial[n])
}

// Facts returns the posture of a session's last accepted pulse; false when
// the session is unknown or has not pulsed yet. Posture.Facts is shared and
// must not be modified.
func (t *Tracker) Facts(id ID) (Posture, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.mu.sessions[id]
	if s == nil || s.posture == nil {
		return Posture{}, false
	}
	return *s.posture, true
}

// Info returns a tracked session's SessionInfo.
func (t *Tracker) Info(id ID) (SessionInfo, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.mu.sessions[id]
	if s == nil {
		return SessionInfo{}, false
	}
	return s.info, true
}

// Sessions returns the ids of every tracked session, for a resync.
func (t *Tracker) Sessions() []ID {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Collect(maps.Keys(t.mu.sessions))
}

// Len returns how many sessions are tracked.
func (t *Tracker) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.mu.sessions)
}

// Close wipes the key and every session's secrets and forgets the sessions;
// later calls fail with ErrClosed (or find nothing).
func (t *Tracker) Close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.mu.closed {
		return
	}
	t.mu.closed = true
	clear(t.mu.key[:])
	for _, s := range t.mu.sessions {
		s.wipe()
	}
	clear(t.mu.sessions)
	clear(t.mu.byAgent)
	clear(t.mu.bySerial)
	clear(t.mu.ended)
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// subSat is a-b in nanoseconds, saturated instead of overflowing.
func subSat(a, b int64) time.Duration {
	d := a - b
	if (a >= 0) != (b >= 0) && (d >= 0) != (a >= 0) {
		if a >= 0 {
			return math.MaxInt64
		}
		return math.MinInt64
	}
	return time.Duration(d)
}
