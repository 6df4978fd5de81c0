package audit

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudflare/circl/sign/mldsa/mldsa65"

	"github.com/avonzt/avon/core/store"
	"github.com/avonzt/avon/core/store/embedded"
	"github.com/avonzt/avon/core/store/memstore"
	"github.com/avonzt/avon/sdk/host"
)

var bg = context.Background()

// testSigner signs with an in-memory ML-DSA-65 key, as the KMS would.
type testSigner struct {
	sk  *mldsa65.PrivateKey
	pub PublicKey
	err error
}

func newTestSigner(t testing.TB) *testSigner {
	pk, sk, err := mldsa65.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pk.MarshalBinary()
	return &testSigner{sk: sk, pub: PublicKey{KeyID: "kms.test/avon-audit/v1", Algorithm: "ML-DSA-65", PublicKey: b}}
}

func (s *testSigner) Key(context.Context) (PublicKey, error) { return s.pub, s.err }
func (s *testSigner) Sign(_ context.Context, msg []byte) ([]byte, PublicKey, error) {
	if s.err != nil {
		return nil, PublicKey{}, s.err
	}
	sig := make([]byte, mldsa65.SignatureSize)
	if err := mldsa65.SignTo(s.sk, msg, nil, true, sig); err != nil {
		return nil, PublicKey{}, err
	}
	return sig, s.pub, nil
}

func ev(i int) host.Event {
	return host.Event{Actor: "user:alice", Action: "cert.issue", Target: fmt.Sprintf("agent-%d", i), Outcome: "success",
		Reason: "enrolled", RequestID: fmt.Sprintf("req-%d", i), Fields: map[string]string{"i": fmt.Sprint(i)}}
}

func fill(t *testing.T, l *Log, n int) {
	t.Helper()
	for i := 1; i <= n; i++ {
		if err := l.Emit(bg, "core", ev(i)); err != nil {
			t.Fatalf("emit %d: %v", i, err)
		}
	}
}

func mustVerify(t *testing.T, kv store.KV, opts VerifyOptions) *Report {
	t.Helper()
	r, err := Verify(bg, kv, opts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func wantFirst(t *testing.T, r *Report, seq uint64, kind string) {
	t.Helper()
	p, ok := r.First()
	if !ok {
		t.Fatalf("verify found nothing, want record %d %s", seq, kind)
	}
	if p.Seq != seq || p.Kind != kind {
		t.Fatalf("first problem %v, want record %d %s (all: %v)", p, seq, kind, r.Problems)
	}
}

func TestChainVerifies(t *testing.T) {
	kv := memstore.New()
	l := New(kv, nil, nil)
	fill(t, l, 25)
	r := mustVerify(t, kv, VerifyOptions{})
	if !r.OK() || r.Records != 25 || r.Head != 25 {
		t.Fatalf("report %+v", r)
	}
	recs, err := l.List(bg, 0, 100)
	if err != nil || len(recs) != 25 {
		t.Fatalf("list: %d %v", len(recs), err)
	}
	if recs[0].Prev != ZeroHash || recs[1].Prev != recs[0].Hash || recs[24].Seq != 25 || recs[3].Target != "agent-4" {
		t.Fatalf("chain fields: %+v %+v", recs[0], recs[1])
	}
	seq, hash, _ := l.Head(bg)
	if seq != 25 || hash != recs[24].Hash {
		t.Fatalf("head %d %s", seq, hash)
	}
}

// edit rewrites the stored bytes of one record through the store, as an
// attacker with database access would.
func edit(t *testing.T, kv store.KV, seq uint64, f func(string) string) {
	t.Helper()
	e, err := kv.Get(bg, RecordKey(seq))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(bg, RecordKey(seq), []byte(f(string(e.Value))), store.PutOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestTamperingIsNamed(t *testing.T) {
	setup := func(t *testing.T) (store.KV, *Log) {
		kv := memstore.New()
		l := New(kv, nil, nil)
		fill(t, l, 12)
		return kv, l
	}
	t.Run("altered outcome", func(t *testing.T) {
		kv, _ := setup(t)
		edit(t, kv, 7, func(s string) string { return strings.Replace(s, `"outcome":"success"`, `"outcome":"failure"`, 1) })
		r := mustVerify(t, kv, VerifyOptions{})
		wantFirst(t, r, 7, ProblemAltered)
		if len(r.Problems) != 1 {
			t.Fatalf("one edit, problems %v", r.Problems)
		}
	})
	t.Run("whitespace only", func(t *testing.T) {
		kv, _ := setup(t)
		edit(t, kv, 3, func(s string) string { return strings.Replace(s, `,"action"`, `, "action"`, 1) })
		wantFirst(t, mustVerify(t, kv, VerifyOptions{}), 3, ProblemAltered)
	})
	t.Run("unknown field", func(t *testing.T) {
		kv, _ := setup(t)
		edit(t, kv, 4, func(s string) string { return strings.Replace(s, `{"seq"`, `{"x":1,"seq"`, 1) })
		wantFirst(t, mustVerify(t, kv, VerifyOptions{}), 4, ProblemAltered)
	})
	t.Run("rehashed", func(t *testing.T) {
		kv, _ := setup(t)
		e, _ := kv.Get(bg, RecordKey(5))
		var rec Record
		_ = json.Unmarshal(e.Value, &rec)
		rec.Outcome = "failure"
		b, _ := encode(&rec)
		_, _ = kv.Put(bg, RecordKey(5), b, store.PutOptions{})
		wantFirst(t, mustVerify(t, kv, VerifyOptions{}), 6, ProblemUnlinked)
	})
	t.Run("deleted in the middle", func(t *testing.T) {
		kv, _ := setup(t)
		_ = kv.Delete(bg, RecordKey(9), store.DeleteOptions{})
		r := mustVerify(t, kv, VerifyOptions{})
		wantFirst(t, r, 9, ProblemMissing)
	})
	t.Run("deleted at the end", func(t *testing.T) {
		kv, _ := setup(t)
		_ = kv.Delete(bg, RecordKey(12), store.DeleteOptions{})
		_ = kv.Delete(bg, RecordKey(11), store.DeleteOptions{})
		wantFirst(t, mustVerify(t, kv, VerifyOptions{}), 11, ProblemMissing)
	})
	t.Run("inserted row", func(t *testing.T) {
		kv, _ := setup(t)
		_, _ = kv.Put(bg, recordPrefix+"00000000000000000005x", []byte("{}"), store.PutOptions{})
		wantFirst(t, mustVerify(t, kv, VerifyOptions{}), 0, ProblemInserted)
	})
	t.Run("moved", func(t *testing.T) {
		kv, _ := setup(t)
		e, _ := kv.Get(bg, RecordKey(2))
		_, _ = kv.Put(bg, RecordKey(3), e.Value, store.PutOptions{})
		wantFirst(t, mustVerify(t, kv, VerifyOptions{}), 3, ProblemAltered)
	})
}

func TestCrashBetweenRecordAndHead(t *testing.T) {
	kv := memstore.New()
	l := New(kv, nil, nil)
	fill(t, l, 3)
	// A record written by an appender that died before moving the head.
	_, hash, _ := l.Head(bg)
	orphan := Record{Seq: 4, Time: time.Now(), Source: "core", Action: "x", Prev: hash}
	b, _ := encode(&orphan)
	if _, err := kv.Put(bg, RecordKey(4), b, store.PutOptions{Check: true}); err != nil {
		t.Fatal(err)
	}
	if r := mustVerify(t, kv, VerifyOptions{}); !r.OK() {
		t.Fatalf("the crash window is not tampering: %v", r.Problems)
	}
	rec, err := l.Append(bg, "core", ev(5))
	if err != nil || rec.Seq != 5 || rec.Prev != orphan.Hash {
		t.Fatalf("append after crash: %+v %v", rec, err)
	}
	if r := mustVerify(t, kv, VerifyOptions{}); !r.OK() || r.Records != 5 {
		t.Fatalf("%+v", r)
	}
	// A record at head+1 that does not link: appends stop.
	bad := Record{Seq: 6, Time: time.Now(), Source: "core", Action: "x", Prev: ZeroHash}
	b, _ = encode(&bad)
	_, _ = kv.Put(bg, RecordKey(6), b, store.PutOptions{})
	if err := l.Emit(bg, "core", ev(6)); !errors.Is(err, ErrBrokenChain) {
		t.Fatalf("append onto a broken chain: %v", err)
	}
}

func TestReplicasShareOneChain(t *testing.T) {
	kv, err := embedded.Open(bg, filepath.Join(t.TempDir(), "a.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer kv.Close()
	logs := []*Log{New(kv, nil, nil), New(kv, nil, nil), New(kv, nil, nil)}
	var wg sync.WaitGroup
	errs := make(chan error, 60)
	for i, l := range logs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 20; j++ {
				if err := l.Emit(bg, fmt.Sprintf("replica-%d", i), ev(j)); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	r := mustVerify(t, kv, VerifyOptions{})
	if !r.OK() || r.Records != 60 || r.Head != 60 {
		t.Fatalf("%+v", r)
	}
}

func TestFailClosed(t *testing.T) {
	kv := memstore.New()
	l := New(kv, nil, nil)
	if err := l.Emit(bg, "core", host.Event{}); !errors.Is(err, ErrInvalidEvent) {
		t.Fatalf("no action: %v", err)
	}
	if err := l.Emit(bg, "core", host.Event{Action: "a", Reason: strings.Repeat("r", MaxFieldLen+1)}); !errors.Is(err, ErrInvalidEvent) {
		t.Fatalf("long reason: %v", err)
	}
	if es, _ := kv.List(bg, store.ListOptions{}); len(es) != 0 {
		t.Fatalf("refused events wrote %d rows", len(es))
	}
	_ = kv.Close()
	if err := l.Emit(bg, "core", ev(1)); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("emit on a closed store: %v", err)
	}
}

func TestInvalidUTF8StaysVerifiable(t *testing.T) {
	kv := memstore.New()
	l := New(kv, nil, nil)
	if err := l.Emit(bg, "core", host.Event{Action: "a\xff<b>", Target: "\u2028x&", Fields: map[string]string{"k\xfe": "v\x00"}}); err != nil {
		t.Fatal(err)
	}
	if r := mustVerify(t, kv, VerifyOptions{}); !r.OK() {
		t.Fatal(r.Problems)
	}
}

func TestCheckpoints(t *testing.T) {
	kv := memstore.New()
	l := New(kv, nil, nil)
	s := newTestSigner(t)
	cpr := NewCheckpointer(l, CheckpointerOptions{Every: 5, Signer: s})
	if cp, err := cpr.Checkpoint(bg); err != nil || cp.Seq != 0 {
		t.Fatalf("empty log: %+v %v", cp, err)
	}
	fill(t, l, 8)
	cp, err := cpr.Checkpoint(bg)
	if err != nil || cp.Seq != 8 || cp.Algorithm != "ML-DSA-65" {
		t.Fatalf("checkpoint: %+v %v", cp, err)
	}
	if err := cp.Verify(s.pub); err != nil {
		t.Fatal(err)
	}
	exp, err := ExportLatest(bg, kv)
	if err != nil || exp.Checkpoint.Seq != 8 {
		t.Fatal(exp, err)
	}
	doc, _ := json.Marshal(exp)
	exp2, err := ParseExport(doc)
	if err != nil || exp2.Checkpoint.Verify(exp2.Key) != nil {
		t.Fatalf("export round trip: %v", err)
	}
	fill(t, l, 4)
	r := mustVerify(t, kv, VerifyOptions{TrustedKeys: []PublicKey{s.pub}, Anchors: []Export{exp}})
	if !r.OK() || r.CheckpointsVerified != 1 || r.LastCheckpoint != 8 || !r.KeysPinned {
		t.Fatalf("%+v", r)
	}

	// Rewrite the whole log from record 3 on, recomputing every hash and
	// the head: only the checkpoint can tell.
	for seq := uint64(3); seq <= 12; seq++ {
		e, _ := kv.Get(bg, RecordKey(seq))
		var rec Record
		_ = json.Unmarshal(e.Value, &rec)
		if seq == 3 {
			rec.Outcome = "failure"
		} else {
			prev, _ := kv.Get(bg, RecordKey(seq-1))
			var p Record
			_ = json.Unmarshal(prev.Value, &p)
			rec.Prev = p.Hash
		}
		b, _ := encode(&rec)
		_, _ = kv.Put(bg, RecordKey(seq), b, store.PutOptions{})
		if seq == 12 {
			hb, _ := json.Marshal(head{Seq: 12, Hash: rec.Hash})
			_, _ = kv.Put(bg, headKey, hb, store.PutOptions{})
		}
	}
	r = mustVerify(t, kv, VerifyOptions{TrustedKeys: []PublicKey{s.pub}})
	wantFirst(t, r, 8, ProblemAltered)
	if !strings.Contains(r.Problems[0].Detail, "rewritten") {
		t.Fatal(r.Problems[0])
	}

	// A checkpoint signed by an untrusted key, and a forged signature.
	other := newTestSigner(t)
	r = mustVerify(t, kv, VerifyOptions{TrustedKeys: []PublicKey{other.pub}})
	wantFirst(t, r, 8, ProblemCheckpoint)
	e, _ := kv.Get(bg, CheckpointKey(8))
	var stored Checkpoint
	_ = json.Unmarshal(e.Value, &stored)
	stored.Signature[10] ^= 1
	b, _ := json.Marshal(stored)
	_, _ = kv.Put(bg, CheckpointKey(8), b, store.PutOptions{})
	r = mustVerify(t, kv, VerifyOptions{TrustedKeys: []PublicKey{s.pub}})
	if p, _ := r.First(); p.Kind != ProblemCheckpoint || !strings.Contains(p.Detail, "does not verify") {
		t.Fatalf("%v", r.Problems)
	}
}

func TestCheckpointTruncation(t *testing.T) {
	kv := memstore.New()
	l := New(kv, nil, nil)
	s := newTestSigner(t)
	fill(t, l, 10)
	if _, err := NewCheckpointer(l, CheckpointerOptions{Signer: s}).Checkpoint(bg); err != nil {
		t.Fatal(err)
	}
	// Cut the last three records and move the head back consistently.
	for seq := uint64(8); seq <= 10; seq++ {
		_ = kv.Delete(bg, RecordKey(seq), store.DeleteOptions{})
	}
	e, _ := kv.Get(bg, RecordKey(7))
	var rec Record
	_ = json.Unmarshal(e.Value, &rec)
	hb, _ := json.Marshal(head{Seq: 7, Hash: rec.Hash})
	_, _ = kv.Put(bg, headKey, hb, store.PutOptions{})
	wantFirst(t, mustVerify(t, kv, VerifyOptions{}), 10, ProblemMissing)
}

func TestCheckpointerRun(t *testing.T) {
	kv := memstore.New()
	l := New(kv, nil, nil)
	s := newTestSigner(t)
	cpr := NewCheckpointer(l, CheckpointerOptions{Every: 4, Interval: time.Hour, Signer: s})
	ctx, cancel := context.WithCancel(bg)
	done := make(chan struct{})
	go func() { cpr.Run(ctx); close(done) }()
	fill(t, l, 9)
	// Every 4: after 9 events the newest checkpoint covers at least seq 6
	// (fewer than 4 events left unsigned).
	deadline := time.Now().Add(10 * time.Second)
	for cpr.Status().LastSeq < 6 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if st := cpr.Status(); st.LastSeq < 6 || st.Err != nil {
		t.Fatalf("status after 9 events, every 4: %+v", st)
	}
	if n := len(mustVerify(t, kv, VerifyOptions{TrustedKeys: []PublicKey{s.pub}}).Problems); n != 0 {
		t.Fatalf("%d problems", n)
	}
	// A signer that fails is reported, and the log still takes events.
	s.err = errors.New("kms down")
	fill(t, l, 5)
	if _, err := cpr.Checkpoint(bg); err == nil || cpr.Status().Err == nil {
		t.Fatal("failed signing not reported")
	}
}

func FuzzDecodeRecord(f *testing.F) {
	r := Record{Seq: 1, Time: time.Unix(1, 0), Source: "core", Action: "a", Prev: ZeroHash}
	b, _ := encode(&r)
	f.Add(b)
	f.Add([]byte(`{"seq":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		rec, err := decodeStrict(b)
		if err == nil {
			again, err := encode(&rec)
			if err != nil || string(again) != string(b) {
				t.Fatalf("accepted a non-canonical record: %q", b)
			}
		}
	})
}

func FuzzParseExport(f *testing.F) {
	f.Add([]byte(`{"checkpoint":{"v":1,"seq":3,"hash":"` + ZeroHash + `"},"key":{}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := ParseExport(b)
		if err == nil {
			_ = e.Checkpoint.Verify(e.Key) // must not panic
		}
	})
}

// setHead points the head at record seq, as a restored backup would.
func setHead(t *testing.T, kv store.KV, seq uint64) {
	t.Helper()
	e, err := kv.Get(bg, RecordKey(seq))
	if err != nil {
		t.Fatal(err)
	}
	var rec Record
	_ = json.Unmarshal(e.Value, &rec)
	hb, _ := json.Marshal(head{Seq: seq, Hash: rec.Hash})
	if _, err := kv.Put(bg, headKey, hb, store.PutOptions{}); err != nil {
		t.Fatal(err)
	}
}

// rewriteFrom rebuilds the chain from record from on with valid hashes,
// changing record from's target, and moves the head: what someone with
// write access to the database and this source code can do.
func rewriteFrom(t *testing.T, kv store.KV, from uint64) {
	t.Helper()
	recs, err := List(bg, kv, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	prev := ZeroHash
	if from > 1 {
		prev = recs[from-2].Hash
	}
	for _, r := range recs[from-1:] {
		r.Prev = prev
		if r.Seq == from {
			r.Target = "rewritten"
		}
		b, _ := encode(&r)
		_, _ = kv.Put(bg, RecordKey(r.Seq), b, store.PutOptions{})
		prev = r.Hash
	}
	setHead(t, kv, recs[len(recs)-1].Seq)
}

func TestVerifyMissingCheckpointsAndEmptyLog(t *testing.T) {
	kv := memstore.New()
	if r := mustVerify(t, kv, VerifyOptions{}); r.OK() || r.Problems[0].Kind != ProblemEmpty {
		t.Fatalf("empty log: %+v", r)
	}
	if r := mustVerify(t, kv, VerifyOptions{AllowEmpty: true}); !r.OK() {
		t.Fatalf("empty log allowed: %+v", r)
	}
	l := New(kv, nil, nil)
	s := newTestSigner(t)
	fill(t, l, 12)
	if _, err := NewCheckpointer(l, CheckpointerOptions{Signer: s}).Checkpoint(bg); err != nil {
		t.Fatal(err)
	}
	// Rewrite from record 3 and delete the checkpoint that would show it.
	rewriteFrom(t, kv, 3)
	_ = kv.Delete(bg, CheckpointKey(12), store.DeleteOptions{})
	r := mustVerify(t, kv, VerifyOptions{TrustedKeys: []PublicKey{s.pub}})
	var kinds []string
	for _, p := range r.Problems {
		kinds = append(kinds, p.String())
	}
	all := strings.Join(kinds, "; ")
	if r.OK() || !strings.Contains(all, "newest checkpoint (at 12, named by the checkpoint head) is missing") ||
		!strings.Contains(all, "no checkpoint verifies with the pinned keys") {
		t.Fatalf("deleted checkpoint not reported: %s", all)
	}
	// Also the checkpoint head gone: pinned keys and MaxUnsigned still tell.
	_ = kv.Delete(bg, checkpointHeadKey, store.DeleteOptions{})
	r = mustVerify(t, kv, VerifyOptions{TrustedKeys: []PublicKey{s.pub}, MaxUnsigned: 5})
	if r.OK() || r.Unsigned != 12 {
		t.Fatalf("%+v", r)
	}
	if p, _ := r.First(); p.Kind != ProblemUnsigned || p.Seq != 1 {
		t.Fatalf("first problem %v", p)
	}
}

func TestCheckpointerRefusesEditedChain(t *testing.T) {
	kv := memstore.New()
	l := New(kv, nil, nil)
	s := newTestSigner(t)
	cpr := NewCheckpointer(l, CheckpointerOptions{Signer: s})
	fill(t, l, 8)
	if _, err := cpr.Checkpoint(bg); err != nil {
		t.Fatal(err)
	}
	fill(t, l, 4)
	rewriteFrom(t, kv, 10) // after the checkpoint: a signature would bless it
	if _, err := cpr.Checkpoint(bg); !errors.Is(err, ErrBrokenChain) || !errors.Is(cpr.Status().Err, ErrBrokenChain) {
		t.Fatalf("signed an edited chain: %v", err)
	}
	rewriteFrom(t, kv, 4) // before the checkpoint
	if _, err := cpr.Checkpoint(bg); !errors.Is(err, ErrBrokenChain) {
		t.Fatalf("signed a chain that no longer holds the checkpointed record: %v", err)
	}
	if cp, _ := LatestCheckpoint(bg, kv); cp.Seq != 8 {
		t.Fatalf("a checkpoint past 8 was stored: %d", cp.Seq)
	}
}

func TestHeadFarBehindCatchesUp(t *testing.T) {
	kv := memstore.New()
	l := New(kv, nil, nil)
	fill(t, l, 50)
	setHead(t, kv, 5) // the head row restored from an old backup
	rec, err := l.Append(bg, "core", ev(51))
	if err != nil || rec.Seq != 51 {
		t.Fatalf("append with the head 45 behind: %+v %v", rec, err)
	}
	if r := mustVerify(t, kv, VerifyOptions{}); !r.OK() || r.Records != 51 {
		t.Fatalf("%+v", r)
	}
}

func TestCheckpointHeadNeverMovesBack(t *testing.T) {
	kv := memstore.New()
	if err := advanceCheckpointHead(bg, kv, 400, 0); err != nil {
		t.Fatal(err)
	}
	// A replica that read no head (version 0) and signed 300 meanwhile.
	if err := advanceCheckpointHead(bg, kv, 300, 0); err != nil {
		t.Fatal(err)
	}
	e, _ := kv.Get(bg, checkpointHeadKey)
	if string(e.Value) != "400" {
		t.Fatalf("checkpoint head moved back to %s", e.Value)
	}
	// One that signed 500 with a stale version still moves it forward.
	if err := advanceCheckpointHead(bg, kv, 500, 0); err != nil {
		t.Fatal(err)
	}
	if e, _ := kv.Get(bg, checkpointHeadKey); string(e.Value) != "500" {
		t.Fatalf("checkpoint head %s, want 500", e.Value)
	}
}

// countingBatcher counts the batches and their ops that reach the store.
type countingBatcher struct {
	store.KV
	mu      sync.Mutex
	batches int
	ops     int
}

func (c *countingBatcher) Apply(ctx context.Context, ops []store.Op) ([]int64, error) {
	c.mu.Lock()
	c.batches++
	c.ops += len(ops)
	c.mu.Unlock()
	return c.KV.(store.Batcher).Apply(ctx, ops)
}

// singleWrites hides the store's Apply: the log falls back to one write per
// record and one per head move.
type singleWrites struct{ store.KV }

// TestGroupCommit: concurrent events share batches (records and head move
// in one atomic write), every event lands exactly once, the chain verifies,
// and a store without batches still gets a valid chain.
func TestGroupCommit(t *testing.T) {
	emb, err := embedded.Open(bg, filepath.Join(t.TempDir(), "g.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Close()
	cb := &countingBatcher{KV: emb}
	for name, kv := range map[string]store.KV{"batched": cb, "single writes": singleWrites{memstore.New()}} {
		t.Run(name, func(t *testing.T) {
			l := New(kv, nil, nil)
			const workers, each = 16, 25
			var wg sync.WaitGroup
			seqs := make(chan uint64, workers*each)
			for w := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for j := range each {
						rec, err := l.Append(bg, "core", host.Event{Action: "test.event", Target: fmt.Sprintf("w%d/%d", w, j)})
						if err != nil {
							t.Error(err)
							return
						}
						seqs <- rec.Seq
					}
				}()
			}
			wg.Wait()
			close(seqs)
			seen := map[uint64]bool{}
			for s := range seqs {
				if seen[s] {
					t.Fatalf("seq %d returned twice", s)
				}
				seen[s] = true
			}
			if len(seen) != workers*each {
				t.Fatalf("%d distinct seqs for %d events", len(seen), workers*each)
			}
			r := mustVerify(t, kv, VerifyOptions{})
			if !r.OK() || r.Records != workers*each {
				t.Fatalf("%+v", r)
			}
		})
	}
	// Each batch is its records plus the head move; with 16 appenders
	// waiting, batches hold more than one record on average.
	if cb.batches == 0 || cb.ops-cb.batches != 400 {
		t.Fatalf("%d batches carrying %d ops for 400 records", cb.batches, cb.ops)
	}
	if cb.batches >= 400 {
		t.Fatalf("no group commit: %d batches for 400 records", cb.batches)
	}
	t.Logf("400 records in %d batches", cb.batches)
}
