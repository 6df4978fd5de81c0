package server

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"math/big"
	"net/http"
	"strings"
	"time"

	"github.com/avonzt/avon/internal/pqx509"
)

// ARI (RFC 9773): a certificate is named by base64url(AKI keyIdentifier)
// "." base64url(serial DER content octets).

// parseCertID splits an ARI certificate identifier into the authority key
// identifier and the serial (lowercase hex, as the CA names serials).
func parseCertID(id string) (aki []byte, serial string, p *Problem) {
	a, s, ok := strings.Cut(id, ".")
	if !ok || a == "" || s == "" || len(id) > 256 {
		return nil, "", prob(ProbMalformed, "renewal info: %q is not <keyIdentifier>.<serial>", id)
	}
	dec := base64.RawURLEncoding.Strict()
	aki, err1 := dec.DecodeString(a)
	sb, err2 := dec.DecodeString(s)
	if err1 != nil || err2 != nil || len(sb) == 0 || len(sb) > 21 || sb[0]&0x80 != 0 {
		return nil, "", prob(ProbMalformed, "renewal info: %q does not decode to a key identifier and a positive serial", id)
	}
	return aki, fmt.Sprintf("%x", new(big.Int).SetBytes(sb)), nil
}

// CertID is the ARI identifier of a certificate.
func CertID(c *pqx509.Certificate) string {
	sb := c.SerialNumber.Bytes()
	if len(sb) == 0 || sb[0]&0x80 != 0 {
		sb = append([]byte{0}, sb...)
	}
	return base64.RawURLEncoding.EncodeToString(c.AuthorityKeyId) + "." + base64.RawURLEncoding.EncodeToString(sb)
}

// renewalWindow is RFC 9773's suggested window: it starts two thirds into
// the validity and lasts a ninth of it; for a revoked certificate, now.
func renewalWindow(c *Cert, now time.Time) (start, end time.Time) {
	if c.Revoked {
		return now.Add(-time.Hour), now
	}
	life := c.NotAfter.Sub(c.NotBefore)
	start = c.NotBefore.Add(life * 2 / 3)
	end = start.Add(life / 9)
	return start, end
}

// renewalInfo is GET <renewalInfo>/<certID> (RFC 9773 4.1).
func (s *Server) renewalInfo(ctx context.Context, r *request, id string) (*response, *Problem) {
	aki, serial, p := parseCertID(id)
	if p != nil {
		return nil, p
	}
	now, err := s.clock(ctx)
	if err != nil {
		return nil, internal("time", err)
	}
	c, _, p := s.loadCert(ctx, nil, serial)
	if p != nil {
		return nil, p
	}
	leaf, err := pqx509.ParseCertificate(c.DER)
	if err != nil || !bytes.Equal(leaf.AuthorityKeyId, aki) {
		return nil, prob(ProbMalformed, "no certificate %q", id).withStatus(http.StatusNotFound)
	}
	start, end := renewalWindow(c, now)
	resp := jsonResponse(http.StatusOK, map[string]any{"suggestedWindow": map[string]string{
		"start": start.UTC().Format(time.RFC3339), "end": end.UTC().Format(time.RFC3339)}})
	resp.header.Set("Retry-After", "21600")
	return resp, nil
}

// checkReplaces checks a new order's "replaces" (RFC 9773 5): a
// certificate of this account, not already replaced, sharing a name with
// the new order.
func (s *Server) checkReplaces(ctx context.Context, acct *Account, id string, names map[string]bool) *Problem {
	aki, serial, p := parseCertID(id)
	if p != nil {
		return p
	}
	c, _, p := s.loadCert(ctx, nil, serial)
	if p != nil {
		return prob(ProbMalformed, "replaces: no certificate %q", id)
	}
	leaf, err := pqx509.ParseCertificate(c.DER)
	if err != nil || !bytes.Equal(leaf.AuthorityKeyId, aki) {
		return prob(ProbMalformed, "replaces: no certificate %q", id)
	}
	if c.AccountID != acct.ID {
		return prob(ProbUnauthorized, "replaces: the certificate belongs to another account")
	}
	if c.Replaced {
		return prob(ProbMalformed, "replaces: certificate %q was already replaced", id).withStatus(http.StatusConflict)
	}
	for _, n := range leaf.DNSNames {
		if names[n] {
			return nil
		}
	}
	return prob(ProbMalformed, "replaces: the new order shares no name with certificate %q", id)
}

// markReplaced records that a certificate was replaced.
func (s *Server) markReplaced(ctx context.Context, id string) {
	_, serial, p := parseCertID(id)
	if p != nil {
		return
	}
	c, ver, p := s.loadCert(ctx, nil, serial)
	if p != nil {
		return
	}
	c.Replaced = true
	if _, err := putJSON(ctx, s.deps.Storage, pfxCert+serial, c, true, ver); err != nil {
		s.deps.Log.Warn("replaced certificate not marked", "serial", serial, "error", err)
	}
}
