package flow

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/avonzt/avon/sdk/policy"
)

// Item is one query waiting in the Batcher; Key is what its answer is
// cached under.
type Item struct {
	Key      CacheKey
	Query    policy.Query
	Entities []policy.Entity
	epoch    uint64
	// connect, set for a connect query (AskConnect), receives its
	// decision; Key is then unused.
	connect func(*Decision)
}

// DeliverFunc receives the answer to a batch: one Decision per item, in
// order, and the policy set version that decided; or err (wrapping
// ErrEngine or ErrClosed), in which case every item fails closed.
type DeliverFunc func(items []Item, decisions []policy.Decision, version uint64, err error)

// BatcherConfig configures a Batcher.
type BatcherConfig struct {
	// Engine answers the batches; nil fails every item closed at once.
	Engine      policy.Engine
	PolicySetID string
	// MaxBatch is the most queries in one Evaluate (default and limit
	// policy.MaxBatch). Delay is how long the first query of a batch
	// waits for others (default 2 ms). Timeout bounds one Evaluate
	// (default 2 s). MaxPending bounds the queries waiting (default 65536;
	// Submit refuses more).
	MaxBatch   int
	Delay      time.Duration
	Timeout    time.Duration
	MaxPending int
	// Stats, when set, counts Queries, EngineCalls and EngineErrors.
	Stats *Stats
}

// Defaults of BatcherConfig.
const (
	DefaultBatchDelay  = 2 * time.Millisecond
	DefaultEvalTimeout = 2 * time.Second
	DefaultMaxPending  = 1 << 16
)

// Batcher gathers queries into Evaluate calls of up to MaxBatch, so the
// policy engine is asked once per batch, never per packet. A batch goes
// when it is full or when its first query has waited Delay; full batches
// go at once and a remainder waits for the delay (or Flush). One goroutine,
// started by NewBatcher and stopped by Close, makes the calls one at a time
// and hands each answer to the DeliverFunc.
type Batcher struct {
	cfg     BatcherConfig
	deliver DeliverFunc
	wake    chan struct{}
	flush   chan struct{}
	cancel  context.CancelFunc
	done    chan struct{}

	mu      sync.Mutex
	pending []Item
	closed  bool
}

// NewBatcher validates cfg and starts the batcher's goroutine.
func NewBatcher(cfg BatcherConfig, deliver DeliverFunc) (*Batcher, error) {
	if cfg.MaxBatch < 0 || cfg.MaxBatch > policy.MaxBatch || cfg.Delay < 0 || cfg.Timeout < 0 || cfg.MaxPending < 0 || deliver == nil {
		return nil, fmt.Errorf("flow: batcher: max batch %d (limit %d), negative duration or no deliver function: %w",
			cfg.MaxBatch, policy.MaxBatch, ErrConfig)
	}
	if cfg.MaxBatch == 0 {
		cfg.MaxBatch = policy.MaxBatch
	}
	if cfg.Delay == 0 {
		cfg.Delay = DefaultBatchDelay
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultEvalTimeout
	}
	if cfg.MaxPending == 0 {
		cfg.MaxPending = DefaultMaxPending
	}
	if cfg.Stats == nil {
		cfg.Stats = &Stats{}
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &Batcher{cfg: cfg, deliver: deliver, wake: make(chan struct{}, 1), flush: make(chan struct{}, 1),
		cancel: cancel, done: make(chan struct{})}
	go b.run(ctx)
	return b, nil
}

// Submit queues one query. It returns ErrClosed after Close and ErrEngine
// when MaxPending queries already wait; the caller fails the query closed.
func (b *Batcher) Submit(it Item) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return fmt.Errorf("flow: batcher: %w", ErrClosed)
	}
	if len(b.pending) >= b.cfg.MaxPending {
		b.mu.Unlock()
		return fmt.Errorf("flow: batcher: %d queries waiting: %w: %w", b.cfg.MaxPending, ErrEngine, errQueueFull)
	}
	b.pending = append(b.pending, it)
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
	return nil
}

// Flush sends the waiting queries now instead of after the delay.
func (b *Batcher) Flush() {
	select {
	case b.flush <- struct{}{}:
	default:
	}
}

// Pending is the number of queries waiting for a call.
func (b *Batcher) Pending() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.pending)
}

// Close stops the goroutine; the queries still waiting are delivered
// with ErrClosed. It may be called more than once.
func (b *Batcher) Close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.cancel()
	<-b.done
}

func (b *Batcher) run(ctx context.Context) {
	defer close(b.done)
	defer b.drain()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-b.flush:
			b.send(ctx, true)
			continue
		case <-b.wake:
		}
		// A query waits: gather until the batch is full or the delay ends.
		timer.Reset(b.cfg.Delay)
	gather:
		for {
			if b.Pending() >= b.cfg.MaxBatch {
				b.send(ctx, false)
				if b.Pending() == 0 {
					break gather
				}
			}
			select {
			case <-ctx.Done():
				timer.Stop()
				return
			case <-b.wake:
			case <-b.flush:
				b.send(ctx, true)
				break gather
			case <-timer.C:
				b.send(ctx, true)
				break gather
			}
		}
		timer.Stop()
	}
}

// send evaluates the waiting queries in batches of MaxBatch: only full
// batches unless all is set.
func (b *Batcher) send(ctx context.Context, all bool) {
	for ctx.Err() == nil {
		b.mu.Lock()
		n := len(b.pending)
		if n == 0 || (!all && n < b.cfg.MaxBatch) {
			b.mu.Unlock()
			return
		}
		k := min(n, b.cfg.MaxBatch)
		items := make([]Item, k)
		copy(items, b.pending)
		rest := copy(b.pending, b.pending[k:])
		clear(b.pending[rest:])
		b.pending = b.pending[:rest]
		b.mu.Unlock()
		b.evaluate(ctx, items)
	}
}

// evaluate makes one Evaluate call for items and delivers the answer.
func (b *Batcher) evaluate(ctx context.Context, items []Item) {
	st := b.cfg.Stats
	st.Queries.Add(uint64(len(items)))
	if b.cfg.Engine == nil {
		b.deliver(items, nil, 0, fmt.Errorf("flow: no policy engine: %w", ErrEngine))
		return
	}
	req := &policy.EvaluateRequest{PolicySetID: b.cfg.PolicySetID, Queries: make([]policy.Query, len(items))}
	seen := make(map[policy.EntityRef]struct{}, len(items))
	for i := range items {
		req.Queries[i] = items[i].Query
		for _, ent := range items[i].Entities {
			if _, dup := seen[ent.Ref]; !dup {
				seen[ent.Ref] = struct{}{}
				req.Entities = append(req.Entities, ent)
			}
		}
	}
	cctx, cancel := context.WithTimeout(ctx, b.cfg.Timeout)
	st.EngineCalls.Add(1)
	resp, err := b.cfg.Engine.Evaluate(cctx, req)
	cancel()
	switch {
	case err != nil:
		err = fmt.Errorf("flow: evaluate %d queries: %w: %w", len(items), ErrEngine, err)
	case resp == nil || len(resp.Decisions) != len(items):
		n := 0
		if resp != nil {
			n = len(resp.Decisions)
		}
		err = fmt.Errorf("flow: evaluate: %d decisions for %d queries: %w", n, len(items), ErrEngine)
	}
	if err != nil {
		st.EngineErrors.Add(1)
		b.deliver(items, nil, 0, err)
		return
	}
	b.deliver(items, resp.Decisions, resp.Version, nil)
}

// drain fails the queries left at Close.
func (b *Batcher) drain() {
	b.mu.Lock()
	items := b.pending
	b.pending = nil
	b.closed = true
	b.mu.Unlock()
	if len(items) > 0 {
		b.deliver(items, nil, 0, fmt.Errorf("flow: batcher: %w", ErrClosed))
	}
}
