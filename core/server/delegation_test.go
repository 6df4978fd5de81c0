package server

import (
	crand "crypto/rand"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/avonzt/avon/core/handshake"
	"github.com/avonzt/avon/core/handshake/handshaketest"
)

// flakySigner fails while fail is set, else signs with s.
type flakySigner struct {
	s    handshake.Signer
	mu   sync.Mutex
	fail bool
	n    int
}

func (f *flakySigner) Public() []byte { return f.s.Public() }
func (f *flakySigner) Sign(msg, ctx []byte) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	if f.fail {
		return nil, errors.New("kms unavailable")
	}
	return f.s.Sign(msg, ctx)
}
func (f *flakySigner) setFail(v bool) { f.mu.Lock(); f.fail = v; f.mu.Unlock() }
func (f *flakySigner) calls() int     { f.mu.Lock(); defer f.mu.Unlock(); return f.n }

// fakeTimer hands the delegator's waits to the test.
type fakeTimer struct {
	waits chan time.Duration
	fire  chan time.Time
}

func (ft *fakeTimer) after(d time.Duration) <-chan time.Time {
	ft.waits <- d
	return ft.fire
}

func (ft *fakeTimer) nextWait(t *testing.T) time.Duration {
	t.Helper()
	select {
	case d := <-ft.waits:
		return d
	case <-time.After(10 * time.Second):
		t.Fatal("the delegator did not wait")
		return 0
	}
}

func metricValue(t *testing.T, c prometheus.Collector) float64 {
	t.Helper()
	ch := make(chan prometheus.Metric, 1)
	c.Collect(ch)
	var m dto.Metric
	if err := (<-ch).Write(&m); err != nil {
		t.Fatal(err)
	}
	if m.Gauge != nil {
		return m.Gauge.GetValue()
	}
	return m.Counter.GetValue()
}

func TestDelegatorRotation(t *testing.T) {
	pinned, err := handshake.NewMLDSA65Signer(handshaketest.KeyFromLabel("avon delegator test").PrivateKey(), crand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ks := &flakySigner{s: pinned}
	var clockMu sync.Mutex
	now := time.Date(2026, 5, 1, 8, 0, 0, 0, time.UTC)
	clock := func() time.Time { clockMu.Lock(); defer clockMu.Unlock(); return now }
	advance := func(d time.Duration) { clockMu.Lock(); now = now.Add(d); clockMu.Unlock() }
	keys := &handshake.DelegatedKeys{}
	d, err := newDelegator(keys, ks, crand.Reader, clock, 8*time.Hour, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	first := keys.Current()
	if first == nil || first.NotAfter.Sub(first.NotBefore) != 8*time.Hour || ks.calls() != 1 {
		t.Fatal("first credential")
	}
	if _, err := handshake.VerifyCredential(first.Raw, pinned.Public(), clock(), 0); err != nil {
		t.Fatal(err)
	}
	ft := &fakeTimer{waits: make(chan time.Duration), fire: make(chan time.Time)}
	d.after = ft.after
	d.start()
	t.Cleanup(d.close)
	if w := ft.nextWait(t); w != 6*time.Hour {
		t.Fatalf("first renewal in %s, want 6h (a quarter of the validity left)", w)
	}
	m := d.collectors()
	advance(6 * time.Hour)
	if age := metricValue(t, m[0]); age != (6 * time.Hour).Seconds() {
		t.Fatalf("age metric %v", age)
	}
	// The KMS fails: the current key stays, a retry is scheduled.
	ks.setFail(true)
	ft.fire <- time.Time{}
	if w := ft.nextWait(t); w != delegationRetry {
		t.Fatalf("retry in %s", w)
	}
	if keys.Current() != first || metricValue(t, m[3]) != 1 {
		t.Fatal("a failed issuance changed the key or was not counted")
	}
	ks.setFail(false)
	ft.fire <- time.Time{}
	if w := ft.nextWait(t); w != 6*time.Hour {
		t.Fatalf("renewal after rotation in %s", w)
	}
	second := keys.Current()
	if second == first || second.NotBefore != clock() || metricValue(t, m[2]) != 1 {
		t.Fatal("no rotation")
	}
	if exp := metricValue(t, m[1]); exp != float64(second.NotAfter.UnixNano())/1e9 {
		t.Fatalf("expiry metric %v", exp)
	}
	d.close()
	if keys.Current() != nil {
		t.Fatal("close left the key")
	}
	d.stop = nil // closed once
}

func TestDelegatorStaleClock(t *testing.T) {
	pinned, err := handshake.NewMLDSA65Signer(handshaketest.KeyFromLabel("avon delegator test").PrivateKey(), crand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, err = newDelegator(&handshake.DelegatedKeys{}, pinned, crand.Reader, func() time.Time { return time.Time{} }, time.Hour, hclog.NewNullLogger())
	if err == nil {
		t.Fatal("issued with a stale clock")
	}
}

// TestDelegatedKeyThroughKMSSoft issues a credential through the real
// kms-soft plugin and runs handshakes against it: the credential verifies
// with the pinned gateway key, the first Response carries it, the next
// leaves it out, and the plugin is asked once.
func TestDelegatedKeyThroughKMSSoft(t *testing.T) {
	kmsSigner, _ := benchSignerServer(t)
	counted := &flakySigner{s: kmsSigner}
	keys := &handshake.DelegatedKeys{}
	d, err := newDelegator(keys, counted, crand.Reader, time.Now, time.Hour, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.close)
	pki, err := handshaketest.New(handshaketest.Options{Name: "AVON Delegation Test", Keys: handshaketest.LabelKeys("avon delegation test: ")})
	if err != nil {
		t.Fatal(err)
	}
	verifier, err := handshake.NewChainVerifier(pki.Roots(), handshake.ChainVerifierOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r, err := handshake.NewResponder(handshake.ResponderConfig{Signer: counted, Delegated: keys, Verifier: verifier,
		Rand: crand.Reader, Now: time.Now})
	if err != nil {
		t.Fatal(err)
	}
	key := handshaketest.KeyFromLabel("avon delegation test agent")
	leaf, err := pki.IssueAgent("agent-1", key, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	as, err := handshake.NewMLDSA65Signer(key.PrivateKey(), crand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var cred *handshake.Credential
	for i, want := range []int{handshake.ResponseFullLen, handshake.ResponseLen, handshake.ResponseLen} {
		in, err := handshake.NewInitiator(handshake.InitiatorConfig{Signer: as, Chain: leaf.Chain,
			ResponderPublicKey: kmsSigner.Public(), Rand: crand.Reader, Now: time.Now, LocalIndex: 1, Credential: cred})
		if err != nil {
			t.Fatal(err)
		}
		init, err := in.Initiation(nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, p, err := r.HandleInitiation(init, uint32(10+i))
		if err != nil {
			t.Fatal(err)
		}
		if len(resp) != want {
			t.Fatalf("handshake %d: response of %d bytes, want %d", i, len(resp), want)
		}
		fin, res, err := in.HandleResponse(resp)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.HandleFinish(fin); err != nil {
			t.Fatal(err)
		}
		cred = res.Credential
	}
	if n := counted.calls(); n != 1 {
		t.Fatalf("%d KMS signatures for one credential and three handshakes, want 1", n)
	}
}
