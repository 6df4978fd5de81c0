// Package netns gives tests real Linux network namespaces to wire together:
// veth links between them, routes, forwarding, commands run inside them, and
// Go code (sockets, TUN devices) executed with the calling thread switched
// into one. It exists so that the gateway, agent and benchmark tests run
// against the kernel's real network stack instead of doubles.
//
// Use it in a test:
//
//	func TestTunnel(t *testing.T) {
//		gw := netns.New(t, "gw")       // skips unless root with /dev/net/tun and ip
//		ag := netns.New(t, "agent")
//		gwIf, agIf := netns.Link(t, gw, "198.18.0.1/24,fd00:18::1/64",
//			ag, "198.18.0.2/24,fd00:18::2/64")
//		if err := ag.Ping(t, "198.18.0.1", 1); err != nil { t.Fatal(err) }
//		var conn *net.UDPConn
//		err := gw.Do(func() (err error) {
//			conn, err = net.ListenUDP("udp", &net.UDPAddr{Port: 4600})
//			return err
//		})
//		...
//	}
//
// New registers a t.Cleanup that kills every process still running in the
// namespace and deletes it; veth links go with it. Namespace names are
// "avt-<6 hex>-<label>"; namespaces left behind by a test binary that was
// killed before its cleanup ran are deleted by the first New of a later
// test binary (each namespace has an owner record under /run/avon-netns).
//
// What it needs: euid 0, /dev/net/tun, ip from iproute2 (and ping for Ping),
// and a kernel that lets the process create network namespaces. When any of
// it is missing the test is skipped with the reason, unless
// AVON_REQUIRE_SERVICES=1 (CI), where the test fails instead. Namespaces are
// private to the test, so tests using them may run in parallel and may reuse
// the same addresses and interface names.
//
// It changes host state only under /run/netns and /run/avon-netns, and only
// for namespaces it named. It is for tests only and must not be imported by
// production code.
package netns

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// RequireEnv names the environment variable that turns a missing
// prerequisite into a test failure instead of a skip.
const RequireEnv = "AVON_REQUIRE_SERVICES"

const (
	// Prefix starts the name of every namespace this package creates.
	Prefix = "avt-"

	// MaxLabel is the longest label New accepts.
	MaxLabel = 15

	// maxIfName is the longest Linux interface name (IFNAMSIZ - 1).
	maxIfName = 15

	runDir   = "/run/netns"
	ownerDir = "/run/avon-netns"
	tunPath  = "/dev/net/tun"

	ipTimeout   = 30 * time.Second
	killRounds  = 250 // killRounds * killPause bounds the wait for processes to die
	killPause   = 20 * time.Millisecond
	maxOwnerLen = 128
)

// NS is one network namespace owned by a test. Its methods are safe for
// concurrent use.
type NS struct {
	name  string
	label string

	mu    sync.Mutex // guards links
	links int        // veth ends created in this namespace, for unique names
}

// Name returns the namespace's name as ip netns knows it.
func (ns *NS) Name() string { return ns.name }

// Label returns the label given to New.
func (ns *NS) Label() string { return ns.label }

// Path returns the namespace's bind mount, /run/netns/<name>, which
// setns(2) and "ip netns exec" accept.
func (ns *NS) Path() string { return filepath.Join(runDir, ns.name) }

// String returns the namespace's name.
func (ns *NS) String() string { return ns.name }

// New creates a network namespace for t named "avt-<6 hex>-<label>", brings
// its loopback up and registers a t.Cleanup that kills every process left in
// it and deletes it. IPv6 duplicate address detection is off in the
// namespace, so addresses are usable as soon as they are added. The label is 1 to MaxLabel characters of [a-z0-9_-]
// (it also ends up in veth names). New calls Require first.
func New(t testing.TB, label string) *NS {
	t.Helper()
	Require(t)
	if err := checkLabel(label); err != nil {
		t.Fatalf("netns.New: %v", err)
	}
	ns, err := create(label)
	if err != nil {
		t.Fatalf("netns.New: %v", err)
	}
	t.Cleanup(func() {
		if err := ns.destroy(); err != nil {
			t.Errorf("netns cleanup: %v", err)
		}
	})
	return ns
}

// create makes the namespace with its owner record and brings lo up; on
// failure it leaves nothing behind.
func create(label string) (*NS, error) {
	id, err := randomHex(3)
	if err != nil {
		return nil, err
	}
	ns := &NS{name: Prefix + id + "-" + label, label: label}
	// The owner record comes first, so that a crash at any later point
	// leaves something the next sweep can act on.
	if err := writeOwner(ns.name); err != nil {
		return nil, err
	}
	if _, err := ip("netns", "add", ns.name); err != nil {
		_ = os.Remove(filepath.Join(ownerDir, ns.name))
		return nil, err
	}
	if _, err := ip("-n", ns.name, "link", "set", "lo", "up"); err != nil {
		return nil, errors.Join(err, ns.destroy())
	}
	if err := ns.Do(noDAD); err != nil {
		return nil, errors.Join(err, ns.destroy())
	}
	return ns, nil
}

// Require skips t with the reason when this host cannot run namespace tests
// (not root, no /dev/net/tun, no ip, namespaces refused by the kernel), or
// fails it when AVON_REQUIRE_SERVICES=1. The checks, including one probe
// namespace created and deleted, run once per process.
func Require(t testing.TB) {
	t.Helper()
	if err := hostCheck(); err != nil {
		skipOrFail(t, err)
	}
}

// skipOrFail ends t because of a missing prerequisite err: a failure under
// AVON_REQUIRE_SERVICES=1, a skip otherwise.
func skipOrFail(t testing.TB, err error) {
	t.Helper()
	if os.Getenv(RequireEnv) == "1" {
		t.Fatalf("%v (required: %s=1)", err, RequireEnv)
		return
	}
	t.Skipf("skipped: %v (set %s=1 to make this a failure)", err, RequireEnv)
}

var host struct {
	once   sync.Once
	err    error
	ipPath string
}

func hostCheck() error {
	host.once.Do(func() { host.err = probeHost() })
	return host.err
}

func probeHost() error {
	if euid := os.Geteuid(); euid != 0 {
		return fmt.Errorf("%w: not root (euid %d)", ErrUnavailable, euid)
	}
	fi, err := os.Stat(tunPath)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if fi.Mode()&os.ModeCharDevice == 0 {
		return fmt.Errorf("%w: %s is not a character device", ErrUnavailable, tunPath)
	}
	path, err := exec.LookPath("ip")
	if err != nil {
		return fmt.Errorf("%w: ip (iproute2) not found: %v", ErrUnavailable, err)
	}
	host.ipPath = path
	sweep()
	probe, err := create("probe")
	if err != nil {
		return fmt.Errorf("%w: cannot create a network namespace: %v", ErrUnavailable, err)
	}
	if err := probe.destroy(); err != nil {
		return fmt.Errorf("%w: cannot delete a network namespace: %v", ErrUnavailable, err)
	}
	return nil
}

// ip runs the ip tool with a deadline and returns its standard output.
func ip(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), ipTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, host.ipPath, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = time.Second
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%w: ip %s: %v: %s", ErrCommand,
			strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

func checkLabel(label string) error {
	if label == "" || len(label) > MaxLabel {
		return fmt.Errorf("%w: label %q must be 1 to %d characters", ErrInvalid, label, MaxLabel)
	}
	for _, c := range []byte(label) {
		ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_'
		if !ok {
			return fmt.Errorf("%w: label %q may hold only a-z, 0-9, '-' and '_'", ErrInvalid, label)
		}
	}
	return nil
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("netns: random name: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// noDAD turns IPv6 duplicate address detection off for the namespace the
// thread is in, so that the addresses of interfaces created later, link-local
// ones included, are usable at once: with DAD a router cannot send neighbor
// solicitations from a tentative link-local address for about two seconds.
func noDAD() error {
	for _, p := range []string{"/proc/sys/net/ipv6/conf/all/accept_dad", "/proc/sys/net/ipv6/conf/default/accept_dad"} {
		if err := os.WriteFile(p, []byte("0\n"), 0); err != nil {
			return fmt.Errorf("netns: turn off DAD: %w", err)
		}
	}
	return nil
}

// destroy kills every process in the namespace, deletes it and its owner
// record.
func (ns *NS) destroy() error {
	var errs []error
	if err := killAll(ns.Path()); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", ns.name, err))
	}
	if _, err := ip("netns", "del", ns.name); err != nil {
		errs = append(errs, err)
	}
	if err := os.Remove(filepath.Join(ownerDir, ns.name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("netns: %w", err))
	}
	return errors.Join(errs...)
}

// killAll sends SIGKILL to every process whose network namespace is the one
// bound at path, until none is left or the bounded wait ends. It never
// signals the calling process.
func killAll(path string) error {
	var target syscall.Stat_t
	if err := syscall.Stat(path, &target); err != nil {
		if errors.Is(err, syscall.ENOENT) {
			return nil
		}
		return fmt.Errorf("netns: %w", err)
	}
	var pids []int
	for range killRounds {
		pids = pidsIn(target)
		if len(pids) == 0 {
			return nil
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(killPause)
	}
	return fmt.Errorf("%w: processes %v still running after SIGKILL", ErrCommand, pids)
}

// pidsIn lists the processes (by their main thread) in the namespace whose
// nsfs inode is target. Zombies have no namespace and are not listed.
func pidsIn(target syscall.Stat_t) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		var st syscall.Stat_t
		if syscall.Stat("/proc/"+e.Name()+"/ns/net", &st) != nil {
			continue
		}
		if st.Dev == target.Dev && st.Ino == target.Ino {
			pids = append(pids, pid)
		}
	}
	return pids
}
