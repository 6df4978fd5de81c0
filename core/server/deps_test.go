package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/avonzt/avon/core/api"
	"github.com/avonzt/avon/core/audit"
	"github.com/avonzt/avon/core/calibration"
	"github.com/avonzt/avon/core/rng"
	"github.com/avonzt/avon/core/rng/rngtest"
	"github.com/avonzt/avon/core/store"
	"github.com/avonzt/avon/internal/testsvc/pgtest"
	"github.com/avonzt/avon/internal/testsvc/redistest"
	"github.com/avonzt/avon/sdk/host"
	"github.com/avonzt/avon/sdk/plugintest"
)

func kmsSoftBlock(t testing.TB) string {
	bin := plugintest.Build(t, "github.com/avonzt/avon/plugins/kms-soft")
	t.Setenv("AVON_TEST_KMS_PASSPHRASE", "correct horse battery staple")
	return fmt.Sprintf(`
plugin "kms" "soft" {
  command = %q
  sha256  = %q
  config {
    passphrase     = env("AVON_TEST_KMS_PASSPHRASE")
    kdf_time       = 2
    kdf_memory_kib = 19456
    kdf_threads    = 1
  }
}
`, bin.Path, bin.SHA256)
}

func check(r api.Readiness, name string) api.CheckResult {
	for _, c := range r.Checks {
		if c.Name == name {
			return c
		}
	}
	return api.CheckResult{Name: name, Error: "no such check"}
}

// TestDependenciesFailAndRecover runs the core on a real PostgreSQL and a
// real redis-server, with real kms-soft signing checkpoints, then pauses
// Redis and stops PostgreSQL: /readyz names the dependency, audited
// operations fail closed with a clear error, nothing committed is lost, and
// everything recovers without a restart.
func TestDependenciesFailAndRecover(t *testing.T) {
	pg := pgtest.Start(t)
	rd := redistest.Start(t)
	dsn := pg.CreateDatabase(t, "core")
	dir := t.TempDir()
	cfg := fmt.Sprintf(`
data_dir = "data"
api {
  listen = "127.0.0.1:0"
}
storage "postgres" {
  dsn             = %q
  connect_timeout = "1s"
}
cache "redis" {
  addr    = %q
  timeout = "500ms"
}
audit {
  checkpoint_every = 5
}
`, dsn, rd.Addr()) + kmsSoftBlock(t)
	s, _ := startServer(t, writeConfig(t, dir, cfg))
	c := httpsClient()
	base := "https://" + s.APIAddr()
	code, r := readiness(t, c, base)
	if code != 200 || check(r, "store").Detail != "postgres" || check(r, "cache").Detail != "redis" {
		t.Fatalf("readyz %d %+v", code, r)
	}
	ctx := context.Background()
	for i := 0; i < 9; i++ {
		if err := s.audit.Emit(ctx, "core", host.Event{Action: "test.event", Target: fmt.Sprint(i), Outcome: "success"}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "a signed checkpoint", func() bool { return s.checkpointer.Status().LastSeq >= 5 })

	// Redis paused: the cache check fails naming Redis; the store is fine.
	if err := rd.Pause(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "readyz to name the paused cache", func() bool {
		code, r := readiness(t, c, base)
		cc := check(r, "cache")
		return code == 503 && !cc.Ready && strings.Contains(cc.Error, "cache unavailable") && check(r, "store").Ready
	})
	if err := rd.Resume(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "readyz after Redis resumed", func() bool {
		code, _ := readiness(t, c, base)
		return code == 200
	})

	// PostgreSQL paused (kill -STOP): calls fail within their deadline.
	if err := pg.Pause(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "readyz to name the paused store", func() bool {
		code, r := readiness(t, c, base)
		return code == 503 && !check(r, "store").Ready
	})
	pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
	began := time.Now()
	err := s.audit.Emit(pctx, "core", host.Event{Action: "test.refused", Outcome: "success"})
	pcancel()
	if err == nil {
		t.Fatal("an audit record was reported written while PostgreSQL was paused")
	}
	if d := time.Since(began); d > 5*time.Second {
		t.Errorf("audit emit took %s to fail (deadline 2s)", d)
	}
	t.Logf("audit with PostgreSQL paused: %v (after %s)", err, time.Since(began).Round(time.Millisecond))
	if err := pg.Resume(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "readyz after PostgreSQL resumed", func() bool {
		code, _ := readiness(t, c, base)
		return code == 200
	})

	// PostgreSQL stopped: the store check fails, and an audited operation
	// is refused (its audit record cannot be written).
	if err := pg.StopImmediate(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "readyz to name the stopped store", func() bool {
		code, r := readiness(t, c, base)
		sc := check(r, "store")
		return code == 503 && !sc.Ready && strings.Contains(sc.Error, "unavailable")
	})
	ectx, cancel := context.WithTimeout(ctx, 3*time.Second)
	began = time.Now()
	err = s.audit.Emit(ectx, "core", host.Event{Action: "test.refused", Outcome: "success"})
	cancel()
	if err == nil {
		t.Fatal("an audit record was reported written while PostgreSQL was down")
	}
	if d := time.Since(began); d > 6*time.Second {
		t.Errorf("audit emit took %s to fail (deadline 3s)", d)
	}
	t.Logf("audit with PostgreSQL down: %v (after %s)", err, time.Since(began).Round(time.Millisecond))
	if err := pg.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "readyz after PostgreSQL restarted", func() bool {
		code, _ := readiness(t, c, base)
		return code == 200
	})
	if err := s.audit.Emit(ctx, "core", host.Event{Action: "test.after", Outcome: "success"}); err != nil {
		t.Fatalf("audit after restart: %v", err)
	}
	rep, err := audit.Verify(ctx, s.store, audit.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// core.start + 9 events + test.after, nothing lost, no gap. A write
	// refused during the pause may have committed (its outcome was unknown),
	// so 11 or 12 records, but always one unbroken chain.
	if !rep.OK() || rep.Records < 11 || rep.Records > 12 || rep.CheckpointsVerified < 1 {
		t.Fatalf("audit after the outage: %+v", rep)
	}
}

// TestRNGFailureIsVisible forces a health-test failure of the core DRBG: no
// bytes, /readyz not ready naming the RNG, and an audit record.
func TestRNGFailureIsVisible(t *testing.T) {
	src := rngtest.New("test-os", 1)
	dir := t.TempDir()
	cfgPath := writeConfig(t, dir, `
data_dir = "data"
api {
  listen = "127.0.0.1:0"
}
`)
	s, err := Start(context.Background(), Options{ConfigPath: cfgPath, Diagnostics: io.Discard,
		Logger:     hclog.New(&hclog.LoggerOptions{Output: io.Discard}),
		RNGOptions: []rng.Option{rng.WithEntropy(src)}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop(context.Background())
	c := httpsClient()
	base := "https://" + s.APIAddr()
	if code, r := readiness(t, c, base); code != 200 || !check(r, "rng").Ready {
		t.Fatalf("readyz before %d %+v", code, r)
	}
	src.SetMode(rngtest.Stuck)
	if err := s.rng.Reseed(nil); !errors.Is(err, rng.ErrHealth) {
		t.Fatalf("reseed from a stuck source: %v", err)
	}
	buf := bytes.Repeat([]byte{0xAA}, 64)
	if n, err := s.opts.Rand.Read(buf); err == nil || n != 0 || !bytes.Equal(buf, make([]byte, 64)) {
		t.Fatalf("read after failure: n=%d err=%v buf=%x", n, err, buf[:8])
	}
	code, r := readiness(t, c, base)
	if rc := check(r, "rng"); code != http.StatusServiceUnavailable || rc.Ready || !strings.Contains(rc.Error, "failed closed") {
		t.Fatalf("readyz after failure %d %+v", code, rc)
	}
	waitFor(t, 5*time.Second, "the rng failure in the audit log", func() bool {
		recs, _ := s.audit.List(context.Background(), 0, 100)
		for _, rec := range recs {
			if rec.Action == "rng.failure" && strings.Contains(rec.Reason, "repetition") {
				return true
			}
		}
		return false
	})
}

// TestRedisStorage runs the core with its durable store on Redis: a server
// without AOF fsync is refused unless require_durable = false.
func TestRedisStorage(t *testing.T) {
	rd := redistest.Start(t)
	dir := t.TempDir()
	base := fmt.Sprintf(`
data_dir = "data"
api {
  listen = "127.0.0.1:0"
}
storage "redis" {
  addr = %q
  %%s
}
`, rd.Addr())
	var diags bytes.Buffer
	_, err := Start(context.Background(), Options{ConfigPath: writeConfig(t, dir, fmt.Sprintf(base, "")), Diagnostics: &diags,
		Logger: hclog.New(&hclog.LoggerOptions{Output: io.Discard})})
	if err == nil || !strings.Contains(err.Error(), "appendonly") {
		t.Fatalf("a non-durable Redis was accepted as the store: %v", err)
	}
	s, _ := startServer(t, writeConfig(t, t.TempDir(), fmt.Sprintf(base, "require_durable = false")))
	code, r := readiness(t, httpsClient(), "https://"+s.APIAddr())
	if code != 200 || check(r, "store").Detail != "redis" {
		t.Fatalf("readyz %d %+v", code, r)
	}
	rep, err := audit.Verify(context.Background(), s.store, audit.VerifyOptions{})
	if err != nil || !rep.OK() || rep.Records != 1 {
		t.Fatalf("audit on the redis store: %+v %v", rep, err)
	}
}

// TestAPIGuardedByCalibration checks the calibration guard sits in front of
// the API: a request whose Avon-Timestamp is an hour ahead is refused with
// the reason; health, readiness and metrics stay reachable.
func TestAPIGuardedByCalibration(t *testing.T) {
	s, _ := startServer(t, writeConfig(t, t.TempDir(), `
data_dir = "data"
api {
  listen = "127.0.0.1:0"
}
`))
	c := httpsClient()
	base := "https://" + s.APIAddr()
	req, _ := http.NewRequest("GET", base+"/v1/sessions", nil)
	req.Header.Set(calibration.HeaderTimestamp, time.Now().Add(time.Hour).UTC().Format(time.RFC3339Nano))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), "ahead of calibrated time") ||
		resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("skewed timestamp: %d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	req.Header.Set(calibration.HeaderTimestamp, time.Now().UTC().Format(time.RFC3339Nano))
	if resp, err = c.Do(req); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound { // passes the guard; no such route yet
		t.Fatalf("timestamp within skew: %d", resp.StatusCode)
	}
	req, _ = http.NewRequest("GET", base+"/readyz", nil)
	req.Header.Set(calibration.HeaderTimestamp, "garbage")
	if resp, err = c.Do(req); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("readyz is exempt from the guard: %d", resp.StatusCode)
	}
}

// TestKMSEntropySource mixes a KMS plugin's generator into the DRBG: its
// bytes are fetched ahead and drawn at reseeds; when the plugin dies the
// DRBG keeps serving from the OS and readyz stays ready, naming the source.
func TestKMSEntropySource(t *testing.T) {
	bin := plugintest.Build(t, testPluginPkg)
	dir := t.TempDir()
	s, _ := startServer(t, writeConfig(t, dir, testConfig(bin, "x")+`
rng {
  extra_sources = ["test"]
}
`))
	c := httpsClient()
	base := "https://" + s.APIAddr()
	calls := func() int {
		b, _ := os.ReadFile(filepath.Join(dir, "data", "plugins", "kms-test", "random-calls"))
		n, _ := strconv.Atoi(string(b))
		return n
	}
	sourceOK := func() bool {
		for _, src := range s.rng.Health().Sources {
			if src.Name == "kms.test" {
				return src.OK && src.Samples > 0
			}
		}
		return false
	}
	waitFor(t, 10*time.Second, "kms.test bytes drawn at a reseed", func() bool {
		if err := s.rng.Reseed(nil); err != nil {
			t.Fatalf("reseed: %v", err)
		}
		return sourceOK() && calls() > 0
	})
	if code, r := readiness(t, c, base); code != 200 || !strings.Contains(check(r, "rng").Detail, "kms.test=ok") {
		t.Fatalf("readyz %d %+v", code, check(r, "rng"))
	}
	// The plugin killed for good: reseeds still succeed from the OS.
	inst, _ := s.Plugins().Get("kms", "test")
	s.Plugins().Stop()
	_ = inst
	for i := 0; i < 5; i++ {
		if err := s.rng.Reseed(nil); err != nil {
			t.Fatalf("reseed without the kms source: %v", err)
		}
	}
	buf := make([]byte, 32)
	if _, err := s.opts.Rand.Read(buf); err != nil || bytes.Equal(buf, make([]byte, 32)) {
		t.Fatalf("read without the kms source: %v", err)
	}
	if !s.rng.Health().OK {
		t.Fatalf("rng unhealthy after losing an uncredited source: %+v", s.rng.Health())
	}
}

// TestAuditIntegrityInReadyz rewrites, in the store, a record this core
// appended after its last checkpoint (with a valid recomputed hash): the
// core refuses to sign it and /readyz reports the audit log's integrity.
func TestAuditIntegrityInReadyz(t *testing.T) {
	s, _ := startServer(t, writeConfig(t, t.TempDir(), `
data_dir = "data"
api {
  listen = "127.0.0.1:0"
}
`+kmsSoftBlock(t)))
	ctx := context.Background()
	if _, err := s.checkpointer.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if err := s.audit.Emit(ctx, "core", host.Event{Action: "agent.disable", Target: fmt.Sprint("agent-", i), Outcome: "success"}); err != nil {
			t.Fatal(err)
		}
	}
	recs, err := s.audit.List(ctx, 0, 100)
	if err != nil || len(recs) != 4 {
		t.Fatalf("%d records %v", len(recs), err)
	}
	last := recs[3]
	last.Target = "nobody"
	last.Hash, _ = audit.ComputeHash(last)
	b, _ := json.Marshal(last)
	if _, err := s.store.Put(ctx, audit.RecordKey(last.Seq), b, store.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	hb, _ := json.Marshal(map[string]any{"seq": last.Seq, "hash": last.Hash})
	if _, err := s.store.Put(ctx, "audit/head", hb, store.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.checkpointer.Checkpoint(ctx); !errors.Is(err, audit.ErrBrokenChain) {
		t.Fatalf("checkpoint over a rewritten record: %v", err)
	}
	code, r := readiness(t, httpsClient(), "https://"+s.APIAddr())
	if ac := check(r, "audit"); code != 503 || ac.Ready || !strings.Contains(ac.Error, "rewritten after this core appended it") {
		t.Fatalf("readyz %d %+v", code, ac)
	}
}
