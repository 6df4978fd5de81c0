package pluginhost

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/avonzt/avon/core/audit"
	"github.com/avonzt/avon/core/store"
	"github.com/avonzt/avon/core/store/memstore"
	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/host"
	hostv1 "github.com/avonzt/avon/sdk/proto/host/v1"
)

// logSink is the core's audit sink as core/server wires it: the audit log
// on the root store, with AppendWith behind EmitWith.
type logSink struct{ l *audit.Log }

func (s logSink) Emit(ctx context.Context, source string, ev host.Event) error {
	return s.l.Emit(ctx, source, ev)
}

func (s logSink) EmitWith(ctx context.Context, source string, ev host.Event, ops []store.Op) ([]int64, error) {
	_, vs, err := s.l.AppendWith(ctx, source, ev, ops)
	return vs, err
}

// emitOnly is an audit sink without EmitWith.
type emitOnly struct{ AuditSink }

// auditedFixture is a plugin's host over one backend with the audit log
// on the same store: the plugin's view through gRPC, and the root store.
type auditedFixture struct {
	applyFixture
	aa  host.AuditedApplier
	cl  host.Host
	log *audit.Log
}

func newAuditedFixture(t testing.TB, root store.KV) *auditedFixture {
	t.Helper()
	ns, err := store.NewNamespace(root, applyNS)
	if err != nil {
		t.Fatal(err)
	}
	l := audit.New(root, nil, nil)
	// A running core's log starts with its start record.
	if err := l.Emit(context.Background(), "core", host.Event{Action: "core.start"}); err != nil {
		t.Fatal(err)
	}
	cl, raw := serveHost(t, newPluginHost("acme.a", Services{Audit: logSink{l}}, ns))
	aa, ok := cl.Storage().(host.AuditedApplier)
	if !ok {
		t.Fatal("the host client's storage is no host.AuditedApplier")
	}
	return &auditedFixture{applyFixture: applyFixture{root: root, st: cl.Storage(), raw: raw}, aa: aa, cl: cl, log: l}
}

// verified checks the audit chain and returns its records.
func (f *auditedFixture) verified(t *testing.T) []audit.Record {
	t.Helper()
	r, err := audit.Verify(context.Background(), f.root, audit.VerifyOptions{})
	if err != nil || !r.OK() || r.Head != r.Records {
		t.Fatalf("audit chain: %+v %v", r, err)
	}
	recs, err := f.log.List(context.Background(), 0, store.MaxLimit)
	if err != nil {
		t.Fatal(err)
	}
	if uint64(len(recs)) != r.Records {
		t.Fatalf("%d records listed, %d verified", len(recs), r.Records)
	}
	return recs
}

// TestStorageApplyAudited is the conformance suite of host
// StorageApplyAudited, through a real gRPC hop, against every store
// backend, with the core's audit log on the same store.
func TestStorageApplyAudited(t *testing.T) {
	for name, open := range applyBackends {
		t.Run(name, func(t *testing.T) {
			f := newAuditedFixture(t, open(t))
			ctx := context.Background()
			t.Run("writes", func(t *testing.T) { testAuditedWrites(ctx, t, f) })
			t.Run("conflict", func(t *testing.T) { testAuditedConflict(ctx, t, f) })
			t.Run("refused", func(t *testing.T) { testAuditedRefused(ctx, t, f) })
			t.Run("refused-on-the-wire", func(t *testing.T) { testAuditedRefusedRaw(ctx, t, f) })
			t.Run("concurrent", func(t *testing.T) { testAuditedConcurrent(ctx, t, f) })
		})
	}
}

func testAuditedWrites(ctx context.Context, t *testing.T, f *auditedFixture) {
	before := len(f.verified(t))
	ops := []host.Op{
		{Key: "w/cert", Value: []byte("c"), Check: true},
		{Key: "w/order", Value: []byte("o")},
	}
	ev := host.Event{Action: "acme.order.finalize", Target: "order/1", Outcome: "success", Actor: "account/a",
		Fields: map[string]string{"serial": "01"}}
	vs, err := f.aa.ApplyAudited(ctx, ops, ev)
	if err != nil {
		t.Fatalf("ApplyAudited: %v", err)
	}
	for i, op := range ops {
		e, err := f.root.Get(ctx, applyNS+op.Key)
		if err != nil || string(e.Value) != string(op.Value) || e.Version != vs[i] {
			t.Fatalf("op %d: %+v %v, want version %d", i, e, err, vs[i])
		}
	}
	recs := f.verified(t)
	if len(recs) != before+1 {
		t.Fatalf("%d records after one audited write, want %d", len(recs), before+1)
	}
	r := recs[len(recs)-1]
	if r.Source != "acme.a" || r.Action != ev.Action || r.Target != ev.Target || r.Actor != ev.Actor || r.Fields["serial"] != "01" {
		t.Fatalf("record %+v", r)
	}
	// The versions returned are good for the next check.
	if _, err := f.aa.ApplyAudited(ctx, []host.Op{{Key: "w/cert", Delete: true, Check: true, Version: vs[0]}},
		host.Event{Action: "acme.cert.delete", Target: "cert"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.Get(ctx, "w/cert"); !errors.Is(err, host.ErrNotFound) {
		t.Fatalf("Get after an audited delete: %v", err)
	}
}

func testAuditedConflict(ctx context.Context, t *testing.T, f *auditedFixture) {
	held, err := f.st.Put(ctx, "c/held", []byte("v"), host.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []int{0, 1, 2} {
		t.Run(fmt.Sprintf("op %d", bad), func(t *testing.T) {
			ops := []host.Op{
				{Key: fmt.Sprintf("c/%d/a", bad), Value: []byte("a"), Check: true},
				{Key: fmt.Sprintf("c/%d/b", bad), Value: []byte("b")},
				{Key: fmt.Sprintf("c/%d/c", bad), Delete: true},
			}
			ops[bad] = host.Op{Key: "c/held", Value: []byte("w"), Check: true, Version: held + 1000}
			before := f.snapshot(t)
			_, err := f.aa.ApplyAudited(ctx, ops, host.Event{Action: "test.conflict", Target: fmt.Sprint(bad)})
			var ae *host.ApplyError
			if !errors.As(err, &ae) || !errors.Is(err, host.ErrVersionConflict) || ae.Index != bad || ae.Key != "c/held" {
				t.Fatalf("ApplyAudited: %v, want an *ApplyError at op %d naming c/held", err, bad)
			}
			// Nothing written: not the ops, not an audit record, not the head.
			if after := f.snapshot(t); after != before {
				t.Fatalf("a failed batch changed the store:\nbefore %s\nafter  %s", before, after)
			}
			f.verified(t)
		})
	}
}

func testAuditedRefused(ctx context.Context, t *testing.T, f *auditedFixture) {
	many := make([]host.Op, host.MaxAuditedApplyOps+1)
	for i := range many {
		many[i] = host.Op{Key: fmt.Sprintf("r/%d", i)}
	}
	ev := host.Event{Action: "test.refused"}
	cases := []struct {
		name string
		ops  []host.Op
		ev   host.Event
		want error
	}{
		{"no action", []host.Op{{Key: "r/a"}}, host.Event{Target: "x"}, errdef.ErrInvalidArgument},
		{"no op", nil, ev, errdef.ErrInvalidArgument},
		{"too many ops", many, ev, errdef.ErrInvalidArgument},
		{"a key twice", []host.Op{{Key: "r/a"}, {Key: "r/a"}}, ev, errdef.ErrInvalidArgument},
		{"invalid key", []host.Op{{Key: "r/\x00"}}, ev, host.ErrInvalidKey},
		{"key over the namespace's room", []host.Op{{Key: strings.Repeat("k", 512-len(applyNS)+1)}}, ev, host.ErrInvalidKey},
		{"event too large", []host.Op{{Key: "r/a"}}, host.Event{Action: "a", Reason: strings.Repeat("r", audit.MaxFieldLen+1)}, host.ErrAuditFailed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := f.snapshot(t)
			if _, err := f.aa.ApplyAudited(ctx, tc.ops, tc.ev); !errors.Is(err, tc.want) {
				t.Fatalf("ApplyAudited: %v, want %v", err, tc.want)
			}
			if after := f.snapshot(t); after != before {
				t.Fatalf("a refused batch changed the store:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

// testAuditedRefusedRaw sends what the SDK client would refuse, to check
// the core refuses it too.
func testAuditedRefusedRaw(ctx context.Context, t *testing.T, f *auditedFixture) {
	many := make([]*hostv1.StorageOp, host.MaxAuditedApplyOps+1)
	for i := range many {
		many[i] = &hostv1.StorageOp{Key: fmt.Sprintf("raw/%d", i)}
	}
	ev := &hostv1.AuditEvent{Action: "test.raw"}
	cases := []struct {
		name string
		req  *hostv1.StorageApplyAuditedRequest
		want error
	}{
		{"no event", &hostv1.StorageApplyAuditedRequest{Ops: []*hostv1.StorageOp{{Key: "raw/a"}}}, errdef.ErrInvalidArgument},
		{"no op", &hostv1.StorageApplyAuditedRequest{Event: ev}, errdef.ErrInvalidArgument},
		{"too many ops", &hostv1.StorageApplyAuditedRequest{Ops: many, Event: ev}, errdef.ErrInvalidArgument},
		{"a key twice", &hostv1.StorageApplyAuditedRequest{Ops: []*hostv1.StorageOp{{Key: "raw/a"}, {Key: "raw/a"}}, Event: ev}, errdef.ErrInvalidArgument},
		{"invalid key", &hostv1.StorageApplyAuditedRequest{Ops: []*hostv1.StorageOp{{Key: "raw/a"}, {Key: "raw/\x7f"}}, Event: ev}, host.ErrInvalidKey},
		{"key over the namespace's room", &hostv1.StorageApplyAuditedRequest{Ops: []*hostv1.StorageOp{{Key: strings.Repeat("k", 512-len(applyNS)+1)}}, Event: ev}, host.ErrInvalidKey},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := f.snapshot(t)
			_, err := f.raw.StorageApplyAudited(ctx, tc.req)
			if err = errdef.FromStatus(err); !errors.Is(err, tc.want) {
				t.Fatalf("StorageApplyAudited: %v, want %v", err, tc.want)
			}
			if after := f.snapshot(t); after != before {
				t.Fatalf("a refused batch changed the store:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

// testAuditedConcurrent: audited writes, some with a stale check, and plain
// events from many callers at once: every good one lands once, no stale
// one leaves a trace, the chain verifies without a gap.
func testAuditedConcurrent(ctx context.Context, t *testing.T, f *auditedFixture) {
	before := len(f.verified(t))
	held, err := f.st.Put(ctx, "k/held", []byte("v"), host.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	const workers, each = 8, 12
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	var good, stale int
	for w := range workers {
		for j := range each {
			switch (w + j) % 3 {
			case 0, 1:
				good++
			default:
				if w%2 == 0 {
					stale++
				} else {
					good++
				}
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range each {
				target := fmt.Sprintf("k/%d/%d", w, j)
				var err error
				switch (w + j) % 3 {
				case 0:
					_, err = f.aa.ApplyAudited(ctx, []host.Op{{Key: target, Value: []byte(target), Check: true}},
						host.Event{Action: "test.write", Target: target})
				case 1:
					err = f.cl.Audit(ctx, host.Event{Action: "test.emit", Target: target})
				default:
					if w%2 == 0 { // stale: must fail alone
						_, err = f.aa.ApplyAudited(ctx, []host.Op{{Key: target + "/x", Value: []byte("x")},
							{Key: "k/held", Value: []byte("w"), Check: true, Version: held + 1}},
							host.Event{Action: "test.stale", Target: target})
						var ae *host.ApplyError
						if errors.As(err, &ae) && ae.Index == 1 {
							err = nil
						} else {
							err = fmt.Errorf("stale write %s: %v, want an *ApplyError at op 1", target, err)
						}
					} else {
						_, err = f.aa.ApplyAudited(ctx, []host.Op{{Key: target + "/x", Value: []byte("x")}},
							host.Event{Action: "test.write", Target: target})
					}
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	recs := f.verified(t)
	if len(recs)-before != good {
		t.Fatalf("%d records for %d good calls", len(recs)-before, good)
	}
	for i, r := range recs {
		if r.Seq != uint64(i+1) {
			t.Fatalf("record %d has seq %d", i+1, r.Seq)
		}
		if r.Action == "test.stale" {
			t.Fatalf("a stale write is in the chain: %+v", r)
		}
	}
	es, err := f.st.List(ctx, host.ListOptions{Prefix: "k/", Limit: 10000})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if e.Key == "k/held" && e.Version != held {
			t.Fatalf("k/held rewritten: %+v", e)
		}
	}
	if stale == 0 {
		t.Fatal("no stale write was tried")
	}
}

// TestStorageApplyAuditedNotImplemented: an older core (no RPC), an audit
// sink without store writes, and a store without batches all answer
// errdef.ErrNotImplemented, which plugins detect to fall back to separate
// writes and events; nothing is written.
func TestStorageApplyAuditedNotImplemented(t *testing.T) {
	ctx := context.Background()
	root := memstore.New()
	ns, err := store.NewNamespace(root, applyNS)
	if err != nil {
		t.Fatal(err)
	}
	sink := logSink{audit.New(root, nil, nil)}
	older := newPluginHost("acme.a", Services{Audit: sink}, ns)
	noBatches, err := store.NewNamespace(singleKV{root}, applyNS)
	if err != nil {
		t.Fatal(err)
	}
	for name, h := range map[string]host.Host{
		"older core":           plainHost{Host: older, st: older.Storage()},
		"sink without batches": newPluginHost("acme.a", Services{Audit: emitOnly{sink}}, ns),
		"store without batches": newPluginHost("acme.a", Services{Audit: logSink{audit.New(singleKV{root}, nil, nil)}},
			noBatches),
	} {
		t.Run(name, func(t *testing.T) {
			cl, _ := serveHost(t, h)
			aa, ok := cl.Storage().(host.AuditedApplier)
			if !ok {
				t.Fatal("the host client's storage is no host.AuditedApplier")
			}
			_, err := aa.ApplyAudited(ctx, []host.Op{{Key: "k", Value: []byte("v")}}, host.Event{Action: "test.write"})
			if !errors.Is(err, errdef.ErrNotImplemented) {
				t.Fatalf("ApplyAudited: %v, want ErrNotImplemented", err)
			}
			if es, _ := root.List(ctx, store.ListOptions{}); len(es) != 0 {
				t.Fatalf("%d rows written", len(es))
			}
		})
	}
}

// singleKV hides a store's Batcher.
type singleKV struct{ store.KV }

// BenchmarkApplyAudited compares, through a gRPC hop on each store
// backend, a finalization-like write (two keys and an audit event) as one
// StorageApplyAudited with the same write as a StorageApply and a
// concurrent EmitAudit, what a plugin did before host protocol minor 5.
// Serial is one caller's latency; parallel 8 callers.
func BenchmarkApplyAudited(b *testing.B) {
	for _, name := range []string{"memstore", "embedded", "postgres", "redis"} {
		f := newAuditedFixture(b, applyBackends[name](b))
		ap := f.st.(host.Applier)
		ctx := context.Background()
		var n atomic.Int64
		write := func(audited bool) error {
			i := n.Add(1)
			ops := []host.Op{{Key: fmt.Sprintf("b/cert/%d", i), Value: make([]byte, 2048), Check: true},
				{Key: fmt.Sprintf("b/order/%d", i), Value: make([]byte, 512)}}
			ev := host.Event{Action: "bench.finalize", Target: fmt.Sprintf("order/%d", i)}
			if audited {
				_, err := f.aa.ApplyAudited(ctx, ops, ev)
				return err
			}
			var wg sync.WaitGroup
			var aerr error
			wg.Add(1)
			go func() { defer wg.Done(); aerr = f.cl.Audit(ctx, ev) }()
			_, err := ap.Apply(ctx, ops)
			wg.Wait()
			return errors.Join(err, aerr)
		}
		for _, par := range []int{0, 4} {
			for _, audited := range []bool{true, false} {
				sub := name + map[int]string{0: "/serial/", 4: "/parallel/"}[par] + map[bool]string{true: "audited", false: "apply+audit"}[audited]
				b.Run(sub, func(b *testing.B) {
					if par == 0 {
						for b.Loop() {
							if err := write(audited); err != nil {
								b.Fatal(err)
							}
						}
					} else {
						b.SetParallelism(par)
						b.RunParallel(func(pb *testing.PB) {
							for pb.Next() {
								if err := write(audited); err != nil {
									b.Error(err)
									return
								}
							}
						})
					}
					b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "writes/s")
				})
			}
		}
	}
}
