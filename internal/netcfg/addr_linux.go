package netcfg

import (
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// checkAddrPrefix validates an interface address: a valid prefix whose
// address is IPv4 or plain IPv6 (not IPv4-mapped). Host bits are the point
// of an interface address and are kept.
func checkAddrPrefix(p netip.Prefix) error {
	if !p.IsValid() || p.Addr().Is4In6() || p.Addr().IsUnspecified() {
		return fmt.Errorf("address %s: %w", p, ErrInvalid)
	}
	return nil
}

// AddAddr adds the address p (with its prefix length, e.g. 10.7.0.2/32 or
// fd00:7::2/64) to the interface called name, with universe scope. The
// kernel adds the prefix route that goes with it. An IPv6 address is added
// without duplicate address detection (IFA_F_NODAD, `ip addr add ... nodad`):
// tunnel addresses are assigned by the gateway, and a tentative address
// would refuse to be a source for the detection's second or so. An address
// that is already there gives ErrExists.
func (c *Conn) AddAddr(name string, p netip.Prefix) error {
	if err := c.changeAddr(unix.RTM_NEWADDR, unix.NLM_F_CREATE|unix.NLM_F_EXCL, name, p); err != nil {
		return fmt.Errorf("add address %s to %s: %w", p, name, err)
	}
	return nil
}

// DelAddr removes the address p, with exactly its prefix length, from the
// interface called name. An address that is not there gives ErrNotFound.
func (c *Conn) DelAddr(name string, p netip.Prefix) error {
	if err := c.changeAddr(unix.RTM_DELADDR, 0, name, p); err != nil {
		return fmt.Errorf("delete address %s from %s: %w", p, name, err)
	}
	return nil
}

func (c *Conn) changeAddr(typ, flags uint16, name string, p netip.Prefix) error {
	if err := checkName(name); err != nil {
		return err
	}
	if err := checkAddrPrefix(p); err != nil {
		return err
	}
	index, err := c.LinkIndex(name)
	if err != nil {
		return err
	}
	a := p.Addr()
	var ifaFlags uint8
	if typ == unix.RTM_NEWADDR && a.Is6() {
		ifaFlags = unix.IFA_F_NODAD
	}
	fixed := ifAddr(familyOf(a), uint8(p.Bits()), ifaFlags, unix.RT_SCOPE_UNIVERSE, uint32(index))
	return c.exchange(typ, flags, fixed, func(r *request) {
		// On a broadcast link both are the local address; the kernel
		// reads IFA_LOCAL for IPv4 and IFA_ADDRESS (or IFA_LOCAL) for IPv6.
		r.attr(unix.IFA_LOCAL, a.AsSlice())
		r.attr(unix.IFA_ADDRESS, a.AsSlice())
	}, nil)
}

// Addrs lists every IPv4 and IPv6 address of the interface called name,
// including those the kernel added itself (IPv6 link-local ones), in the
// kernel's order.
func (c *Conn) Addrs(name string) ([]netip.Prefix, error) {
	if err := checkName(name); err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	index, err := c.LinkIndex(name)
	if err != nil {
		return nil, fmt.Errorf("list addresses of %s: %w", name, err)
	}
	var out []netip.Prefix
	err = c.dump(unix.RTM_GETADDR, ifAddr(unix.AF_UNSPEC, 0, 0, 0, uint32(index)), nil,
		func() { out = out[:0] },
		func(m message) error {
			if m.Type != unix.RTM_NEWADDR {
				return nil
			}
			a, err := parseAddr(m.data)
			if err != nil {
				return err
			}
			if a.Index == uint32(index) {
				out = append(out, a.Prefix)
			}
			return nil
		})
	if err != nil {
		return nil, fmt.Errorf("list addresses of %s: %w", name, err)
	}
	return out, nil
}
