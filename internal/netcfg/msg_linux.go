package netcfg

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// The netlink wire format, without I/O: request building and reply parsing.
// Headers and fixed structs are in host byte order; addresses in attributes
// are in network byte order.

const (
	hdrLen       = unix.SizeofNlMsghdr     // struct nlmsghdr
	attrHdrLen   = unix.SizeofRtAttr       // struct rtattr / nlattr
	ifInfoLen    = unix.SizeofIfInfomsg    // struct ifinfomsg
	ifAddrLen    = unix.SizeofIfAddrmsg    // struct ifaddrmsg
	rtMsgLen     = unix.SizeofRtMsg        // struct rtmsg
	errMsgLen    = 4 + unix.SizeofNlMsghdr // struct nlmsgerr: error + the request's header
	attrTypeMask = 0x3fff                  // clears NLA_F_NESTED and NLA_F_NET_BYTEORDER
)

var ne = binary.NativeEndian

// align rounds n up to the netlink alignment of 4 bytes.
func align(n int) int { return (n + 3) &^ 3 }

// header is struct nlmsghdr.
type header struct {
	Len   uint32
	Type  uint16
	Flags uint16
	Seq   uint32
	Pid   uint32
}

// message is one netlink message of a reply: its header and its payload,
// which aliases the receive buffer.
type message struct {
	header
	data []byte
}

// parseMessages splits a datagram into its messages. Every message must be
// at least a header long and fit in b; the padding after the last one may be
// missing.
func parseMessages(b []byte) ([]message, error) {
	var msgs []message
	for len(b) > 0 { // every round consumes at least hdrLen bytes
		if len(b) < hdrLen {
			return nil, fmt.Errorf("parse messages: %d trailing bytes: %w", len(b), ErrMalformed)
		}
		h := header{
			Len:   ne.Uint32(b[0:4]),
			Type:  ne.Uint16(b[4:6]),
			Flags: ne.Uint16(b[6:8]),
			Seq:   ne.Uint32(b[8:12]),
			Pid:   ne.Uint32(b[12:16]),
		}
		if h.Len < hdrLen || uint64(h.Len) > uint64(len(b)) {
			return nil, fmt.Errorf("parse messages: length %d with %d bytes left: %w", h.Len, len(b), ErrMalformed)
		}
		msgs = append(msgs, message{header: h, data: b[hdrLen:h.Len]})
		next := min(align(int(h.Len)), len(b))
		b = b[next:]
	}
	return msgs, nil
}

// attr is one routing attribute: its type without the flag bits, and its
// payload, which aliases the message.
type attr struct {
	typ  uint16
	data []byte
}

// parseAttrs splits a run of attributes. Every attribute must be at least a
// header long and fit in b.
func parseAttrs(b []byte) ([]attr, error) {
	attrs := make([]attr, 0, 16) // a route or address carries fewer; a link more
	for len(b) > 0 {             // every round consumes at least attrHdrLen bytes
		if len(b) < attrHdrLen {
			return nil, fmt.Errorf("parse attributes: %d trailing bytes: %w", len(b), ErrMalformed)
		}
		n := int(ne.Uint16(b[0:2]))
		if n < attrHdrLen || n > len(b) {
			return nil, fmt.Errorf("parse attributes: length %d with %d bytes left: %w", n, len(b), ErrMalformed)
		}
		attrs = append(attrs, attr{typ: ne.Uint16(b[2:4]) & attrTypeMask, data: b[attrHdrLen:n]})
		b = b[min(align(n), len(b)):]
	}
	return attrs, nil
}

func attrU32(a attr) (uint32, error) {
	if len(a.data) != 4 {
		return 0, fmt.Errorf("parse attribute %d: %d bytes for a u32: %w", a.typ, len(a.data), ErrMalformed)
	}
	return ne.Uint32(a.data), nil
}

// attrString reads a NUL-terminated string attribute; a missing terminator
// is tolerated.
func attrString(a attr) string {
	s := a.data
	if i := bytes.IndexByte(s, 0); i >= 0 {
		s = s[:i]
	}
	return string(s)
}

// attrAddr reads an address attribute of the given family.
func attrAddr(a attr, family uint8) (netip.Addr, error) {
	switch {
	case family == unix.AF_INET && len(a.data) == 4:
		return netip.AddrFrom4([4]byte(a.data)), nil
	case family == unix.AF_INET6 && len(a.data) == 16:
		return netip.AddrFrom16([16]byte(a.data)), nil
	}
	return netip.Addr{}, fmt.Errorf("parse attribute %d: %d bytes for an address of family %d: %w",
		a.typ, len(a.data), family, ErrMalformed)
}

// kernelReply is what an NLMSG_ERROR or NLMSG_DONE message says: errno 0
// for an acknowledgement or the end of a dump, and the kernel's extended
// acknowledgement message if it sent one.
type kernelReply struct {
	errno unix.Errno
	msg   string
}

// parseError reads the payload of an NLMSG_ERROR message: the negative
// errno (0 for an ack), the request's header (and its payload unless the
// kernel capped it), then extended-ack attributes when NLM_F_ACK_TLVS is set.
func parseError(h header, data []byte) (kernelReply, error) {
	if len(data) < errMsgLen {
		return kernelReply{}, fmt.Errorf("parse error message: %d bytes: %w", len(data), ErrMalformed)
	}
	r := kernelReply{errno: errnoOf(int32(ne.Uint32(data[0:4])))}
	if h.Flags&unix.NLM_F_ACK_TLVS == 0 {
		return r, nil
	}
	off := errMsgLen
	if h.Flags&unix.NLM_F_CAPPED == 0 {
		// The whole request follows; its header says how long it is.
		reqLen := ne.Uint32(data[4:8])
		if reqLen < hdrLen || uint64(reqLen)+4 > uint64(len(data)) {
			return kernelReply{}, fmt.Errorf("parse error message: echoed request of %d bytes: %w", reqLen, ErrMalformed)
		}
		off = 4 + align(int(reqLen))
	}
	if off > len(data) {
		return kernelReply{}, fmt.Errorf("parse error message: %d bytes: %w", len(data), ErrMalformed)
	}
	attrs, err := parseAttrs(data[off:])
	if err != nil {
		return kernelReply{}, fmt.Errorf("parse error message: %w", err)
	}
	for _, a := range attrs {
		if a.typ == unix.NLMSGERR_ATTR_MSG {
			r.msg = attrString(a)
		}
	}
	return r, nil
}

// parseDone reads the payload of an NLMSG_DONE message: an optional
// negative errno and extended-ack attributes.
func parseDone(h header, data []byte) (kernelReply, error) {
	if len(data) == 0 {
		return kernelReply{}, nil
	}
	if len(data) < 4 {
		return kernelReply{}, fmt.Errorf("parse done message: %d bytes: %w", len(data), ErrMalformed)
	}
	r := kernelReply{errno: errnoOf(int32(ne.Uint32(data[0:4])))}
	if h.Flags&unix.NLM_F_ACK_TLVS != 0 {
		attrs, err := parseAttrs(data[4:])
		if err != nil {
			return kernelReply{}, fmt.Errorf("parse done message: %w", err)
		}
		for _, a := range attrs {
			if a.typ == unix.NLMSGERR_ATTR_MSG {
				r.msg = attrString(a)
			}
		}
	}
	return r, nil
}

// errnoOf turns the kernel's negative error code into an Errno; 0 stays 0,
// and a positive value (which the kernel never sends) is kept as it is.
func errnoOf(code int32) unix.Errno {
	if code < 0 {
		return unix.Errno(-int64(code))
	}
	return unix.Errno(code)
}

// linkInfo is what an RTM_NEWLINK message says about a link.
type linkInfo struct {
	Index int
	Name  string
	MTU   int
	Flags uint32
}

// parseLink reads the payload of an RTM_NEWLINK message.
func parseLink(data []byte) (linkInfo, error) {
	if len(data) < ifInfoLen {
		return linkInfo{}, fmt.Errorf("parse link: %d bytes: %w", len(data), ErrMalformed)
	}
	index := int32(ne.Uint32(data[4:8]))
	if index <= 0 {
		return linkInfo{}, fmt.Errorf("parse link: index %d: %w", index, ErrMalformed)
	}
	l := linkInfo{Index: int(index), Flags: ne.Uint32(data[8:12])}
	attrs, err := parseAttrs(data[ifInfoLen:])
	if err != nil {
		return linkInfo{}, fmt.Errorf("parse link: %w", err)
	}
	for _, a := range attrs {
		switch a.typ {
		case unix.IFLA_IFNAME:
			l.Name = attrString(a)
		case unix.IFLA_MTU:
			mtu, err := attrU32(a)
			if err != nil {
				return linkInfo{}, fmt.Errorf("parse link: %w", err)
			}
			l.MTU = int(mtu)
		}
	}
	return l, nil
}

// addrInfo is what an RTM_NEWADDR message says about an address.
type addrInfo struct {
	Index  uint32
	Prefix netip.Prefix
}

// parseAddr reads the payload of an RTM_NEWADDR message. The address is
// IFA_LOCAL when present (IPv4; on a point-to-point link IFA_ADDRESS is the
// peer), IFA_ADDRESS otherwise (IPv6).
func parseAddr(data []byte) (addrInfo, error) {
	if len(data) < ifAddrLen {
		return addrInfo{}, fmt.Errorf("parse address: %d bytes: %w", len(data), ErrMalformed)
	}
	family, plen := data[0], int(data[1])
	bits := 0
	switch family {
	case unix.AF_INET:
		bits = 32
	case unix.AF_INET6:
		bits = 128
	default:
		return addrInfo{}, fmt.Errorf("parse address: family %d: %w", family, ErrMalformed)
	}
	if plen > bits {
		return addrInfo{}, fmt.Errorf("parse address: prefix length %d: %w", plen, ErrMalformed)
	}
	attrs, err := parseAttrs(data[ifAddrLen:])
	if err != nil {
		return addrInfo{}, fmt.Errorf("parse address: %w", err)
	}
	var local, address netip.Addr
	for _, a := range attrs {
		switch a.typ {
		case unix.IFA_LOCAL:
			if local, err = attrAddr(a, family); err != nil {
				return addrInfo{}, fmt.Errorf("parse address: %w", err)
			}
		case unix.IFA_ADDRESS:
			if address, err = attrAddr(a, family); err != nil {
				return addrInfo{}, fmt.Errorf("parse address: %w", err)
			}
		}
	}
	addr := local
	if !addr.IsValid() {
		addr = address
	}
	if !addr.IsValid() {
		return addrInfo{}, fmt.Errorf("parse address: no address attribute: %w", ErrMalformed)
	}
	return addrInfo{Index: ne.Uint32(data[4:8]), Prefix: netip.PrefixFrom(addr, plen)}, nil
}

// routeInfo is what an RTM_NEWROUTE message says about a route.
type routeInfo struct {
	Family   uint8
	Table    uint32
	Protocol uint8
	Scope    uint8
	Type     uint8
	Flags    uint32
	Dst      netip.Prefix
	Via      netip.Addr
	OIF      uint32
	Priority uint32
}

// parseRoute reads the payload of an RTM_NEWROUTE message. A route without
// RTA_DST has the default destination of its family; RTA_TABLE, when
// present, overrides the 8-bit table in the header.
func parseRoute(data []byte) (routeInfo, error) {
	if len(data) < rtMsgLen {
		return routeInfo{}, fmt.Errorf("parse route: %d bytes: %w", len(data), ErrMalformed)
	}
	r := routeInfo{
		Family:   data[0],
		Table:    uint32(data[4]),
		Protocol: data[5],
		Scope:    data[6],
		Type:     data[7],
		Flags:    ne.Uint32(data[8:12]),
	}
	dstLen := int(data[1])
	var zero netip.Addr
	switch r.Family {
	case unix.AF_INET:
		zero = netip.IPv4Unspecified()
	case unix.AF_INET6:
		zero = netip.IPv6Unspecified()
	default:
		return routeInfo{}, fmt.Errorf("parse route: family %d: %w", r.Family, ErrMalformed)
	}
	if dstLen > zero.BitLen() {
		return routeInfo{}, fmt.Errorf("parse route: destination length %d: %w", dstLen, ErrMalformed)
	}
	attrs, err := parseAttrs(data[rtMsgLen:])
	if err != nil {
		return routeInfo{}, fmt.Errorf("parse route: %w", err)
	}
	dst := zero
	for _, a := range attrs {
		switch a.typ {
		case unix.RTA_DST:
			dst, err = attrAddr(a, r.Family)
		case unix.RTA_GATEWAY:
			r.Via, err = attrAddr(a, r.Family)
		case unix.RTA_OIF:
			r.OIF, err = attrU32(a)
		case unix.RTA_PRIORITY:
			r.Priority, err = attrU32(a)
		case unix.RTA_TABLE:
			r.Table, err = attrU32(a)
		}
		if err != nil {
			return routeInfo{}, fmt.Errorf("parse route: %w", err)
		}
	}
	r.Dst = netip.PrefixFrom(dst, dstLen).Masked()
	return r, nil
}

// request builds one netlink request: a header, a fixed struct, attributes.
type request struct {
	b []byte
}

func newRequest(typ, flags uint16, fixed []byte) *request {
	b := make([]byte, hdrLen, hdrLen+align(len(fixed))+64)
	ne.PutUint16(b[4:6], typ)
	ne.PutUint16(b[6:8], flags|unix.NLM_F_REQUEST)
	b = append(b, fixed...)
	b = append(b, make([]byte, align(len(b))-len(b))...)
	return &request{b: b}
}

// attr appends an attribute and its padding.
func (r *request) attr(typ uint16, data []byte) {
	var h [attrHdrLen]byte
	ne.PutUint16(h[0:2], uint16(attrHdrLen+len(data)))
	ne.PutUint16(h[2:4], typ)
	r.b = append(r.b, h[:]...)
	r.b = append(r.b, data...)
	r.b = append(r.b, make([]byte, align(len(r.b))-len(r.b))...)
}

func (r *request) u32(typ uint16, v uint32) {
	var d [4]byte
	ne.PutUint32(d[:], v)
	r.attr(typ, d[:])
}

// str appends a NUL-terminated string attribute.
func (r *request) str(typ uint16, s string) {
	r.attr(typ, append([]byte(s), 0))
}

// bytes fills in the length, sequence number and port id and returns the
// message.
func (r *request) bytes(seq, pid uint32) []byte {
	ne.PutUint32(r.b[0:4], uint32(len(r.b)))
	ne.PutUint32(r.b[8:12], seq)
	ne.PutUint32(r.b[12:16], pid)
	return r.b
}

// ifInfo encodes struct ifinfomsg.
func ifInfo(family uint8, index int32, flags, change uint32) []byte {
	b := make([]byte, ifInfoLen)
	b[0] = family
	ne.PutUint32(b[4:8], uint32(index))
	ne.PutUint32(b[8:12], flags)
	ne.PutUint32(b[12:16], change)
	return b
}

// ifAddr encodes struct ifaddrmsg.
func ifAddr(family, prefixLen, flags, scope uint8, index uint32) []byte {
	b := make([]byte, ifAddrLen)
	b[0], b[1], b[2], b[3] = family, prefixLen, flags, scope
	ne.PutUint32(b[4:8], index)
	return b
}

// rtMsg encodes struct rtmsg.
func rtMsg(family, dstLen, table, protocol, scope, typ uint8) []byte {
	b := make([]byte, rtMsgLen)
	b[0], b[1], b[4], b[5], b[6], b[7] = family, dstLen, table, protocol, scope, typ
	return b
}

// familyOf returns the address family of a valid, unmapped address.
func familyOf(a netip.Addr) uint8 {
	if a.Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}
