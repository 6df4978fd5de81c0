// Package events carries the core's change events between replicas:
// certificate revocations, policy changes, killed sessions, disabled
// agents and rotated CA issuers. The gateway and the session pulse subscribe
// and act on them; with several replicas they travel over the cache's
// pub/sub (Redis), with one node over the in-process cache.
//
// Delivery is at most once (the cache's pub/sub). Events are a fast path,
// never the source of truth: the durable state (the store: revocations,
// policy versions, session records) is. A subscriber must re-read that state
// when Gaps signals (a reconnect or a dropped message) and at start, and
// act idempotently on repeats.
//
// On the wire an event is JSON with a version; Decode is strict (unknown
// fields, unknown kinds, oversized fields and trailing data are refused)
// because the payload crosses a shared Redis.
package events

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/avonzt/avon/core/cache"
)

// Kind names what changed.
type Kind string

// The kinds of event.
const (
	CertRevoked   Kind = "cert.revoked"   // Subject: issuer/serial (hex)
	PolicyChanged Kind = "policy.changed" // Subject: policy set id
	SessionKilled Kind = "session.killed" // Subject: session id
	AgentDisabled Kind = "agent.disabled" // Subject: agent id
	CARotated     Kind = "ca.rotated"     // Subject: CA plugin name
)

var kinds = map[Kind]bool{CertRevoked: true, PolicyChanged: true, SessionKilled: true, AgentDisabled: true, CARotated: true}

// Channel is the cache channel events travel on.
const Channel = "events"

// Limits on one event.
const (
	MaxSubject = 512
	MaxFields  = 16
	MaxField   = 512
	MaxPayload = 16 << 10
)

// ErrMalformed is wrapped by Decode's errors.
var ErrMalformed = errors.New("events: malformed event")

// Event is one change.
type Event struct {
	V       int               `json:"v"` // 1
	ID      string            `json:"id"`
	Kind    Kind              `json:"kind"`
	Subject string            `json:"subject"`
	Time    time.Time         `json:"time"`
	Origin  string            `json:"origin,omitempty"` // the publishing replica
	Fields  map[string]string `json:"fields,omitempty"` // e.g. reason
}

func (e Event) check() error {
	switch {
	case e.V != 1:
		return fmt.Errorf("%w: version %d", ErrMalformed, e.V)
	case !kinds[e.Kind]:
		return fmt.Errorf("%w: unknown kind %q", ErrMalformed, e.Kind)
	case e.Subject == "" || len(e.Subject) > MaxSubject:
		return fmt.Errorf("%w: subject of %d bytes", ErrMalformed, len(e.Subject))
	case len(e.ID) != 32:
		return fmt.Errorf("%w: id %q", ErrMalformed, e.ID)
	case len(e.Fields) > MaxFields:
		return fmt.Errorf("%w: %d fields", ErrMalformed, len(e.Fields))
	case len(e.Origin) > MaxField:
		return fmt.Errorf("%w: origin of %d bytes", ErrMalformed, len(e.Origin))
	}
	for k, v := range e.Fields {
		if k == "" || len(k) > 64 || len(v) > MaxField {
			return fmt.Errorf("%w: field %.64q", ErrMalformed, k)
		}
	}
	return nil
}

// Decode parses one event strictly.
func Decode(b []byte) (Event, error) {
	if len(b) > MaxPayload {
		return Event{}, fmt.Errorf("%w: %d bytes", ErrMalformed, len(b))
	}
	var e Event
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		return Event{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if dec.More() {
		return Event{}, fmt.Errorf("%w: trailing data", ErrMalformed)
	}
	if err := e.check(); err != nil {
		return Event{}, err
	}
	return e, nil
}

// Bus publishes and subscribes to events over a cache.
type Bus struct {
	c      cache.Cache
	origin string
	now    func() time.Time
}

// New returns a bus over c; origin names this replica in the events it
// publishes.
func New(c cache.Cache, origin string, now func() time.Time) *Bus {
	if now == nil {
		now = time.Now
	}
	return &Bus{c: c, origin: origin, now: now}
}

// Origin names this replica, as its events say.
func (b *Bus) Origin() string { return b.origin }

// Publish sends an event of kind about subject to every replica
// (including this one). The event is given a random id and the time.
func (b *Bus) Publish(ctx context.Context, kind Kind, subject string, fields map[string]string) (Event, error) {
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return Event{}, err
	}
	e := Event{V: 1, ID: hex.EncodeToString(id), Kind: kind, Subject: subject, Time: b.now().UTC(), Origin: b.origin, Fields: fields}
	if err := e.check(); err != nil {
		return Event{}, err
	}
	p, _ := json.Marshal(e)
	if len(p) > MaxPayload {
		return Event{}, fmt.Errorf("%w: %d bytes", ErrMalformed, len(p))
	}
	if err := b.c.Publish(ctx, Channel, p); err != nil {
		return Event{}, fmt.Errorf("events: publish %s %s: %w", kind, subject, err)
	}
	return e, nil
}

// Subscription delivers decoded events of the kinds asked for.
type Subscription struct {
	sub       cache.Subscription
	c         chan Event
	gaps      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup

	mu        sync.Mutex
	malformed uint64
}

// Subscribe starts delivering events of the given kinds (all when none).
func (b *Bus) Subscribe(ctx context.Context, want ...Kind) (*Subscription, error) {
	for _, k := range want {
		if !kinds[k] {
			return nil, fmt.Errorf("events: unknown kind %q", k)
		}
	}
	sub, err := b.c.Subscribe(ctx, Channel)
	if err != nil {
		return nil, fmt.Errorf("events: subscribe: %w", err)
	}
	filter := map[Kind]bool{}
	for _, k := range want {
		filter[k] = true
	}
	s := &Subscription{sub: sub, c: make(chan Event, 64), gaps: make(chan struct{}, 1), done: make(chan struct{})}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(s.c)
		for {
			select {
			case <-s.done:
				return
			case <-sub.Gaps():
				s.gap()
			case m, ok := <-sub.C():
				if !ok {
					return
				}
				e, err := Decode(m.Payload)
				if err != nil {
					s.mu.Lock()
					s.malformed++
					s.mu.Unlock()
					continue
				}
				if len(filter) > 0 && !filter[e.Kind] {
					continue
				}
				select {
				case s.c <- e:
				case <-s.done:
					return
				default:
					s.gap() // the consumer is behind: it must re-read
				}
			}
		}
	}()
	return s, nil
}

func (s *Subscription) gap() {
	select {
	case s.gaps <- struct{}{}:
	default:
	}
}

// C delivers events; it is closed by Close or when the cache subscription
// ends.
func (s *Subscription) C() <-chan Event { return s.c }

// Gaps signals (coalesced) that events may have been missed: re-read the
// durable state.
func (s *Subscription) Gaps() <-chan struct{} { return s.gaps }

// Malformed counts payloads on the channel that were not valid events.
func (s *Subscription) Malformed() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.malformed
}

// Close ends the subscription.
func (s *Subscription) Close() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.done)
		err = s.sub.Close()
		s.wg.Wait()
	})
	return err
}
