// Package abacplugin is the plugin side of policy-abac: it reads the
// plugin's configuration, loads policy sets from policy_dir and the
// host's shared storage, keeps the compiled sets cached per replica, and
// serves the policy interface from the engine in plugins/policy-abac/abac.
// Decisions go to the decision log through host.Audit, sampled and masked.
//
// It holds no secrets and opens no network connection of its own.
package abacplugin

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/avonzt/avon/plugins/policy-abac/abac"
	"github.com/avonzt/avon/sdk/config"
	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/host"
	"github.com/avonzt/avon/sdk/plugin"
	"github.com/avonzt/avon/sdk/policy"
)

// Version is the plugin's version.
const Version = "0.1.0"

// logQueue bounds the decision log events waiting for host.Audit.
const logQueue = 4096

// Plugin is the policy-abac plugin.
type Plugin struct {
	log  hclog.Logger
	now  func() time.Time // monotonic clock for cache ages, not decisions
	seed func(h host.Host) *rand.Rand

	mu  sync.RWMutex // guards cur
	cur *state

	cacheMu sync.Mutex // guards cache
	cache   map[string]*cached

	logCh     chan logItem
	logOnce   sync.Once
	dropped   atomic.Uint64
	logDone   chan struct{}
	closeOnce sync.Once
	stop      chan struct{}
}

// state is one configuration in force.
type state struct {
	s    settings
	host host.Host

	rngMu sync.Mutex // guards rng
	rng   *rand.Rand
}

// cached is a compiled set and when the storage was last consulted.
type cached struct {
	set     *abac.Set
	version uint64
	checked time.Time
	// bad is a newer stored version that does not compile: it is not
	// compiled (nor reported) again at every refresh.
	bad uint64
	// refreshing: one caller re-reads the storage while the others keep
	// answering from set.
	refreshing atomic.Bool
}

type logItem struct {
	host host.Host
	ev   host.Event
}

// Option configures a Plugin.
type Option func(*Plugin)

// WithLogger sets the logger (default plugin.NewLogger).
func WithLogger(l hclog.Logger) Option { return func(p *Plugin) { p.log = l } }

// WithClock sets the clock that ages cached sets (default time.Now).
func WithClock(now func() time.Time) Option { return func(p *Plugin) { p.now = now } }

// New returns an unconfigured plugin.
func New(opts ...Option) *Plugin {
	p := &Plugin{log: plugin.NewLogger(), now: time.Now, cache: map[string]*cached{},
		logCh: make(chan logItem, logQueue), logDone: make(chan struct{}), stop: make(chan struct{})}
	p.seed = seedFromHost
	for _, o := range opts {
		o(p)
	}
	return p
}

// seedFromHost seeds the sampling generator from the core's RNG; the
// sampling needs no secrecy, only independence between replicas.
func seedFromHost(h host.Host) *rand.Rand {
	var b [16]byte
	if _, err := h.Rand().Read(b[:]); err != nil {
		binary.LittleEndian.PutUint64(b[:], uint64(time.Now().UnixNano()))
	}
	return rand.New(rand.NewPCG(binary.LittleEndian.Uint64(b[:8]), binary.LittleEndian.Uint64(b[8:])))
}

// Info implements plugin.Plugin.
func (p *Plugin) Info() plugin.Info {
	return plugin.Info{Name: "policy-abac", Version: Version, Metadata: map[string]string{"engine": "cedar-go v1.9.2"}}
}

// ConfigSchema implements plugin.Plugin.
func (p *Plugin) ConfigSchema() config.Schema { return Schema }

// ValidateConfig implements plugin.ConfigValidator: the settings and every
// policy set in policy_dir, with file:line:col.
func (p *Plugin) ValidateConfig(_ context.Context, raw []byte) []plugin.Problem {
	var c Config
	if err := config.Unmarshal(raw, &c); err != nil {
		return []plugin.Problem{{Summary: err.Error()}}
	}
	s, ps := c.settings()
	if len(ps) > 0 {
		return ps
	}
	_, ps = loadDir(s.policyDir, s.reportOnly)
	return ps
}

// Configure implements plugin.Plugin: it checks the settings, compiles
// every set of policy_dir and writes to the shared storage those whose
// files changed since they were last applied. Any problem leaves the
// previous configuration in force.
func (p *Plugin) Configure(ctx context.Context, req *plugin.ConfigureRequest) error {
	var c Config
	if err := config.Unmarshal(req.Config, &c); err != nil {
		return err
	}
	s, ps := c.settings()
	if len(ps) > 0 {
		return &plugin.ProblemsError{Problems: ps}
	}
	files, ps := loadDir(s.policyDir, s.reportOnly)
	if len(ps) > 0 {
		return &plugin.ProblemsError{Problems: ps}
	}
	st := &state{s: s, host: req.Host, rng: p.seed(req.Host)}
	for _, f := range files {
		ver, changed, err := store(ctx, req.Host.Storage(), f.id, nil, func(cur record, ok bool) (record, bool) {
			if ok && cur.FileDigest == f.digest {
				return cur, false
			}
			return record{Policies: f.src.Policies, Schema: f.src.Schema, ReportOnly: f.src.ReportOnly, FileDigest: f.digest}, true
		}, func(ver uint64) error { return req.Host.Audit(ctx, setEvent(f.id, ver, f.src, "policy_dir")) })
		if err != nil {
			return fmt.Errorf("apply %s.cedar: %w", f.id, err)
		}
		if changed {
			p.log.Info("policy set applied from policy_dir", "policy_set", f.id, "version", ver, "report_only", f.src.ReportOnly)
		}
	}
	p.mu.Lock()
	p.cur = st
	p.mu.Unlock()
	p.cacheMu.Lock()
	p.cache = map[string]*cached{}
	p.cacheMu.Unlock()
	p.logOnce.Do(func() { go p.logLoop() })
	if _, _, ok, err := load(ctx, req.Host.Storage(), s.defaultSet); err == nil && !ok {
		p.log.Warn("the default policy set does not exist yet: every query without a set is refused until one is applied",
			"default_set", s.defaultSet)
	}
	p.log.Info("policy-abac ready", "policy_dir", s.policyDir, "sets_from_files", len(files), "default_set", s.defaultSet,
		"decision_log_sample_rate", s.sampleRate, "refresh_interval", s.refresh.String())
	return nil
}

// Health implements plugin.HealthChecker: unhealthy until configured.
func (p *Plugin) Health(context.Context) error {
	_, err := p.ready()
	return err
}

// Close stops the decision log after writing what it holds (waiting at
// most until ctx ends). For tests and orderly shutdown; the plugin
// process normally just exits.
func (p *Plugin) Close(ctx context.Context) error {
	p.closeOnce.Do(func() { close(p.stop) })
	p.logOnce.Do(func() { close(p.logDone) }) // never started: nothing to wait for
	select {
	case <-p.logDone:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *Plugin) ready() (*state, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.cur == nil {
		return nil, errdef.ErrNotConfigured
	}
	return p.cur, nil
}

func (s *state) setID(id string) (string, error) {
	if id == "" {
		id = s.s.defaultSet
	}
	if err := validSetID(id); err != nil {
		return "", fmt.Errorf("%v: %w", err, policy.ErrUnknownPolicySet)
	}
	return id, nil
}

// Evaluate implements policy.Engine.
func (p *Plugin) Evaluate(ctx context.Context, req *policy.EvaluateRequest) (*policy.EvaluateResponse, error) {
	if len(req.Queries) > policy.MaxBatch {
		return nil, fmt.Errorf("%d queries: %w", len(req.Queries), policy.ErrBatchTooLarge)
	}
	st, err := p.ready()
	if err != nil {
		return nil, err
	}
	id, err := st.setID(req.PolicySetID)
	if err != nil {
		return nil, err
	}
	c, err := p.compiled(ctx, st, id, false)
	if err != nil {
		return nil, err
	}
	clock := func() time.Time {
		t, err := st.host.Now(ctx)
		if err != nil || !t.Calibrated {
			p.log.Warn("no calibrated time: queries without context.time are denied", "error", err)
			return time.Time{}
		}
		return t.Time
	}
	ds, err := c.set.Evaluate(req.Entities, req.Queries, clock)
	if err != nil {
		return nil, err
	}
	p.logDecisions(st, id, c.version, req.Queries, ds)
	return &policy.EvaluateResponse{Decisions: ds, Version: c.version}, nil
}

// compiled returns the set id compiled, from the cache while it is younger
// than refresh_interval, else after consulting the storage (force: always).
func (p *Plugin) compiled(ctx context.Context, st *state, id string, force bool) (*cached, error) {
	p.cacheMu.Lock()
	c := p.cache[id]
	p.cacheMu.Unlock()
	now := p.now()
	if c != nil && !force && now.Sub(c.checked) < st.s.refresh {
		return c, nil
	}
	if c != nil && !force && !c.refreshing.CompareAndSwap(false, true) {
		return c, nil // another call is refreshing; this one answers from the cache
	}
	if c != nil && !force {
		defer c.refreshing.Store(false)
	}
	r, ver, ok, err := load(ctx, st.host.Storage(), id)
	if err == nil && !ok {
		err = fmt.Errorf("policy set %q: %w", id, policy.ErrUnknownPolicySet)
	}
	if err != nil {
		if c != nil && !errors.Is(err, policy.ErrUnknownPolicySet) {
			p.log.Error("cannot refresh policy set; answering from the cached version", "policy_set", id, "version", c.version, "error", err)
			return c, nil
		}
		return nil, err
	}
	if c != nil && (c.version == ver || c.bad == ver) {
		return p.touch(id, c, c.bad, now), nil
	}
	set, diags := abac.Compile(r.source(id))
	if set == nil {
		err := fmt.Errorf("stored policy set %q version %d does not compile: %s: %w", id, ver, firstError(diags), policy.ErrInvalidPolicy)
		if c != nil {
			p.log.Error("answering from the cached version", "policy_set", id, "version", c.version, "error", err)
			return p.touch(id, c, ver, now), nil
		}
		return nil, err
	}
	return p.install(id, set, ver, now), nil
}

// touch records that the storage was consulted at now for c (and that
// version bad does not compile), unless c was replaced meanwhile.
func (p *Plugin) touch(id string, c *cached, bad uint64, now time.Time) *cached {
	p.cacheMu.Lock()
	defer p.cacheMu.Unlock()
	if p.cache[id] != c {
		return c
	}
	n := &cached{set: c.set, version: c.version, checked: now, bad: bad}
	p.cache[id] = n
	return n
}

// install caches set at ver unless a newer version is cached already.
func (p *Plugin) install(id string, set *abac.Set, ver uint64, now time.Time) *cached {
	p.cacheMu.Lock()
	defer p.cacheMu.Unlock()
	if c := p.cache[id]; c != nil && c.version > ver {
		return c
	}
	c := &cached{set: set, version: ver, checked: now}
	p.cache[id] = c
	return c
}

func firstError(ds []policy.Diagnostic) string {
	for _, d := range ds {
		if d.Severity != abac.SeverityWarning {
			return fmt.Sprintf("%d:%d: %s", d.Line, d.Column, d.Message)
		}
	}
	return "unknown error"
}

// SetPolicies implements policy.Engine: an invalid set is not applied
// (Applied false, the Diagnostics say why); a valid one is written to the
// shared storage, audited (a change the audit log refuses is rolled back
// and reported as an error) and cached. Setting the text already in force
// changes nothing and keeps the Version.
func (p *Plugin) SetPolicies(ctx context.Context, req *policy.SetPoliciesRequest) (*policy.SetPoliciesResponse, error) {
	st, err := p.ready()
	if err != nil {
		return nil, err
	}
	id, err := st.setID(req.PolicySetID)
	if err != nil {
		return nil, err
	}
	src := abac.Source{ID: id, Policies: req.Policies, Schema: req.Schema, ReportOnly: req.ReportOnly}
	set, diags := abac.Compile(src)
	if set == nil {
		_, ver, _, err := load(ctx, st.host.Storage(), id)
		if err != nil && !errors.Is(err, policy.ErrInvalidPolicy) {
			return nil, err
		}
		return &policy.SetPoliciesResponse{Applied: false, Version: ver, Diagnostics: diags}, nil
	}
	var ifVersion *uint64
	if req.Check {
		ifVersion = &req.IfVersion
	}
	ver, changed, err := store(ctx, st.host.Storage(), id, ifVersion, func(cur record, ok bool) (record, bool) {
		next := record{Policies: req.Policies, Schema: req.Schema, ReportOnly: req.ReportOnly, FileDigest: cur.FileDigest}
		return next, !ok || next != cur
	}, func(ver uint64) error { return st.host.Audit(ctx, setEvent(id, ver, src, "api")) })
	if err != nil {
		return nil, err
	}
	if changed {
		p.log.Info("policy set applied", "policy_set", id, "version", ver, "policies", len(set.PolicyIDs()), "report_only", req.ReportOnly)
	}
	p.install(id, set, ver, p.now())
	return &policy.SetPoliciesResponse{Applied: true, Version: ver, Diagnostics: diags, Checked: req.Check}, nil
}

func setEvent(id string, ver uint64, src abac.Source, via string) host.Event {
	return host.Event{Action: "policy.set", Target: "policy_set/" + id, Outcome: "success",
		Fields: map[string]string{"version": fmt.Sprint(ver), "report_only": fmt.Sprint(src.ReportOnly), "via": via,
			"custom_schema": fmt.Sprint(src.Schema != ""), "digest": digest(src)}}
}

// ValidatePolicies implements policy.Validator.
func (p *Plugin) ValidatePolicies(_ context.Context, req *policy.SetPoliciesRequest) (*policy.ValidatePoliciesResponse, error) {
	st, err := p.ready()
	if err != nil {
		return nil, err
	}
	id, err := st.setID(req.PolicySetID)
	if err != nil {
		return nil, err
	}
	_, diags := abac.Compile(abac.Source{ID: id, Policies: req.Policies, Schema: req.Schema, ReportOnly: req.ReportOnly})
	return &policy.ValidatePoliciesResponse{Diagnostics: diags}, nil
}

// GetPolicies implements policy.Engine. It always reads the shared
// storage, and so refreshes this replica's cache: the core calls it when
// another replica announces a change.
func (p *Plugin) GetPolicies(ctx context.Context, req *policy.GetPoliciesRequest) (*policy.GetPoliciesResponse, error) {
	st, err := p.ready()
	if err != nil {
		return nil, err
	}
	id, err := st.setID(req.PolicySetID)
	if err != nil {
		return nil, err
	}
	r, ver, ok, err := load(ctx, st.host.Storage(), id)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("policy set %q: %w", id, policy.ErrUnknownPolicySet)
	}
	if _, err := p.compiled(ctx, st, id, true); err != nil {
		p.log.Warn("stored policy set does not compile", "policy_set", id, "error", err)
	}
	return &policy.GetPoliciesResponse{Policies: r.Policies, Schema: r.Schema, ReportOnly: r.ReportOnly, Version: ver}, nil
}

// logDecisions queues the decisions the decision log keeps. The queue is
// bounded: when host.Audit cannot keep up, entries are dropped, counted
// and reported, and decisions are never delayed.
func (p *Plugin) logDecisions(st *state, id string, ver uint64, qs []policy.Query, ds []policy.Decision) {
	for i, d := range ds {
		st.rngMu.Lock()
		u := st.rng.Float64()
		st.rngMu.Unlock()
		if !abac.ShouldLog(d, st.s.sampleRate, u) {
			continue
		}
		select {
		case p.logCh <- logItem{host: st.host, ev: abac.DecisionEvent(id, ver, qs[i], d)}:
		default:
			if n := p.dropped.Add(1); n == 1 || n%1000 == 0 {
				p.log.Warn("decision log queue full: entries dropped", "dropped_total", n)
			}
		}
	}
}

func (p *Plugin) logLoop() {
	defer close(p.logDone)
	for {
		select {
		case it := <-p.logCh:
			p.writeLog(it)
		case <-p.stop:
			for {
				select {
				case it := <-p.logCh:
					p.writeLog(it)
				default:
					return
				}
			}
		}
	}
}

func (p *Plugin) writeLog(it logItem) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := it.host.Audit(ctx, it.ev); err != nil {
		n := p.dropped.Add(1)
		p.log.Warn("decision log entry not recorded", "error", err, "dropped_total", n)
	}
}

// Dropped returns how many decision log entries were lost so far.
func (p *Plugin) Dropped() uint64 { return p.dropped.Load() }

var (
	_ plugin.PolicyPlugin    = (*Plugin)(nil)
	_ policy.Validator       = (*Plugin)(nil)
	_ plugin.ConfigValidator = (*Plugin)(nil)
	_ plugin.HealthChecker   = (*Plugin)(nil)
)
