package abac

import (
	"reflect"
	"strings"
	"testing"

	"github.com/avonzt/avon/sdk/policy"
)

// FuzzCompile: any policy and schema text compiles or yields error
// diagnostics, never a panic; a set that compiles decides a query.
func FuzzCompile(f *testing.F) {
	f.Add(basePolicies, "")
	f.Add("permit (principal, action, resource) when { context.destination.port == 443 };", "")
	f.Add(`@id("x") forbid (principal == Agent::"a", action in [Action::"reach"], resource) unless { principal.os like "lin*" };`, "")
	f.Add("permit (principal, action, resource);", "entity A; action go appliesTo { principal: A, resource: A, context: { n: Long } };")
	f.Add("permit (principal, action, resource) when { ((((true)))) };", DefaultSchema)
	f.Add(`permit (principal, action, resource) when { ip("10.0.0.1").isInRange(ip("10.0.0.0/8")) && decimal("1.5") > decimal("1.0") };`, "")
	f.Fuzz(func(t *testing.T, policies, schema string) {
		s, diags := Compile(Source{ID: "fuzz", Policies: policies, Schema: schema})
		for _, d := range diags {
			if d.Severity != SeverityError && d.Severity != SeverityWarning || d.Message == "" {
				t.Fatalf("diagnostic %+v", d)
			}
		}
		if s == nil {
			if !HasErrors(diags) {
				t.Fatalf("no set and no error: %+v", diags)
			}
			return
		}
		if schema == "" {
			ds, err := s.Evaluate(testEntities, []policy.Query{reach("laptop", 443, true), reach("ghost", 22, false)}, At(testNow))
			if err != nil || len(ds) != 2 {
				t.Fatalf("%v %d", err, len(ds))
			}
		}
	})
}

// FuzzContext: any context bytes for reach, and any entity attributes,
// give a decision or a clear error, never a panic; a decision with errors
// is never an allow.
func FuzzContext(f *testing.F) {
	f.Add(flowContext(443, true), []byte(`{"name":"laptop","os":"linux"}`))
	f.Add(flowContext(22, false), []byte(`{"name":"x","os":"y"}`))
	f.Add([]byte(`{"time":"2026-12-02T10:00:00+01:00","posture":{"type":"Posture","id":"p"}}`), []byte(`{}`))
	f.Add([]byte(`{"destination":{"ip":"::1","port":-1,"protocol":""},"calibration_skew_ms":1e3}`), []byte(`{"name":"\u0000","os":""}`))
	f.Add([]byte(`[[[[]]]]`), []byte(`{"name":"a","name":"b"}`))
	s := mustCompile(f, Source{ID: "fuzz", Policies: basePolicies})
	f.Fuzz(func(t *testing.T, ctx, attrs []byte) {
		ents := []policy.Entity{testEntities[0], testEntities[5], {Ref: ref("Agent", "laptop"), Attributes: attrs, Parents: []policy.EntityRef{ref("Group", "eng")}}}
		q := policy.Query{Principal: ref("Agent", "laptop"), Action: ref("Action", "reach"), Resource: ref("Network", "corp"), Context: ctx}
		// Twice in one batch: the second conversion comes from the memo
		// and must decide the same.
		ds, err := s.Evaluate(ents, []policy.Query{q, reach("laptop", 22, true), q}, At(testNow))
		if err != nil {
			if !strings.Contains(err.Error(), ErrInvalidEntity.Error()) {
				t.Fatalf("batch error %v", err)
			}
			return
		}
		if d := ds[0]; d.Allow && len(d.Errors) > 0 {
			t.Fatalf("allowed with errors: %+v", d)
		}
		if !reflect.DeepEqual(ds[0], ds[2]) {
			t.Fatalf("same query, two decisions: %+v %+v", ds[0], ds[2])
		}
		_ = MaskContext(ctx)
	})
}
