package server

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/avonzt/avon/core/api"
	"github.com/avonzt/avon/core/pluginhost"
	sdkca "github.com/avonzt/avon/sdk/ca"
	sdkplugin "github.com/avonzt/avon/sdk/plugin"
)

// mountPKI serves each CA plugin's public revocation data, which relying
// parties fetch without credentials:
//
//	GET  /pki/<name>/crl             the default issuer's CRL (DER, application/pkix-crl)
//	GET  /pki/<name>/crl/<issuer>    a named issuer's CRL
//	POST /pki/<name>/ocsp            OCSP (RFC 6960 A.1: application/ocsp-request)
//	GET  /pki/<name>/ocsp/<base64>   OCSP, the request base64 and URL-escaped
func (s *Server) mountPKI(a *api.Server) {
	for _, inst := range s.plugins.Instances() {
		if inst.Spec().Kind != sdkplugin.Kind("ca") {
			continue
		}
		name := inst.Spec().Name
		h := func(w http.ResponseWriter, r *http.Request) { s.serveCRL(w, r, inst, r.PathValue("issuer")) }
		a.Handle("GET /pki/"+name+"/crl", http.HandlerFunc(h))
		a.Handle("GET /pki/"+name+"/crl/{issuer}", http.HandlerFunc(h))
		a.Handle("POST /pki/"+name+"/ocsp", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if ct := r.Header.Get("Content-Type"); ct != "application/ocsp-request" {
				http.Error(w, "want Content-Type: application/ocsp-request", http.StatusUnsupportedMediaType)
				return
			}
			body, err := io.ReadAll(io.LimitReader(r.Body, maxOCSPRequest+1))
			if err != nil || len(body) > maxOCSPRequest {
				http.Error(w, "OCSP request too large", http.StatusRequestEntityTooLarge)
				return
			}
			s.serveOCSP(w, r, inst, body)
		}))
		a.Handle("GET /pki/"+name+"/ocsp/{req...}", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			raw, err := url.PathUnescape(r.PathValue("req"))
			var body []byte
			if err == nil {
				body, err = base64.StdEncoding.DecodeString(raw)
			}
			if err != nil || len(body) > maxOCSPRequest {
				http.Error(w, "the OCSP request is not base64 (RFC 6960 A.1.1)", http.StatusBadRequest)
				return
			}
			s.serveOCSP(w, r, inst, body)
		}))
	}
}

// maxOCSPRequest bounds an OCSP request body.
const maxOCSPRequest = 16 << 10

func (s *Server) serveOCSP(w http.ResponseWriter, r *http.Request, inst *pluginhost.Instance, req []byte) {
	responder, ok := inst.CA().(sdkca.OCSPResponder)
	if !ok {
		http.Error(w, "this CA has no OCSP responder", http.StatusNotFound)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	resp, err := responder.RespondOCSP(ctx, &sdkca.OCSPRequest{Request: req})
	if err != nil {
		s.log.Warn("OCSP request failed", "ca", inst.ID(), "error", err)
		http.Error(w, "OCSP unavailable", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/ocsp-response")
	w.Header().Set("Cache-Control", "no-store") // responses carry the request's nonce
	_, _ = w.Write(resp.Response)
}

func (s *Server) serveCRL(w http.ResponseWriter, r *http.Request, inst *pluginhost.Instance, issuer string) {
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	resp, err := inst.CA().CRL(ctx, &sdkca.CRLRequest{Issuer: issuer})
	switch {
	case errors.Is(err, sdkca.ErrUnknownIssuer):
		http.Error(w, fmt.Sprintf("no issuer %q", issuer), http.StatusNotFound)
		return
	case err != nil:
		s.log.Warn("CRL request failed", "ca", inst.ID(), "issuer", issuer, "error", err)
		http.Error(w, "CRL unavailable: "+strings.SplitN(err.Error(), ":", 2)[0], http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/pkix-crl")
	w.Header().Set("Cache-Control", fmt.Sprintf("public, max-age=%d", max(0, int(time.Until(resp.NextUpdate).Seconds()/2))))
	w.Header().Set("Last-Modified", resp.ThisUpdate.UTC().Format(http.TimeFormat))
	_, _ = w.Write(resp.CRL)
}
