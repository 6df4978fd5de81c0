package ca

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudflare/circl/sign/mldsa/mldsa65"

	"github.com/avonzt/avon/examples/pqc-slhdsa/slhdsa"
	"github.com/avonzt/avon/internal/pqx509"
	hsmengine "github.com/avonzt/avon/plugins/kms-hsm/engine"
	"github.com/avonzt/avon/plugins/kms-hsm/softhsmtest"
	"github.com/avonzt/avon/plugins/kms-hsm/token"
	"github.com/avonzt/avon/plugins/kms-soft/keystore"
	sdkca "github.com/avonzt/avon/sdk/ca"
	"github.com/avonzt/avon/sdk/kms"
	"github.com/avonzt/avon/sdk/plugin"
	"github.com/avonzt/avon/sdk/plugintest"
)

var bg = context.Background()

// setup is a CA on an in-process kms-soft keystore and an in-memory host.
type setup struct {
	eng  *Engine
	host *plugintest.MemHost
	kms  kms.KMS
	now  time.Time
}

func TestMain(m *testing.M) { softhsmtest.Main(m) }

// backends are the KMS plugins the CA suite runs on: every test runs on
// each, unchanged.
var backends = []string{"kms-soft", "kms-hsm"}

var tokenSeq atomic.Int32

// newKMS returns an in-process KMS engine of the given backend: the
// kms-soft keystore in a temp file, or kms-hsm on a fresh SoftHSM2 token.
func newKMS(t testing.TB, backend string) kms.KMS {
	t.Helper()
	switch backend {
	case "kms-soft":
		ks, err := keystore.Open(keystore.Options{Path: filepath.Join(t.TempDir(), "ks.avks"), Passphrase: []byte("correct horse battery"),
			Rand: rand.Reader, KDF: keystore.TestKDF, AllowWeakKDF: true})
		if err != nil {
			t.Fatal(err)
		}
		return ks
	case "kms-hsm":
		h := softhsmtest.Require(t)
		label := fmt.Sprintf("ca-%d", tokenSeq.Add(1))
		h.InitToken(t, label)
		tok, err := token.Open(bg, token.Options{Module: h.Module, TokenLabel: label, PIN: softhsmtest.PIN})
		if err != nil {
			t.Fatal(err)
		}
		eng, err := hsmengine.New(bg, hsmengine.Options{Token: tok, Storage: plugintest.NewHost().Storage(), Rand: rand.Reader})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = eng.Close() })
		return eng
	}
	t.Fatalf("unknown backend %s", backend)
	return nil
}

// eachBackend runs f as a subtest per KMS backend.
func eachBackend(t *testing.T, f func(t *testing.T, backend string)) {
	for _, b := range backends {
		t.Run(b, func(t *testing.T) { f(t, b) })
	}
}

func newSetup(t testing.TB, cfg Config, backend string) *setup {
	t.Helper()
	ks := newKMS(t, backend)
	s := &setup{kms: ks, now: time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC)}
	s.host = plugintest.NewHost(plugintest.WithNow(func() time.Time { return s.now }))
	if cfg.RootAlgorithm == "" {
		cfg = Config{Organization: "AVON Test", RootAlgorithm: "ML-DSA-87", IssuingAlgorithm: "ML-DSA-65",
			RootLifetime: 10 * 365 * 24 * time.Hour, IntermediateLifetime: 5 * 365 * 24 * time.Hour, CRLLifetime: 24 * time.Hour,
			CRLURL: "https://ca.example/crl", OCSPURL: "https://ca.example/ocsp"}
	}
	s.eng = New(cfg, ks, nil, s.host.Storage(), rand.Reader, func(context.Context) (time.Time, error) { return s.now, nil },
		s.host.Audit)
	if err := s.eng.Init(bg); err != nil {
		t.Fatal(err)
	}
	return s
}

type mldsaSigner struct {
	sk  *mldsa65.PrivateKey
	pub pqx509.PublicKey
}

func newAgentKey(t testing.TB) *mldsaSigner {
	pk, sk, err := mldsa65.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pk.MarshalBinary()
	return &mldsaSigner{sk: sk, pub: pqx509.PublicKey{Algorithm: "ML-DSA-65", Raw: b}}
}

func (s *mldsaSigner) Public() pqx509.PublicKey { return s.pub }
func (s *mldsaSigner) Sign(_ context.Context, msg []byte) ([]byte, error) {
	sig := make([]byte, mldsa65.SignatureSize)
	return sig, mldsa65.SignTo(s.sk, msg, nil, true, sig)
}

func agentCSR(t testing.TB, k pqx509.Signer, uris ...string) []byte {
	t.Helper()
	var us []*url.URL
	for _, u := range uris {
		pu, _ := url.Parse(u)
		us = append(us, pu)
	}
	der, err := pqx509.CreateCSR(bg, pqx509.CSRTemplate{Subject: pkix.Name{CommonName: "laptop-7"}, URIs: us}, k)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func (s *setup) roots(t testing.TB) (roots, inters []*pqx509.Certificate) {
	t.Helper()
	resp, err := s.eng.ListIssuers(bg, &sdkca.ListIssuersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, is := range resp.Issuers {
		c, err := pqx509.ParseCertificate(is.Certificate)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(is.Name, "root") {
			roots = append(roots, c)
		} else {
			inters = append(inters, c)
		}
	}
	return roots, inters
}

func TestHierarchyAndIssue(t *testing.T) { eachBackend(t, testHierarchyAndIssue) }

func testHierarchyAndIssue(t *testing.T, backend string) {
	s := newSetup(t, Config{}, backend)
	roots, inters := s.roots(t)
	if len(roots) != 1 || len(inters) != 1 || roots[0].PublicKey.Algorithm != "ML-DSA-87" || inters[0].PublicKey.Algorithm != "ML-DSA-65" {
		t.Fatalf("hierarchy: %d roots %d intermediates", len(roots), len(inters))
	}
	if !inters[0].IsCA || inters[0].MaxPathLen != 0 || !inters[0].MaxPathLenZero {
		t.Fatalf("intermediate constraints: cA %v pathLen %d", inters[0].IsCA, inters[0].MaxPathLen)
	}
	key := newAgentKey(t)
	resp, err := s.eng.Issue(bg, &sdkca.IssueRequest{CSR: agentCSR(t, key, "avon://agent/laptop-7"), Profile: "agent"})
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := pqx509.ParseCertificate(resp.Certificate)
	if err != nil {
		t.Fatal(err)
	}
	if !leaf.PublicKey.Equal(key.pub) || leaf.Subject.CommonName != "laptop-7" || len(leaf.URIs) != 1 ||
		leaf.URIs[0].String() != "avon://agent/laptop-7" || leaf.IsCA || leaf.SerialNumber.BitLen() < 120 {
		t.Fatalf("leaf %+v", leaf)
	}
	if got := leaf.NotAfter.Sub(leaf.NotBefore); got < 30*24*time.Hour || got > 30*24*time.Hour+2*time.Minute {
		t.Fatalf("agent lifetime %s", got)
	}
	if len(resp.Chain) != 1 {
		t.Fatalf("chain of %d", len(resp.Chain))
	}
	chains, err := pqx509.Verify(leaf, pqx509.VerifyOptions{Roots: roots, Intermediates: inters, CurrentTime: s.now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil || len(chains) != 1 || len(chains[0]) != 3 {
		t.Fatalf("verify: %v %d", err, len(chains))
	}
	got, err := s.eng.GetCertificate(bg, &sdkca.GetCertificateRequest{Serial: resp.Serial})
	if err != nil || got.Status != sdkca.StatusGood || string(got.Certificate) != string(resp.Certificate) {
		t.Fatalf("get: %v %v", got.Status, err)
	}
	var actions []string
	for _, ev := range s.host.Events() {
		actions = append(actions, ev.Action)
	}
	if a := strings.Join(actions, ","); a != "ca.init,ca.issue" {
		t.Fatalf("audit events %s", a)
	}
	// A second engine over the same storage loads the hierarchy, not a new one.
	eng2 := New(s.eng.cfg, s.kms, nil, s.host.Storage(), rand.Reader, s.eng.now, s.host.Audit)
	if err := eng2.Init(bg); err != nil {
		t.Fatal(err)
	}
	r2, _ := eng2.ListIssuers(bg, nil)
	r1, _ := s.eng.ListIssuers(bg, nil)
	if len(r2.Issuers) != 2 || string(r2.Issuers[0].Certificate) != string(r1.Issuers[0].Certificate) {
		t.Fatal("a restarted CA made a new hierarchy")
	}
}

func TestIssueRefusals(t *testing.T) { eachBackend(t, testIssueRefusals) }

func testIssueRefusals(t *testing.T, backend string) {
	s := newSetup(t, Config{}, backend)
	key := newAgentKey(t)
	good := agentCSR(t, key, "avon://agent/a1")
	badSig := append([]byte(nil), good...)
	badSig[len(badSig)-10] ^= 1
	cases := []struct {
		name string
		req  *sdkca.IssueRequest
		want error
		msg  string
	}{
		{"bad signature", &sdkca.IssueRequest{CSR: badSig, Profile: "agent"}, sdkca.ErrBadCSR, "signature"},
		{"garbage", &sdkca.IssueRequest{CSR: []byte{0x30, 0x03, 0x02, 0x01, 0x01}, Profile: "agent"}, sdkca.ErrBadCSR, ""},
		{"unknown profile", &sdkca.IssueRequest{CSR: good, Profile: "superuser"}, sdkca.ErrUnknownProfile, "agent, client, gateway, server"},
		{"extra SAN", &sdkca.IssueRequest{CSR: agentCSR(t, key, "avon://agent/a1", "avon://agent/a2"), Profile: "agent"}, sdkca.ErrPolicyViolation, "at most 1"},
		{"SAN outside the pattern", &sdkca.IssueRequest{CSR: agentCSR(t, key, "https://evil.example"), Profile: "agent"}, sdkca.ErrPolicyViolation, "does not match"},
		{"CSR asks beyond the request", &sdkca.IssueRequest{CSR: agentCSR(t, key, "avon://agent/a9"), URIs: []string{"avon://agent/a1"}, Profile: "agent"},
			sdkca.ErrPolicyViolation, "avon://agent/a9"},
		{"lifetime", &sdkca.IssueRequest{CSR: good, Profile: "agent", Lifetime: 365 * 24 * time.Hour}, sdkca.ErrPolicyViolation, "exceeds"},
		{"no key", &sdkca.IssueRequest{Profile: "agent"}, sdkca.ErrBadCSR, ""},
		{"wrong-length raw key", &sdkca.IssueRequest{PublicKey: make([]byte, 100), PublicKeyAlgorithm: "ML-DSA-65", Profile: "agent",
			URIs: []string{"avon://agent/a1"}}, sdkca.ErrBadCSR, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := s.eng.Issue(bg, c.req)
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("got %v, want %v containing %q", err, c.want, c.msg)
			}
		})
	}
	// Nothing was signed: no certificate records, no issue events.
	es, _ := s.host.Storage().List(bg, hostList(certPrefix))
	if len(es) != 0 {
		t.Fatalf("%d certificate records after refusals", len(es))
	}
}

func TestRevokeAndCRL(t *testing.T) { eachBackend(t, testRevokeAndCRL) }

func testRevokeAndCRL(t *testing.T, backend string) {
	s := newSetup(t, Config{}, backend)
	_, inters := s.roots(t)
	var serials []string
	for i := 0; i < 3; i++ {
		resp, err := s.eng.Issue(bg, &sdkca.IssueRequest{CSR: agentCSR(t, newAgentKey(t), fmt.Sprintf("avon://agent/a%d", i)), Profile: "agent"})
		if err != nil {
			t.Fatal(err)
		}
		serials = append(serials, resp.Serial)
	}
	if _, err := s.eng.Revoke(bg, &sdkca.RevokeRequest{Serial: serials[1], Reason: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.eng.Revoke(bg, &sdkca.RevokeRequest{Serial: serials[1], Reason: 1}); !errors.Is(err, sdkca.ErrAlreadyRevoked) {
		t.Fatalf("revoke twice: %v", err)
	}
	if _, err := s.eng.Revoke(bg, &sdkca.RevokeRequest{Serial: "00ff", Reason: 1}); !errors.Is(err, sdkca.ErrCertificateNotFound) {
		t.Fatalf("unknown serial: %v", err)
	}
	if _, err := s.eng.Revoke(bg, &sdkca.RevokeRequest{Serial: serials[0], Reason: 7}); !errors.Is(err, sdkca.ErrPolicyViolation) {
		t.Fatalf("reason 7: %v", err)
	}
	crlResp, err := s.eng.CRL(bg, &sdkca.CRLRequest{})
	if err != nil {
		t.Fatal(err)
	}
	crl, err := pqx509.ParseCRL(crlResp.CRL)
	if err != nil {
		t.Fatal(err)
	}
	if err := crl.CheckSignatureFrom(inters[0], pqx509.DefaultVerifier); err != nil {
		t.Fatalf("CRL signature: %v", err)
	}
	want, _ := new(big.Int).SetString(serials[1], 16)
	if len(crl.Revoked) != 1 || crl.Revoked[0].SerialNumber.Cmp(want) != 0 || crl.Revoked[0].ReasonCode != 1 {
		t.Fatalf("CRL entries %+v", crl.Revoked)
	}
	if !crl.NextUpdate.Equal(s.now.Add(24 * time.Hour)) {
		t.Fatalf("nextUpdate %s", crl.NextUpdate)
	}
	// A cached CRL is served until half its life; a new revocation remakes it with a higher number.
	again, _ := s.eng.CRL(bg, &sdkca.CRLRequest{})
	if string(again.CRL) != string(crlResp.CRL) {
		t.Fatal("CRL not cached")
	}
	if _, err := s.eng.Revoke(bg, &sdkca.RevokeRequest{Serial: serials[2], Reason: 4}); err != nil {
		t.Fatal(err)
	}
	third, _ := s.eng.CRL(bg, &sdkca.CRLRequest{})
	crl2, _ := pqx509.ParseCRL(third.CRL)
	if len(crl2.Revoked) != 2 || crl2.Number.Cmp(crl.Number) <= 0 {
		t.Fatalf("CRL after a second revocation: %d entries, number %s after %s", len(crl2.Revoked), crl2.Number, crl.Number)
	}
}

func TestConcurrentIssueUniqueSerials(t *testing.T) { eachBackend(t, testConcurrentIssueUniqueSerials) }

func testConcurrentIssueUniqueSerials(t *testing.T, backend string) {
	s := newSetup(t, Config{}, backend)
	key := newAgentKey(t)
	csr := agentCSR(t, key, "avon://agent/a1")
	var mu sync.Mutex
	seen := map[string]bool{}
	var wg sync.WaitGroup
	for i := 0; i < 24; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := s.eng.Issue(bg, &sdkca.IssueRequest{CSR: csr, Profile: "agent"})
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			if seen[resp.Serial] {
				t.Errorf("serial %s issued twice", resp.Serial)
			}
			seen[resp.Serial] = true
			mu.Unlock()
		}()
	}
	wg.Wait()
	if len(seen) != 24 {
		t.Fatalf("%d distinct serials", len(seen))
	}
}

func BenchmarkIssue(b *testing.B) {
	for _, backend := range backends {
		b.Run(backend, func(b *testing.B) { benchmarkIssue(b, backend) })
	}
}

func benchmarkIssue(b *testing.B, backend string) {
	s := newSetup(b, Config{}, backend)
	csr := agentCSR(b, newAgentKey(b), "avon://agent/bench")
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.eng.Issue(bg, &sdkca.IssueRequest{CSR: csr, Profile: "agent"}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "certs/s")
}

func TestOCSP(t *testing.T) { eachBackend(t, testOCSP) }

func testOCSP(t *testing.T, backend string) {
	s := newSetup(t, Config{}, backend)
	_, inters := s.roots(t)
	var serials []*big.Int
	for i := 0; i < 2; i++ {
		resp, err := s.eng.Issue(bg, &sdkca.IssueRequest{CSR: agentCSR(t, newAgentKey(t), fmt.Sprintf("avon://agent/o%d", i)), Profile: "agent"})
		if err != nil {
			t.Fatal(err)
		}
		n, _ := new(big.Int).SetString(resp.Serial, 16)
		serials = append(serials, n)
	}
	if _, err := s.eng.Revoke(bg, &sdkca.RevokeRequest{Serial: fmt.Sprintf("%x", serials[1]), Reason: 1}); err != nil {
		t.Fatal(err)
	}
	unknown := new(big.Int).Lsh(big.NewInt(1), 100)
	nonce := []byte("0123456789abcdef")
	reqDER, err := pqx509.CreateOCSPRequest(inters[0], []*big.Int{serials[0], serials[1], unknown}, crypto.SHA256, nonce)
	if err != nil {
		t.Fatal(err)
	}
	out, err := s.eng.RespondOCSP(bg, &sdkca.OCSPRequest{Request: reqDER})
	if err != nil {
		t.Fatal(err)
	}
	r, err := pqx509.ParseOCSPResponse(out.Response)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.CheckSignatureFrom(inters[0], pqx509.DefaultVerifier); err != nil {
		t.Fatalf("OCSP signature: %v", err)
	}
	if string(r.Nonce) != string(nonce) || len(r.Responses) != 3 {
		t.Fatalf("nonce %q, %d responses", r.Nonce, len(r.Responses))
	}
	want := []pqx509.OCSPCertStatus{pqx509.OCSPGood, pqx509.OCSPRevoked, pqx509.OCSPUnknown}
	for i, single := range r.Responses {
		if single.Status != want[i] {
			t.Errorf("response %d: status %v, want %v", i, single.Status, want[i])
		}
	}
	if r.Responses[1].RevocationReason != 1 || !r.Responses[1].RevokedAt.Equal(s.now) {
		t.Errorf("revoked entry %+v", r.Responses[1])
	}
	// Garbage gets a malformedRequest status, not an error.
	out, err = s.eng.RespondOCSP(bg, &sdkca.OCSPRequest{Request: []byte{0x30, 0x00}})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := pqx509.ParseOCSPResponse(out.Response); err != nil || r.Status != pqx509.OCSPMalformedRequest {
		t.Fatalf("malformed request: %+v %v", r, err)
	}
}

// TestSLHDSARoot: a root whose algorithm the KMS does not have, through a
// pqc plugin (the SLH-DSA example, in-process). Its private key exists only
// wrapped under a KMS AES key; the hierarchy and a leaf verify as usual.
func TestSLHDSARoot(t *testing.T) { eachBackend(t, testSLHDSARoot) }

func testSLHDSARoot(t *testing.T, backend string) {
	p := slhdsa.New()
	if err := p.Configure(bg, &plugin.ConfigureRequest{Config: []byte(`{"algorithms":["SLH-DSA-SHA2-128f"],"deterministic":false}`),
		Host: plugintest.NewHost()}); err != nil {
		t.Fatal(err)
	}
	k := newKMS(t, backend)
	h := plugintest.NewHost()
	now := time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC)
	cfg := Config{Organization: "AVON Test", RootAlgorithm: "SLH-DSA-SHA2-128f", IssuingAlgorithm: "ML-DSA-65",
		RootLifetime: 20 * 365 * 24 * time.Hour, IntermediateLifetime: 5 * 365 * 24 * time.Hour, CRLLifetime: 24 * time.Hour}
	eng := New(cfg, k, p, h.Storage(), rand.Reader, func(context.Context) (time.Time, error) { return now, nil }, h.Audit)
	if err := eng.Init(bg); err != nil {
		t.Fatal(err)
	}
	s := &setup{eng: eng, host: h, kms: k, now: now}
	roots, inters := s.roots(t)
	if roots[0].PublicKey.Algorithm != "SLH-DSA-SHA2-128f" {
		t.Fatalf("root algorithm %s", roots[0].PublicKey.Algorithm)
	}
	resp, err := eng.Issue(bg, &sdkca.IssueRequest{CSR: agentCSR(t, newAgentKey(t), "avon://agent/slh"), Profile: "agent"})
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := pqx509.ParseCertificate(resp.Certificate)
	if _, err := pqx509.Verify(leaf, pqx509.VerifyOptions{Roots: roots, Intermediates: inters, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("chain under an SLH-DSA root: %v", err)
	}
	// The root's private key is nowhere in the CA's storage in the clear:
	// only the KMS-wrapped form is kept.
	es, _ := h.Storage().List(bg, hostList(issuerPrefix))
	for _, e := range es {
		if strings.Contains(e.Key, "root") && !strings.Contains(string(e.Value), `"wrap_key":"ca-wrap"`) {
			t.Fatalf("root record without a wrapped key: %s", e.Value)
		}
	}
	// Without the pqc plugin the CA refuses to start rather than guess.
	eng2 := New(cfg, k, nil, h.Storage(), rand.Reader, eng.now, h.Audit)
	if err := eng2.Init(bg); err == nil || !strings.Contains(err.Error(), "needs the pqc plugin") {
		t.Fatalf("init without the pqc plugin: %v", err)
	}
}

func TestNormalizeSerial(t *testing.T) {
	for in, want := range map[string]string{
		"144d74c45dfb0e334c4c1cf762fbbfa":                 "0144d74c45dfb0e334c4c1cf762fbbfa",
		"0144D74C45DFB0E334C4C1CF762FBBFA":                "0144d74c45dfb0e334c4c1cf762fbbfa",
		"01:44:d7:4c:45:df:b0:e3:34:c4:c1:cf:76:2f:bb:fa": "0144d74c45dfb0e334c4c1cf762fbbfa",
		"ff": "000000000000000000000000000000ff",
	} {
		got, err := normalizeSerial(in)
		if err != nil || got != want {
			t.Errorf("%s: %q %v, want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "xyz", "0", "-1", strings.Repeat("f", 41)} {
		if _, err := normalizeSerial(bad); !errors.Is(err, sdkca.ErrCertificateNotFound) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

// TestIssueCheapRefusalNoTrustedTime: a request refused by the checks made
// before the CSR is read (profile, IP and URI names) asks no trusted time;
// a request that reaches the CSR asks it once.
func TestIssueCheapRefusalNoTrustedTime(t *testing.T) {
	s := newSetup(t, Config{}, "kms-soft")
	var calls atomic.Int64
	eng := New(s.eng.cfg, s.kms, nil, s.host.Storage(), rand.Reader, func(context.Context) (time.Time, error) {
		calls.Add(1)
		return s.now, nil
	}, s.host.Audit)
	if err := eng.Init(bg); err != nil {
		t.Fatal(err)
	}
	base := calls.Load() // Init may ask it (cross-certificates)
	good := agentCSR(t, newAgentKey(t), "avon://agent/a1")
	for _, c := range []struct {
		req  *sdkca.IssueRequest
		want error
	}{
		{&sdkca.IssueRequest{CSR: good, Profile: "superuser"}, sdkca.ErrUnknownProfile},
		{&sdkca.IssueRequest{CSR: good, Profile: "agent", IPAddresses: []string{"not-an-ip"}}, sdkca.ErrPolicyViolation},
		{&sdkca.IssueRequest{CSR: good, Profile: "agent", URIs: []string{"relative/path"}}, sdkca.ErrPolicyViolation},
	} {
		if _, err := eng.Issue(bg, c.req); !errors.Is(err, c.want) {
			t.Fatalf("%+v: got %v, want %v", c.req, err, c.want)
		}
	}
	if _, err := eng.Issue(bg, &sdkca.IssueRequest{CSR: good, Profile: "agent"}); err != nil {
		t.Fatal(err)
	}
	if d := calls.Load() - base; d != 1 {
		t.Fatalf("%d trusted-time reads for three cheap refusals and one issue, want 1", d)
	}
}
