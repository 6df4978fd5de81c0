// Package ntp is an SNTPv4 client (RFC 4330, client mode of RFC 5905)
// serving as a calibration.Source. Each Sample sends a few client-mode
// requests, keeps the reply with the smallest round-trip delay and
// reports its offset and uncertainty.
//
// The request carries a random transmit timestamp instead of the local
// time: the server echoes it as the origin timestamp, which ties each
// reply to its request (and reveals nothing about the local clock). The
// local send and receive times are taken from the Clock, the round trip on
// its monotonic reading.
//
// Replies are untrusted bytes. A reply that does not answer our request
// (wrong mode, version or origin, too short) is discarded and the query
// keeps listening until its deadline, so a stray or spoofed datagram
// cannot cut a good exchange short; if nothing acceptable arrives, the
// *TimeoutError carries the last rejection. A reply that does answer it
// but is unusable (kiss-of-death, unsynchronized, stratum, zero or
// disordered timestamps, root distance) ends the query with its typed
// error; a kiss-of-death also ends the whole Sample.
//
// It must not be pointed at public pool servers at short calibration
// intervals: run an NTP server near the core.
package ntp

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/avonzt/avon/core/calibration"
)

// Defaults.
const (
	DefaultPort         = "123"
	DefaultSamples      = 3
	DefaultQueryTimeout = 2 * time.Second
	// MaxSamples bounds WithSamples.
	MaxSamples = 16
	// maxReads bounds the datagrams read for one query.
	maxReads = 16
	// readBuf is larger than any header plus extensions we care about.
	readBuf = 1024
)

// Source is an NTP server as a calibration.Source.
type Source struct {
	addr         string
	name         string
	clock        calibration.Clock
	rand         io.Reader
	samples      int
	queryTimeout time.Duration
	dialer       net.Dialer
}

// Option configures a Source.
type Option func(*Source)

// WithName sets the source name (default "ntp:<address>").
func WithName(n string) Option { return func(s *Source) { s.name = n } }

// WithClock sets the local clock read for T1 and T4 (default the system
// clock); give it the calibrator's clock.
func WithClock(c calibration.Clock) Option { return func(s *Source) { s.clock = c } }

// WithRand sets the source of random transmit timestamps (default
// crypto/rand).
func WithRand(r io.Reader) Option { return func(s *Source) { s.rand = r } }

// WithSamples sets the requests per Sample, 1..16 (default 3).
func WithSamples(n int) Option { return func(s *Source) { s.samples = n } }

// WithQueryTimeout bounds each request (default 2s; ctx may cut it shorter).
func WithQueryTimeout(d time.Duration) Option { return func(s *Source) { s.queryTimeout = d } }

// New returns a source for the server at addr ("host" or "host:port",
// port 123 by default). Nothing is sent until Sample.
func New(addr string, opts ...Option) (*Source, error) {
	if addr == "" {
		return nil, fmt.Errorf("%w: empty address", ErrInvalidConfig)
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		addr = net.JoinHostPort(addr, DefaultPort)
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, fmt.Errorf("%w: address %q: %v", ErrInvalidConfig, addr, err)
	}
	s := &Source{addr: addr, name: "ntp:" + addr, clock: calibration.SystemClock{}, rand: rand.Reader, samples: DefaultSamples, queryTimeout: DefaultQueryTimeout}
	for _, o := range opts {
		o(s)
	}
	switch {
	case s.samples < 1 || s.samples > MaxSamples:
		return nil, fmt.Errorf("%w: samples %d not in 1..%d", ErrInvalidConfig, s.samples, MaxSamples)
	case s.queryTimeout <= 0:
		return nil, fmt.Errorf("%w: query timeout %s", ErrInvalidConfig, s.queryTimeout)
	case s.clock == nil || s.rand == nil || s.name == "":
		return nil, fmt.Errorf("%w: nil clock or random source, or empty name", ErrInvalidConfig)
	}
	return s, nil
}

// Name returns the source name.
func (s *Source) Name() string { return s.name }

// Sample queries the server up to the configured number of times and
// returns the sample with the smallest delay. It stops early on a
// kiss-of-death (returning the *KissError) or when ctx ends; it fails
// only when no query succeeded, with the last query's error.
func (s *Source) Sample(ctx context.Context) (calibration.Sample, error) {
	var best calibration.Sample
	var have bool
	var last error
	for range s.samples {
		if ctx.Err() != nil {
			break
		}
		smp, err := s.query(ctx)
		if err != nil {
			if errors.Is(err, ErrKissOfDeath) {
				return calibration.Sample{}, err
			}
			// A bare timeout says less than an earlier rejection: keep that.
			var te *TimeoutError
			if last == nil || !errors.As(err, &te) || te.LastReject != nil {
				last = err
			}
			continue
		}
		if !have || smp.Delay < best.Delay {
			best, have = smp, true
		}
	}
	if have {
		return best, nil
	}
	if last == nil {
		last = &TimeoutError{Server: s.addr, LastReject: ctx.Err()}
	}
	return calibration.Sample{}, last
}

// query runs one request/reply exchange.
func (s *Source) query(ctx context.Context) (calibration.Sample, error) {
	qctx, cancel := context.WithTimeout(ctx, s.queryTimeout)
	defer cancel()
	start := s.clock.Now()
	conn, err := s.dialer.DialContext(qctx, "udp", s.addr)
	if err != nil {
		var ne net.Error
		if qctx.Err() != nil || (errors.As(err, &ne) && ne.Timeout()) {
			return calibration.Sample{}, &TimeoutError{Server: s.addr, After: s.clock.Now().Sub(start)}
		}
		return calibration.Sample{}, fmt.Errorf("ntp: dial %s: %w", s.addr, err)
	}
	defer conn.Close()
	deadline, _ := qctx.Deadline()
	if err := conn.SetDeadline(deadline); err != nil {
		return calibration.Sample{}, fmt.Errorf("ntp: %s: %w", s.addr, err)
	}
	// Cancellation of ctx (not only its deadline) unblocks the read.
	stop := context.AfterFunc(qctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	var nonce [8]byte
	if _, err := io.ReadFull(s.rand, nonce[:]); err != nil {
		return calibration.Sample{}, fmt.Errorf("ntp: random transmit timestamp: %w", err)
	}
	xmt := Timestamp(binary.BigEndian.Uint64(nonce[:]) | 1) // never zero
	req := (&Packet{Version: 4, Mode: ModeClient, Transmit: xmt}).Marshal()

	t1 := s.clock.Now()
	if _, err := conn.Write(req); err != nil {
		return calibration.Sample{}, fmt.Errorf("ntp: send to %s: %w", s.addr, err)
	}
	buf := make([]byte, readBuf)
	var reject error
	for range maxReads {
		n, err := conn.Read(buf)
		t4 := s.clock.Now()
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return calibration.Sample{}, &TimeoutError{Server: s.addr, After: t4.Sub(t1), LastReject: reject}
			}
			return calibration.Sample{}, fmt.Errorf("ntp: receive from %s: %w", s.addr, err)
		}
		p, err := ParsePacket(buf[:n])
		if err == nil {
			err = p.CheckReply(xmt)
		}
		switch {
		case errors.Is(err, ErrShortPacket), errors.Is(err, ErrBadMode), errors.Is(err, ErrBadVersion), errors.Is(err, ErrOriginMismatch):
			reject = err // not an answer to our request: keep listening
			continue
		case err != nil:
			return calibration.Sample{}, fmt.Errorf("%w (server %s)", err, s.addr)
		}
		smp, err := Measure(p, t1, t4.Sub(t1))
		if err != nil {
			return calibration.Sample{}, fmt.Errorf("%w (server %s)", err, s.addr)
		}
		smp.Source = s.name
		return smp, nil
	}
	return calibration.Sample{}, &TimeoutError{Server: s.addr, After: s.clock.Now().Sub(t1), LastReject: reject}
}

var _ calibration.Source = (*Source)(nil)
