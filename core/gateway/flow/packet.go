package flow

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/avonzt/avon/core/tunnel/transport"
)

// IP protocol numbers the tracker knows.
const (
	ProtoICMP   = transport.ProtoICMP
	ProtoTCP    = transport.ProtoTCP
	ProtoUDP    = transport.ProtoUDP
	ProtoICMPv6 = transport.ProtoICMPv6
)

// TCP flags the tracker reads.
const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

// ICMP types the tracker reads.
const (
	icmpEchoReply      = 0
	icmpUnreachable    = 3
	icmpSourceQuench   = 4
	icmpEchoRequest    = 8
	icmpTimeExceeded   = 11
	icmpParamProblem   = 12
	icmp6Unreachable   = 1
	icmp6PacketTooBig  = 2
	icmp6TimeExceeded  = 3
	icmp6ParamProblem  = 4
	icmp6EchoRequest   = 128
	icmp6EchoReply     = 129
	icmpHeaderLen      = 8 // type, code, checksum, and 4 bytes (echo: id, seq)
	embeddedPortsLen   = 4 // what an ICMP error must quote of a TCP/UDP header
	maxEmbeddedHeaders = transport.MaxExtensionHeaders
)

// Key is one direction of a flow: addresses, ports and IP protocol. For
// ICMP and ICMPv6 echo the identifier stands in for the ports: a request
// is {SrcPort: id, DstPort: 0} and its reply {SrcPort: 0, DstPort: id},
// so the reply's Key is the request's Reverse. Protocols without ports
// (and other ICMP messages) have both ports zero. Src and Dst are of the
// same family.
type Key struct {
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16
	Proto            uint8
}

// Reverse is the Key of the other direction.
func (k Key) Reverse() Key {
	return Key{Src: k.Dst, Dst: k.Src, SrcPort: k.DstPort, DstPort: k.SrcPort, Proto: k.Proto}
}

// String formats the key as "proto src -> dst".
func (k Key) String() string {
	return fmt.Sprintf("%s %s -> %s", ProtoName(k.Proto), netip.AddrPortFrom(k.Src, k.SrcPort), netip.AddrPortFrom(k.Dst, k.DstPort))
}

// ProtoName names an IP protocol ("tcp", "udp", "icmp", "icmpv6", or the
// number).
func ProtoName(p uint8) string {
	switch p {
	case ProtoTCP:
		return "tcp"
	case ProtoUDP:
		return "udp"
	case ProtoICMP:
		return "icmp"
	case ProtoICMPv6:
		return "icmpv6"
	}
	return fmt.Sprintf("%d", p)
}

// Kind is what a packet is to the tracker.
type Kind uint8

const (
	// KindFlow: a packet with its whole Key (an unfragmented packet or a
	// first fragment).
	KindFlow Kind = iota
	// KindFragment: a later fragment: no transport header, Key has zero
	// ports; it follows the flow its first fragment (same FragID) was
	// placed in, or is dropped.
	KindFragment
	// KindRelated: an ICMP or ICMPv6 error (unreachable, packet too big,
	// time exceeded, parameter problem); Key is the quoted packet's, as its
	// sender sent it. It passes only when that flow exists and is allowed.
	KindRelated
)

// Packet is what the tracker needs of one inner packet.
type Packet struct {
	Key  Key
	Kind Kind
	// TCPFlags of a TCP packet of KindFlow.
	TCPFlags uint8
	// Fragmented: a first fragment; FragID names its later fragments.
	// FragID is also set for KindFragment (the IPv4 identification, or the
	// IPv6 fragment header's).
	Fragmented bool
	FragID     uint32
	// Length of the IP packet.
	Length int
}

// Parse reads the inner packet at the start of b (transport.ParseInner,
// then FromInner).
func Parse(b []byte) (Packet, error) {
	in, err := transport.ParseInner(b)
	if err != nil {
		return Packet{}, fmt.Errorf("flow: %w: %w", ErrPacket, err)
	}
	return FromInner(in, b)
}

// FromInner completes what transport.ParseInner read of b (which must be
// the bytes it parsed) into a Packet: the ICMP echo identifier, the quoted
// header of an ICMP error, the fragment identification. It never reads past
// in.Length, never modifies b and does not allocate on success.
func FromInner(in transport.Inner, b []byte) (Packet, error) {
	if in.Length > len(b) || in.Length < 20 || !in.Src.IsValid() || !in.Dst.IsValid() {
		return Packet{}, fmt.Errorf("flow: inner packet of %d bytes, length %d: %w", len(b), in.Length, ErrPacket)
	}
	b = b[:in.Length]
	p := Packet{Key: Key{Src: in.Src, Dst: in.Dst, Proto: in.Protocol}, Length: in.Length}
	if in.Fragment {
		id, ok := fragID(in, b)
		if !ok {
			return Packet{}, fmt.Errorf("flow: fragment without identification: %w", ErrPacket)
		}
		p.FragID = id
		if !in.FirstFragment {
			p.Kind = KindFragment
			return p, nil
		}
		p.Fragmented = true
	}
	if !in.HasTransport {
		return p, nil
	}
	if in.TransportOffset < 0 || in.TransportOffset > len(b) {
		return Packet{}, fmt.Errorf("flow: transport offset %d: %w", in.TransportOffset, ErrPacket)
	}
	l4 := b[in.TransportOffset:]
	switch {
	case in.Protocol == ProtoTCP || in.Protocol == ProtoUDP:
		p.Key.SrcPort, p.Key.DstPort = in.SrcPort, in.DstPort
		p.TCPFlags = in.TCPFlags
		return p, nil
	case in.Protocol == ProtoICMP && in.Version == 4, in.Protocol == ProtoICMPv6 && in.Version == 6:
	default:
		return p, nil
	}
	if len(l4) < 1 {
		return Packet{}, fmt.Errorf("flow: icmp header cut short: %w", ErrPacket)
	}
	req, rep, isErr := classifyICMP(in.Version, l4[0])
	switch {
	case req || rep:
		if len(l4) < icmpHeaderLen {
			return Packet{}, fmt.Errorf("flow: icmp echo of %d bytes: %w", len(l4), ErrPacket)
		}
		id := binary.BigEndian.Uint16(l4[4:6])
		if req {
			p.Key.SrcPort = id
		} else {
			p.Key.DstPort = id
		}
	case isErr:
		if p.Fragmented {
			// An error message is small; a fragmented one is not worth
			// reassembling its quote from.
			return Packet{}, fmt.Errorf("flow: fragmented icmp error: %w", ErrPacket)
		}
		if len(l4) < icmpHeaderLen {
			return Packet{}, fmt.Errorf("flow: icmp error of %d bytes: %w", len(l4), ErrPacket)
		}
		k, err := quoted(in.Version, l4[icmpHeaderLen:])
		if err != nil {
			return Packet{}, err
		}
		p.Key, p.Kind = k, KindRelated
	}
	return p, nil
}

// classifyICMP tells an echo request, an echo reply or an error message
// of ICMP (version 4) or ICMPv6 (version 6) apart.
func classifyICMP(version, typ uint8) (req, rep, isErr bool) {
	if version == 4 {
		switch typ {
		case icmpEchoRequest:
			return true, false, false
		case icmpEchoReply:
			return false, true, false
		case icmpUnreachable, icmpSourceQuench, icmpTimeExceeded, icmpParamProblem:
			return false, false, true
		}
		return false, false, false
	}
	switch typ {
	case icmp6EchoRequest:
		return true, false, false
	case icmp6EchoReply:
		return false, true, false
	case icmp6Unreachable, icmp6PacketTooBig, icmp6TimeExceeded, icmp6ParamProblem:
		return false, false, true
	}
	return false, false, false
}

// quoted reads the Key of the packet an ICMP error quotes: its IP header
// and the start of its transport header (RFC 792: the header and 64 bits;
// RFC 4443: as much as fits). The quote must be of the error's own IP
// version and must not be a later fragment.
func quoted(version uint8, q []byte) (Key, error) {
	bad := func(what string) (Key, error) {
		return Key{}, fmt.Errorf("flow: icmp error quote: %s: %w", what, ErrPacket)
	}
	if len(q) < 1 || q[0]>>4 != version {
		return bad("not a packet of the same ip version")
	}
	var k Key
	var l4 []byte
	if version == 4 {
		if len(q) < 20 {
			return bad("ipv4 header cut short")
		}
		hl := int(q[0]&0x0f) * 4
		if hl < 20 || hl > len(q) {
			return bad("ipv4 header length")
		}
		if binary.BigEndian.Uint16(q[6:8])&0x1fff != 0 {
			return bad("a later fragment")
		}
		k = Key{Src: netip.AddrFrom4([4]byte(q[12:16])), Dst: netip.AddrFrom4([4]byte(q[16:20])), Proto: q[9]}
		l4 = q[hl:]
	} else {
		if len(q) < 40 {
			return bad("ipv6 header cut short")
		}
		k = Key{Src: netip.AddrFrom16([16]byte(q[8:24])), Dst: netip.AddrFrom16([16]byte(q[24:40]))}
		next, off := q[6], 40
		for n := 0; ; n++ {
			if n > maxEmbeddedHeaders {
				return bad("too many extension headers")
			}
			hlen, ext := extLen(next, q, off)
			if !ext {
				break
			}
			if hlen < 0 || off+hlen > len(q) {
				return bad("extension header cut short")
			}
			if next == 44 && binary.BigEndian.Uint16(q[off+2:off+4])>>3 != 0 {
				return bad("a later fragment")
			}
			next = q[off]
			off += hlen
		}
		k.Proto = next
		l4 = q[off:]
	}
	icmp := uint8(ProtoICMP)
	if version == 6 {
		icmp = ProtoICMPv6
	}
	switch k.Proto {
	case ProtoTCP, ProtoUDP:
		if len(l4) < embeddedPortsLen {
			return bad("ports cut short")
		}
		k.SrcPort, k.DstPort = binary.BigEndian.Uint16(l4[0:2]), binary.BigEndian.Uint16(l4[2:4])
	case icmp:
		if len(l4) < 1 {
			return bad("icmp header cut short")
		}
		req, rep, _ := classifyICMP(version, l4[0])
		if req || rep {
			if len(l4) < 6 {
				return bad("echo identifier cut short")
			}
			id := binary.BigEndian.Uint16(l4[4:6])
			if req {
				k.SrcPort = id
			} else {
				k.DstPort = id
			}
		}
	}
	return k, nil
}

// extLen returns the length of the IPv6 extension header next at b[off:]
// and whether next is one; -1 when its length field is out of b.
func extLen(next uint8, b []byte, off int) (int, bool) {
	switch next {
	case 0, 43, 60, 135, 139, 140: // hop-by-hop, routing, destination options, mobility, HIP, shim6
		if off+2 > len(b) {
			return -1, true
		}
		return (int(b[off+1]) + 1) * 8, true
	case 51: // authentication header
		if off+2 > len(b) {
			return -1, true
		}
		return (int(b[off+1]) + 2) * 4, true
	case 44: // fragment
		if off+8 > len(b) {
			return -1, true
		}
		return 8, true
	}
	return 0, false
}

// fragID returns the identification of a fragment: the IPv4 header's, or
// the IPv6 fragment header's.
func fragID(in transport.Inner, b []byte) (uint32, bool) {
	if in.Version == 4 {
		if len(b) < 20 {
			return 0, false
		}
		return uint32(binary.BigEndian.Uint16(b[4:6])), true
	}
	if len(b) < 40 {
		return 0, false
	}
	next, off := b[6], 40
	for range maxEmbeddedHeaders + 1 {
		hlen, ext := extLen(next, b, off)
		if !ext || hlen < 0 || off+hlen > len(b) {
			return 0, false
		}
		if next == 44 {
			return binary.BigEndian.Uint32(b[off+4 : off+8]), true
		}
		next = b[off]
		off += hlen
	}
	return 0, false
}
