package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/avonzt/avon/internal/pqx509"
	sdkca "github.com/avonzt/avon/sdk/ca"
	"github.com/avonzt/avon/sdk/host"
)

// classicalSetup is a CA with the ML-DSA and the ECDSA hierarchies.
func classicalSetup(t *testing.T, backend string) *setup {
	t.Helper()
	return newSetup(t, Config{Organization: "AVON Test", RootAlgorithm: "ML-DSA-87", IssuingAlgorithm: "ML-DSA-65", Classical: true,
		RootLifetime: 10 * 365 * 24 * time.Hour, IntermediateLifetime: 5 * 365 * 24 * time.Hour, CRLLifetime: 24 * time.Hour,
		CRLURL: "https://ca.example/crl", PermittedDNSDomains: []string{"example.test"}}, backend)
}

func ecdsaServerCSR(t *testing.T, name string) []byte {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: name}, DNSNames: []string{name}}, k)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func parseAll(t *testing.T, ders ...[]byte) []*pqx509.Certificate {
	t.Helper()
	var out []*pqx509.Certificate
	for _, d := range ders {
		c, err := pqx509.ParseCertificate(d)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}

func TestCrossCertificates(t *testing.T) { eachBackend(t, testCrossCertificates) }

func testCrossCertificates(t *testing.T, backend string) {
	s := classicalSetup(t, backend)
	resp, err := s.eng.ListIssuers(bg, nil)
	if err != nil {
		t.Fatal(err)
	}
	by := map[string]sdkca.Issuer{}
	for _, is := range resp.Issuers {
		by[is.Name] = is
	}
	if len(by) != 4 {
		t.Fatalf("issuers %v", by)
	}
	pqRoot, clRoot := parseAll(t, by["root"].Certificate)[0], parseAll(t, by["classical-root"].Certificate)[0]
	for _, name := range []string{"root", "classical-root"} {
		if len(by[name].AlternateChains) != 0 {
			t.Fatalf("root %s has alternate chains", name)
		}
	}
	for name, otherRoot := range map[string]*pqx509.Certificate{"issuing": clRoot, "classical": pqRoot} {
		is := by[name]
		if len(is.Chain) != 1 || string(is.Chain[0]) != string(is.Certificate) {
			t.Fatalf("%s: chain %d", name, len(is.Chain))
		}
		if len(is.AlternateChains) != 1 || len(is.AlternateChains[0]) != 1 {
			t.Fatalf("%s: alternate chains %v", name, len(is.AlternateChains))
		}
		own, cross := parseAll(t, is.Certificate)[0], parseAll(t, is.AlternateChains[0][0])[0]
		if string(cross.RawSubject) != string(own.RawSubject) || !cross.PublicKey.Equal(own.PublicKey) ||
			string(cross.SubjectKeyId) != string(own.SubjectKeyId) {
			t.Fatalf("%s: the cross-certificate is not the issuer's subject and key", name)
		}
		if string(cross.RawIssuer) != string(otherRoot.RawSubject) || !cross.IsCA || !cross.MaxPathLenZero ||
			!cross.NotAfter.Equal(own.NotAfter) || strings.Join(cross.PermittedDNSDomains, ",") != "example.test" {
			t.Fatalf("%s: cross-certificate issuer %s cA %v notAfter %s constraints %v", name, cross.Issuer, cross.IsCA, cross.NotAfter,
				cross.PermittedDNSDomains)
		}
		if err := cross.CheckSignatureFrom(otherRoot, pqx509.DefaultVerifier); err != nil {
			t.Fatalf("%s: cross-certificate signature: %v", name, err)
		}
	}

	// A classical leaf: the default chain verifies with crypto/x509
	// under the ECDSA root, the alternate with pqx509 under the ML-DSA root.
	leafResp, err := s.eng.Issue(bg, &sdkca.IssueRequest{CSR: ecdsaServerCSR(t, "web.example.test"), Profile: "server"})
	if err != nil {
		t.Fatal(err)
	}
	if string(leafResp.Chain[0]) != string(by["classical"].Certificate) {
		t.Fatal("a classical key was not issued by the classical issuer")
	}
	std, err := x509.ParseCertificate(leafResp.Certificate)
	if err != nil {
		t.Fatal(err)
	}
	stdRoots, stdInters := x509.NewCertPool(), x509.NewCertPool()
	r, _ := x509.ParseCertificate(by["classical-root"].Certificate)
	stdRoots.AddCert(r)
	i, _ := x509.ParseCertificate(leafResp.Chain[0])
	stdInters.AddCert(i)
	if _, err := std.Verify(x509.VerifyOptions{Roots: stdRoots, Intermediates: stdInters, CurrentTime: s.now, DNSName: "web.example.test"}); err != nil {
		t.Fatalf("default chain, crypto/x509: %v", err)
	}
	leaf := parseAll(t, leafResp.Certificate)[0]
	chains, err := pqx509.Verify(leaf, pqx509.VerifyOptions{Roots: []*pqx509.Certificate{pqRoot},
		Intermediates: parseAll(t, by["classical"].AlternateChains[0]...), CurrentTime: s.now, DNSName: "web.example.test"})
	if err != nil || len(chains) != 1 || len(chains[0]) != 3 || !chains[0][2].Equal(pqRoot) {
		t.Fatalf("alternate chain, pqx509: %v", err)
	}
	// Without the cross-certificate the ML-DSA root does not reach it.
	if _, err := pqx509.Verify(leaf, pqx509.VerifyOptions{Roots: []*pqx509.Certificate{pqRoot},
		Intermediates: parseAll(t, by["classical"].Certificate), CurrentTime: s.now}); err == nil {
		t.Fatal("a classical leaf verified under the ML-DSA root without the cross-certificate")
	}

	// An ML-DSA leaf chains to the ECDSA root through its cross-certificate.
	mlResp, err := s.eng.Issue(bg, &sdkca.IssueRequest{CSR: agentCSR(t, newAgentKey(t), "avon://agent/x"), Profile: "agent"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pqx509.Verify(parseAll(t, mlResp.Certificate)[0], pqx509.VerifyOptions{Roots: []*pqx509.Certificate{clRoot},
		Intermediates: parseAll(t, by["issuing"].AlternateChains[0]...), CurrentTime: s.now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("ML-DSA leaf under the ECDSA root: %v", err)
	}

	// Made once: a restarted engine on the same storage loads them.
	crossEvents := func() int {
		n := 0
		for _, ev := range s.host.Events() {
			if ev.Action == "ca.cross_certify" {
				n++
			}
		}
		return n
	}
	if n := crossEvents(); n != 2 {
		t.Fatalf("%d ca.cross_certify events, want 2", n)
	}
	eng2 := New(s.eng.cfg, s.kms, nil, s.host.Storage(), rand.Reader, s.eng.now, s.host.Audit)
	if err := eng2.Init(bg); err != nil {
		t.Fatal(err)
	}
	r2, err := eng2.ListIssuers(bg, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, is := range r2.Issuers {
		if len(is.AlternateChains) > 0 && string(is.AlternateChains[0][0]) != string(by[is.Name].AlternateChains[0][0]) {
			t.Fatalf("%s: a restarted engine made another cross-certificate", is.Name)
		}
	}
	if n := crossEvents(); n != 2 {
		t.Fatalf("%d ca.cross_certify events after a restart, want 2", n)
	}
}

// TestCrossCertificateRotation: a new generation of the classical issuer
// gets its own cross-certificate; the retired one keeps its.
func TestCrossCertificateRotation(t *testing.T) {
	s := classicalSetup(t, "kms-soft")
	before, err := s.eng.ListIssuers(bg, nil)
	if err != nil {
		t.Fatal(err)
	}
	var oldCross []byte
	for _, is := range before.Issuers {
		if is.Name == "classical" {
			oldCross = is.AlternateChains[0][0]
		}
	}
	s.now = s.now.Add(time.Hour)
	if _, err := s.eng.RotateIssuer(bg, &sdkca.RotateRequest{Issuer: "classical"}); err != nil {
		t.Fatal(err)
	}
	after, err := s.eng.ListIssuers(bg, nil)
	if err != nil {
		t.Fatal(err)
	}
	var pqRoot *pqx509.Certificate
	for _, is := range after.Issuers {
		if is.Name == "root" {
			pqRoot = parseAll(t, is.Certificate)[0]
		}
	}
	seen := 0
	for _, is := range after.Issuers {
		switch is.Name {
		case "classical.1":
			if len(is.AlternateChains) != 1 || string(is.AlternateChains[0][0]) != string(oldCross) {
				t.Fatal("the retired generation lost its cross-certificate")
			}
			seen++
		case "classical":
			if is.Generation != 2 || len(is.AlternateChains) != 1 {
				t.Fatalf("generation %d with %d alternate chains", is.Generation, len(is.AlternateChains))
			}
			c := parseAll(t, is.AlternateChains[0][0])[0]
			if !c.PublicKey.Equal(parseAll(t, is.Certificate)[0].PublicKey) || c.CheckSignatureFrom(pqRoot, pqx509.DefaultVerifier) != nil {
				t.Fatal("the new generation's cross-certificate is not its key under the ML-DSA root")
			}
			seen++
		}
	}
	if seen != 2 {
		t.Fatalf("saw %d classical generations", seen)
	}
}

// TestNoCrossWithOneRoot: an ML-DSA-only CA makes none.
func TestNoCrossWithOneRoot(t *testing.T) {
	s := newSetup(t, Config{}, "kms-soft")
	resp, err := s.eng.ListIssuers(bg, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, is := range resp.Issuers {
		if len(is.AlternateChains) != 0 {
			t.Fatalf("%s has alternate chains with one root", is.Name)
		}
	}
	es, err := s.host.Storage().List(bg, host.ListOptions{Prefix: crossPrefix, Limit: 100})
	if err != nil || len(es) != 0 {
		t.Fatalf("cross records %d %v", len(es), err)
	}
}

// TestCrossWithoutTrustedTime: a CA whose cross-certificates are missing
// lists its issuers without them while there is no trusted time, and makes
// them at the first ListIssuers with it.
func TestCrossWithoutTrustedTime(t *testing.T) {
	s := classicalSetup(t, "kms-soft")
	var noTime atomic.Bool
	eng := New(s.eng.cfg, s.kms, nil, s.host.Storage(), rand.Reader, func(context.Context) (time.Time, error) {
		if noTime.Load() {
			return time.Time{}, errors.New("calibration stale")
		}
		return s.now, nil
	}, s.host.Audit)
	for _, k := range []string{crossKey("issuing", "classical-root"), crossKey("classical", "root")} {
		if err := s.host.Storage().Delete(bg, k, host.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	noTime.Store(true)
	if err := eng.Init(bg); err != nil {
		t.Fatalf("init without trusted time: %v", err)
	}
	resp, err := eng.ListIssuers(bg, nil)
	if err != nil || len(resp.Issuers) != 4 {
		t.Fatalf("list without trusted time: %v", err)
	}
	for _, is := range resp.Issuers {
		if len(is.AlternateChains) != 0 {
			t.Fatalf("%s has a cross-certificate made without trusted time", is.Name)
		}
	}
	noTime.Store(false)
	resp, err = eng.ListIssuers(bg, nil)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, is := range resp.Issuers {
		n += len(is.AlternateChains)
	}
	if n != 2 {
		t.Fatalf("%d alternate chains once time is trusted, want 2", n)
	}
}

// crossStorage records what an engine writes to the epoch key and counts
// its writes and lists of cross-certificate records; the real in-memory
// host storage is underneath.
type crossStorage struct {
	host.Storage
	mu          sync.Mutex
	epochWrites []string
	crossPuts   atomic.Int64
	crossLists  atomic.Int64
}

func (c *crossStorage) Put(ctx context.Context, key string, v []byte, o host.PutOptions) (int64, error) {
	switch {
	case key == epochKey:
		c.mu.Lock()
		c.epochWrites = append(c.epochWrites, string(v))
		c.mu.Unlock()
	case strings.HasPrefix(key, crossPrefix):
		c.crossPuts.Add(1)
	}
	return c.Storage.Put(ctx, key, v, o)
}

func (c *crossStorage) List(ctx context.Context, o host.ListOptions) ([]host.Entry, error) {
	if o.Prefix == crossPrefix {
		c.crossLists.Add(1)
	}
	return c.Storage.List(ctx, o)
}

func (c *crossStorage) epochs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.epochWrites)
}

// withoutCross is a classical hierarchy whose cross-certificates are
// missing (a CA made before they existed).
func withoutCross(t *testing.T) *twoKMS {
	t.Helper()
	x := newTwoKMS(t, classicalConfig())
	x.engine(t)
	for _, k := range []string{crossKey("issuing", "classical-root"), crossKey("classical", "root")} {
		if err := x.host.Storage().Delete(bg, k, host.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	return x
}

func crossEventCount(x *twoKMS) int {
	n := 0
	for _, ev := range x.host.Events() {
		if ev.Action == "ca.cross_certify" {
			n++
		}
	}
	return n
}

func alternateCount(is []sdkca.Issuer) int {
	n := 0
	for _, i := range is {
		n += len(i.AlternateChains)
	}
	return n
}

// TestEnsureCrossOneEpochWrite: making several cross-certificates moves the
// epoch once, after them, and attaches them without listing the records
// again; making none moves nothing.
func TestEnsureCrossOneEpochWrite(t *testing.T) {
	x := withoutCross(t)
	st := &crossStorage{Storage: x.host.Storage()}
	a := New(x.cfg, x.soft, nil, st, rand.Reader, func(context.Context) (time.Time, error) { return x.now, nil }, x.host.Audit,
		WithNamedKMS(x.host.KMSNamed))
	if err := a.Init(bg); err != nil {
		t.Fatal(err)
	}
	if n := st.crossPuts.Load(); n != 2 {
		t.Fatalf("%d cross-certificate writes, want 2", n)
	}
	ep := st.epochs()
	if len(ep) != 1 || !strings.Contains(ep[0], "issuing classical-root") || !strings.Contains(ep[0], "classical root") {
		t.Fatalf("epoch writes %q, want one naming both cross-certificates", ep)
	}
	// One list to attach them when the issuers are loaded, one by
	// ensureCross; what it made is attached without listing again.
	if n := st.crossLists.Load(); n != 2 {
		t.Fatalf("%d lists of cross-certificates, want 2", n)
	}
	resp, err := a.ListIssuers(bg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n := alternateCount(resp.Issuers); n != 2 {
		t.Fatalf("%d alternate chains, want 2", n)
	}
	assertListingMatchesFresh(t, x, a)

	// A restart with every cross-certificate stored: the same two lists,
	// no write.
	st2 := &crossStorage{Storage: x.host.Storage()}
	b := New(x.cfg, x.soft, nil, st2, rand.Reader, func(context.Context) (time.Time, error) { return x.now, nil }, x.host.Audit,
		WithNamedKMS(x.host.KMSNamed))
	if err := b.Init(bg); err != nil {
		t.Fatal(err)
	}
	if n, l, ep := st2.crossPuts.Load(), st2.crossLists.Load(), st2.epochs(); n != 0 || l != 2 || len(ep) != 0 {
		t.Fatalf("restart: %d cross writes, %d lists, epoch writes %q; want 0, 2, none", n, l, ep)
	}
	resp, err = b.ListIssuers(bg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n := alternateCount(resp.Issuers); n != 2 {
		t.Fatalf("restart: %d alternate chains, want 2", n)
	}
}

// TestConcurrentListIssuersCrossOnce: concurrent first ListIssuers on an
// engine whose cross-certificates are missing make each of them once, with
// one trusted-time read and one epoch write, and all answer with them.
func TestConcurrentListIssuersCrossOnce(t *testing.T) {
	x := withoutCross(t)
	st := &crossStorage{Storage: x.host.Storage()}
	var timeOK atomic.Bool
	var timeCalls atomic.Int64
	a := New(x.cfg, x.soft, nil, st, rand.Reader, func(context.Context) (time.Time, error) {
		if !timeOK.Load() {
			return time.Time{}, errors.New("calibration stale")
		}
		timeCalls.Add(1)
		return x.now, nil
	}, x.host.Audit, WithNamedKMS(x.host.KMSNamed))
	if err := a.Init(bg); err != nil {
		t.Fatal(err)
	}
	events := crossEventCount(x)
	timeOK.Store(true)
	const n = 8
	start := make(chan struct{})
	var wg sync.WaitGroup
	errs := make([]error, n)
	got := make([]int, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			resp, err := a.ListIssuers(bg, nil)
			if err == nil {
				got[i] = alternateCount(resp.Issuers)
			}
			errs[i] = err
		}()
	}
	close(start)
	wg.Wait()
	for i := range n {
		if errs[i] != nil || got[i] != 2 {
			t.Fatalf("call %d: %d alternate chains, %v; want 2", i, got[i], errs[i])
		}
	}
	if p := st.crossPuts.Load(); p != 2 {
		t.Fatalf("%d cross-certificate writes, want 2", p)
	}
	if d := crossEventCount(x) - events; d != 2 {
		t.Fatalf("%d ca.cross_certify events, want 2", d)
	}
	if c := timeCalls.Load(); c != 1 {
		t.Fatalf("%d trusted-time reads, want 1", c)
	}
	if ep := st.epochs(); len(ep) != 1 {
		t.Fatalf("epoch writes %q, want 1", ep)
	}
	assertListingMatchesFresh(t, x, a)
}
