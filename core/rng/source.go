package rng

import (
	"crypto/rand"
	"fmt"
	"math"
	"sync"
)

// Source is a supplier of raw entropy samples (bytes). The OS is always the
// primary source; extra sources (a KMS plugin's hardware generator, an HSM's
// C_GenerateRandom) are mixed in without being credited.
//
// Name identifies the source in health reports and errors; it must be
// stable. Read fills p with entropy samples and returns how many it wrote;
// short reads are retried a bounded number of times, an error is reported
// as a source failure. Read must return within a bounded time: adapters
// over remote generators apply their own deadline. Read is called with the
// source's samples going straight into the health tests, so it must return
// raw output, never bytes it padded or repeated.
type Source interface {
	Name() string
	Read(p []byte) (int, error)
}

// MinEntropySource is implemented by sources that state their assessed
// min-entropy in bits per byte sample, in (0, 8]. Sources that do not
// implement it are assessed at DefaultMinEntropy.
type MinEntropySource interface {
	Source
	MinEntropy() float64
}

// OSSource returns the operating system's generator (getrandom on Linux,
// through crypto/rand) as a Source named "os".
func OSSource() Source { return osSource{} }

type osSource struct{}

func (osSource) Name() string               { return "os" }
func (osSource) Read(p []byte) (int, error) { return rand.Reader.Read(p) }
func (osSource) MinEntropy() float64        { return DefaultMinEntropy }

// maxShortReads bounds the attempts to fill one request from a source.
const maxShortReads = 64

// monitored wraps a Source with its health tests and status. mu guards
// everything below it; it is taken after a shard lock, never before.
type monitored struct {
	src     Source
	name    string
	h       float64
	primary bool

	mu sync.Mutex
	ht healthTests
	// healthErr is set by the first health test failure; the source then
	// yields nothing until reset.
	healthErr   error
	startupDone bool
	lastErr     error
	failures    uint64
	bytesDrawn  uint64
}

func newMonitored(src Source, primary bool) (*monitored, error) {
	h := DefaultMinEntropy
	if m, ok := src.(MinEntropySource); ok {
		h = m.MinEntropy()
	}
	if !(h > 0 && h <= 8) {
		return nil, fmt.Errorf("%w: source %q min-entropy %v outside (0, 8]", ErrConfig, src.Name(), h)
	}
	m := &monitored{src: src, name: src.Name(), h: h, primary: primary}
	m.ht = newHealthTests(h)
	return m, nil
}

// samplesFor returns how many samples carry bits of min-entropy:
// ceil(bits / H).
func (m *monitored) samplesFor(bits int) int {
	return int(math.Ceil(float64(bits) / m.h))
}

// reset forgets test state and failures (Reinstantiate).
func (m *monitored) reset() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ht = newHealthTests(m.h)
	m.healthErr = nil
	m.startupDone = false
	m.lastErr = nil
}

// startup runs the start-up tests: StartupSamples samples through both
// tests, discarded.
func (m *monitored) startup() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.startupLocked()
}

func (m *monitored) startupLocked() error {
	buf := make([]byte, StartupSamples)
	defer clear(buf)
	if err := m.drawLocked(buf, true); err != nil {
		return err
	}
	m.startupDone = true
	return nil
}

// draw fills p with health-tested samples. On any error p is zeroed. A
// source whose start-up tests did not complete because of a read error
// (not a health failure) runs them again first, so an extra source that
// was unreachable at start joins once it answers.
func (m *monitored) draw(p []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.startupDone && m.healthErr == nil {
		if err := m.startupLocked(); err != nil {
			clear(p)
			return err
		}
	}
	return m.drawLocked(p, false)
}

func (m *monitored) drawLocked(p []byte, startup bool) error {
	if m.healthErr != nil {
		clear(p)
		return m.healthErr
	}
	n := 0
	for i := 0; n < len(p); i++ {
		if i == maxShortReads {
			clear(p)
			m.failures++
			m.lastErr = fmt.Errorf("%w: source %q: %d bytes of %d after %d reads", ErrEntropySource, m.name, n, len(p), i)
			return m.lastErr
		}
		k, err := m.src.Read(p[n:])
		if k < 0 || k > len(p)-n {
			k = 0
			err = fmt.Errorf("source returned an impossible count")
		}
		if k > 0 {
			if test, count := m.ht.feed(p[n : n+k]); test != "" {
				clear(p)
				m.failures++
				herr := &HealthError{Source: m.name, Test: test, Startup: startup, Count: count}
				if test == TestRepetitionCount {
					herr.Cutoff = m.ht.rctCutoff
				} else {
					herr.Cutoff = m.ht.aptCutoff
				}
				m.healthErr = herr
				m.lastErr = herr
				return herr
			}
			n += k
		}
		if err != nil {
			clear(p)
			m.failures++
			m.lastErr = fmt.Errorf("%w: source %q: %w", ErrEntropySource, m.name, err)
			return m.lastErr
		}
	}
	m.lastErr = nil
	return nil
}

// SourceStatus describes one entropy source in Health.
type SourceStatus struct {
	Name       string
	Primary    bool    // the OS source, the only one credited with entropy
	OK         bool    // passed start-up, no health failure, last draw succeeded
	MinEntropy float64 // assessed bits per byte sample
	RCTCutoff  int
	APTCutoff  int
	Samples    uint64 // samples passed through the health tests
	Failures   uint64 // failed draws (errors and health failures)
	LastError  string // "" when the last draw succeeded
	// Excluded is true after a health test failure: the source's output is
	// no longer used until Reinstantiate.
	Excluded bool
}

func (m *monitored) status() SourceStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := SourceStatus{
		Name: m.name, Primary: m.primary, MinEntropy: m.h,
		RCTCutoff: m.ht.rctCutoff, APTCutoff: m.ht.aptCutoff,
		Samples: m.ht.samples, Failures: m.failures,
		Excluded: m.healthErr != nil,
	}
	if m.lastErr != nil {
		s.LastError = m.lastErr.Error()
	}
	s.OK = m.startupDone && m.healthErr == nil && m.lastErr == nil
	return s
}
