package abac

import (
	"bytes"
	"hash/maphash"
	"slices"
	"sync"
	"time"

	"github.com/cedar-policy/cedar-go/types"
	"github.com/cedar-policy/cedar-go/x/exp/schema/resolved"
)

// The fast context path. The contexts of a gateway's queries differ by
// little: the flows of one session carry the same time, skew, posture,
// source and location byte for byte and differ only by destination. So a
// context is not parsed into a tree and converted as a whole: its top-level
// members are found by a scan that allocates nothing, and each member's
// Cedar value comes from the set's member cache, keyed by the action, the
// attribute and the member's bytes. Only a member not seen lately (the
// destination, mostly) is parsed and converted, then cached.
//
// The fast path decides nothing by itself about bad input: whenever a
// context is anything but plainly valid (a syntax error, an escaped or
// unknown or repeated key, a missing attribute, a weekday sent, no time,
// a value that does not convert), it gives up and the straightforward path
// (Set.context) converts the context again and says what is wrong, so that
// errors read the same on both paths.

// ctxShape is an action's context type laid out for the fast path.
type ctxShape struct {
	attrs   map[string]int // attribute name -> index in list
	list    []ctxAttr
	time    int // index of a datetime "time", or -1
	weekday int // index of a Long "weekday", or -1
}

type ctxAttr struct {
	name     types.String
	path     string // "context.<name>", as errors and inline entity ids name it
	typ      resolved.IsType
	optional bool
}

// maxFastAttrs bounds the attributes of a context type the fast path
// handles (it tracks them in a bit mask); larger ones take the
// straightforward path.
const maxFastAttrs = 64

func newCtxShape(t resolved.RecordType) *ctxShape {
	names := make([]string, 0, len(t))
	for k := range t {
		names = append(names, string(k))
	}
	slices.Sort(names)
	sh := &ctxShape{attrs: make(map[string]int, len(names)), time: -1, weekday: -1}
	for i, n := range names {
		a := t[types.String(n)]
		sh.attrs[n] = i
		sh.list = append(sh.list, ctxAttr{name: types.String(n), path: "context." + n, typ: a.Type, optional: a.Optional})
		switch {
		case n == ContextTime && a.Type == resolved.IsType(resolved.ExtensionType("datetime")):
			sh.time = i
		case n == ContextWeekday && a.Type == resolved.IsType(resolved.LongType{}):
			sh.weekday = i
		}
	}
	return sh
}

// memberSpan is one top-level member of a context: its attribute and the
// bytes of its value.
type memberSpan struct {
	attr       int
	start, end int
	hash       uint64
}

// fastContext converts a context as Set.context does; ok is false when it
// cannot (see above), and then nothing was cached.
func (s *Set) fastContext(raw []byte, sh *ctxShape, now Clock) (rec types.Record, inline types.EntityMap, ok bool) {
	if sh == nil || len(sh.list) > maxFastAttrs {
		return types.Record{}, nil, false
	}
	if len(raw) == 0 {
		raw = []byte("{}")
	}
	var buf [16]memberSpan
	spans, seen, ok := scanContext(raw, sh, buf[:0])
	if !ok {
		return types.Record{}, nil, false
	}
	for i, a := range sh.list {
		if !a.optional && seen&(1<<i) == 0 && i != sh.time && i != sh.weekday {
			return types.Record{}, nil, false // missing: let the straightforward path name it
		}
	}
	if sh.weekday >= 0 && seen&(1<<sh.weekday) != 0 {
		return types.Record{}, nil, false // derived, must not be sent
	}
	for i := range spans {
		spans[i].hash = maphash.Bytes(memberSeed, raw[spans[i].start:spans[i].end])
	}

	var vbuf [16]memberVal
	vals := vbuf[:len(spans)]
	if len(spans) > len(vbuf) {
		vals = make([]memberVal, len(spans))
	}
	missing := s.members.lookup(sh, raw, spans, vals)
	if missing > 0 {
		for i, sp := range spans {
			if vals[i].raw != nil {
				continue
			}
			v, ok := s.convertMember(raw[sp.start:sp.end], &sh.list[sp.attr])
			if !ok {
				return types.Record{}, nil, false
			}
			vals[i] = v
		}
		s.members.store(sh, spans, vals)
	}

	n := len(spans)
	if sh.time >= 0 && seen&(1<<sh.time) == 0 {
		n++
	}
	if sh.weekday >= 0 {
		n++
	}
	r := make(types.RecordMap, n)
	for i, sp := range spans {
		r[sh.list[sp.attr].name] = vals[i].v
		if vals[i].inline != nil {
			if inline == nil {
				inline = vals[i].inline // shared and never written: cached values are immutable
			} else {
				merged := make(types.EntityMap, len(inline)+len(vals[i].inline))
				for k, e := range inline {
					merged[k] = e
				}
				for k, e := range vals[i].inline {
					merged[k] = e
				}
				inline = merged
			}
		}
	}
	if sh.time >= 0 && seen&(1<<sh.time) == 0 {
		var t time.Time
		if now != nil {
			t = now()
		}
		if t.IsZero() {
			return types.Record{}, nil, false
		}
		a := &sh.list[sh.time]
		v, err := extension("datetime", t.UTC().Format(time.RFC3339Nano), a.path)
		if err != nil {
			return types.Record{}, nil, false
		}
		r[a.name] = v
	}
	if sh.weekday >= 0 {
		wd := types.Long(0)
		if sh.time >= 0 {
			if dt, ok := r[sh.list[sh.time].name].(types.Datetime); ok {
				wd = types.Long(dt.Time().UTC().Weekday())
			}
		}
		r[sh.list[sh.weekday].name] = wd
	}
	return types.NewRecord(r), inline, true
}

// convertMember parses and converts one member's value as Set.context
// would (its value starts one level deep).
func (s *Set) convertMember(raw []byte, a *ctxAttr) (memberVal, bool) {
	n, err := parseJSONAt(raw, 1)
	if err != nil {
		return memberVal{}, false
	}
	c := converter{sc: s.schema, inline: types.EntityMap{}}
	v, err := c.value(n, a.typ, a.path)
	if err != nil {
		return memberVal{}, false
	}
	m := memberVal{raw: bytes.Clone(raw), v: v}
	if len(c.inline) > 0 {
		m.inline = c.inline
	}
	return m, true
}

// scanContext finds the members of a top-level object, checking that each
// is an attribute of sh given once under a key without escapes. It checks
// only the object's own syntax: a value's bytes are checked when parsed,
// or were checked when a value of the same bytes was.
func scanContext(b []byte, sh *ctxShape, spans []memberSpan) ([]memberSpan, uint64, bool) {
	var seen uint64
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return nil, 0, false
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return spans, 0, skipSpace(b, i+1) == len(b)
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return nil, 0, false
		}
		k := i + 1
		for k < len(b) && b[k] != '"' && b[k] != '\\' && b[k] >= 0x20 {
			k++
		}
		if k >= len(b) || b[k] != '"' {
			return nil, 0, false
		}
		attr, known := sh.attrs[string(b[i+1:k])]
		if !known || seen&(1<<attr) != 0 {
			return nil, 0, false
		}
		seen |= 1 << attr
		i = skipSpace(b, k+1)
		if i >= len(b) || b[i] != ':' {
			return nil, 0, false
		}
		i = skipSpace(b, i+1)
		end := skipValue(b, i)
		if end < 0 {
			return nil, 0, false
		}
		spans = append(spans, memberSpan{attr: attr, start: i, end: end})
		i = skipSpace(b, end)
		if i >= len(b) {
			return nil, 0, false
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case '}':
			return spans, seen, skipSpace(b, i+1) == len(b)
		default:
			return nil, 0, false
		}
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipValue returns the end of the JSON value at i, or -1. It matches
// brackets and strings without checking what is between them.
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = skipString(b, i)
				if i < 0 {
					return -1
				}
				continue
			case '{', '[':
				depth++
				if depth > maxJSONDepth {
					return -1
				}
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return -1
	}
	start := i
	for i < len(b) {
		switch b[i] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			if i == start {
				return -1
			}
			return i
		}
		i++
	}
	return -1
}

// skipString returns the end of the string whose opening quote is at i,
// or -1.
func skipString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return -1
}

// memberSeed keys the member cache's hashes; fixed per process.
var memberSeed = maphash.MakeSeed()

// Bounds of a set's member cache: each generation holds up to
// maxCachedMembers values and maxCachedMemberBytes bytes of member text; a
// member longer than maxMemberBytes is never cached.
const (
	maxCachedMembers     = 4096
	maxCachedMemberBytes = 4 << 20
	maxMemberBytes       = 16 << 10
)

type memberKey struct {
	sh   *ctxShape
	attr int
	hash uint64
}

// memberVal is a converted member: its bytes (to tell hash collisions
// apart), its Cedar value and the inline entities the value refers to.
// Cedar values are immutable, so queries share them.
type memberVal struct {
	raw    []byte
	v      types.Value
	inline types.EntityMap
}

// memberCache holds converted context members in two generations: when
// the current one is full it becomes the old one and the old one is
// dropped; a value found in the old generation moves to the current one.
// What a session sends with every flow stays; a destination seen once
// ages out.
type memberCache struct {
	mu    sync.Mutex // guards the fields below
	cur   map[memberKey]*memberVal
	old   map[memberKey]*memberVal
	bytes int // of member text in cur
}

// lookup fills vals[i] for each span found and returns how many were not.
func (c *memberCache) lookup(sh *ctxShape, raw []byte, spans []memberSpan, vals []memberVal) (missing int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, sp := range spans {
		k := memberKey{sh: sh, attr: sp.attr, hash: sp.hash}
		b := raw[sp.start:sp.end]
		m, ok := c.cur[k]
		if !ok {
			if m, ok = c.old[k]; ok && bytes.Equal(m.raw, b) {
				c.putLocked(k, m)
			}
		}
		if !ok || !bytes.Equal(m.raw, b) {
			vals[i] = memberVal{}
			missing++
			continue
		}
		vals[i] = *m
	}
	return missing
}

// store caches the values of the spans that were missing.
func (c *memberCache) store(sh *ctxShape, spans []memberSpan, vals []memberVal) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, sp := range spans {
		if len(vals[i].raw) > maxMemberBytes {
			continue
		}
		k := memberKey{sh: sh, attr: sp.attr, hash: sp.hash}
		if m, ok := c.cur[k]; ok && bytes.Equal(m.raw, vals[i].raw) {
			continue
		}
		v := vals[i]
		c.putLocked(k, &v)
	}
}

func (c *memberCache) putLocked(k memberKey, m *memberVal) {
	if c.cur == nil || len(c.cur) >= maxCachedMembers || c.bytes+len(m.raw) > maxCachedMemberBytes {
		c.old, c.cur, c.bytes = c.cur, make(map[memberKey]*memberVal, 256), 0
	}
	if prev, ok := c.cur[k]; ok {
		c.bytes -= len(prev.raw)
	}
	c.cur[k] = m
	c.bytes += len(m.raw)
}
