package netcfg

import (
	"errors"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

// FuzzParseMessages feeds arbitrary datagrams to the reply parser, to every
// payload parser and to the reply state machine: no panic, and whatever is
// accepted satisfies the parsers' promises.
func FuzzParseMessages(f *testing.F) {
	pfx := netip.MustParsePrefix
	f.Add([]byte{})
	f.Add(ackMsg(testSeq, 0, ""))
	f.Add(ackMsg(testSeq, unix.EEXIST, "Address already assigned"))
	f.Add(cat(nlmsg(unix.RTM_NEWLINK, 0, testSeq, testPid, linkPayload(4, "avtest0", 1420, unix.IFF_UP)), ackMsg(testSeq, 0, "")))
	f.Add(cat(
		nlmsg(unix.RTM_NEWADDR, unix.NLM_F_MULTI, testSeq, testPid, addrPayload(3, pfx("198.18.0.1/24"))),
		nlmsg(unix.RTM_NEWADDR, unix.NLM_F_MULTI, testSeq, testPid, addrPayload(3, pfx("fd00:18::1/64"))),
		doneMsg(testSeq)))
	f.Add(cat(
		nlmsg(unix.RTM_NEWROUTE, unix.NLM_F_MULTI, testSeq, testPid,
			routePayload(Route{Dst: pfx("10.8.0.0/16"), Via: netip.MustParseAddr("198.18.0.254"), Metric: 5}, 3, unix.RT_TABLE_MAIN, Protocol)),
		nlmsg(unix.RTM_NEWROUTE, unix.NLM_F_MULTI|unix.NLM_F_DUMP_INTR, testSeq, testPid,
			routePayload(Route{Dst: pfx("::/0"), Metric: 1024}, 3, unix.RT_TABLE_MAIN, Protocol)),
		doneMsg(testSeq)))
	f.Add(nlmsg(unix.NLMSG_DONE, unix.NLM_F_MULTI|unix.NLM_F_ACK_TLVS, testSeq, testPid,
		func() []byte {
			b := make([]byte, 4)
			ne.PutUint32(b, negErrno(unix.EINVAL))
			r := &request{}
			r.str(unix.NLMSGERR_ATTR_MSG, "bad dump")
			return append(b, r.b...)
		}()))
	f.Fuzz(func(t *testing.T, b []byte) {
		msgs, err := parseMessages(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("parseMessages err = %v, not ErrMalformed", err)
			}
		}
		total := 0
		for _, m := range msgs {
			if int(m.Len) != hdrLen+len(m.data) {
				t.Fatalf("message length %d with %d bytes of payload", m.Len, len(m.data))
			}
			total += align(int(m.Len))
			checkPayloads(t, m)
		}
		if err == nil && (total < len(b) || total > len(b)+3) {
			t.Fatalf("messages cover %d of %d bytes", total, len(b))
		}
		if len(msgs) > 0 {
			for _, dump := range []bool{false, true} {
				st := replyState{seq: msgs[0].Seq, pid: msgs[0].Pid, dump: dump, each: func(m message) error {
					checkPayloads(t, m)
					return nil
				}}
				if done, err := st.datagram(b); !done && err != nil {
					t.Fatalf("not done but err %v", err)
				}
			}
		}
	})
}

// checkPayloads runs every payload parser on m; what they accept must keep
// their promises, what they refuse must be ErrMalformed.
func checkPayloads(t *testing.T, m message) {
	t.Helper()
	malformed := func(what string, err error) {
		t.Helper()
		if err != nil && !errors.Is(err, ErrMalformed) {
			t.Fatalf("%s: err = %v, not ErrMalformed", what, err)
		}
	}
	_, err := parseError(m.header, m.data)
	malformed("parseError", err)
	_, err = parseDone(m.header, m.data)
	malformed("parseDone", err)
	attrs, err := parseAttrs(m.data)
	malformed("parseAttrs", err)
	for _, a := range attrs {
		if a.typ&^attrTypeMask != 0 || len(a.data) > len(m.data) {
			t.Fatalf("attribute %+v", a)
		}
	}
	l, err := parseLink(m.data)
	malformed("parseLink", err)
	if err == nil && l.Index <= 0 {
		t.Fatalf("parseLink accepted index %d", l.Index)
	}
	a, err := parseAddr(m.data)
	malformed("parseAddr", err)
	if err == nil && (!a.Prefix.IsValid() || a.Prefix.Addr().Is4In6()) {
		t.Fatalf("parseAddr accepted %v", a.Prefix)
	}
	r, err := parseRoute(m.data)
	malformed("parseRoute", err)
	if err == nil {
		if !r.Dst.IsValid() || r.Dst.Masked() != r.Dst {
			t.Fatalf("parseRoute accepted destination %v", r.Dst)
		}
		if r.Via.IsValid() && r.Via.Is4() != r.Dst.Addr().Is4() {
			t.Fatalf("parseRoute accepted gateway %v for %v", r.Via, r.Dst)
		}
	}
}
