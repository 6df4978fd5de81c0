package pulse

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/go-hclog"

	"github.com/avonzt/avon/core/events"
	"github.com/avonzt/avon/core/tunnel/control"
)

// Terminator ends sessions on the gateway. Contract:
//   - Terminate(id, reason) ends session id: the gateway sends a Close
//     (control.CloseRevoked or CloseKilled) with reason, drops the
//     session's keys and routes, and records it. The session was already
//     removed from the Tracker, so its pulses are refused from then on;
//   - it is called from the Revocations goroutine, one call at a time,
//     within the dispatch of the event that caused it, so it should return
//     quickly (queue slow work): later events wait for it;
//   - it must be idempotent and tolerate ids it no longer knows (events
//     repeat across replicas and races with the owner's own removals);
//   - it must not call back into the Revocations (Stop would deadlock).
type Terminator interface {
	Terminate(id ID, reason string)
}

// Resync re-reads the durable state (revocations in the store, disabled
// agents, killed sessions) for every tracked session and ends those that
// no longer pass. It is called at start and after every subscription gap,
// from the Revocations goroutine; an error is retried after a backoff.
type Resync func(ctx context.Context) error

// Defaults of RevocationsConfig.
const (
	DefaultResyncRetry    = time.Second
	DefaultMaxResyncRetry = 30 * time.Second
	// maxTerminateReason keeps the reason inside a Close message.
	maxTerminateReason = control.MaxReason
)

// RevocationsConfig wires a Revocations. Bus, Tracker, Terminator and
// Resync are required.
type RevocationsConfig struct {
	Bus        *events.Bus
	Tracker    *Tracker
	Terminator Terminator
	Resync     Resync
	Logger     hclog.Logger // nil: no logging
	// ResyncRetry is the first wait after a failed Resync, doubled up to
	// MaxResyncRetry on each further failure.
	ResyncRetry    time.Duration
	MaxResyncRetry time.Duration
}

// RevocationStats counts what a Revocations did.
type RevocationStats struct {
	Events         uint64 // events dispatched
	Terminated     uint64 // sessions removed and handed to the Terminator
	Ignored        uint64 // events whose subject names no serial, id or agent
	Gaps           uint64 // subscription gaps seen
	Resyncs        uint64 // Resync calls that succeeded
	ResyncFailures uint64 // Resync calls that failed (each retried)
}

// Revocations turns revocation events into ended sessions. Lifecycle:
// NewRevocations; Start subscribes and runs the loop in a goroutine it owns
// (or Run, which blocks); Stop ends it and waits. A Revocations runs once.
//
// Matching: CertRevoked (subject "issuer/serial") ends the sessions whose
// certificate serial equals the serial (NormalizeSerial), whatever the
// issuer: serials are 127 random bits and the gateway knows its sessions'
// issuers by certificate name, not by the CA's record name the event
// carries, so comparing issuers could only miss revocations.
// SessionKilled (subject: ID in hex) ends that session; AgentDisabled
// (subject: agent id) ends every session of that agent.
type Revocations struct {
	cfg RevocationsConfig
	log hclog.Logger

	events, terminated, ignored, gaps, resyncs, resyncFailures atomic.Uint64

	startOnce sync.Once
	stopOnce  sync.Once
	stop      chan struct{}
	done      chan struct{}
	err       error // set before done is closed
}

// NewRevocations checks the configuration.
func NewRevocations(cfg RevocationsConfig) (*Revocations, error) {
	if cfg.Bus == nil || cfg.Tracker == nil || cfg.Terminator == nil || cfg.Resync == nil {
		return nil, fmt.Errorf("new revocations: bus, tracker, terminator and resync are required: %w", ErrInvalidArgument)
	}
	if cfg.ResyncRetry <= 0 {
		cfg.ResyncRetry = DefaultResyncRetry
	}
	if cfg.MaxResyncRetry < cfg.ResyncRetry {
		cfg.MaxResyncRetry = max(DefaultMaxResyncRetry, cfg.ResyncRetry)
	}
	log := cfg.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	return &Revocations{cfg: cfg, log: log, stop: make(chan struct{}), done: make(chan struct{})}, nil
}

// Start subscribes to the bus (so no event published after Start returns
// is missed) and runs the loop in a goroutine until Stop, ctx's end, or the
// subscription's end. The loop calls Resync first.
func (r *Revocations) Start(ctx context.Context) error {
	err := ErrStarted
	r.startOnce.Do(func() {
		var sub *events.Subscription
		sub, err = r.cfg.Bus.Subscribe(ctx, events.CertRevoked, events.SessionKilled, events.AgentDisabled)
		if err != nil {
			err = fmt.Errorf("revocations: %w", err)
			r.err = err
			close(r.done)
			return
		}
		go func() {
			defer close(r.done)
			r.err = r.loop(ctx, sub)
		}()
	})
	return err
}

// Run is Start, then waits for the loop to end; it returns nil after Stop
// or ctx's end, ErrSubscriptionClosed when the bus ended the subscription.
func (r *Revocations) Run(ctx context.Context) error {
	if err := r.Start(ctx); err != nil {
		return err
	}
	<-r.done
	return r.err
}

// Stop ends the loop, waits for it (and for a Terminate or Resync in
// progress) and returns the loop's error. It may be called more than once,
// and before Start (the Revocations then never runs).
func (r *Revocations) Stop() error {
	r.stopOnce.Do(func() { close(r.stop) })
	r.startOnce.Do(func() { close(r.done) })
	<-r.done
	return r.err
}

// Done is closed when the loop has ended.
func (r *Revocations) Done() <-chan struct{} { return r.done }

// Stats returns the counters.
func (r *Revocations) Stats() RevocationStats {
	return RevocationStats{
		Events: r.events.Load(), Terminated: r.terminated.Load(), Ignored: r.ignored.Load(),
		Gaps: r.gaps.Load(), Resyncs: r.resyncs.Load(), ResyncFailures: r.resyncFailures.Load(),
	}
}

func (r *Revocations) loop(ctx context.Context, sub *events.Subscription) error {
	defer sub.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { // Stop cancels a Resync in progress
		select {
		case <-r.stop:
			cancel()
		case <-ctx.Done():
		}
	}()

	retry := time.NewTimer(0)
	retry.Stop()
	defer retry.Stop()
	wait := r.cfg.ResyncRetry
	resync := func() {
		retry.Stop()
		if err := r.cfg.Resync(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			r.resyncFailures.Add(1)
			r.log.Warn("session resync failed; retrying", "retry_in", wait, "error", err)
			retry.Reset(wait)
			wait = min(2*wait, r.cfg.MaxResyncRetry)
			return
		}
		r.resyncs.Add(1)
		wait = r.cfg.ResyncRetry
	}

	resync()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-retry.C:
			resync()
		case <-sub.Gaps():
			r.gaps.Add(1)
			r.log.Info("event subscription gap: re-reading session status")
			resync()
		case e, ok := <-sub.C():
			if !ok {
				select {
				case <-ctx.Done():
					return nil
				default:
				}
				r.log.Error("event subscription closed")
				return ErrSubscriptionClosed
			}
			r.dispatch(e)
		}
	}
}

// dispatch ends the sessions an event names.
func (r *Revocations) dispatch(e events.Event) {
	r.events.Add(1)
	var ids []ID
	var what string
	switch e.Kind {
	case events.CertRevoked:
		serial := e.Subject[strings.LastIndexByte(e.Subject, '/')+1:]
		if NormalizeSerial(serial) == "" {
			r.ignore(e)
			return
		}
		ids, what = r.cfg.Tracker.BySerial(serial), "certificate revoked"
	case events.SessionKilled:
		id, err := ParseID(e.Subject)
		if err != nil {
			r.ignore(e)
			return
		}
		ids, what = []ID{id}, "session killed by an operator" // as on the replica that took the kill
	case events.AgentDisabled:
		ids, what = r.cfg.Tracker.ByAgent(e.Subject), "agent disabled"
	default:
		r.ignore(e)
		return
	}
	reason := terminateReason(what, e.Fields["reason"])
	n := 0
	for _, id := range ids {
		if !r.cfg.Tracker.Remove(id) {
			continue // ended meanwhile by someone else
		}
		n++
		r.terminated.Add(1)
		r.cfg.Terminator.Terminate(id, reason)
	}
	r.log.Info("event applied", "kind", string(e.Kind), "subject", e.Subject, "event_id", e.ID, "origin", e.Origin, "sessions", n)
}

func (r *Revocations) ignore(e events.Event) {
	r.ignored.Add(1)
	r.log.Warn("event names nothing a session is known by", "kind", string(e.Kind), "subject", e.Subject, "event_id", e.ID)
}

// terminateReason is "what: why", cut to fit a Close at a UTF-8 boundary.
func terminateReason(what, why string) string {
	s := what
	if why != "" {
		s += ": " + strings.ToValidUTF8(why, "\uFFFD")
	}
	if len(s) <= maxTerminateReason {
		return s
	}
	s = s[:maxTerminateReason]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}
