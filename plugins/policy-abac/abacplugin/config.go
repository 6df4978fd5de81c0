package abacplugin

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/zclconf/go-cty/cty"

	"github.com/avonzt/avon/plugins/policy-abac/abac"
	"github.com/avonzt/avon/sdk/config"
	"github.com/avonzt/avon/sdk/plugin"
)

// Config is the plugin's `config { }` body.
type Config struct {
	PolicyDir             string  `json:"policy_dir"`
	DefaultSet            string  `json:"default_set"`
	ReportOnly            bool    `json:"report_only"`
	DecisionLogSampleRate float64 `json:"decision_log_sample_rate"`
	RefreshInterval       string  `json:"refresh_interval"`
}

// Schema is the plugin's config schema.
var Schema = config.Schema{Attributes: []config.Attribute{
	{Name: "policy_dir", Type: cty.String, Default: cty.StringVal(""),
		Description: `directory of policy sets: <set>.cedar, with an optional <set>.cedarschema beside it ("" = none; sets come from the API)`},
	{Name: "default_set", Type: cty.String, Default: cty.StringVal("default"), Description: "the policy set a query without one uses"},
	{Name: "report_only", Type: cty.Bool, Default: cty.False,
		Description: "sets loaded from policy_dir only report what they would deny, and allow"},
	{Name: "decision_log_sample_rate", Type: cty.Number, Default: cty.NumberFloatVal(0.01),
		Description: "share of allowed decisions written to the decision log, 0 to 1; denials are always written"},
	{Name: "refresh_interval", Type: cty.String, Default: cty.StringVal("1s"),
		Description: `how stale a replica's cached policy set may be before it re-reads the shared storage ("0s" = every call)`},
}}

// settings is a checked Config.
type settings struct {
	policyDir  string
	defaultSet string
	reportOnly bool
	sampleRate float64
	refresh    time.Duration
}

var setIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

func validSetID(id string) error {
	if !setIDRE.MatchString(id) {
		return fmt.Errorf("policy set id %q: want 1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit", id)
	}
	return nil
}

func (c *Config) settings() (settings, []plugin.Problem) {
	var ps []plugin.Problem
	s := settings{policyDir: c.PolicyDir, defaultSet: c.DefaultSet, reportOnly: c.ReportOnly, sampleRate: c.DecisionLogSampleRate}
	if err := validSetID(c.DefaultSet); err != nil {
		ps = append(ps, plugin.Problem{Attribute: "default_set", Summary: err.Error()})
	}
	if c.DecisionLogSampleRate < 0 || c.DecisionLogSampleRate > 1 {
		ps = append(ps, plugin.Problem{Attribute: "decision_log_sample_rate", Summary: fmt.Sprintf("%v is not between 0 and 1", c.DecisionLogSampleRate)})
	}
	d, err := time.ParseDuration(c.RefreshInterval)
	if err != nil || d < 0 || d > time.Hour {
		ps = append(ps, plugin.Problem{Attribute: "refresh_interval", Summary: fmt.Sprintf("%q is not a duration between \"0s\" and \"1h\"", c.RefreshInterval)})
	}
	s.refresh = d
	return s, ps
}

// fileSet is a policy set read from policy_dir.
type fileSet struct {
	id     string
	src    abac.Source
	digest string // of the policies, schema and report_only, as applied
}

// loadDir reads and compiles every <set>.cedar of dir. Every problem is
// reported with its file:line:col; nothing is returned unless all compile.
func loadDir(dir string, reportOnly bool) ([]fileSet, []plugin.Problem) {
	if dir == "" {
		return nil, nil
	}
	names, err := filepath.Glob(filepath.Join(dir, "*.cedar"))
	if err != nil {
		return nil, []plugin.Problem{{Attribute: "policy_dir", Summary: err.Error()}}
	}
	if _, err := os.Stat(dir); err != nil {
		return nil, []plugin.Problem{{Attribute: "policy_dir", Summary: err.Error()}}
	}
	slices.Sort(names)
	var (
		out []fileSet
		ps  []plugin.Problem
	)
	for _, name := range names {
		id := strings.TrimSuffix(filepath.Base(name), ".cedar")
		if err := validSetID(id); err != nil {
			ps = append(ps, plugin.Problem{Attribute: "policy_dir", Summary: name + ": " + err.Error()})
			continue
		}
		text, err := readLimited(name, abac.MaxPolicyBytes)
		if err != nil {
			ps = append(ps, plugin.Problem{Attribute: "policy_dir", Summary: err.Error()})
			continue
		}
		schemaName := strings.TrimSuffix(name, ".cedar") + ".cedarschema"
		schema, err := readLimited(schemaName, abac.MaxSchemaBytes)
		if os.IsNotExist(err) {
			schema, err = "", nil
		}
		if err != nil {
			ps = append(ps, plugin.Problem{Attribute: "policy_dir", Summary: err.Error()})
			continue
		}
		src := abac.Source{ID: id, Policies: text, Schema: schema, ReportOnly: reportOnly}
		_, diags := abac.Compile(src)
		for _, d := range diags {
			if d.Severity == abac.SeverityWarning {
				continue
			}
			file := name
			if d.PolicyID == "" && strings.HasPrefix(d.Message, "schema:") && schema != "" {
				file = schemaName
			}
			ps = append(ps, plugin.Problem{Attribute: "policy_dir", Summary: fmt.Sprintf("%s:%d:%d: %s", file, d.Line, d.Column, d.Message),
				Detail: policyDetail(d.PolicyID)})
		}
		out = append(out, fileSet{id: id, src: src, digest: digest(src)})
	}
	if len(ps) > 0 {
		return nil, ps
	}
	return out, nil
}

func policyDetail(id string) string {
	if id == "" {
		return ""
	}
	return "in policy " + id
}

func readLimited(name string, limit int) (string, error) {
	f, err := os.Open(name)
	if err != nil {
		return "", err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", err
	}
	if st.Size() > int64(limit) {
		return "", fmt.Errorf("%s: %d bytes, more than %d", name, st.Size(), limit)
	}
	b := make([]byte, st.Size())
	if _, err := io.ReadFull(f, b); err != nil {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	return string(b), nil
}
