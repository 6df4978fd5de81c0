package oauth_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/avonzt/avon/core/oauth"
)

func TestParseParams(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want url.Values
		err  bool
	}{
		{"", url.Values{}, false},
		{"a=1&b=2", url.Values{"a": {"1"}, "b": {"2"}}, false},
		{"a=x+y%21&&b=", url.Values{"a": {"x y!"}}, false}, // an empty value is an omitted parameter
		{"a=1&a=2", nil, true},
		{"a=&a=2", nil, true}, // still a repeat
		{"=1", nil, true},
		{"a=%zz", nil, true},
		{"a=%00", nil, true},
		{"a=%0a", nil, true},
		{"a=%c3%28", nil, true}, // invalid UTF-8
		{"a=" + strings.Repeat("x", oauth.MaxTokenLen+1), nil, true},
		{strings.Repeat("a=1&", 40), nil, true},
		{strings.Repeat("x", oauth.MaxTokenLen+5<<10), nil, true},
	} {
		got, err := oauth.ParseParams(tc.in)
		if tc.err {
			if !errors.Is(err, oauth.ErrInvalidRequest) {
				t.Errorf("%.40q: %v, want invalid_request", tc.in, err)
			}
			continue
		}
		if err != nil || got.Encode() != tc.want.Encode() {
			t.Errorf("%.40q: %v %v, want %v", tc.in, got, err, tc.want)
		}
	}
}

func FuzzParseParams(f *testing.F) {
	f.Add("grant_type=authorization_code&code=abc&redirect_uri=http%3A%2F%2F127.0.0.1%3A5555%2Fcallback")
	f.Add("a=1&a=2")
	f.Add("%")
	f.Fuzz(func(t *testing.T, s string) {
		v, err := oauth.ParseParams(s)
		if err != nil {
			if !errors.Is(err, oauth.ErrInvalidRequest) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		// Every parameter appears once with a non-empty clean value, and
		// the standard parser agrees on every value.
		std, serr := url.ParseQuery(s)
		for k, vs := range v {
			if len(vs) != 1 || vs[0] == "" || strings.ContainsAny(vs[0], "\x00\r\n") {
				t.Fatalf("%q: %q -> %q", s, k, vs)
			}
			if serr == nil && (len(std[k]) != 1 || std[k][0] != vs[0]) {
				t.Fatalf("%q: %q = %q, net/url says %q", s, k, vs[0], std[k])
			}
		}
	})
}

func TestBearerToken(t *testing.T) {
	for _, c := range []struct {
		headers []string
		want    string // "" wants ErrMalformedToken
	}{
		{[]string{"Bearer abc.def"}, "abc.def"},
		{[]string{"bearer abc"}, "abc"},
		{[]string{"BEARER abc"}, "abc"},
		{nil, ""},
		{[]string{"Bearer abc", "Bearer def"}, ""},
		{[]string{"Basic dXNlcjpwYXNz"}, ""},
		{[]string{"Bearer"}, ""},
		{[]string{"Bearer "}, ""},
		{[]string{"Bearer a b"}, ""},
		{[]string{"Bearer a\tb"}, ""},
		{[]string{"Bearerabc"}, ""},
	} {
		r := httptest.NewRequest(http.MethodGet, "/v1/agents", nil)
		for _, h := range c.headers {
			r.Header.Add("Authorization", h)
		}
		got, err := oauth.BearerToken(r)
		if c.want == "" {
			if !errors.Is(err, oauth.ErrMalformedToken) || got != "" {
				t.Errorf("%q: %q, %v; want ErrMalformedToken", c.headers, got, err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%q: %q, %v; want %q", c.headers, got, err, c.want)
		}
	}
}
