package adminapi

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// FuzzDecodePageToken: any string either decodes to a cursor that
// re-encodes to the same token for the same listing, or is refused with
// ErrInvalidPageToken; never a panic.
func FuzzDecodePageToken(f *testing.F) {
	f.Add("agents", EncodePageToken("agents", "agents/abc"))
	f.Add("agents?group=eng", EncodePageToken("agents", "x"))
	f.Add("audit", "AQ")
	f.Add("", "")
	f.Add("x", strings.Repeat("A", 800))
	f.Fuzz(func(t *testing.T, listing, token string) {
		c, err := DecodePageToken(listing, token)
		if err != nil {
			if !errors.Is(err, ErrInvalidPageToken) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if len(c) == 0 || len(c) > MaxCursor {
			t.Fatalf("cursor of %d bytes accepted", len(c))
		}
		if EncodePageToken(listing, c) != token {
			t.Fatalf("token %q does not round trip", token)
		}
	})
}

// FuzzDecodeStrict: a body is either refused with ErrInvalidJSON or is one
// JSON object without duplicate fields that encoding/json accepts too.
func FuzzDecodeStrict(f *testing.F) {
	for _, s := range []string{`{}`, `{"size":1}`, `{"size":1,"size":2}`, `{"a":{"b":[{"c":1},{"c":1}]}}`, `[]`, `{"size":1}x`,
		`{"size":"1"}`, strings.Repeat(`{"a":`, 40) + "1" + strings.Repeat("}", 40), `{"a":[1,2,{"b":null}]}`, ` {"a":true} `} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var v struct {
			Size *int            `json:"size"`
			A    json.RawMessage `json:"a"`
		}
		err := DecodeStrict(b, &v)
		if err != nil {
			if !errors.Is(err, ErrInvalidJSON) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		var m map[string]json.RawMessage
		if json.Unmarshal(b, &m) != nil {
			t.Fatalf("accepted %q, which encoding/json refuses", b)
		}
	})
}

// FuzzParseIfMatch: a header is parsed or refused with ErrInvalidIfMatch;
// a parsed list matches exactly its strong tags.
func FuzzParseIfMatch(f *testing.F) {
	for _, s := range []string{`*`, `"a"`, `"a", W/"b"`, `W/"x"`, `"`, `, ,"a",`, `"a" "b"`, ``} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		m, err := ParseIfMatch(h)
		if err != nil {
			if !errors.Is(err, ErrInvalidIfMatch) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if m.Any {
			return
		}
		for _, tag := range m.Tags {
			if m.Matches(tag) == strings.HasPrefix(tag, "W/") {
				t.Fatalf("tag %q: weak tags must not match, strong ones must", tag)
			}
		}
	})
}
