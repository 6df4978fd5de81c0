package ca

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/avonzt/avon/internal/pqx509"
	sdkca "github.com/avonzt/avon/sdk/ca"
	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/kms"
	"github.com/avonzt/avon/sdk/plugintest"
)

// twoKMS is a CA whose default KMS is kms-soft ("soft") with a SoftHSM2
// token wired as "hsm", on one in-memory host.
type twoKMS struct {
	soft, hsm kms.KMS
	host      *plugintest.MemHost
	now       time.Time
	cfg       Config
}

func newTwoKMS(t *testing.T, cfg Config) *twoKMS {
	t.Helper()
	x := &twoKMS{soft: newKMS(t, "kms-soft"), hsm: newKMS(t, "kms-hsm"), now: time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC)}
	x.host = plugintest.NewHost(plugintest.WithNow(func() time.Time { return x.now }), plugintest.WithKMS("soft", x.soft), plugintest.WithKMS("hsm", x.hsm))
	if cfg.RootAlgorithm == "" {
		cfg.Organization, cfg.RootAlgorithm, cfg.IssuingAlgorithm = "AVON Test", "ML-DSA-87", "ML-DSA-65"
		cfg.RootLifetime, cfg.IntermediateLifetime, cfg.CRLLifetime = 10*365*24*time.Hour, 5*365*24*time.Hour, 24*time.Hour
	}
	x.cfg = cfg
	return x
}

// engine starts an engine on the shared storage and KMSs, as a restart does.
func (x *twoKMS) engine(t *testing.T) *Engine {
	t.Helper()
	e := New(x.cfg, x.soft, nil, x.host.Storage(), rand.Reader, func(context.Context) (time.Time, error) { return x.now, nil }, x.host.Audit,
		WithNamedKMS(x.host.KMSNamed))
	if err := e.Init(bg); err != nil {
		t.Fatal(err)
	}
	return e
}

func issuerCerts(t *testing.T, e *Engine) (root *pqx509.Certificate, byName map[string]sdkca.Issuer, certs map[string]*pqx509.Certificate) {
	t.Helper()
	resp, err := e.ListIssuers(bg, &sdkca.ListIssuersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	byName, certs = map[string]sdkca.Issuer{}, map[string]*pqx509.Certificate{}
	for _, is := range resp.Issuers {
		c, err := pqx509.ParseCertificate(is.Certificate)
		if err != nil {
			t.Fatal(err)
		}
		byName[is.Name], certs[is.Name] = is, c
		if is.Name == "root" {
			root = c
		}
	}
	return root, byName, certs
}

func issueAgent(t *testing.T, e *Engine, id string) (*sdkca.IssueResponse, *pqx509.Certificate) {
	t.Helper()
	resp, err := e.Issue(bg, &sdkca.IssueRequest{CSR: agentCSR(t, newAgentKey(t), "avon://agent/"+id), Profile: "agent"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := pqx509.ParseCertificate(resp.Certificate)
	if err != nil {
		t.Fatal(err)
	}
	return resp, c
}

func TestRotateIssuerIntoHSM(t *testing.T) {
	x := newTwoKMS(t, Config{})
	e := x.engine(t)
	oldResp, oldLeaf := issueAgent(t, e, "before")
	root, _, before := issuerCerts(t, e)
	oldInter := before["issuing"]

	r, err := e.RotateIssuer(bg, &sdkca.RotateRequest{KMS: "hsm"})
	if err != nil {
		t.Fatal(err)
	}
	if r.Issuer != "issuing" || r.Generation != 2 || r.KMS != "hsm" || r.Algorithm != "ML-DSA-65" {
		t.Fatalf("rotate: %+v", r)
	}
	// The key is on the token, not in the keystore.
	if k, err := x.hsm.GetKey(bg, &kms.GetKeyRequest{ID: "ca-issuing-2"}); err != nil || k.Key.Algorithm != kms.MLDSA65 {
		t.Fatalf("hsm key: %v", err)
	}
	if _, err := x.soft.GetKey(bg, &kms.GetKeyRequest{ID: "ca-issuing-2"}); !errors.Is(err, kms.ErrKeyNotFound) {
		t.Fatalf("soft has the new key: %v", err)
	}
	root2, byName, certs := issuerCerts(t, e)
	if string(root2.Raw) != string(root.Raw) {
		t.Fatal("the root changed")
	}
	if a, o := byName["issuing"], byName["issuing.1"]; !a.Active || a.Generation != 2 || a.KMS != "hsm" || !a.Default ||
		o.Active || o.Generation != 1 || o.KMS != "" || string(o.Certificate) != string(oldInter.Raw) {
		t.Fatalf("issuers after rotation: %+v", byName)
	}
	newInter := certs["issuing"]
	if err := newInter.CheckSignatureFrom(root, pqx509.DefaultVerifier); err != nil {
		t.Fatalf("new intermediate not signed by the root: %v", err)
	}

	// New certificates chain to the new intermediate.
	resp, leaf := issueAgent(t, e, "after")
	if len(resp.Chain) != 1 || string(resp.Chain[0]) != string(newInter.Raw) {
		t.Fatal("chain is not the new intermediate")
	}
	if _, err := pqx509.Verify(leaf, pqx509.VerifyOptions{Roots: []*pqx509.Certificate{root}, Intermediates: []*pqx509.Certificate{newInter},
		CurrentTime: x.now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("new leaf: %v", err)
	}
	if _, err := e.Issue(bg, &sdkca.IssueRequest{CSR: agentCSR(t, newAgentKey(t), "avon://agent/x"), Profile: "agent", Issuer: "issuing.1"}); !errors.Is(err, sdkca.ErrUnknownIssuer) ||
		!strings.Contains(err.Error(), "retired") {
		t.Fatalf("issue from the retired generation: %v", err)
	}

	// The old generation still answers for what it issued.
	if _, err := e.Revoke(bg, &sdkca.RevokeRequest{Serial: oldResp.Serial, Reason: 4}); err != nil {
		t.Fatal(err)
	}
	checkRevokedIn(t, e, "issuing.1", oldInter, oldLeaf.SerialNumber)
	if crl, _ := e.CRL(bg, &sdkca.CRLRequest{}); crl != nil {
		c, err := pqx509.ParseCRL(crl.CRL)
		if err != nil || c.CheckSignatureFrom(newInter, pqx509.DefaultVerifier) != nil || len(c.Revoked) != 0 {
			t.Fatalf("the active issuer's CRL: %v", err)
		}
	}

	// A restart loads both generations, each signer against its KMS.
	e2 := x.engine(t)
	_, byName, _ = issuerCerts(t, e2)
	if len(byName) != 3 || !byName["issuing"].Active || byName["issuing"].Generation != 2 || byName["issuing.1"].Active {
		t.Fatalf("after restart: %+v", byName)
	}
	if resp, _ := issueAgent(t, e2, "restarted"); string(resp.Chain[0]) != string(newInter.Raw) {
		t.Fatal("issuance after a restart is not on the new generation")
	}
	checkRevokedIn(t, e2, "issuing.1", oldInter, oldLeaf.SerialNumber)

	var actions []string
	for _, ev := range x.host.Events() {
		if ev.Action == "ca.rotate" {
			actions = append(actions, ev.Target+" "+ev.Fields["kms"]+" "+ev.Fields["key"])
		}
	}
	if fmt.Sprint(actions) != "[issuer/issuing.2 hsm ca-issuing-2]" {
		t.Fatalf("audit: %v", actions)
	}

	// A second rotation back to the default KMS, at another algorithm.
	r, err = e2.RotateIssuer(bg, &sdkca.RotateRequest{Issuer: "issuing", Algorithm: "ML-DSA-87"})
	if err != nil || r.Generation != 3 || r.Algorithm != "ML-DSA-87" {
		t.Fatalf("second rotation: %+v %v", r, err)
	}
	if _, err := x.soft.GetKey(bg, &kms.GetKeyRequest{ID: "ca-issuing-3"}); err != nil {
		t.Fatal(err)
	}
}

func checkRevokedIn(t *testing.T, e *Engine, issuerName string, inter *pqx509.Certificate, serial *big.Int) {
	t.Helper()
	crlResp, err := e.CRL(bg, &sdkca.CRLRequest{Issuer: issuerName})
	if err != nil {
		t.Fatal(err)
	}
	crl, err := pqx509.ParseCRL(crlResp.CRL)
	if err != nil || crl.CheckSignatureFrom(inter, pqx509.DefaultVerifier) != nil || len(crl.Revoked) != 1 || crl.Revoked[0].SerialNumber.Cmp(serial) != 0 {
		t.Fatalf("CRL of %s: %v %+v", issuerName, err, crl)
	}
	req, err := pqx509.CreateOCSPRequest(inter, []*big.Int{serial}, crypto.SHA256, nil)
	if err != nil {
		t.Fatal(err)
	}
	out, err := e.RespondOCSP(bg, &sdkca.OCSPRequest{Request: req})
	if err != nil {
		t.Fatal(err)
	}
	r, err := pqx509.ParseOCSPResponse(out.Response)
	if err != nil || r.CheckSignatureFrom(inter, pqx509.DefaultVerifier) != nil || len(r.Responses) != 1 || r.Responses[0].Status != pqx509.OCSPRevoked {
		t.Fatalf("OCSP from %s: %v %+v", issuerName, err, r)
	}
}

func TestRotateRefusals(t *testing.T) {
	x := newTwoKMS(t, Config{})
	e := x.engine(t)
	for _, tc := range []struct {
		name string
		req  sdkca.RotateRequest
		is   error
		msg  string
	}{
		{"unknown kms", sdkca.RotateRequest{KMS: "nope"}, sdkca.ErrUnknownKMS, "wired: hsm, soft"},
		{"root", sdkca.RotateRequest{Issuer: "root"}, errdef.ErrNotImplemented, "rotating a root CA is not supported"},
		{"algorithm", sdkca.RotateRequest{Algorithm: "ECDSA-P384"}, sdkca.ErrPolicyViolation, "allowed: ML-DSA-44, ML-DSA-65, ML-DSA-87"},
		{"unknown issuer", sdkca.RotateRequest{Issuer: "nope"}, sdkca.ErrUnknownIssuer, ""},
		{"a generation", sdkca.RotateRequest{Issuer: "issuing.1"}, sdkca.ErrUnknownIssuer, "not a generation"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.RotateIssuer(bg, &tc.req)
			if !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v, want %v with %q", err, tc.is, tc.msg)
			}
		})
	}
	// Nothing changed.
	if _, byName, _ := issuerCerts(t, e); len(byName) != 2 {
		t.Fatalf("issuers: %v", byName)
	}
	// An audit log that fails leaves the rotation undone.
	x.host.SetAuditFailure(true)
	if _, err := e.RotateIssuer(bg, &sdkca.RotateRequest{KMS: "hsm"}); err == nil {
		t.Fatal("rotated without an audit record")
	}
	x.host.SetAuditFailure(false)
	if _, byName, _ := issuerCerts(t, x.engine(t)); len(byName) != 2 {
		t.Fatalf("an unaudited rotation was stored: %v", byName)
	}
}

func TestListCertificates(t *testing.T) {
	x := newTwoKMS(t, Config{})
	e := x.engine(t)
	var serials []string
	for i := range 7 {
		r, _ := issueAgent(t, e, fmt.Sprintf("a%d", i))
		serials = append(serials, r.Serial)
	}
	if _, err := e.RotateIssuer(bg, &sdkca.RotateRequest{KMS: "hsm"}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		r, _ := issueAgent(t, e, fmt.Sprintf("b%d", i))
		serials = append(serials, r.Serial)
	}
	for _, s := range serials[:2] {
		if _, err := e.Revoke(bg, &sdkca.RevokeRequest{Serial: s, Reason: 1}); err != nil {
			t.Fatal(err)
		}
	}
	all := func(t *testing.T, req sdkca.ListCertificatesRequest) []sdkca.CertificateInfo {
		t.Helper()
		limit := req.Limit
		if limit == 0 {
			limit = sdkca.DefaultListLimit
		}
		var out []sdkca.CertificateInfo
		for pages := 0; ; pages++ {
			if pages > 20 {
				t.Fatal("no end of pages")
			}
			r, err := e.ListCertificates(bg, &req)
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Certificates) > limit {
				t.Fatalf("page of %d, limit %d", len(r.Certificates), req.Limit)
			}
			out = append(out, r.Certificates...)
			if r.Next == "" {
				return out
			}
			req.After = r.Next
		}
	}
	got := all(t, sdkca.ListCertificatesRequest{Limit: 3})
	if len(got) != 10 {
		t.Fatalf("listed %d of 10", len(got))
	}
	for i := 1; i < len(got); i++ {
		if got[i-1].Serial >= got[i].Serial {
			t.Fatal("not in serial order")
		}
	}
	for _, tc := range []struct {
		name string
		req  sdkca.ListCertificatesRequest
		want int
	}{
		{"revoked", sdkca.ListCertificatesRequest{Status: sdkca.StatusRevoked, Limit: 1}, 2},
		{"good", sdkca.ListCertificatesRequest{Status: sdkca.StatusGood}, 8},
		{"agent", sdkca.ListCertificatesRequest{Profile: "agent", Limit: 4}, 10},
		{"server", sdkca.ListCertificatesRequest{Profile: "server"}, 0},
		{"generation 1", sdkca.ListCertificatesRequest{Issuer: "issuing.1", Limit: 2}, 7},
		{"generation 2", sdkca.ListCertificatesRequest{Issuer: "issuing.2"}, 3},
		{"the family", sdkca.ListCertificatesRequest{Issuer: "issuing"}, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if n := len(all(t, tc.req)); n != tc.want {
				t.Fatalf("%d, want %d", n, tc.want)
			}
		})
	}
	for _, bad := range []sdkca.ListCertificatesRequest{{Limit: 1001}, {Limit: -1}, {Status: "expired"}, {After: "xyz"}} {
		if _, err := e.ListCertificates(bg, &bad); !errors.Is(err, errdef.ErrInvalidArgument) {
			t.Fatalf("%+v: %v", bad, err)
		}
	}
	if _, err := e.ListCertificates(bg, &sdkca.ListCertificatesRequest{Issuer: "nope"}); !errors.Is(err, sdkca.ErrUnknownIssuer) {
		t.Fatal(err)
	}
	for _, c := range got {
		if c.Profile != "agent" || c.Subject != "laptop-7" || len(c.SANs) != 1 || (c.Issuer != "issuing.1" && c.Issuer != "issuing.2") || c.NotAfter.IsZero() {
			t.Fatalf("info %+v", c)
		}
	}
}

func TestManualInit(t *testing.T) {
	x := newTwoKMS(t, Config{})
	x.cfg.Manual = true
	e := x.engine(t)
	if e.Initialized() {
		t.Fatal("initialized at start")
	}
	_, err := e.Issue(bg, &sdkca.IssueRequest{CSR: agentCSR(t, newAgentKey(t), "avon://agent/x"), Profile: "agent"})
	if !errors.Is(err, sdkca.ErrNotInitialized) {
		t.Fatalf("issue before init: %v", err)
	}
	if _, err := e.CRL(bg, &sdkca.CRLRequest{}); !errors.Is(err, sdkca.ErrNotInitialized) {
		t.Fatalf("CRL before init: %v", err)
	}
	if _, err := e.RespondOCSP(bg, &sdkca.OCSPRequest{Request: []byte{1}}); !errors.Is(err, sdkca.ErrNotInitialized) {
		t.Fatalf("OCSP before init: %v", err)
	}
	if _, err := e.Initialize(bg, &sdkca.InitializeRequest{KMS: "nope"}); !errors.Is(err, sdkca.ErrUnknownKMS) {
		t.Fatalf("init on an unknown kms: %v", err)
	}
	r, err := e.Initialize(bg, &sdkca.InitializeRequest{KMS: "hsm"})
	if err != nil {
		t.Fatal(err)
	}
	root, err := pqx509.ParseCertificate(r.Root)
	if err != nil || len(r.RootSHA256) != 64 || !strings.Contains(r.RootSubject, "root CA") || len(r.Issuers) != 2 || root.Subject.String() != r.RootSubject {
		t.Fatalf("init: %+v %v", r, err)
	}
	if _, err := x.hsm.GetKey(bg, &kms.GetKeyRequest{ID: "ca-root-1"}); err != nil {
		t.Fatalf("root key not on the token: %v", err)
	}
	issueAgent(t, e, "after-init")
	if _, err := e.Initialize(bg, &sdkca.InitializeRequest{}); !errors.Is(err, sdkca.ErrAlreadyInitialized) {
		t.Fatalf("second init: %v", err)
	}
	// A restart (still manual) loads the hierarchy it made.
	e2 := x.engine(t)
	if !e2.Initialized() {
		t.Fatal("not initialized after a restart")
	}
	issueAgent(t, e2, "restarted")
	if _, err := e2.Initialize(bg, &sdkca.InitializeRequest{}); !errors.Is(err, sdkca.ErrAlreadyInitialized) {
		t.Fatalf("init after a restart: %v", err)
	}
}

// TestRotationSeenByOtherReplica: two engines share storage and KMSs, as two
// core replicas do. A rotation on one becomes visible to the other at its
// next ListIssuers (the core calls it on every replica when ca.rotated
// arrives), and the other then issues under the new generation.
func TestRotationSeenByOtherReplica(t *testing.T) {
	x := newTwoKMS(t, Config{})
	a := x.engine(t)
	b := x.engine(t)
	if _, err := a.RotateIssuer(bg, &sdkca.RotateRequest{KMS: "hsm"}); err != nil {
		t.Fatal(err)
	}
	_, byName, certs := issuerCerts(t, b)
	if is := byName["issuing"]; !is.Active || is.Generation != 2 || is.KMS != "hsm" {
		t.Fatalf("replica b after a's rotation: generation %d active %v kms %q", is.Generation, is.Active, is.KMS)
	}
	_, leaf := issueAgent(t, b, "on-b")
	if err := leaf.CheckSignatureFrom(certs["issuing"], pqx509.DefaultVerifier); err != nil {
		t.Fatalf("b issued under the old generation: %v", err)
	}
	if err := leaf.CheckSignatureFrom(certs["issuing.1"], pqx509.DefaultVerifier); err == nil {
		t.Fatal("b's certificate verifies under generation 1")
	}
}
