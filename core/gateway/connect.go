package gateway

import (
	"context"
	"strings"
	"time"

	"github.com/avonzt/avon/core/gateway/flow"
	"github.com/avonzt/avon/core/handshake"
	"github.com/avonzt/avon/core/tunnel/control"
	"github.com/avonzt/avon/core/tunnel/transport"
)

// Access policy for sessions (docs/policy.md, "How the gateway asks"):
// with Config.Policy enforcing, a verified handshake becomes a session
// only when the engine allows Action "connect" for the agent on this
// gateway, and every accepted pulse and policy change asks again.
//
// The handshake worker that verified the Finish (and ran Authorize and
// Groups) submits the query to the flow enforcer's batcher and moves on;
// the half-open handshake stays reserved (done set, so the timer does not
// expire it). The decision comes back on Gateway.connects, a channel with
// room for every half-open handshake, and a worker finishes: an allowed
// session is established as without policy; a denied one (or one the
// engine could not decide: fail closed) is refused with a Close
// (control.CloseConnectDenied) sealed with the session's transport keys
// and sent instead of the SessionConfig, so the reason and policy ids
// reach the agent encrypted, never readable by an observer of the
// handshake. Nothing of the session was installed: no packet of it was
// accepted.
//
// Re-checks run from the receive path (pulse) and PolicyChanged; they
// only submit queries. An answer that denies ends the session (Close
// CloseConnectDenied, within the batch delay and the engine's answer time);
// an answer the engine could not give keeps the session (its flows fail
// closed on their own re-checks) and the next pulse asks again.

// connected is a connect decision for a verified handshake.
type connected struct {
	idx uint32
	ph  *pendingHS
	res *handshake.Result
	j   job
	a   *admission
	d   *flow.Decision
}

// askConnect admits the agent of a verified Finish (Authorize, groups)
// and asks the policy engine whether it may connect; doConnected
// continues when the answer is in.
func (g *Gateway) askConnect(ctx context.Context, idx uint32, ph *pendingHS, res *handshake.Result, j job) {
	a, err := g.admit(ctx, res)
	if err != nil {
		g.refuse(idx, ph, res, j, err)
		return
	}
	subj := flow.Subject{AgentID: res.Peer.ID, Groups: a.groups, Skew: ph.skew}
	c := flow.Connect{GatewayID: g.cfg.Policy.GatewayID, Source: j.src}
	g.flows.AskConnect(&subj, c, g.cfg.Now(), func(d *flow.Decision) {
		select {
		case g.connects <- connected{idx: idx, ph: ph, res: res, j: j, a: a, d: d}:
		default:
			// Not reached: the channel has room for every half-open
			// handshake. Fail closed without the answer.
			g.cfg.Logger.Error("connect decision lost: session refused", "agent", res.Peer.ID)
			res.Zeroize()
			g.dropPending(idx, ph)
		}
	})
}

// doConnected finishes a handshake whose connect decision is in.
func (g *Gateway) doConnected(ctx context.Context, c connected) {
	id := c.res.Peer.ID
	switch {
	case !c.d.Allow:
		g.refuseConnect(c)
		return
	case c.d.ReportOnly:
		g.cfg.Logger.Info("session allowed in report-only mode; the policy would deny connect", "agent", id,
			"endpoint", c.j.src.String(), "policies", c.d.PolicyIDs, "reason", c.d.Reason)
	}
	g.finishEstablish(ctx, c.idx, c.ph, c.res, c.j, c.a)
}

// refuse answers a Finish refused after it verified with an authenticated
// HandshakeError and forgets the handshake.
func (g *Gateway) refuse(idx uint32, ph *pendingHS, res *handshake.Result, j job, err error) {
	g.stats.FinishRefused.Add(1)
	g.cfg.Logger.Warn("session not established", "agent", res.Peer.ID, "error", err)
	msg, ok := ph.p.ErrorFor(err)
	res.Zeroize()
	// Forgotten before the answer goes out: an agent that reads it finds
	// nothing of the handshake left.
	g.dropPending(idx, ph)
	if ok {
		g.sendError(j, msg)
	}
}

// refuseConnect tells the agent of a denied connect why, sealed with the
// session's transport keys (a Close, code CloseConnectDenied), and
// forgets the handshake.
func (g *Gateway) refuseConnect(c connected) {
	// Counted before the Close goes out.
	g.stats.ConnectRefused.Add(1)
	g.stats.FinishRefused.Add(1)
	reason := connectReason(c.d)
	g.cfg.Logger.Warn("session refused: connect denied by policy", "agent", c.res.Peer.ID, "endpoint", c.j.src.String(),
		"policies", c.d.PolicyIDs, "reason", c.d.Reason, "fail_closed", c.d.FailClosed)
	// The half-open handshake is forgotten before the Close goes out: an
	// agent that reads the Close finds nothing of it left.
	g.dropPending(c.idx, c.ph)
	now := g.cfg.Now()
	res := c.res
	kp, err := transport.NewKeypair(transport.AEADID(res.AEAD), &res.SendKey, &res.RecvKey, res.LocalIndex, res.RemoteIndex, now)
	res.Zeroize()
	if err == nil {
		s := &session{}
		s.keys.Store(&keySet{current: &keyState{res: res, kp: kp}})
		s.endpoint.Store(&epRef{ep: c.j.ep, addr: c.j.src})
		g.sendControl(s, &control.Close{Code: control.CloseConnectDenied, Reason: reason}, now)
		kp.Zeroize()
	}
}

// connectReason is the reason a connect denial gives the agent: the
// policy's reason and the ids of the policies that decided, cut to the
// Close's limit ("connect denied: " is the agent's).
func connectReason(d *flow.Decision) string {
	r := d.Reason
	if len(d.PolicyIDs) > 0 {
		r += " (policy " + strings.Join(d.PolicyIDs, ", ") + ")"
	}
	return truncateUTF8(r, control.MaxReason)
}

// recheckConnect asks connect again for a live session (its posture
// changed, or the policy).
func (g *Gateway) recheckConnect(s *session, now time.Time) {
	if g.flows == nil || s.flow == nil || s.ended.Load() {
		return
	}
	c := flow.Connect{GatewayID: g.cfg.Policy.GatewayID}
	if ep := s.endpoint.Load(); ep != nil {
		c.Source = ep.addr
	}
	g.flows.ConnectFor(s.flow, c, now, func(d *flow.Decision) { g.connectRechecked(s, d) })
}

// recheckAllConnects asks connect again for every live session (a policy
// change). The queries go through the batcher in batches; nothing here
// waits for the engine.
func (g *Gateway) recheckAllConnects() {
	g.table.RLock()
	all := make([]*session, 0, len(g.table.byID))
	for _, s := range g.table.byID {
		all = append(all, s)
	}
	g.table.RUnlock()
	now := g.cfg.Now()
	for _, s := range all {
		g.recheckConnect(s, now)
	}
}

// connectRechecked acts on the answer of a re-check: a denial ends the
// session, the agent told why.
func (g *Gateway) connectRechecked(s *session, d *flow.Decision) {
	if s.ended.Load() {
		return
	}
	switch {
	case d.FailClosed:
		// The engine could not decide: the session stays, its flows fail
		// closed on their own, and the next pulse asks again.
		g.cfg.Logger.Debug("connect re-check not decided: session kept, its flows fail closed", "session", s.id.String(),
			"agent", s.agentID, "reason", d.Reason)
	case !d.Allow:
		g.stats.ConnectCut.Add(1)
		g.cfg.Logger.Warn("session cut: connect no longer allowed by policy", "session", s.id.String(), "agent", s.agentID,
			"policies", d.PolicyIDs, "reason", d.Reason)
		g.endSession(s, control.CloseConnectDenied, connectReason(d), true)
	case d.ReportOnly:
		g.cfg.Logger.Info("session kept in report-only mode; the policy would deny connect", "session", s.id.String(),
			"agent", s.agentID, "policies", d.PolicyIDs, "reason", d.Reason)
	}
}

// drainConnects zeroizes the handshakes whose connect decisions nobody
// will take any more (Close, after every goroutine stopped).
func (g *Gateway) drainConnects() {
	for {
		select {
		case c := <-g.connects:
			c.res.Zeroize()
			c.ph.p.Zeroize()
		default:
			return
		}
	}
}
