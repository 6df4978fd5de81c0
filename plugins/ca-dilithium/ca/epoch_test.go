package ca

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sdkca "github.com/avonzt/avon/sdk/ca"
	"github.com/avonzt/avon/sdk/host"
)

// countingStorage counts the calls an engine makes to its storage; it is
// the real in-memory host storage underneath.
type countingStorage struct {
	host.Storage
	gets, puts, lists, deletes atomic.Int64
}

func (c *countingStorage) Get(ctx context.Context, key string) (host.Entry, error) {
	c.gets.Add(1)
	return c.Storage.Get(ctx, key)
}

func (c *countingStorage) Put(ctx context.Context, key string, v []byte, o host.PutOptions) (int64, error) {
	c.puts.Add(1)
	return c.Storage.Put(ctx, key, v, o)
}

func (c *countingStorage) List(ctx context.Context, o host.ListOptions) ([]host.Entry, error) {
	c.lists.Add(1)
	return c.Storage.List(ctx, o)
}

func (c *countingStorage) Delete(ctx context.Context, key string, o host.DeleteOptions) error {
	c.deletes.Add(1)
	return c.Storage.Delete(ctx, key, o)
}

func (c *countingStorage) calls() [4]int64 {
	return [4]int64{c.gets.Load(), c.puts.Load(), c.lists.Load(), c.deletes.Load()}
}

// classicalConfig has two roots, so the issuers are cross-certified.
func classicalConfig() Config {
	return Config{Organization: "AVON Test", RootAlgorithm: "ML-DSA-87", IssuingAlgorithm: "ML-DSA-65", Classical: true,
		RootLifetime: 10 * 365 * 24 * time.Hour, IntermediateLifetime: 5 * 365 * 24 * time.Hour, CRLLifetime: 24 * time.Hour}
}

// TestListIssuersFromMemory: once loaded, a ListIssuers reads the epoch key
// and nothing else, and answers what a freshly started engine on the same
// storage answers; a rotation and a cross-certificate made by another
// replica are seen at the next call.
func TestListIssuersFromMemory(t *testing.T) {
	x := newTwoKMS(t, classicalConfig())
	st := &countingStorage{Storage: x.host.Storage()}
	a := New(x.cfg, x.soft, nil, st, rand.Reader, func(context.Context) (time.Time, error) { return x.now, nil }, x.host.Audit,
		WithNamedKMS(x.host.KMSNamed))
	if err := a.Init(bg); err != nil {
		t.Fatal(err)
	}
	// Init made the cross-certificates and moved the epoch itself: the
	// first call reloads nothing either.
	before := st.calls()
	first, err := a.ListIssuers(bg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(first.Issuers) != 4 {
		t.Fatalf("%d issuers, want 4", len(first.Issuers))
	}
	const n = 20
	for range n - 1 {
		resp, err := a.ListIssuers(bg, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !sameListing(resp.Issuers, first.Issuers) {
			t.Fatal("a cached answer differs from the first")
		}
	}
	if d := diffCalls(st.calls(), before); d != [4]int64{n, 0, 0, 0} {
		t.Fatalf("%d ListIssuers made gets/puts/lists/deletes %v, want one get each", n, d)
	}
	assertListingMatchesFresh(t, x, a)

	// Replica b rotates the classical issuer: a sees generation 2 and its
	// cross-certificate (made by b) at its next call.
	b := x.engine(t)
	if _, err := b.RotateIssuer(bg, &sdkca.RotateRequest{Issuer: "classical"}); err != nil {
		t.Fatal(err)
	}
	resp, err := a.ListIssuers(bg, nil)
	if err != nil {
		t.Fatal(err)
	}
	var gen2 *sdkca.Issuer
	for i := range resp.Issuers {
		if resp.Issuers[i].Family == "classical" && resp.Issuers[i].Active {
			gen2 = &resp.Issuers[i]
		}
	}
	if gen2 == nil || gen2.Generation != 2 || len(gen2.AlternateChains) != 1 {
		t.Fatalf("replica a after b's rotation: %+v", gen2)
	}
	assertListingMatchesFresh(t, x, a)
	// And back to one read per call.
	before = st.calls()
	if _, err := a.ListIssuers(bg, nil); err != nil {
		t.Fatal(err)
	}
	if d := diffCalls(st.calls(), before); d != [4]int64{1, 0, 0, 0} {
		t.Fatalf("after the reload a ListIssuers made %v", d)
	}
}

// TestListIssuersEpochFailure: a storage error on the epoch read is the
// call's error, not a stale answer presented as current.
func TestListIssuersEpochFailure(t *testing.T) {
	x := newTwoKMS(t, Config{})
	st := &failingGet{Storage: x.host.Storage()}
	e := New(x.cfg, x.soft, nil, st, rand.Reader, func(context.Context) (time.Time, error) { return x.now, nil }, x.host.Audit)
	if err := e.Init(bg); err != nil {
		t.Fatal(err)
	}
	st.fail.Store(true)
	if _, err := e.ListIssuers(bg, nil); !errors.Is(err, host.ErrStorageFailed) {
		t.Fatalf("ListIssuers with a failing store: %v", err)
	}
	st.fail.Store(false)
	if _, err := e.ListIssuers(bg, nil); err != nil {
		t.Fatal(err)
	}
}

type failingGet struct {
	host.Storage
	fail atomic.Bool
}

func (f *failingGet) Get(ctx context.Context, key string) (host.Entry, error) {
	if f.fail.Load() {
		return host.Entry{}, host.ErrStorageFailed
	}
	return f.Storage.Get(ctx, key)
}

// TestListIssuersConcurrentWithRotation: ListIssuers on one replica while
// another rotates; every answer names exactly one active generation per
// family, and the last one names the rotated generation.
func TestListIssuersConcurrentWithRotation(t *testing.T) {
	x := newTwoKMS(t, Config{})
	a, b := x.engine(t), x.engine(t)
	ctx, cancel := context.WithTimeout(bg, 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for i := 0; i < 10000; i++ {
				select {
				case <-stop:
					return
				case <-ctx.Done():
					return
				default:
				}
				resp, err := a.ListIssuers(ctx, nil)
				if err != nil {
					errc <- err
					return
				}
				active := map[string]int{}
				for _, is := range resp.Issuers {
					if is.Active {
						active[is.Family]++
					}
				}
				if active["issuing"] != 1 || active["root"] != 1 {
					errc <- errors.New("an answer without exactly one active generation per family")
					return
				}
			}
		})
	}
	for range 2 {
		if _, err := b.RotateIssuer(ctx, &sdkca.RotateRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	_, byName, _ := issuerCerts(t, a)
	if is := byName["issuing"]; is.Generation != 3 || !is.Active {
		t.Fatalf("after two rotations on b, a lists %+v", is)
	}
}

func diffCalls(a, b [4]int64) [4]int64 {
	return [4]int64{a[0] - b[0], a[1] - b[1], a[2] - b[2], a[3] - b[3]}
}

// assertListingMatchesFresh compares e's answer with that of an engine
// started now on the same storage (the slow, obviously current reference).
func assertListingMatchesFresh(t *testing.T, x *twoKMS, e *Engine) {
	t.Helper()
	got, err := e.ListIssuers(bg, nil)
	if err != nil {
		t.Fatal(err)
	}
	want, err := x.engine(t).ListIssuers(bg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !sameListing(got.Issuers, want.Issuers) {
		t.Fatalf("cached listing\n%v\nfresh engine\n%v", summary(got.Issuers), summary(want.Issuers))
	}
}

func sameListing(a, b []sdkca.Issuer) bool {
	return slices.EqualFunc(a, b, func(x, y sdkca.Issuer) bool {
		return x.Name == y.Name && x.Algorithm == y.Algorithm && string(x.Certificate) == string(y.Certificate) && x.Default == y.Default &&
			x.Family == y.Family && x.Generation == y.Generation && x.Active == y.Active && x.KMS == y.KMS &&
			slices.EqualFunc(x.Chain, y.Chain, func(p, q []byte) bool { return string(p) == string(q) }) &&
			slices.EqualFunc(x.AlternateChains, y.AlternateChains, func(p, q [][]byte) bool {
				return slices.EqualFunc(p, q, func(r, s []byte) bool { return string(r) == string(s) })
			})
	})
}

func summary(is []sdkca.Issuer) []string {
	var out []string
	for _, i := range is {
		out = append(out, i.Name+"/"+i.Family+"/"+string(rune('0'+i.Generation))+"/alts="+string(rune('0'+len(i.AlternateChains))))
	}
	return out
}

// repeatReader is the random source with a switch: when armed, its next
// read of 16 bytes (a serial) repeats the previous one.
type repeatReader struct {
	mu    sync.Mutex
	last  []byte
	armed bool
}

func (r *repeatReader) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.armed && len(p) == len(r.last) {
		r.armed = false
		return copy(p, r.last), nil
	}
	if _, err := io.ReadFull(rand.Reader, p); err != nil {
		return 0, err
	}
	if len(p) == 16 {
		r.last = append(r.last[:0], p...)
	}
	return len(p), nil
}

// TestIssueSerialTaken: a serial already stored is never handed out
// again, and the certificate is issued under a new serial, on record. With
// audited batches the taken serial leaves no event; with separate writes
// (an older core) the event written for it concurrently with the refused
// record is followed by a failure event.
func TestIssueSerialTaken(t *testing.T) {
	for _, audited := range []bool{true, false} {
		t.Run(map[bool]string{true: "audited batch", false: "separate writes"}[audited], func(t *testing.T) {
			s := newSetup(t, Config{}, "kms-soft")
			rr := &repeatReader{}
			var st host.Storage = s.host.Storage()
			if !audited {
				st = plainStorage{st}
			}
			e := New(s.eng.cfg, s.kms, nil, st, rr, s.eng.now, s.host.Audit)
			if err := e.Init(bg); err != nil {
				t.Fatal(err)
			}
			first, _ := issueAgent(t, e, "a1")
			rr.mu.Lock()
			rr.armed = true
			rr.mu.Unlock()
			second, _ := issueAgent(t, e, "a2")
			if second.Serial == first.Serial {
				t.Fatal("a serial was handed out twice")
			}
			var got []string
			for _, ev := range s.host.Events() {
				if ev.Action == "ca.issue" {
					got = append(got, ev.Outcome+" "+ev.Target)
				}
			}
			want := []string{"success cert/" + first.Serial, "success cert/" + second.Serial}
			if !audited {
				want = []string{"success cert/" + first.Serial, "success cert/" + first.Serial, "failure cert/" + first.Serial, "success cert/" + second.Serial}
			}
			if !slices.Equal(got, want) {
				t.Fatalf("ca.issue events\n%v\nwant\n%v", got, want)
			}
			rec, err := e.GetCertificate(bg, &sdkca.GetCertificateRequest{Serial: first.Serial})
			if err != nil || string(rec.Certificate) != string(first.Certificate) {
				t.Fatalf("the first certificate's record changed: %v", err)
			}
		})
	}
}

// plainStorage hides the optional capabilities of a storage (Applier,
// AuditedApplier), as a core older than host protocol minor 3 offers.
type plainStorage struct{ host.Storage }

// TestIssueAuditFailure: with the audit log failing, Issue hands out
// nothing, whether or not the record was stored.
func TestIssueAuditFailure(t *testing.T) {
	s := newSetup(t, Config{}, "kms-soft")
	s.host.SetAuditFailure(true)
	resp, err := s.eng.Issue(bg, &sdkca.IssueRequest{CSR: agentCSR(t, newAgentKey(t), "avon://agent/x"), Profile: "agent"})
	if err == nil || resp != nil {
		t.Fatalf("issued without an audit record: %v", err)
	}
	s.host.SetAuditFailure(false)
	issueAgent(t, s.eng, "y")
}

// TestIssueStoreFailure: a record that cannot be stored is not issued, and
// the success event already written for it is followed by a failure event.
func TestIssueStoreFailure(t *testing.T) {
	s := newSetup(t, Config{}, "kms-soft")
	st := &failingPut{Storage: s.host.Storage()}
	e := New(s.eng.cfg, s.kms, nil, st, rand.Reader, s.eng.now, s.host.Audit)
	if err := e.Init(bg); err != nil {
		t.Fatal(err)
	}
	st.fail.Store(true)
	resp, err := e.Issue(bg, &sdkca.IssueRequest{CSR: agentCSR(t, newAgentKey(t), "avon://agent/x"), Profile: "agent"})
	if !errors.Is(err, host.ErrStorageFailed) || resp != nil {
		t.Fatalf("issue with a failing store: %v", err)
	}
	evs := s.host.Events()
	last := evs[len(evs)-1]
	if last.Action != "ca.issue" || last.Outcome != "failure" || evs[len(evs)-2].Target != last.Target {
		t.Fatalf("events after a failed store: %+v", evs[len(evs)-2:])
	}
}

type failingPut struct {
	host.Storage
	fail atomic.Bool
}

func (f *failingPut) Put(ctx context.Context, key string, v []byte, o host.PutOptions) (int64, error) {
	if f.fail.Load() {
		return 0, host.ErrStorageFailed
	}
	return f.Storage.Put(ctx, key, v, o)
}

// BenchmarkListIssuers: a ListIssuers of a loaded, cross-certified CA (two
// roots, four issuers) over the in-memory host storage.
func BenchmarkListIssuers(b *testing.B) {
	s := newSetup(b, classicalConfig(), "kms-soft")
	if _, err := s.eng.ListIssuers(bg, nil); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		resp, err := s.eng.ListIssuers(bg, nil)
		if err != nil || len(resp.Issuers) != 4 {
			b.Fatalf("%v %d", err, len(resp.Issuers))
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lists/s")
}
