package flow

import (
	"encoding/json"
	"net/netip"
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

// serviceAttrs are the attributes of a Service entity; its fields are
// also the context's destination.
type serviceAttrs struct {
	Name     string `json:"name,omitempty"`
	IP       string `json:"ip"`
	Port     uint16 `json:"port"`
	Protocol string `json:"protocol"`
}

// flowContext is the schema's FlowContext without weekday, which the
// plugin derives from time (sending it is an error).
type flowContext struct {
	Time              string          `json:"time"`
	CalibrationSkewMS int64           `json:"calibration_skew_ms"`
	Posture           postureContext  `json:"posture"`
	Source            sourceContext   `json:"source"`
	Location          locationContext `json:"location"`
	Destination       serviceAttrs    `json:"destination"`
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

type sourceContext struct {
	IP   string `json:"ip"`
	Port uint16 `json:"port"`
}

// locationContext is unknown to the gateway: three empty strings.
type locationContext struct {
	Country string `json:"country"`
	Region  string `json:"region"`
	City    string `json:"city"`
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
// source is the agent's tunnel address; its port is 0 because a decision
// is cached per destination, not per source port. Protocols other than
// tcp, udp, icmp and icmpv6 are named by their number ("47").
func DefaultQuery(s *Subject, d Dest, now time.Time) (policy.Query, []policy.Entity) {
	proto := ProtoName(d.Proto)
	id := proto + "/" + d.Addr.String()
	if d.Proto == ProtoTCP || d.Proto == ProtoUDP {
		id = proto + "/" + netip.AddrPortFrom(d.Addr, d.Port).String()
	}
	dst := serviceAttrs{IP: d.Addr.String(), Port: d.Port, Protocol: proto}
	svc := dst
	svc.Name = id
	tags := s.Facts
	if tags == nil {
		tags = map[string]string{}
	}
	src := "0.0.0.0" // no tunnel address: a session of a test, say
	if s.Address.IsValid() {
		src = s.Address.String()
	}
	ctx, _ := json.Marshal(flowContext{
		Time:              now.UTC().Format(TimeFormat),
		CalibrationSkewMS: s.Skew.Milliseconds(),
		Posture: postureContext{OS: s.OS, AgentVersion: s.AgentVersion, ClockOffsetMS: s.ClockOffset.Milliseconds(),
			SkewMS: s.Skew.Milliseconds(), Tags: tags},
		Source:      sourceContext{IP: src},
		Destination: dst,
	})
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
	svcAttrs, _ := json.Marshal(svc)
	ents = append(ents, agent, policy.Entity{Ref: res, Attributes: svcAttrs})
	return policy.Query{
		Principal: principal,
		Action:    policy.EntityRef{Type: "Action", ID: "reach"},
		Resource:  res,
		Context:   ctx,
	}, ents
}
