package frag_test

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"github.com/avonzt/avon/core/tunnel/frag"
)

// FuzzReassemble drives a small Reassembler with a program of fragments
// from four sources: sources 0 and 1 send only genuine fragments of msg
// (in any order, repeated, across timeouts), sources 2 and 3 also send
// arbitrary bytes. It must never panic, never exceed its caps, and every
// message completed for sources 0 and 1 must be msg itself; all of msg's
// fragments fed to a fresh Reassembler must complete it when msg fits the
// limits. Completed messages are recycled, so later reassemblies run in
// buffers that held earlier messages.
//
// The message is generated from a length and a seed rather than taken as
// fuzz bytes, which keeps inputs small (minimizing a 16 KiB input would
// take the fuzzer minutes) without losing any shape of the problem.
func FuzzReassemble(f *testing.F) {
	f.Add(uint16(4493), byte(1), uint16(1200), []byte{0, 0, 0, 1, 0, 2, 0, 3}, []byte{})
	f.Add(uint16(4493), byte(2), uint16(1200), []byte{0, 3, 1, 2, 0, 1, 1, 0, 0, 0, 2, 0, 1, 1, 0, 2}, header(42, 0, 4, 4493))
	f.Add(uint16(16384), byte(3), uint16(1024), []byte{0x10, 0, 0x11, 1, 6, 0, 0xf0, 5, 0x0f, 0}, append(header(42, 1, 16, 16384), make([]byte, 1024)...))
	f.Add(uint16(1), byte(4), uint16(1), []byte{0, 0, 2, 0, 3, 0}, []byte{9, 1, 0, 0, 0, 0, 0, 42, 0, 1, 0, 1, 'y'})
	f.Add(uint16(300), byte(5), uint16(7), []byte{0xfe, 0xff, 0x7d, 0x80, 0x33, 0x44}, []byte{9, 2, 0, 0})
	f.Add(uint16(65535), byte(6), uint16(300), []byte{0, 0}, []byte{})

	f.Fuzz(func(t *testing.T, msgLen uint16, seed byte, chunk uint16, ops []byte, raw []byte) {
		msg := message(int(msgLen), uint64(seed))
		cfg := frag.Config{PerSource: 2, Global: 3, Timeout: time.Second}
		r, err := frag.NewReassembler(cfg)
		if err != nil {
			t.Fatal(err)
		}
		fs, err := frag.Split(msg, 42, int(chunk))
		if err != nil {
			fs = nil
		}
		srcs := []netip.AddrPort{
			netip.MustParseAddrPort("192.0.2.1:1"),
			netip.MustParseAddrPort("[2001:db8::1]:1"),
			netip.MustParseAddrPort("192.0.2.1:2"),
			netip.MustParseAddrPort("[::ffff:192.0.2.1]:1"), // the same source as 0, unmapped
		}
		now := time.Unix(1_700_000_000, 0)
		for i := 0; i+1 < len(ops); i += 2 {
			a, b := ops[i], ops[i+1]
			now = now.Add(time.Duration(a>>4) * 100 * time.Millisecond)
			s := int(a & 3)
			if s == 3 {
				s = 0 // same source as 0 on the wire
			}
			var in []byte
			switch kind := (a >> 2) & 3; {
			case kind == 3:
				r.Expire(now)
				continue
			case kind == 2 && s == 2 && len(raw) > 0:
				in = raw[int(b)%len(raw):]
			case len(fs) > 0:
				in = fs[int(b)%len(fs)]
			default:
				continue
			}
			out, done, _ := r.Add(srcs[a&3], in, now)
			if done && s != 2 && !bytes.Equal(out, msg) {
				t.Fatalf("source %d completed %d bytes that are not the split message", s, len(out))
			}
			if r.Len() > cfg.Global {
				t.Fatalf("Len %d above Global %d", r.Len(), cfg.Global)
			}
			if done {
				// Reused by the next reassemblies, whose messages must
				// still be their own bytes (sources 2 and 3 leave
				// arbitrary bytes in them).
				r.Recycle(out)
			}
		}

		if fs == nil || len(msg) > frag.DefaultMaxTotal || len(fs) > frag.DefaultMaxCount || int(chunk) > frag.DefaultMaxChunk {
			return
		}
		fresh, _ := frag.NewReassembler(frag.Config{})
		for i, f := range fs {
			out, done, err := fresh.Add(srcs[0], f, now)
			if err != nil {
				t.Fatalf("fragment %d of a valid split: %v", i, err)
			}
			if done != (i == len(fs)-1) || (done && !bytes.Equal(out, msg)) {
				t.Fatalf("fragment %d of %d: done %v", i, len(fs), done)
			}
		}
	})
}

func BenchmarkReassembleResponse(b *testing.B) {
	msg := message(4493, 1)
	fs, _ := frag.Split(msg, 1, 1200)
	r, _ := frag.NewReassembler(frag.Config{})
	src := netip.MustParseAddrPort("192.0.2.1:1")
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		for _, f := range fs {
			if _, _, err := r.Add(src, f, t0); err != nil {
				b.Fatal(err)
			}
		}
	}
}
