package cookie_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/avonzt/avon/core/tunnel/cookie"
)

// FuzzCheck feeds arbitrary bytes to every responder check and to the
// initiator's reply parser. None may panic; none may accept bytes that are
// not a genuine MAC, reply or token (forging one is a 2^-128 event, so an
// acceptance here is a bug); and AddMACs over the same bytes must produce a
// message CheckMAC1 accepts.
func FuzzCheck(f *testing.F) {
	c, err := cookie.NewChecker(gateway, detRand(1), t0)
	if err != nil {
		f.Fatal(err)
	}
	msg := initiation(1)
	_ = cookie.AddMACs(msg, gateway, nil, t0)
	reply, _ := c.Reply(msg, 5, srcA, t0)
	tok, _ := c.IssueToken(srcA.Addr(), t0)
	f.Add(msg, []byte{198, 51, 100, 7}, uint16(51820))
	f.Add(reply, []byte{}, uint16(0))
	f.Add(tok, srcB.Addr().AsSlice(), uint16(1))
	f.Add(make([]byte, cookie.MinMessageLen), []byte{0, 0, 0, 0}, uint16(0))
	f.Add([]byte{5, 2, 0, 0}, []byte{1}, uint16(9))

	f.Fuzz(func(t *testing.T, in, ipb []byte, port uint16) {
		ip, _ := netip.AddrFromSlice(ipb)
		src := netip.AddrPortFrom(ip, port)
		now := t0.Add(time.Duration(port) * time.Second)

		// Genuine objects were seeded; any acceptance of other bytes
		// means a forgery.
		if c.CheckMAC1(in) && !genuineMAC1(in) {
			t.Fatal("mac1 accepted on a message whose mac1 is not the HMAC")
		}
		_ = c.CheckMAC2(in, src, now)
		_, _ = cookie.MAC1(in)
		_, _ = cookie.ReplyReceiver(in)
		var m1 [16]byte
		if len(in) >= 16 {
			copy(m1[:], in[:16])
		}
		if ck, err := cookie.OpenReply(in, gateway, m1, now); err == nil && ck.Received != now {
			t.Fatal("cookie stamped with another time")
		}
		if err := c.CheckToken(in, ip, now); err == nil && string(in) != string(tok) {
			t.Fatal("token accepted that was never issued")
		}

		cp := append([]byte(nil), in...)
		if err := cookie.AddMACs(cp, gateway, nil, now); err == nil && !c.CheckMAC1(cp) {
			t.Fatal("AddMACs output refused by CheckMAC1")
		}
	})
}

// genuineMAC1 recomputes mac1 by re-adding the MACs to a copy.
func genuineMAC1(in []byte) bool {
	cp := append([]byte(nil), in...)
	if cookie.AddMACs(cp, gateway, nil, t0) != nil {
		return false
	}
	return string(cp[:len(cp)-16]) == string(in[:len(in)-16])
}
