package cookie_test

import (
	"testing"

	"github.com/avonzt/avon/core/tunnel/cookie"
)

func BenchmarkCheckMAC1(b *testing.B) {
	c := newChecker(b)
	msg := initiation(1)
	_ = cookie.AddMACs(msg, gateway, nil, t0)
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		if !c.CheckMAC1(msg) {
			b.Fatal("refused")
		}
	}
}

func BenchmarkCheckMAC2(b *testing.B) {
	c := newChecker(b)
	ck := cookieFor(b, c, srcA, t0)
	msg := withCookie(b, &ck, t0)
	b.ReportAllocs()
	for b.Loop() {
		if !c.CheckMAC2(msg, srcA, t0) {
			b.Fatal("refused")
		}
	}
}

func BenchmarkReply(b *testing.B) {
	c := newChecker(b)
	msg := initiation(1)
	_ = cookie.AddMACs(msg, gateway, nil, t0)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Reply(msg, 1, srcA, t0); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCheckToken(b *testing.B) {
	c := newChecker(b)
	tok, _ := c.IssueToken(srcA.Addr(), t0)
	b.ReportAllocs()
	for b.Loop() {
		if err := c.CheckToken(tok, srcA.Addr(), t0); err != nil {
			b.Fatal(err)
		}
	}
}
