package adminapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"strings"
)

// Body limits.
const (
	// DefaultMaxBody is a route's request body limit unless it sets one.
	DefaultMaxBody = 64 << 10
	// MaxDepth bounds the nesting of a request body.
	MaxDepth = 32
)

// CheckJSON checks that b is exactly one JSON object with no duplicate
// member names at any depth and nesting at most MaxDepth, followed only by
// white space. Errors wrap ErrInvalidJSON.
func CheckJSON(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidJSON, syntaxText(err))
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return fmt.Errorf("%w: want a JSON object", ErrInvalidJSON)
	}
	// One frame per open object or array; objects track their keys.
	type frame struct {
		object bool
		keys   map[string]struct{}
		key    bool // the next token of an object is a key
	}
	stack := []frame{{object: true, keys: map[string]struct{}{}, key: true}}
	for len(stack) > 0 {
		tok, err := dec.Token()
		if err != nil {
			return fmt.Errorf("%w: %v", ErrInvalidJSON, syntaxText(err))
		}
		top := &stack[len(stack)-1]
		if top.object && top.key {
			if d, ok := tok.(json.Delim); ok && d == '}' {
				stack = stack[:len(stack)-1]
				continue
			}
			k, ok := tok.(string)
			if !ok {
				return fmt.Errorf("%w: object key expected", ErrInvalidJSON)
			}
			if _, dup := top.keys[k]; dup {
				return fmt.Errorf("%w: duplicate field %.64q", ErrInvalidJSON, k)
			}
			top.keys[k] = struct{}{}
			top.key = false
			continue
		}
		if top.object {
			top.key = true
		}
		if d, ok := tok.(json.Delim); ok {
			switch d {
			case '{', '[':
				if len(stack) >= MaxDepth {
					return fmt.Errorf("%w: nested deeper than %d", ErrInvalidJSON, MaxDepth)
				}
				stack = append(stack, frame{object: d == '{', keys: map[string]struct{}{}, key: d == '{'})
			case ']':
				stack = stack[:len(stack)-1]
			default:
				return fmt.Errorf("%w: unexpected %q", ErrInvalidJSON, d)
			}
		}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: trailing data after the object", ErrInvalidJSON)
	}
	return nil
}

func syntaxText(err error) string {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return "unexpected end of body"
	}
	return err.Error()
}

// DecodeStrict checks b with CheckJSON and decodes it into v, refusing
// fields v does not have. Errors wrap ErrInvalidJSON.
func DecodeStrict(b []byte, v any) error {
	if err := CheckJSON(b); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		msg := err.Error()
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			msg = fmt.Sprintf("field %q: want %s", te.Field, te.Type)
		}
		return fmt.Errorf("%w: %s", ErrInvalidJSON, strings.TrimPrefix(msg, "json: "))
	}
	return nil
}

// isJSONMedia reports whether a Content-Type names JSON.
func isJSONMedia(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && (mt == "application/json" || (strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json")))
}
