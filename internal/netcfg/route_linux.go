package netcfg

import (
	"fmt"
	"math"
	"net/netip"

	"golang.org/x/sys/unix"
)

// Protocol is the routing protocol number (rtm_protocol) of every route
// this package installs, so that they can be told apart from the kernel's,
// the administrator's and other daemons' routes: "ip route show proto 65".
// It is not among the numbers iproute2 reserves (rt_protos).
const Protocol uint8 = 65

// Route is a unicast route in the main table through an interface.
type Route struct {
	// Dst is the destination network, in canonical form (no host bits:
	// 10.8.0.0/16, not 10.8.0.1/16); 0.0.0.0/0 and ::/0 are the defaults.
	Dst netip.Prefix
	// Dev names the outgoing interface.
	Dev string
	// Via is the next hop, of Dst's family; the zero Addr means none: the
	// destination is on the link (scope link), as on a TUN device.
	Via netip.Addr
	// Metric is the route's priority, lower first. 0 lets the kernel
	// choose (IPv4 0, IPv6 1024); in DelRoute 0 matches any metric.
	Metric int
}

// String formats the route in the manner of "ip route".
func (r Route) String() string {
	s := r.Dst.String() + " dev " + r.Dev
	if r.Via.IsValid() {
		s += " via " + r.Via.String()
	}
	if r.Metric != 0 {
		s += fmt.Sprintf(" metric %d", r.Metric)
	}
	return s
}

// check validates a route before it is sent.
func (r Route) check() error {
	if err := checkName(r.Dev); err != nil {
		return err
	}
	if !r.Dst.IsValid() || r.Dst.Addr().Is4In6() || r.Dst.Masked() != r.Dst {
		return fmt.Errorf("route destination %s (want a network address without host bits): %w", r.Dst, ErrInvalid)
	}
	if r.Via.IsValid() {
		if r.Via.Is4() != r.Dst.Addr().Is4() || r.Via.Is4In6() || r.Via.Zone() != "" || r.Via.IsUnspecified() {
			return fmt.Errorf("route %s: gateway %s: %w", r.Dst, r.Via, ErrInvalid)
		}
	}
	if r.Metric < 0 || int64(r.Metric) > math.MaxUint32 {
		return fmt.Errorf("route %s: metric %d: %w", r.Dst, r.Metric, ErrInvalid)
	}
	return nil
}

// AddRoute adds r to the main table with protocol Protocol. A route with
// the same destination and metric already there gives ErrExists.
func (c *Conn) AddRoute(r Route) error {
	if err := c.changeRoute(unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_EXCL, r); err != nil {
		return fmt.Errorf("add route %s: %w", r, err)
	}
	return nil
}

// DelRoute removes r from the main table. Only a route installed with
// protocol Protocol matches; a missing one gives ErrNotFound.
func (c *Conn) DelRoute(r Route) error {
	if err := c.changeRoute(unix.RTM_DELROUTE, 0, r); err != nil {
		return fmt.Errorf("delete route %s: %w", r, err)
	}
	return nil
}

func (c *Conn) changeRoute(typ, flags uint16, r Route) error {
	if err := r.check(); err != nil {
		return err
	}
	index, err := c.LinkIndex(r.Dev)
	if err != nil {
		return err
	}
	family := familyOf(r.Dst.Addr())
	// Scopes as iproute2 sets them: IPv6 routes are universe; IPv4 routes
	// are link without a gateway, universe with one, and a delete matches
	// any scope.
	scope := uint8(unix.RT_SCOPE_UNIVERSE)
	switch {
	case family == unix.AF_INET6:
	case typ == unix.RTM_DELROUTE:
		scope = unix.RT_SCOPE_NOWHERE
	case !r.Via.IsValid():
		scope = unix.RT_SCOPE_LINK
	}
	fixed := rtMsg(family, uint8(r.Dst.Bits()), unix.RT_TABLE_MAIN, Protocol, scope, unix.RTN_UNICAST)
	return c.exchange(typ, flags, fixed, func(q *request) {
		if r.Dst.Bits() > 0 {
			q.attr(unix.RTA_DST, r.Dst.Addr().AsSlice())
		}
		q.u32(unix.RTA_OIF, uint32(index))
		if r.Via.IsValid() {
			q.attr(unix.RTA_GATEWAY, r.Via.AsSlice())
		}
		if r.Metric > 0 {
			q.u32(unix.RTA_PRIORITY, uint32(r.Metric))
		}
	}, nil)
}

// Routes lists the IPv4 and IPv6 routes of the main table through the
// interface called dev that were installed with protocol Protocol, IPv4
// first, each family in the kernel's order. Metric is the kernel's value
// (1024 for an IPv6 route added with 0).
func (c *Conn) Routes(dev string) ([]Route, error) {
	if err := checkName(dev); err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	index, err := c.LinkIndex(dev)
	if err != nil {
		return nil, fmt.Errorf("list routes of %s: %w", dev, err)
	}
	var out []Route
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		start := len(out)
		err := c.dump(unix.RTM_GETROUTE, rtMsg(family, 0, 0, 0, 0, 0), nil,
			func() { out = out[:start] },
			func(m message) error {
				if m.Type != unix.RTM_NEWROUTE || len(m.data) < 1 || m.data[0] != family {
					return nil
				}
				ri, err := parseRoute(m.data)
				if err != nil {
					return err
				}
				if ours(ri, uint32(index)) {
					out = append(out, Route{Dst: ri.Dst, Dev: dev, Via: ri.Via, Metric: int(ri.Priority)})
				}
				return nil
			})
		if err != nil {
			return nil, fmt.Errorf("list routes of %s: %w", dev, err)
		}
	}
	return out, nil
}

// ours reports whether a dumped route is one of ours through the link with
// the given index: main table, our protocol, unicast, not a cached clone.
func ours(ri routeInfo, index uint32) bool {
	return ri.Table == unix.RT_TABLE_MAIN && ri.Protocol == Protocol && ri.Type == unix.RTN_UNICAST &&
		ri.Flags&unix.RTM_F_CLONED == 0 && ri.OIF == index
}
