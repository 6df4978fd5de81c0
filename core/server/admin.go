package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/avonzt/avon/core/adminapi"
	"github.com/avonzt/avon/core/agents"
	"github.com/avonzt/avon/core/cache"
	"github.com/avonzt/avon/core/enroll"
	"github.com/avonzt/avon/core/pluginhost"
	"github.com/avonzt/avon/core/pulse"
	"github.com/avonzt/avon/core/store"
	sdkca "github.com/avonzt/avon/sdk/ca"
	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/kms"
	sdkplugin "github.com/avonzt/avon/sdk/plugin"
	"github.com/avonzt/avon/sdk/policy"
)

// AdminSocket is the local administration socket under data_dir, the
// break-glass path that needs no login: the socket is 0600 in the 0700
// data dir, so only the core's own user (or root) reaches it, its callers
// are identified by the kernel's peer credentials
// (adminapi.PeerCredAuthenticator), and every change is audited with the
// caller's uid. The HTTPS listener serves the same Admin API to operators
// with access tokens (see mountOAuth); operator accounts are managed only
// here.
const AdminSocket = "admin.sock"

// AdminAPI builds the Admin API (the route table of admin_*.go) with auth
// identifying its callers. The admin socket serves it with the peer
// credentials; the HTTPS listener with OAuth bearer tokens.
func (s *Server) AdminAPI(auth adminapi.Authenticator) (*adminapi.API, error) {
	var routes []adminapi.Route
	routes = append(routes, s.caRoutes()...)
	routes = append(routes, s.agentRoutes()...)
	routes = append(routes, s.tokenRoutes()...)
	routes = append(routes, s.sessionRoutes()...)
	routes = append(routes, s.keyRoutes()...)
	routes = append(routes, s.pluginRoutes()...)
	routes = append(routes, s.auditRoutes()...)
	routes = append(routes, s.policyRoutes()...)
	routes = append(routes, s.userRoutes()...)
	routes = append(routes, s.apiTokenRoutes()...)
	routes = append(routes, s.acmeAdminRoutes()...)
	return adminapi.New(routes, adminapi.Options{Authenticator: auth, Auditor: s.audit, Logger: s.log.Named("admin"),
		MapError: adminProblem, Rand: s.opts.Rand, Title: "AVON Admin API", Version: "v1"})
}

// startAdmin serves the Admin API on data_dir/admin.sock.
func (s *Server) startAdmin() error {
	path := filepath.Join(s.cfg.DataDir, AdminSocket)
	if len(path) >= 104 { // sun_path: 108 bytes on Linux, 104 elsewhere
		s.log.Warn("admin socket disabled: its path is too long for a unix socket; use a shorter data_dir", "path", path)
		return nil
	}
	a, err := s.AdminAPI(adminapi.PeerCredAuthenticator{})
	if err != nil {
		return err
	}
	_ = os.Remove(path) // a socket left by a killed core
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("admin socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return err
	}
	srv := &http.Server{Handler: a, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: time.Minute,
		WriteTimeout:   11 * time.Minute, // audit verify runs up to 10 min
		MaxHeaderBytes: 64 << 10, ConnContext: adminapi.PeerConnContext}
	s.admin = srv
	go func() { _ = srv.Serve(ln) }()
	return nil
}

// adminProblem maps the domain errors the admin handlers meet onto
// problems; anything else is an internal error.
func adminProblem(err error) *adminapi.Problem {
	t := adminapi.TypeInternal
	switch {
	case errors.Is(err, sdkca.ErrCertificateNotFound), errors.Is(err, sdkca.ErrUnknownIssuer), errors.Is(err, agents.ErrNotFound),
		errors.Is(err, enroll.ErrUnknown), errors.Is(err, kms.ErrKeyNotFound), errors.Is(err, policy.ErrUnknownPolicySet),
		errors.Is(err, pulse.ErrUnknownSession), errors.Is(err, store.ErrNotFound):
		t = adminapi.TypeNotFound
	case errors.Is(err, sdkca.ErrAlreadyRevoked), errors.Is(err, sdkca.ErrAlreadyInitialized), errors.Is(err, enroll.ErrUsed),
		errors.Is(err, kms.ErrKeyExists):
		t = adminapi.TypeConflict
	case errors.Is(err, agents.ErrVersionConflict), errors.Is(err, enroll.ErrVersionConflict), errors.Is(err, store.ErrVersionConflict):
		t = adminapi.TypePreconditionFailed
	case errors.Is(err, sdkca.ErrPolicyViolation), errors.Is(err, sdkca.ErrUnknownKMS), errors.Is(err, errdef.ErrInvalidArgument),
		errors.Is(err, agents.ErrInvalid), errors.Is(err, enroll.ErrInvalid), errors.Is(err, pulse.ErrInvalidArgument),
		errors.Is(err, store.ErrInvalidKey), errors.Is(err, store.ErrInvalidArgument), errors.Is(err, policy.ErrInvalidPolicy),
		errors.Is(err, policy.ErrBatchTooLarge):
		t = adminapi.TypeBadRequest
	case errors.Is(err, sdkca.ErrNotInitialized), errors.Is(err, store.ErrUnavailable), errors.Is(err, store.ErrClosed),
		errors.Is(err, cache.ErrUnavailable), errors.Is(err, cache.ErrClosed), errors.Is(err, context.DeadlineExceeded):
		t = adminapi.TypeUnavailable
	case errors.Is(err, errdef.ErrNotImplemented):
		t = adminapi.TypeNotImplemented
	}
	return adminapi.Wrap(t, err)
}

// pluginOf returns the first running instance of kind, or a 503 problem
// naming what is missing.
func (s *Server) pluginOf(kind, what string) (*pluginhost.Instance, error) {
	for _, inst := range s.plugins.Instances() {
		if inst.Spec().Kind == sdkplugin.Kind(kind) {
			return inst, nil
		}
	}
	return nil, adminapi.NewProblem(adminapi.TypeUnavailable, fmt.Sprintf("no %s plugin is configured (plugin %q \"NAME\" { ... }), so there is no %s", kind, kind, what))
}

// callTimeout bounds one admin handler's calls to plugins and the store.
const callTimeout = 30 * time.Second
