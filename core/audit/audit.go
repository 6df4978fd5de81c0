// Package audit records security-relevant events from the core and its
// plugins in the store, in order, one record per event.
//
// This is the first stage of the audit log: ordered, durable records with a
// sequence number. Hash chaining, signed checkpoints and `avon audit verify`
// build on the same records. The package must never drop an event silently:
// when a record cannot be written, Emit fails and the caller refuses the
// operation that needed auditing.
package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/avonzt/avon/core/store"
	"github.com/avonzt/avon/sdk/host"
)

// Prefix is where records live in the store.
const Prefix = "audit/"

const headKey = Prefix + "head"

// Record is one stored event.
type Record struct {
	Seq       uint64            `json:"seq"`
	Time      time.Time         `json:"time"`
	Source    string            `json:"source"` // "core" or "<kind>.<name>"
	Action    string            `json:"action"`
	Target    string            `json:"target,omitempty"`
	Outcome   string            `json:"outcome,omitempty"`
	Reason    string            `json:"reason,omitempty"`
	Actor     string            `json:"actor,omitempty"`
	RequestID string            `json:"request_id,omitempty"`
	Fields    map[string]string `json:"fields,omitempty"`
}

// RecordKey returns the store key of record seq; keys sort in seq order.
func RecordKey(seq uint64) string { return fmt.Sprintf("%srecord/%020d", Prefix, seq) }

// Log appends records to a store.
type Log struct {
	kv  store.KV
	now func() time.Time
	log hclog.Logger

	mu sync.Mutex // serializes appends within this process
}

// New returns a Log over kv.
func New(kv store.KV, now func() time.Time, logger hclog.Logger) *Log {
	if now == nil {
		now = time.Now
	}
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	return &Log{kv: kv, now: now, log: logger}
}

// Emit appends an event and returns once it is durable.
func (l *Log) Emit(ctx context.Context, source string, ev host.Event) error {
	if ev.Action == "" {
		return errors.New("audit: event without action")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for attempt := 0; attempt < 16; attempt++ {
		head, err := l.kv.Get(ctx, headKey)
		var seq uint64
		var headVersion int64
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			return fmt.Errorf("audit: read head: %w", err)
		default:
			seq, err = strconv.ParseUint(string(head.Value), 10, 64)
			if err != nil {
				return fmt.Errorf("audit: corrupt head %q: %w", head.Value, err)
			}
			headVersion = head.Version
		}
		seq++
		rec := Record{Seq: seq, Time: l.now().UTC(), Source: source, Action: ev.Action, Target: ev.Target,
			Outcome: ev.Outcome, Reason: ev.Reason, Actor: ev.Actor, RequestID: ev.RequestID, Fields: ev.Fields}
		b, err := json.Marshal(rec)
		if err != nil {
			return fmt.Errorf("audit: encode: %w", err)
		}
		// The record first, then the head: a crash between the two leaves
		// the head behind, and the next append skips past the record.
		_, err = l.kv.Put(ctx, RecordKey(seq), b, store.PutOptions{Check: true, Version: 0})
		if err == nil || errors.Is(err, store.ErrVersionConflict) {
			_, herr := l.kv.Put(ctx, headKey, []byte(strconv.FormatUint(seq, 10)), store.PutOptions{Check: true, Version: headVersion})
			if herr != nil && !errors.Is(herr, store.ErrVersionConflict) {
				return fmt.Errorf("audit: advance head: %w", herr)
			}
			if err == nil {
				l.log.Info("audit", "seq", seq, "source", source, "action", ev.Action, "target", ev.Target, "outcome", ev.Outcome)
				return nil
			}
			continue
		}
		return fmt.Errorf("audit: write record: %w", err)
	}
	return errors.New("audit: too much contention appending a record")
}

// List returns up to limit records with seq greater than after, in order.
func (l *Log) List(ctx context.Context, after uint64, limit int) ([]Record, error) {
	es, err := l.kv.List(ctx, store.ListOptions{Prefix: Prefix + "record/", After: RecordKey(after), Limit: limit})
	if err != nil {
		return nil, fmt.Errorf("audit: list: %w", err)
	}
	out := make([]Record, 0, len(es))
	for _, e := range es {
		var r Record
		if err := json.Unmarshal(e.Value, &r); err != nil {
			return nil, fmt.Errorf("audit: decode %s: %w", e.Key, err)
		}
		out = append(out, r)
	}
	return out, nil
}
