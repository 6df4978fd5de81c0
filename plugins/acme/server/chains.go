package server

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/avonzt/avon/sdk/ca"
)

// Alternate chains (RFC 8555 7.4.2). A certificate's default chain is the
// one the CA returned at issuance. When the CA reports other chains for
// the issuer's key (ca.Issuer.AlternateChains: a cross-certificate of the
// issuing CA under another root), the download answers with a
// Link: <cert-url/N>;rel="alternate" header per other chain, and a
// POST-as-GET of cert-url/N serves the end-entity certificate followed by
// chain N. Every chain response links to all the others, the default
// (cert-url) included.

// chainCacheTTL is how long the CA's issuer chains are reused before the
// CA is asked again (a new cross-certificate shows within it).
const chainCacheTTL = 5 * time.Minute

// maxAlternates bounds the alternate chains served for one certificate.
const maxAlternates = 8

// chainCache holds the alternate chains of every issuer of the CA, by
// SHA-256 of the issuer's certificate, as of fetched.
type chainCache struct {
	mu      sync.Mutex // guards the fields below
	byCert  map[[32]byte][][][]byte
	fetched time.Time
}

// alternates returns the alternate chains of the certificate c: those of
// its issuer (c.Chain[0]) as the CA reports them, at most maxAlternates.
func (s *Server) alternates(ctx context.Context, now time.Time, c *Cert) ([][][]byte, error) {
	if len(c.Chain) == 0 {
		return nil, nil
	}
	key := sha256.Sum256(c.Chain[0])
	cc := &s.chains
	cc.mu.Lock()
	if cc.byCert != nil && now.Sub(cc.fetched) < chainCacheTTL && !now.Before(cc.fetched) {
		alts, ok := cc.byCert[key]
		// An issuer unknown at the last fetch that signed after it is
		// new (a rotation): ask the CA now, not at the TTL.
		if ok || !c.NotBefore.Add(time.Minute).After(cc.fetched) {
			cc.mu.Unlock()
			return alts, nil
		}
	}
	cc.mu.Unlock()
	resp, err := s.deps.CA.ListIssuers(ctx, &ca.ListIssuersRequest{})
	if err != nil {
		return nil, fmt.Errorf("list issuers: %w", err)
	}
	m := make(map[[32]byte][][][]byte, len(resp.Issuers))
	for _, is := range resp.Issuers {
		if len(is.AlternateChains) == 0 {
			continue
		}
		alts := is.AlternateChains
		if len(alts) > maxAlternates {
			alts = alts[:maxAlternates]
		}
		m[sha256.Sum256(is.Certificate)] = alts
	}
	cc.mu.Lock()
	cc.byCert, cc.fetched = m, now
	cc.mu.Unlock()
	return m[key], nil
}

// chainIndex parses the N of cert-url/N: a decimal 1..n without sign or
// leading zero. ok is false for anything else.
func chainIndex(s string, n int) (int, bool) {
	if len(s) == 0 || len(s) > 3 || s[0] < '1' || s[0] > '9' {
		return 0, false
	}
	i, err := strconv.Atoi(s)
	if err != nil || i < 1 || i > n {
		return 0, false
	}
	return i, true
}

// chainLinks adds a Link rel="alternate" header for every chain of the
// certificate but the one served (0 = the default, at base).
func chainLinks(h http.Header, base string, alternates, served int) {
	if served != 0 {
		h.Add("Link", "<"+base+`>;rel="alternate"`)
	}
	for i := 1; i <= alternates; i++ {
		if i != served {
			h.Add("Link", "<"+base+"/"+strconv.Itoa(i)+`>;rel="alternate"`)
		}
	}
}
