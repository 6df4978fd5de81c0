// Package plugintest helps test AVON plugins: it builds a plugin binary once
// per test process (with its SHA-256), runs it as a real process the way the
// core does (go-plugin, gRPC, AutoMTLS, checksum pinned), or serves an
// implementation in-process, and provides an in-memory host (MemHost) in
// place of the core. Conformance kits per kind live in sdk/<kind>/<kind>test.
//
// It is for tests only; nothing here is fit to run a plugin in production.
package plugintest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/avonzt/avon/sdk/host"
	"github.com/avonzt/avon/sdk/plugin"
	pluginv1 "github.com/avonzt/avon/sdk/proto/plugin/v1"
)

// Binary is a built plugin.
type Binary struct {
	Path   string
	SHA256 string
}

var (
	buildMu  sync.Mutex
	buildDir string
	built    = map[string]Binary{}
)

// Main runs the tests and then removes the binaries Build made. Call it
// from TestMain: `func TestMain(m *testing.M) { plugintest.Main(m) }`.
func Main(m *testing.M) { os.Exit(Run(m)) }

// Run runs the tests, removes the binaries Build made and returns the exit
// code, for a TestMain that also sets up something else (a SoftHSM2 token
// directory, say) and exits itself.
func Run(m *testing.M) int {
	code := m.Run()
	buildMu.Lock()
	if buildDir != "" {
		_ = os.RemoveAll(buildDir)
	}
	buildMu.Unlock()
	return code
}

// Build compiles the main package pkg (an import path, or a directory
// starting with "./" relative to the test's working directory) once per test
// process and returns the binary and its SHA-256.
func Build(t testing.TB, pkg string) Binary {
	t.Helper()
	return build(t, pkg, false)
}

// BuildCGO is Build with cgo enabled, for plugins that link a C library
// (kms-hsm and its PKCS#11 module).
func BuildCGO(t testing.TB, pkg string) Binary {
	t.Helper()
	return build(t, pkg, true)
}

func build(t testing.TB, pkg string, cgo bool) Binary {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	key := fmt.Sprintf("%s cgo=%v", pkg, cgo)
	if b, ok := built[key]; ok {
		return b
	}
	if buildDir == "" {
		d, err := os.MkdirTemp("", "avon-plugintest-")
		if err != nil {
			t.Fatalf("plugintest: temp dir: %v", err)
		}
		buildDir = d
	}
	out := filepath.Join(buildDir, fmt.Sprintf("p%d-%s", len(built), filepath.Base(pkg)))
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(gobin); err != nil {
		gobin = "go"
	}
	cmd := exec.Command(gobin, "build", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if cgo {
		cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	}
	if outb, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("plugintest: build %s: %v\n%s", pkg, err, outb)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("plugintest: read %s: %v", out, err)
	}
	sum := sha256.Sum256(data)
	b := Binary{Path: out, SHA256: hex.EncodeToString(sum[:])}
	built[key] = b
	return b
}

// Options of Start and ServeInProcess.
type Options struct {
	Config  []byte    // plugin config JSON; nil means {}
	Host    host.Host // nil means NewHost()
	DataDir string    // "" means t.TempDir()
	// Uses serves other plugins to this one by kind, as the core does for
	// `uses = { kind = "name" }`.
	Uses map[plugin.Kind]func(*grpc.Server)
}

// Started is a plugin ready for calls.
type Started struct {
	Conn   *plugin.Conn
	Base   pluginv1.PluginClient
	Client *goplugin.Client // nil when served in-process
}

// Start runs bin as a real plugin process the way the core does and
// configures it (failing the test if the plugin refuses). The process is
// killed when the test ends.
func Start(t testing.TB, bin Binary, kind plugin.Kind, opts Options) *Started {
	t.Helper()
	s := StartUnconfigured(t, bin, kind)
	if ps, err := s.Configure(t, opts); err != nil || len(ps) > 0 {
		t.Fatalf("plugintest: configure: %v %v", ps, err)
	}
	return s
}

// StartUnconfigured runs bin like Start but does not configure it: use
// Configure to test how the plugin treats a configuration.
func StartUnconfigured(t testing.TB, bin Binary, kind plugin.Kind) *Started {
	t.Helper()
	sum, _ := hex.DecodeString(bin.SHA256)
	cmd := exec.Command(bin.Path)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), plugin.EnvLogLevel + "=debug"}
	logs := newTestWriter(t) // closed after c.Kill below (cleanups run last first)
	c := goplugin.NewClient(&goplugin.ClientConfig{
		HandshakeConfig:  plugin.Handshake,
		VersionedPlugins: plugin.HostPluginSet(kind),
		Cmd:              cmd,
		SkipHostEnv:      true,
		SecureConfig:     &goplugin.SecureConfig{Checksum: sum, Hash: sha256.New()},
		AllowedProtocols: []goplugin.Protocol{goplugin.ProtocolGRPC},
		AutoMTLS:         true,
		Logger:           hclog.New(&hclog.LoggerOptions{Name: "plugin", Output: logs, Level: hclog.Debug}),
		GRPCDialOptions: []grpc.DialOption{grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(plugin.MaxMessageSize), grpc.MaxCallSendMsgSize(plugin.MaxMessageSize))},
	})
	t.Cleanup(c.Kill)
	rpc, err := c.Client()
	if err != nil {
		t.Fatalf("plugintest: start %s: %v", bin.Path, err)
	}
	raw, err := rpc.Dispense(string(kind))
	if err != nil {
		t.Fatalf("plugintest: dispense %s: %v", kind, err)
	}
	s := &Started{Conn: raw.(*plugin.Conn), Client: c}
	s.Base = pluginv1.NewPluginClient(s.Conn.Conn)
	return s
}

// ServeInProcess serves cfg's plugin in this process over a real gRPC
// connection (go-plugin's test mode: no AutoMTLS, no checksum) and
// configures it.
func ServeInProcess(t testing.TB, cfg *plugin.ServeConfig, opts Options) *Started {
	t.Helper()
	kind, set, err := plugin.PluginSet(cfg)
	if err != nil {
		t.Fatalf("plugintest: %v", err)
	}
	client, _ := goplugin.TestPluginGRPCConn(t, true, set)
	t.Cleanup(func() { _ = client.Close() })
	raw, err := client.Dispense(string(kind))
	if err != nil {
		t.Fatalf("plugintest: dispense %s: %v", kind, err)
	}
	s := &Started{Conn: raw.(*plugin.Conn)}
	s.Base = pluginv1.NewPluginClient(s.Conn.Conn)
	if ps, err := s.Configure(t, opts); err != nil || len(ps) > 0 {
		t.Fatalf("plugintest: configure: %v %v", ps, err)
	}
	return s
}

// Configure serves the host services (opts.Host, or a fresh MemHost) and
// the wired plugins to the plugin and sends it opts.Config. It returns the
// problems the plugin reported, or the transport error.
func (s *Started) Configure(t testing.TB, opts Options) ([]plugin.Problem, error) {
	t.Helper()
	h := opts.Host
	if h == nil {
		h = NewHost()
	}
	cfg := opts.Config
	if cfg == nil {
		cfg = []byte("{}")
	}
	dir := opts.DataDir
	if dir == "" {
		dir = t.TempDir()
	}
	serve := func(register func(*grpc.Server)) uint32 {
		id := s.Conn.Broker.NextId()
		go s.Conn.Broker.AcceptAndServe(id, func(o []grpc.ServerOption) *grpc.Server {
			srv := grpc.NewServer(append(o, grpc.MaxRecvMsgSize(plugin.MaxMessageSize), grpc.MaxSendMsgSize(plugin.MaxMessageSize))...)
			register(srv)
			return srv
		})
		return id
	}
	hostID := serve(func(srv *grpc.Server) { host.Register(srv, h) })
	uses := map[string]uint32{}
	for k, reg := range opts.Uses {
		uses[string(k)] = serve(reg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := s.Base.Configure(ctx, &pluginv1.ConfigureRequest{ConfigJson: cfg, HostBrokerId: hostID, Uses: uses, DataDir: dir, Instance: "test.plugin"})
	if err != nil {
		return nil, err
	}
	return plugin.ProblemsFromProto(r.GetProblems()), nil
}

// testWriter hands go-plugin's log lines to t.Log until the test's
// cleanup closes it. go-plugin's stdio goroutine may still log after the
// plugin was killed; a t.Log after the test ended is a data race inside
// package testing (and a panic), so later lines are dropped.
type testWriter struct {
	mu     sync.Mutex
	t      testing.TB
	closed bool
}

// LogWriter returns a writer for a go-plugin client's hclog output that
// logs each line with t.Log until t's cleanup, and drops lines after that.
// Create it before registering the cleanup that kills the plugin, so it
// closes after that.
func LogWriter(t testing.TB) io.Writer { return newTestWriter(t) }

func newTestWriter(t testing.TB) *testWriter {
	w := &testWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.closed = true
		w.mu.Unlock()
	})
	return w
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}
