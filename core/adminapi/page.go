package adminapi

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"strconv"
	"unicode"
	"unicode/utf8"
)

// Paging limits.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
	// MaxCursor bounds the position a page token carries (a store key).
	MaxCursor = 512
	// maxPageToken is the longest token DecodePageToken reads.
	maxPageToken = (1+pageBinding+MaxCursor)*4/3 + 4
)

const (
	pageTokenVersion = 1
	pageBinding      = 8 // bytes of SHA-256(listing) in a token
)

// Page is what a list request asked for: at most Size items after the
// position After ("" for the first page).
type Page struct {
	Size  int
	After string
}

// EncodePageToken returns the token of the page after cursor in listing.
// listing names the list and its filters ("agents?group=eng"), so a token
// is refused by any other list. Tokens are opaque to clients but not
// secret: they name a position the caller could list anyway.
func EncodePageToken(listing, cursor string) string {
	sum := sha256.Sum256([]byte(listing))
	b := make([]byte, 0, 1+pageBinding+len(cursor))
	b = append(b, pageTokenVersion)
	b = append(b, sum[:pageBinding]...)
	b = append(b, cursor...)
	return base64.RawURLEncoding.EncodeToString(b)
}

// DecodePageToken returns the cursor of a token that EncodePageToken made
// for listing. Errors wrap ErrInvalidPageToken: a token too long, not
// base64url, of another version, of another listing, or whose cursor is
// longer than MaxCursor, not UTF-8 or holds control characters.
func DecodePageToken(listing, token string) (string, error) {
	if len(token) > maxPageToken {
		return "", fmt.Errorf("%w: %d characters", ErrInvalidPageToken, len(token))
	}
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil {
		return "", fmt.Errorf("%w: not base64url", ErrInvalidPageToken)
	}
	if len(b) < 1+pageBinding+1 || b[0] != pageTokenVersion {
		return "", fmt.Errorf("%w: unknown format", ErrInvalidPageToken)
	}
	sum := sha256.Sum256([]byte(listing))
	if subtle.ConstantTimeCompare(b[1:1+pageBinding], sum[:pageBinding]) != 1 {
		return "", fmt.Errorf("%w: issued for another listing or other filters", ErrInvalidPageToken)
	}
	cursor := string(b[1+pageBinding:])
	if len(cursor) > MaxCursor || !utf8.ValidString(cursor) {
		return "", fmt.Errorf("%w: bad position", ErrInvalidPageToken)
	}
	for _, r := range cursor {
		if unicode.IsControl(r) {
			return "", fmt.Errorf("%w: bad position", ErrInvalidPageToken)
		}
	}
	return cursor, nil
}

// ParsePage reads page_size and page_token as given in a query string for
// listing. An absent page_size is DefaultPageSize; a malformed or
// out-of-range one is a bad-request problem, a bad token an
// invalid-page-token problem.
func ParsePage(listing, size, token string) (Page, error) {
	p := Page{Size: DefaultPageSize}
	if size != "" {
		n, err := strconv.Atoi(size)
		if err != nil || n < 1 || n > MaxPageSize {
			return Page{}, NewProblem(TypeBadRequest, fmt.Sprintf("page_size %.20q: want 1 to %d", size, MaxPageSize))
		}
		p.Size = n
	}
	if token != "" {
		c, err := DecodePageToken(listing, token)
		if err != nil {
			return Page{}, Wrap(TypeInvalidPageToken, err)
		}
		p.After = c
	}
	return p, nil
}
