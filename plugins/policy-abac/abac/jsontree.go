package abac

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// maxJSONDepth bounds the nesting of entity attributes and contexts. AVON's
// schema needs 3; custom schemas get room, attackers do not.
const maxJSONDepth = 32

// node is one parsed JSON value. Objects keep their key order and never
// hold a key twice.
type node struct {
	kind byte // 's' string, 'n' number, 'b' bool, 'z' null, 'a' array, 'o' object
	b    bool
	str  string // a string's value, a number's text
	arr  []node
	obj  []member
	raw  []byte // an object's bytes in the input (parseJSON only), for memoizing its conversion
}

type member struct {
	key string
	val node
}

func (n node) kindName() string {
	switch n.kind {
	case 's':
		return "a string"
	case 'n':
		return "a number"
	case 'b':
		return "a boolean"
	case 'z':
		return "null"
	case 'a':
		return "an array"
	default:
		return "an object"
	}
}

// get returns the member named key of an object.
func (n node) get(key string) (node, bool) {
	for _, m := range n.obj {
		if m.key == key {
			return m.val, true
		}
	}
	return node{}, false
}

var errTrailing = errors.New("trailing data after the JSON value")

// parseJSON parses one JSON value (RFC 8259). Unlike encoding/json it
// rejects duplicate object keys (two parsers must never read the same
// bytes two ways), strings that are not UTF-8, and nesting deeper than
// maxJSONDepth. It is the per-query hot path: one pass, no reflection.
func parseJSON(b []byte) (node, error) { return parseJSONAt(b, 0) }

// parseJSONAt parses a value found depth levels deep in a larger document,
// so that the depth bound counts from the document's top.
func parseJSONAt(b []byte, depth int) (node, error) {
	p := jsonParser{b: b}
	p.space()
	n, err := p.value(depth)
	if err != nil {
		return node{}, err
	}
	p.space()
	if p.i != len(p.b) {
		return node{}, errTrailing
	}
	return n, nil
}

type jsonParser struct {
	b []byte
	i int
}

func (p *jsonParser) errorf(format string, args ...any) error {
	return fmt.Errorf("JSON offset %d: %s", p.i, fmt.Sprintf(format, args...))
}

func (p *jsonParser) space() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *jsonParser) value(depth int) (node, error) {
	if p.i >= len(p.b) {
		return node{}, io.ErrUnexpectedEOF
	}
	switch c := p.b[p.i]; {
	case c == '{':
		return p.object(depth)
	case c == '[':
		return p.array(depth)
	case c == '"':
		s, err := p.str()
		return node{kind: 's', str: s}, err
	case c == '-' || c >= '0' && c <= '9':
		return p.number()
	case p.literal("true"):
		return node{kind: 'b', b: true}, nil
	case p.literal("false"):
		return node{kind: 'b'}, nil
	case p.literal("null"):
		return node{kind: 'z'}, nil
	}
	return node{}, p.errorf("invalid character %q", p.b[p.i])
}

func (p *jsonParser) literal(w string) bool {
	if len(p.b)-p.i >= len(w) && string(p.b[p.i:p.i+len(w)]) == w {
		p.i += len(w)
		return true
	}
	return false
}

func (p *jsonParser) object(depth int) (node, error) {
	if depth >= maxJSONDepth {
		return node{}, fmt.Errorf("nested deeper than %d levels", maxJSONDepth)
	}
	start := p.i
	p.i++ // {
	n := node{kind: 'o', obj: make([]member, 0, 8)}
	var seen map[string]struct{} // past a few keys, so that a large object stays linear
	p.space()
	if p.i < len(p.b) && p.b[p.i] == '}' {
		p.i++
		n.raw = p.b[start:p.i]
		return n, nil
	}
	for {
		p.space()
		if p.i >= len(p.b) {
			return node{}, io.ErrUnexpectedEOF
		}
		if p.b[p.i] != '"' {
			return node{}, p.errorf("object key is not a string")
		}
		k, err := p.str()
		if err != nil {
			return node{}, err
		}
		dup := false
		if seen != nil {
			_, dup = seen[k]
		} else {
			_, dup = n.get(k)
		}
		if dup {
			return node{}, fmt.Errorf("key %q appears twice", k)
		}
		if seen == nil && len(n.obj) >= 8 {
			seen = make(map[string]struct{}, 16)
			for _, m := range n.obj {
				seen[m.key] = struct{}{}
			}
		}
		if seen != nil {
			seen[k] = struct{}{}
		}
		p.space()
		if p.i >= len(p.b) {
			return node{}, io.ErrUnexpectedEOF
		}
		if p.b[p.i] != ':' {
			return node{}, p.errorf("want ':' after an object key")
		}
		p.i++
		p.space()
		v, err := p.value(depth + 1)
		if err != nil {
			return node{}, err
		}
		n.obj = append(n.obj, member{key: k, val: v})
		p.space()
		if p.i >= len(p.b) {
			return node{}, io.ErrUnexpectedEOF
		}
		switch p.b[p.i] {
		case ',':
			p.i++
		case '}':
			p.i++
			n.raw = p.b[start:p.i]
			return n, nil
		default:
			return node{}, p.errorf("want ',' or '}' in an object")
		}
	}
}

func (p *jsonParser) array(depth int) (node, error) {
	if depth >= maxJSONDepth {
		return node{}, fmt.Errorf("nested deeper than %d levels", maxJSONDepth)
	}
	p.i++ // [
	n := node{kind: 'a', arr: make([]node, 0, 4)}
	p.space()
	if p.i < len(p.b) && p.b[p.i] == ']' {
		p.i++
		return n, nil
	}
	for {
		p.space()
		v, err := p.value(depth + 1)
		if err != nil {
			return node{}, err
		}
		n.arr = append(n.arr, v)
		p.space()
		if p.i >= len(p.b) {
			return node{}, io.ErrUnexpectedEOF
		}
		switch p.b[p.i] {
		case ',':
			p.i++
		case ']':
			p.i++
			return n, nil
		default:
			return node{}, p.errorf("want ',' or ']' in an array")
		}
	}
}

// number reads a JSON number, keeping its text.
func (p *jsonParser) number() (node, error) {
	start := p.i
	digits := func() int {
		n := 0
		for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
			p.i++
			n++
		}
		return n
	}
	if p.b[p.i] == '-' {
		p.i++
	}
	if p.i < len(p.b) && p.b[p.i] == '0' {
		p.i++
	} else if digits() == 0 {
		return node{}, p.errorf("invalid number")
	}
	if p.i < len(p.b) && p.b[p.i] == '.' {
		p.i++
		if digits() == 0 {
			return node{}, p.errorf("invalid number")
		}
	}
	if p.i < len(p.b) && (p.b[p.i] == 'e' || p.b[p.i] == 'E') {
		p.i++
		if p.i < len(p.b) && (p.b[p.i] == '+' || p.b[p.i] == '-') {
			p.i++
		}
		if digits() == 0 {
			return node{}, p.errorf("invalid number")
		}
	}
	return node{kind: 'n', str: string(p.b[start:p.i])}, nil
}

// str reads a JSON string starting at its opening quote.
func (p *jsonParser) str() (string, error) {
	p.i++ // "
	start := p.i
	// Fast path: no escapes, ASCII or valid UTF-8.
	for p.i < len(p.b) {
		c := p.b[p.i]
		if c == '"' {
			s := p.b[start:p.i]
			p.i++
			if !utf8.Valid(s) {
				return "", p.errorf("string is not UTF-8")
			}
			return string(s), nil
		}
		if c == '\\' {
			break
		}
		if c < 0x20 {
			return "", p.errorf("control character in a string")
		}
		p.i++
	}
	buf := append([]byte(nil), p.b[start:p.i]...)
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			p.i++
			if !utf8.Valid(buf) {
				return "", p.errorf("string is not UTF-8")
			}
			return string(buf), nil
		case c < 0x20:
			return "", p.errorf("control character in a string")
		case c != '\\':
			buf = append(buf, c)
			p.i++
			continue
		}
		p.i++ // backslash
		if p.i >= len(p.b) {
			return "", io.ErrUnexpectedEOF
		}
		e := p.b[p.i]
		p.i++
		switch e {
		case '"', '\\', '/':
			buf = append(buf, e)
		case 'b':
			buf = append(buf, '\b')
		case 'f':
			buf = append(buf, '\f')
		case 'n':
			buf = append(buf, '\n')
		case 'r':
			buf = append(buf, '\r')
		case 't':
			buf = append(buf, '\t')
		case 'u':
			r, ok := p.hex4()
			if !ok {
				return "", p.errorf("invalid \\u escape")
			}
			if utf16.IsSurrogate(r) {
				// A surrogate pair makes one rune; a lone half is U+FFFD,
				// as encoding/json decodes it.
				pair := false
				if len(p.b)-p.i >= 6 && p.b[p.i] == '\\' && p.b[p.i+1] == 'u' {
					save := p.i
					p.i += 2
					if r2, ok := p.hex4(); ok {
						if d := utf16.DecodeRune(r, r2); d != utf8.RuneError {
							r, pair = d, true
						}
					}
					if !pair {
						p.i = save // the next escape stands on its own
					}
				}
				if !pair {
					r = utf8.RuneError
				}
			}
			buf = utf8.AppendRune(buf, r)
		default:
			return "", p.errorf("invalid escape \\%c", e)
		}
	}
	return "", io.ErrUnexpectedEOF
}

func (p *jsonParser) hex4() (rune, bool) {
	if len(p.b)-p.i < 4 {
		return 0, false
	}
	v, err := strconv.ParseUint(string(p.b[p.i:p.i+4]), 16, 32)
	if err != nil {
		return 0, false
	}
	p.i += 4
	return rune(v), true
}
