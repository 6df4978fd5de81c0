package flow

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/avonzt/avon/core/gateway/flow/flowtest"
	"github.com/avonzt/avon/sdk/policy"
)

// TestBatchingBound: N concurrent queries cost at most ceil(N/MaxBatch)
// Evaluate calls: full batches go at once, the remainder when flushed.
func TestBatchingBound(t *testing.T) {
	for _, n := range []int{1, policy.MaxBatch - 1, policy.MaxBatch, 3*policy.MaxBatch + 17} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			eng := flowtest.New(flowtest.AllowAll)
			var delivered atomic.Int64
			b, err := NewBatcher(BatcherConfig{Engine: eng, Delay: time.Hour}, func(items []Item, ds []policy.Decision, _ uint64, err error) {
				if err != nil || len(ds) != len(items) {
					t.Errorf("delivery of %d items: %d decisions, %v", len(items), len(ds), err)
				}
				delivered.Add(int64(len(items)))
			})
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			var wg sync.WaitGroup
			for w := range 8 {
				wg.Go(func() {
					for i := w; i < n; i += 8 {
						if err := b.Submit(Item{Query: policy.Query{Resource: policy.EntityRef{Type: "Service", ID: fmt.Sprint(i)}}}); err != nil {
							t.Error(err)
						}
					}
				})
			}
			wg.Wait()
			full := int64(n / policy.MaxBatch * policy.MaxBatch)
			waitFor(t, "the full batches", func() bool { return delivered.Load() == full })
			if got := b.Pending(); got != n-int(full) {
				t.Fatalf("%d pending, want %d", got, n-int(full))
			}
			b.Flush()
			waitFor(t, "every answer", func() bool { return delivered.Load() == int64(n) })
			want := (n + policy.MaxBatch - 1) / policy.MaxBatch
			if got := eng.Calls(); got > want {
				t.Fatalf("%d Evaluate calls for %d queries, at most %d", got, n, want)
			}
			for _, sz := range eng.Batches() {
				if sz > policy.MaxBatch || sz == 0 {
					t.Fatalf("batch of %d", sz)
				}
			}
		})
	}
}

// TestEnforcerBatching: N new flows arriving together cost at most
// ceil(N/MaxBatch) calls through the enforcer too.
func TestEnforcerBatching(t *testing.T) {
	const n = 2*policy.MaxBatch + 5
	f := newFixture(t, flowtest.AllowAll, func(c *Config) { c.BatchDelay = time.Hour; c.Limits.MaxFlowsPerSession = n })
	s := f.session("laptop", agentA)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := w; i < n; i += 4 {
				port := uint16(1 + i/250)
				dst := fmt.Sprintf("10.30.%d.%d", (i%250)/250, i%250+1)
				f.from(s, v4(ProtoTCP, agentA, dst, tcp(1000, port, tcpSYN)))
			}
		})
	}
	wg.Wait()
	waitFor(t, "full batches", func() bool { return f.e.Batcher().Pending() == n%policy.MaxBatch })
	f.e.Batcher().Flush()
	waitFor(t, "every flow decided", func() bool { return f.e.Stats().Allowed.Load() == n })
	if got, want := f.eng.Calls(), (n+policy.MaxBatch-1)/policy.MaxBatch; got > want {
		t.Fatalf("%d calls for %d new flows, want at most %d", got, n, want)
	}
	waitFor(t, "every held packet released", func() bool { return f.nReleased() >= n }) // counted before Release runs
	if f.nReleased() != n {
		t.Fatalf("%d packets released, want %d", f.nReleased(), n)
	}
}

// TestSameKeyOneQuery: flows waiting for the same decision share a query.
func TestSameKeyOneQuery(t *testing.T) {
	f := newFixture(t, allow443, nil)
	release := f.eng.Hold()
	s := f.session("laptop", agentA)
	for port := range uint16(20) {
		f.from(s, v4(ProtoTCP, agentA, server, tcp(port+1, 443, tcpSYN)))
	}
	release()
	waitFor(t, "twenty decisions", func() bool { return f.e.Stats().Allowed.Load() == 20 })
	if f.eng.Queries() != 1 {
		t.Fatalf("%d queries for one destination", f.eng.Queries())
	}
}

func TestBatcherDelayAndClose(t *testing.T) {
	eng := flowtest.New(flowtest.AllowAll)
	var mu sync.Mutex
	var errs []error
	got := make(chan int, 16)
	b, err := NewBatcher(BatcherConfig{Engine: eng, Delay: time.Millisecond}, func(items []Item, _ []policy.Decision, _ uint64, err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
		got <- len(items)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Submit(Item{}); err != nil {
		t.Fatal(err)
	}
	if n := <-got; n != 1 {
		t.Fatalf("delay flush delivered %d", n)
	}
	<-eng.Entered() // the first call's
	// A held engine: Close fails the call and the waiting items closed.
	release := eng.Hold()
	defer release()
	_ = b.Submit(Item{})
	<-eng.Entered()
	_ = b.Submit(Item{})
	b.Close()
	if err := b.Submit(Item{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Submit after Close: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(errs) != 3 || errs[0] != nil || errs[1] == nil || !errors.Is(errs[2], ErrClosed) {
		t.Fatalf("errors %v", errs)
	}
}

func TestBatcherMaxPending(t *testing.T) {
	eng := flowtest.New(flowtest.AllowAll)
	b, err := NewBatcher(BatcherConfig{Engine: eng, Delay: time.Hour, MaxPending: 2, MaxBatch: 10}, func([]Item, []policy.Decision, uint64, error) {})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	_ = b.Submit(Item{})
	_ = b.Submit(Item{})
	if err := b.Submit(Item{}); !errors.Is(err, ErrEngine) {
		t.Fatalf("third of 2: %v", err)
	}
}

func TestNoGoroutineLeft(t *testing.T) {
	before := runtime.NumGoroutine()
	for range 5 {
		e, err := New(Config{Now: time.Now, Engine: flowtest.New(flowtest.AllowAll)})
		if err != nil {
			t.Fatal(err)
		}
		s := e.AddSession(Subject{AgentID: "a"}, nil)
		p := v4(ProtoUDP, agentA, server, udp(1, 53, nil))
		in, _ := parseInner(p)
		e.FromAgent(s, p, in, time.Now())
		e.Close()
		e.Close()
	}
	waitFor(t, "goroutines to end", func() bool { return runtime.NumGoroutine() <= before })
}
