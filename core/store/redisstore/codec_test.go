package redisstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/avonzt/avon/core/store"
)

func TestParseVersion(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64 // 0: refused
	}{
		{"1", 1},
		{"42", 42},
		{"9223372036854775807", math.MaxInt64},
		{"9223372036854775808", 0},
		{"99999999999999999999", 0},
		{"", 0},
		{"0", 0},
		{"00", 0},
		{"01", 0},
		{"-1", 0},
		{"+1", 0},
		{" 1", 0},
		{"1 ", 0},
		{"1e3", 0},
		{"0x10", 0},
		{"1_000", 0},
		{"١", 0}, // an Arabic-Indic digit
	} {
		v, err := parseVersion(c.in)
		switch {
		case c.want == 0 && !errors.Is(err, ErrCorrupt):
			t.Errorf("parseVersion(%q) = %d, %v; want ErrCorrupt", c.in, v, err)
		case c.want != 0 && (err != nil || v != c.want):
			t.Errorf("parseVersion(%q) = %d, %v; want %d", c.in, v, err, c.want)
		}
	}
}

// TestLexRange compares the ZRANGEBYLEX bounds with a direct filter of the
// keys, on bounds that exercise every case of ListOptions.
func TestLexRange(t *testing.T) {
	keys := []string{"a", "a/", "a/1", "a/2", "a/é", "a0", "ab", "b", "b/1", "\U0010ffff", "\U0010ffffx", "z\u00ff"}
	slices.Sort(keys)
	opts := []store.ListOptions{
		{}, {Prefix: "a"}, {Prefix: "a/"}, {Prefix: "a/", After: "a/1"}, {Prefix: "a/", After: "a"},
		{Prefix: "a/", After: "b"}, {After: "a0"}, {Prefix: "\U0010ffff"}, {Prefix: "z\u00ff"}, {Prefix: "zz"},
		{Prefix: "a", After: "a"},
	}
	for _, o := range opts {
		lo, hi := lexRange(o)
		var got, want []string
		for _, k := range keys {
			if lexIn(k, lo, hi) {
				got = append(got, k)
			}
			if strings.HasPrefix(k, o.Prefix) && k > o.After {
				want = append(want, k)
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("lexRange(%+v) = %q, %q selects %q; want %q", o, lo, hi, got, want)
		}
	}
}

// lexIn is ZRANGEBYLEX's membership test for one member.
func lexIn(k, lo, hi string) bool {
	switch {
	case lo == "-":
	case lo[0] == '[' && k < lo[1:]:
		return false
	case lo[0] == '(' && k <= lo[1:]:
		return false
	}
	switch {
	case hi == "+":
	case hi[0] == '[' && k > hi[1:]:
		return false
	case hi[0] == '(' && k >= hi[1:]:
		return false
	}
	return true
}

func TestPrefixEnd(t *testing.T) {
	for _, c := range []struct {
		in, want string
		ok       bool
	}{
		{"", "", false},
		{"a", "b", true},
		{"a/", "a0", true},
		{"a\xff", "b", true},
		{"\xff\xff", "", false},
		{"\U0010ffff", "\xf4\x8f\xbf\xc0", true},
	} {
		got, ok := prefixEnd(c.in)
		if got != c.want || ok != c.ok {
			t.Errorf("prefixEnd(%q) = %q, %v; want %q, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}

func TestDecodeWrite(t *testing.T) {
	for _, c := range []struct {
		name  string
		reply any
		put   bool
		want  writeResult
		bad   bool
	}{
		{"put ok", []any{int64(1), "17"}, true, writeResult{ok: true, version: 17}, false},
		{"delete ok", []any{int64(1), ""}, false, writeResult{ok: true}, false},
		{"conflict absent", []any{int64(0), nil}, true, writeResult{}, false},
		{"conflict present", []any{int64(0), "5"}, false, writeResult{exists: true, current: 5}, false},
		{"conflict corrupt version", []any{int64(0), ""}, true, writeResult{}, true},
		{"put ok bad version", []any{int64(1), "x"}, true, writeResult{}, true},
		{"put ok without version", []any{int64(1), nil}, true, writeResult{}, true},
		{"delete ok with text", []any{int64(1), "3"}, false, writeResult{}, true},
		{"status 2", []any{int64(2), "1"}, true, writeResult{}, true},
		{"status as string", []any{"1", "1"}, true, writeResult{}, true},
		{"short", []any{int64(1)}, true, writeResult{}, true},
		{"not an array", "OK", true, writeResult{}, true},
		{"nil", nil, true, writeResult{}, true},
	} {
		got, err := decodeWrite(c.reply, c.put)
		switch {
		case c.bad && !errors.Is(err, ErrCorrupt):
			t.Errorf("%s: %+v, %v; want ErrCorrupt", c.name, got, err)
		case !c.bad && (err != nil || got != c.want):
			t.Errorf("%s: %+v, %v; want %+v", c.name, got, err, c.want)
		}
	}
}

// replyFrom builds an arbitrary reply from fuzz bytes: a tree of arrays,
// strings, integers, nils and errors, bounded in depth and size.
func replyFrom(b []byte, depth int) (any, []byte) {
	if len(b) == 0 {
		return nil, b
	}
	tag, b := b[0], b[1:]
	switch tag % 5 {
	case 0:
		return nil, b
	case 1:
		n := 0
		if len(b) > 0 {
			n, b = int(b[0]), b[1:]
		}
		n = min(n, len(b))
		return string(b[:n]), b[n:]
	case 2:
		var v int64
		if len(b) >= 8 {
			v, b = int64(binary.LittleEndian.Uint64(b)), b[8:]
		}
		return v, b
	case 3:
		if depth > 3 || len(b) == 0 {
			return []any{}, b
		}
		n := int(b[0] % 16)
		b = b[1:]
		a := make([]any, 0, n)
		for range n {
			var x any
			x, b = replyFrom(b, depth+1)
			a = append(a, x)
		}
		return a, b
	}
	return errors.New("ERR fuzz"), b
}

// FuzzDecodeEntry: any pair of stored fields gives an entry that holds
// exactly them, not-found, or ErrCorrupt; never a panic.
func FuzzDecodeEntry(f *testing.F) {
	f.Add([]byte("1"), []byte("v"), false, false)
	f.Add([]byte("9223372036854775807"), []byte{}, false, false)
	f.Add([]byte("007"), []byte("v"), false, false)
	f.Add([]byte(""), []byte(""), true, true)
	f.Add([]byte("12"), []byte(""), false, true)
	f.Fuzz(func(t *testing.T, ver, data []byte, verNil, dataNil bool) {
		var v, d any = string(ver), string(data)
		if verNil {
			v = nil
		}
		if dataNil {
			d = nil
		}
		e, found, err := decodeEntry("k", v, d)
		switch {
		case err != nil:
			if !errors.Is(err, ErrCorrupt) || found {
				t.Fatalf("error %v (found %v) does not wrap ErrCorrupt", err, found)
			}
		case !found:
			if !verNil || !dataNil {
				t.Fatalf("not found with fields %v, %v", v, d)
			}
		default:
			if verNil || dataNil || e.Key != "k" || e.Value == nil || !bytes.Equal(e.Value, data) ||
				e.Version <= 0 || strconv.FormatInt(e.Version, 10) != string(ver) {
				t.Fatalf("entry %+v from fields %q, %q", e, ver, data)
			}
		}
	})
}

// FuzzDecodeWrite: any reply to a write script decodes to a result
// consistent with it, or ErrCorrupt.
func FuzzDecodeWrite(f *testing.F) {
	f.Add([]byte{3, 2, 2, 1, 0, 0, 0, 0, 0, 0, 0, 1, 2, '1', '7'}, true)
	f.Add([]byte{3, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0}, false)
	f.Add([]byte{1, 2, 'O', 'K'}, true)
	f.Fuzz(func(t *testing.T, b []byte, put bool) {
		reply, _ := replyFrom(b, 0)
		r, err := decodeWrite(reply, put)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		switch {
		case r.ok && put && r.version <= 0:
			t.Fatalf("put ok with version %d", r.version)
		case r.ok && !put && r.version != 0:
			t.Fatalf("delete ok with version %d", r.version)
		case !r.ok && r.exists && r.current <= 0:
			t.Fatalf("conflict with current version %d", r.current)
		}
	})
}

// FuzzDecodeList: any reply to the list script either decodes to entries
// that keep every promise of List for the options, or gives ErrCorrupt.
func FuzzDecodeList(f *testing.F) {
	triple := func(k, v, d string) []byte {
		return []byte("\x01" + string(rune(len(k))) + k + "\x01" + string(rune(len(v))) + v + "\x01" + string(rune(len(d))) + d)
	}
	ok := append([]byte{3, 6}, append(triple("a/1", "3", "x"), triple("a/2", "4", "")...)...)
	f.Add(ok, "a/", "", 10)
	f.Add(ok, "a/", "a/1", 1)
	f.Add(ok, "b", "", 5)
	f.Add([]byte{3, 3, 1, 1, 'a', 0, 0}, "", "", 1)
	f.Add([]byte{1, 0}, "", "", 1)
	f.Fuzz(func(t *testing.T, b []byte, prefix, after string, limit int) {
		o := store.ListOptions{Prefix: prefix, After: after, Limit: limit}
		lim, err := store.CheckList(o)
		if err != nil {
			return // List refuses these before asking the server
		}
		reply, _ := replyFrom(b, 0)
		es, err := decodeList(reply, o, lim)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		if len(es) > lim {
			t.Fatalf("%d entries, limit %d", len(es), lim)
		}
		for i, e := range es {
			if store.ValidateKey(e.Key) != nil || !strings.HasPrefix(e.Key, prefix) || e.Key <= after ||
				(i > 0 && e.Key <= es[i-1].Key) || e.Version <= 0 || e.Value == nil {
				t.Fatalf("entry %d %+v breaks List's promises for %+v", i, e, o)
			}
		}
	})
}

func TestDecodeList(t *testing.T) {
	good := []any{"a/1", "3", "x", "a/2", "4", ""}
	es, err := decodeList(good, store.ListOptions{Prefix: "a/"}, 10)
	if err != nil || len(es) != 2 || es[0].Key != "a/1" || es[0].Version != 3 || string(es[0].Value) != "x" ||
		es[1].Key != "a/2" || es[1].Version != 4 || es[1].Value == nil || len(es[1].Value) != 0 {
		t.Fatalf("decodeList(good) = %+v, %v", es, err)
	}
	if es, err := decodeList([]any{}, store.ListOptions{}, 1); err != nil || len(es) != 0 {
		t.Fatalf("decodeList(empty) = %+v, %v", es, err)
	}
	for _, c := range []struct {
		name  string
		reply any
		o     store.ListOptions
		limit int
	}{
		{"over the limit", good, store.ListOptions{}, 1},
		{"outside the prefix", good, store.ListOptions{Prefix: "b"}, 10},
		{"not after", good, store.ListOptions{After: "a/1"}, 10},
		{"out of order", []any{"a/2", "4", "", "a/1", "3", "x"}, store.ListOptions{}, 10},
		{"duplicate", []any{"a/1", "3", "x", "a/1", "3", "x"}, store.ListOptions{}, 10},
		{"invalid key", []any{"a\x00", "3", "x"}, store.ListOptions{}, 10},
		{"member without entry", []any{"a", nil, nil}, store.ListOptions{}, 10},
		{"half an entry", []any{"a", "1", nil}, store.ListOptions{}, 10},
		{"key not a string", []any{int64(1), "1", "x"}, store.ListOptions{}, 10},
		{"not triples", []any{"a", "1"}, store.ListOptions{}, 10},
		{"not an array", "x", store.ListOptions{}, 10},
	} {
		if es, err := decodeList(c.reply, c.o, c.limit); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %+v, %v; want ErrCorrupt", c.name, es, err)
		}
	}
}

// batchOps builds a batch from fuzz bytes: per byte, delete or put,
// checked or not, expected version 0 or 5.
func batchOps(spec []byte) []store.Op {
	ops := make([]store.Op, 0, len(spec))
	for i, b := range spec {
		op := store.Op{Key: "k" + strconv.Itoa(i), Delete: b&1 != 0, Check: b&2 != 0}
		if b&4 != 0 {
			op.Version = 5
		}
		ops = append(ops, op)
	}
	return ops
}

func TestDecodeBatch(t *testing.T) {
	ops := batchOps([]byte{0, 1, 2, 3, 6, 7}) // put, delete, create, absent, update@5, delete@5
	ok := []any{int64(1), "10", "", "11", "", "12", ""}
	r, err := decodeBatch(ok, ops)
	if err != nil || !r.ok || !slices.Equal(r.versions, []int64{10, 0, 11, 0, 12, 0}) {
		t.Fatalf("decodeBatch(ok) = %+v, %v", r, err)
	}
	for _, c := range []struct {
		name  string
		reply any
		want  batchResult
	}{
		{"create conflict", []any{int64(0), int64(2), "4"}, batchResult{index: 2, exists: true, current: 4}},
		{"absent conflict", []any{int64(0), int64(3), "9"}, batchResult{index: 3, exists: true, current: 9}},
		{"update conflict absent", []any{int64(0), int64(4), nil}, batchResult{index: 4}},
		{"update conflict present", []any{int64(0), int64(4), "6"}, batchResult{index: 4, exists: true, current: 6}},
		{"delete conflict absent", []any{int64(0), int64(5), nil}, batchResult{index: 5}},
	} {
		r, err := decodeBatch(c.reply, ops)
		if err != nil || r.ok || r.index != c.want.index || r.exists != c.want.exists || r.current != c.want.current {
			t.Errorf("%s: %+v, %v; want %+v", c.name, r, err, c.want)
		}
	}
	for _, c := range []struct {
		name  string
		reply any
	}{
		{"not an array", "OK"},
		{"nil", nil},
		{"empty", []any{}},
		{"status 2", []any{int64(2)}},
		{"status as string", []any{"1", "10", "", "11", "", "12", ""}},
		{"short", ok[:6]},
		{"long", append(slices.Clone(ok), "")},
		{"delete with a version", []any{int64(1), "10", "3", "11", "", "12", ""}},
		{"put without a version", []any{int64(1), "", "", "11", "", "12", ""}},
		{"put with nil", []any{int64(1), nil, "", "11", "", "12", ""}},
		{"versions not consecutive", []any{int64(1), "10", "", "12", "", "13", ""}},
		{"versions decreasing", []any{int64(1), "10", "", "9", "", "11", ""}},
		{"version not decimal", []any{int64(1), "10", "", "011", "", "12", ""}},
		{"conflict short", []any{int64(0), int64(2)}},
		{"conflict index out of range", []any{int64(0), int64(6), nil}},
		{"conflict index negative", []any{int64(0), int64(-1), nil}},
		{"conflict index as string", []any{int64(0), "2", nil}},
		{"conflict on an unconditional put", []any{int64(0), int64(0), "3"}},
		{"conflict on an unconditional delete", []any{int64(0), int64(1), nil}},
		{"create conflict with the key absent", []any{int64(0), int64(2), nil}},
		{"update conflict at the expected version", []any{int64(0), int64(4), "5"}},
		{"conflict corrupt version", []any{int64(0), int64(4), ""}},
		{"conflict version not a string", []any{int64(0), int64(4), int64(6)}},
	} {
		if r, err := decodeBatch(c.reply, ops); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %+v, %v; want ErrCorrupt", c.name, r, err)
		}
	}
}

// FuzzDecodeBatch: any reply to the batch script decodes to a result that
// is consistent with the batch, or gives ErrCorrupt; never a panic.
func FuzzDecodeBatch(f *testing.F) {
	f.Add([]byte{3, 3, 2, 1, 0, 0, 0, 0, 0, 0, 0, 1, 2, '1', '7', 1, 0}, []byte{0, 1})
	f.Add([]byte{3, 3, 2, 0, 0, 0, 0, 0, 0, 0, 0, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0}, []byte{0, 6})
	f.Add([]byte{3, 3, 2, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, '3'}, []byte{2})
	f.Add([]byte{1, 2, 'O', 'K'}, []byte{0})
	f.Fuzz(func(t *testing.T, b, spec []byte) {
		if len(spec) == 0 || len(spec) > store.MaxBatchOps {
			return // Apply refuses these before asking the server
		}
		ops := batchOps(spec)
		reply, _ := replyFrom(b, 0)
		r, err := decodeBatch(reply, ops)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		if r.ok {
			if len(r.versions) != len(ops) {
				t.Fatalf("%d versions for %d ops", len(r.versions), len(ops))
			}
			var prev int64
			for i, op := range ops {
				v := r.versions[i]
				switch {
				case op.Delete && v != 0:
					t.Fatalf("delete op %d with version %d", i, v)
				case !op.Delete && (v <= 0 || (prev != 0 && v != prev+1)):
					t.Fatalf("put op %d with version %d after %d", i, v, prev)
				}
				if !op.Delete {
					prev = v
				}
			}
			return
		}
		if r.index < 0 || r.index >= len(ops) || !ops[r.index].Check {
			t.Fatalf("conflict names op %d of %d (checked: %v)", r.index, len(ops), r.index >= 0 && r.index < len(ops) && ops[r.index].Check)
		}
		op := ops[r.index]
		switch {
		case r.exists && (r.current <= 0 || r.current == op.Version):
			t.Fatalf("conflict on op %+v with current version %d", op, r.current)
		case !r.exists && (r.current != 0 || op.Version == 0):
			t.Fatalf("conflict on op %+v with the key absent", op)
		}
	})
}
