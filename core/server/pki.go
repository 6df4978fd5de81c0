package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
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
//	GET /pki/<name>/crl             the default issuer's CRL (DER, application/pkix-crl)
//	GET /pki/<name>/crl/<issuer>    a named issuer's CRL
func (s *Server) mountPKI(a *api.Server) {
	for _, inst := range s.plugins.Instances() {
		if inst.Spec().Kind != sdkplugin.Kind("ca") {
			continue
		}
		name := inst.Spec().Name
		h := func(w http.ResponseWriter, r *http.Request) { s.serveCRL(w, r, inst, r.PathValue("issuer")) }
		a.Handle("GET /pki/"+name+"/crl", http.HandlerFunc(h))
		a.Handle("GET /pki/"+name+"/crl/{issuer}", http.HandlerFunc(h))
	}
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
