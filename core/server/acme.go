package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/avonzt/avon/core/api"
	"github.com/avonzt/avon/core/pluginhost"
	sdkacme "github.com/avonzt/avon/sdk/acme"
	"github.com/avonzt/avon/sdk/errdef"
	sdkplugin "github.com/avonzt/avon/sdk/plugin"
)

// acmeTimeout bounds one forwarded ACME request: a challenge validation
// (10 s by default) and an issuance fit in it.
const acmeTimeout = 60 * time.Second

// acmeInstance returns the one enabled acme plugin (nil when there is
// none); two are a configuration mistake.
func (s *Server) acmeInstance() (*pluginhost.Instance, error) {
	var found *pluginhost.Instance
	for _, inst := range s.plugins.Instances() {
		if inst.Spec().Kind != sdkplugin.KindACME {
			continue
		}
		if found != nil {
			return nil, fmt.Errorf("two acme plugins (%s, %s): /acme/ serves one; disable the other", found.ID(), inst.ID())
		}
		found = inst
	}
	return found, nil
}

// mountACME serves /acme/ from the acme plugin: every request, its path
// relative to /acme, is forwarded with the external URL of the mount point
// (https://<Host>/acme) for the plugin to build its URLs. Paths under
// /acme/admin/ are the core's own (EAB keys, from the admin socket) and
// never forwarded from the network.
func (s *Server) mountACME(a *api.Server, inst *pluginhost.Instance) {
	a.Handle("/acme/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path := strings.TrimPrefix(r.URL.Path, "/acme")
		if path == "/admin" || strings.HasPrefix(path, "/admin/") {
			acmeProblem(w, http.StatusNotFound, "malformed", "no resource at "+path)
			return
		}
		s.forwardACME(w, r, inst, path, "https://"+r.Host+"/acme")
	}))
}

// forwardACME sends one request to the plugin and writes its answer.
func (s *Server) forwardACME(w http.ResponseWriter, r *http.Request, inst *pluginhost.Instance, path, base string) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, sdkacme.MaxBodySize))
	if err != nil {
		acmeProblem(w, http.StatusRequestEntityTooLarge, "malformed", fmt.Sprintf("request body over %d bytes", sdkacme.MaxBodySize))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), acmeTimeout)
	defer cancel()
	resp, err := inst.ACME().HandleHTTP(ctx, &sdkacme.HTTPRequest{Method: r.Method, Path: path, RawQuery: r.URL.RawQuery,
		Header: r.Header.Clone(), Body: body, RemoteAddr: r.RemoteAddr, BaseURL: base})
	if err != nil {
		s.log.Warn("acme request failed", "plugin", inst.ID(), "path", path, "error", err)
		status := http.StatusInternalServerError
		if errors.Is(err, errdef.ErrPluginUnavailable) || errors.Is(err, errdef.ErrNotConfigured) {
			status = http.StatusServiceUnavailable
		}
		acmeProblem(w, status, "serverInternal", "the ACME service is unavailable; try again later")
		return
	}
	for k, vs := range resp.Header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	status := resp.Status
	if status < 100 || status > 599 {
		status = http.StatusInternalServerError
	}
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(resp.Body)
	}
}

// acmeProblem writes an RFC 8555 problem the core makes itself.
func acmeProblem(w http.ResponseWriter, status int, typ, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = fmt.Fprintf(w, `{"type":"urn:ietf:params:acme:error:%s","detail":%q,"status":%d}`, typ, detail, status)
}
