package abac

import (
	_ "embed"
	"fmt"
	"regexp"
	"strconv"
	"sync"

	"github.com/cedar-policy/cedar-go/types"
	"github.com/cedar-policy/cedar-go/x/exp/schema"
	"github.com/cedar-policy/cedar-go/x/exp/schema/resolved"
	"github.com/cedar-policy/cedar-go/x/exp/schema/validate"
)

// DefaultSchema is AVON's Cedar schema (human-readable format): the entity
// types, actions and context shapes the core fills in. A policy set whose
// schema is "" is validated and evaluated against it.
//
//go:embed avon.cedarschema
var DefaultSchema string

// schemaInfo is a parsed, resolved schema with what evaluation needs.
type schemaInfo struct {
	text      string
	resolved  *resolved.Schema
	validator *validate.Validator
	// actions: the action entities of the schema, with their groups as
	// parents, so that `action in Action::"admin"` works.
	actions types.EntityMap
	// contexts: the context type of each action that applies to
	// something, laid out for the fast context path (fastctx.go).
	contexts map[types.EntityUID]*ctxShape
}

var (
	defaultOnce sync.Once
	defaultInfo *schemaInfo
	defaultErr  error
)

// loadSchema parses and resolves a schema text ("" = DefaultSchema).
func loadSchema(text string) (*schemaInfo, error) {
	if text == "" || text == DefaultSchema {
		defaultOnce.Do(func() { defaultInfo, defaultErr = parseSchema(DefaultSchema) })
		return defaultInfo, defaultErr
	}
	return parseSchema(text)
}

func parseSchema(text string) (*schemaInfo, error) {
	if err := checkNesting(text); err != nil {
		return nil, err
	}
	var s schema.Schema
	s.SetFilename("schema")
	if err := s.UnmarshalCedar([]byte(text)); err != nil {
		return nil, err
	}
	r, err := s.Resolve()
	if err != nil {
		return nil, err
	}
	info := &schemaInfo{text: text, resolved: r, validator: validate.New(r), actions: types.EntityMap{},
		contexts: map[types.EntityUID]*ctxShape{}}
	for uid, a := range r.Actions {
		e := a.Entity
		e.UID = uid
		info.actions[uid] = e
		if a.AppliesTo != nil {
			info.contexts[uid] = newCtxShape(a.AppliesTo.Context)
		}
	}
	return info, nil
}

var posRE = regexp.MustCompile(`:(\d+):(\d+)`)

// positionIn finds the first "name:line:col" in an error message of the
// Cedar parsers; zeros when there is none.
func positionIn(msg string) (line, col int) {
	m := posRE.FindStringSubmatch(msg)
	if m == nil {
		return 0, 0
	}
	line, _ = strconv.Atoi(m[1])
	col, _ = strconv.Atoi(m[2])
	return line, col
}

// maxNesting bounds brackets in policy and schema text: the Cedar parsers
// recurse per level, and a text of a million "(" must be an error, not a
// stack the size of the machine.
const maxNesting = 64

// checkNesting rejects text with brackets nested deeper than maxNesting,
// skipping string literals and // comments as the Cedar scanner does.
func checkNesting(text string) error {
	depth, line, col := 0, 1, 0
	for i := 0; i < len(text); i++ {
		c := text[i]
		col++
		switch c {
		case '\n':
			line, col = line+1, 0
		case '"':
			for i++; i < len(text) && text[i] != '"'; i++ {
				switch text[i] {
				case '\\':
					i++
				case '\n':
					line, col = line+1, 0
				}
			}
		case '/':
			if i+1 < len(text) && text[i+1] == '/' {
				for i < len(text) && text[i] != '\n' {
					i++
				}
				line, col = line+1, 0
			}
		case '(', '[', '{':
			depth++
			if depth > maxNesting {
				return &nestingError{line: line, col: col}
			}
		case ')', ']', '}':
			if depth > 0 {
				depth--
			}
		}
	}
	return nil
}

type nestingError struct{ line, col int }

func (e *nestingError) Error() string {
	return fmt.Sprintf("brackets nested deeper than %d levels at %d:%d", maxNesting, e.line, e.col)
}
