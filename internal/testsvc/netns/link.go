package netns

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	// MaxAddrs is the most addresses Link accepts for one end.
	MaxAddrs = 8

	// MaxPingCount is the largest count Ping accepts.
	MaxPingCount = 100

	pingInterval = "0.2" // seconds between echo requests
)

// Link creates a veth pair with one end in a and the other in b, assigns
// the addresses and brings both ends up; it fails t on any error. Each
// address list is empty or a comma-separated list of up to MaxAddrs CIDR
// addresses with the host part kept ("198.18.0.1/24,fd00:18::1/64"); IPv6
// addresses are added with nodad so they are usable at once. The ends are
// named "v<n>-<peer label>" (at most 15 characters, n counting the links of
// that namespace), and a may equal b. The pair disappears with either
// namespace.
func Link(t testing.TB, a *NS, aAddr string, b *NS, bAddr string) (aIf, bIf string) {
	t.Helper()
	if a == nil || b == nil {
		t.Fatalf("netns.Link: %v: nil namespace", ErrInvalid)
		return "", ""
	}
	aPfx, err := parseAddrs(aAddr)
	if err != nil {
		t.Fatalf("netns.Link: %v", err)
	}
	bPfx, err := parseAddrs(bAddr)
	if err != nil {
		t.Fatalf("netns.Link: %v", err)
	}
	aIf, bIf = a.nextIf(b.label), b.nextIf(a.label)
	if _, err := ip("link", "add", aIf, "netns", a.name, "type", "veth",
		"peer", "name", bIf, "netns", b.name); err != nil {
		t.Fatalf("netns.Link: %v", err)
	}
	if err := a.configure(aIf, aPfx); err != nil {
		t.Fatalf("netns.Link: %v", err)
	}
	if err := b.configure(bIf, bPfx); err != nil {
		t.Fatalf("netns.Link: %v", err)
	}
	return aIf, bIf
}

func (ns *NS) nextIf(peer string) string {
	ns.mu.Lock()
	n := ns.links
	ns.links++
	ns.mu.Unlock()
	name := "v" + strconv.Itoa(n) + "-" + peer
	if len(name) > maxIfName {
		name = name[:maxIfName]
	}
	return name
}

func (ns *NS) configure(dev string, addrs []netip.Prefix) error {
	for _, p := range addrs {
		args := []string{"-n", ns.name, "addr", "add", p.String(), "dev", dev}
		if p.Addr().Is6() {
			args = append(args, "nodad")
		}
		if _, err := ip(args...); err != nil {
			return err
		}
	}
	_, err := ip("-n", ns.name, "link", "set", dev, "up")
	return err
}

// parseAddrs parses Link's address list.
func parseAddrs(s string) ([]netip.Prefix, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	parts := strings.Split(s, ",")
	if len(parts) > MaxAddrs {
		return nil, fmt.Errorf("%w: %d addresses, at most %d", ErrInvalid, len(parts), MaxAddrs)
	}
	out := make([]netip.Prefix, 0, len(parts))
	for _, part := range parts {
		p, err := netip.ParsePrefix(strings.TrimSpace(part))
		if err != nil {
			return nil, fmt.Errorf("%w: address %q: %v", ErrInvalid, part, err)
		}
		if p.Addr().Is4In6() {
			return nil, fmt.Errorf("%w: address %q is IPv4-mapped IPv6", ErrInvalid, part)
		}
		out = append(out, p)
	}
	return out, nil
}

// AddRoute adds a route for cidr in the namespace through gw and fails t on
// any error. cidr is a prefix without host bits or "default" (IPv4, or IPv6
// when gw is an IPv6 address; "::/0" is the IPv6 default through a device).
// gw is a next-hop address of the same family without a zone ("via gw") or
// else a device name ("dev gw").
func (ns *NS) AddRoute(t testing.TB, cidr, gw string) {
	t.Helper()
	args, err := routeArgs(cidr, gw)
	if err != nil {
		t.Fatalf("netns.AddRoute: %v", err)
	}
	if _, err := ip(append([]string{"-n", ns.name}, args...)...); err != nil {
		t.Fatalf("netns.AddRoute: %v", err)
	}
}

// routeArgs builds the ip arguments (after "-n <ns>") that add the route.
func routeArgs(cidr, gw string) ([]string, error) {
	v6 := false
	if cidr != "default" {
		p, err := netip.ParsePrefix(cidr)
		if err != nil {
			return nil, fmt.Errorf("%w: route %q: %v", ErrInvalid, cidr, err)
		}
		if p != p.Masked() {
			return nil, fmt.Errorf("%w: route %q has host bits set (want %s)", ErrInvalid, cidr, p.Masked())
		}
		v6 = p.Addr().Is6()
	}
	var nexthop []string
	if a, err := netip.ParseAddr(gw); err == nil {
		if cidr == "default" {
			v6 = a.Is6()
		}
		if a.Is6() != v6 || a.Is4In6() {
			return nil, fmt.Errorf("%w: route %q via %q mixes address families", ErrInvalid, cidr, gw)
		}
		if a.Zone() != "" {
			return nil, fmt.Errorf("%w: next hop %q has a zone (give a global address)", ErrInvalid, gw)
		}
		nexthop = []string{"via", a.String()}
	} else {
		if err := checkIfName(gw); err != nil {
			return nil, err
		}
		nexthop = []string{"dev", gw}
	}
	family := "-4"
	if v6 {
		family = "-6"
	}
	return append([]string{family, "route", "add", cidr}, nexthop...), nil
}

// checkIfName accepts a Linux interface name that cannot pass for an ip
// option.
func checkIfName(name string) error {
	if name == "" || len(name) > maxIfName || name == "." || name == ".." || name[0] == '-' {
		return fmt.Errorf("%w: interface name %q", ErrInvalid, name)
	}
	for _, c := range []byte(name) {
		if c <= ' ' || c >= 0x7f || c == '/' || c == ':' {
			return fmt.Errorf("%w: interface name %q", ErrInvalid, name)
		}
	}
	return nil
}

// EnableForwarding turns on IPv4 and IPv6 forwarding in the namespace and
// fails t on any error.
func (ns *NS) EnableForwarding(t testing.TB) {
	t.Helper()
	err := ns.Do(func() error {
		// /proc/sys/net shows the opening thread's namespace.
		for _, p := range []string{"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"} {
			if err := os.WriteFile(p, []byte("1\n"), 0); err != nil {
				return fmt.Errorf("netns: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("netns.EnableForwarding in %s: %v", ns.name, err)
	}
}

var pingPath = sync.OnceValues(func() (string, error) {
	p, err := exec.LookPath("ping")
	if err != nil {
		return "", fmt.Errorf("%w: ping (iputils-ping) not found: %v", ErrUnavailable, err)
	}
	return p, nil
})

// Ping sends count echo requests (1 to MaxPingCount, 0.2 s apart) from the
// namespace to addr, an IP address, waiting at most 1 s for each reply, and
// returns nil when every reply arrived and an error wrapping ErrCommand
// otherwise. A missing ping binary skips t (fails it under
// AVON_REQUIRE_SERVICES=1); a malformed argument is an error wrapping
// ErrInvalid.
func (ns *NS) Ping(t testing.TB, addr string, count int) error {
	t.Helper()
	path, err := pingPath()
	if err != nil {
		skipOrFail(t, err)
	}
	args, limit, err := pingArgs(path, addr, count)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline(t, limit))
	defer cancel()
	_, err = ns.RunContext(ctx, args...)
	return err
}

// pingArgs builds the ping command and the deadline for the whole run.
func pingArgs(path, addr string, count int) ([]string, time.Duration, error) {
	if count < 1 || count > MaxPingCount {
		return nil, 0, fmt.Errorf("%w: ping count %d, want 1 to %d", ErrInvalid, count, MaxPingCount)
	}
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: ping address %q: %v", ErrInvalid, addr, err)
	}
	if z := a.Zone(); z != "" {
		if err := checkIfName(z); err != nil {
			return nil, 0, fmt.Errorf("%w: ping address %q: zone: %v", ErrInvalid, addr, err)
		}
	}
	// ping stops at its own deadline (-w): the interval times count plus
	// the last reply's 1 s; the context adds a margin on top.
	w := count/5 + 2
	args := []string{path, "-n", "-q", "-c", strconv.Itoa(count), "-W", "1",
		"-i", pingInterval, "-w", strconv.Itoa(w), a.String()}
	return args, time.Duration(w+5) * time.Second, nil
}
