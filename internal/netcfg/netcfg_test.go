package netcfg

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/avonzt/avon/internal/testsvc/netns"
)

// These tests configure real interfaces in a private network namespace
// (internal/testsvc/netns: skipped unless root with /dev/net/tun, failed
// instead under AVON_REQUIRE_SERVICES=1): a dummy interface d0 and a TUN
// device avtest0 made by wireguard-go, as the agent makes it.
// (Where the kernel lacks the dummy driver, d0 is a veth end instead.)

const (
	dummyDev = "d0"
	tunDev   = "avtest0"
)

// testEnv is one namespace with d0 and avtest0 and a Conn opened in it.
type testEnv struct {
	ns *netns.NS
	c  *Conn
}

func newEnv(t testing.TB) *testEnv {
	t.Helper()
	ns := netns.New(t, "netcfg")
	// d0 is a dummy interface where the kernel has the dummy driver, else
	// one end of a veth pair whose other end stays down, so that nothing
	// happens on it when d0 goes up (some VM kernels lack the dummy
	// module).
	if _, err := ns.Run(t, "ip", "link", "add", dummyDev, "type", "dummy"); err != nil {
		if _, err := ns.Run(t, "ip", "link", "add", dummyDev, "type", "veth", "peer", "name", dummyDev+"p"); err != nil {
			t.Fatal(err)
		}
	}
	var (
		dev tun.Device
		c   *Conn
	)
	if err := ns.Do(func() error {
		var err error
		if dev, err = tun.CreateTUN(tunDev, 1420); err != nil {
			return fmt.Errorf("create TUN: %w", err)
		}
		c, err = Open()
		return err
	}); err != nil {
		if dev != nil {
			dev.Close()
		}
		t.Fatalf("in %s: %v", ns, err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Error(err)
		}
		dev.Close()
	})
	return &testEnv{ns: ns, c: c}
}

// ip runs ip with args in the namespace and returns its output.
func (e *testEnv) ip(t testing.TB, args ...string) string {
	t.Helper()
	out, err := e.ns.Run(t, append([]string{"ip"}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// ipLink is the part of "ip -j link" the tests read.
type ipLink struct {
	Index int      `json:"ifindex"`
	Name  string   `json:"ifname"`
	MTU   int      `json:"mtu"`
	Flags []string `json:"flags"`
}

func (e *testEnv) ipLink(t *testing.T, dev string) ipLink {
	t.Helper()
	var links []ipLink
	if err := json.Unmarshal([]byte(e.ip(t, "-j", "link", "show", "dev", dev)), &links); err != nil || len(links) != 1 {
		t.Fatalf("ip -j link show dev %s: %d links, %v", dev, len(links), err)
	}
	return links[0]
}

// ipAddrs lists the addresses of dev as ip shows them.
func (e *testEnv) ipAddrs(t *testing.T, dev string) []netip.Prefix {
	t.Helper()
	var links []struct {
		AddrInfo []struct {
			Local     string `json:"local"`
			PrefixLen int    `json:"prefixlen"`
		} `json:"addr_info"`
	}
	if err := json.Unmarshal([]byte(e.ip(t, "-j", "addr", "show", "dev", dev)), &links); err != nil || len(links) != 1 {
		t.Fatalf("ip -j addr show dev %s: %d links, %v", dev, len(links), err)
	}
	var out []netip.Prefix
	for _, a := range links[0].AddrInfo {
		out = append(out, netip.PrefixFrom(netip.MustParseAddr(a.Local), a.PrefixLen))
	}
	return out
}

// ipRoutes lists the routes of protocol Protocol through dev, both
// families, as ip shows them.
func (e *testEnv) ipRoutes(t *testing.T, dev string) []Route {
	t.Helper()
	var out []Route
	for _, fam := range []string{"-4", "-6"} {
		var routes []struct {
			Dst     string `json:"dst"`
			Gateway string `json:"gateway"`
			Metric  int    `json:"metric"`
		}
		js := e.ip(t, "-j", fam, "route", "show", "table", "main", "proto", fmt.Sprint(Protocol), "dev", dev)
		if err := json.Unmarshal([]byte(js), &routes); err != nil {
			t.Fatalf("ip -j %s route: %v: %s", fam, err, js)
		}
		for _, r := range routes {
			dst := r.Dst
			if dst == "default" {
				dst = map[string]string{"-4": "0.0.0.0/0", "-6": "::/0"}[fam]
			} else if !strings.Contains(dst, "/") {
				dst += map[string]string{"-4": "/32", "-6": "/128"}[fam]
			}
			rt := Route{Dst: netip.MustParsePrefix(dst), Dev: dev, Metric: r.Metric}
			if r.Gateway != "" {
				rt.Via = netip.MustParseAddr(r.Gateway)
			}
			out = append(out, rt)
		}
	}
	return out
}

// snapshot is the namespace's whole link, address and route state as ip
// prints it, for before/after comparisons. The links' queueing disciplines
// are left out: the kernel attaches the default one the first time a
// link goes up and keeps it, which is not ours to undo.
func (e *testEnv) snapshot(t *testing.T) string {
	t.Helper()
	var links []map[string]any
	js := e.ip(t, "-j", "addr")
	if err := json.Unmarshal([]byte(js), &links); err != nil {
		t.Fatalf("ip -j addr: %v: %s", err, js)
	}
	for _, l := range links {
		delete(l, "qdisc")
	}
	addrs, err := json.Marshal(links)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join([]string{
		string(addrs),
		e.ip(t, "-j", "-4", "route", "show", "table", "all"),
		e.ip(t, "-j", "-6", "route", "show", "table", "all"),
	}, "\n")
}

func wantErr(t *testing.T, what string, err error, want ...error) {
	t.Helper()
	for _, w := range want {
		if !errors.Is(err, w) {
			t.Errorf("%s: error %v, want %v", what, err, w)
		}
	}
}

func TestLink(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, dev := range []string{dummyDev, tunDev} {
		t.Run(dev, func(t *testing.T) {
			ip := e.ipLink(t, dev)
			l, err := e.c.Link(dev)
			if err != nil {
				t.Fatal(err)
			}
			if l.Index != ip.Index || l.Name != dev || l.MTU != ip.MTU || l.Up {
				t.Fatalf("Link = %+v, ip says %+v (down)", l, ip)
			}
			if idx, err := e.c.LinkIndex(dev); err != nil || idx != ip.Index {
				t.Fatalf("LinkIndex = %d, %v, want %d", idx, err, ip.Index)
			}
			for _, up := range []bool{true, true, false, false, true} { // repeats are no-ops
				if err := e.c.SetLinkUp(dev, up); err != nil {
					t.Fatal(err)
				}
				if l, err := e.c.Link(dev); err != nil || l.Up != up {
					t.Fatalf("after SetLinkUp(%t): Link = %+v, %v", up, l, err)
				}
				if got := slices.Contains(e.ipLink(t, dev).Flags, "UP"); got != up {
					t.Fatalf("after SetLinkUp(%t) ip shows UP=%t", up, got)
				}
			}
			for _, mtu := range []int{1280, 9000, MinMTU, 1420} {
				if err := e.c.SetMTU(dev, mtu); err != nil {
					t.Fatal(err)
				}
				if got := e.ipLink(t, dev).MTU; got != mtu {
					t.Fatalf("after SetMTU(%d) ip shows mtu %d", mtu, got)
				}
				if l, err := e.c.Link(dev); err != nil || l.MTU != mtu {
					t.Fatalf("after SetMTU(%d): Link = %+v, %v", mtu, l, err)
				}
			}
		})
	}

	t.Run("errors", func(t *testing.T) {
		_, err := e.c.Link("nosuch0")
		wantErr(t, "Link(nosuch0)", err, ErrNotFound, unix.ENODEV)
		_, err = e.c.LinkIndex("nosuch0")
		wantErr(t, "LinkIndex(nosuch0)", err, ErrNotFound)
		wantErr(t, "SetLinkUp(nosuch0)", e.c.SetLinkUp("nosuch0", true), ErrNotFound)
		wantErr(t, "SetMTU(nosuch0)", e.c.SetMTU("nosuch0", 1400), ErrNotFound)
		// The TUN driver's limit is 65535: the kernel refuses, not us.
		wantErr(t, "SetMTU(tun, 70000)", e.c.SetMTU(tunDev, 70000), ErrRefused, unix.EINVAL)
		for _, mtu := range []int{-1, 0, MinMTU - 1, MaxMTU + 1} {
			wantErr(t, fmt.Sprintf("SetMTU(%d)", mtu), e.c.SetMTU(dummyDev, mtu), ErrInvalid)
		}
		for _, name := range []string{"", "a/b", "a:b", "a b", "a\x00", ".", "..", "abcdefghijklmnop"} {
			_, err := e.c.Link(name)
			wantErr(t, fmt.Sprintf("Link(%q)", name), err, ErrInvalid)
			wantErr(t, fmt.Sprintf("SetLinkUp(%q)", name), e.c.SetLinkUp(name, true), ErrInvalid)
		}
		if l := e.ipLink(t, dummyDev); l.MTU != 1420 {
			t.Errorf("a refused SetMTU changed the MTU to %d", l.MTU)
		}
	})
}

func TestAddrs(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cases := []struct {
		dev  string
		addr string
	}{
		{dummyDev, "198.18.7.1/24"},
		{dummyDev, "198.18.7.1/32"}, // same IPv4 address, other prefix length: another address
		{dummyDev, "198.18.8.9/32"},
		{dummyDev, "fd00:7::1/64"},
		{dummyDev, "2001:db8::5/128"},
		{tunDev, "10.77.0.2/32"},
		{tunDev, "100.64.3.4/10"},
		{tunDev, "fd00:77::2/128"},
	}
	// Both links up: IPv6 link-local addresses appear and must be left alone.
	for _, dev := range []string{dummyDev, tunDev} {
		if err := e.c.SetLinkUp(dev, true); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range cases {
		p := netip.MustParsePrefix(tc.addr)
		t.Run(tc.dev+"/"+tc.addr, func(t *testing.T) {
			if err := e.c.AddAddr(tc.dev, p); err != nil {
				t.Fatal(err)
			}
			got, err := e.c.Addrs(tc.dev)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Contains(got, p) {
				t.Fatalf("Addrs = %v, missing %v", got, p)
			}
			if ip := e.ipAddrs(t, tc.dev); !slices.Equal(got, ip) {
				t.Fatalf("Addrs = %v, ip shows %v", got, ip)
			}
			if p.Addr().Is6() {
				// Added without duplicate address detection: usable at once.
				out := e.ip(t, "-6", "addr", "show", "dev", tc.dev, "to", p.String())
				if !strings.Contains(out, "nodad") || strings.Contains(out, "tentative") {
					t.Fatalf("%v not added nodad: %s", p, out)
				}
			}
			wantErr(t, "second AddAddr", e.c.AddAddr(tc.dev, p), ErrExists, unix.EEXIST)
		})
	}
	for _, tc := range cases {
		p := netip.MustParsePrefix(tc.addr)
		if err := e.c.DelAddr(tc.dev, p); err != nil {
			t.Fatal(err)
		}
		wantErr(t, "second DelAddr "+tc.addr, e.c.DelAddr(tc.dev, p), ErrNotFound, unix.EADDRNOTAVAIL)
	}
	for _, dev := range []string{dummyDev, tunDev} {
		got, err := e.c.Addrs(dev)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range got {
			if !p.Addr().IsLinkLocalUnicast() {
				t.Errorf("%s still has %v after every delete", dev, p)
			}
		}
		if ip := e.ipAddrs(t, dev); !slices.Equal(got, ip) {
			t.Errorf("Addrs(%s) = %v, ip shows %v", dev, got, ip)
		}
	}

	t.Run("errors", func(t *testing.T) {
		for _, p := range []netip.Prefix{{}, netip.MustParsePrefix("::ffff:10.0.0.1/120"),
			netip.MustParsePrefix("0.0.0.0/8"), netip.MustParsePrefix("::/0")} {
			wantErr(t, fmt.Sprintf("AddAddr(%v)", p), e.c.AddAddr(dummyDev, p), ErrInvalid)
			wantErr(t, fmt.Sprintf("DelAddr(%v)", p), e.c.DelAddr(dummyDev, p), ErrInvalid)
		}
		p := netip.MustParsePrefix("198.18.9.1/24")
		wantErr(t, "AddAddr(nosuch0)", e.c.AddAddr("nosuch0", p), ErrNotFound)
		wantErr(t, "DelAddr(missing)", e.c.DelAddr(dummyDev, p), ErrNotFound)
		// The address exists with /24; deleting it as /25 must not.
		if err := e.c.AddAddr(dummyDev, p); err != nil {
			t.Fatal(err)
		}
		wantErr(t, "DelAddr(other length)", e.c.DelAddr(dummyDev, netip.MustParsePrefix("198.18.9.1/25")), ErrNotFound)
		if !slices.Contains(e.ipAddrs(t, dummyDev), p) {
			t.Error("a DelAddr with another prefix length removed the address")
		}
		_, err := e.c.Addrs("nosuch0")
		wantErr(t, "Addrs(nosuch0)", err, ErrNotFound)
	})
}

func TestRoutes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, dev := range []string{dummyDev, tunDev} {
		if err := e.c.SetLinkUp(dev, true); err != nil {
			t.Fatal(err)
		}
	}
	for _, a := range []struct{ dev, p string }{
		{dummyDev, "198.18.0.1/24"}, {dummyDev, "fd00:18::1/64"},
		{tunDev, "10.77.0.2/24"}, {tunDev, "fd00:77::2/64"},
	} {
		if err := e.c.AddAddr(a.dev, netip.MustParsePrefix(a.p)); err != nil {
			t.Fatal(err)
		}
	}
	// A route of another protocol through d0: never listed, never deleted.
	e.ip(t, "route", "add", "203.0.113.0/24", "dev", dummyDev, "proto", "static")

	r := func(dst, dev, via string, metric int) Route {
		rt := Route{Dst: netip.MustParsePrefix(dst), Dev: dev, Metric: metric}
		if via != "" {
			rt.Via = netip.MustParseAddr(via)
		}
		return rt
	}
	cases := []struct {
		name string
		r    Route
		want Route // as listed back
	}{
		// Metric 50 first: deleted first it is matched exactly, while a
		// DelRoute with metric 0 matches any metric (the kernel takes
		// the lowest).
		{"v4 link metric", r("10.8.0.0/16", dummyDev, "", 50), r("10.8.0.0/16", dummyDev, "", 50)},
		{"v4 link", r("10.8.0.0/16", dummyDev, "", 0), r("10.8.0.0/16", dummyDev, "", 0)},
		{"v4 via", r("10.9.0.0/16", dummyDev, "198.18.0.254", 0), r("10.9.0.0/16", dummyDev, "198.18.0.254", 0)},
		{"v4 host", r("192.0.2.7/32", dummyDev, "", 7), r("192.0.2.7/32", dummyDev, "", 7)},
		{"v4 default", r("0.0.0.0/0", dummyDev, "198.18.0.254", 900), r("0.0.0.0/0", dummyDev, "198.18.0.254", 900)},
		{"v6 link", r("fd00:8::/48", dummyDev, "", 0), r("fd00:8::/48", dummyDev, "", ipv6DefaultMetric)},
		{"v6 via", r("fd00:9::/48", dummyDev, "fd00:18::fe", 10), r("fd00:9::/48", dummyDev, "fd00:18::fe", 10)},
		{"v6 via link-local", r("fd00:a::/48", dummyDev, "fe80::1", 11), r("fd00:a::/48", dummyDev, "fe80::1", 11)},
		{"v6 default", r("::/0", dummyDev, "", 2000), r("::/0", dummyDev, "", 2000)},
		{"tun v4", r("172.16.0.0/12", tunDev, "", 0), r("172.16.0.0/12", tunDev, "", 0)},
		{"tun v4 via", r("172.20.0.0/16", tunDev, "10.77.0.1", 5), r("172.20.0.0/16", tunDev, "10.77.0.1", 5)},
		{"tun v6", r("fd00:100::/40", tunDev, "", 0), r("fd00:100::/40", tunDev, "", ipv6DefaultMetric)},
	}
	want := map[string][]Route{}
	for _, tc := range cases {
		t.Run("add "+tc.name, func(t *testing.T) {
			if err := e.c.AddRoute(tc.r); err != nil {
				t.Fatal(err)
			}
			wantErr(t, "second AddRoute", e.c.AddRoute(tc.r), ErrExists, unix.EEXIST)
		})
		want[tc.r.Dev] = append(want[tc.r.Dev], tc.want)
	}
	check := func(t *testing.T) {
		t.Helper()
		for _, dev := range []string{dummyDev, tunDev} {
			got, err := e.c.Routes(dev)
			if err != nil {
				t.Fatal(err)
			}
			if !sameRoutes(got, want[dev]) {
				t.Errorf("Routes(%s) = %v, want %v", dev, got, want[dev])
			}
			if ip := e.ipRoutes(t, dev); !sameRoutes(got, ip) {
				t.Errorf("Routes(%s) = %v, ip shows %v", dev, got, ip)
			}
		}
	}
	check(t)
	for _, tc := range cases {
		t.Run("delete "+tc.name, func(t *testing.T) {
			if err := e.c.DelRoute(tc.r); err != nil {
				t.Fatal(err)
			}
			want[tc.r.Dev] = slices.DeleteFunc(want[tc.r.Dev], func(x Route) bool { return x == tc.want })
			check(t)
			wantErr(t, "second DelRoute", e.c.DelRoute(tc.r), ErrNotFound, unix.ESRCH)
		})
	}
	if out := e.ip(t, "route", "show", "203.0.113.0/24"); !strings.Contains(out, "203.0.113.0/24") {
		t.Error("the static route of another protocol is gone")
	}

	t.Run("errors", func(t *testing.T) {
		wantErr(t, "DelRoute(other protocol)", e.c.DelRoute(r("203.0.113.0/24", dummyDev, "", 0)), ErrNotFound)
		wantErr(t, "AddRoute(nosuch0)", e.c.AddRoute(r("10.1.0.0/16", "nosuch0", "", 0)), ErrNotFound)
		// The gateway is not on any connected network: the kernel refuses.
		err := e.c.AddRoute(r("10.2.0.0/16", dummyDev, "192.0.2.1", 0))
		wantErr(t, "AddRoute(unreachable gateway)", err, ErrRefused, unix.ENETUNREACH)
		for _, bad := range []Route{
			{Dev: dummyDev},
			r("10.1.0.1/16", dummyDev, "", 0), // host bits
			{Dst: netip.MustParsePrefix("::ffff:10.0.0.0/104"), Dev: dummyDev},
			r("10.1.0.0/16", dummyDev, "fd00:18::1", 0), // family mismatch
			r("fd00:1::/48", dummyDev, "198.18.0.1", 0),
			r("10.1.0.0/16", dummyDev, "0.0.0.0", 0),
			{Dst: netip.MustParsePrefix("fd00:1::/48"), Dev: dummyDev, Via: netip.MustParseAddr("fe80::1%d0")},
			r("10.1.0.0/16", dummyDev, "", -1),
			r("10.1.0.0/16", "", "", 0),
		} {
			wantErr(t, fmt.Sprintf("AddRoute(%v)", bad), e.c.AddRoute(bad), ErrInvalid)
			wantErr(t, fmt.Sprintf("DelRoute(%v)", bad), e.c.DelRoute(bad), ErrInvalid)
		}
		_, err = e.c.Routes("nosuch0")
		wantErr(t, "Routes(nosuch0)", err, ErrNotFound)
	})
}

func sameRoutes(a, b []Route) bool {
	key := func(r Route) string { return r.String() }
	as, bs := make([]string, len(a)), make([]string, len(b))
	for i := range a {
		as[i] = key(a[i])
	}
	for i := range b {
		bs[i] = key(b[i])
	}
	slices.Sort(as)
	slices.Sort(bs)
	return slices.Equal(as, bs)
}

func TestApplyUndo(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	plans := []Plan{
		{
			Dev: tunDev, MTU: 1380, Up: true,
			Addrs: []netip.Prefix{netip.MustParsePrefix("10.77.0.2/32"), netip.MustParsePrefix("fd00:77::2/128")},
			Routes: []Route{
				{Dst: netip.MustParsePrefix("10.0.0.0/8")},
				{Dst: netip.MustParsePrefix("192.168.50.0/24"), Metric: 20},
				{Dst: netip.MustParsePrefix("fd00:100::/40"), Dev: tunDev},
			},
		},
		{
			Dev: dummyDev, Up: true,
			Addrs: []netip.Prefix{netip.MustParsePrefix("198.18.0.1/24"), netip.MustParsePrefix("fd00:18::1/64")},
			Routes: []Route{
				{Dst: netip.MustParsePrefix("10.9.0.0/16"), Via: netip.MustParseAddr("198.18.0.254")},
				{Dst: netip.MustParsePrefix("fd00:9::/48"), Via: netip.MustParseAddr("fd00:18::fe"), Metric: 5},
				{Dst: netip.MustParsePrefix("::/0"), Metric: 3000},
			},
		},
		{Dev: dummyDev, MTU: 1500}, // MTU already 1500: nothing to do
	}
	for _, p := range plans {
		t.Run(p.Dev, func(t *testing.T) {
			before := e.snapshot(t)
			a, err := e.c.Apply(p)
			if err != nil {
				t.Fatal(err)
			}
			l, err := e.c.Link(p.Dev)
			if err != nil {
				t.Fatal(err)
			}
			if p.MTU != 0 && l.MTU != p.MTU || l.Up != p.Up {
				t.Errorf("after Apply: %+v", l)
			}
			addrs := e.ipAddrs(t, p.Dev)
			for _, want := range p.Addrs {
				if !slices.Contains(addrs, want) {
					t.Errorf("after Apply ip shows %v, missing %v", addrs, want)
				}
			}
			if got := e.ipRoutes(t, p.Dev); len(got) != len(p.Routes) {
				t.Errorf("after Apply ip shows routes %v, want %d", got, len(p.Routes))
			}
			if e.snapshot(t) == before && len(a.Steps()) > 0 {
				t.Fatal("Apply changed nothing ip can see")
			}
			if err := a.Undo(); err != nil {
				t.Fatal(err)
			}
			if after := e.snapshot(t); after != before {
				t.Errorf("Undo left the namespace changed:\nbefore %s\nafter  %s", before, after)
			}
			if n := len(a.Steps()); n != 0 {
				t.Errorf("%d steps left after Undo", n)
			}
			if err := a.Undo(); err != nil {
				t.Errorf("second Undo: %v", err)
			}
		})
	}

	t.Run("failed step rolls back", func(t *testing.T) {
		before := e.snapshot(t)
		_, err := e.c.Apply(Plan{
			Dev: dummyDev, MTU: 1400, Up: true,
			Addrs: []netip.Prefix{netip.MustParsePrefix("198.18.0.1/24")},
			Routes: []Route{
				{Dst: netip.MustParsePrefix("10.9.0.0/16")},
				{Dst: netip.MustParsePrefix("10.10.0.0/16"), Via: netip.MustParseAddr("192.0.2.1")}, // unreachable
			},
		})
		wantErr(t, "Apply with an unreachable gateway", err, ErrRefused, unix.ENETUNREACH)
		if after := e.snapshot(t); after != before {
			t.Errorf("a failed Apply left changes:\nbefore %s\nafter  %s", before, after)
		}
	})

	t.Run("existing address is not adopted", func(t *testing.T) {
		e.ip(t, "addr", "add", "198.18.1.1/24", "dev", dummyDev)
		before := e.snapshot(t)
		_, err := e.c.Apply(Plan{Dev: dummyDev, Addrs: []netip.Prefix{
			netip.MustParsePrefix("198.18.2.1/24"), netip.MustParsePrefix("198.18.1.1/24")}})
		wantErr(t, "Apply with an existing address", err, ErrExists)
		if after := e.snapshot(t); after != before {
			t.Errorf("a failed Apply left changes:\nbefore %s\nafter  %s", before, after)
		}
		e.ip(t, "addr", "del", "198.18.1.1/24", "dev", dummyDev)
	})

	t.Run("undo tolerates what is gone", func(t *testing.T) {
		before := e.snapshot(t)
		a, err := e.c.Apply(Plan{Dev: dummyDev, Up: true, MTU: 1300,
			Addrs:  []netip.Prefix{netip.MustParsePrefix("198.18.3.1/24")},
			Routes: []Route{{Dst: netip.MustParsePrefix("10.11.0.0/16")}}})
		if err != nil {
			t.Fatal(err)
		}
		e.ip(t, "route", "del", "10.11.0.0/16", "dev", dummyDev)
		e.ip(t, "addr", "del", "198.18.3.1/24", "dev", dummyDev)
		if err := a.Undo(); err != nil {
			t.Fatal(err)
		}
		if after := e.snapshot(t); after != before {
			t.Errorf("Undo left changes:\nbefore %s\nafter  %s", before, after)
		}
	})

	t.Run("undo after the device is gone", func(t *testing.T) {
		e.ip(t, "link", "add", "d1", "type", "veth", "peer", "name", "d1p")
		a, err := e.c.Apply(Plan{Dev: "d1", Up: true, MTU: 1300,
			Addrs:  []netip.Prefix{netip.MustParsePrefix("198.18.4.1/24")},
			Routes: []Route{{Dst: netip.MustParsePrefix("10.12.0.0/16")}}})
		if err != nil {
			t.Fatal(err)
		}
		e.ip(t, "link", "del", "d1")
		if err := a.Undo(); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("invalid plans change nothing", func(t *testing.T) {
		before := e.snapshot(t)
		a4 := netip.MustParsePrefix("198.18.5.1/24")
		for _, p := range []Plan{
			{Dev: ""},
			{Dev: "nosuch0", Addrs: []netip.Prefix{a4}},
			{Dev: dummyDev, MTU: 10, Addrs: []netip.Prefix{a4}},
			{Dev: dummyDev, Addrs: []netip.Prefix{a4, netip.MustParsePrefix("198.18.5.1/32")}},
			{Dev: dummyDev, Addrs: []netip.Prefix{a4, {}}},
			{Dev: dummyDev, Addrs: []netip.Prefix{a4}, Routes: []Route{{Dst: netip.MustParsePrefix("10.0.0.0/8"), Dev: tunDev}}},
			{Dev: dummyDev, Addrs: []netip.Prefix{a4}, Routes: []Route{{Dst: netip.MustParsePrefix("10.0.0.1/8")}}},
			{Dev: dummyDev, Routes: []Route{
				{Dst: netip.MustParsePrefix("fd00::/8")}, {Dst: netip.MustParsePrefix("fd00::/8"), Metric: 1024}}},
		} {
			a, err := e.c.Apply(p)
			if err == nil || a != nil {
				t.Errorf("Apply(%+v) = %v, %v", p, a, err)
			}
		}
		if after := e.snapshot(t); after != before {
			t.Errorf("invalid plans left changes:\nbefore %s\nafter  %s", before, after)
		}
	})
}

// TestStaleReplies sends requests whose replies nobody reads, then checks
// that later requests skip them by sequence number.
func TestStaleReplies(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	want, err := e.c.LinkIndex(tunDev)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		req := newRequest(unix.RTM_GETLINK, unix.NLM_F_ACK, ifInfo(unix.AF_UNSPEC, 0, 0, 0))
		req.str(unix.IFLA_IFNAME, dummyDev)
		if err := unix.Sendto(e.c.fd, req.bytes(0x7fff0000+uint32(i), e.c.pid), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
			t.Fatal(err)
		}
		// A dump of addresses, left unread as well.
		req = newRequest(unix.RTM_GETADDR, unix.NLM_F_DUMP, ifAddr(unix.AF_UNSPEC, 0, 0, 0, 0))
		if err := unix.Sendto(e.c.fd, req.bytes(0x7ffe0000+uint32(i), e.c.pid), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
			t.Fatal(err)
		}
	}
	for range 4 {
		got, err := e.c.LinkIndex(tunDev)
		if err != nil || got != want {
			t.Fatalf("LinkIndex after stale replies = %d, %v, want %d", got, err, want)
		}
	}
	if _, err := e.c.Addrs(dummyDev); err != nil {
		t.Fatal(err)
	}
}

func TestTimeoutAndClose(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var c *Conn
	if err := e.ns.Do(func() (err error) { c, err = Open(); return err }); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	c.timeout = 10 * time.Millisecond // nothing was asked: the read must give up, not block
	_, err := c.recv()
	c.timeout = ReadTimeout
	c.mu.Unlock()
	wantErr(t, "recv with nothing pending", err, ErrTimeout)
	if _, err := c.Link(tunDev); err != nil {
		t.Fatalf("Link after a timeout: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	_, err = c.Link(tunDev)
	wantErr(t, "Link after Close", err, ErrClosed)
	wantErr(t, "SetLinkUp after Close", c.SetLinkUp(tunDev, true), ErrClosed)
	_, err = c.Routes(tunDev)
	wantErr(t, "Routes after Close", err, ErrClosed)
}

// TestConcurrent uses one Conn from several goroutines (run with -race).
func TestConcurrent(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if err := e.c.SetLinkUp(dummyDev, true); err != nil {
		t.Fatal(err)
	}
	const workers, rounds = 8, 20
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, 100, byte(w + 1)}), 32)
			r := Route{Dst: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 100, byte(w), 0}), 24), Dev: dummyDev}
			for range rounds {
				for _, err := range []error{e.c.AddAddr(dummyDev, p), e.c.AddRoute(r)} {
					if err != nil {
						errs <- err
						return
					}
				}
				addrs, err := e.c.Addrs(dummyDev)
				if err == nil && !slices.Contains(addrs, p) {
					err = fmt.Errorf("Addrs = %v, missing %v", addrs, p)
				}
				if err == nil {
					err = errors.Join(e.c.DelRoute(r), e.c.DelAddr(dummyDev, p))
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if routes, err := e.c.Routes(dummyDev); err != nil || len(routes) != 0 {
		t.Errorf("Routes after all deletes = %v, %v", routes, err)
	}
}

// TestPermission opens a Conn on a thread without CAP_NET_ADMIN: changes
// must fail with ErrPermission and change nothing. The thread is never
// given back to the runtime.
func TestPermission(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	before := e.ipLink(t, dummyDev)
	type result struct{ get, set error }
	done := make(chan result, 1)
	go func() {
		// Locked and never unlocked: the thread exits with this goroutine.
		runtime.LockOSThread()
		var res result
		err := e.ns.Do(func() error {
			hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
			var data [2]unix.CapUserData
			if err := unix.Capget(&hdr, &data[0]); err != nil {
				return err
			}
			data[0].Effective &^= 1 << unix.CAP_NET_ADMIN
			if err := unix.Capset(&hdr, &data[0]); err != nil {
				return err
			}
			c, err := Open()
			if err != nil {
				return err
			}
			defer c.Close()
			_, res.get = c.Link(dummyDev)
			res.set = c.SetMTU(dummyDev, 1300)
			return nil
		})
		if err != nil {
			res.get = err
		}
		done <- res
	}()
	res := <-done
	if res.get != nil {
		t.Errorf("Link without CAP_NET_ADMIN: %v (reading needs no privilege)", res.get)
	}
	wantErr(t, "SetMTU without CAP_NET_ADMIN", res.set, ErrPermission, unix.EPERM)
	if after := e.ipLink(t, dummyDev); after.MTU != before.MTU {
		t.Errorf("MTU changed from %d to %d", before.MTU, after.MTU)
	}
}

// TestUnfinishedDump leaves a dump of 5000 routes (about ten datagrams) unread after its first
// datagram, as a timeout would, and checks that the next dump still works:
// the kernel refuses a second dump on a socket while one runs (EBUSY)
// unless the Conn drains the first.
func TestUnfinishedDump(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if err := e.c.SetLinkUp(tunDev, true); err != nil {
		t.Fatal(err)
	}
	const n = 5000
	for i := range n {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24)
		if err := e.c.AddRoute(Route{Dst: p, Dev: tunDev}); err != nil {
			t.Fatal(err)
		}
	}
	e.c.mu.Lock()
	req := newRequest(unix.RTM_GETROUTE, unix.NLM_F_DUMP, rtMsg(unix.AF_INET, 0, 0, 0, 0, 0))
	err := unix.Sendto(e.c.fd, req.bytes(0x7fff0000, e.c.pid), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
	if err == nil {
		_, err = e.c.recv()
	}
	e.c.dirty = true // what a timeout in the middle of the dump leaves
	e.c.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		routes, err := e.c.Routes(tunDev)
		if err != nil || len(routes) != n {
			t.Fatalf("Routes after an unfinished dump = %d routes, %v", len(routes), err)
		}
	}
}
