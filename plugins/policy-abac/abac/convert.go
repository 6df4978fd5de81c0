package abac

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cedar-policy/cedar-go/types"
	"github.com/cedar-policy/cedar-go/x/exp/schema/resolved"
)

// converter turns parsed JSON into Cedar values of the schema's types. It is
// strict: an integer for Long, a string for ipaddr/datetime/decimal/
// duration, {"type","id"} for an entity reference, every required attribute
// and no unknown one.
type converter struct {
	sc *schemaInfo
	// inline collects entities given inline in a context (an object where
	// the schema has an entity type, e.g. posture); nil forbids them.
	inline map[types.EntityUID]types.Entity
	// memo, when set, holds the conversions of nested objects already
	// seen in this batch: the flows of one session share their posture,
	// source and location byte for byte. Cedar values are immutable, so
	// queries may share them.
	memo map[memoKey]memoVal
	// scope distinguishes the types the same path has under different
	// actions (the action's UID).
	scope string
}

type memoKey struct{ scope, path, raw string }

type memoVal struct {
	v      types.Value
	inline *types.Entity // the inline entity the value refers to
}

func (c *converter) value(n node, t resolved.IsType, path string) (types.Value, error) {
	if c.memo == nil || n.kind != 'o' || n.raw == nil {
		return c.convert(n, t, path)
	}
	k := memoKey{scope: c.scope, path: path, raw: string(n.raw)}
	if m, ok := c.memo[k]; ok {
		if m.inline != nil {
			c.inline[m.inline.UID] = *m.inline
		}
		return m.v, nil
	}
	v, err := c.convert(n, t, path)
	if err != nil {
		return nil, err
	}
	m := memoVal{v: v}
	if uid, ok := v.(types.EntityUID); ok && c.inline != nil {
		if e, ok := c.inline[uid]; ok {
			m.inline = &e
		}
	}
	c.memo[k] = m
	return v, nil
}

func (c *converter) convert(n node, t resolved.IsType, path string) (types.Value, error) {
	switch t := t.(type) {
	case resolved.StringType:
		if n.kind != 's' {
			return nil, fmt.Errorf("%s: want a string, got %s", path, n.kindName())
		}
		return types.String(n.str), nil
	case resolved.LongType:
		if n.kind != 'n' {
			return nil, fmt.Errorf("%s: want an integer, got %s", path, n.kindName())
		}
		i, err := strconv.ParseInt(n.str, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s: %s is not a 64-bit integer", path, n.str)
		}
		return types.Long(i), nil
	case resolved.BoolType:
		if n.kind != 'b' {
			return nil, fmt.Errorf("%s: want true or false, got %s", path, n.kindName())
		}
		return types.Boolean(n.b), nil
	case resolved.ExtensionType:
		if n.kind != 's' {
			return nil, fmt.Errorf("%s: want a %s string, got %s", path, t, n.kindName())
		}
		return extension(string(t), n.str, path)
	case resolved.SetType:
		if n.kind != 'a' {
			return nil, fmt.Errorf("%s: want an array, got %s", path, n.kindName())
		}
		vals := make([]types.Value, 0, len(n.arr))
		for i, e := range n.arr {
			v, err := c.value(e, t.Element, fmt.Sprintf("%s[%d]", path, i))
			if err != nil {
				return nil, err
			}
			vals = append(vals, v)
		}
		return types.NewSet(vals...), nil
	case resolved.RecordType:
		r, err := c.record(n, t, path)
		if err != nil {
			return nil, err
		}
		return types.NewRecord(r), nil
	case resolved.EntityType:
		return c.entityValue(n, types.EntityType(t), path)
	}
	return nil, fmt.Errorf("%s: type %T is not supported", path, t)
}

func (c *converter) record(n node, t resolved.RecordType, path string) (types.RecordMap, error) {
	if n.kind != 'o' {
		return nil, fmt.Errorf("%s: want an object, got %s", path, n.kindName())
	}
	out := make(types.RecordMap, len(n.obj))
	for _, m := range n.obj {
		a, ok := t[types.String(m.key)]
		if !ok {
			return nil, fmt.Errorf("%s: unknown attribute %q (the schema has %s)", path, m.key, attrNames(t))
		}
		v, err := c.value(m.val, a.Type, path+"."+m.key)
		if err != nil {
			return nil, err
		}
		out[types.String(m.key)] = v
	}
	if len(out) < len(t) {
		var missing []string
		for name, a := range t {
			if _, ok := out[name]; !ok && !a.Optional {
				missing = append(missing, strconv.Quote(string(name)))
			}
		}
		if len(missing) > 0 {
			slices.Sort(missing) // map order is random; the message must not be
			return nil, fmt.Errorf("%s: missing attribute %s", path, strings.Join(missing, ", "))
		}
	}
	return out, nil
}

func attrNames(t resolved.RecordType) string {
	names := make([]string, 0, len(t))
	for k := range t {
		names = append(names, string(k))
	}
	if len(names) == 0 {
		return "none"
	}
	slices.Sort(names)
	s := ""
	for i, n := range names {
		if i > 0 {
			s += ", "
		}
		s += n
	}
	return s
}

// entityValue reads an entity reference {"type": T, "id": I}, or, where
// inline entities are allowed, an object of T's attributes (and "tags")
// that becomes a query-local entity T::"<path>".
func (c *converter) entityValue(n node, et types.EntityType, path string) (types.Value, error) {
	if n.kind != 'o' {
		return nil, fmt.Errorf("%s: want an entity reference {\"type\", \"id\"}, got %s", path, n.kindName())
	}
	if uid, ok, err := entityRef(n, path); ok || err != nil {
		if err != nil {
			return nil, err
		}
		if uid.Type != et {
			return nil, fmt.Errorf("%s: want an entity of type %s, got %s", path, et, uid.Type)
		}
		if err := c.checkEnum(uid, path); err != nil {
			return nil, err
		}
		return uid, nil
	}
	if c.inline == nil {
		return nil, fmt.Errorf("%s: want an entity reference {\"type\", \"id\"}", path)
	}
	def, ok := c.sc.resolved.Entities[et]
	if !ok {
		return nil, fmt.Errorf("%s: %s cannot be given inline", path, et)
	}
	e := types.Entity{UID: types.NewEntityUID(et, types.String(path))}
	attrs := node{kind: 'o'}
	for _, m := range n.obj {
		if m.key != "tags" {
			attrs.obj = append(attrs.obj, m)
			continue
		}
		if def.Tags == nil {
			return nil, fmt.Errorf("%s.tags: %s has no tags", path, et)
		}
		if m.val.kind != 'o' {
			return nil, fmt.Errorf("%s.tags: want an object, got %s", path, m.val.kindName())
		}
		tags := make(types.RecordMap, len(m.val.obj))
		for _, tm := range m.val.obj {
			v, err := c.value(tm.val, def.Tags, path+".tags."+tm.key)
			if err != nil {
				return nil, err
			}
			tags[types.String(tm.key)] = v
		}
		e.Tags = types.NewRecord(tags)
	}
	r, err := c.record(attrs, def.Shape, path)
	if err != nil {
		return nil, err
	}
	e.Attributes = types.NewRecord(r)
	c.inline[e.UID] = e
	return e.UID, nil
}

// entityRef reads {"type": T, "id": I}: ok is false when n is not of that
// shape (two string members named type and id).
func entityRef(n node, path string) (types.EntityUID, bool, error) {
	if len(n.obj) != 2 {
		return types.EntityUID{}, false, nil
	}
	t, okT := n.get("type")
	id, okI := n.get("id")
	if !okT || !okI {
		return types.EntityUID{}, false, nil
	}
	if t.kind != 's' || id.kind != 's' || t.str == "" {
		return types.EntityUID{}, false, fmt.Errorf("%s: an entity reference needs a non-empty string type and a string id", path)
	}
	return types.NewEntityUID(types.EntityType(t.str), types.String(id.str)), true, nil
}

func (c *converter) checkEnum(uid types.EntityUID, path string) error {
	en, ok := c.sc.resolved.Enums[uid.Type]
	if !ok {
		return nil
	}
	if !slices.Contains(en.Values, uid) {
		return fmt.Errorf("%s: %s is not one of the values of enum %s", path, uid, uid.Type)
	}
	return nil
}

func extension(name, s, path string) (types.Value, error) {
	switch name {
	case "ipaddr":
		v, err := types.ParseIPAddr(s)
		if err != nil {
			return nil, fmt.Errorf("%s: %q is not an IP address or range", path, s)
		}
		return v, nil
	case "datetime":
		if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
			return types.NewDatetime(t), nil
		}
		v, err := types.ParseDatetime(s)
		if err != nil {
			return nil, fmt.Errorf("%s: %q is not an RFC 3339 time", path, s)
		}
		return v, nil
	case "decimal":
		v, err := types.ParseDecimal(s)
		if err != nil {
			return nil, fmt.Errorf("%s: %q is not a decimal", path, s)
		}
		return v, nil
	case "duration":
		v, err := types.ParseDuration(s)
		if err != nil {
			return nil, fmt.Errorf("%s: %q is not a duration such as \"1h30m\"", path, s)
		}
		return v, nil
	}
	return nil, fmt.Errorf("%s: extension type %s is not supported", path, name)
}
