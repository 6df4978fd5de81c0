package flow

import (
	"encoding/json"
	"errors"
	"net/netip"
	"strconv"
	"time"

	"github.com/avonzt/avon/sdk/policy"
)

// Connect is what a connect decision is about besides the session's
// Subject: the gateway the session is to, and where the agent's tunnel
// packets come from.
type Connect struct {
	// GatewayID names the Gateway entity (the id in the gateway's
	// certificate, avon://gateway/<id>).
	GatewayID string
	// Source is the agent's outer address and port (its UDP endpoint).
	Source netip.AddrPort
}

// ConnectQueryFunc builds the query deciding whether s may keep (or
// open) a session to c.GatewayID at now.
type ConnectQueryFunc func(s *Subject, c Connect, now time.Time) (policy.Query, []policy.Entity)

// gatewayAttrs are the attributes of a Gateway entity.
type gatewayAttrs struct {
	Name   string `json:"name"`
	Region string `json:"region"`
}

// DefaultConnectQuery asks whether Agent::"<agent id>" may take
// Action::"connect" on Gateway::"<gateway id>". It sends the Agent entity
// (name, os) with its groups as parents, a Group entity per group, the
// Gateway entity (name: its id, region "") and the context of the
// policy-abac schema's connect action (SessionContext):
//
//	{"time": "2026-12-02T10:00:00.000Z", "calibration_skew_ms": 12,
//	 "posture": {"os": "", "agent_version": "", "clock_offset_ms": 0, "skew_ms": 12, "tags": {}},
//	 "source": {"ip": "203.0.113.7", "port": 40000},
//	 "location": {"country": "", "region": "", "city": ""}}
//
// source is the agent's outer address (not its tunnel address: a session
// has none before it is admitted); posture is the last pulse's, empty
// before the first one (at the handshake), when calibration_skew_ms is the
// skew of the handshake's Initiation timestamp.
func DefaultConnectQuery(s *Subject, c Connect, now time.Time) (policy.Query, []policy.Entity) {
	posture := s.posture
	if posture == nil {
		posture = s.postureJSON()
	}
	src := c.Source.Addr().Unmap()
	if !src.IsValid() {
		src = netip.IPv4Unspecified()
	}
	ctx := make([]byte, 0, len(posture)+192)
	ctx = append(ctx, `{"time":"`...)
	ctx = now.UTC().AppendFormat(ctx, TimeFormat)
	ctx = append(ctx, `","calibration_skew_ms":`...)
	ctx = strconv.AppendInt(ctx, s.Skew.Milliseconds(), 10)
	ctx = append(ctx, `,"posture":`...)
	ctx = append(ctx, posture...)
	ctx = append(ctx, `,"source":{"ip":"`...)
	ctx = src.WithZone("").AppendTo(ctx)
	ctx = append(ctx, `","port":`...)
	ctx = strconv.AppendUint(ctx, uint64(c.Source.Port()), 10)
	ctx = append(ctx, `},"location":{"country":"","region":"","city":""}}`...)

	principal := policy.EntityRef{Type: "Agent", ID: s.AgentID}
	res := policy.EntityRef{Type: "Gateway", ID: c.GatewayID}
	ents := make([]policy.Entity, 0, 2+len(s.Groups))
	agent := policy.Entity{Ref: principal, Parents: make([]policy.EntityRef, 0, len(s.Groups))}
	agent.Attributes, _ = json.Marshal(agentAttrs{Name: s.AgentID, OS: s.OS})
	for _, g := range s.Groups {
		ref := policy.EntityRef{Type: "Group", ID: g}
		agent.Parents = append(agent.Parents, ref)
		attrs, _ := json.Marshal(groupAttrs{Name: g})
		ents = append(ents, policy.Entity{Ref: ref, Attributes: attrs})
	}
	gw := policy.Entity{Ref: res}
	gw.Attributes, _ = json.Marshal(gatewayAttrs{Name: c.GatewayID})
	ents = append(ents, agent, gw)
	return policy.Query{
		Principal: principal,
		Action:    policy.EntityRef{Type: "Action", ID: "connect"},
		Resource:  res,
		Context:   ctx,
	}, ents
}

// ConnectSubject completes a subject given to AskConnect before a session
// exists (its posture JSON); AddSession does the same for sessions.
func ConnectSubject(s Subject) *Subject {
	s.posture = s.postureJSON()
	return &s
}

// AskConnect asks the engine, through the batcher, whether subj may have
// a session as c says, and calls done exactly once with the decision:
// from the batcher's goroutine, or from the caller's when the query cannot
// be queued (then, or when the engine cannot decide, the decision fails
// closed). A connect decision is never cached: it depends on the source
// address and the time. done must not block for long.
func (e *Enforcer) AskConnect(subj *Subject, c Connect, now time.Time, done func(*Decision)) {
	if subj.posture == nil {
		subj = ConnectSubject(*subj)
	}
	q, ents := e.cfg.ConnectQuery(subj, c, now)
	it := Item{Query: q, Entities: ents, connect: done}
	if err := e.batch.Submit(it); err != nil {
		e.deliver([]Item{it}, nil, 0, err)
	}
}

// ConnectFor asks AskConnect for an established session, with its
// current subject (the posture of its last pulse).
func (e *Enforcer) ConnectFor(s *Session, c Connect, now time.Time, done func(*Decision)) {
	ss := s.subj.Load()
	e.AskConnect(&ss.Subject, c, now, done)
}

// connectDecision turns the answer to a connect query into a Decision and
// counts it.
func (e *Enforcer) connectDecision(pd *policy.Decision, err error) *Decision {
	var d *Decision
	switch {
	case err != nil:
		reason := "the policy engine could not decide: denied (fail closed)"
		if errors.Is(err, ErrClosed) {
			reason = "the gateway is closing"
		}
		d = &Decision{FailClosed: true, Reason: reason}
	default:
		d = fromPolicy(pd)
		if !d.Allow && len(pd.Errors) == 0 && len(pd.Reasons) == 0 {
			d.Reason = "no policy allows this agent to connect"
		}
	}
	st := &e.stats
	switch {
	case d.FailClosed:
		st.ConnectFailClosed.Add(1)
		st.ConnectDenied.Add(1)
	case !d.Allow:
		st.ConnectDenied.Add(1)
	case d.ReportOnly:
		st.ConnectAllowed.Add(1)
		st.ConnectReportOnly.Add(1)
	default:
		st.ConnectAllowed.Add(1)
	}
	return d
}
