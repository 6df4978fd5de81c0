package flow

import (
	"encoding/json"
	"net/netip"
	"strconv"
	"time"

	"github.com/avonzt/avon/sdk/policy"
)

// The entities and context DefaultQuery sends follow the policy-abac
// schema (plugins/policy-abac/abac/avon.cedarschema; docs/policy.md, "How
// the gateway asks"): the JSON types are the schema's, every attribute it
// requires is present, none it does not declare is sent.

// agentAttrs are the attributes of an Agent entity.
type agentAttrs struct {
	Name string `json:"name"`
	OS   string `json:"os"`
}

// groupAttrs are the attributes of a Group entity.
type groupAttrs struct {
	Name string `json:"name"`
}

// postureContext is the Posture entity given inline: its attributes and
// the pulse's custom facts as tags.
type postureContext struct {
	OS            string            `json:"os"`
	AgentVersion  string            `json:"agent_version"`
	ClockOffsetMS int64             `json:"clock_offset_ms"`
	SkewMS        int64             `json:"skew_ms"`
	Tags          map[string]string `json:"tags"`
}

// TimeFormat is how queries carry the decision time: RFC 3339 in UTC with
// milliseconds.
const TimeFormat = "2006-01-02T15:04:05.000Z07:00"

// DefaultQuery asks whether Agent::"<agent id>" may take Action::"reach"
// on Service::"<proto>/<address>:<port>" ("<proto>/<address>" without
// ports). It sends the Agent entity (name, os) with its groups as parents,
// a Group entity per group (name), the Service entity (name, ip, port,
// protocol) and the context of the policy-abac schema's reach action:
//
//	{"time": "2026-12-02T10:00:00.000Z", "calibration_skew_ms": 12,
//	 "posture": {"os": "linux", "agent_version": "0.3.0", "clock_offset_ms": -4, "skew_ms": 12,
//	             "tags": {"disk.encrypted": "true"}},
//	 "source": {"ip": "100.96.0.5", "port": 0},
//	 "location": {"country": "", "region": "", "city": ""},
//	 "destination": {"ip": "10.20.0.10", "port": 443, "protocol": "tcp"}}
//
// source is the agent's tunnel address of the destination's family (the
// other one when the session has only that); its port is 0 because a decision
// is cached per destination, not per source port. Protocols other than
// tcp, udp, icmp and icmpv6 are named by their number ("47").
func DefaultQuery(s *Subject, d Dest, now time.Time) (policy.Query, []policy.Entity) {
	proto := ProtoName(d.Proto)
	id := proto + "/" + d.Addr.String()
	if d.Proto == ProtoTCP || d.Proto == ProtoUDP {
		id = proto + "/" + netip.AddrPortFrom(d.Addr, d.Port).String()
	}
	posture := s.posture
	if posture == nil {
		posture = s.postureJSON()
	}
	// Addresses, numbers, protocol names (ProtoName: letters or digits)
	// and the time need no escaping: the JSON is appended directly, the
	// session's posture made once per pulse (this runs once per query).
	dst := make([]byte, 0, 64)
	dst = append(dst, `{"ip":"`...)
	dst = d.Addr.AppendTo(dst)
	dst = append(dst, `","port":`...)
	dst = strconv.AppendUint(dst, uint64(d.Port), 10)
	dst = append(dst, `,"protocol":"`...)
	dst = append(dst, proto...)
	dst = append(dst, `"}`...)
	ctx := make([]byte, 0, len(posture)+len(dst)+192)
	ctx = append(ctx, `{"time":"`...)
	ctx = now.UTC().AppendFormat(ctx, TimeFormat)
	ctx = append(ctx, `","calibration_skew_ms":`...)
	ctx = strconv.AppendInt(ctx, s.Skew.Milliseconds(), 10)
	ctx = append(ctx, `,"posture":`...)
	ctx = append(ctx, posture...)
	ctx = append(ctx, `,"source":{"ip":"`...)
	if src := s.source(d.Addr); src.IsValid() {
		ctx = src.AppendTo(ctx)
	} else {
		ctx = append(ctx, "0.0.0.0"...) // no tunnel address: a session of a test, say
	}
	ctx = append(ctx, `","port":0},"location":{"country":"","region":"","city":""},"destination":`...)
	ctx = append(ctx, dst...)
	ctx = append(ctx, '}')

	principal := policy.EntityRef{Type: "Agent", ID: s.AgentID}
	res := policy.EntityRef{Type: "Service", ID: id}
	ents := make([]policy.Entity, 0, 2+len(s.Groups))
	agent := policy.Entity{Ref: principal, Parents: make([]policy.EntityRef, 0, len(s.Groups))}
	agent.Attributes, _ = json.Marshal(agentAttrs{Name: s.AgentID, OS: s.OS})
	for _, g := range s.Groups {
		ref := policy.EntityRef{Type: "Group", ID: g}
		agent.Parents = append(agent.Parents, ref)
		attrs, _ := json.Marshal(groupAttrs{Name: g})
		ents = append(ents, policy.Entity{Ref: ref, Attributes: attrs})
	}
	svc := make([]byte, 0, len(dst)+len(id)+12)
	svc = append(svc, `{"name":"`...)
	svc = append(svc, id...) // proto, address and port: no escaping
	svc = append(svc, `",`...)
	svc = append(svc, dst[1:]...)
	ents = append(ents, agent, policy.Entity{Ref: res, Attributes: svc})
	return policy.Query{
		Principal: principal,
		Action:    policy.EntityRef{Type: "Action", ID: "reach"},
		Resource:  res,
		Context:   ctx,
	}, ents
}

// postureJSON encodes the context's posture: the Posture entity inline,
// the pulse's facts as its tags.
func (s *Subject) postureJSON() []byte {
	tags := s.Facts
	if tags == nil {
		tags = map[string]string{}
	}
	b, err := json.Marshal(postureContext{OS: s.OS, AgentVersion: s.AgentVersion, ClockOffsetMS: s.ClockOffset.Milliseconds(),
		SkewMS: s.Skew.Milliseconds(), Tags: tags})
	if err != nil { // not for strings and integers
		return []byte(`{"os":"","agent_version":"","clock_offset_ms":0,"skew_ms":0,"tags":{}}`)
	}
	return b
}

// source is the agent's tunnel address a flow to dst comes from: the one
// of dst's family, else whichever the session has.
func (s *Subject) source(dst netip.Addr) netip.Addr {
	if dst.Is6() && !dst.Is4In6() && s.Address6.IsValid() {
		return s.Address6
	}
	if s.Address.IsValid() {
		return s.Address
	}
	return s.Address6
}
