package redistest_test

import (
	"bufio"
	"errors"
	"net"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/avonzt/avon/internal/testsvc/redistest"
)

var (
	shared    *redistest.Server
	sharedErr error
)

func TestMain(m *testing.M) {
	var stop func()
	shared, stop, sharedErr = redistest.StartMain()
	code := m.Run()
	stop()
	os.Exit(code)
}

// do sends an inline command and returns the first reply line.
func do(addr, cmd string, timeout time.Duration) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(timeout))
	if _, err := conn.Write([]byte(cmd + "\r\n")); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	return strings.TrimRight(line, "\r\n"), err
}

func mustDo(t *testing.T, addr, cmd, want string) {
	t.Helper()
	got, err := do(addr, cmd, 5*time.Second)
	if err != nil || got != want {
		t.Fatalf("%s on %s = %q, %v; want %q", cmd, addr, got, err, want)
	}
}

func alive(pid int) bool { return pid > 0 && syscall.Kill(pid, 0) == nil }

func TestShared(t *testing.T) {
	s := redistest.Need(t, shared, sharedErr)
	if !strings.HasPrefix(s.Addr(), "127.0.0.1:") {
		t.Fatalf("Addr = %q, want loopback", s.Addr())
	}
	mustDo(t, s.Addr(), "SET k v", "+OK")
	mustDo(t, s.Addr(), "GET k", "$1")
	if err := s.FlushAll(); err != nil {
		t.Fatal(err)
	}
	mustDo(t, s.Addr(), "GET k", "$-1")
	// Configured as documented.
	mustDo(t, s.Addr(), "CONFIG GET save", "*2")
	mustDo(t, s.Addr(), "CONFIG GET protected-mode", "*2")
}

func TestPauseResumeRestartStop(t *testing.T) {
	s := redistest.Start(t)
	mustDo(t, s.Addr(), "SET k v", "+OK")

	if err := s.Pause(); err != nil {
		t.Fatal(err)
	}
	if got, err := do(s.Addr(), "PING", 300*time.Millisecond); err == nil {
		t.Fatalf("paused server answered %q", got)
	} else if ne := (net.Error)(nil); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("paused server: %v; want a timeout", err)
	}
	if err := s.Resume(); err != nil {
		t.Fatal(err)
	}
	mustDo(t, s.Addr(), "PING", "+PONG")

	pid, addr := s.PID(), s.Addr()
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	if s.Addr() != addr {
		t.Fatalf("Restart moved the server from %s to %s", addr, s.Addr())
	}
	if alive(pid) {
		t.Fatalf("old process %d still alive after Restart", pid)
	}
	mustDo(t, s.Addr(), "GET k", "$-1") // no persistence

	pid = s.PID()
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if alive(pid) {
		t.Fatalf("process %d alive after Stop", pid)
	}
	if _, err := do(s.Addr(), "PING", time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("stopped server: %v; want connection refused", err)
	}
	if err := s.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if err := s.Restart(); err != nil {
		t.Fatalf("Restart after Stop: %v", err)
	}
	mustDo(t, s.Addr(), "PING", "+PONG")
}

func TestCleanupKillsPausedServer(t *testing.T) {
	var pid int
	t.Run("inner", func(t *testing.T) {
		s := redistest.Start(t)
		pid = s.PID()
		if err := s.Pause(); err != nil {
			t.Fatal(err)
		}
	})
	if pid == 0 {
		t.Skip("inner test skipped")
	}
	if alive(pid) {
		t.Fatalf("paused server %d outlived its test's cleanup", pid)
	}
}

func TestNeed(t *testing.T) {
	// A missing binary skips, or fails under AVON_REQUIRE_SERVICES=1; the
	// decision is Need's, so check it on a fake test.
	missing := errors.Join(redistest.ErrMissing, errors.New("not in PATH"))
	for _, c := range []struct {
		env      string
		err      error
		skip     bool
		fail     bool
		returned bool
	}{
		{"", nil, false, false, true},
		{"", missing, true, false, false},
		{"1", missing, false, true, false},
		{"", errors.New("start failed"), false, true, false},
	} {
		t.Setenv(redistest.RequireEnv, c.env)
		ft := &fakeTB{}
		var got *redistest.Server
		done := make(chan struct{})
		go func() {
			defer close(done)
			got = redistest.Need(ft, shared, c.err)
		}()
		<-done
		if ft.skipped != c.skip || ft.failed != c.fail || (got != nil) != (c.returned && shared != nil) {
			t.Errorf("env %q err %v: skipped %v failed %v returned %v", c.env, c.err, ft.skipped, ft.failed, got != nil)
		}
	}
}

// fakeTB records Skip and Fatal; both end the goroutine like the real ones.
type fakeTB struct {
	testing.TB
	skipped, failed bool
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Skipf(string, ...any) {
	f.skipped = true
	runtime.Goexit()
}
func (f *fakeTB) Fatalf(string, ...any) {
	f.failed = true
	runtime.Goexit()
}
