package abac

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/cedar-policy/cedar-go"
	xast "github.com/cedar-policy/cedar-go/x/exp/ast"

	"github.com/avonzt/avon/sdk/policy"
)

// Limits on a policy set, checked before parsing.
const (
	MaxPolicyBytes = 4 << 20 // policy text
	MaxSchemaBytes = 1 << 20 // schema text
	MaxPolicies    = 10000
)

// Annotations the engine reads.
const (
	// AnnotationID names a policy: @id("allow-eng-web"). Without it a
	// policy is "policy<N>", N counting from 0 in the text.
	AnnotationID = "id"
	// AnnotationReason is the human explanation shown with a decision the
	// policy determined: @reason("engineering may reach the web tier").
	AnnotationReason = "reason"
)

// Diagnostic severities.
const (
	SeverityError   = "error"
	SeverityWarning = "warning"
)

// Source is a policy set as stored.
type Source struct {
	ID         string // policy set id, used in positions
	Policies   string // Cedar policy text
	Schema     string // Cedar schema text (human-readable format); "" = DefaultSchema
	ReportOnly bool
}

// Set is a compiled, validated policy set. It is safe for concurrent use:
// its policies never change; it caches the entities batches bring.
type Set struct {
	src      Source
	schema   *schemaInfo
	policies *cedar.PolicySet
	meta     map[cedar.PolicyID]policyMeta
	ids      []string // in text order
	index    map[string]int
	byPrin   *principalIndex // from indexFrom policies on
	entities entityCache     // converted batch entities; mutable, guarded by its own lock
	members  memberCache     // converted context members (fastctx.go); mutable, guarded by its own lock
}

type policyMeta struct {
	forbid bool
	reason string
}

// Source returns what the set was compiled from.
func (s *Set) Source() Source { return s.src }

// PolicyIDs returns the policy ids in text order.
func (s *Set) PolicyIDs() []string { return slices.Clone(s.ids) }

// ReportOnly says whether the set is in report-only mode.
func (s *Set) ReportOnly() bool { return s.src.ReportOnly }

// Compile parses src and validates every policy against its schema (strict
// Cedar validation: entity types, actions, attribute names and types, and
// `has` guards for optional attributes). It returns a nil Set when any
// diagnostic is an error; warnings (a policy without @reason, say) do not
// stop it.
func Compile(src Source) (set *Set, diags []policy.Diagnostic) {
	defer func() {
		// The Cedar parser and validator are a library reading untrusted
		// text: a panic there is a rejected set, never a dead plugin.
		if r := recover(); r != nil {
			set = nil
			diags = append(diags, policy.Diagnostic{Severity: SeverityError, Message: fmt.Sprintf("internal error in the Cedar library: %v", r)})
		}
	}()
	errd := func(id string, line, col int, format string, args ...any) {
		diags = append(diags, policy.Diagnostic{Severity: SeverityError, PolicyID: id, Line: line, Column: col, Message: fmt.Sprintf(format, args...)})
	}
	if len(src.Policies) > MaxPolicyBytes {
		errd("", 0, 0, "policy text is %d bytes, more than %d", len(src.Policies), MaxPolicyBytes)
	}
	if len(src.Schema) > MaxSchemaBytes {
		errd("", 0, 0, "schema text is %d bytes, more than %d", len(src.Schema), MaxSchemaBytes)
	}
	if diags != nil {
		return nil, diags
	}
	sc, err := loadSchema(src.Schema)
	if err != nil {
		line, col := errorPosition(err)
		errd("", line, col, "schema: %s", cleanMessage(err.Error()))
		return nil, diags
	}
	if err := checkNesting(src.Policies); err != nil {
		line, col := errorPosition(err)
		errd("", line, col, "%s", err.Error())
		return nil, diags
	}
	list, err := cedar.NewPolicyListFromBytes(src.ID, []byte(src.Policies))
	if err != nil {
		line, col := errorPosition(err)
		errd("", line, col, "%s", cleanMessage(err.Error()))
		return nil, diags
	}
	if len(list) > MaxPolicies {
		errd("", 0, 0, "%d policies, more than %d", len(list), MaxPolicies)
		return nil, diags
	}
	set = &Set{src: src, schema: sc, policies: cedar.NewPolicySet(), meta: map[cedar.PolicyID]policyMeta{}, index: map[string]int{},
		byPrin: newPrincipalIndex()}
	spans := policySpans(list, len(src.Policies))
	seen := map[string]int{}
	for i, p := range list {
		pos := p.Position()
		ann := p.Annotations()
		id := fmt.Sprintf("policy%d", i)
		if v, ok := ann[AnnotationID]; ok {
			id = string(v)
			if id == "" || strings.ContainsAny(id, "\x00\n") {
				errd(id, pos.Line, pos.Column, "@id must be a non-empty single line")
				continue
			}
		}
		if j, dup := seen[id]; dup {
			errd(id, pos.Line, pos.Column, "policy id %q is already used by the policy at line %d", id, list[j].Position().Line)
			continue
		}
		seen[id] = i
		if verr := sc.validator.Policy(id, (*xast.Policy)(p.AST())); verr != nil {
			said := map[string]bool{}
			var vd []policy.Diagnostic
			for _, e := range flatten(verr) {
				msg := strings.TrimPrefix(e.Error(), "for policy `"+id+"`, ")
				if said[msg] {
					continue // the validator repeats a message once per request environment
				}
				said[msg] = true
				line, col := locate(src.Policies, spans[i], msg, pos.Line, pos.Column)
				vd = append(vd, policy.Diagnostic{Severity: SeverityError, PolicyID: id, Line: line, Column: col, Message: msg})
			}
			// The validator walks maps: order its findings, those pointing
			// at a name first (the cause; "no applicable action" is often
			// its consequence), then by position and message.
			general := func(d policy.Diagnostic) int {
				if d.Line == pos.Line && d.Column == pos.Column {
					return 1
				}
				return 0
			}
			slices.SortStableFunc(vd, func(a, b policy.Diagnostic) int {
				if ga, gb := general(a), general(b); ga != gb {
					return ga - gb
				}
				if a.Line != b.Line {
					return a.Line - b.Line
				}
				if a.Column != b.Column {
					return a.Column - b.Column
				}
				return strings.Compare(a.Message, b.Message)
			})
			diags = append(diags, vd...)
		}
		reason, hasReason := ann[AnnotationReason]
		forbid := p.Effect() == cedar.Forbid
		if forbid && !hasReason {
			diags = append(diags, policy.Diagnostic{Severity: SeverityWarning, PolicyID: id, Line: pos.Line, Column: pos.Column,
				Message: "forbid policy without @reason(\"...\"): its denials will show only its id"})
		}
		set.policies.Add(cedar.PolicyID(id), p)
		set.byPrin.add(cedar.PolicyID(id), p)
		set.meta[cedar.PolicyID(id)] = policyMeta{forbid: forbid, reason: string(reason)}
		set.index[id] = len(set.ids)
		set.ids = append(set.ids, id)
	}
	if HasErrors(diags) {
		return nil, diags
	}
	return set, diags
}

// HasErrors says whether any diagnostic is an error.
func HasErrors(ds []policy.Diagnostic) bool {
	return slices.ContainsFunc(ds, func(d policy.Diagnostic) bool { return d.Severity != SeverityWarning })
}

func flatten(err error) []error {
	if u, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range u.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

func errorPosition(err error) (int, int) {
	var ne *nestingError
	if errors.As(err, &ne) {
		return ne.line, ne.col
	}
	return positionIn(err.Error())
}

var parsePrefixRE = regexp.MustCompile(`^(parser error: )?parse error at [^ ]*:\d+:\d+ `)

// cleanMessage drops the parsers' position prefix, which the diagnostic
// carries as Line and Column.
func cleanMessage(s string) string {
	if loc := parsePrefixRE.FindStringIndex(s); loc != nil {
		return "syntax error near " + s[loc[1]:]
	}
	return s
}

type span struct{ start, end int }

// policySpans returns each policy's byte range in the text: from its start
// to the next policy's start.
func policySpans(list cedar.PolicyList, n int) []span {
	out := make([]span, len(list))
	for i, p := range list {
		out[i].start = p.Position().Offset
		out[i].end = n
		if i+1 < len(list) {
			out[i].end = list[i+1].Position().Offset
		}
		if out[i].start < 0 || out[i].start > n || out[i].end < out[i].start || out[i].end > n {
			out[i] = span{}
		}
	}
	return out
}

var quotedRE = regexp.MustCompile("`([^`]+)`")

// locate points a validation message at the first occurrence, within the
// policy's text, of the name it quotes (an attribute, an entity type, an
// action); the policy's own position when the name is not found.
func locate(text string, sp span, msg string, line, col int) (int, int) {
	m := quotedRE.FindStringSubmatch(msg)
	if m == nil || sp.end <= sp.start {
		return line, col
	}
	name := m[1]
	if i := strings.Index(name, "::"); i >= 0 && strings.HasPrefix(name[i+2:], `"`) {
		name = name[i+2:] // Action::"x" appears as "x" in `action == Action::"x"` too
	}
	body := text[sp.start:sp.end]
	off := indexWord(body, name)
	if off < 0 {
		if k := strings.LastIndexByte(name, '.'); k >= 0 && k+1 < len(name) {
			off = indexWord(body, name[k+1:])
		}
	}
	if off < 0 {
		return line, col
	}
	abs := sp.start + off
	l := 1 + strings.Count(text[:abs], "\n")
	c := abs - strings.LastIndexByte(text[:abs], '\n')
	return l, c
}

// indexWord finds name in s not as part of a longer identifier and, for
// an identifier, not inside a string literal (an @id naming it, say).
func indexWord(s, name string) int {
	isIdent := func(b byte) bool {
		return b == '_' || b >= '0' && b <= '9' || b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z'
	}
	if name == "" {
		return -1
	}
	quoted := name[0] == '"'
	inString := false
	for i := 0; i < len(s); i++ {
		if !inString && strings.HasPrefix(s[i:], name) {
			j := i + len(name)
			if quoted || ((i == 0 || !isIdent(s[i-1]) || !isIdent(name[0])) && (j >= len(s) || !isIdent(s[j]) || !isIdent(name[len(name)-1]))) {
				return i
			}
		}
		switch s[i] {
		case '"':
			inString = !inString
		case '\\':
			if inString {
				i++
			}
		}
	}
	return -1
}
