package ca

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/avonzt/avon/internal/pqx509"
	sdkca "github.com/avonzt/avon/sdk/ca"
	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/host"
)

// onceEngine is an engine over the host protocol (loopback gRPC) on s's
// host, as the plugin runs it; wrap, when not nil, wraps the host first.
func onceEngine(t *testing.T, s *setup, wrap func(host.Host) host.Host) *Engine {
	t.Helper()
	var h host.Host = s.host
	if wrap != nil {
		h = wrap(h)
	}
	cl := servedHost(t, h)
	e := New(s.eng.cfg, s.kms, nil, cl.Storage(), rand.Reader, s.eng.now, cl.Audit)
	if err := e.Init(bg); err != nil {
		t.Fatal(err)
	}
	return e
}

func (s *setup) certCount(t *testing.T) int {
	t.Helper()
	es, err := s.host.Storage().List(bg, hostList(certPrefix))
	if err != nil {
		t.Fatal(err)
	}
	return len(es)
}

// issueEvents are the ca.issue events recorded after the first before.
func (s *setup) issueEvents(before int) []host.Event {
	var out []host.Event
	for _, ev := range s.host.Events()[before:] {
		if ev.Action == "ca.issue" {
			out = append(out, ev)
		}
	}
	return out
}

func agentRequest(t *testing.T, id string) sdkca.IssueRequest {
	return sdkca.IssueRequest{CSR: agentCSR(t, newAgentKey(t), "avon://agent/"+id), Profile: "agent"}
}

// TestIssueOnce: the first request under a key issues and records the
// key with the certificate and its event in one audited batch, and reads
// nothing more than Issue; the same request again gets the same
// certificate without storing or recording anything; another request
// under the key gets ErrAlreadyIssued; another key issues anew.
func TestIssueOnce(t *testing.T) {
	s := newSetup(t, Config{}, "kms-soft")
	c := &callCounter{MemHost: s.host}
	e := onceEngine(t, s, func(host.Host) host.Host { return c })
	req := agentRequest(t, "a")
	certs, evs := s.certCount(t), len(s.host.Events())
	c.gets.Store(0)
	first, err := e.IssueOnce(bg, &sdkca.IssueOnceRequest{Key: "order/1", Request: req})
	if err != nil || first.Replayed {
		t.Fatalf("first issuance: %+v %v", first, err)
	}
	if g := c.gets.Load(); g != 0 {
		t.Fatalf("%d reads in an issuance under a new key", g)
	}
	leaf, err := pqx509.ParseCertificate(first.Issued.Certificate)
	if err != nil {
		t.Fatal(err)
	}
	roots, inters := s.roots(t)
	if _, err := pqx509.Verify(leaf, pqx509.VerifyOptions{Roots: roots, Intermediates: inters, CurrentTime: s.now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("the certificate does not verify: %v", err)
	}
	got := s.issueEvents(evs)
	if len(got) != 1 || got[0].Fields["once"] != "order/1" || got[0].Target != "cert/"+first.Issued.Serial {
		t.Fatalf("events of the first issuance: %+v", got)
	}
	again, err := e.IssueOnce(bg, &sdkca.IssueOnceRequest{Key: "order/1", Request: req})
	if err != nil || !again.Replayed || again.Issued.Serial != first.Issued.Serial ||
		string(again.Issued.Certificate) != string(first.Issued.Certificate) || len(again.Issued.Chain) != len(first.Issued.Chain) ||
		!again.Issued.NotAfter.Equal(first.Issued.NotAfter) || !again.Issued.NotBefore.Equal(first.Issued.NotBefore) {
		t.Fatalf("the same request again: %+v %v", again, err)
	}
	other := agentRequest(t, "b")
	if r, err := e.IssueOnce(bg, &sdkca.IssueOnceRequest{Key: "order/1", Request: other}); !errors.Is(err, sdkca.ErrAlreadyIssued) {
		t.Fatalf("another request under the key: %+v %v", r, err)
	}
	// One batch each, two of them refused by the check; the replay
	// reads the key and the certificate, the refusal the key.
	if a, p, g := c.audited.Load(), c.puts.Load(), c.gets.Load(); a != 3 || p != 0 || g != 3 {
		t.Fatalf("%d audited batches, %d puts and %d reads for three requests under one key, want 3, 0 and 3", a, p, g)
	}
	if n := s.certCount(t) - certs; n != 1 {
		t.Fatalf("%d certificates recorded under one key", n)
	}
	if got := s.issueEvents(evs); len(got) != 1 {
		t.Fatalf("%d issue events under one key", len(got))
	}
	second, err := e.IssueOnce(bg, &sdkca.IssueOnceRequest{Key: "order/2", Request: req})
	if err != nil || second.Replayed || second.Issued.Serial == first.Issued.Serial {
		t.Fatalf("another key: %+v %v", second, err)
	}
	// Issue knows nothing of keys: it issues every time.
	if _, err := e.Issue(bg, &req); err != nil {
		t.Fatal(err)
	}
	if n := s.certCount(t) - certs; n != 3 {
		t.Fatalf("%d certificates after two keys and an Issue, want 3", n)
	}
}

// TestIssueOnceRefusals: a bad key or a refused request records nothing,
// and the key stays free for a good request.
func TestIssueOnceRefusals(t *testing.T) {
	s := newSetup(t, Config{}, "kms-soft")
	e := onceEngine(t, s, nil)
	certs, evs := s.certCount(t), len(s.host.Events())
	good := agentRequest(t, "good")
	for _, key := range []string{"", strings.Repeat("k", sdkca.MaxOnceKey+1), "bad\xffutf8"} {
		if _, err := e.IssueOnce(bg, &sdkca.IssueOnceRequest{Key: key, Request: good}); !errors.Is(err, errdef.ErrInvalidArgument) {
			t.Fatalf("key %.20q: %v", key, err)
		}
	}
	if _, err := e.IssueOnce(bg, &sdkca.IssueOnceRequest{Key: "k", Request: sdkca.IssueRequest{CSR: []byte("garbage"), Profile: "agent"}}); !errors.Is(err, sdkca.ErrBadCSR) {
		t.Fatalf("a bad CSR: %v", err)
	}
	if _, err := e.IssueOnce(bg, &sdkca.IssueOnceRequest{Key: "k", Request: sdkca.IssueRequest{CSR: good.CSR, Profile: "nope"}}); !errors.Is(err, sdkca.ErrUnknownProfile) {
		t.Fatalf("an unknown profile: %v", err)
	}
	if s.certCount(t) != certs || len(s.issueEvents(evs)) != 0 {
		t.Fatal("a refused request recorded something")
	}
	if _, err := e.IssueOnce(bg, &sdkca.IssueOnceRequest{Key: strings.Repeat("k", sdkca.MaxOnceKey), Request: good}); err != nil {
		t.Fatalf("the longest key: %v", err)
	}
	if r, err := e.IssueOnce(bg, &sdkca.IssueOnceRequest{Key: "k", Request: good}); err != nil || r.Replayed {
		t.Fatalf("the key after refusals: %+v %v", r, err)
	}
}

// TestIssueOnceOlderCore: without audited batches the key cannot be
// recorded with the issuance: ErrNotImplemented, nothing issued, and
// Issue still works.
func TestIssueOnceOlderCore(t *testing.T) {
	s := newSetup(t, Config{}, "kms-soft")
	c := &callCounter{MemHost: s.host, older: true}
	e := onceEngine(t, s, func(h host.Host) host.Host { return c })
	certs := s.certCount(t)
	// The engine learns the core's age from its first audited batch.
	for range 2 {
		if _, err := e.IssueOnce(bg, &sdkca.IssueOnceRequest{Key: "k", Request: agentRequest(t, "x")}); !errors.Is(err, errdef.ErrNotImplemented) {
			t.Fatalf("issue once on an older core: %v", err)
		}
	}
	if s.certCount(t) != certs {
		t.Fatal("issue once on an older core recorded a certificate")
	}
	issueAgent(t, e, "y")
	noAudit := New(s.eng.cfg, s.kms, nil, s.host.Storage(), rand.Reader, s.eng.now, nil)
	if err := noAudit.Init(bg); err != nil {
		t.Fatal(err)
	}
	if _, err := noAudit.IssueOnce(bg, &sdkca.IssueOnceRequest{Key: "k", Request: agentRequest(t, "z")}); !errors.Is(err, errdef.ErrNotImplemented) {
		t.Fatalf("issue once without an audit function: %v", err)
	}
}

// gatedHost holds every audited batch that records a once key until n
// are in flight (or 10 s passed), so that n requests under one key have
// all signed before the create-only write decides.
type gatedHost struct {
	host.Host
	n       int32
	arrived atomic.Int32
	open    chan struct{}
	once    sync.Once
}

type gatedStorage struct {
	host.Storage
	g *gatedHost
}

func (h *gatedHost) Storage() host.Storage { return gatedStorage{Storage: h.Host.Storage(), g: h} }

func (s gatedStorage) ApplyAudited(ctx context.Context, ops []host.Op, ev host.Event) ([]int64, error) {
	if len(ops) == 2 && strings.HasPrefix(ops[1].Key, oncePrefix) {
		if s.g.arrived.Add(1) >= s.g.n {
			s.g.once.Do(func() { close(s.g.open) })
		}
		select {
		case <-s.g.open:
		case <-time.After(10 * time.Second):
		}
	}
	return s.Storage.(host.AuditedApplier).ApplyAudited(ctx, ops, ev)
}

// TestIssueOnceConcurrent: n requests under one key at once, half of them
// for another CSR, all signing before any is recorded: exactly one
// certificate is recorded, with one event; every request for the
// winner's CSR gets it, every other ErrAlreadyIssued.
func TestIssueOnceConcurrent(t *testing.T) {
	s := newSetup(t, Config{}, "kms-soft")
	const n = 6
	g := &gatedHost{n: n, open: make(chan struct{})}
	e := onceEngine(t, s, func(h host.Host) host.Host { g.Host = h; return g })
	reqs := [2]sdkca.IssueRequest{agentRequest(t, "p"), agentRequest(t, "q")}
	certs, evs := s.certCount(t), len(s.host.Events())
	type result struct {
		which int
		r     *sdkca.IssueOnceResponse
		err   error
	}
	results := make([]result, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := e.IssueOnce(bg, &sdkca.IssueOnceRequest{Key: "race", Request: reqs[i%2]})
			results[i] = result{i % 2, r, err}
		}()
	}
	wg.Wait()
	if got := g.arrived.Load(); got != n {
		t.Fatalf("%d batches recording the key, want %d", got, n)
	}
	if d := s.certCount(t) - certs; d != 1 {
		t.Fatalf("%d certificates recorded for one key", d)
	}
	got := s.issueEvents(evs)
	if len(got) != 1 {
		t.Fatalf("%d issue events for one key", len(got))
	}
	serial := strings.TrimPrefix(got[0].Target, "cert/")
	winner, fresh := -1, 0
	for _, r := range results {
		if r.err == nil {
			if winner == -1 {
				winner = r.which
			}
			if r.which != winner || r.r.Issued.Serial != serial {
				t.Fatalf("request %d got %s; the recorded certificate is %s for request %d", r.which, r.r.Issued.Serial, serial, winner)
			}
			if !r.r.Replayed {
				fresh++
			}
		}
	}
	if fresh != 1 {
		t.Fatalf("%d answers not replayed; want the one recorded", fresh)
	}
	for _, r := range results {
		if r.which != winner && !errors.Is(r.err, sdkca.ErrAlreadyIssued) {
			t.Fatalf("a request for the other CSR: %+v %v", r.r, r.err)
		}
	}
}

// TestIssueOnceReplayOnlyGood: the same request under a recorded key gets
// its certificate again only while it is good and unexpired: once revoked
// (say, by a caller that found nobody holding it) or expired, a retry gets
// ErrAlreadyIssued and nothing is issued.
func TestIssueOnceReplayOnlyGood(t *testing.T) {
	s := newSetup(t, Config{}, "kms-soft")
	e := onceEngine(t, s, nil)
	req := agentRequest(t, "r")
	first, err := e.IssueOnce(bg, &sdkca.IssueOnceRequest{Key: "order/r", Request: req})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Revoke(bg, &sdkca.RevokeRequest{Serial: first.Issued.Serial, Reason: 4, Time: s.now}); err != nil {
		t.Fatal(err)
	}
	certs := s.certCount(t)
	if r, err := e.IssueOnce(bg, &sdkca.IssueOnceRequest{Key: "order/r", Request: req}); !errors.Is(err, sdkca.ErrAlreadyIssued) {
		t.Fatalf("the same request after a revocation: replayed %v (%v)", r != nil && r.Replayed, err)
	}
	req = agentRequest(t, "x")
	second, err := e.IssueOnce(bg, &sdkca.IssueOnceRequest{Key: "order/x", Request: req})
	if err != nil {
		t.Fatal(err)
	}
	saved := s.now
	s.now = second.Issued.NotAfter
	r, err := e.IssueOnce(bg, &sdkca.IssueOnceRequest{Key: "order/x", Request: req})
	s.now = saved
	if !errors.Is(err, sdkca.ErrAlreadyIssued) {
		t.Fatalf("the same request once its certificate expired: replayed %v (%v)", r != nil && r.Replayed, err)
	}
	if n := s.certCount(t) - certs; n != 1 {
		t.Fatalf("%d certificates recorded, want the one of order/x", n)
	}
}

// TestOnceErr: of the ErrNotImplemented an issuance under a key may meet,
// only "the core cannot record the key" reaches the caller as such (it
// makes the caller claim its own way from then on); any other (a KMS or
// host call) is an internal error of this issuance.
func TestOnceErr(t *testing.T) {
	if err := onceErr(errOnceUnsupported); !errors.Is(err, errdef.ErrNotImplemented) {
		t.Fatalf("unsupported: %v", err)
	}
	if err := onceErr(fmt.Errorf("%w (older core)", errOnceUnsupported)); !errors.Is(err, errdef.ErrNotImplemented) {
		t.Fatalf("unsupported, wrapped: %v", err)
	}
	err := onceErr(fmt.Errorf("kms sign: %w", errdef.ErrNotImplemented))
	if errors.Is(err, errdef.ErrNotImplemented) || !errors.Is(err, errdef.ErrInternal) {
		t.Fatalf("a KMS's ErrNotImplemented: %v", err)
	}
	if err := onceErr(sdkca.ErrBadCSR); !errors.Is(err, sdkca.ErrBadCSR) {
		t.Fatalf("other errors unchanged: %v", err)
	}
}
