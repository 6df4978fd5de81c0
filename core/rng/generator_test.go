package rng

import (
	"bytes"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/avonzt/avon/core/rng/rngtest"
)

// fakeClock is a settable clock with a fixed monotonic base.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Now()} }

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newTestGen(t *testing.T, cfg Config, opts ...Option) *Generator {
	t.Helper()
	g, err := New(cfg, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

func TestReadSizesAndModes(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  func(*Config)
	}{
		{"default", func(*Config) {}},
		{"no-df", func(c *Config) { c.DerivationFunction = false }},
		{"unbuffered", func(c *Config) { c.BufferSize = 0 }},
		{"prediction-resistance", func(c *Config) { c.PredictionResistance = true }},
		{"no-df-pr-pers", func(c *Config) {
			c.DerivationFunction, c.PredictionResistance = false, true
			c.Personalization = bytes.Repeat([]byte{7}, SeedLen)
		}},
		{"df-pers", func(c *Config) { c.Personalization = []byte("avon core rng") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tc.cfg(&cfg)
			g := newTestGen(t, cfg)
			seen := map[string]bool{}
			for _, n := range []int{0, 1, 15, 16, 17, 32, 4095, 4096, 4097, MaxRequestBytes + 100, 3*MaxRequestBytes + 1} {
				p := make([]byte, n)
				got, err := g.Read(p)
				if err != nil || got != n {
					t.Fatalf("Read(%d) = %d, %v", n, got, err)
				}
				if n >= 16 {
					if allZero(p[n-16:]) {
						t.Fatalf("Read(%d): tail all zero", n)
					}
					if seen[string(p[:16])] {
						t.Fatalf("Read(%d): repeated output", n)
					}
					seen[string(p[:16])] = true
				}
			}
			if h := g.Health(); !h.OK || h.State != "ok" || !h.StartupTestsPassed {
				t.Fatalf("health %+v", h)
			}
		})
	}
}

// TestWiringMatchesDRBG checks that a one-shard generator draws the
// documented amounts of entropy in order (start-up samples discarded, then
// entropy input, then nonce) and that buffered small reads hand out the
// DRBG's output in order.
func TestWiringMatchesDRBG(t *testing.T) {
	for _, buffered := range []bool{false, true} {
		cfg := DefaultConfig()
		cfg.Shards = 1
		if !buffered {
			cfg.BufferSize = 0
		}
		cfg.Personalization = []byte("wiring")
		g := newTestGen(t, cfg, WithEntropy(rngtest.New("det", 42)))

		ref := rngtest.New("det", 42)
		skip := make([]byte, StartupSamples)
		ref.Read(skip)
		entropy := make([]byte, SecurityStrength/4) // H = 4 bits per byte
		ref.Read(entropy)
		nonce := make([]byte, SecurityStrength/8)
		ref.Read(nonce)
		d := NewCTRDRBG(true)
		if err := d.Instantiate(entropy, nonce, cfg.Personalization); err != nil {
			t.Fatal(err)
		}
		var want []byte
		if buffered {
			want = make([]byte, MaxBufferSize)
			if err := d.Generate(want, nil); err != nil {
				t.Fatal(err)
			}
			want = want[:32*50]
		} else {
			for range 50 {
				w := make([]byte, 32)
				if err := d.Generate(w, nil); err != nil {
					t.Fatal(err)
				}
				want = append(want, w...)
			}
		}
		var got []byte
		for range 50 {
			p := make([]byte, 32)
			if _, err := g.Read(p); err != nil {
				t.Fatal(err)
			}
			got = append(got, p...)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("buffered=%v: generator output differs from the DRBG driven by hand", buffered)
		}
	}
}

func TestStartupFailure(t *testing.T) {
	for _, tc := range []struct {
		mode rngtest.Mode
		test string
	}{
		{rngtest.Stuck, TestRepetitionCount},
		{rngtest.Biased, TestAdaptiveProportion},
	} {
		src := rngtest.New("bad", 1)
		src.SetMode(tc.mode)
		g, err := New(DefaultConfig(), WithEntropy(src))
		if g != nil || !errors.Is(err, ErrHealth) {
			t.Fatalf("mode %v: New = %v, %v; want health error", tc.mode, g, err)
		}
		var he *HealthError
		if !errors.As(err, &he) || he.Test != tc.test || !he.Startup || he.Source != "bad" {
			t.Fatalf("mode %v: error %#v", tc.mode, err)
		}
	}
}

// TestContinuousFailure: a source that turns stuck or biased after
// start-up fails the generator at the next reseed: no bytes, p zeroed,
// OnFailure once, and the failed state persists after the source recovers
// until Reinstantiate.
func TestContinuousFailure(t *testing.T) {
	for _, tc := range []struct {
		mode rngtest.Mode
		test string
	}{
		{rngtest.Stuck, TestRepetitionCount},
		{rngtest.Biased, TestAdaptiveProportion},
	} {
		t.Run(tc.test, func(t *testing.T) {
			src := rngtest.New("primary", 2)
			clock := newFakeClock()
			var calls atomic.Int32
			var got error
			cfg := DefaultConfig()
			cfg.Shards = 4
			var g *Generator
			g = newTestGen(t, cfg, WithEntropy(src), WithClock(clock.now),
				WithOnFailure(func(err error) {
					calls.Add(1)
					got = err
					// The callback may call back in (the server reads
					// Health for /readyz): no lock may be held here.
					if h := g.Health(); h.OK {
						t.Error("Health OK inside OnFailure")
					}
				}))
			p := make([]byte, MaxBufferSize)
			if _, err := g.Read(p[:32]); err != nil {
				t.Fatal(err)
			}
			src.SetMode(tc.mode)
			// Reads of a full buffer's size generate directly; with the
			// interval passed each one reseeds and feeds the tests.
			var err error
			for i := 0; i < 200 && err == nil; i++ {
				clock.advance(cfg.ReseedInterval)
				for j := range p {
					p[j] = 0xFF
				}
				_, err = g.Read(p)
			}
			if err == nil {
				t.Fatal("no failure after the source went bad")
			}
			var he *HealthError
			if !errors.Is(err, ErrHealth) || !errors.Is(err, ErrFailed) || !errors.As(err, &he) || he.Test != tc.test || he.Startup {
				t.Fatalf("error %v", err)
			}
			if !allZero(p) {
				t.Fatal("p not zeroed after failure")
			}
			// Fail closed: the source recovers, the generator does not.
			src.SetMode(rngtest.Healthy)
			var wg sync.WaitGroup
			for range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					q := make([]byte, 100)
					for range 50 {
						if n, err := g.Read(q); n != 0 || !errors.Is(err, ErrFailed) || !allZero(q) {
							t.Errorf("Read after failure = %d, %v", n, err)
							return
						}
					}
				}()
			}
			wg.Wait()
			if err := g.Reseed(nil); !errors.Is(err, ErrFailed) {
				t.Fatalf("Reseed after failure: %v", err)
			}
			if n := calls.Load(); n != 1 {
				t.Fatalf("OnFailure called %d times", n)
			}
			if !errors.Is(got, ErrHealth) {
				t.Fatalf("OnFailure got %v", got)
			}
			h := g.Health()
			if h.OK || h.State != "failed" || h.Failure == "" || h.Sources[0].OK || !h.Sources[0].Excluded {
				t.Fatalf("health %+v", h)
			}
			for _, s := range g.shards {
				s.mu.Lock()
				if s.drbg.instantiated || !allZero(s.drbg.key[:]) || !allZero(s.drbg.v[:]) || !allZero(s.buf) {
					t.Error("failed shard not wiped")
				}
				s.mu.Unlock()
			}
			// Reinstantiate with a recovered source brings it back; a new
			// failure notifies again.
			if err := g.Reinstantiate(); err != nil {
				t.Fatalf("Reinstantiate: %v", err)
			}
			if _, err := g.Read(p); err != nil || allZero(p) {
				t.Fatalf("Read after Reinstantiate: %v", err)
			}
			if h := g.Health(); !h.OK || !h.StartupTestsPassed {
				t.Fatalf("health after Reinstantiate %+v", h)
			}
			src.SetMode(tc.mode)
			err = nil
			for i := 0; i < 50 && err == nil; i++ { // the APT needs a full window
				err = g.Reseed(nil)
			}
			if !errors.Is(err, ErrHealth) {
				t.Fatalf("Reseed with bad source: %v", err)
			}
			if n := calls.Load(); n != 2 {
				t.Fatalf("OnFailure called %d times after second failure", n)
			}
			if err := g.Reinstantiate(); !errors.Is(err, ErrHealth) {
				t.Fatalf("Reinstantiate with a bad source: %v", err)
			}
			if _, err := g.Read(p); !errors.Is(err, ErrFailed) {
				t.Fatalf("Read after failed Reinstantiate: %v", err)
			}
		})
	}
}

// TestReseedExhaustedAndSourceDown: the reseed counter runs out and the
// source errors: the generator fails closed.
func TestReseedExhaustedAndSourceDown(t *testing.T) {
	src := rngtest.New("primary", 3)
	cfg := DefaultConfig()
	cfg.Shards, cfg.BufferSize, cfg.ReseedRequests = 1, 0, 3
	var calls atomic.Int32
	g := newTestGen(t, cfg, WithEntropy(src), WithOnFailure(func(error) { calls.Add(1) }))
	p := make([]byte, 64)
	for range 3 {
		if _, err := g.Read(p); err != nil {
			t.Fatal(err)
		}
	}
	src.SetMode(rngtest.Failing)
	n, err := g.Read(p)
	if n != 0 || !errors.Is(err, ErrFailed) || !errors.Is(err, ErrEntropySource) || !errors.Is(err, rngtest.ErrInjected) {
		t.Fatalf("Read = %d, %v", n, err)
	}
	if calls.Load() != 1 || !allZero(p) {
		t.Fatalf("calls %d, p zero %v", calls.Load(), allZero(p))
	}
}

func TestReseedTriggers(t *testing.T) {
	t.Run("interval", func(t *testing.T) {
		clock := newFakeClock()
		cfg := DefaultConfig()
		cfg.Shards, cfg.BufferSize, cfg.ReseedInterval = 1, 0, time.Minute
		g := newTestGen(t, cfg, WithClock(clock.now))
		p := make([]byte, 32)
		g.Read(p)
		clock.advance(59 * time.Second)
		g.Read(p)
		if r := g.Health().Reseeds; r != 0 {
			t.Fatalf("reseeds %d before the interval", r)
		}
		clock.advance(time.Second)
		g.Read(p)
		h := g.Health()
		if h.Reseeds != 1 || !h.LastReseed.Equal(clock.now()) {
			t.Fatalf("after interval: %+v", h)
		}
	})
	t.Run("bytes", func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.Shards, cfg.BufferSize, cfg.ReseedBytes = 1, 0, 1000
		g := newTestGen(t, cfg)
		p := make([]byte, 400)
		g.Read(p)
		g.Read(p)
		if h := g.Health(); h.Reseeds != 0 || h.BytesSinceReseed != 800 {
			t.Fatalf("before: %+v", h)
		}
		g.Read(p) // 1200 > 1000: reseed first
		if h := g.Health(); h.Reseeds != 1 || h.BytesSinceReseed != 400 {
			t.Fatalf("after: %+v", h)
		}
	})
	t.Run("requests", func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.Shards, cfg.BufferSize, cfg.ReseedRequests = 1, 0, 5
		g := newTestGen(t, cfg)
		p := make([]byte, 16)
		for range 5 {
			g.Read(p)
		}
		if r := g.Health().Reseeds; r != 0 {
			t.Fatalf("reseeds %d after 5 requests", r)
		}
		g.Read(p)
		if r := g.Health().Reseeds; r != 1 {
			t.Fatalf("reseeds %d after 6 requests", r)
		}
	})
	t.Run("large-read-splits", func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.Shards, cfg.BufferSize, cfg.ReseedRequests = 1, 0, 2
		g := newTestGen(t, cfg)
		p := make([]byte, 5*MaxRequestBytes) // 5 requests
		if _, err := g.Read(p); err != nil {
			t.Fatal(err)
		}
		if r := g.Health().Reseeds; r != 2 {
			t.Fatalf("reseeds %d for 5 requests with interval 2", r)
		}
	})
	t.Run("prediction-resistance", func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.Shards, cfg.PredictionResistance = 1, true
		g := newTestGen(t, cfg)
		p := make([]byte, 8)
		for range 4 {
			g.Read(p)
		}
		if r := g.Health().Reseeds; r != 4 {
			t.Fatalf("reseeds %d for 4 reads with prediction resistance", r)
		}
	})
	t.Run("explicit", func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.Shards = 3
		g := newTestGen(t, cfg)
		if err := g.Reseed([]byte("operator")); err != nil {
			t.Fatal(err)
		}
		if r := g.Health().Reseeds; r != 3 {
			t.Fatalf("reseeds %d", r)
		}
		if err := g.Reseed(make([]byte, MaxInputLen+1)); !errors.Is(err, ErrInputLength) {
			t.Fatalf("over-long additional input: %v", err)
		}
		if r := g.Health().Reseeds; r != 3 {
			t.Fatalf("refused reseed changed state: %d", r)
		}
	})
}

// TestExtraSources: extra sources change the output when healthy and are
// left out, reported, when failing; the primary alone keeps the generator
// valid.
func TestExtraSources(t *testing.T) {
	read := func(extra *rngtest.Source) ([]byte, *Generator) {
		cfg := DefaultConfig()
		cfg.Shards = 1
		opts := []Option{WithEntropy(rngtest.New("primary", 9))}
		if extra != nil {
			opts = append(opts, WithExtraSource(extra))
		}
		g := newTestGen(t, cfg, opts...)
		p := make([]byte, 32)
		if _, err := g.Read(p); err != nil {
			t.Fatal(err)
		}
		return p, g
	}
	alone, _ := read(nil)
	withA, _ := read(rngtest.New("hsm", 1))
	withB, _ := read(rngtest.New("hsm", 2))
	if bytes.Equal(alone, withA) || bytes.Equal(withA, withB) {
		t.Fatal("extra source bytes not mixed in")
	}
	for _, mode := range []rngtest.Mode{rngtest.Failing, rngtest.Stuck, rngtest.Empty} {
		bad := rngtest.New("hsm", 1)
		bad.SetMode(mode)
		out, g := read(bad)
		if !bytes.Equal(out, alone) {
			t.Fatalf("mode %v: failing extra source's bytes were used", mode)
		}
		h := g.Health()
		if !h.OK || len(h.Sources) != 2 || h.Sources[1].OK || h.Sources[1].LastError == "" {
			t.Fatalf("mode %v: health %+v", mode, h)
		}
	}
	// Unreachable at start, answering later: joins at the next reseed.
	late := rngtest.New("hsm", 6)
	late.SetMode(rngtest.Failing)
	_, g0 := read(late)
	if h := g0.Health(); h.Sources[1].OK || h.Sources[1].Excluded {
		t.Fatalf("failing extra source: %+v", h.Sources[1])
	}
	late.SetMode(rngtest.Healthy)
	if err := g0.Reseed(nil); err != nil {
		t.Fatal(err)
	}
	if h := g0.Health(); !h.Sources[1].OK || h.Sources[1].Samples < StartupSamples+ExtraSourceBytes {
		t.Fatalf("late extra source not admitted: %+v", h.Sources[1])
	}

	// Turning bad after start-up: excluded at the next reseed, generator OK.
	extra := rngtest.New("hsm", 5)
	_, g := read(extra)
	extra.SetMode(rngtest.Stuck)
	if err := g.Reseed(nil); err != nil {
		t.Fatalf("Reseed with failing extra source: %v", err)
	}
	h := g.Health()
	if !h.OK || !h.Sources[1].Excluded || h.Sources[1].Primary || !h.Sources[0].Primary {
		t.Fatalf("health %+v", h)
	}
	extra.SetMode(rngtest.Healthy)
	if err := g.Reinstantiate(); err != nil {
		t.Fatal(err)
	}
	if h := g.Health(); !h.Sources[1].OK {
		t.Fatalf("extra source not re-admitted: %+v", h.Sources[1])
	}
}

func TestCloseZeroizes(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Shards = 2
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 100)
	g.Read(p)
	var blocks []any
	for _, s := range g.shards {
		s.mu.Lock()
		blocks = append(blocks, s.drbg.block)
		if allZero(objectBytes(s.drbg.block)) {
			t.Fatal("live key schedule reads as zero; the check below would prove nothing")
		}
		s.mu.Unlock()
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	for i, s := range g.shards {
		if s.drbg.instantiated || s.drbg.block != nil || !allZero(s.drbg.key[:]) || !allZero(s.drbg.v[:]) || !allZero(s.buf) {
			t.Errorf("shard %d state not zeroized", i)
		}
		if !allZero(objectBytes(blocks[i])) {
			t.Errorf("shard %d key schedule not overwritten", i)
		}
	}
	for i := range p {
		p[i] = 1
	}
	if n, err := g.Read(p); n != 0 || !errors.Is(err, ErrClosed) || !allZero(p) {
		t.Fatalf("Read after Close = %d, %v", n, err)
	}
	if err := g.Reseed(nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Reseed after Close: %v", err)
	}
	if err := g.Reinstantiate(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Reinstantiate after Close: %v", err)
	}
	if h := g.Health(); h.OK || h.State != "closed" {
		t.Fatalf("health %+v", h)
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestConcurrentUse(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Shards = 3
	cfg.ReseedRequests = 7
	g := newTestGen(t, cfg)
	var wg sync.WaitGroup
	var mu sync.Mutex
	seen := map[[16]byte]bool{}
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := make([]byte, 16+w*700)
			for range 200 {
				if _, err := g.Read(p); err != nil {
					t.Error(err)
					return
				}
				var k [16]byte
				copy(k[:], p)
				mu.Lock()
				if seen[k] {
					t.Error("duplicate 16-byte output")
				}
				seen[k] = true
				mu.Unlock()
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 20 {
			if err := g.Reseed(nil); err != nil {
				t.Error(err)
			}
			_ = g.Health()
		}
	}()
	wg.Wait()
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestConfigValidation(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  func(*Config)
		opts []Option
	}{
		{"negative interval", func(c *Config) { c.ReseedInterval = -1 }, nil},
		{"requests above 2^48", func(c *Config) { c.ReseedRequests = MaxReseedInterval + 1 }, nil},
		{"no-df long personalization", func(c *Config) {
			c.DerivationFunction = false
			c.Personalization = make([]byte, SeedLen+1)
		}, nil},
		{"df long personalization", func(c *Config) { c.Personalization = make([]byte, MaxInputLen+1) }, nil},
		{"shards", func(c *Config) { c.Shards = MaxShards + 1 }, nil},
		{"buffer", func(c *Config) { c.BufferSize = MaxBufferSize + 1 }, nil},
		{"duplicate source", func(*Config) {}, []Option{WithExtraSource(rngtest.New("os", 1))}},
		{"bad min-entropy", func(*Config) {}, []Option{WithEntropy(func() Source {
			s := rngtest.New("x", 1)
			s.SetMinEntropy(9)
			return s
		}())}},
	} {
		cfg := DefaultConfig()
		tc.cfg(&cfg)
		if g, err := New(cfg, tc.opts...); g != nil || !errors.Is(err, ErrConfig) {
			t.Errorf("%s: New = %v, %v", tc.name, g, err)
		}
	}
}
