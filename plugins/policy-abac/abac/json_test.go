package abac

import (
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// noRaw drops the input spans parseJSON records and the reference does
// not, and the capacity it reserves.
func noRaw(n node) node {
	n.raw = nil
	if len(n.arr) == 0 {
		n.arr = nil
	}
	if len(n.obj) == 0 {
		n.obj = nil
	}
	for i := range n.arr {
		n.arr[i] = noRaw(n.arr[i])
	}
	for i := range n.obj {
		n.obj[i].val = noRaw(n.obj[i].val)
	}
	return n
}

func TestParseJSON(t *testing.T) {
	good := []string{`{}`, `[]`, ` {"a" : [1, -2.5e+3, true, false, null, "x\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00"]} `, `0`, `"\ud800x"`, `{"k":{"k":{}}}`}
	for _, in := range good {
		got, err := parseJSON([]byte(in))
		want, rerr := parseJSONReference([]byte(in))
		if err != nil || rerr != nil || !reflect.DeepEqual(noRaw(got), want) {
			t.Errorf("%s: %+v %v, reference %+v %v", in, got, err, want, rerr)
		}
	}
	bad := map[string]string{
		``: "EOF", `{`: "EOF", `{"a"}`: "want ':'", `{"a":1,}`: "not a string", `[1,]`: "invalid character", `01`: "trailing",
		`1.`: "invalid number", `-`: "invalid number", "\"\x01\"": "control character", `"\q"`: "invalid escape", `"\u12"`: "invalid \\u",
		`{"a":1,"a":2}`: "appears twice", "\"\xff\"": "not UTF-8", `tru`: "invalid character", `{} {}`: "trailing",
		strings.Repeat("[", 33) + strings.Repeat("]", 33): "nested deeper",
	}
	for in, want := range bad {
		if _, err := parseJSON([]byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", in, err, want)
		}
	}
}

// FuzzJSON: the fast parser agrees with the reference built on
// encoding/json's tokenizer, value for value, on every UTF-8 input.
func FuzzJSON(f *testing.F) {
	for _, s := range []string{`{"a":[1,2,{"b":null}]}`, `"\ud83d\ude00\ud800"`, `[-0.0e-0]`, `{"a":1,"a":2}`, " \t\n[ ]", string(flowContext(443, true))} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := parseJSON(data)
		if !utf8.Valid(data) {
			return // the reference replaces invalid UTF-8; parseJSON refuses it
		}
		want, rerr := parseJSONReference(data)
		if (err == nil) != (rerr == nil) {
			t.Fatalf("%q: parseJSON %v, reference %v", data, err, rerr)
		}
		if err == nil && !reflect.DeepEqual(noRaw(got), want) {
			t.Fatalf("%q: %+v, reference %+v", data, got, want)
		}
	})
}
