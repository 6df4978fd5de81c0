package config

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

var testSchema = Schema{Attributes: []Attribute{
	{Name: "path", Type: cty.String, Default: cty.StringVal("ks.avks"), Description: "keystore file"},
	{Name: "passphrase", Type: cty.String, Required: true, Sensitive: true, Description: "unlocks the keystore"},
	{Name: "retries", Type: cty.Number, Default: cty.NumberIntVal(3)},
	{Name: "algorithms", Type: cty.List(cty.String)},
	{Name: "labels", Type: cty.Map(cty.String)},
	{Name: "strict", Type: cty.Bool, Default: cty.False},
}}

func parseBody(t *testing.T, src string) hcl.Body {
	t.Helper()
	f, diags := hclsyntax.ParseConfig([]byte(src), "test.hcl", hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	return f.Body
}

func TestDecode(t *testing.T) {
	body := parseBody(t, `
passphrase = "correct horse"
algorithms = ["a", "b"]
labels = { env = "prod" }
`)
	js, diags := Decode(body, testSchema, nil)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	var got struct {
		Path       string            `json:"path"`
		Passphrase string            `json:"passphrase"`
		Retries    int               `json:"retries"`
		Algorithms []string          `json:"algorithms"`
		Labels     map[string]string `json:"labels"`
		Strict     bool              `json:"strict"`
	}
	if err := Unmarshal(js, &got); err != nil {
		t.Fatal(err)
	}
	if got.Path != "ks.avks" || got.Passphrase != "correct horse" || got.Retries != 3 ||
		strings.Join(got.Algorithms, ",") != "a,b" || got.Labels["env"] != "prod" || got.Strict {
		t.Fatalf("decoded %+v from %s", got, js)
	}
	red := string(Redact(testSchema, js))
	if strings.Contains(red, "correct horse") || !strings.Contains(red, `"passphrase":"(sensitive)"`) {
		t.Fatalf("Redact leaked: %s", red)
	}
}

func TestDecodeDiagnostics(t *testing.T) {
	tests := []struct {
		name, src string
		want      []string // summary fragments, in order
		line      int      // line of the first diagnostic
	}{
		{"unknown attribute with hint", "passphrase = \"x\"\npathh = \"y\"\n", []string{"Unsupported argument"}, 2},
		{"wrong type", "passphrase = \"x\"\nretries = \"many\"\n", []string{"Incorrect attribute value type"}, 2},
		{"missing required", "path = \"p\"\n", []string{"Missing required plugin setting"}, 0},
		{"unknown block", "passphrase = \"x\"\nextra {\n}\n", []string{"Unsupported block type"}, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, diags := Decode(parseBody(t, tc.src), testSchema, nil)
			if len(diags) < len(tc.want) {
				t.Fatalf("got %d diagnostics, want %d: %v", len(diags), len(tc.want), diags)
			}
			for i, w := range tc.want {
				if !strings.Contains(diags[i].Summary, w) {
					t.Errorf("diag %d summary %q, want %q", i, diags[i].Summary, w)
				}
			}
			if tc.line > 0 && (diags[0].Subject == nil || diags[0].Subject.Start.Line != tc.line) {
				t.Errorf("diag at %v, want line %d", diags[0].Subject, tc.line)
			}
		})
	}
	_, diags := Decode(parseBody(t, "passphrase = \"x\"\npathh = \"y\"\n"), testSchema, nil)
	if !strings.Contains(diags[0].Detail, `Did you mean "path"?`) {
		t.Errorf("no suggestion in %q", diags[0].Detail)
	}
	_, diags = Decode(nil, testSchema, nil)
	if !diags.HasErrors() || !strings.Contains(diags[0].Detail, "unlocks the keystore") {
		t.Errorf("nil body with required attribute: %v", diags)
	}
}

func TestSchemaWireRoundTrip(t *testing.T) {
	b, err := testSchema.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	var back Schema
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Attributes) != len(testSchema.Attributes) {
		t.Fatalf("lost attributes: %+v", back)
	}
	for i, a := range testSchema.Attributes {
		g := back.Attributes[i]
		if g.Name != a.Name || !g.Type.Equals(a.Type) || g.Required != a.Required || g.Sensitive != a.Sensitive || g.Description != a.Description {
			t.Errorf("attribute %d: %+v != %+v", i, g, a)
		}
		if (a.Default == cty.NilVal) != (g.Default == cty.NilVal) || (a.Default != cty.NilVal && !a.Default.RawEquals(g.Default)) {
			t.Errorf("default of %s: %#v != %#v", a.Name, g.Default, a.Default)
		}
	}
}

func TestSchemaValidate(t *testing.T) {
	bad := []Schema{
		{Attributes: []Attribute{{Name: "1x", Type: cty.String}}},
		{Attributes: []Attribute{{Name: "a", Type: cty.String}, {Name: "a", Type: cty.Bool}}},
		{Attributes: []Attribute{{Name: "a"}}},
		{Attributes: []Attribute{{Name: "a", Type: cty.Number, Default: cty.StringVal("x")}}},
		{Attributes: []Attribute{{Name: "a", Type: cty.String, Required: true, Default: cty.StringVal("x")}}},
	}
	for i, s := range bad {
		if err := s.Validate(); err == nil {
			t.Errorf("schema %d accepted", i)
		}
		if _, err := s.MarshalJSON(); err == nil {
			t.Errorf("schema %d marshalled", i)
		}
	}
}

func TestUnmarshalStrict(t *testing.T) {
	var c struct {
		A string `json:"a"`
	}
	if err := Unmarshal([]byte(`{"a":"x","b":1}`), &c); err == nil {
		t.Fatal("unknown field accepted")
	}
	if err := Unmarshal([]byte(`{"a":"x"} {}`), &c); err == nil {
		t.Fatal("trailing data accepted")
	}
	if err := Unmarshal(nil, &c); err != nil {
		t.Fatal(err)
	}
}

func FuzzSchemaUnmarshalJSON(f *testing.F) {
	b, _ := testSchema.MarshalJSON()
	f.Add(b)
	f.Add([]byte(`{"attributes":[{"name":"a","type":"string","default":1}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var s Schema
		if err := s.UnmarshalJSON(data); err != nil {
			return
		}
		if err := s.Validate(); err != nil {
			t.Fatalf("accepted an invalid schema: %v", err)
		}
		if _, err := s.MarshalJSON(); err != nil {
			t.Fatalf("accepted schema does not marshal: %v", err)
		}
	})
}
