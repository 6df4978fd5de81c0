package config

import (
	"strings"
	"testing"
)

func TestGatewayPolicyBlock(t *testing.T) {
	const plugin = "plugin \"policy\" \"abac\" {\n  command = \"policy-abac\"\n}\n"
	tests := []struct {
		name             string
		src              string
		plugin, mode, ps string
	}{
		{"absent: off", "gateway {\n}\n", "", "", ""},
		{"block without mode: off", "gateway {\n  policy {\n    plugin = \"abac\"\n  }\n}\n" + plugin, "abac", "off", ""},
		{"enforce", "gateway {\n  policy {\n    plugin = \"abac\"\n    mode = \"enforce\"\n    policy_set = \"prod\"\n  }\n}\n" + plugin,
			"abac", "enforce", "prod"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, diags := Parse([]byte(tc.src), "/etc/avon/config.hcl")
			if diags.HasErrors() {
				t.Fatal(diags)
			}
			p := c.Gateway.Policy
			if p.Plugin != tc.plugin || p.Mode != tc.mode || p.PolicySet != tc.ps {
				t.Fatalf("policy %+v", p)
			}
		})
	}
}

func TestGatewayPolicyDiagnostics(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want diagAt
	}{
		{"bad mode", "gateway {\n  policy {\n    mode = \"audit\"\n  }\n}\n", diagAt{"Invalid policy mode", 3, 12, "off or enforce"}},
		{"enforce without plugin", "gateway {\n  policy {\n    mode = \"enforce\"\n  }\n}\n", diagAt{"Missing policy plugin", 2, 3, "every flow would be denied"}},
		{"unknown plugin", "gateway {\n  policy {\n    plugin = \"abac\"\n    mode = \"enforce\"\n  }\n}\n", diagAt{"Unknown policy plugin", 3, 14, `plugin "policy" "abac"`}},
		{"plugin of another kind", "gateway {\n  policy {\n    plugin = \"soft\"\n  }\n}\nplugin \"kms\" \"soft\" {\n  command = \"k\"\n}\n",
			diagAt{"Unknown policy plugin", 3, 14, ""}},
		{"bad plugin name", "gateway {\n  policy {\n    plugin = \"Abac!\"\n  }\n}\n", diagAt{"Invalid policy plugin", 3, 14, ""}},
		{"two blocks", "gateway {\n  policy {\n  }\n  policy {\n  }\n}\n", diagAt{"Duplicate policy block", 4, 3, ""}},
		{"unknown attribute", "gateway {\n  policy {\n    engine = \"x\"\n  }\n}\n", diagAt{"Unsupported argument", 3, 5, ""}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, diags := Parse([]byte(tc.src), "test.hcl")
			if !diags.HasErrors() {
				t.Fatal("no error")
			}
			d := diags[0]
			if !strings.Contains(d.Summary, tc.want.summary) || !strings.Contains(d.Detail, tc.want.detail) {
				t.Fatalf("diag %q / %q, want %q / %q (all: %v)", d.Summary, d.Detail, tc.want.summary, tc.want.detail, diags)
			}
			if d.Subject == nil || d.Subject.Start.Line != tc.want.line || d.Subject.Start.Column != tc.want.col {
				t.Fatalf("diag %q at %v, want %d:%d", d.Summary, d.Subject, tc.want.line, tc.want.col)
			}
		})
	}
}
