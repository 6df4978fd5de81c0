package embedded

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/avonzt/avon/core/store"
	"github.com/avonzt/avon/core/store/storetest"
)

// crashEnv, when set to a database path, turns the test binary into the
// writer child of TestKilledProcessLosesNoCommit.
const crashEnv = "AVON_EMBEDDED_CRASH_CHILD"

func TestMain(m *testing.M) {
	if path := os.Getenv(crashEnv); path != "" {
		os.Exit(crashChild(path))
	}
	os.Exit(m.Run())
}

func openTest(t testing.TB, path string, opts ...Option) *Store {
	t.Helper()
	s, err := Open(context.Background(), path, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.KV {
		return openTest(t, filepath.Join(t.TempDir(), "avon.db"))
	})
}

func TestReopenPersists(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "avon.db")
	s := openTest(t, path)
	want := map[string]int64{}
	var last int64
	for i := range 20 {
		k := fmt.Sprintf("k/%02d", i)
		v, err := s.Put(ctx, k, []byte("v"+k), store.PutOptions{})
		if err != nil {
			t.Fatal(err)
		}
		want[k], last = v, v
	}
	if err := s.Delete(ctx, "k/00", store.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	delete(want, "k/00")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openTest(t, path)
	es, err := s.List(ctx, store.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != len(want) {
		t.Fatalf("after reopen %d keys, want %d", len(es), len(want))
	}
	for _, e := range es {
		if e.Version != want[e.Key] || string(e.Value) != "v"+e.Key {
			t.Fatalf("after reopen %+v, want version %d", e, want[e.Key])
		}
	}
	// The version sequence survives too: no version is handed out twice.
	v, err := s.Put(ctx, "k/00", nil, store.PutOptions{Check: true})
	if err != nil || v <= last {
		t.Fatalf("first version after reopen %d, last before %d (%v)", v, last, err)
	}
	if sv, err := s.SchemaVersion(ctx); err != nil || sv != len(migrations) {
		t.Fatalf("schema version %d, want %d (%v)", sv, len(migrations), err)
	}
}

func TestFilesAndSettings(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	dir := filepath.Join(root, "data", "store")
	path := filepath.Join(dir, "avon.db")
	s := openTest(t, path)
	if _, err := s.Put(ctx, "k", []byte("v"), store.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	// While open, the WAL and shared-memory files exist; all are private.
	for p, want := range map[string]os.FileMode{
		filepath.Join(root, "data"): 0o700,
		dir:                         0o700,
		path:                        0o600,
		path + "-wal":               0o600,
		path + "-shm":               0o600,
	} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != want {
			t.Errorf("%s: mode %o, want %o", p, st.Mode().Perm(), want)
		}
	}
	// Every connection runs with the durable settings; readers cannot write.
	var mode string
	var sync int
	if err := s.r.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("reader journal_mode %q (%v)", mode, err)
	}
	if err := s.w.QueryRowContext(ctx, `PRAGMA synchronous`).Scan(&sync); err != nil || sync != 2 {
		t.Fatalf("writer synchronous %d (%v), want 2 (FULL)", sync, err)
	}
	if _, err := s.r.ExecContext(ctx, `DELETE FROM kv`); err == nil {
		t.Fatal("a reader connection could write")
	}
	if got := s.Path(); got != path {
		t.Fatalf("Path() = %q", got)
	}
}

func TestOpenRefuses(t *testing.T) {
	ctx := context.Background()
	t.Run("not a database", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "avon.db")
		junk := []byte(strings.Repeat("this is not an SQLite database file. ", 200))
		if err := os.WriteFile(path, junk, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Open(ctx, path)
		if err == nil || !strings.Contains(err.Error(), "open embedded store "+path) {
			t.Fatalf("want a wrapped open error, got %v", err)
		}
		got, _ := os.ReadFile(path)
		if string(got) != string(junk) {
			t.Fatal("Open modified a file that is not a database")
		}
	})
	t.Run("newer schema", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "avon.db")
		s := openTest(t, path)
		if _, err := s.w.ExecContext(ctx, `INSERT INTO schema_migrations (version) VALUES (999)`); err != nil {
			t.Fatal(err)
		}
		_ = s.Close()
		if _, err := Open(ctx, path); err == nil || !strings.Contains(err.Error(), "newer than this binary") {
			t.Fatalf("want refusal of a newer schema, got %v", err)
		}
	})
	t.Run("directory in the way", func(t *testing.T) {
		path := t.TempDir()
		if _, err := Open(ctx, path); err == nil {
			t.Fatal("opened a directory as a database")
		}
	})
	t.Run("empty path", func(t *testing.T) {
		if _, err := Open(ctx, ""); err == nil {
			t.Fatal("opened an empty path")
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := Open(cctx, filepath.Join(t.TempDir(), "avon.db")); !errors.Is(err, context.Canceled) {
			t.Fatalf("want context.Canceled, got %v", err)
		}
	})
}

func TestOptions(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "avon.db"), WithReaders(1), WithBusyTimeout(250*time.Millisecond))
	var ms int
	if err := s.w.QueryRowContext(context.Background(), `PRAGMA busy_timeout`).Scan(&ms); err != nil || ms != 250 {
		t.Fatalf("busy_timeout %d (%v), want 250", ms, err)
	}
	if got := s.r.Stats().MaxOpenConnections; got != 1 {
		t.Fatalf("readers %d, want 1", got)
	}
}

// TestCloseWhileBusy closes the store under concurrent callers: each call
// either succeeds or fails with ErrClosed, nothing hangs or panics.
func TestCloseWhileBusy(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "avon.db"))
	ctx := context.Background()
	var wg sync.WaitGroup
	var bad atomic.Value
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				k := fmt.Sprintf("w%d/%d", w, i%10)
				var err error
				if i%2 == 0 {
					_, err = s.Put(ctx, k, []byte("v"), store.PutOptions{})
				} else {
					_, err = s.List(ctx, store.ListOptions{Prefix: "w"})
				}
				if errors.Is(err, store.ErrClosed) {
					return
				}
				if err != nil {
					bad.Store(err)
					return
				}
			}
		}()
	}
	for {
		v, err := s.Get(ctx, "w0/0")
		if err == nil && v.Version > 0 {
			break
		}
		runtime.Gosched()
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if err := bad.Load(); err != nil {
		t.Fatalf("call racing Close: %v", err)
	}
}

// TestNoGoroutineLeak: Close stops every goroutine the store started.
func TestNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	s, err := Open(context.Background(), filepath.Join(t.TempDir(), "avon.db"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	for i := range 50 {
		if _, err := s.Put(ctx, "k"+strconv.Itoa(i), nil, store.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Get(ctx, "k"+strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Goroutines end asynchronously after Close; wait for them, bounded.
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		t.Fatalf("%d goroutines after Close, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}

// crashChild opens the store and writes until killed: several goroutines
// put their own keys, and a CAS loop increments a counter, so the kill lands
// on transactions in flight. A line goes to stdout only after the write
// returned: "OK <key> <version> <value>". It returns an exit code.
func crashChild(path string) int {
	ctx := context.Background()
	s, err := Open(ctx, path)
	if err != nil {
		fmt.Println("ERR", err)
		return 1
	}
	var mu sync.Mutex // one line per write(2)
	report := func(format string, a ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Printf(format+"\n", a...)
	}
	const limit = 20000 // bounded even if the parent never kills us
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range limit {
				k := fmt.Sprintf("crash/%d/%06d", w, i)
				v, err := s.Put(ctx, k, []byte("value-"+k), store.PutOptions{Check: true})
				if err != nil {
					report("ERR put %s: %v", k, err)
					return
				}
				report("OK %s %d value-%s", k, v, k)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range limit {
			ops := make([]store.Op, 3)
			for j := range ops {
				ops[j] = store.Op{Key: fmt.Sprintf("crashb/%06d/%d", i, j), Value: []byte(fmt.Sprintf("b%d-%d", i, j)), Check: true}
			}
			vs, err := s.Apply(ctx, ops)
			if err != nil {
				report("ERR apply %d: %v", i, err)
				return
			}
			report("BATCH %d %d %d %d", i, vs[0], vs[1], vs[2])
		}
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		n := 0
		for range limit {
			e, err := s.Get(ctx, "counter")
			var ver int64
			if err == nil {
				ver = e.Version
			} else if !errors.Is(err, store.ErrNotFound) {
				report("ERR get counter: %v", err)
				return
			}
			v, err := s.Put(ctx, "counter", []byte(strconv.Itoa(n+1)), store.PutOptions{Check: true, Version: ver})
			if err != nil {
				report("ERR cas counter: %v", err)
				return
			}
			n++
			report("OK counter %d %d", v, n)
		}
	}()
	wg.Wait()
	return 0
}

// TestKilledProcessLosesNoCommit re-executes the test binary as a writer,
// SIGKILLs it while it writes, reopens the file and finds every write the
// child reported committed, with its version and value.
func TestKilledProcessLosesNoCommit(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	path := filepath.Join(t.TempDir(), "avon.db")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashEnv+"="+path)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Bound the test even if the child stops writing: kill it after a few
	// seconds whatever happened.
	killed := make(chan struct{})
	var killOnce sync.Once
	kill := func() {
		killOnce.Do(func() {
			_ = cmd.Process.Signal(syscall.SIGKILL)
			close(killed)
		})
	}
	timer := time.AfterFunc(10*time.Second, kill)
	defer timer.Stop()

	type commit struct {
		version int64
		value   string
	}
	committed := map[string]commit{}
	batches := map[int][3]int64{}
	var counter commit
	const want = 400 // kill after this many reported commits
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 4 && f[0] == "OK" && f[1] == "counter":
			v, _ := strconv.ParseInt(f[2], 10, 64)
			counter = commit{v, f[3]}
		case len(f) == 4 && f[0] == "OK":
			v, _ := strconv.ParseInt(f[2], 10, 64)
			committed[f[1]] = commit{v, f[3]}
		case len(f) == 5 && f[0] == "BATCH":
			i, _ := strconv.Atoi(f[1])
			var vs [3]int64
			for j := range vs {
				vs[j], _ = strconv.ParseInt(f[2+j], 10, 64)
			}
			batches[i] = vs
		default:
			kill()
			t.Fatalf("child: %s", sc.Text())
		}
		if len(committed) >= want {
			kill() // mid-stream: other writes are in flight
			break
		}
	}
	kill()
	<-killed
	_ = cmd.Wait()
	if st, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !st.Signaled() || st.Signal() != syscall.SIGKILL {
		t.Fatalf("child was not killed by SIGKILL: %v", cmd.ProcessState)
	}
	if len(committed) < 50 {
		t.Fatalf("child reported only %d commits before it was killed", len(committed))
	}

	s := openTest(t, path)
	ctx := context.Background()
	var maxV int64
	for k, c := range committed {
		e, err := s.Get(ctx, k)
		if err != nil {
			t.Fatalf("committed %s lost after SIGKILL: %v", k, err)
		}
		if e.Version != c.version || string(e.Value) != c.value {
			t.Fatalf("committed %s changed: %q@%d, want %q@%d", k, e.Value, e.Version, c.value, c.version)
		}
		maxV = max(maxV, c.version)
	}
	// Every reported batch is there whole; every batch on disk, reported
	// or not, is there whole or not at all.
	onDisk := map[int]int{}
	var es []store.Entry
	for after := ""; ; { // at most 3*limit keys: bounded
		page, err := s.List(ctx, store.ListOptions{Prefix: "crashb/", After: after, Limit: store.MaxLimit})
		if err != nil {
			t.Fatal(err)
		}
		es = append(es, page...)
		if len(page) < store.MaxLimit {
			break
		}
		after = page[len(page)-1].Key
	}
	for _, e := range es {
		var i, j int
		if _, err := fmt.Sscanf(e.Key, "crashb/%06d/%d", &i, &j); err != nil || string(e.Value) != fmt.Sprintf("b%d-%d", i, j) {
			t.Fatalf("batch entry %s = %q after SIGKILL", e.Key, e.Value)
		}
		onDisk[i]++
		if vs, ok := batches[i]; ok && e.Version != vs[j] {
			t.Fatalf("batch entry %s at version %d, reported %d", e.Key, e.Version, vs[j])
		}
		maxV = max(maxV, e.Version)
	}
	for i, n := range onDisk {
		if n != 3 {
			t.Fatalf("batch %d has %d of its 3 keys after SIGKILL", i, n)
		}
	}
	for i := range batches {
		if onDisk[i] != 3 {
			t.Fatalf("reported batch %d lost after SIGKILL", i)
		}
	}
	if counter.version != 0 {
		e, err := s.Get(ctx, "counter")
		if err != nil {
			t.Fatalf("counter lost: %v", err)
		}
		// The counter may have moved past the last reported value (a
		// commit whose line was never read), never below it.
		n, _ := strconv.Atoi(string(e.Value))
		want, _ := strconv.Atoi(counter.value)
		if e.Version < counter.version || n < want {
			t.Fatalf("counter %d@%d, last reported %d@%d", n, e.Version, want, counter.version)
		}
		maxV = max(maxV, counter.version)
	}
	v, err := s.Put(ctx, "after-crash", nil, store.PutOptions{})
	if err != nil || v <= maxV {
		t.Fatalf("version after recovery %d, reported up to %d (%v)", v, maxV, err)
	}
	t.Logf("%d keyed commits, %d batches (%d on disk) and counter=%s@%d verified after SIGKILL", len(committed), len(batches), len(onDisk), counter.value, counter.version)
}

func benchStore(b *testing.B) *Store {
	b.Helper()
	return openTest(b, filepath.Join(b.TempDir(), "avon.db"))
}

func opsPerSec(b *testing.B) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

// BenchmarkPut: unconditional 256-byte writes, each a durable commit.
func BenchmarkPut(b *testing.B) {
	s := benchStore(b)
	ctx := context.Background()
	val := make([]byte, 256)
	i := 0
	for b.Loop() {
		if _, err := s.Put(ctx, "bench/"+strconv.Itoa(i%1000), val, store.PutOptions{}); err != nil {
			b.Fatal(err)
		}
		i++
	}
	opsPerSec(b)
}

// BenchmarkPutCAS: checked updates of one key (read-free: the version is
// carried from the previous Put).
func BenchmarkPutCAS(b *testing.B) {
	s := benchStore(b)
	ctx := context.Background()
	val := make([]byte, 256)
	v, err := s.Put(ctx, "bench/cas", val, store.PutOptions{})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if v, err = s.Put(ctx, "bench/cas", val, store.PutOptions{Check: true, Version: v}); err != nil {
			b.Fatal(err)
		}
	}
	opsPerSec(b)
}

// BenchmarkPutParallel: writers from every P share the one write connection.
func BenchmarkPutParallel(b *testing.B) {
	s := benchStore(b)
	ctx := context.Background()
	val := make([]byte, 256)
	var n atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			if _, err := s.Put(ctx, "bench/"+strconv.FormatInt(i%1000, 10), val, store.PutOptions{}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	opsPerSec(b)
}

func fill(b *testing.B, s *Store, n int) {
	b.Helper()
	for i := range n {
		if _, err := s.Put(context.Background(), "bench/"+strconv.Itoa(i), make([]byte, 256), store.PutOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGet: point reads of 256-byte values among 1000 keys.
func BenchmarkGet(b *testing.B) {
	s := benchStore(b)
	fill(b, s, 1000)
	ctx := context.Background()
	i := 0
	for b.Loop() {
		if _, err := s.Get(ctx, "bench/"+strconv.Itoa(i%1000)); err != nil {
			b.Fatal(err)
		}
		i++
	}
	opsPerSec(b)
}

// BenchmarkGetParallel: point reads from every P over the reader pool.
func BenchmarkGetParallel(b *testing.B) {
	s := benchStore(b)
	fill(b, s, 1000)
	ctx := context.Background()
	var n atomic.Int64
	b.ResetTimer() // the fill's 1000 durable commits are not reads
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			if _, err := s.Get(ctx, "bench/"+strconv.FormatInt(i%1000, 10)); err != nil {
				b.Error(err)
				return
			}
		}
	})
	opsPerSec(b)
}

// BenchmarkList100: pages of 100 entries.
func BenchmarkList100(b *testing.B) {
	s := benchStore(b)
	fill(b, s, 1000)
	ctx := context.Background()
	for b.Loop() {
		es, err := s.List(ctx, store.ListOptions{Prefix: "bench/", Limit: 100})
		if err != nil || len(es) != 100 {
			b.Fatal(len(es), err)
		}
	}
	opsPerSec(b)
}

// BenchmarkGetBetweenWrites: point reads of 2 KiB values among 1000 keys,
// each read right after a commit (the pattern of a busy core: every write
// makes the readers' page caches stale). Only the reads are timed.
func BenchmarkGetBetweenWrites(b *testing.B) {
	s := benchStore(b)
	ctx := context.Background()
	val := make([]byte, 2048)
	for i := range 1000 {
		if _, err := s.Put(ctx, "bench/"+strconv.Itoa(i), val, store.PutOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	i := 0
	for b.Loop() {
		b.StopTimer()
		if _, err := s.Put(ctx, "bench/w"+strconv.Itoa(i%100), val, store.PutOptions{}); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if _, err := s.Get(ctx, "bench/"+strconv.Itoa(i*7%1000)); err != nil {
			b.Fatal(err)
		}
		i++
	}
	opsPerSec(b)
}
