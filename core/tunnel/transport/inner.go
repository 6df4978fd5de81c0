package transport

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// IP protocol numbers ParseInner understands.
const (
	ProtoICMP   = 1
	ProtoTCP    = 6
	ProtoUDP    = 17
	ProtoICMPv6 = 58
)

// MaxExtensionHeaders is how many IPv6 extension headers ParseInner walks
// before it refuses the packet.
const MaxExtensionHeaders = 8

// Inner is what the IP and transport headers of an inner packet say. It is
// read, not judged: policy, connection tracking and cryptokey routing (Src
// must be the agent's tunnel address) decide on it.
type Inner struct {
	Version uint8 // 4 or 6
	Src     netip.Addr
	Dst     netip.Addr
	// Protocol is the IPv4 protocol, or for IPv6 the next header after the
	// extension headers ParseInner walked (hop-by-hop, routing, fragment,
	// destination options, AH, mobility, HIP, shim6).
	Protocol uint8
	// Length is the true length of the packet from its IP header (total
	// length for IPv4, payload length + 40 for IPv6). The bytes after it
	// are padding: b[:Length] is the packet.
	Length int
	// Fragment is set for any fragment of a fragmented packet (more
	// fragments, a non-zero offset or an IPv6 fragment header); FirstFragment
	// only for the one at offset 0, the only one with a transport header.
	Fragment      bool
	FirstFragment bool

	// HasTransport is set when the TCP, UDP, ICMP or ICMPv6 header was read
	// (unfragmented packet or first fragment): the fields below are valid.
	HasTransport    bool
	TransportOffset int    // where the transport header starts in b
	SrcPort         uint16 // TCP and UDP
	DstPort         uint16 // TCP and UDP
	TCPFlags        uint8  // TCP: the flags byte (FIN 0x01, SYN 0x02, RST 0x04, ACK 0x10, ...)
	ICMPType        uint8  // ICMP (IPv4) or ICMPv6 by Version
	ICMPCode        uint8
}

// ParseInner reads the IPv4 or IPv6 packet at the start of b (a decrypted
// plaintext, padding included, or a packet read from the TUN device). It
// refuses a packet whose headers are inconsistent with each other or with b:
// ErrInnerShort, ErrInnerVersion, ErrInnerHeader (IPv4 IHL < 5, options past
// the end), ErrInnerLength (length field past the end of b or shorter than
// the header), ErrInnerExtension (IPv6 extension chain past the payload or too
// long), ErrInnerTransport (a TCP/UDP/ICMP header cut short where it must be
// whole). Other transport protocols are reported with HasTransport false.
// ParseInner never reads past Length and never modifies b.
func ParseInner(b []byte) (Inner, error) {
	if len(b) == 0 {
		return Inner{}, fmt.Errorf("parse inner: %w", ErrInnerShort)
	}
	switch b[0] >> 4 {
	case 4:
		return parseIPv4(b)
	case 6:
		return parseIPv6(b)
	}
	return Inner{}, fmt.Errorf("parse inner version %d: %w", b[0]>>4, ErrInnerVersion)
}

func parseIPv4(b []byte) (Inner, error) {
	const minHeader = 20
	if len(b) < minHeader {
		return Inner{}, fmt.Errorf("parse ipv4 of %d bytes: %w", len(b), ErrInnerShort)
	}
	hl := int(b[0]&0x0f) * 4
	if hl < minHeader {
		return Inner{}, fmt.Errorf("parse ipv4 header length %d: %w", hl, ErrInnerHeader)
	}
	if hl > len(b) {
		return Inner{}, fmt.Errorf("parse ipv4 header length %d of %d bytes: %w", hl, len(b), ErrInnerHeader)
	}
	total := int(binary.BigEndian.Uint16(b[2:4]))
	if total < hl || total > len(b) {
		return Inner{}, fmt.Errorf("parse ipv4 total length %d (header %d, %d bytes): %w", total, hl, len(b), ErrInnerLength)
	}
	frag := binary.BigEndian.Uint16(b[6:8])
	offset := frag & 0x1fff
	more := frag&0x2000 != 0
	in := Inner{
		Version:  4,
		Src:      netip.AddrFrom4([4]byte(b[12:16])),
		Dst:      netip.AddrFrom4([4]byte(b[16:20])),
		Protocol: b[9],
		Length:   total,
		Fragment: more || offset != 0,
	}
	in.FirstFragment = in.Fragment && offset == 0
	if offset != 0 {
		return in, nil
	}
	if err := parseTransport(&in, b[:total], hl, ProtoICMP); err != nil {
		return Inner{}, err
	}
	return in, nil
}

func parseIPv6(b []byte) (Inner, error) {
	const fixed = 40
	if len(b) < fixed {
		return Inner{}, fmt.Errorf("parse ipv6 of %d bytes: %w", len(b), ErrInnerShort)
	}
	total := fixed + int(binary.BigEndian.Uint16(b[4:6]))
	if total > len(b) {
		return Inner{}, fmt.Errorf("parse ipv6 length %d of %d bytes: %w", total, len(b), ErrInnerLength)
	}
	in := Inner{
		Version: 6,
		Src:     netip.AddrFrom16([16]byte(b[8:24])),
		Dst:     netip.AddrFrom16([16]byte(b[24:40])),
		Length:  total,
	}
	pkt := b[:total]
	next, off := b[6], fixed
	for n := 0; ; n++ {
		var hlen int
		switch next {
		case 0, 43, 60, 135, 139, 140: // hop-by-hop, routing, destination options, mobility, HIP, shim6
			if off+2 > len(pkt) {
				return Inner{}, fmt.Errorf("parse ipv6 extension %d at %d: %w", next, off, ErrInnerExtension)
			}
			hlen = (int(pkt[off+1]) + 1) * 8
		case 51: // authentication header: length in 4-octet units minus 2
			if off+2 > len(pkt) {
				return Inner{}, fmt.Errorf("parse ipv6 extension %d at %d: %w", next, off, ErrInnerExtension)
			}
			hlen = (int(pkt[off+1]) + 2) * 4
		case 44: // fragment
			hlen = 8
		default:
			in.Protocol = next
			if in.Fragment && !in.FirstFragment {
				return in, nil
			}
			if err := parseTransport(&in, pkt, off, ProtoICMPv6); err != nil {
				return Inner{}, err
			}
			return in, nil
		}
		if n >= MaxExtensionHeaders {
			return Inner{}, fmt.Errorf("parse ipv6: more than %d extension headers: %w", MaxExtensionHeaders, ErrInnerExtension)
		}
		if off+hlen > len(pkt) {
			return Inner{}, fmt.Errorf("parse ipv6 extension %d of %d bytes at %d: %w", next, hlen, off, ErrInnerExtension)
		}
		if next == 44 {
			if in.Fragment {
				// Two fragment headers: no sane sender does this.
				return Inner{}, fmt.Errorf("parse ipv6: second fragment header: %w", ErrInnerExtension)
			}
			in.Fragment = true
			in.FirstFragment = binary.BigEndian.Uint16(pkt[off+2:off+4])>>3 == 0
		}
		next = pkt[off]
		off += hlen
		if in.Fragment && !in.FirstFragment {
			// What follows a later fragment's header is data, not headers.
			in.Protocol = next
			return in, nil
		}
	}
}

// parseTransport reads the transport header of protocol in.Protocol at
// pkt[off:] for an unfragmented packet or a first fragment. icmp is the ICMP
// protocol number of this IP version.
func parseTransport(in *Inner, pkt []byte, off int, icmp uint8) error {
	l4 := pkt[off:]
	var need int
	switch in.Protocol {
	case ProtoTCP:
		need = 20
	case ProtoUDP:
		need = 8
	case icmp:
		need = 4 // type, code, checksum
	default:
		return nil
	}
	if len(l4) < need {
		return fmt.Errorf("parse protocol %d header of %d bytes: %w", in.Protocol, len(l4), ErrInnerTransport)
	}
	in.HasTransport = true
	in.TransportOffset = off
	switch in.Protocol {
	case ProtoTCP, ProtoUDP:
		in.SrcPort = binary.BigEndian.Uint16(l4[0:2])
		in.DstPort = binary.BigEndian.Uint16(l4[2:4])
		if in.Protocol == ProtoTCP {
			in.TCPFlags = l4[13]
		}
	default:
		in.ICMPType, in.ICMPCode = l4[0], l4[1]
	}
	return nil
}
