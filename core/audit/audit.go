// Package audit is the core's tamper-evident record of security-relevant
// events: who (actor, source) did what (action) to what (target), with what
// outcome and why, when, under which request id.
//
// # Chain
//
// Records live in the store under audit/record/<seq> (20-digit, so keys sort
// in sequence order), one per event, numbered from 1 without gaps. Each
// record carries the SHA-256 of its predecessor (prev; 64 zeros for record 1)
// and its own hash over a domain-separated canonical encoding:
//
//	hash = SHA-256("AVON-AUDIT-RECORD-v1" || 0x00 || canonical JSON of the record with hash = "")
//
// The canonical JSON is what encoding/json produces for Record (fixed field
// order, sorted map keys, UTC RFC 3339 time); the stored value is exactly the
// canonical JSON of the record with its hash, so any byte changed in a row is
// detected, not only changes that alter meaning. audit/head holds the last
// appended seq and hash.
//
// Appending is compare-and-set on the store, so several core replicas
// sharing PostgreSQL append to one chain. Concurrent events of one process
// are group-committed: the records of a batch (create-only) and the move of
// the head (a CAS on its version) are one atomic store batch (store.Batcher),
// so a batch lands whole or not at all, and a replica that lost the race
// re-reads the head and links after the winner. A Log remembers the head
// its last batch wrote (and the head row's version), so a batch reads
// nothing first; the head CAS catches a head moved by another replica, and
// only then is the head read again.
//
// AppendWith puts a caller's own store writes (a plugin's certificate
// record, say) in the batch of its event: the writes and the record of
// them are one transaction, all or nothing, and one fsync. A failed check
// of those writes fails that caller alone: the batch is relinked without
// its record and written again, so the chain never holds an event whose
// writes did not happen, and the events grouped with it still land. On a
// store without batches
// each record is written create-only and then the head moved; a crash
// between the two leaves the head one record behind, and the next append
// finds that record, checks it links to the head, advances the head and
// continues after it.
//
// # Checkpoints
//
// A Checkpointer signs the head every N events or T seconds (when something
// was appended) with a KMS key, and stores the checkpoint under
// audit/checkpoint/<seq>. Before signing it checks the records since the
// last checkpoint, and that the ones this process appended still have the
// hashes it wrote, so a rewritten record never gets a genuine signature.
// A checkpoint is a small JSON document that can be exported and anchored
// outside AVON (a ticket, a transparency log, another organisation). The
// chain alone does not stop someone who can write the database and rebuild
// every hash after a point; a checkpoint verified with a pinned key stops
// such a rewrite at the checkpoint, and an anchor kept elsewhere also shows
// checkpoints deleted or the log cut short (see Verify and VerifyOptions).
//
// # Fail closed
//
// Emit returns only once the record is durable. When it cannot be written,
// Emit fails and the caller must refuse the operation that needed auditing;
// the package never drops an event silently.
package audit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/avonzt/avon/core/store"
	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/host"
)

// Prefix is where the audit log lives in the store.
const Prefix = "audit/"

const (
	recordPrefix     = Prefix + "record/"
	checkpointPrefix = Prefix + "checkpoint/"
	keyPrefix        = Prefix + "key/"
	headKey          = Prefix + "head"

	recordDomain = "AVON-AUDIT-RECORD-v1\x00"
)

// ZeroHash is the prev of the first record.
var ZeroHash = strings.Repeat("0", 64)

// Limits on one event, so one caller cannot bloat the log.
const (
	MaxFieldLen = 1024 // actor, action, target, outcome, reason, request id, each field value
	MaxFields   = 32
)

// ErrInvalidEvent means an event was refused before anything was written.
var ErrInvalidEvent = errors.New("audit: invalid event")

// ErrBrokenChain means the stored chain does not link where an append needs
// it to; appends stop (fail closed) until an operator investigates with
// `avon audit verify`.
var ErrBrokenChain = errors.New("audit: chain is broken")

// Record is one stored event.
type Record struct {
	Seq       uint64            `json:"seq"`
	Time      time.Time         `json:"time"`
	Source    string            `json:"source"` // "core" or "<kind>.<name>"
	Actor     string            `json:"actor,omitempty"`
	Action    string            `json:"action"`
	Target    string            `json:"target,omitempty"`
	Outcome   string            `json:"outcome,omitempty"`
	Reason    string            `json:"reason,omitempty"`
	RequestID string            `json:"request_id,omitempty"`
	Fields    map[string]string `json:"fields,omitempty"`
	Prev      string            `json:"prev"`
	Hash      string            `json:"hash"`
}

// RecordKey returns the store key of record seq; keys sort in seq order.
func RecordKey(seq uint64) string { return fmt.Sprintf("%s%020d", recordPrefix, seq) }

// parseRecordKey returns the seq of a canonical record key.
func parseRecordKey(k string) (uint64, bool) {
	s, ok := strings.CutPrefix(k, recordPrefix)
	if !ok || len(s) != 20 {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n == 0 || RecordKey(n) != k {
		return 0, false
	}
	return n, true
}

// ComputeHash returns the hash of r (ignoring r.Hash), hex encoded.
func ComputeHash(r Record) (string, error) {
	r.Hash = ""
	b, err := json.Marshal(r)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	h.Write([]byte(recordDomain))
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil)), nil
}

// encode seals r: computes its hash and returns the canonical stored bytes.
func encode(r *Record) ([]byte, error) {
	r.Time = r.Time.UTC().Round(0)
	h, err := ComputeHash(*r)
	if err != nil {
		return nil, err
	}
	r.Hash = h
	return json.Marshal(r)
}

// decodeStrict parses stored bytes and checks they are exactly the canonical
// encoding of a record whose hash matches.
func decodeStrict(b []byte) (Record, error) {
	var r Record
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return Record{}, fmt.Errorf("not a record: %v", err)
	}
	if dec.More() {
		return r, errors.New("trailing data after the record")
	}
	want, err := ComputeHash(r)
	if err != nil {
		return r, err
	}
	if want != r.Hash {
		return r, fmt.Errorf("content does not match its hash (stored %.16s…, computed %.16s…)", r.Hash, want)
	}
	canon, err := json.Marshal(r)
	if err != nil {
		return r, err
	}
	if !bytes.Equal(canon, b) {
		return r, errors.New("stored bytes are not the canonical encoding")
	}
	return r, nil
}

type head struct {
	Seq  uint64 `json:"seq"`
	Hash string `json:"hash"`
}

func readHead(ctx context.Context, kv store.KV) (head, int64, error) {
	e, err := kv.Get(ctx, headKey)
	if errors.Is(err, store.ErrNotFound) {
		return head{Hash: ZeroHash}, 0, nil
	}
	if err != nil {
		return head{}, 0, fmt.Errorf("audit: read head: %w", err)
	}
	var h head
	if err := json.Unmarshal(e.Value, &h); err != nil || len(h.Hash) != 64 {
		return head{}, 0, fmt.Errorf("audit: corrupt head %q: %w", e.Value, ErrBrokenChain)
	}
	return h, e.Version, nil
}

// Log appends records to a store.
type Log struct {
	kv  store.KV
	now func() time.Time
	log hclog.Logger

	queue    appendQueue // events waiting for the lead (see lead)
	appended chan struct{}

	// mu is held by the batch being written: one at a time per process.
	// It guards the head as the last successful batch left it, so a batch
	// needs no read of the head row unless another replica (or a crash
	// repair) moved it: then the head CAS of the batch fails, and the next
	// attempt re-reads the head (see writeBatch).
	mu          sync.Mutex
	head        head
	headVersion int64
	headKnown   bool

	// recent remembers the hashes of the records this process appended
	// (the newest maxRecent), so the checkpointer can refuse to sign a
	// chain rewritten in the database after the fact, even one rebuilt
	// with valid hashes.
	recentMu sync.Mutex
	recent   map[uint64]string
	order    []uint64
}

const maxRecent = 1 << 14

func (l *Log) remember(seq uint64, hash string) {
	l.recentMu.Lock()
	defer l.recentMu.Unlock()
	if l.recent == nil {
		l.recent = map[uint64]string{}
	}
	l.recent[seq] = hash
	l.order = append(l.order, seq)
	if len(l.order) > maxRecent {
		delete(l.recent, l.order[0])
		l.order = l.order[1:]
	}
}

// appendedHash returns the hash of record seq if this process appended it
// recently.
func (l *Log) appendedHash(seq uint64) (string, bool) {
	l.recentMu.Lock()
	defer l.recentMu.Unlock()
	h, ok := l.recent[seq]
	return h, ok
}

// New returns a Log over kv (the whole store; the log keeps to Prefix).
func New(kv store.KV, now func() time.Time, logger hclog.Logger) *Log {
	if now == nil {
		now = time.Now
	}
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	return &Log{kv: kv, now: now, log: logger, appended: make(chan struct{}, 1)}
}

func checkEvent(ev host.Event) error {
	if ev.Action == "" {
		return fmt.Errorf("%w: no action", ErrInvalidEvent)
	}
	for name, v := range map[string]string{"actor": ev.Actor, "action": ev.Action, "target": ev.Target,
		"outcome": ev.Outcome, "reason": ev.Reason, "request id": ev.RequestID} {
		if len(v) > MaxFieldLen {
			return fmt.Errorf("%w: %s is %d bytes (limit %d)", ErrInvalidEvent, name, len(v), MaxFieldLen)
		}
	}
	if len(ev.Fields) > MaxFields {
		return fmt.Errorf("%w: %d fields (limit %d)", ErrInvalidEvent, len(ev.Fields), MaxFields)
	}
	for k, v := range ev.Fields {
		if k == "" || len(k) > 64 || len(v) > MaxFieldLen {
			return fmt.Errorf("%w: field %.64q", ErrInvalidEvent, k)
		}
	}
	return nil
}

// Emit appends an event and returns once it is durable. An error means the
// event is not recorded and the caller must refuse what it was about to do.
func (l *Log) Emit(ctx context.Context, source string, ev host.Event) error {
	_, err := l.Append(ctx, source, ev)
	return err
}

// Append is Emit returning the stored record.
func (l *Log) Append(ctx context.Context, source string, ev host.Event) (Record, error) {
	p, err := newPending(ctx, source, ev)
	if err != nil {
		return Record{}, err
	}
	l.enqueue(p)
	return p.rec, p.err
}

// MaxOpsWith is the largest number of store ops one AppendWith takes: a
// store batch's limit less the event's record and the head move.
const MaxOpsWith = store.MaxBatchOps - 2

// AppendWith appends ev like Append and, in the same atomic store batch,
// writes ops: keys of the Log's store (the whole store, not a view),
// outside Prefix. Either the ops take effect and the event is recorded, or
// neither: one transaction, and one fsync on the embedded store, where
// Append and a separate Apply take two. It returns the record and one
// version per op, as store.Batcher.Apply does.
//
// The event is group-committed with concurrent appends. When an op's check
// fails, the error is a *store.BatchError naming the op (its index in ops)
// and wrapping store.ErrVersionConflict; nothing of ops is written and no
// record of ev is in the chain, while the events batched with it are
// appended without it. Refused before anything is queued: an invalid event
// (ErrInvalidEvent); ops breaking the store.Batcher rules, more than
// MaxOpsWith, or a key under Prefix (store.ErrInvalidArgument,
// store.ErrInvalidKey, store.ErrValueTooLarge); a store without batches
// (errdef.ErrNotImplemented).
func (l *Log) AppendWith(ctx context.Context, source string, ev host.Event, ops []store.Op) (Record, []int64, error) {
	if _, ok := l.kv.(store.Batcher); !ok {
		return Record{}, nil, fmt.Errorf("audit: append with store ops: the store writes one key at a time: %w", errdef.ErrNotImplemented)
	}
	if err := checkOps(ops); err != nil {
		return Record{}, nil, err
	}
	p, err := newPending(ctx, source, ev)
	if err != nil {
		return Record{}, nil, err
	}
	p.ops = ops
	l.enqueue(p)
	if p.err != nil {
		return Record{}, nil, p.err
	}
	return p.rec, p.versions, nil
}

// checkOps checks the ops of an AppendWith.
func checkOps(ops []store.Op) error {
	if len(ops) > MaxOpsWith {
		return fmt.Errorf("audit: append with %d store ops (allowed 1..%d): %w", len(ops), MaxOpsWith, store.ErrInvalidArgument)
	}
	if err := store.CheckBatch(ops); err != nil {
		return fmt.Errorf("audit: append with store ops: %w", err)
	}
	for i, op := range ops {
		if strings.HasPrefix(op.Key, Prefix) {
			return fmt.Errorf("audit: append with store ops: op %d writes %q in the audit log's keys: %w", i, op.Key, store.ErrInvalidKey)
		}
	}
	return nil
}

// newPending checks an event and makes the record to append.
func newPending(ctx context.Context, source string, ev host.Event) (*pendingAppend, error) {
	if err := checkEvent(ev); err != nil {
		return nil, err
	}
	if source == "" || len(source) > 128 {
		return nil, fmt.Errorf("%w: source %.128q", ErrInvalidEvent, source)
	}
	// Invalid UTF-8 is replaced now, so the stored bytes re-encode to
	// themselves (see decodeStrict).
	u := func(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }
	var fields map[string]string
	if len(ev.Fields) > 0 {
		fields = make(map[string]string, len(ev.Fields))
		for k, v := range ev.Fields {
			fields[u(k)] = u(v)
		}
	}
	source = u(source)
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("audit: append: %w", err)
	}
	return &pendingAppend{
		rec: Record{Source: source, Actor: u(ev.Actor), Action: u(ev.Action), Target: u(ev.Target),
			Outcome: u(ev.Outcome), Reason: u(ev.Reason), RequestID: u(ev.RequestID), Fields: fields},
		signal: make(chan bool, 1),
	}, nil
}

// enqueue queues p and returns once its batch is written (p.err set).
func (l *Log) enqueue(p *pendingAppend) {
	q := &l.queue
	q.mu.Lock()
	q.items = append(q.items, p)
	if q.leading {
		q.mu.Unlock()
		if lead := <-p.signal; lead {
			l.lead()
		}
	} else {
		q.leading = true
		q.mu.Unlock()
		l.lead()
	}
}

// Appends are group-committed, like the embedded store's writes: the first
// appender to find no append in progress leads. It takes the queued events
// (up to maxAppendBatch, its own first), links them after the head and
// writes them with the head move as one atomic store batch, then hands the
// lead to the next queued appender, if any, and returns. So concurrent
// events share one store round trip (one fsync on the embedded store)
// instead of queueing behind each other's two, and no caller waits for more
// than its own batch and the one in progress.
const maxAppendBatch = 256

// appendTimeout bounds one batch. The batch outlives any one caller's
// context: each caller waits for its result, so an event that was written
// is never reported failed.
const appendTimeout = 30 * time.Second

type pendingAppend struct {
	rec    Record
	ops    []store.Op // AppendWith's store ops, written in the same batch
	err    error
	signal chan bool // receives true: lead; false: done (rec, err are set)

	versions []int64 // of ops, once written
	dropped  bool    // its ops failed a check: err is set, it is not in the chain
}

type appendQueue struct {
	mu      sync.Mutex
	items   []*pendingAppend
	leading bool
}

// lead appends one batch from the head of the queue, whose first item is
// the caller's, then passes the lead on.
func (l *Log) lead() {
	q := &l.queue
	q.mu.Lock()
	n := takeBatch(q.items)
	batch := q.items[:n:n]
	q.items = q.items[n:]
	q.mu.Unlock()

	l.appendBatch(batch)

	q.mu.Lock()
	if len(q.items) > 0 {
		q.items[0].signal <- true
	} else {
		q.leading = false
	}
	q.mu.Unlock()
	for _, p := range batch[1:] {
		p.signal <- false
	}
}

// maxBatchValues bounds the values of the callers' ops in one batch, so
// that many large AppendWith calls do not make one huge transaction: a
// group takes more only while the sum stays within it (the first item
// always goes; each caller's values are bounded by the host's limit).
const maxBatchValues = 32 << 20

// takeBatch returns how many of the queued items, from the first, go in
// one batch: at most maxAppendBatch, with their ops, records and the head
// move within store.MaxBatchOps, their ops' values within
// maxBatchValues, and no key written by two of them (a store batch names
// each key once). The first always goes; the batch stops before the first
// item that does not fit, so appends keep their order.
func takeBatch(items []*pendingAppend) int {
	n, total, size := 0, 1, 0 // the head move
	var keys map[string]struct{}
	for n < len(items) && n < maxAppendBatch {
		p := items[n]
		need, vals := 1+len(p.ops), 0
		for _, op := range p.ops {
			vals += len(op.Value)
		}
		if n > 0 && (total+need > store.MaxBatchOps || size+vals > maxBatchValues) {
			break
		}
		if len(p.ops) > 0 {
			if keys == nil {
				keys = make(map[string]struct{})
			}
			if n > 0 && slices.ContainsFunc(p.ops, func(op store.Op) bool { _, dup := keys[op.Key]; return dup }) {
				break
			}
			for _, op := range p.ops {
				keys[op.Key] = struct{}{}
			}
		}
		total, size = total+need, size+vals
		n++
	}
	return n
}

func (l *Log) appendBatch(batch []*pendingAppend) {
	ctx, cancel := context.WithTimeout(context.Background(), appendTimeout)
	defer cancel()
	l.mu.Lock()
	defer l.mu.Unlock()
	var err error
	if b, ok := l.kv.(store.Batcher); ok {
		err = l.writeBatch(ctx, b, batch)
	} else {
		for _, p := range batch {
			if len(p.ops) > 0 { // refused by AppendWith; kept for safety
				p.err = fmt.Errorf("audit: append with store ops: %w", errdef.ErrNotImplemented)
				continue
			}
			if p.err = l.appendOne(ctx, &p.rec); p.err == nil {
				l.appendedOne(p.rec)
			}
		}
		return
	}
	for _, p := range batch {
		if p.dropped {
			continue
		}
		if p.err = err; err == nil {
			l.appendedOne(p.rec)
		}
	}
}

func (l *Log) appendedOne(rec Record) {
	l.remember(rec.Seq, rec.Hash)
	l.log.Info("audit", "seq", rec.Seq, "source", rec.Source, "actor", rec.Actor, "action", rec.Action,
		"target", rec.Target, "outcome", rec.Outcome)
	select {
	case l.appended <- struct{}{}:
	default:
	}
}

// writeBatch links the batch after the head and writes, in one atomic
// store batch, each item's store ops and record, then the head move (a CAS
// on the head's version), retrying after another replica's append.
//
// The head is the one the last successful batch left (l.head); it is read
// from the store only when unknown, or after the batch found it stale. A
// conflict on a record or the head with a head just read means another
// replica appended, or a crash left records past the head: catchUp, then
// retry. A conflict on an item's own ops fails that item alone (dropped,
// with a *store.BatchError indexed into its ops), and the batch is
// relinked and retried without it at once: nothing was written, and the
// head is still good. So one caller's stale version costs the others one
// more store round trip, never their append.
//
// The caller holds l.mu.
func (l *Log) writeBatch(ctx context.Context, b store.Batcher, batch []*pendingAppend) error {
	live := batch
	for attempt := 0; attempt < maxAppendAttempts; {
		fresh := false
		if !l.headKnown {
			h, v, err := readHead(ctx, l.kv)
			if err != nil {
				return err
			}
			l.head, l.headVersion, l.headKnown, fresh = h, v, true, true
		}
		h, headVersion := l.head, l.headVersion
		ops := make([]store.Op, 0, len(live)+1)
		starts := make([]int, len(live)) // index of each item's first op
		last := h
		for j, p := range live {
			starts[j] = len(ops)
			ops = append(ops, p.ops...)
			p.rec.Seq, p.rec.Time, p.rec.Prev = last.Seq+1, l.now(), last.Hash
			enc, err := encode(&p.rec)
			if err != nil {
				l.headKnown = false
				return fmt.Errorf("audit: encode: %w", err)
			}
			ops = append(ops, store.Op{Key: RecordKey(p.rec.Seq), Value: enc, Check: true})
			last = head{Seq: p.rec.Seq, Hash: p.rec.Hash}
		}
		hb, _ := json.Marshal(last)
		ops = append(ops, store.Op{Key: headKey, Value: hb, Check: true, Version: headVersion})
		vs, err := b.Apply(ctx, ops)
		if err == nil && len(vs) != len(ops) {
			err = fmt.Errorf("%d versions for %d ops: %w", len(vs), len(ops), store.ErrUnavailable)
		}
		if err == nil {
			for j, p := range live {
				p.versions = vs[starts[j] : starts[j]+len(p.ops) : starts[j]+len(p.ops)]
			}
			l.head, l.headVersion = last, vs[len(vs)-1]
			return nil
		}
		if !errors.Is(err, store.ErrVersionConflict) {
			l.headKnown = false // the outcome may be unknown: re-read
			return fmt.Errorf("audit: write records %d-%d: %w", h.Seq+1, last.Seq, err)
		}
		var be *store.BatchError
		_ = errors.As(err, &be)
		if j, k, ok := opOwner(live, starts, be); ok {
			p := live[j]
			p.err = &store.BatchError{Index: k, Key: p.ops[k].Key, Err: be.Err}
			p.dropped = true
			live = slices.Delete(slices.Clone(live), j, j+1)
			if len(live) == 0 {
				return nil
			}
			continue // not an attempt: the batch shrank, bounded by its size
		}
		l.headKnown = false
		if !fresh {
			// The remembered head is stale (another replica appended):
			// read it and try again, no pause needed.
			attempt++
			continue
		}
		// Another replica appended, or records past the head were left by
		// a single-write append that crashed: check they link, move the
		// head onto them, and try after them.
		if err := l.catchUp(ctx, h, headVersion); err != nil {
			return err
		}
		attempt++
		if attempt < maxAppendAttempts {
			if err := backoff(ctx, attempt); err != nil {
				return err
			}
		}
	}
	return errors.New("audit: too much contention appending a record")
}

// opOwner finds the item of live whose own store op the batch error names:
// its index in live and the op's index in its ops. ok is false when the
// conflict is on a record or the head (or the error names no op).
func opOwner(live []*pendingAppend, starts []int, be *store.BatchError) (j, k int, ok bool) {
	if be == nil {
		return 0, 0, false
	}
	for j, p := range live {
		if k := be.Index - starts[j]; k >= 0 && k < len(p.ops) {
			return j, k, true
		}
	}
	return 0, 0, false
}

// appendOne appends one record with single writes (a create-only record,
// then a CAS on the head), for stores that cannot write a batch.
func (l *Log) appendOne(ctx context.Context, rec *Record) error {
	for attempt := 0; attempt < maxAppendAttempts; attempt++ {
		if attempt > 0 {
			if err := backoff(ctx, attempt); err != nil {
				return err
			}
		}
		h, headVersion, err := readHead(ctx, l.kv)
		if err != nil {
			return err
		}
		rec.Seq, rec.Time, rec.Prev = h.Seq+1, l.now(), h.Hash
		b, err := encode(rec)
		if err != nil {
			return fmt.Errorf("audit: encode: %w", err)
		}
		_, err = l.kv.Put(ctx, RecordKey(rec.Seq), b, store.PutOptions{Check: true, Version: 0})
		switch {
		case err == nil:
			return l.advance(ctx, rec.Seq, rec.Hash, headVersion)
		case errors.Is(err, store.ErrVersionConflict):
			// Another replica appended seq, or a crash left the head
			// behind: check the record links to our head, move the head
			// onto it, and try after it.
			if err := l.catchUp(ctx, h, headVersion); err != nil {
				return err
			}
		default:
			return fmt.Errorf("audit: write record %d: %w", rec.Seq, err)
		}
	}
	return errors.New("audit: too much contention appending a record")
}

// maxAppendAttempts bounds the retries of one append when other replicas
// keep winning the next seq. With backoff (below) that is several seconds of
// losing every race, which only a stuck or flooding replica causes.
const maxAppendAttempts = 64

// backoff sleeps before retry attempt n (n >= 1): a random duration up to
// 100us * 2^min(n,7) (12.8ms), so appenders that collided spread out
// instead of colliding again in lockstep.
func backoff(ctx context.Context, n int) error {
	limit := 100 * time.Microsecond << min(n, 7)
	t := time.NewTimer(rand.N(limit) + 50*time.Microsecond)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return fmt.Errorf("audit: append: %w", ctx.Err())
	case <-t.C:
		return nil
	}
}

// advance moves the head to (seq, hash) if it is still at version v. A
// conflict means another appender already moved it (to this record or past
// it), which is fine.
func (l *Log) advance(ctx context.Context, seq uint64, hash string, v int64) error {
	b, _ := json.Marshal(head{Seq: seq, Hash: hash})
	_, err := l.kv.Put(ctx, headKey, b, store.PutOptions{Check: true, Version: v})
	if err != nil && !errors.Is(err, store.ErrVersionConflict) {
		return fmt.Errorf("audit: advance head to %d: %w", seq, err)
	}
	return nil
}

func (l *Log) catchUp(ctx context.Context, h head, headVersion int64) error {
	// Follow linked records past the head (one after a crash, many after
	// the head row was restored from an old backup), then move the head
	// once. Bounded: the walk stops at the first missing record.
	last := h
	for i := 0; i < 1<<20; i++ {
		e, err := l.kv.Get(ctx, RecordKey(last.Seq+1))
		if errors.Is(err, store.ErrNotFound) {
			break
		}
		if err != nil {
			return fmt.Errorf("audit: read record %d: %w", last.Seq+1, err)
		}
		rec, err := decodeStrict(e.Value)
		if err != nil {
			return fmt.Errorf("audit: record %d: %v: %w", last.Seq+1, err, ErrBrokenChain)
		}
		if rec.Seq != last.Seq+1 || rec.Prev != last.Hash {
			return fmt.Errorf("audit: record %d does not link to record %d: %w", last.Seq+1, last.Seq, ErrBrokenChain)
		}
		last = head{Seq: rec.Seq, Hash: rec.Hash}
	}
	if last.Seq == h.Seq {
		return nil // deleted meanwhile? re-read the head and retry
	}
	return l.advance(ctx, last.Seq, last.Hash, headVersion)
}

// Head returns the last appended seq and its hash (0 and ZeroHash when the
// log is empty).
func (l *Log) Head(ctx context.Context) (uint64, string, error) {
	h, _, err := readHead(ctx, l.kv)
	return h.Seq, h.Hash, err
}

// List returns up to limit records with seq greater than after, in order.
// It parses without verifying; use Verify for that.
func List(ctx context.Context, kv store.KV, after uint64, limit int) ([]Record, error) {
	opts := store.ListOptions{Prefix: recordPrefix, Limit: limit}
	if after > 0 {
		opts.After = RecordKey(after)
	}
	es, err := kv.List(ctx, opts)
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

// List returns up to limit records with seq greater than after, in order.
func (l *Log) List(ctx context.Context, after uint64, limit int) ([]Record, error) {
	return List(ctx, l.kv, after, limit)
}
