package rng

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Limits and defaults of Config.
const (
	// MaxBufferSize bounds Config.BufferSize: at most this many generated
	// bytes wait in a shard's buffer.
	MaxBufferSize = 4096
	// MaxShards bounds Config.Shards.
	MaxShards = 256
	// ExtraSourceBytes is how many bytes each extra source contributes to
	// every (re)seed.
	ExtraSourceBytes = 32
	// conditioningMargin is the extra min-entropy, in bits, drawn beyond
	// seedlen so that Block_Cipher_df's output may be treated as full
	// entropy in the no-derivation-function mode.
	conditioningMargin = 64
)

// Config selects the DRBG mode and the reseed policy. Start from
// DefaultConfig. Zero ReseedInterval, ReseedBytes, ReseedRequests and
// Shards mean the defaults; a zero BufferSize means unbuffered.
type Config struct {
	// DerivationFunction selects CTR_DRBG with Block_Cipher_df. Without it
	// the entropy input is seedlen bytes of conditioned full entropy and the
	// personalization string is at most SeedLen bytes.
	DerivationFunction bool
	// PredictionResistance reseeds from the entropy sources before every
	// internal Generate and disables the output buffer.
	PredictionResistance bool
	// ReseedInterval reseeds a shard whose last (re)seed is at least this
	// old (monotonic clock), checked at each internal Generate.
	ReseedInterval time.Duration
	// ReseedBytes reseeds a shard before it would produce more than this
	// many bytes since its last (re)seed.
	ReseedBytes uint64
	// ReseedRequests is the DRBG's reseed_interval: internal Generate calls
	// per shard between reseeds, at most MaxReseedInterval (2^48).
	ReseedRequests uint64
	// Personalization is the personalization string of every shard.
	Personalization []byte
	// Shards is the number of independent DRBG instances Read spreads
	// over; 0 means GOMAXPROCS (at least 2), at most MaxShards.
	Shards int
	// BufferSize is how many bytes a shard generates ahead for small reads,
	// in [0, MaxBufferSize]; 0 disables the buffer. Ignored (no buffer) with
	// PredictionResistance.
	BufferSize int
}

// DefaultConfig returns the configuration the core runs with: derivation
// function on, no prediction resistance, reseed every 5 minutes, every
// 256 MiB or every 2^20 requests per shard, whichever comes first, and a
// 4 KiB buffer per shard.
func DefaultConfig() Config {
	return Config{
		DerivationFunction: true,
		ReseedInterval:     5 * time.Minute,
		ReseedBytes:        256 << 20,
		ReseedRequests:     1 << 20,
		BufferSize:         MaxBufferSize,
	}
}

// Option adjusts New.
type Option func(*options)

type options struct {
	entropy   Source
	extras    []Source
	clock     func() time.Time
	onFailure func(error)
}

// WithEntropy replaces the OS as the primary (credited) entropy source;
// for tests.
func WithEntropy(s Source) Option { return func(o *options) { o.entropy = s } }

// WithExtraSource adds an uncredited source mixed into every (re)seed.
func WithExtraSource(s Source) Option { return func(o *options) { o.extras = append(o.extras, s) } }

// WithClock replaces time.Now for the reseed interval. The clock should
// carry a monotonic reading, as time.Now does.
func WithClock(now func() time.Time) Option { return func(o *options) { o.clock = now } }

// WithOnFailure sets a function called once, outside the generator's
// locks, when the generator enters the failed state (again once after each
// Reinstantiate). It must not block for long; the server audits the event
// and marks /readyz not ready.
func WithOnFailure(f func(error)) Option { return func(o *options) { o.onFailure = f } }

// Generator is the core's random number generator: an io.Reader safe for
// concurrent use. See the package documentation for the design.
type Generator struct {
	cfg       Config
	now       func() time.Time
	onFailure func(error)
	primary   *monitored
	extras    []*monitored
	shards    []*shard

	hint    sync.Pool // *shard last used on this P; a locality hint only
	rr      atomic.Uint32
	closed  atomic.Bool
	failure atomic.Pointer[failure]
	started atomic.Bool // start-up tests of the primary source passed

	admin sync.Mutex // serializes Reseed, Reinstantiate and Close
}

type failure struct {
	err  *FailedError
	once sync.Once
}

// shard is one DRBG instance. mu guards every field below it.
type shard struct {
	mu               sync.Mutex
	drbg             CTRDRBG
	buf              []byte // generated ahead; buf[pos:] not yet handed out
	pos              int
	lastReseed       time.Time
	reseeds          uint64
	bytesSinceReseed uint64
	_                [64]byte // keep neighbouring shards off one cache line
}

// New validates cfg, runs the start-up health tests on every source and
// instantiates every shard. A start-up failure of the primary source is
// returned (a *HealthError); one of an extra source excludes that source
// and shows in Health.
func New(cfg Config, opts ...Option) (*Generator, error) {
	var o options
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	cfg, err := normalize(cfg)
	if err != nil {
		return nil, err
	}
	if o.entropy == nil {
		o.entropy = OSSource()
	}
	if o.clock == nil {
		o.clock = time.Now
	}
	g := &Generator{cfg: cfg, now: o.clock, onFailure: o.onFailure}
	if g.primary, err = newMonitored(o.entropy, true); err != nil {
		return nil, err
	}
	names := map[string]bool{g.primary.name: true}
	for _, s := range o.extras {
		if s == nil {
			return nil, fmt.Errorf("%w: nil extra source", ErrConfig)
		}
		m, err := newMonitored(s, false)
		if err != nil {
			return nil, err
		}
		if names[m.name] {
			return nil, fmt.Errorf("%w: duplicate source name %q", ErrConfig, m.name)
		}
		names[m.name] = true
		g.extras = append(g.extras, m)
	}
	g.shards = make([]*shard, cfg.Shards)
	for i := range g.shards {
		s := &shard{}
		s.drbg.df = cfg.DerivationFunction
		s.drbg.reseedInterval = cfg.ReseedRequests
		if cfg.BufferSize > 0 {
			s.buf = make([]byte, cfg.BufferSize)
			s.pos = len(s.buf)
		}
		g.shards[i] = s
	}
	if err := g.startAll(); err != nil {
		g.wipeAll()
		return nil, err
	}
	return g, nil
}

func normalize(cfg Config) (Config, error) {
	def := DefaultConfig()
	if cfg.ReseedInterval < 0 {
		return cfg, fmt.Errorf("%w: negative ReseedInterval", ErrConfig)
	}
	if cfg.ReseedInterval == 0 {
		cfg.ReseedInterval = def.ReseedInterval
	}
	if cfg.ReseedBytes == 0 {
		cfg.ReseedBytes = def.ReseedBytes
	}
	if cfg.ReseedRequests == 0 {
		cfg.ReseedRequests = def.ReseedRequests
	}
	if cfg.ReseedRequests > MaxReseedInterval {
		return cfg, fmt.Errorf("%w: ReseedRequests %d above 2^48", ErrConfig, cfg.ReseedRequests)
	}
	maxPers := SeedLen
	if cfg.DerivationFunction {
		maxPers = MaxInputLen
	}
	if err := checkLen("personalization", len(cfg.Personalization), 0, maxPers); err != nil {
		return cfg, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	cfg.Personalization = append([]byte(nil), cfg.Personalization...)
	if cfg.Shards < 0 || cfg.Shards > MaxShards {
		return cfg, fmt.Errorf("%w: Shards %d outside [0, %d]", ErrConfig, cfg.Shards, MaxShards)
	}
	if cfg.Shards == 0 {
		cfg.Shards = min(max(runtime.GOMAXPROCS(0), 2), 64)
	}
	if cfg.BufferSize < 0 || cfg.BufferSize > MaxBufferSize {
		return cfg, fmt.Errorf("%w: BufferSize %d outside [0, %d]", ErrConfig, cfg.BufferSize, MaxBufferSize)
	}
	if cfg.PredictionResistance {
		cfg.BufferSize = 0
	}
	return cfg, nil
}

// startAll runs the start-up tests and instantiates every shard. The
// caller holds every shard lock or has not published g yet.
func (g *Generator) startAll() error {
	g.started.Store(false)
	if err := g.primary.startup(); err != nil {
		return err
	}
	g.started.Store(true)
	for _, m := range g.extras {
		_ = m.startup() // recorded in the source's status; the source is skipped
	}
	for _, s := range g.shards {
		if err := g.instantiateLocked(s); err != nil {
			return err
		}
	}
	return nil
}

// seedMaterial draws the entropy input for one (re)seed: samples from the
// primary source worth SecurityStrength bits (with the derivation function)
// followed by ExtraSourceBytes from each healthy extra source, or, without
// the derivation function, SeedLen bytes conditioned by Block_Cipher_df
// from primary samples worth 8*SeedLen+64 bits plus the extra bytes. Only
// the primary source is credited; a failing extra source is left out. The
// caller must clear the result.
func (g *Generator) seedMaterial() ([]byte, error) {
	bits := SecurityStrength
	if !g.cfg.DerivationFunction {
		bits = 8*SeedLen + conditioningMargin
	}
	n := g.primary.samplesFor(bits)
	raw := make([]byte, n, n+len(g.extras)*ExtraSourceBytes)
	if err := g.primary.draw(raw); err != nil {
		clear(raw)
		return nil, err
	}
	var extra [ExtraSourceBytes]byte
	for _, m := range g.extras {
		if m.draw(extra[:]) == nil {
			raw = append(raw, extra[:]...)
		}
	}
	clear(extra[:])
	if g.cfg.DerivationFunction {
		return raw, nil
	}
	out := make([]byte, SeedLen)
	blockCipherDF(out, raw)
	clear(raw)
	return out, nil
}

// instantiateLocked (re)instantiates s from fresh entropy. Caller holds s.mu.
func (g *Generator) instantiateLocked(s *shard) error {
	entropy, err := g.seedMaterial()
	if err != nil {
		return err
	}
	defer clear(entropy)
	var nonce []byte
	if g.cfg.DerivationFunction {
		nonce = make([]byte, g.primary.samplesFor(SecurityStrength/2))
		defer clear(nonce)
		if err := g.primary.draw(nonce); err != nil {
			return err
		}
	}
	if err := s.drbg.Instantiate(entropy, nonce, g.cfg.Personalization); err != nil {
		return err
	}
	s.dropBuffer()
	s.lastReseed = g.now()
	s.bytesSinceReseed = 0
	return nil
}

// reseedLocked reseeds s from fresh entropy. Caller holds s.mu.
func (g *Generator) reseedLocked(s *shard, additional []byte) error {
	entropy, err := g.seedMaterial()
	if err != nil {
		return err
	}
	defer clear(entropy)
	if err := s.drbg.Reseed(entropy, additional); err != nil {
		return err
	}
	s.reseeds++
	s.lastReseed = g.now()
	s.bytesSinceReseed = 0
	return nil
}

// generateLocked fills out (at most MaxRequestBytes) from s, reseeding
// first when prediction resistance is on or a reseed trigger fired. Caller
// holds s.mu. Any error puts the generator in the failed state.
func (g *Generator) generateLocked(s *shard, out []byte) error {
	if g.cfg.PredictionResistance || s.drbg.NeedsReseed() ||
		s.bytesSinceReseed+uint64(len(out)) > g.cfg.ReseedBytes ||
		g.now().Sub(s.lastReseed) >= g.cfg.ReseedInterval {
		if err := g.reseedLocked(s, nil); err != nil {
			return g.fail(s, err)
		}
	}
	if err := s.drbg.Generate(out, nil); err != nil {
		return g.fail(s, err)
	}
	s.bytesSinceReseed += uint64(len(out))
	return nil
}

// Read fills p with random bytes. It returns len(p), nil, or 0 and an
// error with p zeroed: ErrClosed after Close, a *FailedError (errors.Is
// ErrFailed, and ErrHealth when a health test was the cause) once the
// generator has failed. Safe for concurrent use.
func (g *Generator) Read(p []byte) (int, error) {
	s := g.acquire()
	err := g.readLocked(s, p)
	s.mu.Unlock()
	g.hint.Put(s)
	if err != nil {
		clear(p)
		g.notify()
		return 0, err
	}
	return len(p), nil
}

func (g *Generator) readLocked(s *shard, p []byte) error {
	if g.closed.Load() {
		return ErrClosed
	}
	if f := g.failure.Load(); f != nil {
		s.wipe()
		return f.err
	}
	if len(s.buf) > 0 && len(p) < len(s.buf) {
		for len(p) > 0 {
			if s.pos == len(s.buf) {
				if err := g.generateLocked(s, s.buf); err != nil {
					return err
				}
				s.pos = 0
			}
			n := copy(p, s.buf[s.pos:])
			clear(s.buf[s.pos : s.pos+n])
			s.pos += n
			p = p[n:]
		}
		return nil
	}
	for len(p) > 0 {
		n := min(len(p), MaxRequestBytes)
		if err := g.generateLocked(s, p[:n]); err != nil {
			return err
		}
		p = p[n:]
	}
	return nil
}

// acquire returns a locked shard: the one this P used last if it is free,
// else the next in round-robin order.
func (g *Generator) acquire() *shard {
	if v, ok := g.hint.Get().(*shard); ok && v.mu.TryLock() {
		return v
	}
	s := g.shards[g.rr.Add(1)%uint32(len(g.shards))]
	s.mu.Lock()
	return s
}

// fail records err as the cause of the failed state (the first cause
// wins), wipes s (held by the caller) and every other shard it can lock
// without waiting; the rest wipe themselves on their next use. It returns
// the error Read reports.
func (g *Generator) fail(s *shard, err error) error {
	f := &failure{err: &FailedError{Err: err}}
	if !g.failure.CompareAndSwap(nil, f) {
		f = g.failure.Load()
	}
	s.wipe()
	for _, o := range g.shards {
		if o != s && o.mu.TryLock() {
			o.wipe()
			o.mu.Unlock()
		}
	}
	return f.err
}

// notify calls OnFailure once per failure. Callers hold no shard lock.
func (g *Generator) notify() {
	f := g.failure.Load()
	if f == nil || g.onFailure == nil {
		return
	}
	f.once.Do(func() { g.onFailure(f.err) })
}

// Reseed reseeds every shard from fresh entropy, mixing in additional
// input (at most MaxInputLen bytes with the derivation function, SeedLen
// without; longer input is refused with an *InputError and nothing
// changes), and drops buffered output. A failure puts the generator in the
// failed state.
func (g *Generator) Reseed(additional []byte) error {
	maxAdd := SeedLen
	if g.cfg.DerivationFunction {
		maxAdd = MaxInputLen
	}
	if err := checkLen("additional", len(additional), 0, maxAdd); err != nil {
		return err
	}
	err := g.reseedAll(additional)
	if err != nil {
		g.notify() // outside every lock: the callback may call back in
	}
	return err
}

func (g *Generator) reseedAll(additional []byte) error {
	g.admin.Lock()
	defer g.admin.Unlock()
	var err error
	for _, s := range g.shards {
		s.mu.Lock()
		switch {
		case g.closed.Load():
			err = ErrClosed
		case g.failure.Load() != nil:
			s.wipe()
			err = g.failure.Load().err
		default:
			if rerr := g.reseedLocked(s, additional); rerr != nil {
				err = g.fail(s, rerr)
			} else {
				s.dropBuffer()
			}
		}
		s.mu.Unlock()
		if err != nil {
			break
		}
	}
	return err
}

// Reinstantiate is the only way out of the failed state short of a
// restart: it resets the health tests, runs the start-up tests again and
// instantiates every shard from fresh entropy. If the primary source fails
// again the generator stays failed (with the new cause) and the error is
// returned. It also re-admits extra sources that were excluded.
func (g *Generator) Reinstantiate() error {
	err := g.reinstantiate()
	if err != nil && !errors.Is(err, ErrClosed) {
		g.notify() // outside every lock: the callback may call back in
	}
	return err
}

func (g *Generator) reinstantiate() error {
	g.admin.Lock()
	defer g.admin.Unlock()
	if g.closed.Load() {
		return ErrClosed
	}
	for _, s := range g.shards {
		s.mu.Lock()
	}
	g.primary.reset()
	for _, m := range g.extras {
		m.reset()
	}
	err := g.startAll()
	if err != nil {
		f := &failure{err: &FailedError{Err: err}}
		g.failure.Store(f)
		for _, s := range g.shards {
			s.wipe()
		}
	} else {
		g.failure.Store(nil)
	}
	for _, s := range g.shards {
		s.mu.Unlock()
	}
	if err != nil {
		return g.failure.Load().err
	}
	return nil
}

// Close zeroizes every shard (Key, V, key schedule, buffer). Read then
// returns ErrClosed. Close is idempotent.
func (g *Generator) Close() error {
	g.admin.Lock()
	defer g.admin.Unlock()
	g.closed.Store(true)
	g.wipeAll()
	return nil
}

func (g *Generator) wipeAll() {
	for _, s := range g.shards {
		s.mu.Lock()
		s.wipe()
		s.mu.Unlock()
	}
}

// wipe uninstantiates the DRBG and zeroes the buffer. Caller holds s.mu.
func (s *shard) wipe() {
	s.drbg.Uninstantiate()
	s.dropBuffer()
}

// dropBuffer zeroes and empties the buffer. Caller holds s.mu.
func (s *shard) dropBuffer() {
	clear(s.buf)
	s.pos = len(s.buf)
}

// Health is a snapshot of the generator's state for /readyz and metrics.
type Health struct {
	OK      bool
	State   string // "ok", "failed" or "closed"
	Failure string // the cause while failed
	// LastReseed is the most recent (re)seed of any shard.
	LastReseed time.Time
	// Reseeds counts reseeds of all shards since New (instantiations
	// excluded).
	Reseeds uint64
	// BytesSinceReseed sums, over shards, the bytes generated since each
	// shard's last (re)seed.
	BytesSinceReseed uint64
	// StartupTestsPassed reports whether the primary source passed its
	// start-up tests (since New or the last Reinstantiate).
	StartupTestsPassed bool
	Shards             int
	Sources            []SourceStatus // primary first
}

// Health returns a snapshot. It does not block on a reseed in progress for
// longer than that reseed takes.
func (g *Generator) Health() Health {
	h := Health{StartupTestsPassed: g.started.Load(), Shards: len(g.shards)}
	for _, s := range g.shards {
		s.mu.Lock()
		h.Reseeds += s.reseeds
		h.BytesSinceReseed += s.bytesSinceReseed
		if s.lastReseed.After(h.LastReseed) {
			h.LastReseed = s.lastReseed
		}
		s.mu.Unlock()
	}
	h.Sources = append(h.Sources, g.primary.status())
	for _, m := range g.extras {
		h.Sources = append(h.Sources, m.status())
	}
	switch f := g.failure.Load(); {
	case g.closed.Load():
		h.State = "closed"
	case f != nil:
		h.State = "failed"
		h.Failure = f.err.Err.Error()
	default:
		h.State = "ok"
		h.OK = true
	}
	return h
}
