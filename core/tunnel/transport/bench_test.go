package transport

import (
	"testing"
)

const benchInner = 1420

func benchSeal(b *testing.B, id AEADID) {
	ini, _ := pair(b, id)
	inner := payload(benchInner)
	buf := make([]byte, 0, 2048)
	b.SetBytes(benchInner)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ini.Seal(buf, inner); err != nil {
			b.Fatal(err)
		}
	}
}

func benchOpen(b *testing.B, id AEADID) {
	ini, resp := pair(b, id)
	// A ring of distinct packets; the window is emptied each time round
	// so the same counters are accepted again (one Reset per 1024 Opens).
	const ring = 1024
	pkts := make([][]byte, ring)
	for i := range pkts {
		pkts[i], _ = ini.Seal(nil, payload(benchInner))
	}
	buf := make([]byte, 0, 2048)
	b.SetBytes(benchInner)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if i == ring {
			i = 0
			resp.recv.Lock()
			resp.recv.window.Reset()
			resp.recv.Unlock()
		}
		if _, _, err := resp.Open(buf, pkts[i]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func BenchmarkSeal(b *testing.B) {
	b.Run("aes-256-gcm", func(b *testing.B) { benchSeal(b, AES256GCM) })
	b.Run("chacha20-poly1305", func(b *testing.B) { benchSeal(b, ChaCha20Poly1305) })
}

func BenchmarkOpen(b *testing.B) {
	b.Run("aes-256-gcm", func(b *testing.B) { benchOpen(b, AES256GCM) })
	b.Run("chacha20-poly1305", func(b *testing.B) { benchOpen(b, ChaCha20Poly1305) })
}

// BenchmarkSealParallel shows what the shared atomic counter costs when
// several goroutines send on one keypair.
func BenchmarkSealParallel(b *testing.B) {
	ini, _ := pair(b, DefaultAEAD())
	inner := payload(benchInner)
	b.SetBytes(benchInner)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		buf := make([]byte, 0, 2048)
		for pb.Next() {
			if _, err := ini.Seal(buf, inner); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkOpenForged is the cost of refusing a forgery (full AEAD pass).
func BenchmarkOpenForged(b *testing.B) {
	ini, resp := pair(b, DefaultAEAD())
	pkt, _ := ini.Seal(nil, payload(benchInner))
	pkt[len(pkt)-1] ^= 1
	buf := make([]byte, 0, 2048)
	for b.Loop() {
		if _, _, err := resp.Open(buf, pkt); err == nil {
			b.Fatal("forgery accepted")
		}
	}
}

// BenchmarkOpenReplayed is the cost of refusing a duplicate (no AEAD).
func BenchmarkOpenReplayed(b *testing.B) {
	ini, resp := pair(b, DefaultAEAD())
	pkt, _ := ini.Seal(nil, payload(benchInner))
	if _, _, err := resp.Open(nil, pkt); err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 0, 2048)
	for b.Loop() {
		if _, _, err := resp.Open(buf, pkt); err == nil {
			b.Fatal("replay accepted")
		}
	}
}

func BenchmarkParseInner(b *testing.B) {
	cases := []struct {
		name string
		pkt  []byte
	}{
		{"v4-tcp", pad(v4(ProtoTCP, 0, 0, append(tcp(40000, 443, 0x10), make([]byte, 1380)...)))},
		{"v6-udp", pad(v6(nil, ProtoUDP, udp(1000, 4600, 1372)))},
		{"v6-ext-headers", v6([]ext{{0, optsHdr(0)}, {44, fragHdr(0, true)}, {60, optsHdr(1)}}, ProtoTCP, tcp(1, 2, 0x02))},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := ParseInner(c.pkt); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
