package flow

import (
	"errors"
	"testing"
)

func TestParse(t *testing.T) {
	const a4, b4, a6, b6 = "100.96.0.5", "10.20.0.10", "fd00::5", "fd00:20::10"
	udp4 := v4(ProtoUDP, a4, b4, udp(5353, 53, []byte("q")))
	tcp6 := v6(ProtoTCP, a6, b6, tcp(40000, 443, tcpSYN))
	cases := []struct {
		name string
		pkt  []byte
		want Packet
	}{
		{"v4 tcp syn", v4(ProtoTCP, a4, b4, tcp(40000, 443, tcpSYN)),
			Packet{Key: key(ProtoTCP, a4, b4, 40000, 443), TCPFlags: tcpSYN, Length: 40}},
		{"v4 udp", udp4, Packet{Key: key(ProtoUDP, a4, b4, 5353, 53), Length: 29}},
		{"v6 tcp", tcp6, Packet{Key: key(ProtoTCP, a6, b6, 40000, 443), TCPFlags: tcpSYN, Length: 60}},
		{"v4 echo request", v4(ProtoICMP, a4, b4, icmpEcho(icmpEchoRequest, 77, 1)),
			Packet{Key: key(ProtoICMP, a4, b4, 77, 0), Length: 28}},
		{"v4 echo reply", v4(ProtoICMP, b4, a4, icmpEcho(icmpEchoReply, 77, 1)),
			Packet{Key: key(ProtoICMP, b4, a4, 0, 77), Length: 28}},
		{"v6 echo request", v6(ProtoICMPv6, a6, b6, icmpEcho(icmp6EchoRequest, 9, 1)),
			Packet{Key: key(ProtoICMPv6, a6, b6, 9, 0), Length: 48}},
		{"v4 other icmp", v4(ProtoICMP, a4, b4, icmpEcho(13, 1, 1)), Packet{Key: key(ProtoICMP, a4, b4, 0, 0), Length: 28}},
		{"v4 gre", v4(47, a4, b4, make([]byte, 8)), Packet{Key: key(47, a4, b4, 0, 0), Length: 28}},
		{"v4 unreachable quoting udp", v4(ProtoICMP, "10.20.0.1", a4, icmpError(icmpUnreachable, udp4[:28])),
			Packet{Key: key(ProtoUDP, a4, b4, 5353, 53), Kind: KindRelated, Length: 56}},
		{"v6 packet too big quoting tcp", v6(ProtoICMPv6, "fd00:20::1", a6, icmpError(icmp6PacketTooBig, tcp6[:48])),
			Packet{Key: key(ProtoTCP, a6, b6, 40000, 443), Kind: KindRelated, Length: 96}},
		{"v4 time exceeded quoting echo", v4(ProtoICMP, "10.20.0.1", a4, icmpError(icmpTimeExceeded,
			v4(ProtoICMP, a4, b4, icmpEcho(icmpEchoRequest, 5, 1)))),
			Packet{Key: key(ProtoICMP, a4, b4, 5, 0), Kind: KindRelated, Length: 56}},
		{"v4 first fragment", v4frag(ProtoUDP, a4, b4, 0x1234, 0, true, udp(1, 2, make([]byte, 16))),
			Packet{Key: key(ProtoUDP, a4, b4, 1, 2), Fragmented: true, FragID: 0x1234, Length: 44}},
		{"v4 later fragment", v4frag(ProtoUDP, a4, b4, 0x1234, 3, false, make([]byte, 8)),
			Packet{Key: key(ProtoUDP, a4, b4, 0, 0), Kind: KindFragment, FragID: 0x1234, Length: 28}},
		{"v6 first fragment", v6frag(ProtoUDP, a6, b6, 0xdeadbeef, 0, true, udp(1, 2, make([]byte, 16))),
			Packet{Key: key(ProtoUDP, a6, b6, 1, 2), Fragmented: true, FragID: 0xdeadbeef, Length: 72}},
		{"v6 later fragment", v6frag(ProtoUDP, a6, b6, 0xdeadbeef, 3, false, make([]byte, 8)),
			Packet{Key: key(ProtoUDP, a6, b6, 0, 0), Kind: KindFragment, FragID: 0xdeadbeef, Length: 56}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := Parse(c.pkt)
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Fatalf("got  %+v\nwant %+v", got, c.want)
			}
		})
	}
}

func TestEchoReplyIsReverse(t *testing.T) {
	req, err := Parse(v4(ProtoICMP, "100.96.0.5", "10.20.0.10", icmpEcho(icmpEchoRequest, 42, 1)))
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Parse(v4(ProtoICMP, "10.20.0.10", "100.96.0.5", icmpEcho(icmpEchoReply, 42, 1)))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Key != req.Key.Reverse() {
		t.Fatalf("reply %v is not the reverse of request %v", rep.Key, req.Key)
	}
}

func TestParseRefuses(t *testing.T) {
	const a4, b4 = "100.96.0.5", "10.20.0.10"
	cases := []struct {
		name string
		pkt  []byte
	}{
		{"empty", nil},
		{"v4 echo cut short", v4(ProtoICMP, a4, b4, []byte{icmpEchoRequest, 0, 0, 0, 0})},
		{"v4 error cut short", v4(ProtoICMP, a4, b4, []byte{icmpUnreachable, 0, 0, 0})},
		{"v4 error quoting nothing", v4(ProtoICMP, a4, b4, icmpError(icmpUnreachable, nil))},
		{"v4 error quoting v6", v4(ProtoICMP, a4, b4, icmpError(icmpUnreachable, v6(ProtoUDP, "fd00::1", "fd00::2", udp(1, 2, nil))))},
		{"v4 error quoting a short header", v4(ProtoICMP, a4, b4, icmpError(icmpUnreachable, v4(ProtoUDP, a4, b4, nil)[:12]))},
		{"v4 error quoting udp without ports", v4(ProtoICMP, a4, b4, icmpError(icmpUnreachable, v4(ProtoUDP, a4, b4, nil)))},
		{"v4 error quoting a later fragment", v4(ProtoICMP, a4, b4, icmpError(icmpUnreachable, v4frag(ProtoUDP, a4, b4, 1, 5, false, make([]byte, 8))))},
		{"v6 error quoting a broken extension", v6(ProtoICMPv6, "fd00::1", "fd00::2", icmpError(icmp6Unreachable,
			v6(60, "fd00::2", "fd00::3", []byte{ProtoUDP, 9})))},
		{"fragmented icmp error", v4frag(ProtoICMP, a4, b4, 7, 0, true, icmpError(icmpUnreachable, v4(ProtoUDP, a4, b4, udp(1, 2, nil))))},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := Parse(c.pkt)
			if !errors.Is(err, ErrPacket) {
				t.Fatalf("Parse = %+v, %v; want ErrPacket", p, err)
			}
		})
	}
}

// FuzzParse feeds arbitrary bytes to the parser and the tracker: no
// panic, and what Parse accepts stays within the packet.
func FuzzParse(f *testing.F) {
	const a4, b4 = "100.96.0.5", "10.20.0.10"
	for _, s := range [][]byte{
		v4(ProtoTCP, a4, b4, tcp(1, 2, tcpSYN)),
		v4(ProtoICMP, "10.20.0.1", a4, icmpError(icmpUnreachable, v4(ProtoUDP, a4, b4, udp(1, 2, nil)))),
		v6(ProtoICMPv6, "fd00::1", "fd00::5", icmpError(icmp6PacketTooBig, v6(ProtoTCP, "fd00::5", "fd00::9", tcp(1, 2, 0)))),
		v4frag(ProtoUDP, a4, b4, 3, 0, true, udp(1, 2, make([]byte, 8))),
		v6frag(ProtoUDP, "fd00::5", "fd00::9", 3, 2, false, make([]byte, 8)),
		v6(ProtoICMPv6, "fd00::5", "fd00::9", icmpEcho(icmp6EchoRequest, 1, 1)),
	} {
		f.Add(s)
	}
	fx := newFixture(f, func(q policyQuery) policyDecision { return policyDecision{Allow: true} }, nil)
	s := fx.session("fuzz", a4)
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Parse(b)
		if err != nil {
			if !errors.Is(err, ErrPacket) {
				t.Fatalf("error %v is not ErrPacket", err)
			}
			return
		}
		if p.Length > len(b) || p.Length < 20 || !p.Key.Src.IsValid() || p.Key.Src.Is4() != p.Key.Dst.Is4() {
			t.Fatalf("accepted %+v from %d bytes", p, len(b))
		}
		in, _ := parseInner(b)
		fx.e.FromAgent(s, b, in, fx.clock.now())
		fx.e.ToAgent(s, b, in, nil, fx.clock.now())
	})
}
