package main_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/go-hclog"
	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/avonzt/avon/plugins/kms-hsm/softhsmtest"
	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/kms"
	"github.com/avonzt/avon/sdk/kms/kmsrpc"
	"github.com/avonzt/avon/sdk/kms/kmstest"
	"github.com/avonzt/avon/sdk/plugin"
	"github.com/avonzt/avon/sdk/plugintest"
	pluginv1 "github.com/avonzt/avon/sdk/proto/plugin/v1"
)

func TestMain(m *testing.M) { softhsmtest.Main(m) }

// The plugin links the PKCS#11 library through cgo, and SoftHSM2 finds its
// tokens through SOFTHSM2_CONF (which the core passes to plugins), so the
// tests build with CGO_ENABLED=1 and start the process with that variable;
// otherwise they start it the way plugintest.StartUnconfigured does
// (go-plugin, gRPC only, AutoMTLS, checksum pinned).

var built struct {
	once sync.Once
	bin  plugintest.Binary
	err  error
}

func buildPlugin(t testing.TB) plugintest.Binary {
	t.Helper()
	softhsmtest.Require(t)
	built.once.Do(func() {
		out := filepath.Join(softhsmtest.TempDir(), "kms-hsm")
		gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
		if _, err := os.Stat(gobin); err != nil {
			gobin = "go"
		}
		cmd := exec.Command(gobin, "build", "-o", out, ".")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
		if b, err := cmd.CombinedOutput(); err != nil {
			built.err = fmt.Errorf("build kms-hsm: %v\n%s", err, b)
			return
		}
		data, err := os.ReadFile(out)
		if err != nil {
			built.err = err
			return
		}
		sum := sha256.Sum256(data)
		built.bin = plugintest.Binary{Path: out, SHA256: hex.EncodeToString(sum[:])}
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.bin
}

// startPlugin runs the plugin process, unconfigured; it is killed when the
// test ends.
func startPlugin(t testing.TB, h *softhsmtest.HSM) *plugintest.Started {
	t.Helper()
	bin := buildPlugin(t)
	sum, _ := hex.DecodeString(bin.SHA256)
	cmd := exec.Command(bin.Path)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), plugin.EnvLogLevel + "=info"}, h.Env()...)
	logs := plugintest.LogWriter(t) // closed after the plugin is killed
	c := goplugin.NewClient(&goplugin.ClientConfig{
		HandshakeConfig:  plugin.Handshake,
		VersionedPlugins: plugin.HostPluginSet(plugin.KindKMS),
		Cmd:              cmd,
		SkipHostEnv:      true,
		SecureConfig:     &goplugin.SecureConfig{Checksum: sum, Hash: sha256.New()},
		AllowedProtocols: []goplugin.Protocol{goplugin.ProtocolGRPC},
		AutoMTLS:         true,
		Logger:           hclog.New(&hclog.LoggerOptions{Name: "kms-hsm", Output: logs, Level: hclog.Info}),
		GRPCDialOptions: []grpc.DialOption{grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(plugin.MaxMessageSize), grpc.MaxCallSendMsgSize(plugin.MaxMessageSize))},
	})
	t.Cleanup(c.Kill)
	rpc, err := c.Client()
	if err != nil {
		t.Fatalf("start kms-hsm: %v", err)
	}
	raw, err := rpc.Dispense(string(plugin.KindKMS))
	if err != nil {
		t.Fatalf("dispense: %v", err)
	}
	s := &plugintest.Started{Conn: raw.(*plugin.Conn), Client: c}
	s.Base = pluginv1.NewPluginClient(s.Conn.Conn)
	return s
}

func cfg(t testing.TB, h *softhsmtest.HSM, label, pin string, extra map[string]any) []byte {
	t.Helper()
	v := map[string]any{"module": h.Module, "token_label": label, "pin": pin, "sessions": 4, "wrap_key_label": "avon-wrap", "login_retries": 1}
	for k, x := range extra {
		v[k] = x
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// configured starts the plugin and configures it on token label with a
// fresh in-memory host.
func configured(t testing.TB, h *softhsmtest.HSM, label string) *plugintest.Started {
	t.Helper()
	s := startPlugin(t, h)
	ps, err := s.Configure(t, plugintest.Options{Config: cfg(t, h, label, softhsmtest.PIN, nil)})
	if err != nil || len(ps) > 0 {
		t.Fatalf("configure: %v %v", ps, err)
	}
	return s
}

// The conformance kit through the real plugin process over gRPC, on a real
// SoftHSM2 token: errors, capabilities and every byte cross the process
// boundary.
func TestConformanceThroughPlugin(t *testing.T) {
	h := softhsmtest.Require(t)
	h.InitToken(t, "avon-proc")
	kmstest.Run(t, func(t *testing.T) kms.KMS {
		return kmsrpc.NewClient(configured(t, h, "avon-proc").Conn.Conn)
	}, kmstest.WithoutExporter(), kmstest.WithRandomSource(true))
}

func TestInfo(t *testing.T) {
	h := softhsmtest.Require(t)
	h.InitToken(t, "avon-proc")
	s := configured(t, h, "avon-proc")
	info, err := s.Base.GetInfo(context.Background(), &pluginv1.GetInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	caps := strings.Join(info.GetCapabilities(), ",")
	if info.GetName() != "kms-hsm" || !strings.Contains(caps, "kms.random_source") || strings.Contains(caps, "kms.exporter") {
		t.Fatalf("info: name %q capabilities %q", info.GetName(), caps)
	}
}

// tokenFlags returns the "token flags" line pkcs11-tool prints for label.
func tokenFlags(t *testing.T, h *softhsmtest.HSM, label string) string {
	t.Helper()
	cmd := exec.Command("pkcs11-tool", "--module", h.Module, "--list-token-slots")
	cmd.Env = append(os.Environ(), h.Env()...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("pkcs11-tool --list-token-slots: %v\n%s", err, out)
	}
	var inToken bool
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.SplitN(line, ":", 2)
		if len(f) != 2 {
			continue
		}
		k, v := strings.TrimSpace(f[0]), strings.TrimSpace(f[1])
		switch {
		case k == "token label":
			inToken = v == label
		case k == "token flags" && inToken:
			return v
		}
	}
	t.Fatalf("pkcs11-tool lists no token %q:\n%s", label, out)
	return ""
}

func requirePkcs11Tool(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("pkcs11-tool"); err != nil {
		if os.Getenv("AVON_REQUIRE_SERVICES") == "1" {
			t.Fatal("pkcs11-tool (opensc) not in PATH and AVON_REQUIRE_SERVICES=1")
		}
		t.Skip("pkcs11-tool (opensc) not in PATH")
	}
}

// A wrong PIN is tried once, even with login retries configured, refused
// with a clear error, leaves the plugin unconfigured and the token not
// locked; the right PIN then works in the same process.
func TestWrongPIN(t *testing.T) {
	h := softhsmtest.Require(t)
	requirePkcs11Tool(t)
	h.InitToken(t, "avon-pin")
	if f := tokenFlags(t, h, "avon-pin"); strings.Contains(f, "count low") || strings.Contains(f, "locked") {
		t.Fatalf("fresh token flags: %s", f)
	}
	s := startPlugin(t, h)
	ps, err := s.Configure(t, plugintest.Options{Config: cfg(t, h, "avon-pin", "0000", map[string]any{"login_retries": 5})})
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 1 || ps[0].Attribute != "pin" || !strings.Contains(ps[0].Summary, "PIN incorrect; not retrying so the token is not locked") {
		t.Fatalf("problems %+v, want one on pin saying it is not retried", ps)
	}
	_, err = kmsrpc.NewClient(s.Conn.Conn).GetKey(context.Background(), &kms.GetKeyRequest{ID: "x"})
	if !errors.Is(err, errdef.ErrNotConfigured) {
		t.Fatalf("call after a refused configure: %v", err)
	}
	f := tokenFlags(t, h, "avon-pin")
	if !strings.Contains(f, "user PIN count low") {
		t.Fatalf("token flags %q: the wrong PIN never reached the token, so the test proves nothing", f)
	}
	if strings.Contains(f, "locked") || strings.Contains(f, "final try") {
		t.Fatalf("token flags after one wrong PIN: %s", f)
	}

	ps, err = s.Configure(t, plugintest.Options{Config: cfg(t, h, "avon-pin", softhsmtest.PIN, nil)})
	if err != nil || len(ps) > 0 {
		t.Fatalf("configure with the right PIN: %v %v", ps, err)
	}
	if _, err := kmsrpc.NewClient(s.Conn.Conn).GenerateKey(context.Background(), &kms.GenerateKeyRequest{ID: "after-pin", Algorithm: kms.ECDSAP256}); err != nil {
		t.Fatal(err)
	}
	if f := tokenFlags(t, h, "avon-pin"); strings.Contains(f, "count low") || strings.Contains(f, "locked") {
		t.Fatalf("token flags after a good login: %s", f)
	}
}

func TestConfigProblems(t *testing.T) {
	h := softhsmtest.Require(t)
	cases := map[string]struct {
		conf       []byte
		attr, want string
	}{
		"unknown token": {cfg(t, h, "no-such-token", softhsmtest.PIN, nil), "token_label", `tokens present: `},
		"bad module":    {cfg(t, h, "avon-test", softhsmtest.PIN, map[string]any{"module": "/nonexistent/libpkcs11.so"}), "module", "cannot open the library"},
		"no pin":        {cfg(t, h, "avon-test", "", nil), "pin", "no PIN"},
		"sessions":      {cfg(t, h, "avon-test", softhsmtest.PIN, map[string]any{"sessions": 0}), "sessions", "outside 1..64"},
		"retries":       {cfg(t, h, "avon-test", softhsmtest.PIN, map[string]any{"login_retries": 6}), "login_retries", "outside 0..5"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			s := startPlugin(t, h)
			ps, err := s.Configure(t, plugintest.Options{Config: c.conf})
			if err != nil {
				t.Fatal(err)
			}
			if len(ps) == 0 || ps[0].Attribute != c.attr || !strings.Contains(ps[0].Summary, c.want) {
				t.Fatalf("problems %+v, want one on %s mentioning %q", ps, c.attr, c.want)
			}
		})
	}
	t.Run("labels listed", func(t *testing.T) {
		s := startPlugin(t, h)
		ps, _ := s.Configure(t, plugintest.Options{Config: cfg(t, h, "no-such-token", softhsmtest.PIN, nil)})
		if len(ps) == 0 || !strings.Contains(ps[0].Summary, `"avon-test"`) {
			t.Fatalf("the error does not list the token present: %+v", ps)
		}
	})
}
