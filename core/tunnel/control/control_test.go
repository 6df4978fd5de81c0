package control_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/avonzt/avon/core/tunnel/control"
)

func tok(b byte) (t [32]byte) {
	for i := range t {
		t[i] = b + byte(i)
	}
	return t
}

func pulse() *control.Pulse {
	return &control.Pulse{
		Seq: 42, SessionToken: tok(1), AgentTime: 1_780_000_000_123_456_789, ClockOffset: -2_500_000,
		OS: "linux", AgentVersion: "1.4.2",
		Facts: map[string]string{
			"disk.encrypted": "true", "firewall": "on", "os.build": "6.12.8-amd64",
			"screen.lock": "300", "edr": "running", "patch.age.days": "3",
		},
	}
}

// samples returns one message of each type, small and large, as Parse
// returns them (nil for empty slices and maps).
func samples() map[string]control.Message {
	maxFacts := map[string]string{}
	for i := range control.MaxFacts {
		maxFacts[fmt.Sprintf("k%02d", i)] = strings.Repeat("v", 20)
	}
	full := &control.SessionConfig{Addresses: []netip.Prefix{netip.MustParsePrefix("100.64.0.5/10")}, MTU: 1400,
		PulseInterval: time.Minute, AddressToken: []byte{1}}
	for i := range control.MaxRoutes {
		full.Routes = append(full.Routes, netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, byte(i)}), 16))
	}
	return map[string]control.Message{
		"config body of exactly MaxBody": full,
		"config v4": &control.SessionConfig{
			Addresses: []netip.Prefix{netip.MustParsePrefix("100.64.0.5/10")},
			Routes:    []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.10.0/24")},
			MTU:       1380, PulseInterval: 10 * time.Second, AddressToken: bytes.Repeat([]byte{7}, 64), SessionToken: tok(9),
		},
		"config dual stack": &control.SessionConfig{
			Addresses: []netip.Prefix{netip.MustParsePrefix("100.64.0.5/32"), netip.MustParsePrefix("fd7a:115c::5/64")},
			Routes:    []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0"), netip.MustParsePrefix("fd00::/8")},
			MTU:       1280, PulseInterval: 1500 * time.Millisecond, SessionToken: tok(3),
		},
		"config max token": &control.SessionConfig{
			Addresses: []netip.Prefix{netip.MustParsePrefix("10.9.0.1/16")}, MTU: 576, PulseInterval: control.MaxPulseInterval,
			AddressToken: bytes.Repeat([]byte{0xff}, control.MaxAddressToken),
		},
		"pulse":       pulse(),
		"pulse empty": &control.Pulse{},
		"pulse max facts": &control.Pulse{Seq: 1<<64 - 1, AgentTime: -1, ClockOffset: 1<<63 - 1,
			OS: strings.Repeat("o", control.MaxOS), Facts: maxFacts},
		"pulse unicode": &control.Pulse{Seq: 7, OS: "Windows 11 Professionnel", Facts: map[string]string{"é": "ü", "x": ""}},
		"ack":           &control.PulseAck{Seq: 42, NextToken: tok(2), ServerTime: 1_780_000_000_000_000_000, AddressToken: []byte{1, 2, 3}},
		"ack no token":  &control.PulseAck{Seq: 1},
		"denial v4": &control.Denial{Proto: 6, Src: netip.MustParseAddrPort("100.64.0.5:40000"), Dst: netip.MustParseAddrPort("10.1.2.3:22"),
			Reason: "ssh to production requires a managed device", PolicyIDs: []string{"prod-ssh", "default-deny"}},
		"denial v6": &control.Denial{Proto: 58, Src: netip.MustParseAddrPort("[fd7a:115c::5]:0"), Dst: netip.MustParseAddrPort("[fd00::1]:0")},
		"close":     &control.Close{Code: control.CloseRevoked, Reason: "certificate revoked"},
		"close max": &control.Close{Code: 65535, Reason: strings.Repeat("r", control.MaxReason)},
	}
}

func marshal(t testing.TB, m control.Message) []byte {
	t.Helper()
	b, err := control.Marshal(m)
	if err != nil {
		t.Fatalf("marshal %T: %v", m, err)
	}
	return b
}

func pad(b []byte) []byte {
	return append(append([]byte(nil), b...), make([]byte, (16-len(b)%16)%16)...)
}

func TestRoundTrip(t *testing.T) {
	for name, m := range samples() {
		t.Run(name, func(t *testing.T) {
			b := marshal(t, m)
			if b[0] != byte(m.Type()) || int(binary.BigEndian.Uint16(b[1:])) != len(b)-control.HeaderLen {
				t.Fatalf("header %x for %d bytes", b[:3], len(b))
			}
			if n := len(b) - control.HeaderLen; n > control.MaxBody || (strings.Contains(name, "MaxBody") && n != control.MaxBody) {
				t.Fatalf("body of %d bytes", n)
			}
			for _, in := range [][]byte{b, pad(b), append(append([]byte(nil), b...), 0)} {
				got, err := control.Parse(in)
				if err != nil {
					t.Fatalf("parse %d bytes: %v", len(in), err)
				}
				if !reflect.DeepEqual(got, m) {
					t.Fatalf("parsed %+v\nwant   %+v", got, m)
				}
				if again := marshal(t, got); !bytes.Equal(again, b) {
					t.Fatalf("re-marshal differs:\n%x\n%x", again, b)
				}
			}
			// Parse keeps nothing of its input.
			in := pad(b)
			got, _ := control.Parse(in)
			for i := range in {
				in[i] ^= 0xff
			}
			if !reflect.DeepEqual(got, m) {
				t.Fatal("parsed message changed with its input buffer")
			}
		})
	}
}

func TestAppend(t *testing.T) {
	prefix := []byte("prefix")
	b, err := control.Append(append([]byte(nil), prefix...), pulse())
	if err != nil || !bytes.HasPrefix(b, prefix) || !bytes.Equal(b[len(prefix):], marshal(t, pulse())) {
		t.Fatalf("append: %v %x", err, b)
	}
	bad := pulse()
	bad.OS = strings.Repeat("x", control.MaxOS+1)
	b, err = control.Append(append([]byte(nil), prefix...), bad)
	if !errors.Is(err, control.ErrTooLarge) || !bytes.Equal(b, prefix) {
		t.Fatalf("failed append: %v, %q", err, b)
	}
}

// TestEveryTruncation cuts every sample at every length, both as a short
// datagram (the header's length promises more) and as a well-framed body
// that ends early (the header agrees with the cut).
func TestEveryTruncation(t *testing.T) {
	for name, m := range samples() {
		b := marshal(t, m)
		for i := range len(b) {
			if _, err := control.Parse(b[:i]); !errors.Is(err, control.ErrTruncated) {
				t.Errorf("%s cut to %d of %d: %v", name, i, len(b), err)
			}
			if i < control.HeaderLen {
				continue
			}
			framed := append([]byte(nil), b[:i]...)
			binary.BigEndian.PutUint16(framed[1:], uint16(i-control.HeaderLen))
			if _, err := control.Parse(framed); !errors.Is(err, control.ErrTruncated) {
				t.Errorf("%s body cut to %d of %d: %v", name, i-control.HeaderLen, len(b)-control.HeaderLen, err)
			}
		}
	}
}

func TestIsControl(t *testing.T) {
	for _, c := range []struct {
		in   []byte
		want bool
	}{
		{nil, false}, {[]byte{}, false}, {[]byte{0}, true}, {[]byte{0x02, 0, 0}, true}, {[]byte{0x3f}, true},
		{[]byte{0x40}, false}, {[]byte{0x45, 0, 0, 20}, false}, {[]byte{0x60}, false}, {[]byte{0xff}, false},
	} {
		if got := control.IsControl(c.in); got != c.want {
			t.Errorf("IsControl(%x) = %v", c.in, got)
		}
	}
}

// TestMarshalRefusals: messages that break a limit are refused with the
// error Parse would give their encoding.
func TestMarshalRefusals(t *testing.T) {
	cfg := func(f func(*control.SessionConfig)) control.Message {
		m := &control.SessionConfig{Addresses: []netip.Prefix{netip.MustParsePrefix("100.64.0.5/10")}, MTU: 1400, PulseInterval: 10 * time.Second}
		f(m)
		return m
	}
	pl := func(f func(*control.Pulse)) control.Message { m := pulse(); f(m); return m }
	den := func(f func(*control.Denial)) control.Message {
		m := &control.Denial{Proto: 6, Src: netip.MustParseAddrPort("10.0.0.1:1"), Dst: netip.MustParseAddrPort("10.0.0.2:2")}
		f(m)
		return m
	}
	many := func(n int) map[string]string {
		f := map[string]string{}
		for i := range n {
			f[fmt.Sprintf("fact-%03d", i)] = strings.Repeat("v", 40)
		}
		return f
	}
	v6 := netip.MustParsePrefix("fd00::5/64")
	for _, c := range []struct {
		name string
		m    control.Message
		want error
	}{
		{"nil", nil, control.ErrMalformed},
		{"nil pulse", (*control.Pulse)(nil), control.ErrMalformed},
		{"nil config", (*control.SessionConfig)(nil), control.ErrMalformed},
		{"nil ack", (*control.PulseAck)(nil), control.ErrMalformed},
		{"nil denial", (*control.Denial)(nil), control.ErrMalformed},
		{"nil close", (*control.Close)(nil), control.ErrMalformed},
		{"no address", cfg(func(m *control.SessionConfig) { m.Addresses = nil }), control.ErrMalformed},
		{"9 addresses", cfg(func(m *control.SessionConfig) {
			m.Addresses = make([]netip.Prefix, 9)
			for i := range m.Addresses {
				m.Addresses[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 64, 0, byte(i)}), 10)
			}
		}), control.ErrTooLarge},
		{"invalid address", cfg(func(m *control.SessionConfig) { m.Addresses = []netip.Prefix{{}} }), control.ErrMalformed},
		{"mapped address", cfg(func(m *control.SessionConfig) {
			m.Addresses = []netip.Prefix{netip.MustParsePrefix("::ffff:10.0.0.1/128")}
		}), control.ErrMalformed},
		{"route host bits", cfg(func(m *control.SessionConfig) { m.Routes = []netip.Prefix{netip.MustParsePrefix("10.0.0.1/8")} }), control.ErrMalformed},
		{"65 routes", cfg(func(m *control.SessionConfig) { m.Routes = make([]netip.Prefix, 65) }), control.ErrTooLarge},
		{"routes past the body", cfg(func(m *control.SessionConfig) {
			for i := range 64 {
				m.Routes = append(m.Routes, netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, byte(i)}), 16))
			}
			m.AddressToken = make([]byte, 2) // with one byte, the body is exactly 1200 bytes
		}), control.ErrTooLarge},
		{"mtu 575", cfg(func(m *control.SessionConfig) { m.MTU = 575 }), control.ErrMalformed},
		{"mtu 1279 with v6", cfg(func(m *control.SessionConfig) { m.Addresses = append(m.Addresses, v6); m.MTU = 1279 }), control.ErrMalformed},
		{"interval 999ms", cfg(func(m *control.SessionConfig) { m.PulseInterval = 999 * time.Millisecond }), control.ErrMalformed},
		{"interval 11m", cfg(func(m *control.SessionConfig) { m.PulseInterval = 11 * time.Minute }), control.ErrMalformed},
		{"interval not whole ms", cfg(func(m *control.SessionConfig) { m.PulseInterval = 2*time.Second + 1 }), control.ErrMalformed},
		{"address token 97", cfg(func(m *control.SessionConfig) { m.AddressToken = make([]byte, 97) }), control.ErrTooLarge},
		{"os 65", pl(func(m *control.Pulse) { m.OS = strings.Repeat("o", 65) }), control.ErrTooLarge},
		{"os not utf-8", pl(func(m *control.Pulse) { m.OS = "\xff" }), control.ErrMalformed},
		{"version 65", pl(func(m *control.Pulse) { m.AgentVersion = strings.Repeat("v", 65) }), control.ErrTooLarge},
		{"33 facts", pl(func(m *control.Pulse) { m.Facts = many(33) }), control.ErrTooLarge},
		{"facts past the body", pl(func(m *control.Pulse) { m.Facts = many(32) }), control.ErrTooLarge},
		{"empty key", pl(func(m *control.Pulse) { m.Facts[""] = "x" }), control.ErrMalformed},
		{"key 65", pl(func(m *control.Pulse) { m.Facts[strings.Repeat("k", 65)] = "x" }), control.ErrTooLarge},
		{"value 257", pl(func(m *control.Pulse) { m.Facts["k"] = strings.Repeat("v", 257) }), control.ErrTooLarge},
		{"value not utf-8", pl(func(m *control.Pulse) { m.Facts["k"] = "a\xc0" }), control.ErrMalformed},
		{"ack token 97", &control.PulseAck{AddressToken: make([]byte, 97)}, control.ErrTooLarge},
		{"denial no src", den(func(m *control.Denial) { m.Src = netip.AddrPort{} }), control.ErrMalformed},
		{"denial mixed families", den(func(m *control.Denial) { m.Dst = netip.MustParseAddrPort("[fd00::1]:2") }), control.ErrMalformed},
		{"denial mapped", den(func(m *control.Denial) {
			m.Src = netip.MustParseAddrPort("[::ffff:10.0.0.1]:1")
			m.Dst = netip.MustParseAddrPort("[::ffff:10.0.0.2]:1")
		}), control.ErrMalformed},
		{"denial zone", den(func(m *control.Denial) {
			m.Src = netip.MustParseAddrPort("[fe80::1%eth0]:1")
			m.Dst = netip.MustParseAddrPort("[fe80::2]:1")
		}), control.ErrMalformed},
		{"denial reason 257", den(func(m *control.Denial) { m.Reason = strings.Repeat("r", 257) }), control.ErrTooLarge},
		{"denial 17 policies", den(func(m *control.Denial) { m.PolicyIDs = make([]string, 17) }), control.ErrTooLarge},
		{"denial empty policy id", den(func(m *control.Denial) { m.PolicyIDs = []string{""} }), control.ErrMalformed},
		{"denial policy id 129", den(func(m *control.Denial) { m.PolicyIDs = []string{strings.Repeat("p", 129)} }), control.ErrTooLarge},
		{"close reason 257", &control.Close{Reason: strings.Repeat("r", 257)}, control.ErrTooLarge},
		{"close not utf-8", &control.Close{Reason: "\xed\xa0\x80"}, control.ErrMalformed},
	} {
		t.Run(c.name, func(t *testing.T) {
			b, err := control.Marshal(c.m)
			if !errors.Is(err, c.want) {
				t.Fatalf("marshal: %v (%x), want %v", err, b, c.want)
			}
			if len(b) != 0 {
				t.Fatalf("marshal returned %d bytes with its error", len(b))
			}
		})
	}
}

// raw builds a control message by hand: type, then fields appended as the
// test writes them; the length is filled in.
func raw(typ byte, parts ...any) []byte {
	b := []byte{typ, 0, 0}
	for _, p := range parts {
		switch v := p.(type) {
		case int: // one byte
			b = append(b, byte(v))
		case uint16:
			b = binary.BigEndian.AppendUint16(b, v)
		case uint32:
			b = binary.BigEndian.AppendUint32(b, v)
		case uint64:
			b = binary.BigEndian.AppendUint64(b, v)
		case string:
			b = append(b, v...)
		case []byte:
			b = append(b, v...)
		}
	}
	binary.BigEndian.PutUint16(b[1:], uint16(len(b)-3))
	return b
}

// TestParseRefusals: hand-made encodings that Marshal would never produce.
func TestParseRefusals(t *testing.T) {
	z32 := make([]byte, 32)
	pulseHead := []any{uint64(1), z32, uint64(0), uint64(0), 0, 0} // seq, token, times, empty os and version
	withFacts := func(facts ...any) []byte { return raw(2, append(append([]any{}, pulseHead...), facts...)...) }
	cfgTail := []any{0, uint16(1400), uint32(10000), 0, z32} // no routes, mtu, interval, no token, session token
	cfg := func(addrs ...any) []byte { return raw(1, append(addrs, cfgTail...)...) }
	v4addr := []any{1, 4, 10, "\x64\x40\x00\x05"} // one address: family 4, /10
	good := [][]byte{withFacts(1, 1, "a", uint16(1), "x"), cfg(v4addr...), raw(5, uint16(1), uint16(0))}
	for _, b := range good {
		if _, err := control.Parse(b); err != nil {
			t.Fatalf("the good base %x: %v", b, err)
		}
	}
	bigBody := raw(5, uint16(1), uint16(1198), strings.Repeat("r", 1198))
	for _, c := range []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, control.ErrTruncated},
		{"ip packet", append([]byte{0x45, 0, 0, 20}, make([]byte, 16)...), control.ErrMalformed},
		{"type 0", raw(0), control.ErrUnknownType},
		{"type 6", raw(6, "anything"), control.ErrUnknownType},
		{"type 0x3f", raw(0x3f), control.ErrUnknownType},
		{"unknown type truncated", []byte{6, 0, 9, 1}, control.ErrTruncated},
		{"body over 1200", bigBody, control.ErrTooLarge},
		{"padding not zero", append(raw(5, uint16(1), uint16(0)), 0, 1), control.ErrMalformed},
		{"padding past the block", append(raw(5, uint16(1), uint16(0)), make([]byte, 16)...), control.ErrMalformed},
		{"trailing byte in body", raw(5, uint16(1), uint16(0), 0), control.ErrMalformed},
		{"close reason 257", raw(5, uint16(1), uint16(257), strings.Repeat("r", 257)), control.ErrTooLarge},
		{"close reason not utf-8", raw(5, uint16(1), uint16(2), "\xc3\x28"), control.ErrMalformed},
		{"facts unsorted", withFacts(2, 1, "b", uint16(0), 1, "a", uint16(0)), control.ErrMalformed},
		{"facts duplicate", withFacts(2, 1, "a", uint16(0), 1, "a", uint16(1), "x"), control.ErrMalformed},
		{"facts prefix order", withFacts(2, 2, "ab", uint16(0), 1, "a", uint16(0)), control.ErrMalformed},
		{"fact key empty", withFacts(1, 0, uint16(0)), control.ErrMalformed},
		{"fact key 65", withFacts(1, 65, strings.Repeat("k", 65), uint16(0)), control.ErrTooLarge},
		{"fact value 257", withFacts(1, 1, "k", uint16(257), strings.Repeat("v", 257)), control.ErrTooLarge},
		{"fact key not utf-8", withFacts(1, 1, "\x80", uint16(0)), control.ErrMalformed},
		{"33 facts", withFacts(33), control.ErrTooLarge},
		{"os 65", raw(2, uint64(1), z32, uint64(0), uint64(0), 65, strings.Repeat("o", 65), 0, 0), control.ErrTooLarge},
		{"no address", cfg(0), control.ErrMalformed},
		{"9 addresses", cfg(9), control.ErrTooLarge},
		{"address family 5", cfg(1, 5, 10, "\x64\x40\x00\x05"), control.ErrMalformed},
		{"address 33 bits", cfg(1, 4, 33, "\x64\x40\x00\x05"), control.ErrMalformed},
		{"address 129 bits", cfg(1, 6, 129, make([]byte, 16)), control.ErrMalformed},
		{"address mapped", cfg(1, 6, 128, "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\xff\xff\x0a\x00\x00\x01"), control.ErrMalformed},
		{"route host bits", raw(1, append(v4addr, 1, 4, 8, "\x0a\x00\x00\x01", uint16(1400), uint32(10000), 0, z32)...), control.ErrMalformed},
		{"65 routes", raw(1, append(v4addr, 65)...), control.ErrTooLarge},
		{"mtu 575", raw(1, append(v4addr, 0, uint16(575), uint32(10000), 0, z32)...), control.ErrMalformed},
		{"mtu 1279 with v6", raw(1, 1, 6, 64, "\xfd\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x05", 0, uint16(1279), uint32(10000), 0, z32), control.ErrMalformed},
		{"interval 999 ms", raw(1, append(v4addr, 0, uint16(1400), uint32(999), 0, z32)...), control.ErrMalformed},
		{"interval 600001 ms", raw(1, append(v4addr, 0, uint16(1400), uint32(600001), 0, z32)...), control.ErrMalformed},
		{"config token 97", raw(1, append(v4addr, 0, uint16(1400), uint32(10000), 97, make([]byte, 97), z32)...), control.ErrTooLarge},
		{"ack token 97", raw(3, uint64(1), z32, uint64(0), 97, make([]byte, 97)), control.ErrTooLarge},
		{"denial family 0", raw(4, 6, 0, "\x0a\x00\x00\x01", uint16(1), 4, "\x0a\x00\x00\x02", uint16(2), uint16(0), 0), control.ErrMalformed},
		{"denial mixed", raw(4, 6, 4, "\x0a\x00\x00\x01", uint16(1), 6, make([]byte, 16), uint16(2), uint16(0), 0), control.ErrMalformed},
		{"denial 17 policies", raw(4, 6, 4, "\x0a\x00\x00\x01", uint16(1), 4, "\x0a\x00\x00\x02", uint16(2), uint16(0), 17), control.ErrTooLarge},
		{"denial empty policy", raw(4, 6, 4, "\x0a\x00\x00\x01", uint16(1), 4, "\x0a\x00\x00\x02", uint16(2), uint16(0), 1, 0), control.ErrMalformed},
	} {
		t.Run(c.name, func(t *testing.T) {
			m, err := control.Parse(c.in)
			if !errors.Is(err, c.want) {
				t.Fatalf("parse %x: %v (%+v), want %v", c.in, err, m, c.want)
			}
			if m != nil {
				t.Fatalf("a message with the error: %+v", m)
			}
		})
	}
}

func TestTypeString(t *testing.T) {
	for typ, want := range map[control.Type]string{control.TypePulse: "pulse", control.TypeClose: "close", 0x21: "control-0x21"} {
		if typ.String() != want {
			t.Errorf("%d: %q", typ, typ.String())
		}
	}
}
