package frag_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/avonzt/avon/core/tunnel/frag"
)

var (
	t0   = time.Unix(1_700_000_000, 0)
	srcA = netip.MustParseAddrPort("192.0.2.1:40000")
	srcB = netip.MustParseAddrPort("[2001:db8::1]:40000")
)

func message(n int, seed uint64) []byte {
	var s [32]byte
	binary.BigEndian.PutUint64(s[:], seed)
	b := make([]byte, n)
	_, _ = rand.NewChaCha8(s).Read(b)
	return b
}

func split(t testing.TB, msg []byte, id uint32, chunk int) [][]byte {
	t.Helper()
	fs, err := frag.Split(msg, id, chunk)
	if err != nil {
		t.Fatalf("Split(%d bytes, chunk %d): %v", len(msg), chunk, err)
	}
	return fs
}

func newR(t testing.TB, cfg frag.Config) *frag.Reassembler {
	t.Helper()
	r, err := frag.NewReassembler(cfg)
	if err != nil {
		t.Fatalf("NewReassembler: %v", err)
	}
	return r
}

// feed adds fs in the given order and returns the completed message (nil
// when none) and the fragment index at which it completed.
func feed(t testing.TB, r *frag.Reassembler, src netip.AddrPort, fs [][]byte, order []int, now time.Time) ([]byte, int) {
	t.Helper()
	for n, i := range order {
		msg, done, err := r.Add(src, fs[i], now)
		if err != nil {
			t.Fatalf("Add fragment %d: %v", i, err)
		}
		if done {
			return msg, n
		}
	}
	return nil, -1
}

func TestSplitLayout(t *testing.T) {
	msg := message(4493, 1) // a Response
	fs := split(t, msg, 0xdeadbeef, 1200)
	if len(fs) != 4 {
		t.Fatalf("%d fragments, want 4", len(fs))
	}
	var joined []byte
	for i, f := range fs {
		want := 1200
		if i == 3 {
			want = 4493 - 3*1200
		}
		if len(f) != frag.HeaderLen+want {
			t.Fatalf("fragment %d: %d bytes, want %d", i, len(f), frag.HeaderLen+want)
		}
		if f[0] != 9 || f[1] != frag.Version || f[2] != 0 || f[3] != 0 {
			t.Fatalf("fragment %d header % x", i, f[:4])
		}
		if binary.BigEndian.Uint32(f[4:8]) != 0xdeadbeef || f[8] != byte(i) || f[9] != 4 ||
			binary.BigEndian.Uint16(f[10:12]) != 4493 {
			t.Fatalf("fragment %d header % x", i, f[:12])
		}
		joined = append(joined, f[12:]...)
	}
	if !bytes.Equal(joined, msg) {
		t.Fatal("payloads do not join to the message")
	}
	// Fragments do not alias each other or msg.
	fs[0] = append(fs[0], 0xff)
	if fs[1][0] != 9 {
		t.Fatal("fragments share a backing array in a way append can clobber")
	}
}

func TestSplitRefuses(t *testing.T) {
	tests := []struct {
		name  string
		n     int
		chunk int
	}{
		{"empty", 0, 1200},
		{"too long for total_len", 65536, 1200},
		{"chunk 0", 10, 0},
		{"chunk negative", 10, -1},
		{"chunk too big", 10, 65536},
		{"256 fragments", 256, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := frag.Split(make([]byte, tc.n), 1, tc.chunk)
			if !errors.Is(err, frag.ErrInvalidArgument) {
				t.Fatalf("err %v, want ErrInvalidArgument", err)
			}
		})
	}
	if fs, err := frag.Split(make([]byte, 255), 1, 1); err != nil || len(fs) != 255 {
		t.Fatalf("255 fragments of 1 byte: %d, %v", len(fs), err)
	}
}

func TestReassembleOrders(t *testing.T) {
	sizes := []struct {
		n, chunk int
	}{
		{1, 1200}, {1199, 1200}, {1200, 1200}, {1201, 1200}, {4493, 1200}, {16384, 1200}, {16384, 1024}, {100, 7},
	}
	for _, sz := range sizes {
		msg := message(sz.n, uint64(sz.n))
		fs := split(t, msg, uint32(sz.n), sz.chunk)
		count := len(fs)
		inOrder := make([]int, count)
		reversed := make([]int, count)
		for i := range count {
			inOrder[i] = i
			reversed[i] = count - 1 - i
		}
		shuffled := append([]int(nil), inOrder...)
		rand.New(rand.NewPCG(uint64(sz.n), 1)).Shuffle(count, func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		for name, order := range map[string][]int{"in order": inOrder, "reversed": reversed, "shuffled": shuffled} {
			t.Run(name, func(t *testing.T) {
				r := newR(t, frag.Config{})
				got, at := feed(t, r, srcA, fs, order, t0)
				if !bytes.Equal(got, msg) {
					t.Fatalf("%d bytes chunk %d: reassembled %d bytes, want the %d-byte message", sz.n, sz.chunk, len(got), len(msg))
				}
				if at != count-1 {
					t.Fatalf("completed after %d fragments, want %d", at+1, count)
				}
				if r.Len() != 0 {
					t.Fatalf("Len %d after completion", r.Len())
				}
				st := r.Stats()
				if st.Accepted != uint64(count) || st.Completed != 1 {
					t.Fatalf("stats %+v", st)
				}
			})
		}
	}
}

func TestDuplicatesIgnored(t *testing.T) {
	msg := message(4493, 2)
	fs := split(t, msg, 5, 1200)
	r := newR(t, frag.Config{})
	for _, i := range []int{0, 0, 2, 0, 2, 1} {
		if _, done, err := r.Add(srcA, append([]byte(nil), fs[i]...), t0); err != nil || done {
			t.Fatalf("fragment %d: done %v err %v", i, done, err)
		}
	}
	got, done, err := r.Add(srcA, fs[3], t0)
	if err != nil || !done || !bytes.Equal(got, msg) {
		t.Fatalf("last fragment: done %v err %v equal %v", done, err, bytes.Equal(got, msg))
	}
	if st := r.Stats(); st.Duplicates != 3 || st.Accepted != 4 || st.Conflicts != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestConflicts(t *testing.T) {
	msg := message(4493, 3)
	fs := split(t, msg, 9, 1200)
	mutate := func(f []byte, at int, v byte) []byte {
		c := append([]byte(nil), f...)
		c[at] = v
		return c
	}
	other := split(t, message(3000, 4), 9, 1000) // same id, other shape
	tests := []struct {
		name   string
		second []byte
	}{
		{"same index different bytes", mutate(fs[0], 100, fs[0][100]^1)},
		{"same index different last bytes", mutate(fs[0], len(fs[0])-1, fs[0][len(fs[0])-1]^0x80)},
		{"other count", func() []byte {
			c := mutate(fs[1], 9, 5)
			binary.BigEndian.PutUint16(c[10:12], 5000)
			return c
		}()},
		{"other total_len", func() []byte {
			c := append([]byte(nil), fs[1]...)
			binary.BigEndian.PutUint16(c[10:12], 4000)
			return c
		}()},
		{"other chunk size", other[1]},
		{"last fragment implying another chunk", append(append([]byte(nil), fs[3]...), 1, 2, 3)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newR(t, frag.Config{})
			if _, _, err := r.Add(srcA, fs[0], t0); err != nil {
				t.Fatal(err)
			}
			_, done, err := r.Add(srcA, tc.second, t0)
			if !errors.Is(err, frag.ErrConflict) || done {
				t.Fatalf("done %v err %v, want ErrConflict", done, err)
			}
			if r.Len() != 0 {
				t.Fatalf("Len %d: reassembly not discarded", r.Len())
			}
			// Discarded means starting over: the remaining genuine
			// fragments alone do not complete.
			for _, f := range fs[1:] {
				if _, done, _ := r.Add(srcA, f, t0); done {
					t.Fatal("completed without fragment 0 after a conflict")
				}
			}
			if st := r.Stats(); st.Conflicts < 1 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

func header(id uint32, index, count byte, total uint16) []byte {
	h := []byte{9, 1, 0, 0, 0, 0, 0, 0, index, count, 0, 0}
	binary.BigEndian.PutUint32(h[4:8], id)
	binary.BigEndian.PutUint16(h[10:12], total)
	return h
}

func TestMalformedRefused(t *testing.T) {
	with := func(h []byte, n int) []byte { return append(h, make([]byte, n)...) }
	tests := []struct {
		name string
		f    []byte
	}{
		{"empty", nil},
		{"header only", header(1, 0, 1, 1)},
		{"wrong type", func() []byte { f := with(header(1, 0, 1, 10), 10); f[0] = 2; return f }()},
		{"wrong version", func() []byte { f := with(header(1, 0, 1, 10), 10); f[1] = 1; return f }()},
		{"reserved set", func() []byte { f := with(header(1, 0, 1, 10), 10); f[3] = 1; return f }()},
		{"count 0", with(header(1, 0, 0, 10), 10)},
		{"index == count", with(header(1, 2, 2, 20), 10)},
		{"index > count", with(header(1, 200, 3, 30), 10)},
		{"count above MaxCount", with(header(1, 0, 17, 17*100), 100)},
		{"total_len 0", with(header(1, 0, 1, 0), 1)},
		{"total_len above MaxTotal", with(header(1, 0, 16, 16385), 1200)},
		{"payload above MaxChunk", with(header(1, 0, 2, 2402), 1201)},
		{"single fragment shorter than total", with(header(1, 0, 1, 11), 10)},
		{"single fragment longer than total", with(header(1, 0, 1, 9), 10)},
		{"total above count*chunk", with(header(1, 0, 2, 201), 100)},
		{"total at most (count-1)*chunk", with(header(1, 0, 3, 200), 100)},
		{"last fragment not fitting any chunk", with(header(1, 2, 3, 201), 100)},
		{"last fragment longer than chunk", with(header(1, 1, 2, 150), 100)},
		{"payload longer than total", with(header(1, 0, 2, 50), 100)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newR(t, frag.Config{})
			msg, done, err := r.Add(srcA, tc.f, t0)
			if !errors.Is(err, frag.ErrMalformed) || done || msg != nil {
				t.Fatalf("done %v err %v, want ErrMalformed", done, err)
			}
			if r.Len() != 0 {
				t.Fatalf("Len %d: something was stored", r.Len())
			}
			if st := r.Stats(); st.Refused != 1 || st.Accepted != 0 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

// A single valid last fragment does fix the chunk size: 3 fragments of 100
// with a 1-byte tail.
func TestLastFragmentFirst(t *testing.T) {
	msg := message(201, 5)
	fs := split(t, msg, 1, 100)
	r := newR(t, frag.Config{})
	got, _ := feed(t, r, srcA, fs, []int{2, 1, 0}, t0)
	if !bytes.Equal(got, msg) {
		t.Fatal("reassembly starting from the last fragment failed")
	}
}

func TestEveryTruncation(t *testing.T) {
	msg := message(4493, 6)
	fs := split(t, msg, 77, 1200)
	for fi, f := range fs {
		for n := 0; n < len(f); n++ {
			r := newR(t, frag.Config{})
			_, done, err := r.Add(srcA, f[:n], t0)
			if done {
				t.Fatalf("fragment %d truncated to %d completed a message", fi, n)
			}
			if n <= frag.HeaderLen && !errors.Is(err, frag.ErrMalformed) {
				t.Fatalf("fragment %d truncated to %d: err %v, want ErrMalformed", fi, n, err)
			}
			// Whatever the truncated fragment did, the genuine fragments
			// never produce a message other than the original.
			for j := range fs {
				got, done, _ := r.Add(srcA, fs[j], t0)
				if done && !bytes.Equal(got, msg) {
					t.Fatalf("fragment %d truncated to %d: completed a different message", fi, n)
				}
			}
		}
	}
}

func TestTimeout(t *testing.T) {
	msg := message(3000, 8)
	fs := split(t, msg, 1, 1200)
	r := newR(t, frag.Config{Timeout: 5 * time.Second})
	if _, _, err := r.Add(srcA, fs[0], t0); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.Add(srcA, fs[1], t0.Add(4999*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	// Fragment 2 arrives 5 s after the first: the reassembly has expired
	// (later fragments do not extend it), so it starts a new one.
	if _, done, err := r.Add(srcA, fs[2], t0.Add(5*time.Second)); err != nil || done {
		t.Fatalf("done %v err %v", done, err)
	}
	if st := r.Stats(); st.Expired != 1 || r.Len() != 1 {
		t.Fatalf("stats %+v Len %d", st, r.Len())
	}
	r.Expire(t0.Add(9 * time.Second))
	if r.Len() != 1 {
		t.Fatalf("Len %d: expired early", r.Len())
	}
	r.Expire(t0.Add(10 * time.Second))
	if r.Len() != 0 || r.Stats().Expired != 2 {
		t.Fatalf("Len %d stats %+v", r.Len(), r.Stats())
	}
}

func TestPerSourceCap(t *testing.T) {
	r := newR(t, frag.Config{PerSource: 4})
	var all [][][]byte
	for id := range 6 {
		fs := split(t, message(2500, uint64(id)), uint32(id), 1200)
		all = append(all, fs)
		if _, _, err := r.Add(srcA, fs[0], t0.Add(time.Duration(id)*time.Millisecond)); err != nil {
			t.Fatal(err)
		}
	}
	// Another source is not affected by srcA's cap.
	fsB := split(t, message(2500, 99), 0, 1200)
	if _, _, err := r.Add(srcB, fsB[0], t0); err != nil {
		t.Fatal(err)
	}
	if r.Len() != 5 || r.Stats().Evicted != 2 {
		t.Fatalf("Len %d stats %+v", r.Len(), r.Stats())
	}
	// Messages 0 and 1 (the oldest) were evicted; 2..5 complete.
	for id := 2; id < 6; id++ {
		if got, _ := feed(t, r, srcA, all[id], []int{1, 2}, t0); got == nil {
			t.Fatalf("message %d did not complete", id)
		}
	}
	for id := range 2 {
		if got, _ := feed(t, r, srcA, all[id], []int{1, 2}, t0); got != nil {
			t.Fatalf("evicted message %d completed", id)
		}
	}
	r.Expire(t0.Add(time.Hour))
	// A v4-mapped source is the same source as its IPv4 form.
	mapped := netip.AddrPortFrom(netip.AddrFrom16(srcA.Addr().As16()), srcA.Port())
	got, _ := feed(t, r, mapped, fsB, []int{0}, t0.Add(time.Hour))
	if got != nil {
		t.Fatal("unexpected completion")
	}
	if _, _, err := r.Add(srcA, fsB[1], t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, done, _ := r.Add(srcA, fsB[2], t0.Add(time.Hour)); !done {
		t.Fatal("a v4-mapped source and its IPv4 form are different sources")
	}
}

func TestGlobalCapManySources(t *testing.T) {
	const sources = 5000
	r := newR(t, frag.Config{})
	src := func(i int) netip.AddrPort {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 4600)
	}
	base := split(t, make([]byte, 16384), 0, 1200) // content is not what this test checks
	msgFor := func(i int) [][]byte {
		fs := make([][]byte, len(base))
		for j, f := range base {
			fs[j] = append([]byte(nil), f...)
			binary.BigEndian.PutUint32(fs[j][4:8], uint32(i))
		}
		return fs
	}
	first := append([]byte(nil), base[0]...)
	for i := range sources {
		binary.BigEndian.PutUint32(first[4:8], uint32(i))
		if _, _, err := r.Add(src(i), first, t0.Add(time.Duration(i)*time.Microsecond)); err != nil {
			t.Fatal(err)
		}
		if r.Len() > 1024 {
			t.Fatalf("Len %d after %d sources", r.Len(), i+1)
		}
	}
	if r.Len() != 1024 || r.Stats().Evicted != sources-1024 {
		t.Fatalf("Len %d stats %+v", r.Len(), r.Stats())
	}
	// The newest 1024 survive and complete; the oldest were evicted.
	now := t0.Add(time.Second)
	for _, i := range []int{sources - 1024, sources - 1, 4500} {
		order := make([]int, len(base)-1)
		for j := range order {
			order[j] = j + 1
		}
		if got, _ := feed(t, r, src(i), msgFor(i), order, now); got == nil {
			t.Fatalf("source %d: newest reassembly did not complete", i)
		}
	}
	if got, _ := feed(t, r, src(0), msgFor(0), []int{1, 2, 3}, now); got != nil {
		t.Fatal("source 0: oldest reassembly survived the global cap")
	}
}

func TestConfig(t *testing.T) {
	bad := []frag.Config{
		{MaxCount: -1}, {MaxCount: 256}, {MaxTotal: -1}, {MaxTotal: 65536}, {MaxChunk: -5},
		{MaxChunk: 70000}, {PerSource: -1}, {Global: -1}, {Global: 1<<20 + 1}, {Timeout: -time.Second},
	}
	for _, c := range bad {
		if _, err := frag.NewReassembler(c); !errors.Is(err, frag.ErrInvalidConfig) {
			t.Errorf("%+v: err %v, want ErrInvalidConfig", c, err)
		}
	}
	r := newR(t, frag.Config{})
	want := frag.Config{MaxCount: 16, MaxTotal: 16384, MaxChunk: 1200, PerSource: 4, Global: 1024, Timeout: 5 * time.Second}
	if r.Config() != want {
		t.Fatalf("defaults %+v", r.Config())
	}
}

func TestConcurrentAdd(t *testing.T) {
	r := newR(t, frag.Config{})
	done := make(chan error, 8)
	for g := range 8 {
		go func() {
			src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(g)}), 1)
			for m := range 50 {
				msg := message(5000, uint64(g*100+m))
				fs, _ := frag.Split(msg, uint32(m), 1200)
				var got []byte
				for _, f := range fs {
					out, ok, err := r.Add(src, f, t0)
					if err != nil {
						done <- err
						return
					}
					if ok {
						got = out
					}
				}
				if !bytes.Equal(got, msg) {
					done <- errors.New("wrong message")
					return
				}
				_ = r.Stats()
				r.Expire(t0)
			}
			done <- nil
		}()
	}
	for range 8 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

// TestSplitForGSO checks the layout a coalescing sender relies on:
// SplitForGSO's fragments are Split's, and appending them in order to the
// first (as conn.StdNetBind does for UDP GSO) gives their concatenation
// without moving the first to a new array or damaging any fragment.
func TestSplitForGSO(t *testing.T) {
	for _, size := range []int{1, 1200, 1201, 4493, 14000} {
		msg := message(size, uint64(size))
		want := split(t, msg, 7, 1200)
		fs, err := frag.SplitForGSO(msg, 7, 1200)
		if err != nil {
			t.Fatal(err)
		}
		if len(fs) != len(want) {
			t.Fatalf("%d bytes: %d fragments, want %d", size, len(fs), len(want))
		}
		var joined []byte
		for i := range fs {
			if !bytes.Equal(fs[i], want[i]) {
				t.Fatalf("%d bytes: fragment %d differs from Split's", size, i)
			}
			joined = append(joined, fs[i]...)
		}
		if cap(fs[0]) != len(joined) {
			t.Fatalf("%d bytes: first fragment's capacity %d, want %d", size, cap(fs[0]), len(joined))
		}
		for i := 1; i < len(fs); i++ {
			if cap(fs[i]) != len(fs[i]) {
				t.Fatalf("%d bytes: fragment %d has spare capacity %d", size, i, cap(fs[i])-len(fs[i]))
			}
		}
		base := fs[0]
		first := &base[0]
		for _, f := range fs[1:] {
			base = append(base, f...)
		}
		if &base[0] != first {
			t.Fatalf("%d bytes: coalescing moved the first fragment", size)
		}
		if !bytes.Equal(base, joined) {
			t.Fatalf("%d bytes: coalesced buffer is not the fragments in order", size)
		}
		for i := range fs {
			if !bytes.Equal(fs[i], want[i]) {
				t.Fatalf("%d bytes: fragment %d damaged by coalescing", size, i)
			}
		}
	}
	if _, err := frag.SplitForGSO(nil, 1, 1200); !errors.Is(err, frag.ErrInvalidArgument) {
		t.Fatalf("empty message: %v", err)
	}
}

// TestRecycle: messages handed back with Recycle are reused by later
// reassemblies (the pool may drop them, so reuse is not asserted), and a
// message reassembled in a reused buffer is exactly its own bytes: shorter
// or longer than the last, fragments in any order, duplicates compared
// against the new message only. Slices Add did not return are ignored.
func TestRecycle(t *testing.T) {
	r := newR(t, frag.Config{})
	r.Recycle(make([]byte, 10)) // not from Add: ignored
	r.Recycle(nil)              // ignored
	sizes := []int{16384, 4493, 14584, 1, 1201, 16384, 100}
	for round, n := range sizes {
		msg := message(n, uint64(1000+round))
		fs := split(t, msg, uint32(round), 1200)
		order := make([]int, len(fs))
		for i := range order {
			order[i] = len(fs) - 1 - i
		}
		if len(fs) > 1 {
			// A duplicate of the last fragment before the rest.
			if _, done, err := r.Add(srcA, fs[len(fs)-1], t0); err != nil || done {
				t.Fatalf("round %d: first fragment: done %v err %v", round, done, err)
			}
		}
		got, _ := feed(t, r, srcA, fs, order, t0)
		if !bytes.Equal(got, msg) {
			t.Fatalf("round %d: reassembled %d bytes in a recycled buffer, not the %d-byte message", round, len(got), n)
		}
		if cap(got) != frag.DefaultMaxTotal {
			t.Fatalf("round %d: message capacity %d, want MaxTotal %d", round, cap(got), frag.DefaultMaxTotal)
		}
		r.Recycle(got)
	}
	if st := r.Stats(); st.Completed != uint64(len(sizes)) || st.Conflicts != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestSplitForGSOTo: with a buffer of SplitLen bytes the fragments lie in
// it, equal to SplitForGSO's; with a smaller one they are in a new buffer.
func TestSplitForGSOTo(t *testing.T) {
	for _, n := range []int{1, 1200, 1201, 4493, 9806, 16384} {
		msg := message(n, uint64(n))
		want, err := frag.SplitForGSO(msg, 7, 1200)
		if err != nil {
			t.Fatal(err)
		}
		need := frag.SplitLen(n, 1200)
		if need != len(want)*frag.HeaderLen+n {
			t.Fatalf("SplitLen(%d) = %d, want %d", n, need, len(want)*frag.HeaderLen+n)
		}
		buf := make([]byte, need)
		got, err := frag.SplitForGSOTo(buf[:0], msg, 7, 1200)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) || &got[0][0] != &buf[0] {
			t.Fatalf("%d bytes: %d fragments, in the given buffer %v", n, len(got), &got[0][0] == &buf[0])
		}
		for i := range got {
			if !bytes.Equal(got[i], want[i]) || cap(got[i]) != cap(want[i]) {
				t.Fatalf("%d bytes: fragment %d differs from SplitForGSO's", n, i)
			}
		}
		small := make([]byte, need-1)
		got, err = frag.SplitForGSOTo(small, msg, 7, 1200)
		if err != nil || &got[0][0] == &small[0] || !bytes.Equal(got[0], want[0]) {
			t.Fatalf("%d bytes, short buffer: err %v, in the short buffer %v", n, err, &got[0][0] == &small[0])
		}
	}
	if frag.SplitLen(0, 1200) != 0 || frag.SplitLen(frag.MaxMessage+1, 1200) != 0 || frag.SplitLen(10, 0) != 0 {
		t.Fatal("SplitLen of an out-of-range size is not 0")
	}
}
