package transport

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/avonzt/avon/core/tunnel/replay"
)

var (
	t0     = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	keyI2R = [32]byte{0: 0x11, 31: 0x1f}
	keyR2I = [32]byte{0: 0x22, 31: 0x2f}
	aeads  = []AEADID{AES256GCM, ChaCha20Poly1305}
)

// setSendCounter is the test hook that moves the send counter (to reach the
// exhaustion limit without 2^60 Seals).
func (k *Keypair) setSendCounter(n uint64) { k.sendCounter.Store(n) }

// window returns a copy of the receive window.
func (k *Keypair) window() replay.Window {
	k.recv.Lock()
	defer k.recv.Unlock()
	return k.recv.window
}

// pair returns the initiator's and the responder's keypairs of one session:
// the initiator (local index 1) sends with keyI2R, the responder (local
// index 2) with keyR2I.
func pair(t testing.TB, id AEADID) (ini, resp *Keypair) {
	t.Helper()
	i2r, r2i := keyI2R, keyR2I
	ini, err := NewKeypair(id, &i2r, &r2i, 1, 2, t0)
	if err != nil {
		t.Fatal(err)
	}
	resp, err = NewKeypair(id, &r2i, &i2r, 2, 1, t0)
	if err != nil {
		t.Fatal(err)
	}
	return ini, resp
}

// sealRaw builds a transport packet straight from the design's description,
// independently of Seal: for wire-format checks and for counters Seal
// refuses to produce.
func sealRaw(t testing.TB, id AEADID, key [32]byte, receiver uint32, counter uint64, plain []byte) []byte {
	t.Helper()
	var a cipher.AEAD
	switch id {
	case AES256GCM:
		blk, err := aes.NewCipher(key[:])
		if err != nil {
			t.Fatal(err)
		}
		if a, err = cipher.NewGCM(blk); err != nil {
			t.Fatal(err)
		}
	default:
		var err error
		if a, err = chacha20poly1305.New(key[:]); err != nil {
			t.Fatal(err)
		}
	}
	hdr := make([]byte, 16)
	hdr[0], hdr[1] = 4, ProtocolVersion
	binary.BigEndian.PutUint32(hdr[4:], receiver)
	binary.BigEndian.PutUint64(hdr[8:], counter)
	padded := make([]byte, (len(plain)+15)/16*16)
	copy(padded, plain)
	nonce := make([]byte, 12)
	binary.BigEndian.PutUint64(nonce[4:], counter)
	return a.Seal(hdr, nonce, padded, hdr)
}

func payload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + 1)
	}
	return b
}

func TestRoundTrip(t *testing.T) {
	for _, id := range aeads {
		for _, n := range []int{0, 1, 15, 16, 17, 20, 40, 1420, 1500, MaxInnerSize} {
			ini, resp := pair(t, id)
			inner := payload(n)
			pkt, err := ini.Seal(nil, inner)
			if err != nil {
				t.Fatalf("%v %d: Seal: %v", id, n, err)
			}
			padded := (n + 15) / 16 * 16
			if len(pkt) != HeaderSize+padded+TagSize {
				t.Fatalf("%v %d: packet of %d bytes, want %d", id, n, len(pkt), HeaderSize+padded+TagSize)
			}
			if want := sealRaw(t, id, keyI2R, 2, 0, inner); !bytes.Equal(pkt, want) {
				t.Fatalf("%v %d: Seal differs from the design's construction", id, n)
			}
			h, err := ParseHeader(pkt)
			if err != nil || h != (Header{ReceiverIndex: 2, Counter: 0}) {
				t.Fatalf("%v %d: ParseHeader = %+v, %v", id, n, h, err)
			}
			plain, ctr, err := resp.Open(nil, pkt)
			if err != nil || ctr != 0 {
				t.Fatalf("%v %d: Open = %d, %v", id, n, ctr, err)
			}
			if len(plain) != padded || !bytes.Equal(plain[:n], inner) || !allZero(plain[n:]) {
				t.Fatalf("%v %d: plaintext is not the inner packet padded with zeros", id, n)
			}
			// And the other direction.
			back, err := resp.Seal(nil, inner)
			if err != nil {
				t.Fatal(err)
			}
			if want := sealRaw(t, id, keyR2I, 1, 0, inner); !bytes.Equal(back, want) {
				t.Fatalf("%v %d: responder's Seal differs from the design's construction", id, n)
			}
			if plain, _, err := ini.Open(nil, back); err != nil || !bytes.Equal(plain[:n], inner) {
				t.Fatalf("%v %d: initiator Open: %v", id, n, err)
			}
		}
	}
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func TestKeepalive(t *testing.T) {
	for _, id := range aeads {
		ini, resp := pair(t, id)
		pkt, err := ini.Seal(nil, nil)
		if err != nil || len(pkt) != MinPacketSize {
			t.Fatalf("%v: keepalive of %d bytes, %v", id, len(pkt), err)
		}
		plain, _, err := resp.Open(make([]byte, 0, 64), pkt)
		if err != nil || plain == nil || len(plain) != 0 {
			t.Fatalf("%v: Open keepalive = %d bytes, %v", id, len(plain), err)
		}
	}
}

func TestSealAppendsAndInPlace(t *testing.T) {
	for _, id := range aeads {
		a, _ := pair(t, id)
		b, resp := pair(t, id) // same keys, so the same counter gives the same bytes
		inner := payload(100)

		want, err := a.Seal(nil, inner)
		if err != nil {
			t.Fatal(err)
		}
		// The inner packet sits HeaderSize into the buffer the packet is built in.
		buf := make([]byte, 2048)
		copy(buf[HeaderSize:], inner)
		got, err := b.Seal(buf[:0], buf[HeaderSize:HeaderSize+len(inner)])
		if err != nil || !bytes.Equal(got, want) || &got[0] != &buf[0] {
			t.Fatalf("%v: in-place Seal differs or reallocated: %v", id, err)
		}
		// Appending after a prefix keeps the prefix.
		pre := []byte("prefix")
		a2, _ := pair(t, id)
		got, err = a2.Seal(pre, inner)
		if err != nil || !bytes.Equal(got[:len(pre)], pre) || !bytes.Equal(got[len(pre):], want) {
			t.Fatalf("%v: appending Seal: %v", id, err)
		}
		// Open in place.
		plain, _, err := resp.Open(want[HeaderSize:HeaderSize], want)
		if err != nil || !bytes.Equal(plain[:len(inner)], inner) || &plain[0] != &want[HeaderSize] {
			t.Fatalf("%v: in-place Open: %v", id, err)
		}
	}
}

func TestReplay(t *testing.T) {
	for _, id := range aeads {
		ini, resp := pair(t, id)
		pkt, _ := ini.Seal(nil, payload(60))
		if _, _, err := resp.Open(nil, pkt); err != nil {
			t.Fatal(err)
		}
		if _, _, err := resp.Open(nil, pkt); !errors.Is(err, ErrReplay) {
			t.Fatalf("%v: second Open = %v, want ErrReplay", id, err)
		}
	}
}

func TestReorderWithinWindow(t *testing.T) {
	for _, id := range aeads {
		ini, resp := pair(t, id)
		pkts := make([][]byte, 200)
		for i := range pkts {
			pkts[i], _ = ini.Seal(nil, payload(i))
		}
		for i := len(pkts) - 1; i >= 0; i-- {
			plain, ctr, err := resp.Open(nil, pkts[i])
			if err != nil || ctr != uint64(i) || !bytes.Equal(plain[:i], payload(i)) {
				t.Fatalf("%v: reordered packet %d: counter %d, %v", id, i, ctr, err)
			}
		}
		for i := range pkts {
			if _, _, err := resp.Open(nil, pkts[i]); !errors.Is(err, ErrReplay) {
				t.Fatalf("%v: duplicate %d: %v", id, i, err)
			}
		}
	}
}

func TestOldCounterRefused(t *testing.T) {
	ini, resp := pair(t, DefaultAEAD())
	first, _ := ini.Seal(nil, nil)
	var edge, last []byte
	n := replay.WindowSize + 10
	for i := 1; i <= n; i++ {
		p, _ := ini.Seal(nil, nil)
		switch i {
		case n - replay.WindowSize:
			edge = p
		case n:
			last = p
		}
	}
	if _, _, err := resp.Open(nil, last); err != nil {
		t.Fatal(err)
	}
	if _, _, err := resp.Open(nil, first); !errors.Is(err, ErrReplay) {
		t.Fatalf("old counter: %v, want ErrReplay", err)
	}
	if _, _, err := resp.Open(nil, edge); err != nil {
		t.Fatalf("counter exactly at the window edge: %v", err)
	}
}

// TestForgeryLeavesWindow flips every bit of a packet in turn: each forgery
// is refused, the window does not move, and the genuine packet opens
// afterwards.
func TestForgeryLeavesWindow(t *testing.T) {
	for _, id := range aeads {
		for _, n := range []int{0, 48, 1420} {
			ini, resp := pair(t, id)
			// Accept a few so the window is not empty.
			for range 3 {
				p, _ := ini.Seal(nil, nil)
				if _, _, err := resp.Open(nil, p); err != nil {
					t.Fatal(err)
				}
			}
			genuine, _ := ini.Seal(nil, payload(n))
			before := resp.window()
			forged := make([]byte, len(genuine))
			step := 1
			if n > 100 {
				step = 7 // every byte still hit: 7 is coprime with 8
			}
			for bit := 0; bit < len(genuine)*8; bit += step {
				copy(forged, genuine)
				forged[bit/8] ^= 1 << (bit % 8)
				if _, _, err := resp.Open(nil, forged); err == nil {
					t.Fatalf("%v %d: forgery with bit %d flipped accepted", id, n, bit)
				}
				if resp.window() != before {
					t.Fatalf("%v %d: forgery with bit %d flipped moved the window", id, n, bit)
				}
			}
			if plain, ctr, err := resp.Open(nil, genuine); err != nil || ctr != 3 || !bytes.Equal(plain[:n], payload(n)) {
				t.Fatalf("%v %d: genuine packet after the forgeries: %d, %v", id, n, ctr, err)
			}
		}
	}
}

func TestTruncationsAndExtensions(t *testing.T) {
	for _, id := range aeads {
		ini, resp := pair(t, id)
		genuine, _ := ini.Seal(nil, payload(70))
		for l := range len(genuine) {
			_, _, err := resp.Open(nil, genuine[:l])
			aligned := l >= MinPacketSize && (l-MinPacketSize)%16 == 0
			switch {
			case !aligned && !errors.Is(err, ErrTruncated):
				t.Fatalf("%v: %d of %d bytes: %v, want ErrTruncated", id, l, len(genuine), err)
			case aligned && !errors.Is(err, ErrAuth):
				t.Fatalf("%v: %d of %d bytes: %v, want ErrAuth", id, l, len(genuine), err)
			}
		}
		for _, extra := range []int{1, 15, 16, 32} {
			long := append(append([]byte{}, genuine...), make([]byte, extra)...)
			if _, _, err := resp.Open(nil, long); err == nil {
				t.Fatalf("%v: packet with %d extra bytes accepted", id, extra)
			}
		}
		if resp.window() != (replay.Window{}) {
			t.Fatalf("%v: refused packets moved the window", id)
		}
		if _, _, err := resp.Open(nil, genuine); err != nil {
			t.Fatalf("%v: genuine packet after truncations: %v", id, err)
		}
	}
}

func TestHeaderErrors(t *testing.T) {
	ini, resp := pair(t, AES256GCM)
	genuine, _ := ini.Seal(nil, payload(20))
	tests := []struct {
		name   string
		mutate func(p []byte) []byte
		want   error
	}{
		{"handshake type", func(p []byte) []byte { p[0] = 1; return p }, ErrType},
		{"fragment type", func(p []byte) []byte { p[0] = 9; return p }, ErrType},
		{"type zero", func(p []byte) []byte { p[0] = 0; return p }, ErrType},
		{"version 0", func(p []byte) []byte { p[1] = 0; return p }, ErrVersion},
		{"version 1", func(p []byte) []byte { p[1] = 1; return p }, ErrVersion},
		{"version 3", func(p []byte) []byte { p[1] = 3; return p }, ErrVersion},
		{"reserved high", func(p []byte) []byte { p[2] = 0x80; return p }, ErrReserved},
		{"reserved low", func(p []byte) []byte { p[3] = 1; return p }, ErrReserved},
		{"other receiver", func(p []byte) []byte { p[7] ^= 1; return p }, ErrIndex},
		{"counter at the limit", func(p []byte) []byte { p[8] = 0x10; return p }, ErrReplay},
		{"counter beyond the limit", func(p []byte) []byte { p[8] = 0xff; return p }, ErrReplay},
		{"too large", func(p []byte) []byte { return append(p, make([]byte, MaxPacketSize)...)[:MaxPacketSize+16] }, ErrTooLarge},
		{"empty", func(p []byte) []byte { return p[:0] }, ErrTruncated},
		{"header only", func(p []byte) []byte { return p[:HeaderSize] }, ErrTruncated},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.mutate(append([]byte{}, genuine...))
			if _, _, err := resp.Open(nil, p); !errors.Is(err, tc.want) {
				t.Fatalf("Open = %v, want %v", err, tc.want)
			}
			if resp.window() != (replay.Window{}) {
				t.Fatal("window moved")
			}
		})
	}
	if _, _, err := resp.Open(nil, genuine); err != nil {
		t.Fatalf("genuine packet: %v", err)
	}
}

func TestCounterLimitOnTheWire(t *testing.T) {
	// A packet genuinely sealed under the right key with counter >= 2^60 is
	// still refused, and one at 2^60-1 accepted.
	for _, id := range aeads {
		_, resp := pair(t, id)
		for _, c := range []uint64{replay.Limit, replay.Limit + 1, ^uint64(0)} {
			if _, _, err := resp.Open(nil, sealRaw(t, id, keyI2R, 2, c, nil)); !errors.Is(err, ErrReplay) {
				t.Fatalf("%v: counter %d: %v, want ErrReplay", id, c, err)
			}
		}
		if _, ctr, err := resp.Open(nil, sealRaw(t, id, keyI2R, 2, replay.Limit-1, nil)); err != nil || ctr != replay.Limit-1 {
			t.Fatalf("%v: counter 2^60-1: %v", id, err)
		}
	}
}

func TestCounterExhaustion(t *testing.T) {
	for _, id := range aeads {
		ini, resp := pair(t, id)
		ini.setSendCounter(RejectAfterMessages - 2)
		for _, want := range []uint64{RejectAfterMessages - 2, RejectAfterMessages - 1} {
			pkt, err := ini.Seal(nil, payload(10))
			if err != nil {
				t.Fatalf("%v: Seal at %d: %v", id, want, err)
			}
			if _, ctr, err := resp.Open(nil, pkt); err != nil || ctr != want {
				t.Fatalf("%v: Open at %d: got %d, %v", id, want, ctr, err)
			}
		}
		for range 3 {
			out, err := ini.Seal([]byte("x"), payload(10))
			if !errors.Is(err, ErrCounterExhausted) || string(out) != "x" {
				t.Fatalf("%v: Seal past the limit: %q, %v", id, out, err)
			}
		}
		if ini.SendCounter() != RejectAfterMessages {
			t.Fatalf("%v: SendCounter = %d", id, ini.SendCounter())
		}
		if !ini.Expired(t0) || !resp.NeedsRekey(t0) {
			t.Fatalf("%v: exhausted keypair not expired / counterpart not due for rekey", id)
		}
	}
}

func TestZeroize(t *testing.T) {
	for _, id := range aeads {
		ini, resp := pair(t, id)
		pkt, _ := ini.Seal(nil, payload(30))
		c := resp.ciphers.Load()
		resp.Zeroize()
		resp.Zeroize() // twice is fine
		if c.sendKey != ([32]byte{}) || c.recvKey != ([32]byte{}) {
			t.Fatalf("%v: raw keys not cleared", id)
		}
		if _, _, err := resp.Open(nil, pkt); !errors.Is(err, ErrClosed) {
			t.Fatalf("%v: Open after Zeroize: %v", id, err)
		}
		if _, err := resp.Seal(nil, nil); !errors.Is(err, ErrClosed) {
			t.Fatalf("%v: Seal after Zeroize: %v", id, err)
		}
		if !resp.Expired(t0) {
			t.Fatalf("%v: zeroized keypair not expired", id)
		}
		// The caller's keys were copied, not taken.
		if keyI2R == ([32]byte{}) || keyR2I == ([32]byte{}) {
			t.Fatal("NewKeypair or Zeroize cleared the caller's keys")
		}
	}
}

func TestNewKeypairErrors(t *testing.T) {
	a, b := keyI2R, keyR2I
	tests := []struct {
		name string
		id   AEADID
		s, r *[32]byte
		want error
	}{
		{"aead 0", 0, &a, &b, ErrAEAD},
		{"aead 3", 3, &a, &b, ErrAEAD},
		{"nil send", AES256GCM, nil, &b, ErrKey},
		{"nil recv", ChaCha20Poly1305, &a, nil, ErrKey},
		{"equal keys", AES256GCM, &a, &a, ErrKey},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if k, err := NewKeypair(tc.id, tc.s, tc.r, 1, 2, t0); !errors.Is(err, tc.want) || k != nil {
				t.Fatalf("NewKeypair = %v, %v, want %v", k, err, tc.want)
			}
		})
	}
}

func TestCrossAEADRefused(t *testing.T) {
	ini, _ := pair(t, AES256GCM)
	_, resp := pair(t, ChaCha20Poly1305)
	pkt, _ := ini.Seal(nil, payload(40))
	if _, _, err := resp.Open(nil, pkt); !errors.Is(err, ErrAuth) {
		t.Fatalf("AES-GCM packet opened with ChaCha20-Poly1305: %v", err)
	}
}

func TestSealTooLarge(t *testing.T) {
	ini, _ := pair(t, AES256GCM)
	if _, err := ini.Seal(nil, make([]byte, MaxInnerSize+1)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Seal of %d bytes: %v", MaxInnerSize+1, err)
	}
	if ini.SendCounter() != 0 {
		t.Fatal("a refused Seal used a counter")
	}
}

func TestConcurrentSealOpen(t *testing.T) {
	const workers, each = 8, 500
	for _, id := range aeads {
		ini, resp := pair(t, id)
		pkts := make(chan []byte, workers*each)
		var wg sync.WaitGroup
		for range workers {
			wg.Go(func() {
				for range each {
					p, err := ini.Seal(nil, payload(64))
					if err != nil {
						t.Error(err)
						return
					}
					pkts <- p
				}
			})
		}
		wg.Wait()
		close(pkts)
		var all [][]byte
		seen := make(map[uint64]bool)
		for p := range pkts {
			h, err := ParseHeader(p)
			if err != nil {
				t.Fatal(err)
			}
			if seen[h.Counter] {
				t.Fatalf("%v: counter %d used twice", id, h.Counter)
			}
			seen[h.Counter] = true
			all = append(all, p)
		}
		if len(seen) != workers*each || ini.SendCounter() != workers*each {
			t.Fatalf("%v: %d unique counters, SendCounter %d", id, len(seen), ini.SendCounter())
		}
		for c := range uint64(workers * each) {
			if !seen[c] {
				t.Fatalf("%v: counter %d missing", id, c)
			}
		}
		// Open them from 8 goroutines, every packet twice: each accepted once.
		var mu sync.Mutex
		accepted := 0
		for w := range workers {
			wg.Go(func() {
				for i := w; i < 2*len(all); i += workers {
					_, _, err := resp.Open(nil, all[i%len(all)])
					switch {
					case err == nil:
						mu.Lock()
						accepted++
						mu.Unlock()
					case !errors.Is(err, ErrReplay):
						t.Error(err)
					}
				}
			})
		}
		wg.Wait()
		// Reordering across goroutines can push early counters out of the
		// window; at least those within it are accepted and none twice.
		if accepted > len(all) || accepted < replay.WindowSize {
			t.Fatalf("%v: %d of %d packets accepted", id, accepted, len(all))
		}
	}
}

func TestRekeyTimers(t *testing.T) {
	tests := []struct {
		name          string
		age           time.Duration
		count         uint64
		rekey, reject bool
	}{
		{"fresh", 0, 0, false, false},
		{"just before rekey time", RekeyAfterTime - time.Nanosecond, 0, false, false},
		{"rekey time", RekeyAfterTime, 0, true, false},
		{"just before reject time", RejectAfterTime - time.Nanosecond, 0, true, false},
		{"reject time", RejectAfterTime, 0, true, true},
		{"just before rekey count", 0, RekeyAfterMessages - 1, false, false},
		{"rekey count", 0, RekeyAfterMessages, true, false},
		{"just before reject count", 0, RejectAfterMessages - 1, true, false},
		{"reject count", 0, RejectAfterMessages, true, true},
		{"clock went back", -time.Second, 0, true, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			now := t0.Add(tc.age)
			if got := NeedsRekey(t0, now, tc.count); got != tc.rekey {
				t.Errorf("NeedsRekey = %v, want %v", got, tc.rekey)
			}
			if got := Expired(t0, now, tc.count); got != tc.reject {
				t.Errorf("Expired = %v, want %v", got, tc.reject)
			}
		})
	}
}

func TestKeypairCountsBothDirections(t *testing.T) {
	ini, resp := pair(t, AES256GCM)
	if ini.NeedsRekey(t0) || ini.Expired(t0) {
		t.Fatal("fresh keypair due")
	}
	if !ini.NeedsRekey(t0.Add(RekeyAfterTime)) || !ini.Expired(t0.Add(RejectAfterTime)) {
		t.Fatal("timers not applied")
	}
	// The responder sent 2^48 messages; the initiator only received them.
	resp.setSendCounter(RekeyAfterMessages)
	pkt, _ := resp.Seal(nil, nil)
	if _, _, err := ini.Open(nil, pkt); err != nil {
		t.Fatal(err)
	}
	if !ini.NeedsRekey(t0) || ini.Expired(t0) {
		t.Fatal("received count not counted for rekey")
	}
	if ini.AEAD() != AES256GCM || ini.LocalIndex() != 1 || ini.RemoteIndex() != 2 || !ini.Created().Equal(t0) {
		t.Fatal("accessors")
	}
}

func TestAEADID(t *testing.T) {
	if d := DefaultAEAD(); !d.Valid() {
		t.Fatalf("DefaultAEAD = %v", d)
	}
	if hasAESGCMHardware() != (DefaultAEAD() == AES256GCM) {
		t.Fatal("DefaultAEAD does not follow the CPU")
	}
	for id, s := range map[AEADID]string{1: "aes-256-gcm", 2: "chacha20-poly1305", 0: "aead(0)", 9: "aead(9)"} {
		if id.String() != s || id.Valid() != (id == 1 || id == 2) {
			t.Errorf("%d: %q valid=%v", uint8(id), id.String(), id.Valid())
		}
	}
}

// FuzzOpen feeds arbitrary bytes to a fresh receiver. Only a byte-exact copy
// of a packet the genuine sender sealed may open (with its plaintext); any
// other input must fail without changing the window.
func FuzzOpen(f *testing.F) {
	// genuine: what the initiator of pair() really sealed, by plaintext.
	genuine := map[string][]byte{}
	for _, id := range aeads {
		f.Add(uint8(id), []byte{})
		f.Add(uint8(id), make([]byte, MinPacketSize))
		f.Add(uint8(id), sealRaw(f, id, [32]byte{9}, 2, 0, payload(20))) // wrong key
		f.Add(uint8(id), sealRaw(f, id, keyI2R, 2, replay.Limit, nil))   // counter at the limit
		f.Add(uint8(id), sealRaw(f, id, keyI2R, 3, 0, nil))              // another receiver
		p := sealRaw(f, id, keyI2R, 2, 5, payload(40))
		genuine[string(p)] = payload(40)
		f.Add(uint8(id), p)
		ini, _ := pair(f, id)
		for i := range 3 {
			p, err := ini.Seal(nil, payload(16*i+3))
			if err != nil {
				f.Fatal(err)
			}
			genuine[string(p)] = payload(16*i + 3)
			f.Add(uint8(id), p)
		}
	}
	f.Fuzz(func(t *testing.T, aead uint8, pkt []byte) {
		id := ChaCha20Poly1305
		if aead%2 == 1 {
			id = AES256GCM
		}
		_, resp := pair(t, id)
		plain, ctr, err := resp.Open(nil, pkt)
		if err == nil {
			want, ok := genuine[string(pkt)]
			if !ok || !bytes.Equal(plain[:len(want)], want) || !allZero(plain[len(want):]) {
				t.Fatalf("accepted a packet that was never sealed (counter %d)", ctr)
			}
			return
		}
		if resp.window() != (replay.Window{}) {
			t.Fatalf("refused packet (%v) moved the window", err)
		}
		if _, herr := ParseHeader(pkt); herr == nil &&
			!errors.Is(err, ErrAuth) && !errors.Is(err, ErrReplay) && !errors.Is(err, ErrIndex) {
			t.Fatalf("well-formed packet refused with %v", err)
		}
	})
}

// TestZeroizeWhileInUse races Zeroize against senders and receivers (run
// with -race): every call either works or reports ErrClosed, and after
// Zeroize returned nothing works.
func TestZeroizeWhileInUse(t *testing.T) {
	for _, id := range aeads {
		ini, resp := pair(t, id)
		pkts := make([][]byte, 400)
		for i := range pkts {
			pkts[i], _ = ini.Seal(nil, payload(100))
		}
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Go(func() {
				for i := w; i < len(pkts); i += 4 {
					if _, err := resp.Seal(nil, payload(100)); err != nil && !errors.Is(err, ErrClosed) {
						t.Error(err)
					}
					if _, _, err := resp.Open(nil, pkts[i]); err != nil && !errors.Is(err, ErrClosed) && !errors.Is(err, ErrReplay) {
						t.Error(err)
					}
				}
			})
		}
		wg.Go(resp.Zeroize)
		wg.Wait()
		if _, err := resp.Seal(nil, nil); !errors.Is(err, ErrClosed) {
			t.Fatalf("%v: Seal after Zeroize: %v", id, err)
		}
		if _, _, err := resp.Open(nil, pkts[0]); !errors.Is(err, ErrClosed) {
			t.Fatalf("%v: Open after Zeroize: %v", id, err)
		}
	}
}
