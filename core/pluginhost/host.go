package pluginhost

import (
	"context"
	"crypto/rand"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/avonzt/avon/core/store"
	sdkplugin "github.com/avonzt/avon/sdk/plugin"
)

// Options configure a Host. Zero durations take the defaults shown.
type Options struct {
	Logger           hclog.Logger
	Services         Services
	Metrics          *Metrics // nil: unregistered metrics
	RequireChecksums bool
	PluginLogLevel   string // level plugins log at; default "info"

	StartTimeout      time.Duration // 10s: start, handshake and configure
	HealthInterval    time.Duration // 10s between health pings
	HealthTimeout     time.Duration // 5s per ping
	HealthMisses      int           // 3 failed pings in a row: kill and restart
	ExitPollInterval  time.Duration // 200ms: how soon a dead process is noticed
	BackoffMin        time.Duration // 500ms first restart delay
	BackoffMax        time.Duration // 30s cap
	BackoffResetAfter time.Duration // 1m of uptime resets the backoff
}

func (o *Options) defaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.StartTimeout, 10*time.Second)
	def(&o.HealthInterval, 10*time.Second)
	def(&o.HealthTimeout, 5*time.Second)
	def(&o.ExitPollInterval, 200*time.Millisecond)
	def(&o.BackoffMin, 500*time.Millisecond)
	def(&o.BackoffMax, 30*time.Second)
	def(&o.BackoffResetAfter, time.Minute)
	if o.HealthMisses <= 0 {
		o.HealthMisses = 3
	}
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics(nil)
	}
	if o.PluginLogLevel == "" {
		o.PluginLogLevel = "info"
	}
	if o.Services.Rand == nil {
		o.Services.Rand = rand.Reader
	}
	if o.Services.Clock == nil {
		o.Services.Clock = SystemClock{}
	}
}

// Host runs the configured plugins.
type Host struct {
	opts    Options
	metrics *Metrics

	mu        sync.Mutex // guards the fields below
	instances map[string]*Instance
	order     []*Instance // dependency order, set by Configure
	stop      chan struct{}
	stopped   bool
	wg        sync.WaitGroup // supervisors
}

// New returns a Host. It starts nothing.
func New(opts Options) *Host {
	opts.defaults()
	return &Host{opts: opts, metrics: opts.Metrics, instances: map[string]*Instance{}, stop: make(chan struct{})}
}

// Add registers a plugin instance; nothing starts.
func (h *Host) Add(spec Spec) (*Instance, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped {
		return nil, ErrStopped
	}
	if !filepath.IsAbs(spec.Path) {
		return nil, fmt.Errorf("plugin %s: command path %q must be absolute", spec.ID(), spec.Path)
	}
	if _, dup := h.instances[spec.ID()]; dup {
		return nil, fmt.Errorf("plugin %s declared twice", spec.ID())
	}
	i := &Instance{
		host: h, spec: spec, id: spec.ID(),
		log:     h.opts.Logger.ResetNamed("plugin." + spec.ID()),
		metrics: &instanceMetrics{m: h.metrics, kind: string(spec.Kind), name: spec.Name},
		wake:    make(chan struct{}, 1),
		state:   StateNew, since: time.Now(),
	}
	h.metrics.up.WithLabelValues(string(spec.Kind), spec.Name).Set(0)
	h.metrics.restarts.WithLabelValues(string(spec.Kind), spec.Name).Add(0)
	h.instances[i.id] = i
	return i, nil
}

// Get returns the instance of a kind and name.
func (h *Host) Get(kind sdkplugin.Kind, name string) (*Instance, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	i, ok := h.instances[string(kind)+"."+name]
	return i, ok
}

// Instances returns every instance sorted by ID.
func (h *Host) Instances() []*Instance {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]*Instance, 0, len(h.instances))
	for _, i := range h.instances {
		out = append(out, i)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].id < out[b].id })
	return out
}

// hostFor returns the host services as one instance sees them: storage
// confined to plugins/<kind>/<name>/.
func (h *Host) hostFor(i *Instance) (*pluginHost, error) {
	if h.opts.Services.Store == nil {
		return nil, fmt.Errorf("plugin %s: no store configured for host services", i.id)
	}
	ns, err := store.NewNamespace(h.opts.Services.Store, "plugins/"+string(i.spec.Kind)+"/"+i.spec.Name+"/")
	if err != nil {
		return nil, fmt.Errorf("plugin %s: storage namespace: %w", i.id, err)
	}
	return newPluginHost(i.id, h.opts.Services, ns), nil
}

// LaunchError lists the plugins that failed to launch, by ID.
type LaunchError struct {
	Failures map[string]error
}

func (e *LaunchError) Error() string {
	ids := make([]string, 0, len(e.Failures))
	for id := range e.Failures {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var b strings.Builder
	for k, id := range ids {
		if k > 0 {
			b.WriteString("; ")
		}
		b.WriteString(e.Failures[id].Error())
	}
	return b.String()
}

// Unwrap exposes every failure to errors.Is and errors.As.
func (e *LaunchError) Unwrap() []error {
	out := make([]error, 0, len(e.Failures))
	for _, err := range e.Failures {
		out = append(out, err)
	}
	return out
}

// Launch starts every added plugin process and reads its info and config
// schema. On error (a *LaunchError naming each failed plugin) the plugins
// that did start keep running, so a caller can still check their
// configuration; Stop ends them.
func (h *Host) Launch(ctx context.Context) error {
	failures := map[string]error{}
	for _, i := range h.Instances() {
		if i.gen.Load() != nil {
			continue
		}
		g, err := i.launch(ctx)
		if err != nil {
			failures[i.id] = err
			continue
		}
		i.gen.Store(g)
		i.setState(StateLaunched, false, "")
	}
	if len(failures) > 0 {
		return &LaunchError{Failures: failures}
	}
	return nil
}

// dependencyOrder sorts instances so that every plugin comes after the
// plugins it uses.
func (h *Host) dependencyOrder() ([]*Instance, error) {
	all := h.Instances()
	state := map[string]int{} // 0 unvisited, 1 visiting, 2 done
	var out []*Instance
	var visit func(i *Instance, path []string) error
	visit = func(i *Instance, path []string) error {
		switch state[i.id] {
		case 1:
			return fmt.Errorf("plugin dependency cycle %v -> %s: %w", path, i.id, ErrDependency)
		case 2:
			return nil
		}
		state[i.id] = 1
		kinds := make([]string, 0, len(i.spec.Uses))
		for k := range i.spec.Uses {
			kinds = append(kinds, k)
		}
		sort.Strings(kinds)
		for _, k := range kinds {
			for _, name := range i.spec.Uses[k] {
				dep, ok := h.Get(sdkplugin.Kind(k), name)
				if !ok {
					return fmt.Errorf("plugin %s uses %s.%s, which is not declared: %w", i.id, k, name, ErrDependency)
				}
				if err := visit(dep, append(path, i.id)); err != nil {
					return err
				}
			}
		}
		state[i.id] = 2
		out = append(out, i)
		return nil
	}
	for _, i := range all {
		if err := visit(i, nil); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Configure configures every launched plugin, dependencies first, and
// starts their supervisors. On error every plugin is stopped.
func (h *Host) Configure(ctx context.Context) error {
	order, err := h.dependencyOrder()
	if err != nil {
		h.Stop()
		return err
	}
	h.mu.Lock()
	h.order = order
	h.mu.Unlock()
	for _, i := range order {
		g := i.gen.Load()
		if g == nil {
			h.Stop()
			return &UnavailableError{Plugin: i.id, State: i.currentState()}
		}
		if err := i.configure(ctx, g); err != nil {
			h.Stop()
			return err
		}
		i.setState(StateRunning, true, "")
		i.log.Info("plugin running", "pid", g.pid, "version", i.Info().Version)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped {
		return ErrStopped
	}
	for _, i := range order {
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			i.supervise(h.stop)
		}()
	}
	return nil
}

// Stop stops the supervisors and kills every plugin process, dependents
// first. It returns when no process is left. Safe to call more than once.
func (h *Host) Stop() {
	h.mu.Lock()
	if !h.stopped {
		h.stopped = true
		close(h.stop)
	}
	order := h.order
	if order == nil {
		for _, i := range h.instances {
			order = append(order, i)
		}
	}
	h.mu.Unlock()
	h.wg.Wait()
	for k := len(order) - 1; k >= 0; k-- {
		i := order[k]
		if g := i.gen.Load(); g != nil {
			i.kill(g, &UnavailableError{Plugin: i.id, State: StateStopped})
		}
		i.setState(StateStopped, false, "stopped")
	}
}
