package redisstore

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/avonzt/avon/core/store"
)

// The functions here turn replies read back from the server into entries.
// The server's data is not trusted: anything that is not exactly what the
// scripts write gives an error wrapping ErrCorrupt, never a panic.

// maxVersionDigits is the length of the largest int64 in decimal.
const maxVersionDigits = 19

// parseVersion reads a version as the scripts store it: the counter's
// decimal text, positive, without sign, spaces or leading zeros.
func parseVersion(s string) (int64, error) {
	if s == "" || len(s) > maxVersionDigits || s[0] < '1' || s[0] > '9' {
		return 0, corruptf("version %s is not a positive decimal", quoteShort(s))
	}
	for i := 1; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, corruptf("version %s is not a positive decimal", quoteShort(s))
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, corruptf("version %s is out of range", quoteShort(s))
	}
	return v, nil
}

// formatVersion is the text a script compares with the stored version.
func formatVersion(v int64) string { return strconv.FormatInt(v, 10) }

// quoteShort quotes s for a message, cut to a few dozen bytes: stored
// data is not echoed whole.
func quoteShort(s string) string {
	const max = 40
	if len(s) > max {
		return strconv.Quote(s[:max]) + "..."
	}
	return strconv.Quote(s)
}

// bulk returns a reply element that must be a bulk string.
func bulk(what string, x any) (string, error) {
	s, ok := x.(string)
	if !ok {
		return "", corruptf("%s is a %s, want a string", what, kind(x))
	}
	return s, nil
}

// kind names a reply element's type for messages.
func kind(x any) string {
	switch x.(type) {
	case nil:
		return "nil"
	case string:
		return "string"
	case int64:
		return "integer"
	case []any:
		return "array"
	case error:
		return "error"
	}
	return fmt.Sprintf("%T", x)
}

// decodeEntry builds key's entry from the two fields of its hash (v and d,
// as HMGET returns them). found is false when both are nil: the key does
// not exist.
func decodeEntry(key string, ver, data any) (e store.Entry, found bool, err error) {
	if ver == nil && data == nil {
		return store.Entry{}, false, nil
	}
	vs, err := bulk("version field", ver)
	if err != nil {
		return store.Entry{}, false, fmt.Errorf("entry %s: %w", quoteShort(key), err)
	}
	ds, err := bulk("value field", data)
	if err != nil {
		return store.Entry{}, false, fmt.Errorf("entry %s: %w", quoteShort(key), err)
	}
	v, err := parseVersion(vs)
	if err != nil {
		return store.Entry{}, false, fmt.Errorf("entry %s: %w", quoteShort(key), err)
	}
	if len(ds) > store.MaxValueSize {
		return store.Entry{}, false, corruptf("entry %s: value of %d bytes exceeds %d", quoteShort(key), len(ds), store.MaxValueSize)
	}
	return store.Entry{Key: key, Value: []byte(ds), Version: v}, true, nil
}

// writeResult is what the Put and Delete scripts answer.
type writeResult struct {
	ok      bool  // the write happened
	version int64 // the new version (Put, when ok)
	exists  bool  // on a conflict: the key exists
	current int64 // on a conflict with exists: its version
}

// decodeWrite reads a write script's reply: {1, version} after a Put,
// {1, ""} after a Delete, {0, nil} on a conflict with the key absent,
// {0, version} on a conflict with the key present. put says which script
// answered.
func decodeWrite(reply any, put bool) (writeResult, error) {
	a, ok := reply.([]any)
	if !ok || len(a) != 2 {
		return writeResult{}, corruptf("write script answered a %s of %d elements, want 2", kind(reply), arrayLen(reply))
	}
	status, ok := a[0].(int64)
	if !ok || (status != 0 && status != 1) {
		return writeResult{}, corruptf("write script status %v (%s), want 0 or 1", a[0], kind(a[0]))
	}
	if status == 1 {
		s, err := bulk("written version", a[1])
		if err != nil {
			return writeResult{}, err
		}
		if !put {
			if s != "" {
				return writeResult{}, corruptf("delete script answered %s, want an empty string", quoteShort(s))
			}
			return writeResult{ok: true}, nil
		}
		v, err := parseVersion(s)
		if err != nil {
			return writeResult{}, fmt.Errorf("written version: %w", err)
		}
		return writeResult{ok: true, version: v}, nil
	}
	if a[1] == nil {
		return writeResult{}, nil
	}
	s, err := bulk("current version", a[1])
	if err != nil {
		return writeResult{}, err
	}
	v, err := parseVersion(s)
	if err != nil {
		return writeResult{}, fmt.Errorf("current version: %w", err)
	}
	return writeResult{exists: true, current: v}, nil
}

func arrayLen(x any) int {
	if a, ok := x.([]any); ok {
		return len(a)
	}
	return 0
}

// decodeList reads the list script's reply, a flat array of (key, version,
// value) triples, and checks it is what o asked for: at most limit
// entries, valid keys under o.Prefix and after o.After, strictly ascending
// in bytewise order.
func decodeList(reply any, o store.ListOptions, limit int) ([]store.Entry, error) {
	a, ok := reply.([]any)
	if !ok {
		return nil, corruptf("list script answered a %s, want an array", kind(reply))
	}
	if len(a)%3 != 0 || len(a)/3 > limit {
		return nil, corruptf("list script answered %d elements, want at most %d triples", len(a), limit)
	}
	out := make([]store.Entry, 0, len(a)/3)
	prev := ""
	for i := 0; i < len(a); i += 3 {
		key, err := bulk("listed key", a[i])
		if err != nil {
			return nil, err
		}
		if err := store.ValidateKey(key); err != nil {
			return nil, corruptf("index holds %s, not a valid key", quoteShort(key))
		}
		switch {
		case !strings.HasPrefix(key, o.Prefix):
			return nil, corruptf("listed key %s is outside prefix %s", quoteShort(key), quoteShort(o.Prefix))
		case key <= o.After:
			return nil, corruptf("listed key %s is not after %s", quoteShort(key), quoteShort(o.After))
		case i > 0 && key <= prev:
			return nil, corruptf("listed key %s follows %s: index out of order", quoteShort(key), quoteShort(prev))
		}
		e, found, err := decodeEntry(key, a[i+1], a[i+2])
		if err != nil {
			return nil, err
		}
		if !found {
			return nil, corruptf("index holds %s, which has no entry", quoteShort(key))
		}
		out = append(out, e)
		prev = key
	}
	return out, nil
}

// lexRange returns the ZRANGEBYLEX bounds that select o's keys: from the
// larger of Prefix (inclusive) and After (exclusive), below the prefix's
// bytewise successor.
func lexRange(o store.ListOptions) (lo, hi string) {
	switch {
	case o.After != "" && o.After >= o.Prefix:
		lo = "(" + o.After
	case o.Prefix != "":
		lo = "[" + o.Prefix
	default:
		lo = "-"
	}
	hi = "+"
	if end, ok := prefixEnd(o.Prefix); ok {
		hi = "(" + end
	}
	return lo, hi
}

// prefixEnd returns the smallest byte string above every string that
// starts with p: p without its trailing 0xff bytes, last byte incremented.
// ok is false when there is none (p empty or all 0xff).
func prefixEnd(p string) (string, bool) {
	b := []byte(p)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] != 0xff {
			b[i]++
			return string(b[:i+1]), true
		}
	}
	return "", false
}

// batchResult is what the batch script answers.
type batchResult struct {
	ok       bool    // every op was written
	versions []int64 // when ok: one per op, 0 for a delete
	index    int     // on a conflict: the op whose check failed
	exists   bool    // on a conflict: its key exists
	current  int64   // on a conflict with exists: its version
}

// decodeBatch reads the batch script's reply for ops: {1, version or ""
// per op}, the puts' versions consecutive in op order, or {0, index,
// current version or nil} naming a checked op.
func decodeBatch(reply any, ops []store.Op) (batchResult, error) {
	a, ok := reply.([]any)
	if !ok || len(a) == 0 {
		return batchResult{}, corruptf("batch script answered a %s of %d elements", kind(reply), arrayLen(reply))
	}
	status, ok := a[0].(int64)
	if !ok || (status != 0 && status != 1) {
		return batchResult{}, corruptf("batch script status %v (%s), want 0 or 1", a[0], kind(a[0]))
	}
	if status == 0 {
		return decodeBatchConflict(a, ops)
	}
	if len(a) != len(ops)+1 {
		return batchResult{}, corruptf("batch script answered %d results for %d ops", len(a)-1, len(ops))
	}
	r := batchResult{ok: true, versions: make([]int64, len(ops))}
	var prev int64
	for i, op := range ops {
		s, err := bulk("written version", a[i+1])
		if err != nil {
			return batchResult{}, fmt.Errorf("batch op %d: %w", i, err)
		}
		if op.Delete {
			if s != "" {
				return batchResult{}, corruptf("batch op %d, a delete, answered %s", i, quoteShort(s))
			}
			continue
		}
		v, err := parseVersion(s)
		if err != nil {
			return batchResult{}, fmt.Errorf("batch op %d: written version: %w", i, err)
		}
		if prev != 0 && v != prev+1 {
			return batchResult{}, corruptf("batch op %d answered version %d after %d", i, v, prev)
		}
		r.versions[i], prev = v, v
	}
	return r, nil
}

func decodeBatchConflict(a []any, ops []store.Op) (batchResult, error) {
	if len(a) != 3 {
		return batchResult{}, corruptf("batch script answered a conflict of %d elements, want 3", len(a))
	}
	i, ok := a[1].(int64)
	if !ok || i < 0 || i >= int64(len(ops)) {
		return batchResult{}, corruptf("batch script named op %v (%s) of %d", a[1], kind(a[1]), len(ops))
	}
	if !ops[i].Check {
		return batchResult{}, corruptf("batch script answered a conflict for unconditional op %d", i)
	}
	r := batchResult{index: int(i)}
	want := ops[i].Version
	if a[2] == nil {
		if want == 0 {
			return batchResult{}, corruptf("batch script answered a conflict for op %d, which requires its key absent, with the key absent", i)
		}
		return r, nil
	}
	s, err := bulk("current version", a[2])
	if err != nil {
		return batchResult{}, err
	}
	if r.current, err = parseVersion(s); err != nil {
		return batchResult{}, fmt.Errorf("current version: %w", err)
	}
	if r.current == want {
		return batchResult{}, corruptf("batch script answered a conflict for op %d at the version it expects (%d)", i, want)
	}
	r.exists = true
	return r, nil
}
