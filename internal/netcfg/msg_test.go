package netcfg

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Pure tests of the wire format and of the reply state machine: no
// kernel, no privileges.

const (
	testSeq = 42
	testPid = 4242
)

// nlmsg encodes one netlink message with its padding.
func nlmsg(typ, flags uint16, seq, pid uint32, payload []byte) []byte {
	b := make([]byte, hdrLen, hdrLen+align(len(payload)))
	ne.PutUint32(b[0:4], uint32(hdrLen+len(payload)))
	ne.PutUint16(b[4:6], typ)
	ne.PutUint16(b[6:8], flags)
	ne.PutUint32(b[8:12], seq)
	ne.PutUint32(b[12:16], pid)
	b = append(b, payload...)
	return append(b, make([]byte, align(len(b))-len(b))...)
}

// payload builds a fixed struct followed by attributes, with the request
// builder, and returns what follows the header.
func payload(fixed []byte, attrs func(*request)) []byte {
	r := newRequest(0, 0, fixed)
	if attrs != nil {
		attrs(r)
	}
	return r.bytes(0, 0)[hdrLen:]
}

func errPayload(errno unix.Errno, extMsg string) (flags uint16, data []byte) {
	data = make([]byte, errMsgLen)
	ne.PutUint32(data[0:4], negErrno(errno))
	ne.PutUint32(data[4:8], hdrLen) // the capped echo of the request's header
	flags = unix.NLM_F_CAPPED
	if extMsg != "" {
		r := &request{}
		r.str(unix.NLMSGERR_ATTR_MSG, extMsg)
		data = append(data, r.b...)
		flags |= unix.NLM_F_ACK_TLVS
	}
	return flags, data
}

func ackMsg(seq uint32, errno unix.Errno, extMsg string) []byte {
	flags, data := errPayload(errno, extMsg)
	return nlmsg(unix.NLMSG_ERROR, flags, seq, testPid, data)
}

func doneMsg(seq uint32) []byte {
	return nlmsg(unix.NLMSG_DONE, unix.NLM_F_MULTI, seq, testPid, make([]byte, 4))
}

func linkPayload(index int32, name string, mtu uint32, flags uint32) []byte {
	return payload(ifInfo(unix.AF_UNSPEC, index, flags, 0), func(r *request) {
		r.str(unix.IFLA_IFNAME, name)
		r.u32(unix.IFLA_MTU, mtu)
	})
}

func addrPayload(index uint32, p netip.Prefix) []byte {
	a := p.Addr()
	return payload(ifAddr(familyOf(a), uint8(p.Bits()), 0, 0, index), func(r *request) {
		if a.Is4() {
			r.attr(unix.IFA_LOCAL, a.AsSlice())
		}
		r.attr(unix.IFA_ADDRESS, a.AsSlice())
	})
}

func routePayload(rt Route, oif uint32, table uint32, proto uint8) []byte {
	fam := familyOf(rt.Dst.Addr())
	return payload(rtMsg(fam, uint8(rt.Dst.Bits()), uint8(min(table, 255)), proto, 0, unix.RTN_UNICAST), func(r *request) {
		r.u32(unix.RTA_TABLE, table)
		if rt.Dst.Bits() > 0 {
			r.attr(unix.RTA_DST, rt.Dst.Addr().AsSlice())
		}
		r.u32(unix.RTA_OIF, oif)
		if rt.Via.IsValid() {
			r.attr(unix.RTA_GATEWAY, rt.Via.AsSlice())
		}
		r.u32(unix.RTA_PRIORITY, uint32(rt.Metric))
	})
}

// negErrno is the kernel's encoding of an errno in an error message.
func negErrno(e unix.Errno) uint32 { return uint32(-int32(e)) }

func cat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

func TestParseMessages(t *testing.T) {
	one := nlmsg(unix.RTM_NEWLINK, 0, 1, 2, []byte{1, 2, 3}) // 19 bytes + 1 padding
	cases := []struct {
		name  string
		in    []byte
		count int
		err   bool
	}{
		{"empty", nil, 0, false},
		{"one", one, 1, false},
		{"one without its padding", one[:19], 1, false},
		{"two", cat(one, one), 2, false},
		{"header only", nlmsg(unix.NLMSG_NOOP, 0, 0, 0, nil), 1, false},
		{"short header", one[:15], 0, true},
		{"trailing bytes", cat(one, []byte{1, 2, 3}), 0, true},
		{"length below header", func() []byte { b := cat(one); ne.PutUint32(b, 15); return b }(), 0, true},
		{"length beyond datagram", func() []byte { b := cat(one); ne.PutUint32(b, 21); return b }(), 0, true},
		{"length 2^32-1", func() []byte { b := cat(one); ne.PutUint32(b, 0xffffffff); return b }(), 0, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			msgs, err := parseMessages(tc.in)
			if tc.err {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("err = %v, want ErrMalformed", err)
				}
				return
			}
			if err != nil || len(msgs) != tc.count {
				t.Fatalf("%d messages, %v; want %d", len(msgs), err, tc.count)
			}
			if tc.count > 0 && tc.name != "header only" {
				m := msgs[0]
				if m.Type != unix.RTM_NEWLINK || m.Seq != 1 || m.Pid != 2 || string(m.data) != "\x01\x02\x03" {
					t.Fatalf("message = %+v", m)
				}
			}
		})
	}
}

func TestParseAttrs(t *testing.T) {
	r := &request{}
	r.u32(unix.RTA_OIF, 7)
	r.attr(unix.RTA_DST|0x8000, []byte{10, 0, 0}) // nested flag masked, 1 byte of padding
	r.attr(unix.RTA_TABLE, nil)
	good := r.b
	attrs, err := parseAttrs(good)
	if err != nil || len(attrs) != 3 {
		t.Fatalf("%d attributes, %v", len(attrs), err)
	}
	if attrs[0].typ != unix.RTA_OIF || ne.Uint32(attrs[0].data) != 7 || attrs[1].typ != unix.RTA_DST ||
		string(attrs[1].data) != "\x0a\x00\x00" || attrs[2].typ != unix.RTA_TABLE || len(attrs[2].data) != 0 {
		t.Fatalf("attributes = %+v", attrs)
	}
	if _, err := parseAttrs(good[:len(good)-4+3]); err == nil {
		// The last attribute is a bare header: cutting it leaves 3 bytes.
		t.Error("3 trailing bytes accepted")
	}
	for name, b := range map[string][]byte{
		"length below header": {3, 0, 1, 0},
		"length beyond":       {9, 0, 1, 0, 1, 2, 3, 4},
		"short":               {4, 0},
	} {
		if _, err := parseAttrs(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", name, err)
		}
	}
}

func TestParseError(t *testing.T) {
	uncapped := func(errno unix.Errno, msg string, reqLen uint32) (header, []byte) {
		req := nlmsg(unix.RTM_NEWADDR, 0, 1, 2, []byte{1, 2, 3, 4, 5})
		ne.PutUint32(req[0:4], reqLen)
		data := make([]byte, 4, 64)
		ne.PutUint32(data, negErrno(errno))
		data = append(data, req...)
		r := &request{}
		r.str(unix.NLMSGERR_ATTR_MSG, msg)
		r.u32(unix.NLMSGERR_ATTR_OFFS, 20)
		return header{Flags: unix.NLM_F_ACK_TLVS}, append(data, r.b...)
	}
	cases := []struct {
		name  string
		h     header
		data  []byte
		errno unix.Errno
		msg   string
		err   bool
	}{
		{"ack", header{}, func() []byte { _, d := errPayload(0, ""); return d }(), 0, "", false},
		{"errno", header{Flags: unix.NLM_F_CAPPED}, func() []byte { _, d := errPayload(unix.EEXIST, ""); return d }(), unix.EEXIST, "", false},
		{"capped with message", header{Flags: unix.NLM_F_CAPPED | unix.NLM_F_ACK_TLVS},
			func() []byte { _, d := errPayload(unix.EINVAL, "Invalid prefix"); return d }(), unix.EINVAL, "Invalid prefix", false},
		{"uncapped with message", func() header { h, _ := uncapped(unix.ENODEV, "no dev", 21); return h }(),
			func() []byte { _, d := uncapped(unix.ENODEV, "no dev", 21); return d }(), unix.ENODEV, "no dev", false},
		{"uncapped, echo too long", func() header { h, _ := uncapped(unix.ENODEV, "x", 900); return h }(),
			func() []byte { _, d := uncapped(unix.ENODEV, "x", 900); return d }(), 0, "", true},
		{"uncapped, echo too short", func() header { h, _ := uncapped(unix.ENODEV, "x", 3); return h }(),
			func() []byte { _, d := uncapped(unix.ENODEV, "x", 3); return d }(), 0, "", true},
		{"short", header{}, make([]byte, errMsgLen-1), 0, "", true},
		{"bad attributes", header{Flags: unix.NLM_F_CAPPED | unix.NLM_F_ACK_TLVS},
			append(make([]byte, errMsgLen), 9, 0, 1, 0), 0, "", true},
		{"positive code kept", header{}, func() []byte { d := make([]byte, errMsgLen); ne.PutUint32(d, 5); return d }(), 5, "", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := parseError(tc.h, tc.data)
			if tc.err {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("err = %v, want ErrMalformed", err)
				}
				return
			}
			if err != nil || r.errno != tc.errno || r.msg != tc.msg {
				t.Fatalf("parseError = %+v, %v; want errno %d msg %q", r, err, tc.errno, tc.msg)
			}
		})
	}

	if r, err := parseDone(header{}, nil); err != nil || r.errno != 0 {
		t.Errorf("parseDone(empty) = %+v, %v", r, err)
	}
	if _, err := parseDone(header{}, []byte{1, 2}); !errors.Is(err, ErrMalformed) {
		t.Errorf("parseDone(2 bytes) err = %v", err)
	}
	d := make([]byte, 4)
	ne.PutUint32(d, negErrno(unix.EOPNOTSUPP))
	tlv := &request{}
	tlv.str(unix.NLMSGERR_ATTR_MSG, "dump refused")
	if r, err := parseDone(header{Flags: unix.NLM_F_ACK_TLVS}, append(d, tlv.b...)); err != nil ||
		r.errno != unix.EOPNOTSUPP || r.msg != "dump refused" {
		t.Errorf("parseDone(errno, message) = %+v, %v", r, err)
	}
}

func TestParseLinkAddrRoute(t *testing.T) {
	l, err := parseLink(linkPayload(7, "avtest0", 1420, unix.IFF_UP))
	if err != nil || l != (linkInfo{Index: 7, Name: "avtest0", MTU: 1420, Flags: unix.IFF_UP}) {
		t.Errorf("parseLink = %+v, %v", l, err)
	}
	for _, p := range []string{"10.1.2.3/24", "0.0.0.1/0", "fd00::1/64", "fe80::1/128"} {
		want := addrInfo{Index: 9, Prefix: netip.MustParsePrefix(p)}
		if got, err := parseAddr(addrPayload(9, want.Prefix)); err != nil || got != want {
			t.Errorf("parseAddr(%s) = %+v, %v", p, got, err)
		}
	}
	// A point-to-point IPv4 address: IFA_LOCAL is ours, IFA_ADDRESS the peer.
	ptp := payload(ifAddr(unix.AF_INET, 32, 0, 0, 3), func(r *request) {
		r.attr(unix.IFA_ADDRESS, []byte{10, 0, 0, 1})
		r.attr(unix.IFA_LOCAL, []byte{10, 0, 0, 2})
	})
	if got, err := parseAddr(ptp); err != nil || got.Prefix != netip.MustParsePrefix("10.0.0.2/32") {
		t.Errorf("parseAddr(point-to-point) = %+v, %v", got, err)
	}
	for _, rt := range []Route{
		{Dst: netip.MustParsePrefix("10.8.0.0/16"), Metric: 5},
		{Dst: netip.MustParsePrefix("0.0.0.0/0"), Via: netip.MustParseAddr("10.0.0.1")},
		{Dst: netip.MustParsePrefix("fd00:9::/48"), Via: netip.MustParseAddr("fe80::1"), Metric: 1024},
		{Dst: netip.MustParsePrefix("::/0")},
	} {
		got, err := parseRoute(routePayload(rt, 4, 1000, Protocol))
		if err != nil || got.Dst != rt.Dst || got.Via != rt.Via || got.Priority != uint32(rt.Metric) ||
			got.OIF != 4 || got.Table != 1000 || got.Protocol != Protocol || got.Type != unix.RTN_UNICAST {
			t.Errorf("parseRoute(%v) = %+v, %v", rt, got, err)
		}
	}

	malformed := map[string]func() error{
		"link short":     func() error { _, err := parseLink(make([]byte, ifInfoLen-1)); return err },
		"link index 0":   func() error { _, err := parseLink(linkPayload(0, "x", 1, 0)); return err },
		"link index < 0": func() error { _, err := parseLink(linkPayload(-3, "x", 1, 0)); return err },
		"link mtu 2 bytes": func() error {
			_, err := parseLink(payload(ifInfo(0, 1, 0, 0), func(r *request) { r.attr(unix.IFLA_MTU, []byte{1, 2}) }))
			return err
		},
		"link bad attrs":  func() error { _, err := parseLink(append(ifInfo(0, 1, 0, 0), 2, 0)); return err },
		"addr short":      func() error { _, err := parseAddr(make([]byte, ifAddrLen-1)); return err },
		"addr family":     func() error { _, err := parseAddr(ifAddr(unix.AF_PACKET, 0, 0, 0, 1)); return err },
		"addr v4 len 33":  func() error { _, err := parseAddr(ifAddr(unix.AF_INET, 33, 0, 0, 1)); return err },
		"addr v6 len 129": func() error { _, err := parseAddr(ifAddr(unix.AF_INET6, 129, 0, 0, 1)); return err },
		"addr missing":    func() error { _, err := parseAddr(ifAddr(unix.AF_INET, 24, 0, 0, 1)); return err },
		"addr v6 in v4": func() error {
			_, err := parseAddr(payload(ifAddr(unix.AF_INET, 24, 0, 0, 1), func(r *request) { r.attr(unix.IFA_LOCAL, make([]byte, 16)) }))
			return err
		},
		"route short":   func() error { _, err := parseRoute(make([]byte, rtMsgLen-1)); return err },
		"route family":  func() error { _, err := parseRoute(rtMsg(128, 0, 0, 0, 0, 0)); return err },
		"route dst len": func() error { _, err := parseRoute(rtMsg(unix.AF_INET, 33, 0, 0, 0, 0)); return err },
		"route oif 3 bytes": func() error {
			_, err := parseRoute(payload(rtMsg(unix.AF_INET, 0, 0, 0, 0, 0), func(r *request) { r.attr(unix.RTA_OIF, []byte{1, 2, 3}) }))
			return err
		},
		"route v4 gw in v6": func() error {
			_, err := parseRoute(payload(rtMsg(unix.AF_INET6, 0, 0, 0, 0, 0), func(r *request) { r.attr(unix.RTA_GATEWAY, []byte{1, 2, 3, 4}) }))
			return err
		},
	}
	for name, f := range malformed {
		if err := f(); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", name, err)
		}
	}
}

func TestKernelError(t *testing.T) {
	cases := []struct {
		errno unix.Errno
		want  error
	}{
		{unix.EEXIST, ErrExists},
		{unix.ESRCH, ErrNotFound},
		{unix.ENODEV, ErrNotFound},
		{unix.EADDRNOTAVAIL, ErrNotFound},
		{unix.EPERM, ErrPermission},
		{unix.EACCES, ErrPermission},
		{unix.EINVAL, ErrRefused},
		{unix.ENETUNREACH, ErrRefused},
		{unix.EBUSY, ErrRefused},
	}
	for _, tc := range cases {
		err := kernelError(kernelReply{errno: tc.errno, msg: "why"})
		if !errors.Is(err, tc.want) || !errors.Is(err, tc.errno) || !strings.Contains(err.Error(), `"why"`) {
			t.Errorf("kernelError(%v) = %v, want %v wrapping the errno and the message", tc.errno, err, tc.want)
		}
		for _, other := range []error{ErrExists, ErrNotFound, ErrPermission, ErrRefused} {
			if other != tc.want && errors.Is(err, other) {
				t.Errorf("kernelError(%v) also matches %v", tc.errno, other)
			}
		}
	}
}

func TestReplyState(t *testing.T) {
	link := nlmsg(unix.RTM_NEWLINK, 0, testSeq, testPid, linkPayload(3, "d0", 1500, 0))
	part := func(seq uint32, flags uint16) []byte {
		return nlmsg(unix.RTM_NEWADDR, unix.NLM_F_MULTI|flags, seq, testPid,
			addrPayload(3, netip.MustParsePrefix("10.0.0.1/24")))
	}
	eachErr := errors.New("each failed")
	cases := []struct {
		name      string
		dump      bool
		failEach  bool
		datagrams [][]byte
		seen      int   // messages passed to each
		done      int   // datagram index where the reply ends, -1: not ended
		want      error // nil: success
	}{
		{"ack", false, false, [][]byte{ackMsg(testSeq, 0, "")}, 0, 0, nil},
		{"reply then ack", false, false, [][]byte{cat(link, ackMsg(testSeq, 0, ""))}, 1, 0, nil},
		{"reply and ack apart", false, false, [][]byte{link, ackMsg(testSeq, 0, "")}, 1, 1, nil},
		{"refused", false, false, [][]byte{ackMsg(testSeq, unix.EEXIST, "exists")}, 0, 0, ErrExists},
		{"stale seq skipped", false, false, [][]byte{
			cat(nlmsg(unix.RTM_NEWLINK, 0, testSeq-1, testPid, linkPayload(1, "lo", 1, 0)), ackMsg(testSeq-1, unix.ENODEV, "")),
			ackMsg(testSeq, 0, "")}, 0, 1, nil},
		{"other port skipped", false, false, [][]byte{
			nlmsg(unix.NLMSG_ERROR, 0, testSeq, testPid+1, make([]byte, errMsgLen)), ackMsg(testSeq, 0, "")}, 0, 1, nil},
		{"noop skipped", false, false, [][]byte{cat(nlmsg(unix.NLMSG_NOOP, 0, testSeq, testPid, nil), ackMsg(testSeq, 0, ""))}, 0, 0, nil},
		{"malformed datagram", false, false, [][]byte{link[:20]}, 0, 0, ErrMalformed},
		{"malformed error", false, false, [][]byte{nlmsg(unix.NLMSG_ERROR, 0, testSeq, testPid, []byte{1})}, 0, 0, ErrMalformed},
		{"overrun", false, false, [][]byte{nlmsg(unix.NLMSG_OVERRUN, 0, testSeq, testPid, nil)}, 0, 0, ErrMalformed},
		{"each error kept until the ack", false, true, [][]byte{link, link, ackMsg(testSeq, 0, "")}, 1, 2, eachErr},
		{"dump", true, false, [][]byte{cat(part(testSeq, 0), part(testSeq, 0)), part(testSeq, 0), doneMsg(testSeq)}, 3, 2, nil},
		{"dump never done", true, false, [][]byte{part(testSeq, 0), part(testSeq, 0)}, 2, -1, nil},
		{"dump ack is not the end", true, false, [][]byte{cat(part(testSeq, 0), ackMsg(testSeq, 0, "")), doneMsg(testSeq)}, 1, 1, nil},
		{"dump refused", true, false, [][]byte{ackMsg(testSeq, unix.EOPNOTSUPP, "")}, 0, 0, ErrRefused},
		{"dump done with errno", true, false, [][]byte{part(testSeq, 0),
			nlmsg(unix.NLMSG_DONE, unix.NLM_F_MULTI, testSeq, testPid, []byte{0xf3, 0xff, 0xff, 0xff})}, 1, 1, ErrPermission},
		{"dump done malformed", true, false, [][]byte{nlmsg(unix.NLMSG_DONE, 0, testSeq, testPid, []byte{1, 2})}, 0, 0, ErrMalformed},
		{"dump interrupted", true, false, [][]byte{part(testSeq, unix.NLM_F_DUMP_INTR), doneMsg(testSeq)}, 1, 1, errDumpInterrupted},
		{"dump each error wins over interrupted", true, true, [][]byte{cat(part(testSeq, unix.NLM_F_DUMP_INTR), part(testSeq, 0)), doneMsg(testSeq)}, 1, 1, eachErr},
		{"dump stale done skipped", true, false, [][]byte{cat(doneMsg(testSeq+1), part(testSeq, 0)), doneMsg(testSeq)}, 1, 1, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			seen := 0
			st := replyState{seq: testSeq, pid: testPid, dump: tc.dump, each: func(m message) error {
				seen++
				if tc.failEach {
					return eachErr
				}
				return nil
			}}
			ended := -1
			var err error
			for i, d := range tc.datagrams {
				var done bool
				if done, err = st.datagram(d); done {
					ended = i
					break
				}
				if err != nil {
					t.Fatalf("datagram %d: not done but err %v", i, err)
				}
			}
			if ended != tc.done {
				t.Fatalf("ended at datagram %d, want %d", ended, tc.done)
			}
			if seen != tc.seen {
				t.Errorf("each saw %d messages, want %d", seen, tc.seen)
			}
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestRequestEncoding(t *testing.T) {
	r := newRequest(unix.RTM_NEWROUTE, unix.NLM_F_CREATE, rtMsg(unix.AF_INET6, 48, unix.RT_TABLE_MAIN, Protocol, 0, unix.RTN_UNICAST))
	r.attr(unix.RTA_DST, netip.MustParseAddr("fd00:9::").AsSlice())
	r.u32(unix.RTA_OIF, 5)
	r.str(unix.IFLA_IFNAME, "abc") // 4 bytes with NUL: no padding; any odd length would pad
	r.attr(unix.RTA_GATEWAY, []byte{1})
	b := r.bytes(77, 88)
	msgs, err := parseMessages(b)
	if err != nil || len(msgs) != 1 || len(b)%4 != 0 {
		t.Fatalf("%d messages, %v, %d bytes", len(msgs), err, len(b))
	}
	m := msgs[0]
	if m.Type != unix.RTM_NEWROUTE || m.Flags != unix.NLM_F_CREATE|unix.NLM_F_REQUEST || m.Seq != 77 || m.Pid != 88 || int(m.Len) != len(b) {
		t.Fatalf("header = %+v", m.header)
	}
	attrs, err := parseAttrs(m.data[rtMsgLen:])
	if err != nil || len(attrs) != 4 {
		t.Fatalf("%d attributes, %v", len(attrs), err)
	}
	if attrs[0].typ != unix.RTA_DST || len(attrs[0].data) != 16 || attrs[2].typ != unix.IFLA_IFNAME ||
		string(attrs[2].data) != "abc\x00" || string(attrs[3].data) != "\x01" {
		t.Fatalf("attributes = %+v", attrs)
	}
	// The 1-byte gateway makes it an invalid route.
	if _, err := parseRoute(m.data); !errors.Is(err, ErrMalformed) {
		t.Fatalf("parseRoute with a 1-byte gateway: err = %v, want ErrMalformed", err)
	}
}

func TestPlanCheck(t *testing.T) {
	pfx := netip.MustParsePrefix
	cases := []struct {
		name string
		p    Plan
		ok   bool
	}{
		{"empty plan", Plan{Dev: "tun0"}, true},
		{"full", Plan{Dev: "tun0", MTU: 1420, Up: true, Addrs: []netip.Prefix{pfx("10.0.0.2/32"), pfx("fd00::2/128")},
			Routes: []Route{{Dst: pfx("10.0.0.0/8")}, {Dst: pfx("10.0.0.0/8"), Metric: 5}, {Dst: pfx("::/0"), Dev: "tun0"}}}, true},
		{"no dev", Plan{}, false},
		{"mtu low", Plan{Dev: "tun0", MTU: MinMTU - 1}, false},
		{"mtu negative", Plan{Dev: "tun0", MTU: -1}, false},
		{"address twice", Plan{Dev: "tun0", Addrs: []netip.Prefix{pfx("10.0.0.2/32"), pfx("10.0.0.2/24")}}, false},
		{"invalid address", Plan{Dev: "tun0", Addrs: []netip.Prefix{{}}}, false},
		{"mapped address", Plan{Dev: "tun0", Addrs: []netip.Prefix{pfx("::ffff:10.0.0.2/128")}}, false},
		{"route on other dev", Plan{Dev: "tun0", Routes: []Route{{Dst: pfx("10.0.0.0/8"), Dev: "eth0"}}}, false},
		{"route twice", Plan{Dev: "tun0", Routes: []Route{{Dst: pfx("10.0.0.0/8")}, {Dst: pfx("10.0.0.0/8")}}}, false},
		{"v6 route twice (default metric)", Plan{Dev: "tun0", Routes: []Route{{Dst: pfx("fd00::/8")}, {Dst: pfx("fd00::/8"), Metric: 1024}}}, false},
		{"route host bits", Plan{Dev: "tun0", Routes: []Route{{Dst: pfx("10.0.0.1/8")}}}, false},
		{"route metric", Plan{Dev: "tun0", Routes: []Route{{Dst: pfx("10.0.0.0/8"), Metric: -2}}}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			routes, err := tc.p.check()
			if tc.ok != (err == nil) {
				t.Fatalf("check = %v, want ok=%t", err, tc.ok)
			}
			if err != nil {
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("err = %v, want ErrInvalid", err)
				}
				return
			}
			for i, r := range routes {
				if r.Dev != tc.p.Dev || r.Dst != tc.p.Routes[i].Dst {
					t.Errorf("route %d = %v", i, r)
				}
				if r.Dst.Addr().Is6() && tc.p.Routes[i].Metric == 0 && r.Metric != ipv6DefaultMetric {
					t.Errorf("IPv6 route %d recorded with metric %d", i, r.Metric)
				}
			}
		})
	}
}
