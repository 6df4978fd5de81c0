package abac

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/avonzt/avon/sdk/policy"
)

func TestContextTimeAndWeekday(t *testing.T) {
	s := mustCompile(t, Source{Policies: `
@id("office-hours") permit (principal, action == Action::"reach", resource)
when { context.weekday >= 1 && context.weekday <= 5 && context.time.toTime() >= duration("8h") && context.time.toTime() < duration("18h") };`})
	withTime := func(ts string) []byte {
		c := string(flowContext(443, true))
		return []byte(strings.Replace(c, "{", `{"time":"`+ts+`",`, 1))
	}
	q := func(ctx []byte) policy.Query {
		return policy.Query{Principal: ref("Agent", "laptop"), Action: ref("Action", "reach"), Resource: ref("Network", "corp"), Context: ctx}
	}
	cases := []struct {
		name  string
		ctx   []byte
		now   time.Time
		allow bool
		err   error
	}{
		{"filled from now, Wednesday 13:30", flowContext(443, true), testNow, true, nil},
		{"filled from now, Wednesday 20:00", flowContext(443, true), testNow.Add(6*time.Hour + 30*time.Minute), false, nil},
		{"given, Saturday", withTime("2026-12-05T10:00:00Z"), testNow, false, nil},
		{"given with offset, Monday 09:00 UTC", withTime("2026-12-07T10:00:00+01:00"), time.Time{}, true, nil},
		{"no time at all", flowContext(443, true), time.Time{}, false, ErrNoTime},
		{"weekday sent", []byte(strings.Replace(string(flowContext(443, true)), "{", `{"weekday":3,`, 1)), testNow, false, ErrInvalidContext},
		{"bad time", withTime("yesterday"), testNow, false, ErrInvalidContext},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ds, err := s.Evaluate(testEntities, []policy.Query{q(c.ctx)}, At(c.now))
			if err != nil {
				t.Fatal(err)
			}
			d := ds[0]
			if d.Allow != c.allow {
				t.Fatalf("%+v", d)
			}
			if c.err != nil && (len(d.Errors) == 0 || !strings.Contains(d.Errors[0], c.err.Error())) {
				t.Fatalf("errors %q, want %v", d.Errors, c.err)
			}
		})
	}
}

func TestContextConversionErrors(t *testing.T) {
	s := mustCompile(t, Source{Policies: basePolicies})
	base := string(flowContext(443, true))
	cases := []struct{ name, ctx, want string }{
		{"not json", `{`, "unexpected EOF"},
		{"not an object", `[]`, "want an object, got an array"},
		{"duplicate key", strings.Replace(base, "{", `{"calibration_skew_ms":1,`, 1), `key "calibration_skew_ms" appears twice`},
		{"unknown key", strings.Replace(base, "{", `{"token":"x",`, 1), `unknown attribute "token"`},
		{"missing key", `{"calibration_skew_ms":1}`, `missing attribute`},
		{"float for Long", strings.Replace(base, `"calibration_skew_ms": 3`, `"calibration_skew_ms": 3.5`, 1), "3.5 is not a 64-bit integer"},
		{"huge Long", strings.Replace(base, `"calibration_skew_ms": 3`, `"calibration_skew_ms": 99999999999999999999`, 1), "not a 64-bit integer"},
		{"bad ip", strings.Replace(base, `"203.0.113.7"`, `"203.0.113.700"`, 1), `context.source.ip: "203.0.113.700" is not an IP address`},
		{"string for bool-less tag", strings.Replace(base, `"disk.encrypted":"true"`, `"disk.encrypted":true`, 1), "context.posture.tags.disk.encrypted: want a string"},
		{"trailing data", base + `{}`, "trailing data"},
		{"deep", strings.Repeat(`{"a":`, 40) + "1" + strings.Repeat("}", 40), "nested deeper than 32"},
		{"wrong entity type ref", strings.Replace(base, `"posture": {`, `"posture": {"type":"Agent","id":"x"}, "x": {`, 1), "want an entity of type Posture, got Agent"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			q := policy.Query{Principal: ref("Agent", "laptop"), Action: ref("Action", "reach"), Resource: ref("Network", "corp"), Context: []byte(c.ctx)}
			ds, err := s.Evaluate(testEntities, []policy.Query{q}, At(testNow))
			if err != nil {
				t.Fatal(err)
			}
			if d := ds[0]; d.Allow || len(d.Errors) != 1 || !strings.Contains(d.Errors[0], c.want) || !strings.Contains(d.Errors[0], ErrInvalidContext.Error()) {
				t.Fatalf("got %+v, want %q", d, c.want)
			}
		})
	}
}

func TestEntityErrors(t *testing.T) {
	s := mustCompile(t, Source{Policies: basePolicies})
	cases := []struct {
		name string
		e    policy.Entity
		want string
	}{
		{"unknown type", policy.Entity{Ref: ref("Robot", "r")}, `type "Robot" is not in the schema`},
		{"action type", policy.Entity{Ref: ref("Action", "reach")}, `type "Action" is not in the schema`},
		{"bad parent", policy.Entity{Ref: ref("Agent", "x"), Attributes: []byte(`{"name":"x","os":"l"}`), Parents: []policy.EntityRef{ref("Network", "corp")}}, "a Agent cannot be in a Network"},
		{"missing attribute", policy.Entity{Ref: ref("Agent", "x"), Attributes: []byte(`{"name":"x"}`)}, `missing attribute "os"`},
		{"bad cidr", policy.Entity{Ref: ref("Network", "n"), Attributes: []byte(`{"name":"n","cidr":"10.0.0.0/99"}`)}, "is not an IP address"},
		{"inline entity", policy.Entity{Ref: ref("Group", "g"), Attributes: []byte(`{"name":{"name":"x"}}`)}, "want a string"},
		{"twice", testEntities[0], "given twice"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ents := append([]policy.Entity{testEntities[0]}, c.e)
			_, err := s.Evaluate(ents, []policy.Query{reach("laptop", 443, true)}, At(testNow))
			if !errors.Is(err, ErrInvalidEntity) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want %q", err, c.want)
			}
		})
	}
}
