// Package redistest starts a real redis-server for tests: the binary from
// PATH, listening only on 127.0.0.1 on a free port, no persistence
// (--save "" --appendonly no), protected mode on, its working directory a
// private temporary directory, not daemonized so the test owns the process.
//
// When redis-server is not installed the test is skipped with the reason,
// unless AVON_REQUIRE_SERVICES=1 (CI), where it fails.
//
// A server starts in a few milliseconds, but a package usually shares one:
// call StartMain once from TestMain, hand its result to Need in each test,
// and give each test its own key prefix (or DB). Start(t) is the one-off
// form, for tests that use the fault methods (Pause, Resume, Stop,
// Restart), which act on the whole server; t.Cleanup always resumes a
// paused server, kills it and reaps it.
//
// It speaks just enough of the Redis protocol (PING, FLUSHALL) to manage
// the server and must not be imported by production code.
package redistest

import (
	"bufio"
	"bytes"
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
)

// RequireEnv names the environment variable that turns a missing server
// into a test failure instead of a skip.
const RequireEnv = "AVON_REQUIRE_SERVICES"

// Binary is the server binary looked up in PATH.
const Binary = "redis-server"

// ErrMissing is wrapped by the error StartMain returns when redis-server is
// not installed.
var ErrMissing = errors.New("redistest: redis-server cannot be started here")

const (
	portAttempts = 5
	readyTimeout = 10 * time.Second
	stopTimeout  = 5 * time.Second
	cmdTimeout   = 5 * time.Second
)

// Server is a redis-server process under the test's control. Its methods
// are safe for concurrent use.
type Server struct {
	bin  string
	dir  string
	port int

	mu      sync.Mutex // serializes start, stop, pause and resume
	cmd     *exec.Cmd
	exited  chan struct{} // closed when cmd has been reaped
	out     *lockedWriter // the current process's output
	paused  bool
	running bool
}

// Start starts a server for one test; t.Cleanup stops it. A missing binary
// skips the test (fails it under AVON_REQUIRE_SERVICES=1); any other
// failure fails it.
func Start(t testing.TB) *Server {
	t.Helper()
	s, stop, err := start(t.TempDir())
	s = Need(t, s, err)
	t.Cleanup(stop)
	return s
}

// StartMain starts a server outside any test, for TestMain, and returns it
// with the function that stops it (call it after m.Run). The error wraps
// ErrMissing when redis-server is not installed; pass it to Need in each
// test.
func StartMain() (*Server, func(), error) {
	dir, err := os.MkdirTemp("", "avon-redistest-")
	if err != nil {
		return nil, func() {}, fmt.Errorf("redistest: %w", err)
	}
	s, stop, err := start(dir)
	return s, func() { stop(); _ = os.RemoveAll(dir) }, err
}

// Need returns s when err is nil. Otherwise it skips the test with the
// reason when err wraps ErrMissing and AVON_REQUIRE_SERVICES is not 1, and
// fails it in every other case.
func Need(t testing.TB, s *Server, err error) *Server {
	t.Helper()
	if err == nil {
		return s
	}
	if errors.Is(err, ErrMissing) && os.Getenv(RequireEnv) != "1" {
		t.Skipf("skipped: %v (set %s=1 to make this a failure)", err, RequireEnv)
	}
	t.Fatalf("%v", err)
	return nil
}

func start(dir string) (*Server, func(), error) {
	bin, err := exec.LookPath(Binary)
	if err != nil {
		return nil, func() {}, fmt.Errorf("%w: %s not found in PATH: %v", ErrMissing, Binary, err)
	}
	s := &Server{bin: bin, dir: dir}
	var lastErr error
	for range portAttempts {
		port, err := freePort()
		if err != nil {
			return nil, func() {}, err
		}
		s.port = port
		s.mu.Lock()
		lastErr = s.startLocked()
		s.mu.Unlock()
		if lastErr == nil {
			return s, s.kill, nil
		}
		if !errors.Is(lastErr, errPortInUse) {
			break
		}
	}
	return nil, func() {}, lastErr
}

var errPortInUse = errors.New("port in use")

// freePort returns a loopback port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("redistest: find a free port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	return port, nil
}

// startLocked runs redis-server on s.port and waits until it answers PING.
// The caller must hold s.mu.
func (s *Server) startLocked() error {
	cmd := exec.Command(s.bin,
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--protected-mode", "yes",
		"--save", "",
		"--appendonly", "no",
		"--daemonize", "no",
		"--dir", s.dir,
		"--logfile", "",
	)
	out := &lockedWriter{w: &bytes.Buffer{}}
	cmd.Stdout, cmd.Stderr = out, out
	// The server dies with the test binary even when cleanup cannot run.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("redistest: start %s: %w", s.bin, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	s.cmd, s.exited, s.out, s.paused = cmd, exited, out, false

	deadline := time.Now().Add(readyTimeout)
	for {
		select {
		case <-exited:
			s.running = false
			text := out.String()
			if strings.Contains(text, "Address already in use") {
				return fmt.Errorf("redistest: port %d: %w", s.port, errPortInUse)
			}
			return fmt.Errorf("redistest: redis-server exited during start-up: %s", strings.TrimSpace(text))
		default:
		}
		if err := s.command("PING", "+PONG", 200*time.Millisecond); err == nil {
			s.running = true
			return nil
		}
		if time.Now().After(deadline) {
			s.killLocked()
			return fmt.Errorf("redistest: redis-server on %s not answering PING within %v; output: %s", s.Addr(), readyTimeout, strings.TrimSpace(out.String()))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.String()
}

// command sends one inline command and checks the first reply line.
func (s *Server) command(cmd, want string, timeout time.Duration) error {
	conn, err := net.DialTimeout("tcp", s.Addr(), timeout)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(timeout))
	if _, err := conn.Write([]byte(cmd + "\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if got := strings.TrimRight(line, "\r\n"); got != want {
		return fmt.Errorf("redistest: %s answered %q, want %q", cmd, got, want)
	}
	return nil
}

// Addr returns "127.0.0.1:port".
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Port returns the TCP port.
func (s *Server) Port() int { return s.port }

// PID returns the current process id, or 0 when stopped.
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.running {
		return 0
	}
	return s.cmd.Process.Pid
}

// Pause stops the process with SIGSTOP: connections stay open and nothing
// answers, like a hung server.
func (s *Server) Pause() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.running {
		return errors.New("redistest: pause: server not running")
	}
	if err := s.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		return fmt.Errorf("redistest: pause: %w", err)
	}
	s.paused = true
	return nil
}

// Resume continues a paused process with SIGCONT.
func (s *Server) Resume() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.running {
		return errors.New("redistest: resume: server not running")
	}
	if err := s.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		return fmt.Errorf("redistest: resume: %w", err)
	}
	s.paused = false
	return nil
}

// Stop terminates the server (SIGTERM, then SIGKILL after a bound) and
// reaps it; its data is gone (there is no persistence). Stopping a stopped
// server does nothing.
func (s *Server) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopLocked()
}

func (s *Server) stopLocked() error {
	if !s.running {
		return nil
	}
	if s.paused {
		_ = s.cmd.Process.Signal(syscall.SIGCONT)
		s.paused = false
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(stopTimeout):
		_ = s.cmd.Process.Kill()
		select {
		case <-s.exited:
		case <-time.After(stopTimeout):
			return fmt.Errorf("redistest: redis-server pid %d not reaped within %v of SIGKILL", s.cmd.Process.Pid, stopTimeout)
		}
	}
	s.running = false
	return nil
}

// Restart stops the server if it runs and starts a new, empty one on the
// same port.
func (s *Server) Restart() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.stopLocked(); err != nil {
		return err
	}
	var err error
	// The old process's sockets are gone once it is reaped; retry a few
	// times all the same in case the port is briefly held.
	for range portAttempts {
		if err = s.startLocked(); !errors.Is(err, errPortInUse) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

// FlushAll removes every key of every DB.
func (s *Server) FlushAll() error {
	if err := s.command("FLUSHALL", "+OK", cmdTimeout); err != nil {
		return fmt.Errorf("redistest: flushall on %s: %w", s.Addr(), err)
	}
	return nil
}

// Output returns what the current process wrote to stdout and stderr.
func (s *Server) Output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.out == nil {
		return ""
	}
	return s.out.String()
}

// kill resumes, kills and reaps the process; for cleanup.
func (s *Server) kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.killLocked()
}

func (s *Server) killLocked() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	select {
	case <-s.exited:
		s.running = false
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGCONT)
	_ = s.cmd.Process.Kill()
	select {
	case <-s.exited:
	case <-time.After(stopTimeout):
	}
	s.running, s.paused = false, false
}
