// Package rngtest provides in-memory entropy sources for tests of
// core/rng and its users: a deterministic healthy source, and one that can
// be switched at run time to stuck output (trips the repetition count
// test), biased output (trips the adaptive proportion test only), read
// errors or short reads. It is for tests only and must not be used as an
// entropy source in production.
package rngtest

import (
	"errors"
	"math/rand/v2"
	"sync"
)

// Mode is what a Source returns.
type Mode int

const (
	// Healthy: a deterministic pseudorandom stream (ChaCha8 from the seed).
	Healthy Mode = iota
	// Stuck: the same byte forever.
	Stuck
	// Biased: bytes drawn from only four values, never the same twice in a
	// row, so the repetition count test passes but every value fills about
	// a third of any window.
	Biased
	// Failing: Read returns ErrInjected and no bytes.
	Failing
	// Empty: Read returns 0, nil forever.
	Empty
)

// ErrInjected is the error a Failing source returns.
var ErrInjected = errors.New("rngtest: injected source failure")

// Source is a controllable entropy source. Safe for concurrent use.
type Source struct {
	name string

	mu    sync.Mutex
	mode  Mode
	rnd   *rand.ChaCha8
	last  byte
	reads int
	bytes int
	h     float64
}

// New returns a Healthy source with the given name, deterministic in seed.
func New(name string, seed uint64) *Source {
	var s [32]byte
	for i := range 8 {
		s[i] = byte(seed >> (8 * i))
	}
	return &Source{name: name, rnd: rand.NewChaCha8(s), h: 4}
}

// Name implements rng.Source.
func (s *Source) Name() string { return s.name }

// MinEntropy implements rng.MinEntropySource (4 bits per byte unless set).
func (s *Source) MinEntropy() float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.h
}

// SetMinEntropy changes the assessment reported by MinEntropy; it takes
// effect for sources registered afterwards.
func (s *Source) SetMinEntropy(h float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.h = h
}

// SetMode switches what later reads return.
func (s *Source) SetMode(m Mode) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mode = m
}

// Reads returns how many Read calls were made and how many bytes returned.
func (s *Source) Reads() (calls, bytes int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reads, s.bytes
}

// Read implements rng.Source.
func (s *Source) Read(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reads++
	switch s.mode {
	case Failing:
		return 0, ErrInjected
	case Empty:
		return 0, nil
	case Stuck:
		for i := range p {
			p[i] = 0xA5
		}
	case Biased:
		for i := range p {
			next := s.last
			for next == s.last {
				next = byte(s.rnd.Uint64() & 3)
			}
			p[i], s.last = next, next
		}
	default:
		s.rnd.Read(p)
	}
	s.bytes += len(p)
	return len(p), nil
}
