package pluginhost

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/avonzt/avon/core/store/memstore"
	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/host"
	"github.com/avonzt/avon/sdk/kms"
	sdkplugin "github.com/avonzt/avon/sdk/plugin"
	"github.com/avonzt/avon/sdk/plugintest"
)

func TestMain(m *testing.M) { plugintest.Main(m) }

const testPluginPkg = "github.com/avonzt/avon/core/pluginhost/testdata/testkms"

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type recordingAudit struct {
	mu     sync.Mutex
	events []string
}

func (a *recordingAudit) Emit(_ context.Context, source string, ev host.Event) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.events = append(a.events, source+" "+ev.Action)
	return nil
}

func metricsFor(reg *prometheus.Registry) *Metrics {
	if reg == nil {
		return NewMetrics(nil)
	}
	return NewMetrics(reg)
}

type fixture struct {
	host  *Host
	inst  *Instance
	logs  *syncBuffer
	reg   *prometheus.Registry
	audit *recordingAudit
	dir   string
}

func fastOptions(logs *syncBuffer, reg *prometheus.Registry, a *recordingAudit) Options {
	return Options{
		Logger:           hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Debug}),
		Services:         Services{Store: memstore.New(), Audit: a},
		Metrics:          metricsFor(reg),
		HealthInterval:   100 * time.Millisecond,
		HealthTimeout:    200 * time.Millisecond,
		HealthMisses:     2,
		ExitPollInterval: 20 * time.Millisecond,
		BackoffMin:       50 * time.Millisecond,
		BackoffMax:       200 * time.Millisecond,
		StartTimeout:     20 * time.Second,
	}
}

func startTestPlugin(t *testing.T, cfg string) *fixture {
	t.Helper()
	f := &fixture{logs: &syncBuffer{}, reg: prometheus.NewRegistry(), audit: &recordingAudit{}, dir: t.TempDir()}
	return startWith(t, f, cfg)
}

func startWith(t testing.TB, f *fixture, cfg string) *fixture {
	t.Helper()
	bin := plugintest.Build(t, testPluginPkg)
	opts := fastOptions(f.logs, f.reg, f.audit)
	spec := Spec{Kind: sdkplugin.KindKMS, Name: "test", Path: bin.Path, SHA256: bin.SHA256, DataDir: f.dir}
	f.host = New(opts)
	t.Cleanup(f.host.Stop)
	inst, err := f.host.Add(spec)
	if err != nil {
		t.Fatal(err)
	}
	f.inst = inst
	ctx := context.Background()
	if err := f.host.Launch(ctx); err != nil {
		t.Fatalf("launch: %v", err)
	}
	inst.SetConfig([]byte(cfg))
	if err := f.host.Configure(ctx); err != nil {
		t.Fatalf("configure: %v", err)
	}
	return f
}

// waitFor polls cond every 20ms for at most d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s", d, what)
}

func processGone(pid int) bool {
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

func TestCallsAndTypedErrors(t *testing.T) {
	f := startTestPlugin(t, `{"label":"L","size":1}`)
	k := f.inst.KMS()
	ctx := context.Background()
	r, err := k.GetKey(ctx, &kms.GetKeyRequest{ID: "abc"})
	if err != nil {
		t.Fatal(err)
	}
	if r.Key.ID != "abc" || r.Key.Labels["label"] != "L" || r.Key.Algorithm != kms.Ed25519 {
		t.Fatalf("unexpected key %+v", r.Key)
	}
	_, err = k.GetKey(ctx, &kms.GetKeyRequest{ID: "missing"})
	if !errors.Is(err, kms.ErrKeyNotFound) {
		t.Fatalf("want ErrKeyNotFound across the boundary, got %v", err)
	}
	if !strings.Contains(err.Error(), `get key "missing"`) {
		t.Fatalf("plugin's message lost: %v", err)
	}
	_, err = k.Sign(ctx, &kms.SignRequest{ID: "x"})
	if !errors.Is(err, errdef.ErrNotImplemented) {
		t.Fatalf("want ErrNotImplemented, got %v", err)
	}
	// Storage round trip lands in the plugin's namespace only.
	r, err = k.GetKey(ctx, &kms.GetKeyRequest{ID: "storage"})
	if err != nil || r.Key.ID != "storage" || r.Key.Labels["version"] == "" {
		t.Fatalf("storage round trip: %+v %v", r, err)
	}
	e, err := f.host.opts.Services.Store.Get(ctx, "plugins/kms/test/k")
	if err != nil || string(e.Value) != "storage" {
		t.Fatalf("namespaced key not in the core store: %+v %v", e, err)
	}
	if _, err := k.GetKey(ctx, &kms.GetKeyRequest{ID: "audit"}); err != nil {
		t.Fatal(err)
	}
	f.audit.mu.Lock()
	got := strings.Join(f.audit.events, ",")
	f.audit.mu.Unlock()
	if got != "kms.test testkms.audit" {
		t.Fatalf("audit events = %q", got)
	}
	// Metrics count calls and errors per method.
	if n := testutil.ToFloat64(f.host.metrics.calls.WithLabelValues("kms", "test", "GetKey")); n != 4 {
		t.Fatalf("calls_total{GetKey} = %v, want 4", n)
	}
	if n := testutil.ToFloat64(f.host.metrics.errors.WithLabelValues("kms", "test", "GetKey")); n != 1 {
		t.Fatalf("call_errors_total{GetKey} = %v, want 1", n)
	}
	// The plugin's own log line is re-emitted under plugin.kms.test.
	waitFor(t, 5*time.Second, "plugin log line", func() bool {
		return strings.Contains(f.logs.String(), "plugin.kms.test: testkms configured")
	})
	info := f.inst.Info()
	if info.Name != "testkms" || info.Version != "1.2.3" || info.Kind != "kms" {
		t.Fatalf("info = %+v", info)
	}
}

func TestDeadlinePropagates(t *testing.T) {
	f := startTestPlugin(t, `{"label":"L","size":1}`)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := f.inst.KMS().GetKey(ctx, &kms.GetKeyRequest{ID: "hang"})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("want DeadlineExceeded, got %v", err)
	}
	if time.Since(start) > 10*time.Second {
		t.Fatalf("deadline not honoured: %s", time.Since(start))
	}
}

func TestCrashRestartsAndRecovers(t *testing.T) {
	f := startTestPlugin(t, `{"label":"L","size":1}`)
	k := f.inst.KMS()
	ctx := context.Background()
	pid := f.inst.Status().PID
	if pid <= 0 {
		t.Fatalf("no pid: %+v", f.inst.Status())
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// A call while it is down fails fast with a typed error naming it.
	waitFor(t, 5*time.Second, "plugin seen as down", func() bool { return f.inst.Status().State != StateRunning })
	start := time.Now()
	_, err := k.GetKey(ctx, &kms.GetKeyRequest{ID: "abc"})
	var ue *UnavailableError
	if err != nil {
		if !errors.As(err, &ue) || ue.Plugin != "kms.test" || !errors.Is(err, errdef.ErrPluginUnavailable) || !errors.Is(err, ErrUnavailable) {
			t.Fatalf("want *UnavailableError for kms.test, got %T %v", err, err)
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("call to a dead plugin took %s; must fail fast", d)
		}
	}
	waitFor(t, 10*time.Second, "restart", func() bool {
		st := f.inst.Status()
		return st.State == StateRunning && st.Restarts == 1 && st.PID != pid
	})
	if _, err := k.GetKey(ctx, &kms.GetKeyRequest{ID: "abc"}); err != nil {
		t.Fatalf("call after restart: %v", err)
	}
	if n := testutil.ToFloat64(f.host.metrics.restarts.WithLabelValues("kms", "test")); n != 1 {
		t.Fatalf("restarts_total = %v", n)
	}
	if !processGone(pid) {
		t.Fatalf("killed process %d still exists (zombie?)", pid)
	}
	if !strings.Contains(f.logs.String(), "plugin process exited") {
		t.Fatalf("crash not logged:\n%s", f.logs.String())
	}
}

func TestCrashDuringCall(t *testing.T) {
	f := startTestPlugin(t, `{"label":"L","size":1}`)
	_, err := f.inst.KMS().GetKey(context.Background(), &kms.GetKeyRequest{ID: "crash"})
	if !errors.Is(err, errdef.ErrPluginUnavailable) {
		t.Fatalf("want plugin unavailable when it dies mid-call, got %v", err)
	}
	waitFor(t, 10*time.Second, "restart after crash", func() bool {
		st := f.inst.Status()
		return st.State == StateRunning && st.Restarts >= 1
	})
}

func TestHealth(t *testing.T) {
	f := startTestPlugin(t, `{"label":"L","size":1}`)
	if err := os.WriteFile(filepath.Join(f.dir, "unhealthy"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "unhealthy state", func() bool {
		st := f.inst.Status()
		return !st.Healthy && st.Message == "marked unhealthy"
	})
	if n := testutil.ToFloat64(f.host.metrics.up.WithLabelValues("kms", "test")); n != 0 {
		t.Fatalf("up = %v while unhealthy", n)
	}
	os.Remove(filepath.Join(f.dir, "unhealthy"))
	waitFor(t, 5*time.Second, "healthy again", func() bool { return f.inst.Status().Healthy })

	// A plugin that stops answering health pings is killed and restarted.
	pid := f.inst.Status().PID
	if err := os.WriteFile(filepath.Join(f.dir, "hang-health"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "hung plugin killed", func() bool { return f.inst.Status().PID != pid })
	os.Remove(filepath.Join(f.dir, "hang-health"))
	waitFor(t, 10*time.Second, "restart of hung plugin", func() bool {
		st := f.inst.Status()
		return st.State == StateRunning && st.Healthy && st.Restarts >= 1
	})
	if !processGone(pid) {
		t.Fatalf("hung process %d still exists", pid)
	}
}

func TestStopLeavesNoProcess(t *testing.T) {
	f := startTestPlugin(t, `{"label":"L","size":1}`)
	pid := f.inst.Status().PID
	f.host.Stop()
	if !processGone(pid) {
		t.Fatalf("plugin process %d survived Stop", pid)
	}
	_, err := f.inst.KMS().GetKey(context.Background(), &kms.GetKeyRequest{ID: "a"})
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("call after Stop: %v", err)
	}
	f.host.Stop() // idempotent
}

func TestChecksumPinning(t *testing.T) {
	bin := plugintest.Build(t, testPluginPkg)
	// A "plugin" that would leave a mark if it ever ran.
	dir := t.TempDir()
	marker := filepath.Join(dir, "ran")
	script := filepath.Join(dir, "evil")
	if err := os.WriteFile(script, []byte("#!/bin/sh\ntouch "+marker+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		path    string
		pin     string
		require bool
		want    error
		both    bool // error names both hashes
	}{
		{name: "tampered binary", path: script, pin: bin.SHA256, want: ErrChecksumMismatch, both: true},
		{name: "malformed pin", path: bin.Path, pin: "abc", want: ErrChecksumMismatch},
		{name: "pin required", path: script, pin: "", require: true, want: ErrChecksumRequired},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			logs := &syncBuffer{}
			opts := fastOptions(logs, nil, &recordingAudit{})
			opts.RequireChecksums = tc.require
			h := New(opts)
			defer h.Stop()
			if _, err := h.Add(Spec{Kind: sdkplugin.KindKMS, Name: "x", Path: tc.path, SHA256: tc.pin, DataDir: dir}); err != nil {
				t.Fatal(err)
			}
			err := h.Launch(context.Background())
			if !errors.Is(err, tc.want) {
				t.Fatalf("want %v, got %v", tc.want, err)
			}
			if tc.both {
				actual, _ := FileSHA256(tc.path)
				if !strings.Contains(err.Error(), tc.pin) || !strings.Contains(err.Error(), actual) {
					t.Fatalf("error must name both hashes: %v", err)
				}
			}
			if _, err := os.Stat(marker); err == nil {
				t.Fatal("the refused binary was executed")
			}
		})
	}
}

func TestKindMismatchAndBadConfig(t *testing.T) {
	bin := plugintest.Build(t, testPluginPkg)
	h := New(fastOptions(&syncBuffer{}, nil, &recordingAudit{}))
	defer h.Stop()
	if _, err := h.Add(Spec{Kind: sdkplugin.KindPQC, Name: "x", Path: bin.Path, SHA256: bin.SHA256, DataDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	if err := h.Launch(context.Background()); !errors.Is(err, ErrKindMismatch) {
		t.Fatalf("want ErrKindMismatch, got %v", err)
	}

	h2 := New(fastOptions(&syncBuffer{}, nil, &recordingAudit{}))
	defer h2.Stop()
	inst, err := h2.Add(Spec{Kind: sdkplugin.KindKMS, Name: "x", Path: bin.Path, SHA256: bin.SHA256, DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if err := h2.Launch(context.Background()); err != nil {
		t.Fatal(err)
	}
	problems, err := inst.Validate(context.Background(), []byte(`{"label":"L","size":0}`))
	if err != nil || len(problems) != 1 || problems[0].Attribute != "size" {
		t.Fatalf("validate: %v %v", problems, err)
	}
	inst.SetConfig([]byte(`{"label":"L","size":-1}`))
	pid := inst.Status().PID
	err = h2.Configure(context.Background())
	var ce *ConfigError
	if !errors.As(err, &ce) || !errors.Is(err, ErrConfigRejected) || !strings.Contains(err.Error(), "size must be positive") {
		t.Fatalf("want *ConfigError, got %v", err)
	}
	if !processGone(pid) {
		t.Fatal("plugin left running after its configuration was rejected")
	}
}

func TestDependencyErrors(t *testing.T) {
	bin := plugintest.Build(t, testPluginPkg)
	h := New(fastOptions(&syncBuffer{}, nil, &recordingAudit{}))
	defer h.Stop()
	for _, s := range []Spec{
		{Kind: sdkplugin.KindKMS, Name: "a", Uses: map[string][]string{"pqc": {"nope"}}},
	} {
		s.Path, s.SHA256, s.DataDir = bin.Path, bin.SHA256, t.TempDir()
		if _, err := h.Add(s); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.Launch(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := h.Configure(context.Background()); !errors.Is(err, ErrDependency) {
		t.Fatalf("want ErrDependency, got %v", err)
	}
}

// TestDependencyOrderListUses: every name of a list-valued uses counts for
// ordering and cycles, not only the default.
func TestDependencyOrderListUses(t *testing.T) {
	bin := plugintest.Build(t, testPluginPkg)
	for _, tc := range []struct {
		name  string
		specs []Spec
		cycle bool
	}{
		{"order", []Spec{
			{Kind: sdkplugin.KindCA, Name: "c", Uses: map[string][]string{"kms": {"soft", "hsm"}}},
			{Kind: sdkplugin.KindKMS, Name: "soft"},
			{Kind: sdkplugin.KindKMS, Name: "hsm"},
		}, false},
		{"cycle through the second name", []Spec{
			{Kind: sdkplugin.KindCA, Name: "c", Uses: map[string][]string{"kms": {"soft", "hsm"}}},
			{Kind: sdkplugin.KindKMS, Name: "soft"},
			{Kind: sdkplugin.KindKMS, Name: "hsm", Uses: map[string][]string{"ca": {"c"}}},
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := New(fastOptions(&syncBuffer{}, nil, &recordingAudit{}))
			defer h.Stop()
			for _, s := range tc.specs {
				s.Path, s.SHA256, s.DataDir = bin.Path, bin.SHA256, t.TempDir()
				if _, err := h.Add(s); err != nil {
					t.Fatal(err)
				}
			}
			order, err := h.dependencyOrder()
			if tc.cycle {
				if !errors.Is(err, ErrDependency) || !strings.Contains(err.Error(), "cycle") {
					t.Fatalf("want a cycle, got %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			pos := map[string]int{}
			for n, i := range order {
				pos[i.ID()] = n
			}
			if pos["ca.c"] < pos["kms.soft"] || pos["ca.c"] < pos["kms.hsm"] {
				t.Fatalf("order %v", pos)
			}
		})
	}
}
