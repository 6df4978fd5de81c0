package oauth

import (
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"
)

// Limits of the request parameters this server parses.
const (
	maxFormBytes  = MaxTokenLen + 4<<10 // a request body or query string
	maxParams     = 32
	maxParamValue = MaxTokenLen // an access token is the longest value
)

// ParseParams parses an application/x-www-form-urlencoded string (a query
// or a body) the way OAuth wants it (RFC 6749 section 3.1): every parameter
// at most once, no empty names, valid UTF-8, no control characters, a
// bounded number of bounded values. Parameters sent without a value are
// treated as omitted (section 3.1), so they do not count as given. Errors
// wrap ErrInvalidRequest and name the offending parameter.
func ParseParams(s string) (url.Values, error) {
	if len(s) > maxFormBytes {
		return nil, fmt.Errorf("%w: parameters longer than %d bytes", ErrInvalidRequest, maxFormBytes)
	}
	out := url.Values{}
	if s == "" {
		return out, nil
	}
	parts := strings.Split(s, "&")
	if len(parts) > maxParams {
		return nil, fmt.Errorf("%w: more than %d parameters", ErrInvalidRequest, maxParams)
	}
	for _, p := range parts {
		if p == "" {
			continue
		}
		k, v, _ := strings.Cut(p, "=")
		name, err := url.QueryUnescape(k)
		if err != nil || name == "" {
			return nil, fmt.Errorf("%w: malformed parameter name", ErrInvalidRequest)
		}
		val, err := url.QueryUnescape(v)
		if err != nil {
			return nil, fmt.Errorf("%w: parameter %q is not URL-encoded", ErrInvalidRequest, clip(name))
		}
		if !cleanText(name) || !cleanText(val) {
			return nil, fmt.Errorf("%w: parameter %q holds invalid UTF-8 or control characters", ErrInvalidRequest, clip(name))
		}
		if len(val) > maxParamValue {
			return nil, fmt.Errorf("%w: parameter %q longer than %d bytes", ErrInvalidRequest, clip(name), maxParamValue)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("%w: parameter %q given more than once", ErrInvalidRequest, clip(name))
		}
		if val == "" {
			out[name] = nil // seen (a repeat is still refused), but omitted
			continue
		}
		out[name] = []string{val}
	}
	for k, v := range out {
		if v == nil {
			delete(out, k)
		}
	}
	return out, nil
}

func cleanText(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || (r >= 0x7f && r < 0xa0) {
			return false
		}
	}
	return true
}

// clip shortens a name for an error message.
func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

// readForm reads a POST body of type application/x-www-form-urlencoded
// with ParseParams, refusing parameters in the query string (RFC 6749
// section 3.2: the token endpoint takes them in the body only).
func readForm(w http.ResponseWriter, r *http.Request) (url.Values, error) {
	if r.URL.RawQuery != "" {
		return nil, fmt.Errorf("%w: parameters belong in the request body, not the URL", ErrInvalidRequest)
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/x-www-form-urlencoded" {
		return nil, fmt.Errorf("%w: want Content-Type application/x-www-form-urlencoded", ErrInvalidRequest)
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxFormBytes+1))
	if err != nil || len(b) > maxFormBytes {
		return nil, fmt.Errorf("%w: body longer than %d bytes", ErrInvalidRequest, maxFormBytes)
	}
	return ParseParams(string(b))
}
