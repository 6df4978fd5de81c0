package netns

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun"
)

func TestMain(m *testing.M) {
	flag.Parse()
	before := runtime.NumGoroutine()
	code := m.Run()
	// The fuzzing engine keeps goroutines of its own.
	if f := flag.Lookup("test.fuzz"); code == 0 && (f == nil || f.Value.String() == "") {
		// Every goroutine a test started (TUN listeners, exec watchers)
		// must end once its cleanup ran.
		var after int
		for range 100 {
			if after = runtime.NumGoroutine(); after <= before {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if after > before {
			buf := make([]byte, 1<<20)
			fmt.Fprintf(os.Stderr, "goroutine leak: %d before, %d after\n%s\n", before, after, buf[:runtime.Stack(buf, true)])
			code = 1
		}
	}
	os.Exit(code)
}

// nsInode returns the nsfs identity of a namespace file.
func nsInode(t testing.TB, path string) [2]uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	return [2]uint64{st.Dev, st.Ino}
}

// threadsOutside returns the threads of this process whose network
// namespace is not want.
func threadsOutside(t testing.TB, want [2]uint64) []string {
	t.Helper()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	var bad []string
	for _, task := range tasks {
		var st syscall.Stat_t
		if syscall.Stat("/proc/self/task/"+task.Name()+"/ns/net", &st) != nil {
			continue // the thread just exited
		}
		if [2]uint64{st.Dev, st.Ino} != want {
			bad = append(bad, task.Name())
		}
	}
	return bad
}

func TestLinkPing(t *testing.T) {
	t.Parallel()
	a, b := New(t, "a"), New(t, "b")
	aIf, bIf := Link(t, a, "198.18.0.1/24,fd00:18::1/64", b, "198.18.0.2/24, fd00:18::2/64")
	if aIf != "v0-b" || bIf != "v0-a" {
		t.Errorf("interface names %q %q, want v0-b v0-a", aIf, bIf)
	}
	for _, tc := range []struct {
		from *NS
		dev  string
		to   string
	}{
		{a, aIf, "198.18.0.2"},
		{b, bIf, "198.18.0.1"},
		{a, aIf, "fd00:18::2"},
		{b, bIf, "fd00:18::1"},
	} {
		if err := tc.from.Ping(t, tc.to, 2); err != nil {
			t.Errorf("ping %s from %s: %v", tc.to, tc.from, err)
		}
		if _, err := tc.from.Run(t, "ip", "link", "show", "dev", tc.dev); err != nil {
			t.Errorf("%s has no %s: %v", tc.from, tc.dev, err)
		}
	}
	// No route, no reply: Ping must report the failure.
	if err := a.Ping(t, "198.18.1.9", 1); !errors.Is(err, ErrCommand) {
		t.Errorf("ping to an unrouted address: %v, want ErrCommand", err)
	}
	// The ends are not in the host namespace.
	if out, err := exec.Command("ip", "-o", "link", "show").Output(); err != nil {
		t.Fatal(err)
	} else if strings.Contains(string(out), a.Name()) || strings.Contains(string(out), b.Name()) {
		t.Errorf("host namespace holds a link into the test namespaces:\n%s", out)
	}
	// A second link gets the next names, and a namespace may link to itself.
	aIf2, bIf2 := Link(t, a, "198.18.2.1/30", b, "198.18.2.2/30")
	if aIf2 != "v1-b" || bIf2 != "v1-a" {
		t.Errorf("second link %q %q, want v1-b v1-a", aIf2, bIf2)
	}
	l1, l2 := Link(t, a, "", a, "")
	if l1 == l2 {
		t.Errorf("self link ends share the name %q", l1)
	}
}

// udpPair opens a socket in each namespace through Do, bound to addresses
// that exist only there, and checks a datagram each way after Do returned.
func TestDoUDP(t *testing.T) {
	t.Parallel()
	a, b := New(t, "udpa"), New(t, "udpb")
	Link(t, a, "198.18.3.1/24,fd00:3::1/64", b, "198.18.3.2/24,fd00:3::2/64")
	for _, tc := range []struct{ network, aAddr, bAddr string }{
		{"udp4", "198.18.3.1", "198.18.3.2"},
		{"udp6", "fd00:3::1", "fd00:3::2"},
	} {
		t.Run(tc.network, func(t *testing.T) {
			listen := func(ns *NS, addr string) *net.UDPConn {
				t.Helper()
				var c *net.UDPConn
				err := ns.Do(func() error {
					var err error
					c, err = net.ListenUDP(tc.network, net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(addr), 0)))
					return err
				})
				if err != nil {
					t.Fatalf("listen in %s: %v", ns, err)
				}
				t.Cleanup(func() { c.Close() })
				return c
			}
			ca, cb := listen(a, tc.aAddr), listen(b, tc.bAddr)
			// The address exists only in ns a: outside Do it cannot be bound.
			if c, err := net.ListenUDP(tc.network, net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(tc.aAddr), 0))); err == nil {
				c.Close()
				t.Fatalf("bound %s in the host namespace", tc.aAddr)
			}
			exchange := func(from, to *net.UDPConn, msg string) {
				t.Helper()
				if _, err := from.WriteToUDPAddrPort([]byte(msg), to.LocalAddr().(*net.UDPAddr).AddrPort()); err != nil {
					t.Fatal(err)
				}
				buf := make([]byte, 64)
				_ = to.SetReadDeadline(time.Now().Add(5 * time.Second))
				n, src, err := to.ReadFromUDPAddrPort(buf)
				if err != nil {
					t.Fatalf("read: %v", err)
				}
				if string(buf[:n]) != msg || src != from.LocalAddr().(*net.UDPAddr).AddrPort() {
					t.Fatalf("got %q from %v, want %q from %v", buf[:n], src, msg, from.LocalAddr())
				}
			}
			exchange(ca, cb, "ping")
			exchange(cb, ca, "pong")
		})
	}
}

func TestDoSwitchesOnlyTheThread(t *testing.T) {
	t.Parallel()
	a, b := New(t, "da"), New(t, "db")
	host := nsInode(t, "/proc/self/ns/net")
	aID, bID := nsInode(t, a.Path()), nsInode(t, b.Path())
	errFn := errors.New("fn failed")
	for i := range 50 {
		err := a.Do(func() error {
			if got := nsInode(t, "/proc/thread-self/ns/net"); got != aID {
				return fmt.Errorf("inside Do: namespace %v, want %v", got, aID)
			}
			// Nested, across namespaces: back in a afterwards.
			if err := b.Do(func() error {
				if got := nsInode(t, "/proc/thread-self/ns/net"); got != bID {
					return fmt.Errorf("nested Do: namespace %v, want %v", got, bID)
				}
				return nil
			}); err != nil {
				return err
			}
			if got := nsInode(t, "/proc/thread-self/ns/net"); got != aID {
				return fmt.Errorf("after nested Do: namespace %v, want %v", got, aID)
			}
			if i%2 == 1 {
				return errFn
			}
			return nil
		})
		if i%2 == 1 && !errors.Is(err, errFn) {
			t.Fatalf("Do returned %v, want fn's error", err)
		}
		if i%2 == 0 && err != nil {
			t.Fatal(err)
		}
		if got := nsInode(t, "/proc/thread-self/ns/net"); got != host {
			t.Fatalf("after Do the thread is in %v, want the host's %v", got, host)
		}
	}
	// A panic in fn still switches the thread back.
	func() {
		defer func() {
			if recover() == nil {
				t.Error("panic swallowed")
			}
		}()
		_ = a.Do(func() error { panic("boom") })
	}()
	if got := nsInode(t, "/proc/thread-self/ns/net"); got != host {
		t.Fatalf("after a panic in Do the thread is in %v", got)
	}
	if bad := threadsOutside(t, host); len(bad) > 0 {
		t.Errorf("threads %v are outside the host namespace", bad)
	}
	if err := a.Do(nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("Do(nil) = %v, want ErrInvalid", err)
	}
}

func TestRouteForwarding(t *testing.T) {
	t.Parallel()
	left, router, right := New(t, "left"), New(t, "router"), New(t, "right")
	Link(t, left, "198.18.4.2/24,fd00:4::2/64", router, "198.18.4.1/24,fd00:4::1/64")
	Link(t, router, "198.18.5.1/24,fd00:5::1/64", right, "198.18.5.2/24,fd00:5::2/64")
	router.EnableForwarding(t)
	for _, p := range []string{"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"} {
		if out, err := router.Run(t, "cat", p); err != nil || strings.TrimSpace(out) != "1" {
			t.Fatalf("%s in router = %q, %v", p, out, err)
		}
		if out, err := left.Run(t, "cat", p); err != nil || strings.TrimSpace(out) != "0" {
			t.Fatalf("%s in left = %q, %v: forwarding leaked", p, out, err)
		}
	}
	left.AddRoute(t, "198.18.5.0/24", "198.18.4.1")
	left.AddRoute(t, "default", "fd00:4::1")
	right.AddRoute(t, "default", "198.18.5.1")
	right.AddRoute(t, "fd00:4::/64", "fd00:5::1")
	for _, addr := range []string{"198.18.5.2", "fd00:5::2"} {
		if err := left.Ping(t, addr, 1); err != nil {
			t.Errorf("ping %s through the router: %v", addr, err)
		}
	}
}

func TestRun(t *testing.T) {
	t.Parallel()
	ns := New(t, "run")
	if out, err := ns.Run(t, "sh", "-c", "echo out; echo err >&2"); err != nil || out != "out\n" {
		t.Errorf("Run = %q, %v", out, err)
	}
	// The command runs in the namespace: only lo is there.
	if out, err := ns.Run(t, "ip", "-o", "link", "show"); err != nil || strings.Count(out, "\n") != 1 || !strings.Contains(out, "lo:") {
		t.Errorf("links in a fresh namespace: %q, %v", out, err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string // in the error text
	}{
		{"exit status", []string{"sh", "-c", "echo why >&2; exit 3"}, "why"},
		{"missing program", []string{"/nonexistent/avon-test"}, "nonexistent"},
	} {
		_, err := ns.Run(t, tc.args...)
		if !errors.Is(err, ErrCommand) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want ErrCommand mentioning %q", tc.name, err, tc.want)
		}
	}
	if _, err := ns.Run(t); !errors.Is(err, ErrInvalid) {
		t.Errorf("Run without a command: %v, want ErrInvalid", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := ns.RunContext(ctx, "sleep", "30"); !errors.Is(err, ErrCommand) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("RunContext past its deadline: %v", err)
	}
}

// TestCleanup checks that a namespace, its owner record and everything
// running in it are gone once the test that made it ended.
func TestCleanup(t *testing.T) {
	t.Parallel()
	var (
		ns      *NS
		started *exec.Cmd
		waited  *exec.Cmd
		stray   int
	)
	t.Run("owner", func(t *testing.T) {
		ns = New(t, "gone")
		started = ns.Start(t, "sleep", "600")
		waited = ns.Start(t, "true")
		if err := waited.Wait(); err != nil {
			t.Fatalf("wait: %v", err)
		}
		out, err := ns.Run(t, "sh", "-c", "sleep 600 >/dev/null 2>&1 & echo $!")
		if err != nil {
			t.Fatal(err)
		}
		if stray, err = strconv.Atoi(strings.TrimSpace(out)); err != nil {
			t.Fatal(err)
		}
		if pids := pidsIn(statOf(t, ns.Path())); len(pids) != 2 {
			t.Fatalf("processes in the namespace: %v, want 2", pids)
		}
		if _, err := os.Stat(filepath.Join(ownerDir, ns.Name())); err != nil {
			t.Fatalf("owner record: %v", err)
		}
	})
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), ns.Name()) {
		t.Errorf("ip netns list still shows %s:\n%s", ns.Name(), out)
	}
	for _, p := range []string{ns.Path(), filepath.Join(ownerDir, ns.Name())} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after cleanup: %v", p, err)
		}
	}
	if ps := started.ProcessState; ps == nil {
		t.Error("started process not reaped")
	} else if ws := ps.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Errorf("started process ended with %v, want SIGKILL", ps)
	}
	if !strayGone(stray) {
		t.Errorf("process %d started in the background still runs", stray)
	}
	if err := ns.Do(func() error { return nil }); !errors.Is(err, ErrSwitch) {
		t.Errorf("Do on a deleted namespace: %v, want ErrSwitch", err)
	}
}

func statOf(t testing.TB, path string) syscall.Stat_t {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// strayGone reports whether pid is gone or a zombie waiting for a reaper
// (killed, not yet collected by whoever adopted it).
func strayGone(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	i := strings.LastIndexByte(string(b), ')')
	return i >= 0 && strings.HasPrefix(string(b[i+1:]), " Z")
}

func TestSweepRemovesLeftovers(t *testing.T) {
	t.Parallel()
	Require(t)
	start, err := processStart(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	mk := func(label, owner string) string {
		t.Helper()
		id, err := randomHex(3)
		if err != nil {
			t.Fatal(err)
		}
		name := Prefix + id + "-" + label
		if _, err := ip("netns", "add", name); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _, _ = ip("netns", "del", name); _ = os.Remove(filepath.Join(ownerDir, name)) })
		if err := os.WriteFile(filepath.Join(ownerDir, name), []byte(owner), 0o644); err != nil {
			t.Fatal(err)
		}
		return name
	}
	dead := mk("dead", ownerLine(os.Getpid(), start+1)) // this pid, another life
	garbage := mk("garbage", "not a record")
	live := mk("live", ownerLine(os.Getpid(), start))
	(&NS{name: dead}).Start(t, "sleep", "600") // the sweep kills it
	sweep()
	for _, tc := range []struct {
		name string
		want bool
	}{{dead, false}, {garbage, false}, {live, true}} {
		_, err := os.Stat(filepath.Join(runDir, tc.name))
		if got := err == nil; got != tc.want {
			t.Errorf("%s exists = %v after sweep, want %v", tc.name, got, tc.want)
		}
	}
}

// TestTUN creates a real TUN device inside a namespace, routes a prefix
// into it, pings an address there, reads the echo request with the batch API, answers it through the
// device and checks that ping got the reply.
func TestTUN(t *testing.T) {
	t.Parallel()
	ns := New(t, "tun")
	var dev tun.Device
	if err := ns.Do(func() error {
		var err error
		dev, err = tun.CreateTUN("avtun0", 1420)
		return err
	}); err != nil {
		t.Fatalf("CreateTUN in %s: %v", ns, err)
	}
	t.Cleanup(func() { dev.Close() })
	if name, err := dev.Name(); err != nil || name != "avtun0" {
		t.Fatalf("Name() = %q, %v", name, err)
	}
	if err := exec.Command("ip", "link", "show", "avtun0").Run(); err == nil {
		t.Fatal("avtun0 exists in the host namespace")
	}
	for _, args := range [][]string{
		{"ip", "addr", "add", "198.19.0.1/24", "dev", "avtun0"},
		{"ip", "link", "set", "avtun0", "up"},
	} {
		if _, err := ns.Run(t, args...); err != nil {
			t.Fatal(err)
		}
	}
	// MTU looks the device up by name: only inside the namespace.
	if err := ns.Do(func() error {
		mtu, err := dev.MTU()
		if err == nil && mtu != 1420 {
			err = fmt.Errorf("MTU() = %d, want 1420", mtu)
		}
		return err
	}); err != nil {
		t.Error(err)
	}
	ns.AddRoute(t, "198.19.1.0/24", "avtun0")
	batch := dev.BatchSize()
	if batch < 1 || batch > 1024 {
		t.Fatalf("BatchSize() = %d", batch)
	}

	ping := ns.Start(t, "ping", "-n", "-c", "1", "-W", "5", "198.19.1.7")

	// offset leaves room in front of each packet; Write needs at least the
	// 10-byte virtio header there when the device uses offloads.
	const offset = 16
	bufs := make([][]byte, batch)
	for i := range bufs {
		bufs[i] = make([]byte, offset+65535)
	}
	sizes := make([]int, batch)
	if err := dev.File().SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	var req []byte
	for reads := 0; req == nil && reads < 64; reads++ { // IPv6 chatter may come first
		n, err := dev.Read(bufs, sizes, offset)
		if err != nil {
			t.Fatalf("read from TUN: %v", err)
		}
		for i := range n {
			p := bufs[i][offset : offset+sizes[i]]
			if len(p) >= 28 && p[0]>>4 == 4 && p[9] == 1 && p[(p[0]&0xf)*4] == 8 {
				req = append([]byte(nil), p...)
				break
			}
		}
	}
	if req == nil {
		t.Fatal("no ICMP echo request read from the TUN")
	}
	src, dst := netip.AddrFrom4([4]byte(req[12:16])), netip.AddrFrom4([4]byte(req[16:20]))
	if src != netip.MustParseAddr("198.19.0.1") || dst != netip.MustParseAddr("198.19.1.7") {
		t.Fatalf("echo request %v -> %v, want 198.19.0.1 -> 198.19.1.7", src, dst)
	}
	if checksum(req[:(req[0]&0xf)*4]) != 0 {
		t.Error("echo request has a bad IPv4 header checksum")
	}

	reply := echoReply(req)
	out := make([]byte, offset+len(reply))
	copy(out[offset:], reply)
	if _, err := dev.Write([][]byte{out}, offset); err != nil {
		t.Fatalf("write to TUN: %v", err)
	}
	if err := ping.Wait(); err != nil {
		t.Fatalf("ping did not get the reply written into the TUN: %v", err)
	}
}

// echoReply turns an IPv4 ICMP echo request into its reply.
func echoReply(req []byte) []byte {
	p := append([]byte(nil), req...)
	hl := int(p[0]&0xf) * 4
	var a [4]byte
	copy(a[:], p[12:16])
	copy(p[12:16], p[16:20])
	copy(p[16:20], a[:])
	p[8] = 64
	p[10], p[11] = 0, 0
	binary.BigEndian.PutUint16(p[10:12], checksum(p[:hl]))
	icmp := p[hl:]
	icmp[0] = 0 // echo reply
	icmp[2], icmp[3] = 0, 0
	binary.BigEndian.PutUint16(icmp[2:4], checksum(icmp))
	return p
}

// checksum is the Internet checksum (RFC 1071); over data that carries a
// correct checksum it is 0.
func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// recorder is a testing.TB that records how a helper ended the test.
type recorder struct {
	testing.TB
	mu      sync.Mutex
	skipped string
	failed  string
}

func (r *recorder) Helper() {}
func (r *recorder) Skipf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.skipped = fmt.Sprintf(format, args...)
}
func (r *recorder) Fatalf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failed = fmt.Sprintf(format, args...)
}

func TestSkipOrFail(t *testing.T) {
	reason := fmt.Errorf("%w: not root (euid 1000)", ErrUnavailable)
	for _, tc := range []struct {
		env      string
		wantSkip bool
	}{{"", true}, {"0", true}, {"true", true}, {"1", false}} {
		t.Run("env="+tc.env, func(t *testing.T) {
			t.Setenv(RequireEnv, tc.env)
			r := &recorder{TB: t}
			skipOrFail(r, reason)
			got := r.skipped
			if !tc.wantSkip {
				got = r.failed
				if r.skipped != "" {
					t.Errorf("skipped under %s=1: %s", RequireEnv, r.skipped)
				}
			} else if r.failed != "" {
				t.Errorf("failed without %s=1: %s", RequireEnv, r.failed)
			}
			if !strings.Contains(got, "not root") {
				t.Errorf("reason not given: %q", got)
			}
		})
	}
}

func TestNewRejectsLabels(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		label string
		ok    bool
	}{
		{"gw", true}, {"a-b_c9", true}, {"fifteen-chars-x", true},
		{"", false}, {"sixteen-chars-xx", false}, {"Upper", false}, {"a/b", false},
		{"a b", false}, {"../x", false}, {"a\x00", false},
	} {
		err := checkLabel(tc.label)
		if (err == nil) != tc.ok {
			t.Errorf("checkLabel(%q) = %v, want ok %v", tc.label, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("checkLabel(%q) = %v, want ErrInvalid", tc.label, err)
		}
	}
}

func TestParseAddrs(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want string // prefixes joined by " ", or "err"
	}{
		{"", ""},
		{"  ", ""},
		{"10.0.0.1/24", "10.0.0.1/24"},
		{"10.0.0.1/24, fd00::1/64", "10.0.0.1/24 fd00::1/64"},
		{"10.0.0.1", "err"},
		{"10.0.0.1/33", "err"},
		{"::ffff:10.0.0.1/120", "err"},
		{"fe80::1%eth0/64", "err"},
		{"10.0.0.1/24,", "err"},
		{strings.Repeat("10.0.0.1/24,", MaxAddrs) + "10.0.0.2/24", "err"},
	} {
		got, err := parseAddrs(tc.in)
		if tc.want == "err" {
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("parseAddrs(%q) = %v, %v, want ErrInvalid", tc.in, got, err)
			}
			continue
		}
		var s []string
		for _, p := range got {
			s = append(s, p.String())
		}
		if err != nil || strings.Join(s, " ") != tc.want {
			t.Errorf("parseAddrs(%q) = %v, %v, want %s", tc.in, s, err, tc.want)
		}
	}
}

func TestRouteArgs(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		cidr, gw string
		want     string // or "err"
	}{
		{"10.1.0.0/16", "10.0.0.1", "-4 route add 10.1.0.0/16 via 10.0.0.1"},
		{"fd00:1::/64", "fd00::1", "-6 route add fd00:1::/64 via fd00::1"},
		{"default", "10.0.0.1", "-4 route add default via 10.0.0.1"},
		{"default", "fd00::1", "-6 route add default via fd00::1"},
		{"default", "avtun0", "-4 route add default dev avtun0"},
		{"::/0", "avtun0", "-6 route add ::/0 dev avtun0"},
		{"10.1.0.0/16", "v0-gw", "-4 route add 10.1.0.0/16 dev v0-gw"},
		{"10.1.0.1/16", "10.0.0.1", "err"},
		{"10.1.0.0/16", "fd00::1", "err"},
		{"fd00:1::/64", "10.0.0.1", "err"},
		{"10.1.0.0/16", "::ffff:10.0.0.1", "err"},
		{"10.1.0.0", "10.0.0.1", "err"},
		{"10.1.0.0/16", "", "err"},
		{"10.1.0.0/16", "a-very-long-device", "err"},
		{"10.1.0.0/16", "dev x", "err"},
		{"10.1.0.0/16", "-x", "err"},
		{"::/0", "fe80::1%v0-gw", "err"},
		{"::/0", "::% ", "err"},
	} {
		got, err := routeArgs(tc.cidr, tc.gw)
		if tc.want == "err" {
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("routeArgs(%q, %q) = %q, %v, want ErrInvalid", tc.cidr, tc.gw, got, err)
			}
			continue
		}
		if err != nil || strings.Join(got, " ") != tc.want {
			t.Errorf("routeArgs(%q, %q) = %q, %v, want %q", tc.cidr, tc.gw, got, err, tc.want)
		}
	}
}

func TestPingArgs(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		addr  string
		count int
		want  string // or "err"
		limit time.Duration
	}{
		{"10.0.0.1", 1, "ping -n -q -c 1 -W 1 -i 0.2 -w 2 10.0.0.1", 7 * time.Second},
		{"fd00::1", 10, "ping -n -q -c 10 -W 1 -i 0.2 -w 4 fd00::1", 9 * time.Second},
		{"10.0.0.1", MaxPingCount, "ping -n -q -c 100 -W 1 -i 0.2 -w 22 10.0.0.1", 27 * time.Second},
		{"10.0.0.1", 0, "err", 0},
		{"10.0.0.1", MaxPingCount + 1, "err", 0},
		{"example.com", 1, "err", 0},
		{"-f", 1, "err", 0},
		{"fe80::1%v0-gw", 1, "ping -n -q -c 1 -W 1 -i 0.2 -w 2 fe80::1%v0-gw", 7 * time.Second},
		{"fe80::1% x", 1, "err", 0},
	} {
		args, limit, err := pingArgs("ping", tc.addr, tc.count)
		if tc.want == "err" {
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("pingArgs(%q, %d) = %q, %v, want ErrInvalid", tc.addr, tc.count, args, err)
			}
			continue
		}
		if err != nil || strings.Join(args, " ") != tc.want || limit != tc.limit {
			t.Errorf("pingArgs(%q, %d) = %q, %v, %v", tc.addr, tc.count, args, limit, err)
		}
	}
}

func TestOwnerRecords(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in    string
		pid   int
		start uint64
		ok    bool
	}{
		{"12 345\n", 12, 345, true},
		{"12 345", 12, 345, true},
		{"", 0, 0, false},
		{"12", 0, 0, false},
		{"0 1", 0, 0, false},
		{"-3 1", 0, 0, false},
		{"+3 1", 0, 0, false},
		{"3 -1", 0, 0, false},
		{"3  1", 0, 0, false},
		{"3 1\n\n", 0, 0, false},
		{"3 " + strings.Repeat("1", maxOwnerLen), 0, 0, false},
	} {
		pid, start, err := parseOwner([]byte(tc.in))
		if tc.ok != (err == nil) || pid != tc.pid || start != tc.start {
			t.Errorf("parseOwner(%q) = %d, %d, %v", tc.in, pid, start, err)
		}
	}
	line := ownerLine(4242, 99)
	if pid, start, err := parseOwner([]byte(line)); err != nil || pid != 4242 || start != 99 {
		t.Errorf("round trip of %q: %d %d %v", line, pid, start, err)
	}

	fields := strings.Repeat(" 0", 18)
	for _, tc := range []struct {
		in   string
		want uint64
		ok   bool
	}{
		{"1 (init) S" + fields + " 777 0 0", 777, true},
		{"1 (a b) c) S" + fields + " 778", 778, true},
		{"1 (x) S" + fields, 0, false},
		{"1 x S" + fields + " 1", 0, false},
		{"1 (x) S" + fields + " -5", 0, false},
	} {
		got, err := parseStatStart([]byte(tc.in))
		if tc.ok != (err == nil) || got != tc.want {
			t.Errorf("parseStatStart(%q) = %d, %v", tc.in, got, err)
		}
	}
	if _, err := processStart(os.Getpid()); err != nil {
		t.Errorf("processStart(self): %v", err)
	}
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"avt-0a1b2c-gw", true}, {"avt-0A1B2C-gw", false}, {"avt-0a1b2-gw", false},
		{"avt-0a1b2c-", false}, {"avt-0a1b2c_gw", false}, {"other-0a1b2c-gw", false},
	} {
		if err := checkName(tc.name); (err == nil) != tc.ok {
			t.Errorf("checkName(%q) = %v", tc.name, err)
		}
	}
}

func BenchmarkDo(b *testing.B) {
	ns := New(b, "bench")
	for b.Loop() {
		if err := ns.Do(func() error { return nil }); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkNew(b *testing.B) {
	Require(b)
	for b.Loop() {
		ns, err := create("bench")
		if err != nil {
			b.Fatal(err)
		}
		if err := ns.destroy(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRun measures one command run in a namespace ("ip netns exec" and
// true).
func BenchmarkRun(b *testing.B) {
	ns := New(b, "bench")
	for b.Loop() {
		if _, err := ns.Run(b, "true"); err != nil {
			b.Fatal(err)
		}
	}
}
