package gateway

import (
	"context"
	"fmt"
	"net/netip"
	"time"
	"unicode/utf8"

	"github.com/avonzt/avon/core/gateway/flow"
	"github.com/avonzt/avon/core/pulse"
	"github.com/avonzt/avon/core/tunnel/control"
	"github.com/avonzt/avon/sdk/policy"
)

// PolicyMode switches per-flow policy enforcement.
type PolicyMode string

// Policy modes.
const (
	// PolicyOff (or "") keeps the gateway out of policy: flows to Routes
	// leave through the kernel, where its firewall applies.
	PolicyOff PolicyMode = "off"
	// PolicyEnforce decides every new flow with the policy engine
	// (core/gateway/flow): agent to network, network to agent and agent
	// to agent.
	PolicyEnforce PolicyMode = "enforce"
)

// PolicyConfig configures per-flow enforcement (docs/architecture.md,
// "Flow enforcement"). Its zero value is PolicyOff.
type PolicyConfig struct {
	Mode PolicyMode
	// Engine decides; nil with PolicyEnforce denies every flow (fail
	// closed) until an engine is configured.
	Engine      policy.Engine
	PolicySetID string
	// Limits of the flow tables (Headroom is set by the gateway); zero
	// fields take flow's defaults.
	Limits flow.Limits
	// BatchDelay, EvalTimeout, CacheSize and CacheTTL tune the decisions
	// (flow.Config; zero: flow's defaults).
	BatchDelay  time.Duration
	EvalTimeout time.Duration
	CacheSize   int
	CacheTTL    time.Duration
	// Query builds the engine's queries (default flow.DefaultQuery).
	Query flow.QueryFunc
	// Groups, when set, returns the groups of an agent (the parents of its
	// Agent entity in every query), asked once when its session is
	// established. An error refuses the session (handshake.ErrNotAuthorized):
	// without its groups no decision about the agent would be right. Nil:
	// agents belong to no group.
	Groups func(ctx context.Context, agentID string) ([]string, error)
	// GatewayID names this gateway in connect decisions
	// (Gateway::"<id>"): the id of its certificate; "" is
	// DefaultGatewayID. With PolicyEnforce every session is admitted by
	// Action "connect" (connect.go).
	GatewayID string
	// ConnectQuery builds the connect queries (default
	// flow.DefaultConnectQuery).
	ConnectQuery flow.ConnectQueryFunc
}

// DefaultGatewayID names a gateway whose PolicyConfig.GatewayID is empty.
const DefaultGatewayID = "gateway"

// newEnforcer builds the flow enforcer of an enforcing gateway.
func (g *Gateway) newEnforcer() (*flow.Enforcer, error) {
	pc := g.cfg.Policy
	lim := pc.Limits
	lim.Headroom = tunOffset
	e, err := flow.New(flow.Config{Engine: pc.Engine, PolicySetID: pc.PolicySetID, Now: g.cfg.Now,
		Logger: g.cfg.Logger.Named("flow"), Limits: lim, BatchDelay: pc.BatchDelay, EvalTimeout: pc.EvalTimeout,
		CacheSize: pc.CacheSize, CacheTTL: pc.CacheTTL, Query: pc.Query, ConnectQuery: pc.ConnectQuery,
		Release: g.releaseHeld, Denied: g.sendDenial})
	if err != nil {
		return nil, fmt.Errorf("gateway: flow enforcement: %w: %w", ErrConfig, err)
	}
	return e, nil
}

// releaseHeld writes the held packets of a flow that was just allowed to
// the TUN (each after tunOffset free bytes).
func (g *Gateway) releaseHeld(fs *flow.Session, pkts [][]byte) {
	s, ok := fs.Data().(*session)
	if !ok || s.ended.Load() || len(pkts) == 0 {
		return
	}
	var bytes uint64
	for _, p := range pkts {
		bytes += uint64(len(p) - tunOffset)
	}
	s.rxBytes.Add(bytes)
	g.stats.TunTxPackets.Add(uint64(len(pkts)))
	g.stats.TunTxBytes.Add(bytes)
	if _, err := g.dev.Write(pkts, tunOffset); err != nil && !isClosed(err) {
		g.cfg.Logger.Debug("tun write failed", "error", err)
	}
}

// sendDenial tells the agent that a flow was denied (new) or cut
// (re-evaluation), with the deciding policies and the reason.
func (g *Gateway) sendDenial(fs *flow.Session, d flow.Denial) {
	s, ok := fs.Data().(*session)
	if !ok || s.ended.Load() {
		return
	}
	g.sendControl(s, denialMessage(d), g.cfg.Now())
}

// denialMessage turns a denial into its control message, cutting the
// reason and the policy ids to the message's limits.
func denialMessage(d flow.Denial) *control.Denial {
	k := d.Key
	sp, dp := k.SrcPort, k.DstPort
	if k.Proto != flow.ProtoTCP && k.Proto != flow.ProtoUDP {
		sp, dp = 0, 0
	}
	reason := d.Decision.Reason
	if d.Cut {
		reason = "open flow cut: " + reason
	}
	m := &control.Denial{Proto: k.Proto, Src: netip.AddrPortFrom(k.Src, sp), Dst: netip.AddrPortFrom(k.Dst, dp),
		Reason: truncateUTF8(reason, control.MaxReason)}
	// The body's fixed part: proto, two addresses with family and port,
	// the reason with its length, the id count.
	budget := control.MaxBody - (1 + 2*(1+k.Src.BitLen()/8+2) + 2 + len(m.Reason) + 1)
	for _, id := range d.Decision.PolicyIDs {
		id = truncateUTF8(id, control.MaxPolicyID)
		if id == "" || len(m.PolicyIDs) == control.MaxPolicyIDs || 1+len(id) > budget {
			continue
		}
		budget -= 1 + len(id)
		m.PolicyIDs = append(m.PolicyIDs, id)
	}
	return m
}

// truncateUTF8 cuts s to at most n bytes without splitting a character;
// invalid UTF-8 is replaced.
func truncateUTF8(s string, n int) string {
	if !utf8.ValidString(s) {
		s = string([]rune(s))
	}
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

// PolicyChanged re-evaluates every open flow after a policy change (the
// core calls it on policy.changed events); flows now denied are cut and
// their agents told. It returns how many flows are re-checked (0 when
// enforcement is off).
func (g *Gateway) PolicyChanged() int {
	if g.flows == nil {
		return 0
	}
	n := g.flows.ReevaluateAll()
	g.recheckAllConnects()
	return n
}

// PolicyUnavailable is for the supervisor of the policy engine (the
// plugin host): the engine stopped. Cached decisions stop answering at
// once: new flows fail closed until the engine is back (docs/policy.md,
// "When the plugin is down").
func (g *Gateway) PolicyUnavailable(cause error) {
	if g.flows != nil {
		g.flows.EngineUnavailable(cause)
	}
}

// Reevaluate re-checks the open flows of session id (a posture or
// attribute change the core learnt of); 0 when enforcement is off or the
// session is unknown.
func (g *Gateway) Reevaluate(id pulse.ID) int {
	s := g.sessionByID(id)
	if g.flows == nil || s == nil || s.flow == nil {
		return 0
	}
	return g.flows.Reevaluate(s.flow)
}

// FlowStats returns the enforcement counters; nil when enforcement is off.
func (g *Gateway) FlowStats() *flow.Stats {
	if g.flows == nil {
		return nil
	}
	return g.flows.Stats()
}

// SessionFlows lists the tracked flows of session id (nil when
// enforcement is off or the session is unknown).
func (g *Gateway) SessionFlows(id pulse.ID) []flow.FlowInfo {
	s := g.sessionByID(id)
	if g.flows == nil || s == nil || s.flow == nil {
		return nil
	}
	return s.flow.Flows()
}
