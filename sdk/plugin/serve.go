package plugin

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"time"

	"github.com/hashicorp/go-hclog"
	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/avonzt/avon/sdk/acme/acmerpc"
	"github.com/avonzt/avon/sdk/ca/carpc"
	"github.com/avonzt/avon/sdk/kms/kmsrpc"
	"github.com/avonzt/avon/sdk/policy/policyrpc"
	"github.com/avonzt/avon/sdk/pqc/pqcrpc"
	pluginv1 "github.com/avonzt/avon/sdk/proto/plugin/v1"
)

// MaxMessageSize is the gRPC message limit both sides use: post-quantum
// certificate chains and CRLs are far larger than gRPC's 4 MiB default.
const MaxMessageSize = 64 << 20

// Handshake is the go-plugin handshake shared by the core and every plugin.
// A binary started without the cookie (by hand) explains itself and exits.
var Handshake = goplugin.HandshakeConfig{
	ProtocolVersion:  ProtocolVersion,
	MagicCookieKey:   "AVON_PLUGIN_MAGIC_COOKIE",
	MagicCookieValue: "5f6a0e1c4b7d2a93-avon-plugin",
}

// EnvLogLevel is the environment variable the host sets to the plugin's log level.
const EnvLogLevel = "AVON_PLUGIN_LOG_LEVEL"

// ServeConfig says what a plugin serves. Set exactly one kind.
type ServeConfig struct {
	KMS    KMSPlugin
	PQC    PQCPlugin
	CA     CAPlugin
	ACME   ACMEPlugin
	Policy PolicyPlugin

	// Logger overrides the default JSON logger on stderr.
	Logger hclog.Logger
	// Test serves in-process for tests (go-plugin reattach mode).
	Test *goplugin.ServeTestConfig
	// ParentWatchInterval overrides how often the parent-death watchdog
	// looks at the parent process (default 250ms; negative disables it).
	ParentWatchInterval time.Duration
	// MaxProcs, when above 0, caps the Go scheduler's processors
	// (GOMAXPROCS) of a served plugin process, unless the operator set
	// GOMAXPROCS in the plugin's environment. A plugin that mostly relays
	// calls between the core and others does better on one: on a small
	// VM every wake-up of an idle thread on the other CPU costs more than
	// the work it hands over (see docs/plugins.md).
	MaxProcs int
}

// stderr is the process's standard error as it was before go-plugin's
// Serve redirected os.Stderr into its stdio stream: the host reads this one.
var stderr = os.Stderr

// NewLogger returns the logger a plugin should use: hclog JSON on stderr at
// the level the host asked for. The host re-emits each line under the
// plugin's name. Never log secrets.
func NewLogger() hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Level:      hclog.LevelFromString(os.Getenv(EnvLogLevel)),
		Output:     stderr,
		JSONFormat: true,
	})
}

// Serve serves the plugin until the host stops it. It does not return in
// normal operation; it exits the process with status 1 on a configuration
// mistake of the plugin author.
func Serve(cfg *ServeConfig) {
	logger := cfg.Logger
	if logger == nil {
		logger = NewLogger()
	}
	if cfg.Test == nil {
		capProcs(cfg.MaxProcs)
	}
	gp, err := grpcPluginFor(cfg)
	if err != nil {
		logger.Error("cannot serve plugin", "error", err)
		os.Exit(1)
	}
	if cfg.Test == nil && cfg.ParentWatchInterval >= 0 {
		iv := cfg.ParentWatchInterval
		if iv == 0 {
			iv = 250 * time.Millisecond
		}
		go watchParent(logger, iv)
	}
	goplugin.Serve(&goplugin.ServeConfig{
		HandshakeConfig:  Handshake,
		VersionedPlugins: map[int]goplugin.PluginSet{ProtocolVersion: {string(gp.kind): gp}},
		GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
			opts = append(opts, grpc.MaxRecvMsgSize(MaxMessageSize), grpc.MaxSendMsgSize(MaxMessageSize))
			return grpc.NewServer(opts...)
		},
		Logger: logger,
		Test:   cfg.Test,
	})
}

// watchParent exits the process when its parent changes: the host died
// without stopping the plugin (for example SIGKILL) and the plugin was
// re-parented. Polling getppid works on every Unix, unlike PR_SET_PDEATHSIG,
// which fires when the parent's spawning thread exits.
func watchParent(logger hclog.Logger, every time.Duration) {
	parent := os.Getppid()
	if parent <= 1 {
		return // started by init or a subreaper directly: nothing to watch
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for range t.C {
		if os.Getppid() != parent {
			logger.Error("host process is gone; exiting", "old_parent", parent)
			os.Exit(3)
		}
	}
}

// grpcPlugin is the go-plugin GRPCPlugin for one kind.
type grpcPlugin struct {
	goplugin.NetRPCUnsupportedPlugin
	kind     Kind
	base     Plugin
	register func(s *grpc.Server)
	caps     []string
}

func grpcPluginFor(cfg *ServeConfig) (*grpcPlugin, error) {
	var set []*grpcPlugin
	if cfg.KMS != nil {
		impl := cfg.KMS
		set = append(set, &grpcPlugin{kind: KindKMS, base: impl, caps: kmsrpc.Capabilities(impl),
			register: func(s *grpc.Server) { kmsrpc.Register(s, impl) }})
	}
	if cfg.PQC != nil {
		impl := cfg.PQC
		set = append(set, &grpcPlugin{kind: KindPQC, base: impl, caps: pqcrpc.Capabilities(impl),
			register: func(s *grpc.Server) { pqcrpc.Register(s, impl) }})
	}
	if cfg.CA != nil {
		impl := cfg.CA
		set = append(set, &grpcPlugin{kind: KindCA, base: impl, caps: carpc.Capabilities(impl),
			register: func(s *grpc.Server) { carpc.Register(s, impl) }})
	}
	if cfg.ACME != nil {
		impl := cfg.ACME
		set = append(set, &grpcPlugin{kind: KindACME, base: impl, caps: acmerpc.Capabilities(impl),
			register: func(s *grpc.Server) { acmerpc.Register(s, impl) }})
	}
	if cfg.Policy != nil {
		impl := cfg.Policy
		set = append(set, &grpcPlugin{kind: KindPolicy, base: impl, caps: policyrpc.Capabilities(impl),
			register: func(s *grpc.Server) { policyrpc.Register(s, impl) }})
	}
	if len(set) != 1 {
		return nil, fmt.Errorf("ServeConfig must set exactly one plugin kind, got %d", len(set))
	}
	return set[0], nil
}

func (p *grpcPlugin) GRPCServer(broker *goplugin.GRPCBroker, s *grpc.Server) error {
	pluginv1.RegisterPluginServer(s, &baseServer{impl: p.base, kind: p.kind, caps: p.caps, broker: broker})
	p.register(s)
	return nil
}

// GRPCClient is used on the host side: it returns a *Conn.
func (p *grpcPlugin) GRPCClient(_ context.Context, broker *goplugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return &Conn{Conn: c, Broker: broker}, nil
}

// Conn is what a host gets when it dispenses a plugin: the connection, over
// which it builds the plugin and kind clients, and the broker over which it
// serves host services.
type Conn struct {
	Conn   *grpc.ClientConn
	Broker *goplugin.GRPCBroker
}

// HostPluginSet returns the versioned plugin set a host passes to go-plugin
// to dispense a plugin of kind k.
func HostPluginSet(k Kind) map[int]goplugin.PluginSet {
	return map[int]goplugin.PluginSet{ProtocolVersion: {string(k): &grpcPlugin{kind: k}}}
}

// PluginSet returns the kind and go-plugin plugin set that Serve would
// serve for cfg; plugintest uses it to serve in-process.
func PluginSet(cfg *ServeConfig) (Kind, goplugin.PluginSet, error) {
	gp, err := grpcPluginFor(cfg)
	if err != nil {
		return "", nil, err
	}
	return gp.kind, goplugin.PluginSet{string(gp.kind): gp}, nil
}

// capProcs applies ServeConfig.MaxProcs: GOMAXPROCS lowered to n when n
// is above 0 and the environment does not set GOMAXPROCS.
func capProcs(n int) {
	if n <= 0 || os.Getenv("GOMAXPROCS") != "" {
		return
	}
	if n < runtime.GOMAXPROCS(0) {
		runtime.GOMAXPROCS(n)
	}
}
