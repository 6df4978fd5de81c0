package ca

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	sdkca "github.com/avonzt/avon/sdk/ca"
	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/host"
)

// maxListScan bounds the records one ListCertificates call reads, so a
// filter that matches little cannot make one call read the whole store: the
// page then holds fewer than the limit and Next goes on from where it
// stopped.
const maxListScan = 10 * sdkca.MaxListLimit

// ListCertificates pages over the certificate records (certs/<serial>) in
// serial order. A page may hold fewer than Limit certificates and still
// have a Next (filters); Next is "" when the records are exhausted.
func (e *Engine) ListCertificates(ctx context.Context, req *sdkca.ListCertificatesRequest) (*sdkca.ListCertificatesResponse, error) {
	limit := req.Limit
	switch {
	case limit == 0:
		limit = sdkca.DefaultListLimit
	case limit < 0 || limit > sdkca.MaxListLimit:
		return nil, fmt.Errorf("limit %d: want 1 to %d: %w", limit, sdkca.MaxListLimit, errdef.ErrInvalidArgument)
	}
	switch req.Status {
	case "", sdkca.StatusGood, sdkca.StatusRevoked:
	default:
		return nil, fmt.Errorf("status %q: want good or revoked: %w", req.Status, errdef.ErrInvalidArgument)
	}
	// The issuer filter: a family means all its generations, a
	// generation ("issuing.1") that one.
	var ids map[string]bool
	if req.Issuer != "" {
		e.mu.RLock()
		ids = map[string]bool{}
		if _, ok := e.active[req.Issuer]; ok {
			for id, is := range e.issuers {
				if is.rec.family() == req.Issuer {
					ids[id] = true
				}
			}
		} else if is, ok := e.resolveLocked(req.Issuer); ok {
			ids[is.rec.Name] = true
		}
		e.mu.RUnlock()
		if len(ids) == 0 {
			return nil, fmt.Errorf("issuer %q: %w", req.Issuer, sdkca.ErrUnknownIssuer)
		}
	}
	after := ""
	if req.After != "" {
		s, err := normalizeSerial(req.After)
		if err != nil {
			return nil, fmt.Errorf("after: %v: %w", err, errdef.ErrInvalidArgument)
		}
		after = certPrefix + s
	}
	out := &sdkca.ListCertificatesResponse{}
	for scanned := 0; scanned < maxListScan; {
		es, err := e.st.List(ctx, host.ListOptions{Prefix: certPrefix, After: after, Limit: limit})
		if err != nil {
			return nil, fmt.Errorf("list certificates: %w", err)
		}
		for _, en := range es {
			scanned++
			after = en.Key
			var rec Record
			if err := json.Unmarshal(en.Value, &rec); err != nil {
				return nil, fmt.Errorf("certificate record %s is corrupt: %v", en.Key, err)
			}
			if (req.Status != "" && rec.Status != string(req.Status)) || (req.Profile != "" && rec.Profile != req.Profile) ||
				(ids != nil && !ids[rec.Issuer]) {
				continue
			}
			out.Certificates = append(out.Certificates, e.infoOf(rec))
			if len(out.Certificates) == limit {
				out.Next = strings.TrimPrefix(en.Key, certPrefix)
				return out, nil
			}
		}
		if len(es) < limit {
			return out, nil // exhausted
		}
	}
	out.Next = strings.TrimPrefix(after, certPrefix)
	return out, nil
}

// infoOf is a record as a listing shows it; the issuer by its stable
// generation name ("issuing.1"), which CRL and the issuer filter take.
func (e *Engine) infoOf(rec Record) sdkca.CertificateInfo {
	issuerName := rec.Issuer
	e.mu.RLock()
	if is, ok := e.issuers[rec.Issuer]; ok {
		issuerName = is.rec.genName()
	}
	e.mu.RUnlock()
	return sdkca.CertificateInfo{Serial: rec.Serial, Subject: rec.Subject, SANs: rec.SANs, Profile: rec.Profile, Issuer: issuerName,
		Status: sdkca.Status(rec.Status), NotBefore: rec.NotBefore, NotAfter: rec.NotAfter, RevokedAt: rec.RevokedAt, Reason: rec.Reason}
}
