// Package netcfg configures Linux network interfaces over rtnetlink: it
// looks links up by name, sets them up or down, sets their MTU, adds and
// removes IPv4 and IPv6 addresses and routes in the main table, and lists
// them. The agent (avon-agent up/down) and the gateway use it to configure
// their TUN devices, and Plan/Applied let them remove exactly what they
// installed, nothing more.
//
// It speaks NETLINK_ROUTE directly through golang.org/x/sys/unix: every
// change asks the kernel for an acknowledgement and a refusal comes back as
// a typed error (ErrExists, ErrNotFound, ErrPermission, ErrRefused) that
// also wraps the kernel's errno. Replies are parsed defensively: sequence
// numbers and port ids are checked, multipart dumps are read until
// NLMSG_DONE, every read waits at most ReadTimeout, and malformed bytes give
// ErrMalformed, never a panic.
//
// Routes it installs carry the routing protocol number Protocol, so that
// they are recognisable ("ip route show proto 65") and Routes lists only
// them. A Conn works in the network namespace of the thread that opened it,
// for its whole life, whichever goroutine uses it later.
//
// In use (avon-agent up, then down):
//
//	c, err := netcfg.Open()
//	...
//	defer c.Close()
//	applied, err := c.Apply(netcfg.Plan{Dev: "avon0", MTU: 1380, Up: true,
//		Addrs:  []netip.Prefix{tunnelAddr4, tunnelAddr6},
//		Routes: []netcfg.Route{{Dst: protected4}, {Dst: protected6}}})
//	...
//	err = applied.Undo() // routes, addresses, up and MTU reverted, newest first
//
// It must not touch any interface, address or route it was not asked to,
// and it holds no policy: which addresses and routes a device gets is the
// caller's decision.
package netcfg
