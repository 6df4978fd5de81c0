package flow_test

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/avonzt/avon/core/gateway/flow"
	"github.com/avonzt/avon/plugins/policy-abac/abac"
	"github.com/avonzt/avon/sdk/policy"
)

// conformPolicies read every attribute DefaultQuery sends, so a query
// missing one, or sending one of the wrong type, fails evaluation.
const conformPolicies = `@id("eng-web")
@reason("engineering reaches 10.99.0.0/16 over HTTPS")
permit (principal in Group::"eng", action == Action::"reach", resource is Service)
when { context.destination.port == 443 && context.destination.protocol == "tcp" &&
       context.destination.ip.isInRange(ip("10.99.0.0/16")) &&
       resource.ip == context.destination.ip && resource.port == 443 && resource.protocol == "tcp" &&
       principal.os == context.posture.os && principal.name != "" &&
       context.source.ip.isInRange(ip("100.96.0.0/12")) && context.source.port == 0 &&
       context.location.country == "" &&
       context.time > datetime("2026-01-01T00:00:00Z") && context.weekday >= 0 &&
       context.calibration_skew_ms < 1000 && context.posture.skew_ms == context.calibration_skew_ms &&
       context.posture.clock_offset_ms > -1000 && context.posture.agent_version like "0.*" };

@id("no-ssh")
@reason("SSH is closed")
forbid (principal, action == Action::"reach", resource)
when { context.destination.port == 22 };

@id("encrypted")
@reason("the disk must be encrypted")
forbid (principal, action == Action::"reach", resource)
unless { context.posture.hasTag("disk.encrypted") && context.posture.getTag("disk.encrypted") == "true" };
`

// TestDefaultQueryConformsToSchema evaluates DefaultQuery's entities and
// contexts with the policy-abac schema and policies that read all of
// them: a mismatch (a missing attribute, a wrong type, weekday sent, an
// undeclared key) is an error in the decision.
func TestDefaultQueryConformsToSchema(t *testing.T) {
	set, diags := abac.Compile(abac.Source{ID: "default", Policies: conformPolicies})
	if set == nil {
		t.Fatalf("compile: %v", diags)
	}
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	eng := &flow.Subject{SessionID: "s1", AgentID: "laptop", Address: netip.MustParseAddr("100.96.0.5"),
		Groups: []string{"eng", "staff"}, OS: "linux", AgentVersion: "0.3.0",
		Facts: map[string]string{"disk.encrypted": "true"}, ClockOffset: -4 * time.Millisecond, Skew: 12 * time.Millisecond}
	plain := *eng
	plain.Facts = map[string]string{"disk.encrypted": "false"}
	other := *eng
	other.AgentID, other.Groups = "kiosk", nil
	dst := func(s string, proto uint8) flow.Dest {
		ap := netip.MustParseAddrPort(s)
		return flow.Dest{Addr: ap.Addr(), Port: ap.Port(), Proto: proto}
	}
	cases := []struct {
		name     string
		subj     *flow.Subject
		dest     flow.Dest
		allow    bool
		policies []string
	}{
		{"eng reaches https", eng, dst("10.99.0.10:443", flow.ProtoTCP), true, []string{"eng-web"}},
		{"ssh is forbidden", eng, dst("10.99.0.10:22", flow.ProtoTCP), false, []string{"no-ssh"}},
		{"outside the range", eng, dst("10.98.0.10:443", flow.ProtoTCP), false, nil},
		{"udp is not tcp", eng, dst("10.99.0.10:443", flow.ProtoUDP), false, nil},
		{"icmp has no port", eng, flow.Dest{Addr: netip.MustParseAddr("10.99.0.10"), Proto: flow.ProtoICMP}, false, nil},
		{"posture tag", &plain, dst("10.99.0.10:443", flow.ProtoTCP), false, []string{"encrypted"}},
		{"not in eng", &other, dst("10.99.0.10:443", flow.ProtoTCP), false, nil},
		{"ipv6", eng, dst("[fd00::1]:443", flow.ProtoTCP), false, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			q, ents := flow.DefaultQuery(c.subj, c.dest, now)
			ds, err := set.Evaluate(ents, []policy.Query{q}, abac.At(now))
			if err != nil {
				t.Fatalf("evaluate: %v (entities %s)", err, entitiesJSON(ents))
			}
			d := ds[0]
			if len(d.Errors) > 0 {
				t.Fatalf("errors %v for context %s", d.Errors, q.Context)
			}
			if d.Allow != c.allow || strings.Join(d.DeterminingPolicies, ",") != strings.Join(c.policies, ",") {
				t.Fatalf("decision %+v, want allow %v by %v (context %s)", d, c.allow, c.policies, q.Context)
			}
		})
	}
}

// TestDefaultQueryShape pins what the gateway sends (docs/policy.md, "How
// the gateway asks").
func TestDefaultQueryShape(t *testing.T) {
	now := time.Date(2026, 12, 2, 10, 0, 0, 123456789, time.FixedZone("x", 3600))
	s := &flow.Subject{AgentID: `we"ird`, Address: netip.MustParseAddr("100.96.0.5"), Groups: []string{"eng"},
		OS: "linux", AgentVersion: "0.3.0", Skew: 1500 * time.Microsecond}
	q, ents := flow.DefaultQuery(s, flow.Dest{Addr: netip.MustParseAddr("10.99.0.10"), Port: 443, Proto: flow.ProtoTCP}, now)
	if q.Principal != (policy.EntityRef{Type: "Agent", ID: `we"ird`}) || q.Action != (policy.EntityRef{Type: "Action", ID: "reach"}) ||
		q.Resource != (policy.EntityRef{Type: "Service", ID: "tcp/10.99.0.10:443"}) {
		t.Fatalf("query %+v", q)
	}
	var ctx map[string]any
	if err := json.Unmarshal(q.Context, &ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := ctx["weekday"]; ok {
		t.Fatal("weekday sent")
	}
	if ctx["time"] != "2026-12-02T09:00:00.123Z" {
		t.Fatalf("time %v", ctx["time"])
	}
	want := `{"calibration_skew_ms":1,"destination":{"ip":"10.99.0.10","port":443,"protocol":"tcp"},` +
		`"location":{"city":"","country":"","region":""},` +
		`"posture":{"agent_version":"0.3.0","clock_offset_ms":0,"os":"linux","skew_ms":1,"tags":{}},` +
		`"source":{"ip":"100.96.0.5","port":0},"time":"2026-12-02T09:00:00.123Z"}`
	if got, _ := json.Marshal(ctx); string(got) != want {
		t.Fatalf("context\n%s\nwant\n%s", got, want)
	}
	if got := entitiesJSON(ents); got != `[{"Ref":{"Type":"Group","ID":"eng"},"Attributes":{"name":"eng"},"Parents":null},`+
		`{"Ref":{"Type":"Agent","ID":"we\"ird"},"Attributes":{"name":"we\"ird","os":"linux"},"Parents":[{"Type":"Group","ID":"eng"}]},`+
		`{"Ref":{"Type":"Service","ID":"tcp/10.99.0.10:443"},"Attributes":{"name":"tcp/10.99.0.10:443","ip":"10.99.0.10","port":443,"protocol":"tcp"},"Parents":null}]` {
		t.Fatalf("entities %s", got)
	}
}

func entitiesJSON(ents []policy.Entity) string {
	type ent struct {
		Ref        policy.EntityRef
		Attributes json.RawMessage
		Parents    []policy.EntityRef
	}
	out := make([]ent, len(ents))
	for i, e := range ents {
		out[i] = ent{e.Ref, e.Attributes, e.Parents}
	}
	b, _ := json.Marshal(out)
	return string(b)
}

// FuzzDefaultQuery: whatever an agent puts in its pulse (OS, version,
// facts) and whatever its id, the query is well-formed for the schema:
// the plugin decides it without an error in the query.
func FuzzDefaultQuery(f *testing.F) {
	set, diags := abac.Compile(abac.Source{ID: "default", Policies: conformPolicies})
	if set == nil {
		f.Fatalf("compile: %v", diags)
	}
	f.Add("laptop", "linux", "0.3.0", "disk.encrypted", "true", "eng", uint16(443), int64(12))
	f.Add(`a"b\`, "\xff\xfe", "", "", "", "", uint16(0), int64(-1<<62))
	f.Add("x", "<script>", "0.1", "k\x00", "\u2028", "Group::\"x\"", uint16(65535), int64(1<<62))
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, id, os, version, key, value, group string, port uint16, skew int64) {
		s := &flow.Subject{AgentID: id, Address: netip.MustParseAddr("100.96.0.5"), Groups: []string{group},
			OS: os, AgentVersion: version, Facts: map[string]string{key: value},
			ClockOffset: time.Duration(skew), Skew: time.Duration(skew)}
		q, ents := flow.DefaultQuery(s, flow.Dest{Addr: netip.MustParseAddr("10.99.0.10"), Port: port, Proto: flow.ProtoTCP}, now)
		if !json.Valid(q.Context) {
			t.Fatalf("context %q is not JSON", q.Context)
		}
		ds, err := set.Evaluate(ents, []policy.Query{q}, abac.At(now))
		if err != nil {
			t.Fatalf("evaluate: %v (entities %s)", err, entitiesJSON(ents))
		}
		if len(ds[0].Errors) > 0 {
			t.Fatalf("errors %v for context %s", ds[0].Errors, q.Context)
		}
	})
}

// BenchmarkDefaultQuery: building one flow's query and entities (an agent
// in two groups, a posture with two facts), as the enforcer does on a
// cache miss.
func BenchmarkDefaultQuery(b *testing.B) {
	s := &flow.Subject{AgentID: "laptop", Address: netip.MustParseAddr("100.96.0.5"), Groups: []string{"eng", "staff"},
		OS: "linux", AgentVersion: "0.3.0", Facts: map[string]string{"disk.encrypted": "true", "firewall": "on"},
		Skew: 12 * time.Millisecond}
	d := flow.Dest{Addr: netip.MustParseAddr("10.99.0.10"), Port: 443, Proto: flow.ProtoTCP}
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	b.ReportAllocs()
	for b.Loop() {
		flow.DefaultQuery(s, d, now)
	}
}

// connectPolicies read every attribute DefaultConnectQuery sends.
const connectPolicies = `@id("eng-connect")
@reason("engineering connects from the office")
permit (principal in Group::"eng", action == Action::"connect", resource is Gateway)
when { resource.name == "gw-berlin" && resource.region == "" && principal.name == "laptop" && principal.os == context.posture.os &&
       context.source.ip.isInRange(ip("203.0.113.0/24")) && context.source.port == 40000 &&
       context.location.country == "" && context.location.region == "" && context.location.city == "" &&
       context.time > datetime("2026-01-01T00:00:00Z") && context.weekday >= 0 &&
       context.calibration_skew_ms == 12 && context.posture.skew_ms == 12 && context.posture.clock_offset_ms == 0 &&
       context.posture.agent_version == "" };

@id("no-kiosks")
@reason("kiosks may not connect")
forbid (principal in Group::"kiosk", action == Action::"connect", resource);
`

// TestDefaultConnectQueryConformsToSchema evaluates DefaultConnectQuery's
// entities and context (a session before its first pulse) with the
// policy-abac schema and policies that read all of them.
func TestDefaultConnectQueryConformsToSchema(t *testing.T) {
	set, diags := abac.Compile(abac.Source{ID: "default", Policies: connectPolicies})
	if set == nil {
		t.Fatalf("compile: %v", diags)
	}
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	c := flow.Connect{GatewayID: "gw-berlin", Source: netip.MustParseAddrPort("203.0.113.7:40000")}
	eng := flow.ConnectSubject(flow.Subject{AgentID: "laptop", Groups: []string{"eng"}, Skew: 12 * time.Millisecond})
	kiosk := flow.ConnectSubject(flow.Subject{AgentID: "laptop", Groups: []string{"eng", "kiosk"}, Skew: 12 * time.Millisecond})
	far := *eng
	far.Skew = 13 * time.Millisecond
	far = *flow.ConnectSubject(far)
	for _, tc := range []struct {
		name  string
		s     *flow.Subject
		c     flow.Connect
		allow bool
		ids   string
	}{
		{"eng", eng, c, true, "eng-connect"},
		{"kiosk", kiosk, c, false, "no-kiosks"},
		{"other skew", &far, c, false, ""},
		{"other source", eng, flow.Connect{GatewayID: "gw-berlin", Source: netip.MustParseAddrPort("198.51.100.1:40000")}, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q, ents := flow.DefaultConnectQuery(tc.s, tc.c, now)
			if q.Action.ID != "connect" || q.Resource != (policy.EntityRef{Type: "Gateway", ID: "gw-berlin"}) {
				t.Fatalf("query %+v", q)
			}
			ds, err := set.Evaluate(ents, []policy.Query{q}, abac.At(now))
			if err != nil {
				t.Fatalf("entities refused: %v", err)
			}
			d := ds[0]
			if len(d.Errors) > 0 {
				t.Fatalf("evaluation errors %v for context %s", d.Errors, q.Context)
			}
			if d.Allow != tc.allow || strings.Join(d.DeterminingPolicies, ",") != tc.ids {
				t.Fatalf("decision %+v, want allow %v by %q", d, tc.allow, tc.ids)
			}
		})
	}
}

// FuzzDefaultConnectQuery: whatever the agent id (from a certificate),
// groups, gateway id and source, the connect query's context and entity
// attributes are valid JSON objects and the query names what it was given.
func FuzzDefaultConnectQuery(f *testing.F) {
	f.Add("laptop", "eng", "gw-berlin", []byte{203, 0, 113, 7}, uint16(40000), int64(12))
	f.Add("a\"b\\c\u2028", "", "", []byte{}, uint16(0), int64(-1))
	f.Add("x", "g\x00", "gw", []byte{0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, uint16(1), int64(1<<40))
	f.Fuzz(func(t *testing.T, agent, group, gw string, ip []byte, port uint16, skewMS int64) {
		addr, _ := netip.AddrFromSlice(ip)
		s := flow.ConnectSubject(flow.Subject{AgentID: agent, Groups: []string{group}, Skew: time.Duration(skewMS) * time.Millisecond})
		q, ents := flow.DefaultConnectQuery(s, flow.Connect{GatewayID: gw, Source: netip.AddrPortFrom(addr, port)}, time.Unix(1e9, 0))
		var ctx map[string]any
		if err := json.Unmarshal(q.Context, &ctx); err != nil {
			t.Fatalf("context %q: %v", q.Context, err)
		}
		if len(ctx) != 5 || q.Principal.ID != agent || q.Resource.ID != gw {
			t.Fatalf("query %+v", q)
		}
		for _, e := range ents {
			var m map[string]any
			if err := json.Unmarshal(e.Attributes, &m); err != nil {
				t.Fatalf("entity %v attributes %q: %v", e.Ref, e.Attributes, err)
			}
		}
	})
}

// TestDefaultQuerySourceFamily: a dual-stack session's flows name the
// agent's tunnel address of the destination's family as the source; a
// single-stack session names the one it has.
func TestDefaultQuerySourceFamily(t *testing.T) {
	v4, v6 := netip.MustParseAddr("100.96.0.5"), netip.MustParseAddr("fd00:96::5")
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		s4, s6 netip.Addr
		dst    string
		want   string
	}{
		{v4, v6, "10.99.0.10", "100.96.0.5"},
		{v4, v6, "fd00:99::10", "fd00:96::5"},
		{v4, v6, "::ffff:10.99.0.10", "100.96.0.5"},
		{v4, netip.Addr{}, "fd00:99::10", "100.96.0.5"},
		{netip.Addr{}, v6, "10.99.0.10", "fd00:96::5"},
		{netip.Addr{}, netip.Addr{}, "10.99.0.10", "0.0.0.0"},
	} {
		s := &flow.Subject{AgentID: "laptop", Address: c.s4, Address6: c.s6}
		q, _ := flow.DefaultQuery(s, flow.Dest{Addr: netip.MustParseAddr(c.dst), Port: 443, Proto: flow.ProtoTCP}, now)
		var ctx struct {
			Source struct{ IP string } `json:"source"`
		}
		if err := json.Unmarshal(q.Context, &ctx); err != nil {
			t.Fatal(err)
		}
		if ctx.Source.IP != c.want {
			t.Errorf("session %v/%v to %s: source %s, want %s", c.s4, c.s6, c.dst, ctx.Source.IP, c.want)
		}
	}
}
