// Package server wires the core together: it validates the whole
// configuration (core blocks and every plugin's own body, against the schema
// the plugin reports) before touching anything, then opens the store,
// starts the plugins with the host services, serves the API, and handles
// signals. It is the one wiring struct; cmd/avon is a thin main over it.
package server

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/avonzt/avon/core/api"
	"github.com/avonzt/avon/core/audit"
	"github.com/avonzt/avon/core/cache"
	"github.com/avonzt/avon/core/calibration"
	"github.com/avonzt/avon/core/config"
	"github.com/avonzt/avon/core/events"
	"github.com/avonzt/avon/core/oauth"
	"github.com/avonzt/avon/core/pluginhost"
	"github.com/avonzt/avon/core/rng"
	"github.com/avonzt/avon/core/store"
	sdkplugin "github.com/avonzt/avon/sdk/plugin"
)

// ErrInvalidConfig means the configuration had mistakes; they were written
// to the diagnostics writer.
var ErrInvalidConfig = errors.New("invalid configuration")

// Options are the process-level inputs of the server.
type Options struct {
	ConfigPath  string
	Logger      hclog.Logger // nil: built from the config's log settings
	Diagnostics io.Writer    // where configuration mistakes are printed (stderr)
	// Rand replaces the core DRBG (tests only); nil: the SP 800-90A
	// CTR_DRBG of core/rng, configured by the `rng` block.
	Rand io.Reader
	// RNGOptions are extra options for the core DRBG (tests inject entropy
	// sources with them).
	RNGOptions []rng.Option
	// ACMETickInterval is how often the acme plugin's clean-up runs;
	// 0 = DefaultACMETickInterval.
	ACMETickInterval time.Duration
}

// Server is a running core.
type Server struct {
	opts     Options
	cfg      *config.Config
	log      hclog.Logger
	registry *prometheus.Registry
	store    store.KV
	audit    *audit.Log
	plugins  *pluginhost.Host
	api      *api.Server

	rng            *rng.Generator // nil when Options.Rand was given
	cache          cache.Cache
	events         *events.Bus
	calib          *calibration.Calibrator
	guard          *calibration.Guard
	checkpointer   *audit.Checkpointer
	bgCancel       context.CancelFunc
	apiFingerprint string
	admin          *http.Server
	gw             *gatewayRuntime // nil unless gateway { enabled = true }
	presence       presenceConfig  // set before the API starts, then read-only
	oauth          *oauth.Server   // nil when operator login is off; guarded by mu
	oauthKeys      *oauthKeys      // the token signing key, when operator login is on
	bg             sync.WaitGroup

	mu      sync.Mutex // guards stopped, oauth
	stopped bool
}

// Validated is a configuration that passed every check, with its plugins
// launched and their configuration bodies decoded; Start or Close it.
type Validated struct {
	Config  *config.Config
	Host    *pluginhost.Host
	Decoded map[string][]byte // plugin id -> config JSON
}

// Close stops the launched plugins.
func (v *Validated) Close() { v.Host.Stop() }

func (o *Options) defaults() {
	if o.Diagnostics == nil {
		o.Diagnostics = os.Stderr
	}
}

// NewLogger builds the core logger from the configuration.
func NewLogger(cfg *config.Config, w io.Writer) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:       "avon",
		Level:      hclog.LevelFromString(cfg.LogLevel),
		JSONFormat: cfg.LogFormat == "json",
		Output:     w,
	})
}

// Validate loads the configuration, launches each enabled plugin to learn
// its schema, decodes and validates each plugin body, and returns the
// result. Every mistake is printed with its position; nothing else starts.
func Validate(ctx context.Context, opts Options, hostOpts pluginhost.Options) (*Validated, error) {
	opts.defaults()
	cfg, diags := config.Load(opts.ConfigPath)
	if diags.HasErrors() {
		var files map[string]*hcl.File
		if cfg != nil {
			files = cfg.Files
		}
		_ = config.WriteDiagnostics(opts.Diagnostics, files, diags)
		return nil, fmt.Errorf("%s: %w", opts.ConfigPath, ErrInvalidConfig)
	}
	return validate(ctx, cfg, opts, hostOpts)
}

// validate is Validate on a configuration already parsed, so that Start
// runs exactly the configuration it read once.
func validate(ctx context.Context, cfg *config.Config, opts Options, hostOpts pluginhost.Options) (*Validated, error) {
	h := pluginhost.New(hostOpts)
	byID := map[string]*config.Plugin{}
	for _, p := range cfg.Plugin {
		if p.Disabled {
			continue
		}
		spec := pluginhost.Spec{
			Kind: sdkplugin.Kind(p.Kind), Name: p.Name, Path: p.Command, Args: p.Args, Env: p.Env,
			SHA256: p.SHA256, Uses: p.Uses, DataDir: filepath.Join(cfg.DataDir, "plugins", p.Kind+"-"+p.Name),
		}
		if _, err := h.Add(spec); err != nil {
			h.Stop()
			return nil, err
		}
		byID[spec.ID()] = p
	}
	var all hcl.Diagnostics
	if err := h.Launch(ctx); err != nil {
		var le *pluginhost.LaunchError
		if !errors.As(err, &le) {
			h.Stop()
			return nil, err
		}
		ids := make([]string, 0, len(le.Failures))
		for id := range le.Failures {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		for _, id := range ids {
			all = append(all, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Plugin " + id + " failed to start",
				Detail: le.Failures[id].Error(), Subject: byID[id].DeclRange.Ptr()})
		}
	}
	decoded := map[string][]byte{}
	for _, inst := range h.Instances() {
		if inst.Status().State != pluginhost.StateLaunched {
			continue // failed to start: reported above
		}
		p := byID[inst.ID()]
		js, d := p.DecodeConfig(cfg.EvalContext(), inst.Schema())
		all = append(all, d...)
		if d.HasErrors() {
			continue
		}
		problems, err := inst.Validate(ctx, js)
		if err != nil {
			all = append(all, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Plugin could not validate its configuration",
				Detail: err.Error(), Subject: p.DeclRange.Ptr()})
			continue
		}
		for _, pr := range problems {
			detail := pr.Detail
			if pr.Attribute != "" {
				detail = fmt.Sprintf("config.%s: %s", pr.Attribute, detail)
			}
			all = append(all, &hcl.Diagnostic{Severity: hcl.DiagError,
				Summary: fmt.Sprintf("plugin %s: %s", inst.ID(), pr.Summary), Detail: detail, Subject: p.DeclRange.Ptr()})
		}
		decoded[inst.ID()] = js
	}
	if all.HasErrors() {
		h.Stop()
		_ = config.WriteDiagnostics(opts.Diagnostics, cfg.Files, all)
		return nil, fmt.Errorf("%s: %w", opts.ConfigPath, ErrInvalidConfig)
	}
	return &Validated{Config: cfg, Host: h, Decoded: decoded}, nil
}

// HostOptions derives the plugin host options from a configuration.
func HostOptions(cfg *config.Config, logger hclog.Logger, reg prometheus.Registerer, svc pluginhost.Services) pluginhost.Options {
	return pluginhost.Options{
		Logger:           logger,
		Services:         svc,
		Metrics:          pluginhost.NewMetrics(reg),
		RequireChecksums: cfg.Plugins.RequireChecksums,
		PluginLogLevel:   cfg.LogLevel,
		StartTimeout:     cfg.Plugins.StartTimeout,
		HealthInterval:   cfg.Plugins.HealthInterval,
		BackoffMin:       cfg.Plugins.RestartBackoffMin,
		BackoffMax:       cfg.Plugins.RestartBackoffMax,
	}
}

// Start validates the configuration and brings the core up. On error
// everything started is stopped again.
func Start(ctx context.Context, opts Options) (*Server, error) {
	opts.defaults()
	// Parse once: what is validated is exactly what runs.
	pre, diags := config.Load(opts.ConfigPath)
	if diags.HasErrors() {
		var files map[string]*hcl.File
		if pre != nil {
			files = pre.Files
		}
		_ = config.WriteDiagnostics(opts.Diagnostics, files, diags)
		return nil, fmt.Errorf("%s: %w", opts.ConfigPath, ErrInvalidConfig)
	}
	log := opts.Logger
	if log == nil {
		log = NewLogger(pre, os.Stderr)
	}
	if err := os.MkdirAll(pre.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	s := &Server{opts: opts, log: log, registry: prometheus.NewRegistry()}
	s.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if err := s.start(ctx, pre); err != nil {
		s.teardown(context.Background(), false)
		return nil, err
	}
	log.Info("avon core started", "config", opts.ConfigPath, "data_dir", s.cfg.DataDir, "plugins", len(s.plugins.Instances()),
		"storage", s.cfg.Storage.Type, "cache", s.cfg.Cache.Type)
	return s, nil
}

// start brings the services up in dependency order; teardown undoes
// whatever part of it ran.
func (s *Server) start(ctx context.Context, pre *config.Config) error {
	log := s.log
	bgCtx, cancel := context.WithCancel(context.Background())
	s.bgCancel = cancel

	// Randomness first: every key, nonce and certificate serial after this
	// comes from the DRBG.
	if s.opts.Rand == nil {
		ropts := append([]rng.Option{rng.WithOnFailure(s.rngFailed)}, s.opts.RNGOptions...)
		for _, name := range pre.RNG.ExtraSources {
			ropts = append(ropts, rng.WithExtraSource(&kmsEntropy{name: name, host: s.pluginHost}))
		}
		g, err := rng.New(rngConfig(pre.RNG), ropts...)
		if err != nil {
			return fmt.Errorf("rng: %w", err)
		}
		s.rng, s.opts.Rand = g, g
	}

	kv, err := OpenStore(ctx, pre, log.Named("store"))
	if err != nil {
		return err
	}
	s.store = kv
	s.audit = audit.New(kv, time.Now, log.Named("audit"))
	if s.cache, err = openCache(ctx, pre.Cache, log.Named("cache")); err != nil {
		return err
	}
	host, _ := os.Hostname()
	s.events = events.New(s.cache, fmt.Sprintf("%s/%d", host, os.Getpid()), nil)

	// Calibration before the plugins: they need trusted time to configure
	// (a CA signs its hierarchy at first start).
	sources, err := TimeSources(pre.Calibration, s.opts.Rand)
	if err != nil {
		return err
	}
	cal, err := calibration.New(calibration.Config{MaxAge: pre.Calibration.MaxAge, MaxSkew: pre.Calibration.MaxSkew,
		Interval: pre.Calibration.Interval, Sources: sources}, calibration.WithLogger(log.Named("calibration")))
	if err != nil {
		return fmt.Errorf("calibration: %w", err)
	}
	s.mu.Lock()
	s.calib = cal
	s.mu.Unlock()
	if err := cal.Calibrate(ctx); err != nil {
		// Not fatal: the core starts not ready and keeps trying.
		log.Warn("first calibration failed; time-dependent requests are refused until one succeeds", "error", err)
	}
	s.bg.Add(1)
	go func() { defer s.bg.Done(); cal.Run(bgCtx) }()

	svc := pluginhost.Services{Rand: s.opts.Rand, Clock: calibratedClock{s}, Store: kv, Audit: pluginAudit{s}, Cache: s.cache}
	v, err := validate(ctx, pre, s.opts, HostOptions(pre, log, s.registry, svc))
	if err != nil {
		return err
	}
	s.cfg = v.Config
	s.mu.Lock()
	s.plugins = v.Host
	s.mu.Unlock()
	for _, inst := range s.plugins.Instances() {
		inst.SetConfig(v.Decoded[inst.ID()])
	}
	if err := s.plugins.Configure(ctx); err != nil {
		return fmt.Errorf("start plugins: %w", err)
	}

	// Attestations are signed by a KMS key once the KMS plugin runs.
	var gopts []calibration.GuardOption
	if s.cfg.Calibration.Attestations && s.cfg.Calibration.KMS != "" {
		ks, err := newKMSSigner(ctx, s.plugins, s.cfg.Calibration.KMS, s.cfg.Calibration.Key, "time-attestation")
		if err != nil {
			return err
		}
		s.calib.SetSigner(timeSigner{ks})
		gopts = append(gopts, calibration.WithVerifier(timeSigner{ks}))
	} else {
		log.Warn("time attestations are off (no kms plugin, or calibration { attestations = false })")
	}
	s.guard = calibration.NewGuard(s.calib, gopts...)

	// Signed audit checkpoints.
	if s.cfg.Audit.Checkpoints && s.cfg.Audit.KMS != "" {
		ks, err := newKMSSigner(ctx, s.plugins, s.cfg.Audit.KMS, s.cfg.Audit.Key, "audit-checkpoint")
		if err != nil {
			return err
		}
		s.checkpointer = audit.NewCheckpointer(s.audit, audit.CheckpointerOptions{Every: s.cfg.Audit.CheckpointEvery,
			Interval: s.cfg.Audit.CheckpointInterval, Signer: auditSigner{ks}, Logger: log.Named("audit")})
		s.bg.Add(1)
		go func() { defer s.bg.Done(); s.checkpointer.Run(bgCtx) }()
	} else {
		log.Warn("audit checkpoints are off (no kms plugin, or audit { checkpoints = false }); the hash chain alone cannot show a log rewritten from its start")
	}

	// The gateway's identity, issued like an agent's at first start.
	if err := s.ensureGatewayCertificate(ctx); err != nil {
		return err
	}
	// The tunnel gateway, when enabled, before the API reports ready.
	if err := s.startGateway(ctx); err != nil {
		return err
	}

	// Operator login signs with a KMS key: after the plugins, before the API.
	if err := s.startOAuth(ctx); err != nil {
		return err
	}

	s.presence = newPresenceConfig(s.cfg)
	s.registerServiceMetrics()
	if err := s.startAPI(); err != nil {
		return err
	}
	if o := s.OAuth(); o != nil {
		s.bg.Add(1)
		go func() { defer s.bg.Done(); s.tidyOAuth(bgCtx, o) }()
	}
	if err := s.startAdmin(); err != nil {
		return err
	}
	every := s.opts.ACMETickInterval
	if every <= 0 {
		every = DefaultACMETickInterval
	}
	s.bg.Add(1)
	go func() { defer s.bg.Done(); s.runACMETicks(bgCtx, every) }()
	// This replica's sessions, visible to every replica's API.
	s.bg.Add(1)
	go func() { defer s.bg.Done(); s.runReplicaPresence(bgCtx) }()
	// Fail closed: a core that cannot record its own start does not run.
	if err := s.audit.Emit(ctx, "core", auditEvent("core.start", "success")); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	return nil
}

// calibrator returns the calibrator once it exists (nil before).
func (s *Server) calibrator() *calibration.Calibrator {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calib
}

// pluginHost returns the plugin host once it exists (nil before).
func (s *Server) pluginHost() *pluginhost.Host {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.plugins
}

// rngFailed is the DRBG's failure callback: it has already stopped serving
// bytes; record why (the audit write may itself fail, and is logged then).
func (s *Server) rngFailed(err error) {
	s.log.Error("rng failed closed: no random bytes until restart", "error", err)
	if s.audit == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ev := auditEvent("rng.failure", "failure")
	ev.Reason = err.Error()
	if aerr := s.audit.Emit(ctx, "core", ev); aerr != nil {
		s.log.Error("audit of the rng failure failed", "error", aerr)
	}
}

// teardown stops whatever start brought up, in reverse order. After a
// failed start there is no final checkpoint (its dependencies may be what
// failed; the chain still holds every record).
func (s *Server) teardown(ctx context.Context, started bool) []error {
	var errs []error
	if s.api != nil {
		errs = append(errs, s.api.Shutdown(ctx))
	}
	if s.admin != nil {
		errs = append(errs, s.admin.Shutdown(ctx))
		_ = os.Remove(filepath.Join(s.cfg.DataDir, AdminSocket))
	}
	// The gateway uses the plugins (signatures, certificate status) and
	// the store: it stops before them.
	errs = append(errs, s.stopGateway())
	if s.bgCancel != nil {
		s.bgCancel()
	}
	s.bg.Wait()
	if started && s.checkpointer != nil && s.plugins != nil {
		// Sign what the last moments appended, while the KMS still runs.
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if _, err := s.checkpointer.Checkpoint(cctx); err != nil {
			s.log.Warn("final audit checkpoint failed", "error", err)
		}
		cancel()
	}
	if s.plugins != nil {
		s.plugins.Stop()
	}
	if s.cache != nil {
		errs = append(errs, s.cache.Close())
	}
	if s.store != nil {
		errs = append(errs, s.store.Close())
	}
	if s.rng != nil {
		errs = append(errs, s.rng.Close())
	}
	return errs
}

func (s *Server) startAPI() error {
	var cert tls.Certificate
	var err error
	if s.cfg.API.TLSCertFile != "" {
		cert, err = tls.LoadX509KeyPair(s.cfg.API.TLSCertFile, s.cfg.API.TLSKeyFile)
	} else {
		host, _, _ := net.SplitHostPort(s.cfg.API.Listen)
		hosts := []string{"localhost", "127.0.0.1", "::1"}
		if host != "" && host != "0.0.0.0" && host != "::" {
			hosts = append(hosts, host)
		}
		cert, err = api.LoadOrCreateSelfSigned(filepath.Join(s.cfg.DataDir, "api-tls"), hosts, s.opts.Rand, time.Now())
	}
	if err != nil {
		return fmt.Errorf("api certificate: %w", err)
	}
	if len(cert.Certificate) > 0 {
		// Agents pin this to enroll: avon-agent enroll --server-fingerprint.
		fp := sha256.Sum256(cert.Certificate[0])
		s.apiFingerprint = hex.EncodeToString(fp[:])
		s.log.Info("api certificate", "sha256", s.apiFingerprint)
	}
	a, err := api.New(api.Options{
		Listen:   s.cfg.API.Listen,
		TLS:      &tls.Config{Certificates: []tls.Certificate{cert}},
		Gatherer: s.registry,
		Checks:   s.checks,
		// Every request path goes through the calibration guard: a
		// stale calibration or a skewed timestamp/attestation is refused
		// with the reason (health, readiness and metrics are exempt).
		Middleware: s.guard.Middleware,
		Logger:     s.log.Named("api"),
	})
	if err != nil {
		return err
	}
	s.mountPKI(a)
	s.mountEnroll(a)
	s.mountRenew(a)
	acmeInst, err := s.acmeInstance()
	if err != nil {
		return err
	}
	if acmeInst != nil {
		s.mountACME(a, acmeInst)
	}
	if err := a.Start(); err != nil {
		return err
	}
	s.api = a
	return s.mountOAuth(a)
}

// checks are the readiness checks: the store and every plugin.
func (s *Server) checks() []api.Check {
	cs := []api.Check{{Name: "store", Fn: func(ctx context.Context) (string, error) {
		return s.cfg.Storage.Type, s.store.Ping(ctx)
	}}}
	cs = append(cs, s.serviceChecks()...)
	cs = append(cs, s.gatewayCheck()...)
	for _, inst := range s.plugins.Instances() {
		cs = append(cs, api.Check{Name: "plugin." + inst.ID(), Fn: func(context.Context) (string, error) {
			st := inst.Status()
			detail := fmt.Sprintf("state=%s restarts=%d pid=%d version=%s", st.State, st.Restarts, st.PID, st.Info.Version)
			if st.State != pluginhost.StateRunning || !st.Healthy {
				msg := st.Message
				if msg == "" {
					msg = string(st.State)
				}
				return detail, errors.New(msg)
			}
			return detail, nil
		}})
	}
	return cs
}

// APIFingerprint returns the hex SHA-256 of the API's TLS certificate.
func (s *Server) APIFingerprint() string { return s.apiFingerprint }

// APIAddr returns the API's bound address.
func (s *Server) APIAddr() string { return s.api.Addr() }

// Plugins returns the plugin host.
func (s *Server) Plugins() *pluginhost.Host { return s.plugins }

// Events returns the bus for change events between replicas (revocations,
// policy changes, killed sessions).
func (s *Server) Events() *events.Bus { return s.events }

// Config returns the configuration in force.
func (s *Server) Config() *config.Config { return s.cfg }

// Stop shuts everything down: API first, then plugins, then the store.
func (s *Server) Stop(ctx context.Context) error {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return nil
	}
	s.stopped = true
	s.mu.Unlock()
	if err := s.audit.Emit(ctx, "core", auditEvent("core.stop", "success")); err != nil {
		s.log.Error("audit of the stop failed", "error", err)
	}
	errs := s.teardown(ctx, true)
	s.log.Info("avon core stopped")
	return errors.Join(errs...)
}

func pluginKind(k string) sdkplugin.Kind { return sdkplugin.Kind(k) }
