// Package api is the core's one HTTPS listener: liveness (/healthz),
// readiness (/readyz, one line per dependency and plugin) and Prometheus
// metrics (/metrics). The Admin API, enrollment and /acme/* mount here as
// they land. TLS 1.3 only, so Go negotiates the X25519MLKEM768 hybrid key
// exchange by default.
//
// It must not decide readiness itself: it reports what its Checks say.
package api

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Check reports one component's readiness.
type Check struct {
	Name string
	// Fn returns nil when ready, else why not. It must honour ctx.
	Fn func(ctx context.Context) (detail string, err error)
}

// Options configure the server.
type Options struct {
	Listen   string // host:port
	TLS      *tls.Config
	Gatherer prometheus.Gatherer
	Checks   func() []Check // called on every /readyz
	Logger   hclog.Logger
	// CheckTimeout bounds all readiness checks together (default 2s).
	CheckTimeout time.Duration
	// Middleware, when set, wraps every route (the calibration guard).
	Middleware func(http.Handler) http.Handler
}

// Server is the HTTPS listener.
type Server struct {
	opts Options
	mux  *http.ServeMux
	srv  *http.Server

	mu   sync.Mutex // guards ln
	ln   net.Listener
	done chan error
}

// New returns a server; nothing listens until Start.
func New(opts Options) (*Server, error) {
	if opts.TLS == nil {
		return nil, errors.New("api: TLS config required")
	}
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	if opts.CheckTimeout <= 0 {
		opts.CheckTimeout = 2 * time.Second
	}
	s := &Server{opts: opts, mux: http.NewServeMux(), done: make(chan error, 1)}
	s.mux.HandleFunc("GET /healthz", s.healthz)
	s.mux.HandleFunc("GET /readyz", s.readyz)
	if opts.Gatherer != nil {
		s.mux.Handle("GET /metrics", promhttp.HandlerFor(opts.Gatherer, promhttp.HandlerOpts{}))
	}
	tlsCfg := opts.TLS.Clone()
	tlsCfg.MinVersion = tls.VersionTLS13
	var handler http.Handler = s.mux
	if opts.Middleware != nil {
		handler = opts.Middleware(handler)
	}
	s.srv = &http.Server{
		Handler:           handler,
		TLSConfig:         tlsCfg,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          opts.Logger.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}),
	}
	return s, nil
}

// Handle mounts a handler (later issues: /v1/, /acme/).
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// Start listens and serves in the background.
func (s *Server) Start() error {
	ln, err := net.Listen("tcp", s.opts.Listen)
	if err != nil {
		return fmt.Errorf("api listen %s: %w", s.opts.Listen, err)
	}
	s.mu.Lock()
	s.ln = ln
	s.mu.Unlock()
	s.opts.Logger.Info("api listening", "addr", ln.Addr().String())
	go func() {
		err := s.srv.Serve(tls.NewListener(ln, s.srv.TLSConfig))
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		s.done <- err
	}()
	return nil
}

// Addr returns the bound address (useful with port 0).
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Shutdown stops accepting and waits for requests in flight, up to ctx.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	s.mu.Lock()
	started := s.ln != nil
	s.mu.Unlock()
	if started {
		select {
		case serr := <-s.done:
			err = errors.Join(err, serr)
		case <-ctx.Done():
		}
	}
	return err
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// CheckResult is one line of /readyz.
type CheckResult struct {
	Name   string `json:"name"`
	Ready  bool   `json:"ready"`
	Detail string `json:"detail,omitempty"`
	Error  string `json:"error,omitempty"`
}

// Readiness is the /readyz document.
type Readiness struct {
	Ready  bool          `json:"ready"`
	Checks []CheckResult `json:"checks"`
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	var checks []Check
	if s.opts.Checks != nil {
		checks = s.opts.Checks()
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.opts.CheckTimeout)
	defer cancel()
	res := Readiness{Ready: true, Checks: make([]CheckResult, len(checks))}
	var wg sync.WaitGroup
	for k, c := range checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			detail, err := c.Fn(ctx)
			cr := CheckResult{Name: c.Name, Ready: err == nil, Detail: detail}
			if err != nil {
				cr.Error = err.Error()
			}
			res.Checks[k] = cr
		}()
	}
	wg.Wait()
	for _, c := range res.Checks {
		res.Ready = res.Ready && c.Ready
	}
	code := http.StatusOK
	if !res.Ready {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, res)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
