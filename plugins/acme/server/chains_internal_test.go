package server

import (
	"context"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/avonzt/avon/sdk/ca"
)

// chainIndexRef is the obviously-correct reading of cert-url/N.
var chainIndexRE = regexp.MustCompile(`^[1-9][0-9]*$`)

func chainIndexRef(s string, n int) (int, bool) {
	if !chainIndexRE.MatchString(s) || len(s) > 18 {
		return 0, false
	}
	i, _ := strconv.Atoi(s)
	return i, i >= 1 && i <= n
}

func TestChainIndex(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want int
		ok   bool
	}{
		{"1", 1, 1, true}, {"2", 3, 2, true}, {"8", 8, 8, true},
		{"0", 3, 0, false}, {"2", 1, 0, false}, {"1", 0, 0, false}, {"01", 3, 0, false}, {"+1", 3, 0, false},
		{"-1", 3, 0, false}, {" 1", 3, 0, false}, {"1 ", 3, 0, false}, {"", 3, 0, false}, {"1e0", 3, 0, false},
		{"0x1", 3, 0, false}, {"١", 3, 0, false}, {"99999999999999999999", 3, 0, false},
	} {
		got, ok := chainIndex(tc.in, tc.n)
		if ok != tc.ok || (ok && got != tc.want) {
			t.Errorf("chainIndex(%q, %d) = %d %v; want %d %v", tc.in, tc.n, got, ok, tc.want, tc.ok)
		}
	}
}

// FuzzChainIndex: the index of an alternate chain URL, from the request
// path, agrees with the reference and stays in 1..n.
func FuzzChainIndex(f *testing.F) {
	for _, s := range []string{"1", "2", "0", "01", "-1", "+1", "999", "1000", "", "x", "9223372036854775808"} {
		f.Add(s, 3)
	}
	f.Fuzz(func(t *testing.T, s string, n int) {
		n = n % (maxAlternates + 2)
		got, ok := chainIndex(s, n)
		want, wantOK := chainIndexRef(s, n)
		if ok != wantOK || (ok && got != want) {
			t.Fatalf("chainIndex(%q, %d) = %d %v; reference %d %v", s, n, got, ok, want, wantOK)
		}
		if ok && (got < 1 || got > n) {
			t.Fatalf("index %d out of 1..%d", got, n)
		}
	})
}

func TestChainLinks(t *testing.T) {
	const base = "https://avon.test/acme/cert/ab"
	for _, tc := range []struct {
		alts, served int
		want         string
	}{
		{0, 0, ""},
		{1, 0, "</1>"},
		{1, 1, "<>"},
		{3, 2, "<>,</1>,</3>"},
	} {
		h := http.Header{}
		chainLinks(h, base, tc.alts, tc.served)
		var got []string
		for _, v := range h.Values("Link") {
			u, ok := strings.CutSuffix(v, `>;rel="alternate"`)
			if !ok || !strings.HasPrefix(u, "<"+base) {
				t.Fatalf("link %q", v)
			}
			got = append(got, "<"+strings.TrimPrefix(u, "<"+base)+">")
		}
		if strings.Join(got, ",") != tc.want {
			t.Errorf("links(%d alternates, serving %d) = %v; want %s", tc.alts, tc.served, got, tc.want)
		}
	}
}

// countingCA answers ListIssuers with issuers and counts the calls; the
// rest of ca.CA is not used by the chain cache.
type countingCA struct {
	ca.CA
	calls   int
	issuers []ca.Issuer
}

func (c *countingCA) ListIssuers(context.Context, *ca.ListIssuersRequest) (*ca.ListIssuersResponse, error) {
	c.calls++
	return &ca.ListIssuersResponse{Issuers: c.issuers}, nil
}

// TestChainCache: the CA is asked once per TTL, again at once for an
// issuer that signed after the last fetch, and when the clock went back.
func TestChainCache(t *testing.T) {
	ctx := context.Background()
	fake := &countingCA{issuers: []ca.Issuer{{Name: "a", Certificate: []byte("A"), AlternateChains: [][][]byte{{[]byte("xA")}}}}}
	s := &Server{deps: Deps{CA: fake}}
	t0 := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	certA := &Cert{Chain: [][]byte{[]byte("A")}, NotBefore: t0.Add(-time.Hour)}
	certB := &Cert{Chain: [][]byte{[]byte("B")}, NotBefore: t0.Add(time.Minute)}
	step := func(now time.Time, c *Cert, wantCalls, wantAlts int) {
		t.Helper()
		alts, err := s.alternates(ctx, now, c)
		if err != nil || fake.calls != wantCalls || len(alts) != wantAlts {
			t.Fatalf("at %s: %d alternates, %d CA calls, %v; want %d, %d", now.Sub(t0), len(alts), fake.calls, err, wantAlts, wantCalls)
		}
	}
	step(t0, certA, 1, 1)
	step(t0.Add(time.Minute), certA, 1, 1)   // cached
	step(t0.Add(chainCacheTTL), certA, 2, 1) // expired
	// B is new (rotated in after the fetch): asked at once, and B has
	// alternates now.
	fake.issuers = append(fake.issuers, ca.Issuer{Name: "b", Certificate: []byte("B"), AlternateChains: [][][]byte{{[]byte("xB")}, {[]byte("yB")}}})
	certB.NotBefore = t0.Add(chainCacheTTL + time.Minute)
	step(t0.Add(chainCacheTTL+2*time.Minute), certB, 3, 2)
	step(t0.Add(chainCacheTTL+3*time.Minute), certB, 3, 2)
	// An issuer without alternates signing before the fetch: no refetch.
	old := &Cert{Chain: [][]byte{[]byte("C")}, NotBefore: t0}
	step(t0.Add(chainCacheTTL+3*time.Minute), old, 3, 0)
	// The clock went back: the cache is not trusted.
	step(t0, certA, 4, 1)
	// No chain: nothing to look up.
	step(t0, &Cert{}, 4, 0)
	// At most maxAlternates.
	many := make([][][]byte, maxAlternates+3)
	for i := range many {
		many[i] = [][]byte{{byte(i)}}
	}
	fake.issuers = []ca.Issuer{{Name: "m", Certificate: []byte("M"), AlternateChains: many}}
	step(t0.Add(time.Hour), &Cert{Chain: [][]byte{[]byte("M")}}, 5, maxAlternates)
}
