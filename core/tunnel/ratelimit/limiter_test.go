package ratelimit_test

import (
	"errors"
	"math"
	"math/rand/v2"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/avonzt/avon/core/tunnel/ratelimit"
)

var t0 = time.Unix(1_700_000_000, 0)

func newLimiter(t testing.TB, cfg ratelimit.Config) *ratelimit.Limiter {
	t.Helper()
	l, err := ratelimit.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return l
}

func TestBurstAndRefill(t *testing.T) {
	l := newLimiter(t, ratelimit.Config{}) // 20/s, burst 5
	a := netip.MustParseAddr("198.51.100.1")
	for i := range 5 {
		if !l.Allow(a, t0) {
			t.Fatalf("burst request %d refused", i)
		}
	}
	if l.Allow(a, t0) {
		t.Fatal("6th request at once allowed")
	}
	if l.Allow(a, t0.Add(49*time.Millisecond)) {
		t.Fatal("allowed before one interval")
	}
	if !l.Allow(a, t0.Add(50*time.Millisecond)) {
		t.Fatal("refused after one interval")
	}
	if l.Allow(a, t0.Add(50*time.Millisecond)) {
		t.Fatal("two tokens after one interval")
	}
	// After a quiet quarter second the whole burst is back, no more.
	now := t0.Add(time.Second)
	for i := range 5 {
		if !l.Allow(a, now) {
			t.Fatalf("refilled burst request %d refused", i)
		}
	}
	if l.Allow(a, now) {
		t.Fatal("burst exceeded after refill")
	}
	if st := l.Stats(); st.Allowed != 11 || st.Limited != 4 {
		t.Fatalf("stats %+v", st)
	}
}

func TestSustainedRate(t *testing.T) {
	tests := []struct {
		name      string
		cfg       ratelimit.Config
		every     time.Duration
		duration  time.Duration
		wantAllow int
	}{
		// 1000 requests 10 ms apart over 10 s: the burst plus one per 50 ms.
		{"default flood", ratelimit.Config{}, 10 * time.Millisecond, 10 * time.Second, 5 + 199},
		// Exactly at the rate: everything passes.
		{"at rate", ratelimit.Config{}, 50 * time.Millisecond, 10 * time.Second, 200},
		{"fractional rate", ratelimit.Config{PerSecond: 0.5, Burst: 1}, time.Second, 10 * time.Second, 5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := newLimiter(t, tc.cfg)
			a := netip.MustParseAddr("2001:db8::1")
			allowed := 0
			for d := time.Duration(0); d < tc.duration; d += tc.every {
				if l.Allow(a, t0.Add(d)) {
					allowed++
				}
			}
			if allowed != tc.wantAllow {
				t.Fatalf("allowed %d, want %d", allowed, tc.wantAllow)
			}
		})
	}
}

func TestPrefixes(t *testing.T) {
	tests := []struct {
		name     string
		a, b     string
		together bool
	}{
		{"same ipv4", "192.0.2.1", "192.0.2.1", true},
		{"ipv4 /32 apart", "192.0.2.1", "192.0.2.2", false},
		{"ipv4 and its v4-mapped form", "192.0.2.1", "::ffff:192.0.2.1", true},
		{"same ipv6 /64", "2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff", true},
		{"ipv6 other /64", "2001:db8:1:2::1", "2001:db8:1:3::1", false},
		{"ipv6 zone ignored", "fe80::1%eth0", "fe80::2%eth1", true},
		{"ipv4 vs ipv6 ::/64", "0.0.0.1", "::1", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := newLimiter(t, ratelimit.Config{Burst: 1})
			if !l.Allow(netip.MustParseAddr(tc.a), t0) {
				t.Fatal("first refused")
			}
			if got := l.Allow(netip.MustParseAddr(tc.b), t0); got == tc.together {
				t.Fatalf("second allowed=%v, want sharing a bucket=%v", got, tc.together)
			}
		})
	}
	l := newLimiter(t, ratelimit.Config{})
	if l.Allow(netip.Addr{}, t0) || l.Stats().Invalid != 1 {
		t.Fatal("invalid address allowed")
	}
}

func TestTableFull(t *testing.T) {
	l := newLimiter(t, ratelimit.Config{MaxEntries: 3}) // refill (burst) time 250 ms
	addr := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}) }
	for i := range 3 {
		if !l.Allow(addr(i), t0) {
			t.Fatalf("source %d refused", i)
		}
	}
	if l.Allow(addr(3), t0) {
		t.Fatal("new source allowed with a full table")
	}
	if !l.Allow(addr(0), t0) {
		t.Fatal("known source refused with a full table")
	}
	if st := l.Stats(); st.Full != 1 || l.Len() != 3 {
		t.Fatalf("stats %+v Len %d", st, l.Len())
	}
	// The refusal at t0 swept (nothing was sweepable). At 100 ms buckets 1
	// and 2 are full again, but sweeps happen at most every refill time
	// (250 ms), so the new source is still refused.
	if l.Allow(addr(4), t0.Add(100*time.Millisecond)) {
		t.Fatal("swept again before the sweep interval")
	}
	if l.Len() != 3 {
		t.Fatalf("Len %d, want 3", l.Len())
	}
	// At 250 ms the sweep frees every full bucket (0's too: its two tokens
	// are back by 100 ms).
	if !l.Allow(addr(4), t0.Add(250*time.Millisecond)) {
		t.Fatal("new source refused after its sweep freed room")
	}
	if l.Len() != 1 {
		t.Fatalf("Len %d, want 1", l.Len())
	}
	if st := l.Stats(); st.Full != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestSweepExact(t *testing.T) {
	l := newLimiter(t, ratelimit.Config{})
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	l.Allow(a, t0)
	for range 5 {
		l.Allow(b, t0)
	}
	if n := l.Sweep(t0.Add(49 * time.Millisecond)); n != 0 {
		t.Fatalf("swept %d before any bucket was full", n)
	}
	if n := l.Sweep(t0.Add(50 * time.Millisecond)); n != 1 || l.Len() != 1 {
		t.Fatalf("swept %d, Len %d; want a's bucket only", n, l.Len())
	}
	if n := l.Sweep(t0.Add(250 * time.Millisecond)); n != 1 || l.Len() != 0 {
		t.Fatalf("swept %d, Len %d", n, l.Len())
	}
}

// reference is an obviously correct token bucket in integer nanoseconds of
// credit: credit refills with time up to Burst intervals; a request spends
// one interval.
type reference struct {
	interval, burst int64
	credit          map[netip.Addr]int64
	last            map[netip.Addr]int64
}

func (r *reference) allow(a netip.Addr, t int64) bool {
	c, ok := r.credit[a]
	if !ok {
		c = r.burst * r.interval
	} else {
		c = min(r.burst*r.interval, c+max(0, t-r.last[a]))
	}
	r.last[a] = t
	if c >= r.interval {
		r.credit[a] = c - r.interval
		return true
	}
	r.credit[a] = c
	return false
}

func TestDifferential(t *testing.T) {
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 3))
		burst := 1 + rng.IntN(8)
		perSec := []float64{1, 4, 20, 1000}[rng.IntN(4)]
		l := newLimiter(t, ratelimit.Config{PerSecond: perSec, Burst: burst})
		ref := &reference{interval: int64(math.Ceil(1e9 / perSec)), burst: int64(burst),
			credit: map[netip.Addr]int64{}, last: map[netip.Addr]int64{}}
		now := t0
		for i := range 5000 {
			now = now.Add(time.Duration(rng.Int64N(int64(3 * time.Second / time.Duration(perSec)))))
			a := netip.AddrFrom4([4]byte{10, 0, 0, byte(rng.IntN(4))})
			if i%500 == 0 {
				l.Sweep(now)
			}
			if got, want := l.Allow(a, now), ref.allow(a, now.UnixNano()); got != want {
				t.Fatalf("seed %d step %d: Allow = %v, reference %v", seed, i, got, want)
			}
		}
	}
}

func TestConfig(t *testing.T) {
	bad := []ratelimit.Config{
		{PerSecond: -1}, {PerSecond: math.NaN()}, {PerSecond: math.Inf(1)}, {PerSecond: 2e9},
		{Burst: -1}, {Burst: 1<<20 + 1}, {MaxEntries: -1}, {MaxEntries: 1<<24 + 1},
	}
	for _, c := range bad {
		if _, err := ratelimit.New(c); !errors.Is(err, ratelimit.ErrInvalidConfig) {
			t.Errorf("%+v: err %v", c, err)
		}
	}
	l := newLimiter(t, ratelimit.Config{})
	if got := l.Config(); got != (ratelimit.Config{PerSecond: 20, Burst: 5, MaxEntries: 65536}) {
		t.Fatalf("defaults %+v", got)
	}
}

func TestConcurrentAllow(t *testing.T) {
	l := newLimiter(t, ratelimit.Config{Burst: 100, MaxEntries: 1000})
	a := netip.MustParseAddr("192.0.2.1")
	var wg sync.WaitGroup
	var mu sync.Mutex
	allowed := 0
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				ok := l.Allow(a, t0)
				l.Allow(netip.AddrFrom4([4]byte{10, 1, byte(g), byte(i)}), t0)
				if ok {
					mu.Lock()
					allowed++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if allowed != 100 {
		t.Fatalf("allowed %d of 400 at one instant, want the burst of 100", allowed)
	}
}

func BenchmarkAllow10kSources(b *testing.B) {
	l := newLimiter(b, ratelimit.Config{})
	addrs := make([]netip.Addr, 10000)
	for i := range addrs {
		if i%2 == 0 {
			addrs[i] = netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		} else {
			addrs[i] = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(i >> 8), byte(i), 0, 0, 1})
		}
	}
	now := t0
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		// 10k sources in turn, 1 ms apart: each source sees one request
		// per 10 s, all allowed after the first round.
		l.Allow(addrs[i], now)
		i++
		if i == len(addrs) {
			i = 0
		}
		now = now.Add(time.Millisecond)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "allows/s")
}
