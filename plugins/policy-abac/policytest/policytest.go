// Package policytest runs policy test cases, the way Tailscale's ACL tests
// do: a file lists entities and cases (principal, action, resource,
// context, expected decision), and every case is decided against a policy
// set, either compiled locally (RunSource) or through any policy.Engine
// (Run: the plugin, through the core). `avon policy test FILE` calls it.
//
// The file format is JSON and is documented in docs/policy.md:
//
//	{
//	  "time": "2026-12-02T10:00:00Z",
//	  "entities": [
//	    {"uid": "Group::\"eng\"", "attrs": {"name": "Engineering"}},
//	    {"uid": "Agent::\"laptop\"", "attrs": {"name": "laptop", "os": "linux"}, "parents": ["Group::\"eng\""]}
//	  ],
//	  "context": {"calibration_skew_ms": 0, "...": "shared by every case"},
//	  "tests": [
//	    {"name": "eng reaches the web tier", "principal": "Agent::\"laptop\"", "action": "reach",
//	     "resource": "Network::\"corp\"", "context": {"destination": {"ip": "10.20.0.10", "port": 443, "protocol": "tcp"}},
//	     "expect": "allow", "policies": ["eng-web"]}
//	  ]
//	}
//
// The package reads only the bytes it is given; it does no I/O.
package policytest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/avonzt/avon/plugins/policy-abac/abac"
	"github.com/avonzt/avon/sdk/policy"
)

// ErrInvalidFile: the test file is malformed; nothing was run.
var ErrInvalidFile = errors.New("invalid policy test file")

// MaxCases bounds the cases of one file.
const MaxCases = 100000

// File is a parsed test file.
type File struct {
	// Time, when set, is the context time of every case that has none.
	Time     time.Time
	Entities []policy.Entity
	Cases    []Case
}

// Case is one test case.
type Case struct {
	Name     string
	Query    policy.Query
	Allow    bool     // expected verdict of the policies
	Policies []string // when non-nil, the determining policies expected
	Reason   string   // when set, a substring expected in the reasons
}

type wireFile struct {
	Time     string          `json:"time"`
	Entities []wireEntity    `json:"entities"`
	Context  json.RawMessage `json:"context"`
	Tests    []wireCase      `json:"tests"`
}

type wireEntity struct {
	UID     string          `json:"uid"`
	Attrs   json.RawMessage `json:"attrs"`
	Parents []string        `json:"parents"`
}

type wireCase struct {
	Name      string          `json:"name"`
	Principal string          `json:"principal"`
	Action    string          `json:"action"`
	Resource  string          `json:"resource"`
	Context   json.RawMessage `json:"context"`
	Expect    string          `json:"expect"`
	Policies  []string        `json:"policies"`
	Reason    string          `json:"reason"`
}

// Parse reads a test file. Unknown fields, malformed entity UIDs and
// expectations other than "allow" and "deny" are errors naming the case.
func Parse(data []byte) (*File, error) {
	var w wireFile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidFile, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data after the object", ErrInvalidFile)
	}
	f := &File{}
	if w.Time != "" {
		t, err := time.Parse(time.RFC3339Nano, w.Time)
		if err != nil {
			return nil, fmt.Errorf("%w: time %q is not RFC 3339", ErrInvalidFile, w.Time)
		}
		f.Time = t
	}
	for i, e := range w.Entities {
		uid, err := ParseUID(e.UID)
		if err != nil {
			return nil, fmt.Errorf("%w: entity %d: %v", ErrInvalidFile, i, err)
		}
		ent := policy.Entity{Ref: uid, Attributes: e.Attrs}
		for _, p := range e.Parents {
			pu, err := ParseUID(p)
			if err != nil {
				return nil, fmt.Errorf("%w: entity %s: parent: %v", ErrInvalidFile, e.UID, err)
			}
			ent.Parents = append(ent.Parents, pu)
		}
		f.Entities = append(f.Entities, ent)
	}
	var shared map[string]json.RawMessage
	if len(w.Context) > 0 {
		if err := json.Unmarshal(w.Context, &shared); err != nil {
			return nil, fmt.Errorf("%w: context: want an object: %v", ErrInvalidFile, err)
		}
	}
	if len(w.Tests) == 0 {
		return nil, fmt.Errorf("%w: no tests", ErrInvalidFile)
	}
	if len(w.Tests) > MaxCases {
		return nil, fmt.Errorf("%w: %d tests, more than %d", ErrInvalidFile, len(w.Tests), MaxCases)
	}
	for i, c := range w.Tests {
		name := c.Name
		if name == "" {
			name = fmt.Sprintf("test %d", i)
		}
		bad := func(format string, args ...any) error {
			return fmt.Errorf("%w: %s: %s", ErrInvalidFile, name, fmt.Sprintf(format, args...))
		}
		var q policy.Query
		var err error
		if q.Principal, err = ParseUID(c.Principal); err != nil {
			return nil, bad("principal: %v", err)
		}
		if q.Resource, err = ParseUID(c.Resource); err != nil {
			return nil, bad("resource: %v", err)
		}
		action := c.Action
		if action != "" && !strings.Contains(action, "::") {
			action = "Action::" + strconv.Quote(action)
		}
		if q.Action, err = ParseUID(action); err != nil {
			return nil, bad("action: %v", err)
		}
		if q.Context, err = merge(shared, c.Context); err != nil {
			return nil, bad("context: %v", err)
		}
		tc := Case{Name: name, Query: q, Policies: c.Policies, Reason: c.Reason}
		switch c.Expect {
		case "allow":
			tc.Allow = true
		case "deny":
		default:
			return nil, bad("expect %q: want \"allow\" or \"deny\"", c.Expect)
		}
		f.Cases = append(f.Cases, tc)
	}
	return f, nil
}

// merge returns the shared context with the case's keys over it; a case
// key set to null removes the shared one.
func merge(shared map[string]json.RawMessage, own json.RawMessage) ([]byte, error) {
	m := map[string]json.RawMessage{}
	for k, v := range shared {
		m[k] = v
	}
	if len(own) > 0 {
		var o map[string]json.RawMessage
		if err := json.Unmarshal(own, &o); err != nil {
			return nil, fmt.Errorf("want an object: %v", err)
		}
		for k, v := range o {
			if string(bytes.TrimSpace(v)) == "null" {
				delete(m, k) // a case drops a shared key by setting it to null
				continue
			}
			m[k] = v
		}
	}
	return json.Marshal(m)
}

// ParseUID reads an entity UID written as in Cedar: Type::"id", the type
// possibly namespaced (Ns::Type::"id").
func ParseUID(s string) (policy.EntityRef, error) {
	i := strings.LastIndex(s, `::"`)
	if i <= 0 {
		return policy.EntityRef{}, fmt.Errorf("%q is not an entity UID such as Agent::\"laptop\"", s)
	}
	id, err := strconv.Unquote(s[i+2:])
	if err != nil {
		return policy.EntityRef{}, fmt.Errorf("%q: the id is not a quoted string", s)
	}
	return policy.EntityRef{Type: s[:i], ID: id}, nil
}

// Result is the outcome of one case.
type Result struct {
	Case     Case
	Decision policy.Decision
	Pass     bool
	Problems []string // why it failed
}

// Report is the outcome of a file.
type Report struct {
	Version        uint64 // of the policy set, when run through an engine
	Results        []Result
	Passed, Failed int
}

// RunSource compiles src and runs the file against it, in this process.
// Diagnostics with errors mean nothing was run.
func (f *File) RunSource(src abac.Source) (*Report, []policy.Diagnostic, error) {
	set, diags := abac.Compile(src)
	if set == nil {
		return nil, diags, fmt.Errorf("the policy set does not compile: %w", policy.ErrInvalidPolicy)
	}
	now := f.Time
	if now.IsZero() {
		now = time.Now()
	}
	rep := &Report{}
	for start := 0; start < len(f.Cases); start += policy.MaxBatch {
		cs := f.Cases[start:min(start+policy.MaxBatch, len(f.Cases))]
		ds, err := set.Evaluate(f.Entities, queries(cs), abac.At(now))
		if err != nil {
			return nil, diags, err
		}
		rep.add(cs, ds)
	}
	return rep, diags, nil
}

// Run runs the file through e against the policy set setID, in batches
// of policy.MaxBatch; with the file's time in every context that has none.
func (f *File) Run(ctx context.Context, e policy.Engine, setID string) (*Report, error) {
	rep := &Report{}
	for start := 0; start < len(f.Cases); start += policy.MaxBatch {
		cs := f.Cases[start:min(start+policy.MaxBatch, len(f.Cases))]
		qs := queries(cs)
		if !f.Time.IsZero() {
			for i := range qs {
				qs[i].Context = withTime(qs[i].Context, f.Time)
			}
		}
		r, err := e.Evaluate(ctx, &policy.EvaluateRequest{PolicySetID: setID, Entities: f.Entities, Queries: qs})
		if err != nil {
			return nil, err
		}
		if len(r.Decisions) != len(qs) {
			return nil, fmt.Errorf("%d decisions for %d queries", len(r.Decisions), len(qs))
		}
		rep.Version = r.Version
		rep.add(cs, r.Decisions)
	}
	return rep, nil
}

func withTime(c []byte, t time.Time) []byte {
	var m map[string]json.RawMessage
	if json.Unmarshal(c, &m) != nil {
		return c
	}
	if _, ok := m[abac.ContextTime]; ok {
		return c
	}
	m[abac.ContextTime], _ = json.Marshal(t.UTC().Format(time.RFC3339Nano))
	b, err := json.Marshal(m)
	if err != nil {
		return c
	}
	return b
}

func queries(cs []Case) []policy.Query {
	qs := make([]policy.Query, len(cs))
	for i, c := range cs {
		qs[i] = c.Query
	}
	return qs
}

func (r *Report) add(cs []Case, ds []policy.Decision) {
	for i, c := range cs {
		d := ds[i]
		res := Result{Case: c, Decision: d}
		// A report-only set allows what it would deny: the test judges
		// the policies' verdict.
		got := d.Allow && !d.ReportOnly
		if got != c.Allow {
			res.Problems = append(res.Problems, fmt.Sprintf("got %s, want %s (%s)", verdict(got), verdict(c.Allow), strings.Join(d.Reasons, "; ")))
		}
		if len(d.Errors) > 0 { // a typo in a case must not pass as a denial
			res.Problems = append(res.Problems, "errors: "+strings.Join(d.Errors, "; "))
		}
		if c.Policies != nil && !slices.Equal(d.DeterminingPolicies, c.Policies) {
			res.Problems = append(res.Problems, fmt.Sprintf("determining policies %q, want %q", d.DeterminingPolicies, c.Policies))
		}
		if c.Reason != "" && !strings.Contains(strings.Join(d.Reasons, "\n"), c.Reason) {
			res.Problems = append(res.Problems, fmt.Sprintf("reasons %q do not contain %q", d.Reasons, c.Reason))
		}
		res.Pass = len(res.Problems) == 0
		if res.Pass {
			r.Passed++
		} else {
			r.Failed++
		}
		r.Results = append(r.Results, res)
	}
}

func verdict(allow bool) string {
	if allow {
		return "allow"
	}
	return "deny"
}

// String summarizes a report the way a CLI prints it: one line per
// failed case, then the totals.
func (r *Report) String() string {
	var b strings.Builder
	for _, res := range r.Results {
		if !res.Pass {
			fmt.Fprintf(&b, "FAIL %s: %s\n", res.Case.Name, strings.Join(res.Problems, "; "))
		}
	}
	fmt.Fprintf(&b, "%d passed, %d failed\n", r.Passed, r.Failed)
	return b.String()
}
