package redisstore

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/avonzt/avon/core/store"
	"github.com/avonzt/avon/internal/testsvc/redistest"
)

// procServer is a redis-server started with extra arguments (redistest
// starts only servers without persistence), for the durability tests: its
// own free loopback port and temporary directory, killed and reaped in
// cleanup, dying with the test binary.
type procServer struct {
	t    testing.TB
	bin  string
	dir  string
	args []string
	port int

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	out    *syncBuffer
}

const (
	procStartAttempts = 5
	procReadyTimeout  = 15 * time.Second
	procReapTimeout   = 5 * time.Second
)

// startProc starts redis-server with args after the fixed ones. A missing
// binary skips the test, unless AVON_REQUIRE_SERVICES=1.
func startProc(t testing.TB, args ...string) *procServer {
	t.Helper()
	bin, err := exec.LookPath(redistest.Binary)
	if err != nil {
		if os.Getenv(redistest.RequireEnv) == "1" {
			t.Fatalf("%s not found in PATH: %v", redistest.Binary, err)
		}
		t.Skipf("skipped: %s not found in PATH (set %s=1 to make this a failure)", redistest.Binary, redistest.RequireEnv)
	}
	p := &procServer{t: t, bin: bin, dir: t.TempDir(), args: args}
	t.Cleanup(p.kill)
	var lastErr error
	for range procStartAttempts {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p.port = l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		if lastErr = p.start(); lastErr == nil {
			return p
		}
		if !strings.Contains(lastErr.Error(), "Address already in use") {
			break
		}
	}
	t.Fatalf("start redis-server: %v", lastErr)
	return nil
}

func (p *procServer) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(p.port)) }

// start runs the server on p.port and p.dir and waits until it answers
// PING (after loading its append-only file).
func (p *procServer) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	args := append([]string{
		"--port", strconv.Itoa(p.port),
		"--bind", "127.0.0.1",
		"--protected-mode", "yes",
		"--save", "",
		"--daemonize", "no",
		"--dir", p.dir,
		"--logfile", "",
	}, p.args...)
	cmd := exec.Command(p.bin, args...)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	p.cmd, p.exited, p.out = cmd, exited, out
	deadline := time.Now().Add(procReadyTimeout)
	for {
		select {
		case <-exited:
			return fmt.Errorf("redis-server exited during start-up: %s", strings.TrimSpace(out.String()))
		default:
		}
		if ping(p.Addr()) == nil {
			return nil
		}
		if time.Now().After(deadline) {
			p.killLocked()
			return fmt.Errorf("redis-server on %s not answering PING within %v: %s", p.Addr(), procReadyTimeout, strings.TrimSpace(out.String()))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ping checks the server answers +PONG (not -LOADING).
func ping(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(500 * time.Millisecond))
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "+PONG\r\n" {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

// kill9 kills the server with SIGKILL (no chance to flush anything) and
// reaps it.
func (p *procServer) kill9() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.killLocked() {
		p.t.Fatalf("redis-server pid %d not reaped within %v of SIGKILL", p.cmd.Process.Pid, procReapTimeout)
	}
}

func (p *procServer) kill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.killLocked()
}

// killLocked kills and reaps the current process; false if it was not
// reaped in time. The caller holds p.mu.
func (p *procServer) killLocked() bool {
	if p.cmd == nil || p.cmd.Process == nil {
		return true
	}
	select {
	case <-p.exited:
		return true
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGCONT)
	_ = p.cmd.Process.Kill()
	select {
	case <-p.exited:
		return true
	case <-time.After(procReapTimeout):
		return false
	}
}

// restart starts the server again on the same port and directory.
func (p *procServer) restart() {
	p.t.Helper()
	var err error
	for range procStartAttempts {
		if err = p.start(); err == nil || !strings.Contains(err.Error(), "Address already in use") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		p.t.Fatalf("restart redis-server: %v", err)
	}
}

var aofArgs = []string{"--appendonly", "yes", "--appendfsync", "always"}

// TestKilledServerKeepsAcknowledgedWrites: on a server with appendonly yes
// and appendfsync always, every acknowledged Put and Delete survives a
// SIGKILL of the server taken while writers are busy, each entry with its
// version, and the counter continues above every version handed out.
//
// Killing the process shows that each write is in the append-only file
// before its reply (without AOF this test fails); it cannot show the fsync,
// which only an operating-system crash would test: there appendfsync
// always is what keeps the writes.
func TestKilledServerKeepsAcknowledgedWrites(t *testing.T) {
	p := startProc(t, aofArgs...)
	logs := &syncBuffer{}
	log := hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Trace})
	s := openTest(t, Options{Addr: p.Addr(), RequireDurable: true, Logger: log})
	if d := s.Durability(); !d.Durable() || d.AppendOnly != "yes" || d.AppendFsync != "always" {
		t.Fatalf("Durability() = %+v on an AOF-always server", d)
	}
	if strings.Contains(logs.String(), "[WARN]") {
		t.Fatalf("warning logged for a durable server: %s", logs.String())
	}
	ctx := context.Background()

	// Serial phase: creates, overwrites, CAS updates and deletes.
	acked := map[string]store.Entry{}
	deleted := map[string]bool{}
	var maxV int64
	put := func(k, v string, o store.PutOptions) {
		t.Helper()
		ver, err := s.Put(ctx, k, []byte(v), o)
		if err != nil {
			t.Fatal(err)
		}
		acked[k] = store.Entry{Key: k, Value: []byte(v), Version: ver}
		delete(deleted, k)
		maxV = max(maxV, ver)
	}
	for i := range 100 {
		put(fmt.Sprintf("serial/%03d", i), fmt.Sprint("v", i), store.PutOptions{Check: true})
	}
	for i := 0; i < 100; i += 3 {
		k := fmt.Sprintf("serial/%03d", i)
		put(k, fmt.Sprint("w", i), store.PutOptions{Check: true, Version: acked[k].Version})
	}
	for i := 1; i < 100; i += 5 {
		k := fmt.Sprintf("serial/%03d", i)
		if err := s.Delete(ctx, k, store.DeleteOptions{Check: true, Version: acked[k].Version}); err != nil {
			t.Fatal(err)
		}
		delete(acked, k)
		deleted[k] = true
	}

	// Busy phase: writers on distinct keys until the server dies.
	const writers, perWriter = 4, 1000
	var mu sync.Mutex
	var wg sync.WaitGroup
	busy := make(chan struct{})
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWriter {
				k := fmt.Sprintf("busy/%d/%04d", w, i)
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				ver, err := s.Put(cctx, k, []byte(k), store.PutOptions{})
				cancel()
				if err != nil {
					return // the server is gone: this write's outcome is unknown
				}
				mu.Lock()
				acked[k] = store.Entry{Key: k, Value: []byte(k), Version: ver}
				maxV = max(maxV, ver)
				n := len(acked)
				mu.Unlock()
				if n == 300 {
					close(busy)
				}
			}
		}()
	}
	select {
	case <-busy:
	case <-time.After(30 * time.Second):
		t.Fatalf("writers did not reach 300 acknowledged entries in 30s")
	}
	p.kill9()
	wg.Wait()
	_ = s.Close()
	t.Logf("%d entries acknowledged, highest version %d; server killed", len(acked), maxV)

	p.restart()
	s2 := openTest(t, Options{Addr: p.Addr(), RequireDurable: true})
	for k, want := range acked {
		e, err := s2.Get(ctx, k)
		if err != nil || e.Version != want.Version || string(e.Value) != string(want.Value) {
			t.Fatalf("acknowledged %s=%q@%d after kill -9: %+v, %v", k, want.Value, want.Version, e, err)
		}
	}
	for k := range deleted {
		if _, err := s2.Get(ctx, k); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("acknowledged delete of %s undone after kill -9: %v", k, err)
		}
	}
	// List agrees with Get: the index survived with the entries.
	listed := map[string]int64{}
	after := ""
	for pages := 0; ; pages++ {
		if pages > 100 {
			t.Fatalf("listing did not end")
		}
		es, err := s2.List(ctx, store.ListOptions{After: after, Limit: 500})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			listed[e.Key] = e.Version
			if e.Version > maxV && !strings.HasPrefix(e.Key, "busy/") {
				t.Fatalf("%s has version %d above the highest acknowledged %d", e.Key, e.Version, maxV)
			}
		}
		if len(es) < 500 {
			break
		}
		after = es[len(es)-1].Key
	}
	for k, want := range acked {
		if listed[k] != want.Version {
			t.Fatalf("List after restart: %s at %d, want %d", k, listed[k], want.Version)
		}
	}
	// The counter continues above every version handed out, including any
	// write that landed without its reply.
	var highest int64
	for _, v := range listed {
		highest = max(highest, v)
	}
	v, err := s2.Put(ctx, "after-restart", nil, store.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if v <= highest || v <= maxV {
		t.Fatalf("first version after restart %d, not above %d (stored) and %d (acknowledged)", v, highest, maxV)
	}
}

// TestRequireDurable: Open refuses each setting that can lose acknowledged
// writes when RequireDurable is set, and otherwise opens with a warning
// that names the setting and the server.
func TestRequireDurable(t *testing.T) {
	p := startProc(t, aofArgs...)
	raw := rawClient(t, p.Addr())
	ctx := context.Background()
	for _, c := range []struct {
		name     string
		set      []string // CONFIG SET name value, undone afterwards
		mentions string
	}{
		{"durable", nil, ""},
		{"appendfsync everysec", []string{"appendfsync", "everysec"}, "appendfsync"},
		{"appendfsync no", []string{"appendfsync", "no"}, "appendfsync"},
		{"appendonly no", []string{"appendonly", "no"}, "appendonly"},
		{"no fsync on rewrite", []string{"no-appendfsync-on-rewrite", "yes"}, "no-appendfsync-on-rewrite"},
		{"allkeys eviction", []string{"maxmemory-policy", "allkeys-lru"}, "maxmemory-policy"},
		{"volatile eviction", []string{"maxmemory-policy", "volatile-lru"}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.set != nil {
				old, err := raw.ConfigGet(ctx, c.set[0]).Result()
				if err != nil {
					t.Fatal(err)
				}
				if err := raw.ConfigSet(ctx, c.set[0], c.set[1]).Err(); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() {
					if err := raw.ConfigSet(ctx, c.set[0], old[c.set[0]]).Err(); err != nil {
						t.Errorf("restore %s: %v", c.set[0], err)
					}
				})
			}
			checkDurabilityOpen(t, p.Addr(), c.mentions)
		})
	}
}

// checkDurabilityOpen opens addr with and without RequireDurable; problem
// is "" for a durable server, else a word the refusal and the warning must
// contain.
func checkDurabilityOpen(t *testing.T, addr, problem string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := Open(ctx, Options{Addr: addr, KeyPrefix: uniquePrefix(), RequireDurable: true})
	if s != nil {
		_ = s.Close()
	}
	switch {
	case problem == "" && err != nil:
		t.Fatalf("RequireDurable refused a durable server: %v", err)
	case problem != "" && (!errors.Is(err, ErrNotDurable) || !strings.Contains(err.Error(), problem) || !strings.Contains(err.Error(), addr)):
		t.Fatalf("RequireDurable: got %v; want ErrNotDurable naming %s and %s", err, problem, addr)
	case problem != "":
		t.Logf("refused: %v", err)
	}

	logs := &syncBuffer{}
	log := hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Trace})
	s = openTest(t, Options{Addr: addr, KeyPrefix: uniquePrefix(), Logger: log})
	warned := strings.Contains(logs.String(), "[WARN]")
	switch {
	case problem == "" && (warned || !s.Durability().Durable()):
		t.Fatalf("durable server: Durability() = %+v, log %q", s.Durability(), logs.String())
	case problem != "" && (!warned || !strings.Contains(logs.String(), problem) || !strings.Contains(logs.String(), addr) || s.Durability().Durable()):
		t.Fatalf("no warning naming %s and %s, or Durability() = %+v; log %q", problem, addr, s.Durability(), logs.String())
	}
	// The store works either way.
	if _, err := s.Put(ctx, "k", nil, store.PutOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestRequireDurableDefaultServer: redistest's server (no persistence) is
// refused.
func TestRequireDurableDefaultServer(t *testing.T) {
	checkDurabilityOpen(t, server(t).Addr(), "appendonly")
}

// TestDurabilityUnchecked: a server that refuses CONFIG cannot be checked:
// refused under RequireDurable, a warning otherwise.
func TestDurabilityUnchecked(t *testing.T) {
	p := startProc(t, append([]string{"--rename-command", "CONFIG", ""}, aofArgs...)...)
	checkDurabilityOpen(t, p.Addr(), "cannot be checked")
	s := openTest(t, Options{Addr: p.Addr(), KeyPrefix: uniquePrefix()})
	if d := s.Durability(); d.Checked || d.Durable() || len(d.Problems) != 1 {
		t.Fatalf("Durability() = %+v; want unchecked with one problem", d)
	}
}
