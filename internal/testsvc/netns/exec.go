package netns

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	// RunTimeout bounds a command run by Run (or by the test's own
	// deadline, when that comes first).
	RunTimeout = 60 * time.Second

	// StartTimeout bounds a process started by Start; cleanup kills it
	// earlier when the test ends first.
	StartTimeout = 10 * time.Minute

	// waitDelay bounds how long Wait waits for output pipes after the
	// process ended (a grandchild may hold them open).
	waitDelay = 2 * time.Second
)

// Command returns an unstarted command that runs args inside the namespace
// through "ip netns exec", which execs args[0] in place so the process is
// the command itself. The process leads its own process group; when ctx ends
// the whole group is killed with SIGKILL, and it is killed too if the test
// binary dies (Pdeathsig). Whatever still runs in the namespace is killed by
// New's cleanup in any case.
func (ns *NS) Command(ctx context.Context, args ...string) *exec.Cmd {
	full := append([]string{"netns", "exec", ns.name}, args...)
	cmd := exec.CommandContext(ctx, host.ipPath, full...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error {
		// The group id is the pid (Setpgid); the unreaped leader keeps
		// it from being reused.
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = waitDelay
	return cmd
}

// Run runs args inside the namespace, bounded by RunTimeout (or the test's
// deadline if sooner), and returns its standard output. A non-zero exit, a
// timeout or a missing program is an error wrapping ErrCommand that carries
// the standard error.
func (ns *NS) Run(t testing.TB, args ...string) (stdout string, err error) {
	t.Helper()
	ctx, cancel := context.WithDeadline(context.Background(), deadline(t, RunTimeout))
	defer cancel()
	return ns.RunContext(ctx, args...)
}

// RunContext is Run with the caller's context in place of RunTimeout.
func (ns *NS) RunContext(ctx context.Context, args ...string) (stdout string, err error) {
	if len(args) == 0 {
		return "", fmt.Errorf("%w: no command", ErrInvalid)
	}
	cmd := ns.Command(ctx, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%v (%w)", err, ctx.Err())
		}
		return out.String(), fmt.Errorf("%w: %q in %s: %w: %s", ErrCommand,
			strings.Join(args, " "), ns.name, err, strings.TrimSpace(errOut.String()))
	}
	return out.String(), nil
}

// Start starts args inside the namespace and returns the running command;
// a failure to start fails t. Standard output and error are collected and
// logged if the test fails. The process lives until it exits, StartTimeout
// passes, or the test's cleanup kills its process group and reaps it. The
// caller may Wait on it, but only in a way that finishes before the test
// function returns (cleanup reaps a command nobody waited for).
func (ns *NS) Start(t testing.TB, args ...string) *exec.Cmd {
	t.Helper()
	if len(args) == 0 {
		t.Fatalf("netns.Start: %v: no command", ErrInvalid)
	}
	ctx, cancel := context.WithTimeout(context.Background(), StartTimeout)
	cmd := ns.Command(ctx, args...)
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("netns.Start: %v: %q in %s: %v", ErrCommand, strings.Join(args, " "), ns.name, err)
	}
	t.Cleanup(func() {
		cancel() // kills the group unless Wait already returned
		if cmd.ProcessState == nil {
			_ = cmd.Wait()
		}
		if t.Failed() {
			t.Logf("output of %q in %s:\n%s", strings.Join(args, " "), ns.name, out.String())
		}
	})
	return cmd
}

// deadline returns now+d, or the test's deadline minus a margin if sooner.
func deadline(t testing.TB, d time.Duration) time.Time {
	end := time.Now().Add(d)
	if td, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		if dl, ok := td.Deadline(); ok {
			dl = dl.Add(-5 * time.Second)
			if dl.Before(end) {
				end = dl
			}
		}
	}
	return end
}

// lockedBuffer is an io.Writer safe for the two goroutines exec uses to copy
// stdout and stderr.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
