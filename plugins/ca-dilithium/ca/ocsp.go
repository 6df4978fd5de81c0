package ca

import (
	"context"
	"errors"
	"fmt"

	"github.com/avonzt/avon/internal/pqx509"
	sdkca "github.com/avonzt/avon/sdk/ca"
)

// maxOCSPCertIDs bounds the certificates one OCSP request may ask about.
const maxOCSPCertIDs = 16

// RespondOCSP answers a DER OCSP request (RFC 6960). Each certificate the
// request names is looked up by issuer and serial: good, revoked (with time
// and reason) or unknown; the response is signed by the issuer's key, valid
// until the issuer's next CRL would be due. A malformed request gets the
// malformedRequest status, never an error.
func (e *Engine) RespondOCSP(ctx context.Context, req *sdkca.OCSPRequest) (*sdkca.OCSPResponse, error) {
	if err := e.requireInit(); err != nil {
		return nil, err
	}
	r, err := pqx509.ParseOCSPRequest(req.Request)
	if err != nil || len(r.CertIDs) == 0 || len(r.CertIDs) > maxOCSPCertIDs {
		der, cerr := pqx509.CreateOCSPErrorResponse(pqx509.OCSPMalformedRequest)
		if cerr != nil {
			return nil, cerr
		}
		return &sdkca.OCSPResponse{Response: der}, nil
	}
	now, err := e.trustedNow(ctx)
	if err != nil {
		der, cerr := pqx509.CreateOCSPErrorResponse(pqx509.OCSPTryLater)
		if cerr != nil {
			return nil, cerr
		}
		return &sdkca.OCSPResponse{Response: der}, nil
	}
	// Responses are signed by the issuer of the first certificate; every
	// certificate in one request must share it (one signature per response).
	is := e.issuerOf(r.CertIDs[0])
	if is == nil {
		der, err := pqx509.CreateOCSPErrorResponse(pqx509.OCSPUnauthorized)
		if err != nil {
			return nil, err
		}
		return &sdkca.OCSPResponse{Response: der}, nil
	}
	tmpl := pqx509.OCSPResponseTemplate{ProducedAt: now, Nonce: r.Nonce}
	for _, id := range r.CertIDs {
		single := pqx509.OCSPSingleResponse{CertID: id, ThisUpdate: now, NextUpdate: now.Add(e.cfg.CRLLifetime), Status: pqx509.OCSPUnknown}
		if id.Matches(is.cert, id.SerialNumber) {
			rec, _, err := e.getRecord(ctx, fmt.Sprintf("%x", id.SerialNumber))
			switch {
			case errors.Is(err, sdkca.ErrCertificateNotFound):
			case err != nil:
				return nil, err
			case rec.Issuer != is.rec.Name:
			case rec.Status == string(sdkca.StatusRevoked):
				single.Status, single.RevokedAt, single.RevocationReason = pqx509.OCSPRevoked, rec.RevokedAt, rec.Reason
			default:
				single.Status = pqx509.OCSPGood
			}
		}
		tmpl.Responses = append(tmpl.Responses, single)
	}
	der, err := pqx509.CreateOCSPResponse(ctx, tmpl, is.cert, is.signer)
	if err != nil {
		return nil, fmt.Errorf("OCSP response: %w", err)
	}
	return &sdkca.OCSPResponse{Response: der}, nil
}

// issuerOf returns the issuer a CertID names (by its name and key hashes).
func (e *Engine) issuerOf(id pqx509.CertID) *issuer {
	e.mu.RLock()
	defer e.mu.RUnlock()
	for _, is := range e.issuers {
		if id.Matches(is.cert, id.SerialNumber) {
			return is
		}
	}
	return nil
}
