package abac

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
)

// parseJSONReference is the slow, obviously correct parser on top of
// encoding/json's tokenizer that parseJSON is tested against.
func parseJSONReference(b []byte) (node, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	n, err := parseValue(dec, 0)
	if err != nil {
		return node{}, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return node{}, errTrailing
	}
	return n, nil
}

// token reads the next token; the input may not end inside a value.
func token(dec *json.Decoder) (json.Token, error) {
	t, err := dec.Token()
	if err == io.EOF {
		return nil, io.ErrUnexpectedEOF
	}
	return t, err
}

func parseValue(dec *json.Decoder, depth int) (node, error) {
	t, err := token(dec)
	if err != nil {
		return node{}, err
	}
	return parseFrom(dec, t, depth)
}

func parseFrom(dec *json.Decoder, t json.Token, depth int) (node, error) {
	switch v := t.(type) {
	case string:
		return node{kind: 's', str: v}, nil
	case json.Number:
		return node{kind: 'n', str: string(v)}, nil
	case bool:
		return node{kind: 'b', b: v}, nil
	case nil:
		return node{kind: 'z'}, nil
	case json.Delim:
		if depth >= maxJSONDepth {
			return node{}, fmt.Errorf("nested deeper than %d levels", maxJSONDepth)
		}
		switch v {
		case '[':
			n := node{kind: 'a'}
			for dec.More() {
				e, err := parseValue(dec, depth+1)
				if err != nil {
					return node{}, err
				}
				n.arr = append(n.arr, e)
			}
			if _, err := token(dec); err != nil { // ']'
				return node{}, err
			}
			return n, nil
		case '{':
			n := node{kind: 'o'}
			var seen map[string]struct{} // past a few keys, so that a large object stays linear
			for dec.More() {
				kt, err := token(dec)
				if err != nil {
					return node{}, err
				}
				k, ok := kt.(string)
				if !ok {
					return node{}, fmt.Errorf("object key is %v, not a string", kt)
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
				e, err := parseValue(dec, depth+1)
				if err != nil {
					return node{}, err
				}
				n.obj = append(n.obj, member{key: k, val: e})
			}
			if _, err := token(dec); err != nil { // '}'
				return node{}, err
			}
			return n, nil
		}
	}
	return node{}, fmt.Errorf("unexpected JSON token %v", t)
}
