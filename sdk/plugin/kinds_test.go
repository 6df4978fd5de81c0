package plugin_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/avonzt/avon/sdk/acme"
	"github.com/avonzt/avon/sdk/acme/acmerpc"
	"github.com/avonzt/avon/sdk/ca"
	"github.com/avonzt/avon/sdk/ca/carpc"
	"github.com/avonzt/avon/sdk/config"
	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/plugin"
	"github.com/avonzt/avon/sdk/plugintest"
	"github.com/avonzt/avon/sdk/policy"
	"github.com/avonzt/avon/sdk/policy/policyrpc"
	pluginv1 "github.com/avonzt/avon/sdk/proto/plugin/v1"
)

type base struct{ configured bool }

func (b *base) Info() plugin.Info           { return plugin.Info{Name: "fake", Version: "9.9.9"} }
func (b *base) ConfigSchema() config.Schema { return config.Schema{} }
func (b *base) Configure(_ context.Context, req *plugin.ConfigureRequest) error {
	if req.Host == nil {
		return errors.New("no host")
	}
	b.configured = true
	return nil
}

var t0 = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)

type fakeCA struct {
	base
	got *ca.IssueRequest
}

func (f *fakeCA) Issue(_ context.Context, r *ca.IssueRequest) (*ca.IssueResponse, error) {
	f.got = r
	if r.Profile == "nope" {
		return nil, fmt.Errorf("profile %q: %w", r.Profile, ca.ErrUnknownProfile)
	}
	return &ca.IssueResponse{Certificate: []byte{1, 2}, Chain: [][]byte{{3}, {4, 5}}, Serial: "0abc", NotBefore: t0, NotAfter: t0.Add(time.Hour)}, nil
}
func (f *fakeCA) Revoke(_ context.Context, r *ca.RevokeRequest) (*ca.RevokeResponse, error) {
	if r.Serial == "gone" {
		return nil, ca.ErrAlreadyRevoked
	}
	return &ca.RevokeResponse{}, nil
}
func (f *fakeCA) GetCertificate(_ context.Context, r *ca.GetCertificateRequest) (*ca.GetCertificateResponse, error) {
	return &ca.GetCertificateResponse{Certificate: []byte(r.Serial), Status: ca.StatusRevoked, RevokedAt: t0, RevocationReason: 4}, nil
}
func (f *fakeCA) ListIssuers(context.Context, *ca.ListIssuersRequest) (*ca.ListIssuersResponse, error) {
	return &ca.ListIssuersResponse{Issuers: []ca.Issuer{{Name: "root", Algorithm: "ML-DSA-87", Certificate: []byte{9}, Default: true}}}, nil
}
func (f *fakeCA) CRL(_ context.Context, r *ca.CRLRequest) (*ca.CRLResponse, error) {
	return &ca.CRLResponse{CRL: []byte(r.Issuer), ThisUpdate: t0, NextUpdate: t0.Add(24 * time.Hour)}, nil
}

func TestCAKind(t *testing.T) {
	f := &fakeCA{}
	s := plugintest.ServeInProcess(t, &plugin.ServeConfig{CA: f}, plugintest.Options{})
	c := carpc.NewClient(s.Conn.Conn)
	ctx := context.Background()
	req := &ca.IssueRequest{CSR: []byte{7}, Profile: "agent", CommonName: "laptop", DNSNames: []string{"a.example"},
		IPAddresses: []string{"10.0.0.1"}, URIs: []string{"spiffe://x"}, Lifetime: 90 * time.Minute}
	r, err := c.Issue(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(f.got, req) {
		t.Fatalf("request changed in transit:\n%+v\n%+v", f.got, req)
	}
	want := &ca.IssueResponse{Certificate: []byte{1, 2}, Chain: [][]byte{{3}, {4, 5}}, Serial: "0abc", NotBefore: t0, NotAfter: t0.Add(time.Hour)}
	if !reflect.DeepEqual(r, want) {
		t.Fatalf("response changed in transit: %+v", r)
	}
	if _, err := c.Issue(ctx, &ca.IssueRequest{Profile: "nope"}); !errors.Is(err, ca.ErrUnknownProfile) {
		t.Fatalf("want ErrUnknownProfile, got %v", err)
	}
	if _, err := c.Revoke(ctx, &ca.RevokeRequest{Serial: "gone"}); !errors.Is(err, ca.ErrAlreadyRevoked) {
		t.Fatalf("want ErrAlreadyRevoked, got %v", err)
	}
	g, err := c.GetCertificate(ctx, &ca.GetCertificateRequest{Serial: "s1"})
	if err != nil || g.Status != ca.StatusRevoked || !g.RevokedAt.Equal(t0) || g.RevocationReason != 4 || string(g.Certificate) != "s1" {
		t.Fatalf("GetCertificate: %+v %v", g, err)
	}
	l, err := c.ListIssuers(ctx, &ca.ListIssuersRequest{})
	if err != nil || len(l.Issuers) != 1 || !l.Issuers[0].Default || l.Issuers[0].Algorithm != "ML-DSA-87" {
		t.Fatalf("ListIssuers: %+v %v", l, err)
	}
	crl, err := c.CRL(ctx, &ca.CRLRequest{Issuer: "root"})
	if err != nil || string(crl.CRL) != "root" || !crl.NextUpdate.Equal(t0.Add(24*time.Hour)) {
		t.Fatalf("CRL: %+v %v", crl, err)
	}
	if _, err := c.RespondOCSP(ctx, &ca.OCSPRequest{}); !errors.Is(err, errdef.ErrNotImplemented) {
		t.Fatalf("OCSP on a CA without the capability: %v", err)
	}
	info, err := s.Base.GetInfo(ctx, &pluginv1.GetInfoRequest{})
	if err != nil || info.GetKind() != "ca" || info.GetVersion() != "9.9.9" || len(info.GetCapabilities()) != 0 || !f.configured {
		t.Fatalf("info %+v %v", info, err)
	}
}

type fakeACME struct {
	base
	got *acme.HTTPRequest
}

func (f *fakeACME) HandleHTTP(_ context.Context, r *acme.HTTPRequest) (*acme.HTTPResponse, error) {
	f.got = r
	return &acme.HTTPResponse{Status: 201, Header: map[string][]string{"Replay-Nonce": {"n1"}, "Link": {"<a>", "<b>"}}, Body: []byte(`{"ok":true}`)}, nil
}
func (f *fakeACME) Tick(context.Context, *acme.TickRequest) (*acme.TickResponse, error) {
	return nil, errors.New("tick failed")
}

func TestACMEKind(t *testing.T) {
	f := &fakeACME{}
	s := plugintest.ServeInProcess(t, &plugin.ServeConfig{ACME: f}, plugintest.Options{})
	c := acmerpc.NewClient(s.Conn.Conn)
	ctx := context.Background()
	req := &acme.HTTPRequest{Method: "POST", Path: "/new-order", RawQuery: "a=b", Header: map[string][]string{"Content-Type": {"application/jose+json"}},
		Body: []byte("{}"), RemoteAddr: "127.0.0.1:5", BaseURL: "https://127.0.0.1:8443/acme"}
	r, err := c.HandleHTTP(ctx, req)
	if err != nil || r.Status != 201 || r.Header["Link"][1] != "<b>" || string(r.Body) != `{"ok":true}` {
		t.Fatalf("HandleHTTP: %+v %v", r, err)
	}
	if !reflect.DeepEqual(f.got, req) {
		t.Fatalf("request changed in transit: %+v", f.got)
	}
	if _, err := c.HandleHTTP(ctx, &acme.HTTPRequest{Body: make([]byte, acme.MaxBodySize+1)}); !errors.Is(err, acme.ErrBodyTooLarge) {
		t.Fatalf("oversized body: %v", err)
	}
	if _, err := c.Tick(ctx, &acme.TickRequest{Now: t0}); err == nil || errors.Is(err, errdef.ErrNotImplemented) {
		t.Fatalf("Tick error lost: %v", err)
	}
	info, _ := s.Base.GetInfo(ctx, &pluginv1.GetInfoRequest{})
	if len(info.GetCapabilities()) != 1 || info.GetCapabilities()[0] != "acme.maintainer" {
		t.Fatalf("capabilities %v", info.GetCapabilities())
	}
}

type fakePolicy struct {
	base
	got *policy.EvaluateRequest
}

func (f *fakePolicy) Evaluate(_ context.Context, r *policy.EvaluateRequest) (*policy.EvaluateResponse, error) {
	f.got = r
	if r.PolicySetID == "missing" {
		return nil, policy.ErrUnknownPolicySet
	}
	out := &policy.EvaluateResponse{Version: 7}
	for range r.Queries {
		out.Decisions = append(out.Decisions, policy.Decision{Allow: true, DeterminingPolicies: []string{"p1"}, Reasons: []string{"permit p1"}, ReportOnly: true})
	}
	return out, nil
}
func (f *fakePolicy) SetPolicies(_ context.Context, r *policy.SetPoliciesRequest) (*policy.SetPoliciesResponse, error) {
	return &policy.SetPoliciesResponse{Applied: false, Version: 7, Diagnostics: []policy.Diagnostic{{Severity: "error", PolicyID: "p2", Line: 3, Column: 14, Message: "unknown attribute"}}}, nil
}
func (f *fakePolicy) GetPolicies(context.Context, *policy.GetPoliciesRequest) (*policy.GetPoliciesResponse, error) {
	return &policy.GetPoliciesResponse{Policies: "permit(principal, action, resource);", ReportOnly: true, Version: 7}, nil
}

func TestPolicyKind(t *testing.T) {
	f := &fakePolicy{}
	s := plugintest.ServeInProcess(t, &plugin.ServeConfig{Policy: f}, plugintest.Options{})
	c := policyrpc.NewClient(s.Conn.Conn)
	ctx := context.Background()
	req := &policy.EvaluateRequest{PolicySetID: "default",
		Entities: []policy.Entity{{Ref: policy.EntityRef{Type: "Agent", ID: "a1"}, Attributes: []byte(`{"os":"linux"}`), Parents: []policy.EntityRef{{Type: "Group", ID: "eng"}}}},
		Queries:  []policy.Query{{Principal: policy.EntityRef{Type: "Agent", ID: "a1"}, Action: policy.EntityRef{Type: "Action", ID: "connect"}, Resource: policy.EntityRef{Type: "Network", ID: "n"}, Context: []byte(`{}`)}},
	}
	r, err := c.Evaluate(ctx, req)
	if err != nil || r.Version != 7 || len(r.Decisions) != 1 || !r.Decisions[0].ReportOnly || r.Decisions[0].DeterminingPolicies[0] != "p1" {
		t.Fatalf("Evaluate: %+v %v", r, err)
	}
	if !reflect.DeepEqual(f.got, req) {
		t.Fatalf("request changed in transit: %+v", f.got)
	}
	if _, err := c.Evaluate(ctx, &policy.EvaluateRequest{PolicySetID: "missing"}); !errors.Is(err, policy.ErrUnknownPolicySet) {
		t.Fatalf("want ErrUnknownPolicySet, got %v", err)
	}
	if _, err := c.Evaluate(ctx, &policy.EvaluateRequest{Queries: make([]policy.Query, policy.MaxBatch+1)}); !errors.Is(err, policy.ErrBatchTooLarge) {
		t.Fatalf("want ErrBatchTooLarge, got %v", err)
	}
	sp, err := c.SetPolicies(ctx, &policy.SetPoliciesRequest{Policies: "x"})
	if err != nil || sp.Applied || len(sp.Diagnostics) != 1 || sp.Diagnostics[0].Line != 3 || sp.Diagnostics[0].Column != 14 {
		t.Fatalf("SetPolicies: %+v %v", sp, err)
	}
	if _, err := c.ValidatePolicies(ctx, &policy.SetPoliciesRequest{}); !errors.Is(err, errdef.ErrNotImplemented) {
		t.Fatalf("ValidatePolicies without the capability: %v", err)
	}
}

func TestServeConfigNeedsExactlyOneKind(t *testing.T) {
	if _, _, err := plugin.PluginSet(&plugin.ServeConfig{}); err == nil {
		t.Fatal("empty ServeConfig accepted")
	}
	if _, _, err := plugin.PluginSet(&plugin.ServeConfig{CA: &fakeCA{}, Policy: &fakePolicy{}}); err == nil {
		t.Fatal("two kinds accepted")
	}
}
