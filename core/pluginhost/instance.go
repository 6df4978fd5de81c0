package pluginhost

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/avonzt/avon/sdk/acme"
	"github.com/avonzt/avon/sdk/acme/acmerpc"
	"github.com/avonzt/avon/sdk/ca"
	"github.com/avonzt/avon/sdk/ca/carpc"
	sdkconfig "github.com/avonzt/avon/sdk/config"
	"github.com/avonzt/avon/sdk/host"
	"github.com/avonzt/avon/sdk/kms"
	"github.com/avonzt/avon/sdk/kms/kmsrpc"
	sdkplugin "github.com/avonzt/avon/sdk/plugin"
	"github.com/avonzt/avon/sdk/policy"
	"github.com/avonzt/avon/sdk/policy/policyrpc"
	"github.com/avonzt/avon/sdk/pqc"
	"github.com/avonzt/avon/sdk/pqc/pqcrpc"
	pluginv1 "github.com/avonzt/avon/sdk/proto/plugin/v1"
)

// State is where a plugin instance is in its life.
type State string

// Instance states.
const (
	StateNew        State = "new"        // added, not started
	StateLaunched   State = "launched"   // process up, not configured yet
	StateRunning    State = "running"    // configured and serving
	StateRestarting State = "restarting" // crashed or hung; the supervisor is bringing it back
	StateStopped    State = "stopped"
)

// Spec says how to run one plugin instance.
type Spec struct {
	Kind   sdkplugin.Kind
	Name   string
	Path   string            // absolute path of the binary
	Args   []string          // arguments after the binary
	Env    map[string]string // added to the minimal environment plugins get
	SHA256 string            // pin; "" for none
	// Uses wires other plugins to this one: kind -> names, the first the
	// default. The plugin sees "<kind>" (the default) and "<kind>/<name>"
	// for every name.
	Uses    map[string][]string
	DataDir string // the instance's own directory
}

// ID is "<kind>.<name>".
func (s Spec) ID() string { return string(s.Kind) + "." + s.Name }

// Info is what a plugin said about itself.
type Info struct {
	Name, Version string
	Kind          string
	ProtocolMinor uint32
	Capabilities  []string
	Metadata      map[string]string
}

// Status is a snapshot of an instance for health endpoints.
type Status struct {
	Kind, Name string
	State      State
	Healthy    bool
	Message    string // last health message or error
	Restarts   int
	PID        int
	Info       Info
	Since      time.Time // when the current state began
}

// generation is one live process of an instance.
type generation struct {
	client *goplugin.Client
	conn   *grpc.ClientConn
	broker *goplugin.GRPCBroker
	base   pluginv1.PluginClient
	pid    int
	// ctx ends when this process is gone; calls in flight end with it.
	ctx    context.Context
	cancel context.CancelCauseFunc
}

// Instance is one configured plugin. It implements grpc.ClientConnInterface
// over whatever process currently runs, so clients built on it stay valid
// across restarts.
type Instance struct {
	host    *Host
	spec    Spec
	id      string
	log     hclog.Logger
	metrics *instanceMetrics
	sum     []byte // decoded pin, nil if none

	gen  atomic.Pointer[generation] // nil while no process serves
	wake chan struct{}              // a call saw the transport fail: check now

	mu        sync.Mutex // guards the fields below
	state     State
	since     time.Time
	healthy   bool
	message   string
	restarts  int
	info      Info
	schema    sdkconfig.Schema
	config    []byte
	hasConfig bool
}

// Spec returns the instance's spec.
func (i *Instance) Spec() Spec { return i.spec }

// ID returns "<kind>.<name>".
func (i *Instance) ID() string { return i.id }

// Schema returns the config schema the plugin reported at Launch.
func (i *Instance) Schema() sdkconfig.Schema {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.schema
}

// Info returns what the plugin said about itself at Launch.
func (i *Instance) Info() Info {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.info
}

// SetConfig sets the JSON configuration applied at Configure and after
// every restart.
func (i *Instance) SetConfig(cfg []byte) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.config = append([]byte(nil), cfg...)
	i.hasConfig = true
}

// Status returns a snapshot.
func (i *Instance) Status() Status {
	i.mu.Lock()
	defer i.mu.Unlock()
	st := Status{Kind: string(i.spec.Kind), Name: i.spec.Name, State: i.state, Healthy: i.healthy,
		Message: i.message, Restarts: i.restarts, Info: i.info, Since: i.since}
	if g := i.gen.Load(); g != nil {
		st.PID = g.pid
	}
	return st
}

// KMS returns a kms client over this instance (valid across restarts).
func (i *Instance) KMS() kms.KMS { return kmsrpc.NewClient(i) }

// PQC returns a pqc client over this instance (valid across restarts).
func (i *Instance) PQC() pqc.Provider { return pqcrpc.NewClient(i) }

// CA returns a ca client over this instance (valid across restarts).
func (i *Instance) CA() ca.CA { return carpc.NewClient(i) }

// ACME returns an acme client over this instance (valid across restarts).
func (i *Instance) ACME() acme.Server { return acmerpc.NewClient(i) }

// Policy returns a policy client over this instance (valid across restarts).
func (i *Instance) Policy() policy.Engine { return policyrpc.NewClient(i) }

func (i *Instance) setState(s State, healthy bool, msg string) {
	i.mu.Lock()
	if i.state != s {
		i.since = time.Now()
	}
	i.state, i.healthy, i.message = s, healthy, msg
	i.mu.Unlock()
	up := 0.0
	if s == StateRunning && healthy {
		up = 1
	}
	i.host.metrics.up.WithLabelValues(string(i.spec.Kind), i.spec.Name).Set(up)
}

func (i *Instance) currentState() State {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.state
}

// minimalEnv is the environment a plugin gets: no secrets of the core leak
// into it. Operators add what a plugin needs with `env = { ... }`.
func minimalEnv(extra map[string]string, level string) []string {
	env := []string{}
	for _, k := range []string{"PATH", "TMPDIR", "LANG", "TZ", "SOFTHSM2_CONF"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	env = append(env, sdkplugin.EnvLogLevel+"="+level)
	for k, v := range extra {
		env = append(env, k+"="+v)
	}
	return env
}

// launch starts a process and checks it serves the expected kind. On error
// nothing is left running.
func (i *Instance) launch(ctx context.Context) (*generation, error) {
	sum, err := verifyChecksum(i.spec.Path, i.spec.SHA256, i.host.opts.RequireChecksums)
	if err != nil {
		return nil, err
	}
	if st, err := os.Stat(i.spec.Path); err != nil {
		return nil, fmt.Errorf("plugin %s: %w", i.id, err)
	} else if st.IsDir() || st.Mode()&0o111 == 0 {
		return nil, fmt.Errorf("plugin %s: %s is not an executable file", i.id, i.spec.Path)
	}
	cmd := exec.Command(i.spec.Path, i.spec.Args...)
	cmd.Env = minimalEnv(i.spec.Env, i.host.opts.PluginLogLevel)
	var secure *goplugin.SecureConfig
	if sum != nil {
		secure = &goplugin.SecureConfig{Checksum: sum, Hash: sha256.New()}
	}
	client := goplugin.NewClient(&goplugin.ClientConfig{
		HandshakeConfig:  sdkplugin.Handshake,
		VersionedPlugins: sdkplugin.HostPluginSet(i.spec.Kind),
		Cmd:              cmd,
		SkipHostEnv:      true,
		SecureConfig:     secure,
		AllowedProtocols: []goplugin.Protocol{goplugin.ProtocolGRPC},
		AutoMTLS:         true,
		Logger:           fixedName{i.log},
		StartTimeout:     i.host.opts.StartTimeout,
		GRPCDialOptions: []grpc.DialOption{grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(sdkplugin.MaxMessageSize), grpc.MaxCallSendMsgSize(sdkplugin.MaxMessageSize))},
	})
	fail := func(err error) (*generation, error) {
		client.Kill()
		return nil, err
	}
	rpc, err := client.Client()
	if err != nil {
		return fail(fmt.Errorf("start plugin %s (%s): %w", i.id, i.spec.Path, err))
	}
	raw, err := rpc.Dispense(string(i.spec.Kind))
	if err != nil {
		return fail(fmt.Errorf("plugin %s: %v: %w", i.id, err, ErrKindMismatch))
	}
	pc, ok := raw.(*sdkplugin.Conn)
	if !ok {
		return fail(fmt.Errorf("plugin %s: unexpected client type %T", i.id, raw))
	}
	g := &generation{client: client, conn: pc.Conn, broker: pc.Broker, base: pluginv1.NewPluginClient(pc.Conn)}
	if rc := client.ReattachConfig(); rc != nil && rc.Pid > 0 {
		g.pid = rc.Pid
	}
	g.ctx, g.cancel = context.WithCancelCause(context.Background())

	cctx, cancel := context.WithTimeout(ctx, i.host.opts.StartTimeout)
	defer cancel()
	info, err := g.base.GetInfo(cctx, &pluginv1.GetInfoRequest{})
	if err != nil {
		return fail(fmt.Errorf("plugin %s: get info: %w", i.id, err))
	}
	if info.GetKind() != string(i.spec.Kind) {
		return fail(fmt.Errorf("plugin %s: binary %s serves kind %q: %w", i.id, i.spec.Path, info.GetKind(), ErrKindMismatch))
	}
	sresp, err := g.base.GetConfigSchema(cctx, &pluginv1.GetConfigSchemaRequest{})
	if err != nil {
		return fail(fmt.Errorf("plugin %s: get config schema: %w", i.id, err))
	}
	var schema sdkconfig.Schema
	if err := schema.UnmarshalJSON(sresp.GetSchemaJson()); err != nil {
		return fail(fmt.Errorf("plugin %s: invalid config schema: %w", i.id, err))
	}
	i.mu.Lock()
	i.info = Info{Name: info.GetName(), Version: info.GetVersion(), Kind: info.GetKind(),
		ProtocolMinor: info.GetProtocolMinor(), Capabilities: info.GetCapabilities(), Metadata: info.GetMetadata()}
	i.schema = schema
	i.mu.Unlock()
	return g, nil
}

// Validate asks the running plugin to check a decoded configuration.
func (i *Instance) Validate(ctx context.Context, cfg []byte) ([]sdkplugin.Problem, error) {
	g := i.gen.Load()
	if g == nil {
		return nil, &UnavailableError{Plugin: i.id, State: i.currentState()}
	}
	r, err := g.base.ValidateConfig(ctx, &pluginv1.ValidateConfigRequest{ConfigJson: cfg})
	if err != nil {
		return nil, fmt.Errorf("plugin %s: validate config: %w", i.id, err)
	}
	return sdkplugin.ProblemsFromProto(r.GetProblems()), nil
}

// configure serves the host services and wired plugins to g over its broker
// and sends the configuration.
func (i *Instance) configure(ctx context.Context, g *generation) error {
	i.mu.Lock()
	cfg, has := i.config, i.hasConfig
	i.mu.Unlock()
	if !has {
		cfg = []byte("{}")
	}
	newServer := func(register func(*grpc.Server)) func([]grpc.ServerOption) *grpc.Server {
		return func(opts []grpc.ServerOption) *grpc.Server {
			opts = append(opts, grpc.MaxRecvMsgSize(sdkplugin.MaxMessageSize), grpc.MaxSendMsgSize(sdkplugin.MaxMessageSize))
			s := grpc.NewServer(opts...)
			register(s)
			return s
		}
	}
	hs, err := i.host.hostFor(i)
	if err != nil {
		return err
	}
	hostID := g.broker.NextId()
	go g.broker.AcceptAndServe(hostID, newServer(func(s *grpc.Server) { host.Register(s, hs) }))
	uses := map[string]uint32{}
	for kind, names := range i.spec.Uses {
		for n, name := range names {
			target, ok := i.host.Get(sdkplugin.Kind(kind), name)
			if !ok {
				return fmt.Errorf("plugin %s uses %s.%s, which is not configured: %w", i.id, kind, name, ErrDependency)
			}
			var register func(*grpc.Server)
			switch sdkplugin.Kind(kind) {
			case sdkplugin.KindKMS:
				register = func(s *grpc.Server) { kmsrpc.Register(s, target.KMS()) }
			case sdkplugin.KindPQC:
				register = func(s *grpc.Server) { pqcrpc.Register(s, target.PQC()) }
			case sdkplugin.KindCA:
				register = func(s *grpc.Server) { carpc.Register(s, target.CA()) }
			case sdkplugin.KindPolicy:
				register = func(s *grpc.Server) { policyrpc.Register(s, target.Policy()) }
			default:
				return fmt.Errorf("plugin %s uses a %s plugin, which cannot be wired yet: %w", i.id, kind, ErrDependency)
			}
			// A broker stream is dialed once: the default gets its own.
			if n == 0 {
				id := g.broker.NextId()
				go g.broker.AcceptAndServe(id, newServer(register))
				uses[kind] = id
			}
			id := g.broker.NextId()
			go g.broker.AcceptAndServe(id, newServer(register))
			uses[kind+"/"+name] = id
		}
	}
	if err := os.MkdirAll(i.spec.DataDir, 0o700); err != nil {
		return fmt.Errorf("plugin %s: data dir: %w", i.id, err)
	}
	cctx, cancel := context.WithTimeout(ctx, i.host.opts.StartTimeout)
	defer cancel()
	r, err := g.base.Configure(cctx, &pluginv1.ConfigureRequest{
		ConfigJson: cfg, HostBrokerId: hostID, Uses: uses, DataDir: i.spec.DataDir, Instance: i.id,
	})
	if err != nil {
		return fmt.Errorf("plugin %s: configure: %w", i.id, err)
	}
	if ps := r.GetProblems(); len(ps) > 0 {
		return &ConfigError{Plugin: i.id, Problems: sdkplugin.ProblemsFromProto(ps)}
	}
	return nil
}

// ConfigError lists why a plugin refused its configuration.
type ConfigError struct {
	Plugin   string
	Problems []sdkplugin.Problem
}

func (e *ConfigError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "plugin %s rejected its configuration", e.Plugin)
	for _, p := range e.Problems {
		b.WriteString("; ")
		if p.Attribute != "" {
			b.WriteString(p.Attribute + ": ")
		}
		b.WriteString(p.Summary)
		if p.Detail != "" {
			b.WriteString(" (" + p.Detail + ")")
		}
	}
	return b.String()
}

// Unwrap matches ErrConfigRejected.
func (e *ConfigError) Unwrap() error { return ErrConfigRejected }

// kill ends a generation: calls in flight fail with ErrUnavailable.
func (i *Instance) kill(g *generation, cause error) {
	if g == nil {
		return
	}
	i.gen.CompareAndSwap(g, nil)
	g.cancel(cause)
	g.client.Kill()
}

// Reconfigure applies a new configuration to the running process and keeps
// it for restarts. On error the previous configuration stays in force.
func (i *Instance) Reconfigure(ctx context.Context, cfg []byte) error {
	g := i.gen.Load()
	if g == nil {
		return &UnavailableError{Plugin: i.id, State: i.currentState()}
	}
	i.mu.Lock()
	old, oldHas := i.config, i.hasConfig
	i.config, i.hasConfig = append([]byte(nil), cfg...), true
	i.mu.Unlock()
	if err := i.configure(ctx, g); err != nil {
		i.mu.Lock()
		i.config, i.hasConfig = old, oldHas
		i.mu.Unlock()
		return err
	}
	return nil
}

// supervise watches the running process until the host stops: it pings
// health, and on a crash or hang restarts the plugin with exponential
// backoff. It owns every restart.
func (i *Instance) supervise(stop <-chan struct{}) {
	opts := i.host.opts
	poll := time.NewTicker(opts.ExitPollInterval)
	defer poll.Stop()
	health := time.NewTicker(opts.HealthInterval)
	defer health.Stop()
	backoff := opts.BackoffMin
	startedAt := time.Now()
	misses := 0
	for {
		g := i.gen.Load()
		if g == nil {
			// Down: restart with backoff.
			if time.Since(startedAt) > opts.BackoffResetAfter {
				backoff = opts.BackoffMin
			}
			i.log.Warn("restarting plugin", "in", backoff.String())
			select {
			case <-stop:
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, opts.BackoffMax)
			ng, err := i.launch(context.Background())
			if err == nil {
				if err = i.configure(context.Background(), ng); err != nil {
					ng.client.Kill()
				}
			}
			if err != nil {
				i.log.Error("plugin restart failed", "error", err)
				i.setState(StateRestarting, false, err.Error())
				continue
			}
			select {
			case <-stop: // stopped while starting: do not leave it behind
				ng.client.Kill()
				return
			default:
			}
			i.gen.Store(ng)
			startedAt = time.Now()
			misses = 0
			i.mu.Lock()
			i.restarts++
			i.mu.Unlock()
			i.host.metrics.restarts.WithLabelValues(string(i.spec.Kind), i.spec.Name).Inc()
			i.setState(StateRunning, true, "")
			i.log.Info("plugin restarted", "pid", ng.pid)
			continue
		}
		select {
		case <-stop:
			return
		case <-i.wake:
		case <-poll.C:
		case <-health.C:
			ctx, cancel := context.WithTimeout(context.Background(), opts.HealthTimeout)
			r, err := g.base.Health(ctx, &pluginv1.HealthRequest{})
			cancel()
			switch {
			case err != nil:
				misses++
				i.log.Warn("plugin health ping failed", "error", err, "misses", misses)
				if misses >= opts.HealthMisses && !g.client.Exited() {
					i.log.Error("plugin unresponsive; killing it", "misses", misses)
					i.kill(g, &UnavailableError{Plugin: i.id, State: StateRestarting, Cause: errors.New("unresponsive to health pings")})
				}
			case !r.GetOk():
				misses = 0
				i.setState(StateRunning, false, r.GetMessage())
			default:
				misses = 0
				i.setState(StateRunning, true, "")
			}
		}
		if g.client.Exited() {
			i.log.Error("plugin process exited", "pid", g.pid)
			i.kill(g, &UnavailableError{Plugin: i.id, State: StateRestarting, Cause: errors.New("process exited")})
			i.setState(StateRestarting, false, "process exited")
		} else if i.gen.Load() == nil {
			i.setState(StateRestarting, false, "killed after missed health pings")
		}
	}
}

// fixedName keeps go-plugin from appending the binary's name to the
// logger, so plugin lines appear under plugin.<kind>.<name> exactly.
type fixedName struct{ hclog.Logger }

func (f fixedName) Named(string) hclog.Logger { return f }
