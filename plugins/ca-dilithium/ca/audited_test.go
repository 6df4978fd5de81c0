package ca

import (
	"context"
	"crypto/rand"
	"sync/atomic"
	"testing"

	sdkca "github.com/avonzt/avon/sdk/ca"
	"github.com/avonzt/avon/sdk/host"
	"github.com/avonzt/avon/sdk/plugintest"
)

// servedHost serves h as the host service on loopback gRPC, as the core
// does over the broker, and returns the plugin-side client.
func servedHost(t *testing.T, h host.Host) host.Host {
	t.Helper()
	return host.NewClient(plugintest.ServeHost(t, h), nil)
}

// callCounter is the host's storage with its writes counted, served to
// the plugin; with older it is no AuditedApplier (a core before host
// protocol minor 5), so the server answers Unimplemented.
type callCounter struct {
	*plugintest.MemHost
	older   bool
	puts    atomic.Int64
	gets    atomic.Int64
	audited atomic.Int64
}

type countedStorage struct {
	host.Storage
	c *callCounter
}

func (s countedStorage) Get(ctx context.Context, key string) (host.Entry, error) {
	s.c.gets.Add(1)
	return s.Storage.Get(ctx, key)
}

func (s countedStorage) Put(ctx context.Context, key string, v []byte, o host.PutOptions) (int64, error) {
	s.c.puts.Add(1)
	return s.Storage.Put(ctx, key, v, o)
}

type countedAudited struct{ countedStorage }

func (s countedAudited) ApplyAudited(ctx context.Context, ops []host.Op, ev host.Event) ([]int64, error) {
	s.c.audited.Add(1)
	return s.Storage.(host.AuditedApplier).ApplyAudited(ctx, ops, ev)
}

func (c *callCounter) Storage() host.Storage {
	st := countedStorage{Storage: c.MemHost.Storage(), c: c}
	if c.older {
		return st
	}
	return countedAudited{st}
}

// TestIssueAuditedBatch: through the host protocol, a certificate record
// and its ca.issue event are one ApplyAudited call, no separate Put; with
// an older core the engine falls back to a Put and an event, and stops
// asking after the first Unimplemented.
func TestIssueAuditedBatch(t *testing.T) {
	for _, older := range []bool{false, true} {
		t.Run(map[bool]string{false: "current core", true: "older core"}[older], func(t *testing.T) {
			s := newSetup(t, Config{}, "kms-soft")
			c := &callCounter{MemHost: s.host, older: older}
			cl := servedHost(t, c)
			e := New(s.eng.cfg, s.kms, nil, cl.Storage(), rand.Reader, s.eng.now, cl.Audit)
			if err := e.Init(bg); err != nil {
				t.Fatal(err)
			}
			c.puts.Store(0)
			before := len(s.host.Events())
			var serials []string
			for _, id := range []string{"a1", "a2"} {
				resp, _ := issueAgent(t, e, id)
				serials = append(serials, resp.Serial)
				rec, err := e.GetCertificate(bg, &sdkca.GetCertificateRequest{Serial: resp.Serial})
				if err != nil || string(rec.Certificate) != string(resp.Certificate) {
					t.Fatalf("certificate %s not on record: %v", resp.Serial, err)
				}
			}
			evs := s.host.Events()[before:]
			if len(evs) != 2 || evs[0].Target != "cert/"+serials[0] || evs[1].Target != "cert/"+serials[1] ||
				evs[0].Outcome != "success" || evs[1].Outcome != "success" {
				t.Fatalf("events after two issuances: %+v", evs)
			}
			wantAudited, wantPuts := int64(2), int64(0)
			if older {
				wantAudited, wantPuts = 0, 2
			}
			if a, p := c.audited.Load(), c.puts.Load(); a != wantAudited || p != wantPuts {
				t.Fatalf("%d audited batches and %d puts for two issuances, want %d and %d", a, p, wantAudited, wantPuts)
			}
			if e.noAudited.Load() != older {
				t.Fatalf("noAudited %v with an older core %v", e.noAudited.Load(), older)
			}
		})
	}
}

// TestIssueAuditedFailure: when the audit log fails, the audited batch
// stores nothing and hands out nothing.
func TestIssueAuditedFailure(t *testing.T) {
	s := newSetup(t, Config{}, "kms-soft")
	cl := servedHost(t, s.host)
	e := New(s.eng.cfg, s.kms, nil, cl.Storage(), rand.Reader, s.eng.now, cl.Audit)
	if err := e.Init(bg); err != nil {
		t.Fatal(err)
	}
	certs := func() int {
		es, err := s.host.Storage().List(bg, hostList(certPrefix))
		if err != nil {
			t.Fatal(err)
		}
		return len(es)
	}
	n, evs := certs(), len(s.host.Events())
	s.host.SetAuditFailure(true)
	resp, err := e.Issue(bg, &sdkca.IssueRequest{CSR: agentCSR(t, newAgentKey(t), "avon://agent/x"), Profile: "agent"})
	s.host.SetAuditFailure(false)
	if err == nil || resp != nil {
		t.Fatalf("issued without an audit record: %v", err)
	}
	if certs() != n || len(s.host.Events()) != evs {
		t.Fatalf("a refused issuance left %d records and %d events (before: %d, %d)", certs(), len(s.host.Events()), n, evs)
	}
	issueAgent(t, e, "y")
}
