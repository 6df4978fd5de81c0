package transport

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
)

var (
	src4 = netip.MustParseAddr("100.64.0.7")
	dst4 = netip.MustParseAddr("10.1.2.3")
	src6 = netip.MustParseAddr("fd00:a:b::7")
	dst6 = netip.MustParseAddr("2001:db8::53")
)

// v4 builds an IPv4 packet: options of optLen bytes (a multiple of 4), the
// fragment field, protocol and l4 bytes.
func v4(proto uint8, frag uint16, optLen int, l4 []byte) []byte {
	hl := 20 + optLen
	b := make([]byte, hl+len(l4))
	b[0] = 0x40 | byte(hl/4)
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	binary.BigEndian.PutUint16(b[6:], frag)
	b[8], b[9] = 64, proto
	s, d := src4.As4(), dst4.As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	for i := 20; i < hl; i++ {
		b[i] = 1 // NOP options
	}
	copy(b[hl:], l4)
	return b
}

// ext is one IPv6 extension header: its type and its bytes (next header
// byte filled in by v6).
type ext struct {
	typ  uint8
	body []byte
}

func optsHdr(units int) []byte { // (units+1)*8 bytes
	h := make([]byte, (units+1)*8)
	h[1] = byte(units)
	return h
}

func fragHdr(offset uint16, more bool) []byte {
	h := make([]byte, 8)
	v := offset << 3
	if more {
		v |= 1
	}
	binary.BigEndian.PutUint16(h[2:], v)
	return h
}

func v6(exts []ext, proto uint8, l4 []byte) []byte {
	b := make([]byte, 40)
	b[0] = 0x60
	s, d := src6.As16(), dst6.As16()
	copy(b[8:], s[:])
	copy(b[24:], d[:])
	b[7] = 64
	nextAt := 6
	for _, e := range exts {
		b[nextAt] = e.typ
		nextAt = len(b)
		b = append(b, e.body...)
	}
	b[nextAt] = proto
	b = append(b, l4...)
	binary.BigEndian.PutUint16(b[4:], uint16(len(b)-40))
	return b
}

func tcp(sport, dport uint16, flags uint8) []byte {
	h := make([]byte, 20)
	binary.BigEndian.PutUint16(h[0:], sport)
	binary.BigEndian.PutUint16(h[2:], dport)
	h[12] = 5 << 4
	h[13] = flags
	return h
}

func udp(sport, dport uint16, data int) []byte {
	h := make([]byte, 8+data)
	binary.BigEndian.PutUint16(h[0:], sport)
	binary.BigEndian.PutUint16(h[2:], dport)
	binary.BigEndian.PutUint16(h[4:], uint16(8+data))
	return h
}

func icmp(typ, code uint8) []byte { return []byte{typ, code, 0, 0, 0, 1, 0, 1} }

func pad(b []byte) []byte { return append(b, make([]byte, (16-len(b)%16)%16)...) }

func mutate(b []byte, f func([]byte)) []byte { f(b); return b }

func TestParseInner(t *testing.T) {
	ah := make([]byte, 24) // AH with a 12-byte ICV: (24/4)-2 = 4
	ah[1] = 4
	tests := []struct {
		name string
		pkt  []byte
		want Inner // Src/Dst/Version filled in from the packet family
		off  int
	}{
		{"v4 tcp syn", v4(6, 0, 0, tcp(40000, 443, 0x02)), Inner{Protocol: 6, Length: 40, HasTransport: true, SrcPort: 40000, DstPort: 443, TCPFlags: 0x02}, 20},
		{"v4 tcp padded", pad(v4(6, 0, 0, append(tcp(1, 2, 0x10), 'x'))), Inner{Protocol: 6, Length: 41, HasTransport: true, SrcPort: 1, DstPort: 2, TCPFlags: 0x10}, 20},
		{"v4 udp with options", v4(17, 0, 8, udp(5353, 53, 10)), Inner{Protocol: 17, Length: 46, HasTransport: true, SrcPort: 5353, DstPort: 53}, 28},
		{"v4 udp DF set", v4(17, 0x4000, 0, udp(1, 2, 0)), Inner{Protocol: 17, Length: 28, HasTransport: true, SrcPort: 1, DstPort: 2}, 20},
		{"v4 icmp echo", v4(1, 0, 0, icmp(8, 0)), Inner{Protocol: 1, Length: 28, HasTransport: true, ICMPType: 8}, 20},
		{"v4 icmp header only", v4(1, 0, 0, []byte{3, 4, 0, 0}), Inner{Protocol: 1, Length: 24, HasTransport: true, ICMPType: 3, ICMPCode: 4}, 20},
		{"v4 gre", v4(47, 0, 0, []byte{1, 2}), Inner{Protocol: 47, Length: 22}, 0},
		{"v4 icmpv6 number is not icmp", v4(58, 0, 0, []byte{1}), Inner{Protocol: 58, Length: 21}, 0},
		{"v4 no payload", v4(17, 0x2000|100, 0, nil), Inner{Protocol: 17, Length: 20, Fragment: true}, 0},
		{"v4 first fragment", v4(17, 0x2000, 0, udp(7, 8, 100)), Inner{Protocol: 17, Length: 128, Fragment: true, FirstFragment: true, HasTransport: true, SrcPort: 7, DstPort: 8}, 20},
		{"v4 later fragment", v4(6, 185, 0, []byte{1, 2, 3}), Inner{Protocol: 6, Length: 23, Fragment: true}, 0},
		{"v4 middle fragment", v4(6, 0x2000|185, 0, []byte{1}), Inner{Protocol: 6, Length: 21, Fragment: true}, 0},
		{"v4 trailing bytes past total length", append(v4(17, 0, 0, udp(1, 2, 0)), 9, 9, 9), Inner{Protocol: 17, Length: 28, HasTransport: true, SrcPort: 1, DstPort: 2}, 20},

		{"v6 tcp", v6(nil, 6, tcp(50000, 22, 0x12)), Inner{Protocol: 6, Length: 60, HasTransport: true, SrcPort: 50000, DstPort: 22, TCPFlags: 0x12}, 40},
		{"v6 udp padded", pad(v6(nil, 17, udp(1000, 4600, 3))), Inner{Protocol: 17, Length: 51, HasTransport: true, SrcPort: 1000, DstPort: 4600}, 40},
		{"v6 icmpv6", v6(nil, 58, icmp(128, 0)), Inner{Protocol: 58, Length: 48, HasTransport: true, ICMPType: 128}, 40},
		{"v6 icmp number is not icmpv6", v6(nil, 1, icmp(8, 0)), Inner{Protocol: 1, Length: 48}, 0},
		{"v6 no next header", v6(nil, 59, nil), Inner{Protocol: 59, Length: 40}, 0},
		{"v6 hop-by-hop and dest opts", v6([]ext{{0, optsHdr(0)}, {60, optsHdr(1)}}, 6, tcp(1, 2, 0x01)), Inner{Protocol: 6, Length: 84, HasTransport: true, SrcPort: 1, DstPort: 2, TCPFlags: 0x01}, 64},
		{"v6 routing", v6([]ext{{43, optsHdr(2)}}, 17, udp(3, 4, 0)), Inner{Protocol: 17, Length: 72, HasTransport: true, SrcPort: 3, DstPort: 4}, 64},
		{"v6 ah", v6([]ext{{51, ah}}, 17, udp(3, 4, 0)), Inner{Protocol: 17, Length: 72, HasTransport: true, SrcPort: 3, DstPort: 4}, 64},
		{"v6 esp stops", v6(nil, 50, []byte{1, 2, 3, 4, 5, 6, 7, 8}), Inner{Protocol: 50, Length: 48}, 0},
		{"v6 first fragment", v6([]ext{{44, fragHdr(0, true)}}, 17, udp(5, 6, 0)), Inner{Protocol: 17, Length: 56, Fragment: true, FirstFragment: true, HasTransport: true, SrcPort: 5, DstPort: 6}, 48},
		{"v6 atomic fragment", v6([]ext{{44, fragHdr(0, false)}}, 6, tcp(5, 6, 0)), Inner{Protocol: 6, Length: 68, Fragment: true, FirstFragment: true, HasTransport: true, SrcPort: 5, DstPort: 6}, 48},
		{"v6 later fragment", v6([]ext{{44, fragHdr(100, true)}}, 6, []byte{1}), Inner{Protocol: 6, Length: 49, Fragment: true}, 0},
		{"v6 later fragment after hop-by-hop", v6([]ext{{0, optsHdr(0)}, {44, fragHdr(1, false)}}, 17, nil), Inner{Protocol: 17, Length: 56, Fragment: true}, 0},
		{"v6 eight extension headers", v6([]ext{{60, optsHdr(0)}, {60, optsHdr(0)}, {60, optsHdr(0)}, {60, optsHdr(0)}, {60, optsHdr(0)}, {60, optsHdr(0)}, {60, optsHdr(0)}, {60, optsHdr(0)}}, 59, nil), Inner{Protocol: 59, Length: 104}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseInner(tc.pkt)
			if err != nil {
				t.Fatalf("ParseInner: %v", err)
			}
			want := tc.want
			want.TransportOffset = tc.off
			if tc.pkt[0]>>4 == 4 {
				want.Version, want.Src, want.Dst = 4, src4, dst4
			} else {
				want.Version, want.Src, want.Dst = 6, src6, dst6
			}
			if got != want {
				t.Fatalf("ParseInner =\n %+v\nwant\n %+v", got, want)
			}
		})
	}
}

func TestParseInnerErrors(t *testing.T) {
	nine := make([]ext, 9)
	for i := range nine {
		nine[i] = ext{60, optsHdr(0)}
	}
	base4 := func() []byte { return v4(17, 0, 0, udp(1, 2, 4)) }
	base6 := func() []byte { return v6(nil, 17, udp(1, 2, 4)) }
	tests := []struct {
		name string
		pkt  []byte
		want error
	}{
		{"empty", nil, ErrInnerShort},
		{"version 0", make([]byte, 40), ErrInnerVersion},
		{"version 5", mutate(base4(), func(b []byte) { b[0] = 0x55 }), ErrInnerVersion},
		{"version 15", []byte{0xf0}, ErrInnerVersion},
		{"v4 one byte", []byte{0x45}, ErrInnerShort},
		{"v4 19 bytes", base4()[:19], ErrInnerShort},
		{"v4 ihl 0", mutate(base4(), func(b []byte) { b[0] = 0x40 }), ErrInnerHeader},
		{"v4 ihl 4", mutate(base4(), func(b []byte) { b[0] = 0x44 }), ErrInnerHeader},
		{"v4 options past the buffer", mutate(base4(), func(b []byte) { b[0] = 0x4f }), ErrInnerHeader},
		{"v4 total length past the buffer", mutate(base4(), func(b []byte) { binary.BigEndian.PutUint16(b[2:], 33) }), ErrInnerLength},
		{"v4 total length 65535", mutate(base4(), func(b []byte) { binary.BigEndian.PutUint16(b[2:], 0xffff) }), ErrInnerLength},
		{"v4 total length below header", mutate(base4(), func(b []byte) { binary.BigEndian.PutUint16(b[2:], 19) }), ErrInnerLength},
		{"v4 total length below options", mutate(v4(17, 0, 8, udp(1, 2, 0)), func(b []byte) { binary.BigEndian.PutUint16(b[2:], 24) }), ErrInnerLength},
		{"v4 total length 0", mutate(base4(), func(b []byte) { binary.BigEndian.PutUint16(b[2:], 0) }), ErrInnerLength},
		{"v4 udp cut by total length", mutate(base4(), func(b []byte) { binary.BigEndian.PutUint16(b[2:], 27) }), ErrInnerTransport},
		{"v4 tcp header short", v4(6, 0, 0, tcp(1, 2, 0)[:19]), ErrInnerTransport},
		{"v4 icmp header short", v4(1, 0, 0, []byte{8, 0, 0}), ErrInnerTransport},
		{"v4 tiny first fragment", v4(6, 0x2000, 0, tcp(1, 2, 0)[:8]), ErrInnerTransport},
		{"v6 39 bytes", base6()[:39], ErrInnerShort},
		{"v6 payload length past the buffer", mutate(base6(), func(b []byte) { binary.BigEndian.PutUint16(b[4:], 13) }), ErrInnerLength},
		{"v6 payload length 65535", mutate(base6(), func(b []byte) { binary.BigEndian.PutUint16(b[4:], 0xffff) }), ErrInnerLength},
		{"v6 udp cut by payload length", mutate(base6(), func(b []byte) { binary.BigEndian.PutUint16(b[4:], 7) }), ErrInnerTransport},
		{"v6 jumbogram shape", mutate(v6([]ext{{0, optsHdr(0)}}, 17, udp(1, 2, 0)), func(b []byte) { binary.BigEndian.PutUint16(b[4:], 0) }), ErrInnerExtension},
		{"v6 extension past payload", mutate(v6([]ext{{60, optsHdr(0)}}, 17, udp(1, 2, 0)), func(b []byte) { b[41] = 5 }), ErrInnerExtension},
		{"v6 extension length byte missing", mutate(v6([]ext{{60, optsHdr(0)}}, 17, nil), func(b []byte) { binary.BigEndian.PutUint16(b[4:], 1) }), ErrInnerExtension},
		{"v6 ah past payload", v6([]ext{{51, []byte{17, 200, 0, 0, 0, 0, 0, 0}}}, 17, nil), ErrInnerExtension},
		{"v6 fragment header short", mutate(v6([]ext{{44, fragHdr(0, true)}}, 17, nil), func(b []byte) { binary.BigEndian.PutUint16(b[4:], 4) }), ErrInnerExtension},
		{"v6 two fragment headers", v6([]ext{{44, fragHdr(0, true)}, {44, fragHdr(0, true)}}, 17, udp(1, 2, 0)), ErrInnerExtension},
		{"v6 nine extension headers", v6(nine, 59, nil), ErrInnerExtension},
		{"v6 tcp header short", v6(nil, 6, tcp(1, 2, 0)[:12]), ErrInnerTransport},
		{"v6 icmpv6 header short", v6(nil, 58, []byte{1}), ErrInnerTransport},
		{"v6 tiny first fragment", v6([]ext{{44, fragHdr(0, true)}}, 17, []byte{0, 1, 0, 2}), ErrInnerTransport},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in, err := ParseInner(tc.pkt)
			if !errors.Is(err, tc.want) {
				t.Fatalf("ParseInner = %+v, %v, want %v", in, err, tc.want)
			}
			if in != (Inner{}) {
				t.Fatalf("ParseInner returned %+v with its error", in)
			}
		})
	}
}

// TestOpenThenParse is the receive path: open, read the inner header, strip
// the padding, check the source (cryptokey routing is the caller's, the
// fields it needs are here).
func TestOpenThenParse(t *testing.T) {
	for _, id := range aeads {
		ini, resp := pair(t, id)
		for _, pkt := range [][]byte{v4(6, 0, 0, tcp(1234, 80, 0x02)), v6(nil, 17, udp(1, 53, 33))} {
			sealed, err := ini.Seal(nil, pkt)
			if err != nil {
				t.Fatal(err)
			}
			plain, _, err := resp.Open(nil, sealed)
			if err != nil {
				t.Fatal(err)
			}
			in, err := ParseInner(plain)
			if err != nil {
				t.Fatal(err)
			}
			if string(plain[:in.Length]) != string(pkt) {
				t.Fatalf("%v: stripped packet differs", id)
			}
			if in.Src != src4 && in.Src != src6 {
				t.Fatalf("%v: source %v", id, in.Src)
			}
		}
	}
}

// FuzzParseInner: no panic, and every accepted packet satisfies the
// invariants the gateway relies on; the padding never changes the answer.
func FuzzParseInner(f *testing.F) {
	ah := make([]byte, 24)
	ah[1] = 4
	for _, p := range [][]byte{
		v4(6, 0, 0, tcp(1, 2, 2)), pad(v4(17, 0, 8, udp(1, 2, 5))), v4(1, 0, 0, icmp(8, 0)),
		v4(17, 0x2000, 0, udp(1, 2, 0)), v4(17, 185, 0, []byte{1}), v4(47, 0, 0, nil),
		v6(nil, 6, tcp(1, 2, 2)), pad(v6(nil, 58, icmp(128, 0))),
		v6([]ext{{0, optsHdr(0)}, {43, optsHdr(1)}, {44, fragHdr(0, true)}, {51, ah}, {60, optsHdr(0)}}, 17, udp(1, 2, 0)),
		v6([]ext{{44, fragHdr(3, false)}}, 6, []byte{1, 2}),
		{}, {0x45}, {0x60},
	} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		in, err := ParseInner(b)
		if err != nil {
			if in != (Inner{}) {
				t.Fatalf("result with error %v", err)
			}
			return
		}
		hdr := 20
		if in.Version == 6 {
			hdr = 40
			if !in.Src.Is6() || !in.Dst.Is6() {
				t.Fatal("v6 packet with non-v6 addresses")
			}
		} else if in.Version != 4 || !in.Src.Is4() || !in.Dst.Is4() {
			t.Fatalf("version %d, addresses %v %v", in.Version, in.Src, in.Dst)
		}
		if in.Length < hdr || in.Length > len(b) {
			t.Fatalf("Length %d outside %d..%d", in.Length, hdr, len(b))
		}
		if in.FirstFragment && !in.Fragment {
			t.Fatal("first fragment that is not a fragment")
		}
		if in.HasTransport {
			if in.Fragment && !in.FirstFragment {
				t.Fatal("transport header read from a later fragment")
			}
			if in.TransportOffset < hdr || in.TransportOffset+4 > in.Length {
				t.Fatalf("transport offset %d, length %d", in.TransportOffset, in.Length)
			}
		} else if in.SrcPort != 0 || in.DstPort != 0 || in.TCPFlags != 0 || in.ICMPType != 0 || in.ICMPCode != 0 || in.TransportOffset != 0 {
			t.Fatal("transport fields without a transport header")
		}
		again, err := ParseInner(b[:in.Length])
		if err != nil || again != in {
			t.Fatalf("the bytes after Length changed the answer: %+v, %v", again, err)
		}
	})
}
