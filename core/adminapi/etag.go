package adminapi

import (
	"fmt"
	"strings"
)

// ETag returns the strong entity tag of a resource stored at version
// (store versions are unique across the store and never reused, so the
// tag changes whenever the stored representation does).
func ETag(version int64) string { return fmt.Sprintf(`"%x"`, version) }

// maxIfMatch bounds the If-Match header ParseIfMatch reads.
const maxIfMatch = 4096

// IfMatch is a parsed If-Match header.
type IfMatch struct {
	Any  bool     // "*"
	Tags []string // entity tags with their quotes; weak ones keep W/
}

// ParseIfMatch parses an If-Match field value (RFC 9110 13.1.1): "*" or a
// comma-separated list of entity tags. Errors wrap ErrInvalidIfMatch.
func ParseIfMatch(v string) (IfMatch, error) {
	if len(v) > maxIfMatch {
		return IfMatch{}, fmt.Errorf("%w: %d bytes", ErrInvalidIfMatch, len(v))
	}
	v = strings.TrimSpace(v)
	if v == "*" {
		return IfMatch{Any: true}, nil
	}
	var m IfMatch
	for part := range strings.SplitSeq(v, ",") {
		t := strings.TrimSpace(part)
		if t == "" {
			continue // empty list elements are allowed
		}
		body := strings.TrimPrefix(t, "W/")
		if len(body) < 2 || body[0] != '"' || body[len(body)-1] != '"' {
			return IfMatch{}, fmt.Errorf("%w: %.40q is not an entity tag", ErrInvalidIfMatch, t)
		}
		for i := 1; i < len(body)-1; i++ {
			c := body[i]
			// etagc = %x21 / %x23-7E / obs-text
			if c != 0x21 && (c < 0x23 || c == 0x7f) {
				return IfMatch{}, fmt.Errorf("%w: %.40q is not an entity tag", ErrInvalidIfMatch, t)
			}
		}
		m.Tags = append(m.Tags, t)
	}
	if len(m.Tags) == 0 {
		return IfMatch{}, fmt.Errorf("%w: empty", ErrInvalidIfMatch)
	}
	return m, nil
}

// Matches reports whether the current strong tag passes m with the strong
// comparison If-Match requires: weak tags never match.
func (m IfMatch) Matches(current string) bool {
	if m.Any {
		return true
	}
	for _, t := range m.Tags {
		if t == current && !strings.HasPrefix(t, "W/") {
			return true
		}
	}
	return false
}
