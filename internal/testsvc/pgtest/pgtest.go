// Package pgtest starts a real PostgreSQL cluster for tests: initdb into a
// private temporary directory, a postmaster listening only on 127.0.0.1 on a
// free port (and on a unix socket inside that directory), trust
// authentication for the superuser "avon", UTF8 with the C locale, fsync on.
//
// The server binaries (initdb, pg_ctl, postgres) come from PATH, or else from
// the newest /usr/lib/postgresql/*/bin. When they are missing the test is
// skipped with the reason, unless AVON_REQUIRE_SERVICES=1 (CI), where it
// fails. PostgreSQL refuses to run as root: under euid 0 every server
// command runs as the user "postgres" through runuser, in a directory that
// user owns.
//
// A cluster costs about a second to create, so a package starts one and
// shares it: call StartMain once from TestMain, hand its error to Need in
// each test, and give each test its own database with CreateDatabase.
// Start(t) is the one-off form, stopped by t.Cleanup. The fault methods
// (Stop, StopImmediate, Start, Pause, Resume) act on the whole cluster, so a
// package whose tests use them must not run those tests in parallel with
// others on the same server.
//
// Clusters left behind by a test binary that was killed before its cleanup
// ran are stopped and removed by the next StartMain or Start.
//
// It is for tests only and must not be imported by production code.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// RequireEnv names the environment variable that turns a missing server
// into a test failure instead of a skip.
const RequireEnv = "AVON_REQUIRE_SERVICES"

// Superuser is the cluster's superuser; it connects without a password.
const Superuser = "avon"

// ErrMissing is wrapped by the error StartMain returns when a prerequisite
// (the server binaries, runuser or the postgres user under root) is absent.
var ErrMissing = errors.New("pgtest: PostgreSQL cannot be started here")

const (
	dirPrefix     = "avon-pgtest-"
	ownerFile     = "owner.pid"
	portAttempts  = 5
	startTimeout  = 30 * time.Second
	stopTimeout   = 30 * time.Second
	createTimeout = 30 * time.Second
)

// Server is a running (or stopped, or paused) cluster. Its methods are safe
// for concurrent use.
type Server struct {
	bin     string // directory holding initdb, pg_ctl, postgres
	dir     string // private root: data/, sockets, server.log
	data    string
	logPath string
	asUser  *user.User // non-nil under root: run server commands as this user
	port    int

	mu      sync.Mutex // serializes start, stop, pause and resume
	running bool
	paused  []int // pids stopped by Pause

	dbs atomic.Int64 // CreateDatabase counter, for unique names
}

// Start creates and starts a cluster for one test, stopped and removed by
// t.Cleanup. A missing prerequisite skips the test (fails it when
// AVON_REQUIRE_SERVICES=1).
func Start(t testing.TB) *Server {
	t.Helper()
	s, stop, err := StartMain()
	s = Need(t, s, err)
	t.Cleanup(stop)
	return s
}

// StartMain creates and starts a cluster outside any test, for TestMain. It
// returns the server and the function that stops it and removes its
// directory (safe to call more than once, and never nil). The error wraps
// ErrMissing when PostgreSQL cannot be run here; pass it to Need in each
// test so the tests skip or fail as they should.
func StartMain() (*Server, func(), error) {
	noop := func() {}
	reapStale()
	bin, err := findBinaries()
	if err != nil {
		return nil, noop, err
	}
	s := &Server{bin: bin}
	if os.Geteuid() == 0 {
		if _, err := exec.LookPath("runuser"); err != nil {
			return nil, noop, fmt.Errorf("%w: running as root and runuser is not installed", ErrMissing)
		}
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, noop, fmt.Errorf("%w: running as root and there is no user \"postgres\" to run the server as (%v)", ErrMissing, err)
		}
		s.asUser = u
	}
	if err := s.create(); err != nil {
		s.destroy()
		return nil, noop, err
	}
	var once sync.Once
	return s, func() { once.Do(s.destroy) }, nil
}

// Need returns s when err is nil. Otherwise it skips the test with the
// reason, or fails it when err is not ErrMissing or AVON_REQUIRE_SERVICES=1.
func Need(t testing.TB, s *Server, err error) *Server {
	t.Helper()
	switch {
	case err == nil && s != nil:
		return s
	case err == nil:
		t.Fatal("pgtest: no server and no error")
	case errors.Is(err, ErrMissing) && os.Getenv(RequireEnv) != "1":
		t.Skipf("%v (set %s=1 to make this a failure)", err, RequireEnv)
	default:
		t.Fatalf("pgtest: %v", err)
	}
	return nil
}

// findBinaries returns the directory of initdb, pg_ctl and postgres: PATH
// first (all three from the directory of initdb), else the newest
// /usr/lib/postgresql/<major>/bin that has all three.
func findBinaries() (string, error) {
	has := func(dir string) bool {
		for _, b := range []string{"initdb", "pg_ctl", "postgres"} {
			if st, err := os.Stat(filepath.Join(dir, b)); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
				return false
			}
		}
		return true
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil && has(filepath.Dir(real)) {
			return filepath.Dir(real), nil
		}
		if has(filepath.Dir(p)) {
			return filepath.Dir(p), nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	major := func(d string) float64 {
		v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(d)), 64)
		return v
	}
	sort.Slice(dirs, func(i, j int) bool { return major(dirs[i]) > major(dirs[j]) })
	for _, d := range dirs {
		if has(d) {
			return d, nil
		}
	}
	return "", fmt.Errorf("%w: initdb, pg_ctl and postgres not found on PATH or in /usr/lib/postgresql/*/bin (install the postgresql server package)", ErrMissing)
}

// create makes the directory, runs initdb, writes the settings and starts
// the server on a free port.
func (s *Server) create() error {
	dir, err := os.MkdirTemp(os.TempDir(), dirPrefix)
	if err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	s.dir = dir
	s.data = filepath.Join(dir, "data")
	s.logPath = filepath.Join(dir, "server.log")
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	if err := s.chown(dir); err != nil {
		return err
	}
	// -N: the cluster's initial files need not be synced (a test cluster
	// never outlives a machine crash); the server itself runs with fsync.
	if out, err := s.run(startTimeout, "initdb", "-D", s.data, "--auth=trust", "--username="+Superuser,
		"-E", "UTF8", "--locale=C", "-N", "--no-instructions"); err != nil {
		return fmt.Errorf("pgtest: initdb: %v\n%s", err, out)
	}
	conf := strings.Join([]string{
		"",
		"# pgtest",
		"listen_addresses = '127.0.0.1'",
		"unix_socket_directories = '" + dir + "'",
		"max_connections = 100",
		"shared_buffers = 16MB",
		"fsync = on",
		"synchronous_commit = on",
		"full_page_writes = on",
		"wal_level = minimal",
		"max_wal_senders = 0",
		"autovacuum = off",
		"jit = off",
		"logging_collector = off",
		"log_min_messages = warning",
		"",
	}, "\n")
	f, err := os.OpenFile(filepath.Join(s.data, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	_, werr := f.WriteString(conf)
	if err := errors.Join(werr, f.Close()); err != nil {
		return fmt.Errorf("pgtest: write postgresql.conf: %w", err)
	}
	var last error
	for range portAttempts {
		s.port, err = freePort()
		if err != nil {
			return fmt.Errorf("pgtest: %w", err)
		}
		if last = s.Start(); last == nil {
			return nil
		}
		if !strings.Contains(last.Error(), "could not bind") && !strings.Contains(last.Error(), "already in use") {
			return last
		}
	}
	return fmt.Errorf("pgtest: no free port after %d attempts: %w", portAttempts, last)
}

// freePort returns a port that was free on 127.0.0.1 a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	return port, l.Close()
}

// chown gives path to the server's user when running as root.
func (s *Server) chown(path string) error {
	if s.asUser == nil {
		return nil
	}
	uid, err1 := strconv.Atoi(s.asUser.Uid)
	gid, err2 := strconv.Atoi(s.asUser.Gid)
	if err := errors.Join(err1, err2); err != nil {
		return fmt.Errorf("pgtest: user postgres: %w", err)
	}
	if err := os.Chown(path, uid, gid); err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	return nil
}

// run runs one of the server binaries (as the server's user under root),
// bounded by timeout, and returns its combined output.
func (s *Server) run(timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	path := filepath.Join(s.bin, name)
	var cmd *exec.Cmd
	if s.asUser != nil {
		cmd = exec.CommandContext(ctx, "runuser", append([]string{"-u", s.asUser.Username, "--", path}, args...)...)
	} else {
		cmd = exec.CommandContext(ctx, path, args...)
	}
	cmd.Dir = s.dir // readable by the server's user, unlike the test's directory
	cmd.Env = append(os.Environ(), "LC_ALL=C", "PGTZ=UTC")
	// The output must not stay attached to a daemon that pg_ctl leaves
	// running: wait for the command, not for its pipes.
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Port returns the TCP port the server listens on (127.0.0.1).
func (s *Server) Port() int { return s.port }

// Addr returns "127.0.0.1:port".
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Dir returns the cluster's private directory (data/ and server.log).
func (s *Server) Dir() string { return s.dir }

// DSN returns a URL for database dbname as the superuser, without TLS.
func (s *Server) DSN(dbname string) string {
	return fmt.Sprintf("postgres://%s@%s/%s?sslmode=disable", Superuser, s.Addr(), dbname)
}

var unsafeName = regexp.MustCompile(`[^a-z0-9_]+`)

// CreateDatabase creates a new empty database named after name (lowercased,
// other characters replaced, made unique) and returns its DSN. The test
// fails when it cannot.
func (s *Server) CreateDatabase(t testing.TB, name string) string {
	t.Helper()
	db, err := s.NewDatabase(name)
	if err != nil {
		t.Fatal(err)
	}
	return s.DSN(db)
}

// NewDatabase is CreateDatabase outside a test: it returns the new
// database's name.
func (s *Server) NewDatabase(name string) (string, error) {
	base := strings.Trim(unsafeName.ReplaceAllString(strings.ToLower(name), "_"), "_")
	if len(base) > 40 {
		base = base[:40]
	}
	if base == "" {
		base = "db"
	}
	db := fmt.Sprintf("%s_%d", base, s.dbs.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), createTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.DSN("postgres"))
	if err != nil {
		return "", fmt.Errorf("pgtest: connect: %w", err)
	}
	defer func() { _ = conn.Close(context.Background()) }()
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{db}.Sanitize()); err != nil {
		return "", fmt.Errorf("pgtest: create database %s: %w", db, err)
	}
	return db, nil
}

// Start starts the server again on the same directory and port after Stop
// or StopImmediate (crash recovery runs after StopImmediate). It returns
// once the server accepts connections.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running {
		return errors.New("pgtest: server already running")
	}
	out, err := s.run(startTimeout, "pg_ctl", "start", "-w", "-t", strconv.Itoa(int(startTimeout/time.Second)),
		"-D", s.data, "-l", s.logPath, "-o", "-p "+strconv.Itoa(s.port))
	if err != nil {
		s.killGroup()
		return fmt.Errorf("pgtest: pg_ctl start on port %d: %v\n%s\n%s", s.port, err, out, s.LogTail(20))
	}
	s.running = true
	return nil
}

// Stop shuts the server down cleanly (pg_ctl stop -m fast: sessions are
// ended, a checkpoint is written).
func (s *Server) Stop() error { return s.stop("fast") }

// StopImmediate stops the server without a checkpoint, like a crash (pg_ctl
// stop -m immediate); the next Start runs crash recovery from the WAL.
func (s *Server) StopImmediate() error { return s.stop("immediate") }

func (s *Server) stop(mode string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.running {
		return errors.New("pgtest: server not running")
	}
	s.resumeLocked()
	out, err := s.run(stopTimeout, "pg_ctl", "stop", "-w", "-m", mode, "-D", s.data)
	if err != nil {
		s.killGroup()
		s.running = false
		return fmt.Errorf("pgtest: pg_ctl stop -m %s: %v\n%s", mode, err, out)
	}
	s.running = false
	return nil
}

// Pause stops the postmaster and every server process under it with
// SIGSTOP: connections stay open and the kernel still accepts new ones,
// but nothing answers until Resume.
func (s *Server) Pause() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.running || s.paused != nil {
		return errors.New("pgtest: server not running or already paused")
	}
	pm, err := s.postmasterPID()
	if err != nil {
		return err
	}
	// The postmaster first, so it forks nothing while its children stop.
	if err := syscall.Kill(pm, syscall.SIGSTOP); err != nil {
		return fmt.Errorf("pgtest: stop postmaster %d: %w", pm, err)
	}
	s.paused = []int{pm}
	for _, pid := range descendants(pm) {
		if syscall.Kill(pid, syscall.SIGSTOP) == nil {
			s.paused = append(s.paused, pid)
		}
	}
	return nil
}

// Resume continues the processes Pause stopped.
func (s *Server) Resume() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.paused == nil {
		return errors.New("pgtest: server not paused")
	}
	s.resumeLocked()
	return nil
}

func (s *Server) resumeLocked() {
	// Children first, then the postmaster, which may have been about to
	// signal them.
	for i := len(s.paused) - 1; i >= 0; i-- {
		_ = syscall.Kill(s.paused[i], syscall.SIGCONT)
	}
	s.paused = nil
}

// postmasterPID reads the first line of postmaster.pid.
func (s *Server) postmasterPID() (int, error) {
	return readPIDFile(filepath.Join(s.data, "postmaster.pid"))
}

func readPIDFile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("pgtest: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || pid <= 1 {
		return 0, fmt.Errorf("pgtest: bad pid %q in %s", line, path)
	}
	return pid, nil
}

// PIDs returns the postmaster's pid followed by those of its children.
func (s *Server) PIDs() ([]int, error) {
	pm, err := s.postmasterPID()
	if err != nil {
		return nil, err
	}
	return append([]int{pm}, descendants(pm)...), nil
}

// descendants lists the processes under pid, from /proc.
func descendants(pid int) []int {
	parent := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// "pid (comm) state ppid ...": comm may hold spaces and parens.
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 {
			continue
		}
		pp, _ := strconv.Atoi(f[1])
		parent[pp] = append(parent[pp], p)
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 && len(out) < 10000 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range parent[p] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

// killGroup SIGKILLs the postmaster's process group (pg_ctl starts it as
// the leader of its own session), for when pg_ctl could not stop it.
func (s *Server) killGroup() {
	pm, err := s.postmasterPID()
	if err != nil {
		return
	}
	killCluster(pm)
}

// killCluster kills pm's group and any descendant outside it, after making
// sure pm is a postgres process.
func killCluster(pm int) {
	cmd, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pm), "cmdline"))
	if err != nil || !strings.Contains(string(cmd), "postgres") {
		return
	}
	kids := descendants(pm)
	_ = syscall.Kill(pm, syscall.SIGCONT)
	if pgid, err := syscall.Getpgid(pm); err == nil && pgid == pm {
		_ = syscall.Kill(-pm, syscall.SIGKILL)
	}
	_ = syscall.Kill(pm, syscall.SIGKILL)
	for _, k := range kids {
		_ = syscall.Kill(k, syscall.SIGKILL)
	}
}

// destroy stops the server (immediately) and removes its directory.
func (s *Server) destroy() {
	if s.dir == "" {
		return
	}
	s.mu.Lock()
	running := s.running
	s.mu.Unlock()
	if _, err := os.Stat(s.data); err != nil {
		running = false // removed already (reaped)
	}
	if running {
		if err := s.StopImmediate(); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}
	s.killGroup() // a no-op when pg_ctl removed postmaster.pid
	_ = os.RemoveAll(s.dir)
}

// LogTail returns the last n lines of the server log.
func (s *Server) LogTail(n int) string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// reapStale stops and removes clusters whose owning test process is gone
// (killed before its cleanup ran). It touches only directories with this
// package's prefix and an owner file naming a dead process.
func reapStale() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), dirPrefix+"*"))
	if len(dirs) > 100 {
		dirs = dirs[:100]
	}
	for _, d := range dirs {
		owner, err := readPIDFile(filepath.Join(d, ownerFile))
		if err != nil {
			continue // being created, or not ours
		}
		if err := syscall.Kill(owner, 0); err == nil || errors.Is(err, syscall.EPERM) {
			continue // owner alive
		}
		if pm, err := readPIDFile(filepath.Join(d, "data", "postmaster.pid")); err == nil {
			killCluster(pm)
		}
		_ = os.RemoveAll(d)
	}
}
