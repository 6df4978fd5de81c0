package netns

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// Owner records live in a directory every test binary on the host writes
// to, so their parsers get untrusted bytes.
func FuzzParseOwner(f *testing.F) {
	for _, s := range []string{"12 345\n", "1 1", "", " ", "0 0", "-1 2", "99999999999999999999 1", "1 18446744073709551616", "1\n2", "1 2 3"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		pid, start, err := parseOwner(b)
		if err != nil {
			if !errors.Is(err, ErrInvalid) || pid != 0 || start != 0 {
				t.Fatalf("parseOwner(%q) = %d, %d, %v", b, pid, start, err)
			}
			return
		}
		if pid <= 0 || len(b) > maxOwnerLen {
			t.Fatalf("parseOwner(%q) accepted pid %d", b, pid)
		}
		p2, s2, err := parseOwner([]byte(ownerLine(pid, start)))
		if err != nil || p2 != pid || s2 != start {
			t.Fatalf("round trip of %d %d: %d %d %v", pid, start, p2, s2, err)
		}
	})
}

func FuzzParseStatStart(f *testing.F) {
	fields := strings.Repeat(" 0", 18)
	for _, s := range []string{"1 (init) S" + fields + " 777 0 0", "1 (a) b) S" + fields + " 5", ")", "(", "1 (x) S", ""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := parseStatStart(b); err != nil && !errors.Is(err, ErrInvalid) {
			t.Fatalf("parseStatStart(%q): %v", b, err)
		}
	})
}

func FuzzParseAddrs(f *testing.F) {
	for _, s := range []string{"", "10.0.0.1/24", "10.0.0.1/24,fd00::1/64", "::ffff:1.2.3.4/96", "1.2.3.4/33", ",,,", " 10.0.0.1/8 , fd00::/8 "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := parseAddrs(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) || got != nil {
				t.Fatalf("parseAddrs(%q) = %v, %v", s, got, err)
			}
			return
		}
		if len(got) > MaxAddrs {
			t.Fatalf("parseAddrs(%q) gave %d addresses", s, len(got))
		}
		for _, p := range got {
			if !p.IsValid() || p.Addr().Is4In6() || p.Addr().Zone() != "" {
				t.Fatalf("parseAddrs(%q) gave %v", s, p)
			}
			if q, err := netip.ParsePrefix(p.String()); err != nil || q != p {
				t.Fatalf("%v does not round-trip: %v %v", p, q, err)
			}
		}
	})
}

func FuzzRouteArgs(f *testing.F) {
	for _, s := range [][2]string{{"default", "10.0.0.1"}, {"fd00::/64", "fd00::1"}, {"10.0.0.0/8", "avtun0"}, {"10.0.0.1/8", "x"}, {"::/0", "fe80::1%eth0"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, cidr, gw string) {
		args, err := routeArgs(cidr, gw)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("routeArgs(%q, %q): %v", cidr, gw, err)
			}
			return
		}
		if len(args) != 6 || (args[0] != "-4" && args[0] != "-6") || args[3] != cidr {
			t.Fatalf("routeArgs(%q, %q) = %q", cidr, gw, args)
		}
		for _, a := range args {
			if a == "" || strings.ContainsAny(a, " \t\n\x00") || strings.HasPrefix(a, "-") && a != args[0] {
				t.Fatalf("routeArgs(%q, %q) = %q: unsafe argument %q", cidr, gw, args, a)
			}
		}
	})
}

func FuzzPingArgs(f *testing.F) {
	for _, s := range []string{"10.0.0.1", "fd00::1", "fe80::1%v0-gw", "fe80::1%-x", "-c"} {
		f.Add(s, 1)
	}
	f.Fuzz(func(t *testing.T, addr string, count int) {
		args, limit, err := pingArgs("ping", addr, count)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("pingArgs(%q, %d): %v", addr, count, err)
			}
			return
		}
		if limit <= 0 || limit > time.Minute || count < 1 || count > MaxPingCount {
			t.Fatalf("pingArgs(%q, %d): limit %v", addr, count, limit)
		}
		for _, a := range args[1:] {
			if a == "" || strings.ContainsAny(a, " \t\n\x00") || a == args[len(args)-1] && strings.HasPrefix(a, "-") {
				t.Fatalf("pingArgs(%q, %d) = %q: unsafe argument %q", addr, count, args, a)
			}
		}
	})
}
