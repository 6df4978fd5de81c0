package calibration

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Defaults of Config.
const (
	DefaultMaxAge  = 30 * time.Second
	DefaultMaxSkew = 5 * time.Second
	// DefaultSourceTimeout bounds one source's Sample in a round when
	// Config.SourceTimeout is zero (capped at Interval).
	DefaultSourceTimeout = 5 * time.Second
	// DriftBound is the frequency error assumed for the local oscillator
	// between calibrations (100 ppm, generous for any quartz): the
	// uncertainty of the calibrated time grows by Age*DriftBound.
	DriftBound = 100e-6
	// maxOffset rejects samples claiming the local clock is off by more
	// than this; such a sample is a broken source, not a measurement.
	maxOffset = 50 * 365 * 24 * time.Hour
)

// Config configures a Calibrator. Zero fields take the defaults.
type Config struct {
	// MaxAge is how long a calibration stays usable (default 30s). Past it
	// Now fails with ErrStale and Ready reports the age.
	MaxAge time.Duration
	// MaxSkew bounds how far a claimed timestamp, an attestation's time or
	// the core's own wall clock may be from calibrated time (default 5s).
	MaxSkew time.Duration
	// Interval between calibration rounds in Run (default MaxAge/3); it
	// must be shorter than MaxAge.
	Interval time.Duration
	// Sources to calibrate against, in order of preference for ties
	// (default: SystemSource).
	Sources []Source
	// SourceTimeout bounds each source's Sample within a round (default
	// min(Interval, 5s)).
	SourceTimeout time.Duration
}

// Option configures what New cannot read from Config.
type Option func(*Calibrator)

// WithClock replaces the system clock (tests use calibtest.FakeClock).
func WithClock(c Clock) Option { return func(cal *Calibrator) { cal.clock = c } }

// WithSigner sets the signer Attest uses; without it Attest fails with
// ErrNoSigner.
func WithSigner(s Signer) Option { return func(cal *Calibrator) { cal.signer.Store(&signerBox{s}) } }

// signerBox lets the signer be stored atomically (an interface value).
type signerBox struct{ s Signer }

// SetSigner sets (or replaces) the signer Attest uses. The core calibrates
// before its plugins start (they need trusted time to configure) and
// attaches the KMS-backed signer once the KMS plugin runs.
func (c *Calibrator) SetSigner(s Signer) { c.signer.Store(&signerBox{s}) }

func (c *Calibrator) currentSigner() Signer {
	if b := c.signer.Load(); b != nil {
		return b.s
	}
	return nil
}

// WithLogger sets the logger Run reports failed rounds to.
func WithLogger(l hclog.Logger) Option { return func(cal *Calibrator) { cal.log = l } }

// Calibrator keeps the core's calibration: the local clock's offset and
// uncertainty against its sources and when that was last confirmed.
// Its methods are safe for concurrent use.
type Calibrator struct {
	cfg    Config
	clock  Clock
	signer atomic.Pointer[signerBox]
	log    hclog.Logger

	// roundMu serializes calibration rounds; it is taken before mu.
	roundMu sync.Mutex

	// cal is the current calibration, replaced whole by each good round
	// (under roundMu) and read without locks on every request.
	cal atomic.Pointer[calibration]

	mu sync.RWMutex // guards sources
	// sources holds each source's last result, by Config.Sources index.
	sources []SourceStatus
}

// calibration is one accepted measurement. The calibrated time at a later
// local reading r is trueAt + r.Sub(anchor): it runs on the monotonic
// clock, so a wall-clock step between rounds does not move it.
type calibration struct {
	ok          bool
	anchor      time.Time // local clock reading (with monotonic) at acceptance
	trueAt      time.Time // calibrated time at anchor (no monotonic reading)
	offset      time.Duration
	uncertainty time.Duration
	source      string
	stratum     int
}

// SourceStatus is one source's last result.
type SourceStatus struct {
	Name string
	// Attempted is the local wall time of the last attempt (zero if none).
	Attempted time.Time
	// Err is the last attempt's error (nil when it gave a usable sample).
	Err error
	// Last is the last usable sample; valid when HasSample.
	Last      Sample
	HasSample bool
}

// Status is a snapshot of the calibration.
type Status struct {
	// Calibrated: some round has succeeded.
	Calibrated bool
	// Fresh: Calibrated and Age <= MaxAge.
	Fresh bool
	// Offset and the source's uncertainty at the last calibration.
	Offset time.Duration
	// Uncertainty now: the source's uncertainty plus Age*DriftBound.
	Uncertainty time.Duration
	// Age of the calibration, measured on the monotonic clock.
	Age time.Duration
	// LastCalibrated is the calibrated time at which the calibration was
	// taken.
	LastCalibrated time.Time
	// Source whose sample was chosen, and its stratum.
	Source  string
	Stratum int
	// LocalSkew is the local wall clock minus calibrated time, now: the
	// negated offset, plus any wall-clock step since the calibration.
	LocalSkew time.Duration
	MaxAge    time.Duration
	MaxSkew   time.Duration
	// Sources in configuration order.
	Sources []SourceStatus
}

// New validates cfg and returns a calibrator that is not yet calibrated:
// call Calibrate (or Run) before Now can succeed.
func New(cfg Config, opts ...Option) (*Calibrator, error) {
	if cfg.MaxAge < 0 || cfg.MaxSkew < 0 || cfg.Interval < 0 || cfg.SourceTimeout < 0 {
		return nil, fmt.Errorf("%w: durations must not be negative", ErrInvalidConfig)
	}
	if cfg.MaxAge == 0 {
		cfg.MaxAge = DefaultMaxAge
	}
	if cfg.MaxSkew == 0 {
		cfg.MaxSkew = DefaultMaxSkew
	}
	if cfg.Interval == 0 {
		cfg.Interval = cfg.MaxAge / 3
	}
	if cfg.Interval >= cfg.MaxAge {
		return nil, fmt.Errorf("%w: interval %s must be shorter than max age %s", ErrInvalidConfig, cfg.Interval, cfg.MaxAge)
	}
	if cfg.SourceTimeout == 0 {
		cfg.SourceTimeout = min(cfg.Interval, DefaultSourceTimeout)
	}
	if len(cfg.Sources) == 0 {
		cfg.Sources = []Source{SystemSource{}}
	}
	cfg.Sources = append([]Source(nil), cfg.Sources...)
	seen := map[string]bool{}
	for i, s := range cfg.Sources {
		if s == nil {
			return nil, fmt.Errorf("%w: source %d is nil", ErrInvalidConfig, i)
		}
		n := s.Name()
		if n == "" || seen[n] {
			return nil, fmt.Errorf("%w: source %d: name %q empty or used twice", ErrInvalidConfig, i, n)
		}
		seen[n] = true
	}
	c := &Calibrator{cfg: cfg, clock: SystemClock{}, log: hclog.NewNullLogger()}
	for _, o := range opts {
		o(c)
	}
	if c.clock == nil || c.log == nil {
		return nil, fmt.Errorf("%w: nil clock or logger", ErrInvalidConfig)
	}
	c.sources = make([]SourceStatus, len(cfg.Sources))
	for i, s := range cfg.Sources {
		c.sources[i].Name = s.Name()
	}
	return c, nil
}

// Config returns the configuration with defaults filled in.
func (c *Calibrator) Config() Config {
	cfg := c.cfg
	cfg.Sources = append([]Source(nil), cfg.Sources...)
	return cfg
}

// Calibrate runs one round: every source is sampled concurrently (each
// bounded by SourceTimeout and ctx), each source's result is recorded, and
// the combined sample (see the package doc) becomes the calibration. When
// no source gives a usable sample the previous calibration stays, ageing,
// and the error wraps ErrNoSamples and every source's *SourceError.
func (c *Calibrator) Calibrate(ctx context.Context) error {
	c.roundMu.Lock()
	defer c.roundMu.Unlock()

	type result struct {
		s   Sample
		err error
	}
	results := make([]result, len(c.cfg.Sources))
	var wg sync.WaitGroup
	for i, src := range c.cfg.Sources {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sctx, cancel := context.WithTimeout(ctx, c.cfg.SourceTimeout)
			defer cancel()
			s, err := src.Sample(sctx)
			if err == nil {
				err = checkSample(&s, src.Name())
			}
			results[i] = result{s, err}
		}()
	}
	wg.Wait()
	r := c.clock.Now()

	var good []Sample
	var errs []error
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, res := range results {
		st := &c.sources[i]
		st.Attempted = r.Round(0)
		st.Err = res.err
		if res.err != nil {
			errs = append(errs, &SourceError{Source: st.Name, Err: res.err})
			continue
		}
		st.Last, st.HasSample = res.s, true
		good = append(good, res.s)
	}
	if len(good) == 0 {
		return fmt.Errorf("%w: %w", ErrNoSamples, errors.Join(errs...))
	}
	best := Combine(good)
	c.cal.Store(&calibration{
		ok:          true,
		anchor:      r,
		trueAt:      r.Round(0).Add(best.Offset),
		offset:      best.Offset,
		uncertainty: best.Uncertainty,
		source:      best.Source,
		stratum:     best.Stratum,
	})
	return nil
}

// checkSample rejects samples no real measurement produces.
func checkSample(s *Sample, name string) error {
	s.Source = name
	switch {
	case s.Uncertainty < 0:
		return fmt.Errorf("sample uncertainty %s is negative", s.Uncertainty)
	case s.Offset > maxOffset || s.Offset < -maxOffset:
		return fmt.Errorf("sample offset %s is implausible", s.Offset)
	case s.Uncertainty > maxOffset:
		return fmt.Errorf("sample uncertainty %s is implausible", s.Uncertainty)
	}
	return nil
}

// Combine picks one sample from a round's usable samples. Two samples
// agree when their intervals [Offset-Uncertainty, Offset+Uncertainty]
// overlap. The sample that agrees with the most others wins; ties go to
// the lowest uncertainty, then to the earlier source. With one or two
// sources this is simply the lowest uncertainty. Combine panics on an
// empty slice.
func Combine(samples []Sample) Sample {
	best, bestAgree := 0, -1
	for i, a := range samples {
		agree := 0
		for j, b := range samples {
			if i != j && overlaps(a, b) {
				agree++
			}
		}
		if agree > bestAgree || (agree == bestAgree && a.Uncertainty < samples[best].Uncertainty) {
			best, bestAgree = i, agree
		}
	}
	return samples[best]
}

func overlaps(a, b Sample) bool {
	d := a.Offset - b.Offset
	return max(d, -d) <= a.Uncertainty+b.Uncertainty
}

// Run calibrates at once and then every Interval until ctx is done. A
// failed round is logged and retried at the next tick; the calibration
// then ages and turns stale after MaxAge. Run returns when ctx is done.
func (c *Calibrator) Run(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := c.Calibrate(ctx); err != nil && ctx.Err() == nil {
			c.log.Warn("clock calibration failed", "error", err)
		}
		t.Reset(c.cfg.Interval)
	}
}

// snapshot reads the clock and the calibration together.
func (c *Calibrator) snapshot() (r time.Time, cal calibration, age time.Duration) {
	if p := c.cal.Load(); p != nil {
		cal = *p
	}
	r = c.clock.Now()
	if cal.ok {
		age = max(r.Sub(cal.anchor), 0)
	}
	return r, cal, age
}

// Now returns the calibrated time: the time at the last calibration plus
// the monotonic time elapsed since. It fails closed with ErrNotCalibrated
// before the first good round and with *StaleError (ErrStale) once the
// calibration is older than MaxAge. The result carries no monotonic
// reading: compare it only with other calibrated times.
func (c *Calibrator) Now() (time.Time, error) {
	now, _, _, err := c.fresh()
	return now, err
}

// fresh is Now plus the calibration's current uncertainty and age.
func (c *Calibrator) fresh() (now time.Time, unc, age time.Duration, err error) {
	_, cal, age := c.snapshot()
	if !cal.ok {
		return time.Time{}, 0, 0, ErrNotCalibrated
	}
	if age > c.cfg.MaxAge {
		return time.Time{}, 0, 0, &StaleError{Age: age, MaxAge: c.cfg.MaxAge}
	}
	return cal.trueAt.Add(age), cal.uncertainty + drift(age), age, nil
}

func drift(age time.Duration) time.Duration {
	return time.Duration(float64(age) * DriftBound)
}

// Status returns a snapshot of the calibration and of every source.
func (c *Calibrator) Status() Status {
	r, cal, age := c.snapshot()
	st := Status{MaxAge: c.cfg.MaxAge, MaxSkew: c.cfg.MaxSkew}
	c.mu.RLock()
	st.Sources = append([]SourceStatus(nil), c.sources...)
	c.mu.RUnlock()
	if !cal.ok {
		return st
	}
	st.Calibrated = true
	st.Fresh = age <= c.cfg.MaxAge
	st.Offset = cal.offset
	st.Uncertainty = cal.uncertainty + drift(age)
	st.Age = age
	st.LastCalibrated = cal.trueAt
	st.Source = cal.source
	st.Stratum = cal.stratum
	st.LocalSkew = r.Round(0).Sub(cal.trueAt.Add(age))
	return st
}

// Ready is the /readyz check. It fails when the core has never
// calibrated, when the calibration is older than MaxAge (*StaleError), and
// when the local wall clock is more than MaxSkew from calibrated time
// (*SkewError naming the direction and size). detail always describes the
// calibration and the sources' last errors.
func (c *Calibrator) Ready(ctx context.Context) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	st := c.Status()
	srcErrs := sourceErrors(st.Sources)
	switch {
	case !st.Calibrated:
		return "never calibrated" + srcErrs, ErrNotCalibrated
	case !st.Fresh:
		err := &StaleError{Age: st.Age, MaxAge: st.MaxAge}
		return err.Error() + srcErrs, err
	case st.LocalSkew > st.MaxSkew || st.LocalSkew < -st.MaxSkew:
		now := st.LastCalibrated.Add(st.Age)
		err := &SkewError{What: "local clock", Claimed: now.Add(st.LocalSkew), Now: now, Skew: st.LocalSkew, Limit: st.MaxSkew}
		return err.Error() + srcErrs, err
	}
	return fmt.Sprintf("offset %s ±%s from %s, age %s (max %s), local clock skew %s (limit %s)%s",
		signed(st.Offset), roundDur(st.Uncertainty), st.Source, roundDur(st.Age), st.MaxAge,
		signed(st.LocalSkew), st.MaxSkew, srcErrs), nil
}

func sourceErrors(ss []SourceStatus) string {
	var b strings.Builder
	for _, s := range ss {
		if s.Err != nil {
			fmt.Fprintf(&b, "; %s: %v", s.Name, s.Err)
		}
	}
	return b.String()
}

func signed(d time.Duration) string {
	if d >= 0 {
		return "+" + roundDur(d).String()
	}
	return roundDur(d).String()
}
