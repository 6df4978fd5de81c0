package abac

import (
	"strings"
	"testing"

	"github.com/avonzt/avon/sdk/policy"
)

func TestCompileDiagnostics(t *testing.T) {
	cases := []struct {
		name      string
		src       Source
		id        string
		line, col int
		msg       string
	}{
		{"syntax error", Source{Policies: "permit (principal, action, resource);\nforbid (principal action, resource);"},
			"", 2, 25, `syntax error near ","`},
		{"unknown attribute", Source{Policies: "@id(\"p\")\npermit (principal is Agent, action == Action::\"reach\", resource)\nwhen { principal.colour == \"red\" };"},
			"p", 3, 18, "attribute `colour` on entity type `Agent` not found"},
		{"unknown context attribute", Source{Policies: "permit (principal, action == Action::\"reach\", resource)\n  when { context.weather == \"sunny\" };"},
			"policy0", 2, 18, "attribute `weather` in context"},
		{"unknown entity type", Source{Policies: "@id(\"q\") permit (principal == Robot::\"r2\", action, resource);"},
			"q", 1, 31, "unrecognized entity type `Robot`"},
		{"unknown action", Source{Policies: "permit (principal, action == Action::\"fly\", resource);"},
			"policy0", 1, 38, "unrecognized action"},
		{"wrong type", Source{Policies: "permit (principal, action == Action::\"reach\", resource)\nwhen { context.destination.port == \"443\" };"},
			"policy0", 1, 1, "the types Long and String are not compatible"},
		{"duplicate id", Source{Policies: "@id(\"a\") permit (principal, action, resource);\n@id(\"a\") forbid (principal, action, resource);"},
			"a", 2, 1, "already used by the policy at line 1"},
		{"empty id", Source{Policies: "@id(\"\") permit (principal, action, resource);"},
			"", 1, 1, "@id must be"},
		{"deep nesting", Source{Policies: "permit (principal, action, resource) when {" + strings.Repeat("(", 100) + "true" + strings.Repeat(")", 100) + "};"},
			"", 1, 107, "nested deeper than 64"},
		{"schema type error", Source{Policies: "permit (principal, action, resource);", Schema: "entity A {\n  x: Strin\n};"},
			"", 0, 0, `schema: entity "A" shape: attribute "x": undefined type "Strin"`},
		{"schema syntax error", Source{Policies: "permit (principal, action, resource);", Schema: "entity A {\n  x: String,,\n};"},
			"", 2, 13, "schema:"},
		{"too large", Source{Policies: strings.Repeat(" ", MaxPolicyBytes+1)}, "", 0, 0, "more than"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, diags := Compile(c.src)
			if s != nil || !HasErrors(diags) {
				t.Fatalf("compiled: %v %+v", s != nil, diags)
			}
			var d policy.Diagnostic
			for _, x := range diags {
				if x.Severity == SeverityError {
					d = x
					break
				}
			}
			if d.PolicyID != c.id || d.Line != c.line || (c.col != 0 && d.Column != c.col) || !strings.Contains(d.Message, c.msg) {
				t.Fatalf("got %+v, want %s %d:%d %q", d, c.id, c.line, c.col, c.msg)
			}
		})
	}
}

func TestCompileWarnsForbidWithoutReason(t *testing.T) {
	s, diags := Compile(Source{Policies: "@id(\"f\")\nforbid (principal, action, resource);"})
	if s == nil || len(diags) != 1 || diags[0].Severity != SeverityWarning || diags[0].PolicyID != "f" || diags[0].Line != 1 {
		t.Fatalf("%v %+v", s != nil, diags)
	}
}

func TestCustomSchema(t *testing.T) {
	schema := `entity Person; entity Door = { floor: Long };
action open appliesTo { principal: Person, resource: Door, context: { badge: String } };`
	s := mustCompile(t, Source{Schema: schema, Policies: `permit (principal, action == Action::"open", resource) when { resource.floor < 3 && context.badge == "blue" };`})
	ents := []policy.Entity{{Ref: ref("Door", "d1"), Attributes: []byte(`{"floor":2}`)}, {Ref: ref("Door", "d9"), Attributes: []byte(`{"floor":9}`)}}
	q := func(door, badge string) policy.Query {
		return policy.Query{Principal: ref("Person", "p"), Action: ref("Action", "open"), Resource: ref("Door", door), Context: []byte(`{"badge":"` + badge + `"}`)}
	}
	ds, err := s.Evaluate(ents, []policy.Query{q("d1", "blue"), q("d9", "blue"), q("d1", "red")}, At(testNow))
	if err != nil {
		t.Fatal(err)
	}
	if !ds[0].Allow || ds[1].Allow || ds[2].Allow {
		t.Fatalf("%+v", ds)
	}
	// The AVON schema's types do not exist here.
	if _, diags := Compile(Source{Schema: schema, Policies: `permit (principal is Agent, action, resource);`}); !HasErrors(diags) {
		t.Fatalf("Agent accepted under a custom schema: %+v", diags)
	}
}
