package netcfg

import (
	"fmt"
	"math"
	"strings"

	"golang.org/x/sys/unix"
)

const (
	// maxIfName is the longest interface name Linux accepts (IFNAMSIZ - 1).
	maxIfName = unix.IFNAMSIZ - 1

	// MinMTU and MaxMTU bound what SetMTU accepts; the kernel applies the
	// device's own, narrower limits (IPv6 needs 1280).
	MinMTU = 68
	MaxMTU = math.MaxInt32
)

// Link is the state of a network interface.
type Link struct {
	Index int
	Name  string
	MTU   int
	Up    bool // administratively up (IFF_UP)
}

// checkName validates an interface name the way the kernel's
// dev_valid_name does.
func checkName(name string) error {
	if name == "" || len(name) > maxIfName || name == "." || name == ".." ||
		strings.ContainsAny(name, "/:\x00") || strings.ContainsFunc(name, isSpace) {
		return fmt.Errorf("interface name %q: %w", name, ErrInvalid)
	}
	return nil
}

func isSpace(r rune) bool {
	return r == ' ' || r == '\t' || r == '\n' || r == '\v' || r == '\f' || r == '\r'
}

// Link returns the state of the interface called name (or with the
// alternative name name; Link.Name is then the primary one).
func (c *Conn) Link(name string) (Link, error) {
	if err := checkName(name); err != nil {
		return Link{}, fmt.Errorf("get link: %w", err)
	}
	var (
		info  linkInfo
		found bool
	)
	err := c.exchange(unix.RTM_GETLINK, 0, ifInfo(unix.AF_UNSPEC, 0, 0, 0),
		func(r *request) { r.str(unix.IFLA_IFNAME, name) },
		func(m message) error {
			if m.Type != unix.RTM_NEWLINK {
				return nil
			}
			l, err := parseLink(m.data)
			if err != nil {
				return err
			}
			info, found = l, true
			return nil
		})
	if err != nil {
		return Link{}, fmt.Errorf("get link %s: %w", name, err)
	}
	if !found {
		return Link{}, fmt.Errorf("get link %s: acknowledged without a link: %w", name, ErrMalformed)
	}
	return Link{Index: info.Index, Name: info.Name, MTU: info.MTU, Up: info.Flags&unix.IFF_UP != 0}, nil
}

// LinkIndex returns the index of the interface called name.
func (c *Conn) LinkIndex(name string) (int, error) {
	l, err := c.Link(name)
	if err != nil {
		return 0, err
	}
	return l.Index, nil
}

// SetLinkUp sets the interface called name administratively up or down.
func (c *Conn) SetLinkUp(name string, up bool) error {
	if err := checkName(name); err != nil {
		return fmt.Errorf("set link up: %w", err)
	}
	var flags uint32
	if up {
		flags = unix.IFF_UP
	}
	err := c.exchange(unix.RTM_NEWLINK, 0, ifInfo(unix.AF_UNSPEC, 0, flags, unix.IFF_UP),
		func(r *request) { r.str(unix.IFLA_IFNAME, name) }, nil)
	if err != nil {
		return fmt.Errorf("set link %s up=%t: %w", name, up, err)
	}
	return nil
}

// SetMTU sets the MTU of the interface called name.
func (c *Conn) SetMTU(name string, mtu int) error {
	if err := checkName(name); err != nil {
		return fmt.Errorf("set mtu: %w", err)
	}
	if mtu < MinMTU || mtu > MaxMTU {
		return fmt.Errorf("set mtu of %s: %d: %w", name, mtu, ErrInvalid)
	}
	return c.setMTU(name, mtu)
}

// setMTU sets an MTU without SetMTU's range check, so that Undo can restore
// whatever the interface had (the loopback has 65536, some devices less
// than MinMTU).
func (c *Conn) setMTU(name string, mtu int) error {
	if mtu <= 0 || mtu > MaxMTU {
		return fmt.Errorf("set mtu of %s: %d: %w", name, mtu, ErrInvalid)
	}
	err := c.exchange(unix.RTM_NEWLINK, 0, ifInfo(unix.AF_UNSPEC, 0, 0, 0),
		func(r *request) {
			r.str(unix.IFLA_IFNAME, name)
			r.u32(unix.IFLA_MTU, uint32(mtu))
		}, nil)
	if err != nil {
		return fmt.Errorf("set mtu of %s to %d: %w", name, mtu, err)
	}
	return nil
}
