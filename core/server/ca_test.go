package server

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudflare/circl/sign/mldsa/mldsa65"
	"github.com/hashicorp/go-hclog"

	"github.com/avonzt/avon/core/events"
	"github.com/avonzt/avon/internal/pqx509"
	sdkca "github.com/avonzt/avon/sdk/ca"
	"github.com/avonzt/avon/sdk/plugintest"
)

type testKey struct {
	sk  *mldsa65.PrivateKey
	pub pqx509.PublicKey
}

func (k *testKey) Public() pqx509.PublicKey { return k.pub }
func (k *testKey) Sign(_ context.Context, msg []byte) ([]byte, error) {
	sig := make([]byte, mldsa65.SignatureSize)
	return sig, mldsa65.SignTo(k.sk, msg, nil, true, sig)
}

func caConfig(t testing.TB) string {
	ca := plugintest.Build(t, "github.com/avonzt/avon/plugins/ca-dilithium")
	return kmsSoftBlock(t) + fmt.Sprintf(`
plugin "ca" "dilithium" {
  command = %q
  sha256  = %q
  uses    = { kms = "soft" }
}
`, ca.Path, ca.SHA256)
}

// TestCAThroughPlugins runs the CA as the core does: ca-dilithium and
// kms-soft as plugin processes, the issuer keys in the keystore. A CSR is
// issued, the chain verifies, revocation reaches the CRL.
func TestCAThroughPlugins(t *testing.T) {
	s, _ := startServer(t, writeConfig(t, t.TempDir(), `
data_dir = "data"
api {
  listen = "127.0.0.1:0"
}
`+caConfig(t)))
	inst, ok := s.Plugins().Get("ca", "dilithium")
	if !ok {
		t.Fatal("no ca plugin")
	}
	ca := inst.CA()
	ctx := context.Background()
	pk, sk, _ := mldsa65.GenerateKey(rand.Reader)
	raw, _ := pk.MarshalBinary()
	key := &testKey{sk: sk, pub: pqx509.PublicKey{Algorithm: "ML-DSA-65", Raw: raw}}
	u, _ := url.Parse("avon://agent/laptop-1")
	csr, err := pqx509.CreateCSR(ctx, pqx509.CSRTemplate{Subject: pkix.Name{CommonName: "laptop-1"}, URIs: []*url.URL{u}}, key)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := ca.Issue(ctx, &sdkca.IssueRequest{CSR: csr, Profile: "agent"})
	if err != nil {
		t.Fatal(err)
	}
	issuers, err := ca.ListIssuers(ctx, &sdkca.ListIssuersRequest{})
	if err != nil || len(issuers.Issuers) != 2 {
		t.Fatalf("issuers: %+v %v", issuers, err)
	}
	var roots, inters []*pqx509.Certificate
	for _, is := range issuers.Issuers {
		c, err := pqx509.ParseCertificate(is.Certificate)
		if err != nil {
			t.Fatal(err)
		}
		if is.Name == "root" {
			roots = append(roots, c)
		} else {
			inters = append(inters, c)
		}
	}
	leaf, err := pqx509.ParseCertificate(resp.Certificate)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pqx509.Verify(leaf, pqx509.VerifyOptions{Roots: roots, Intermediates: inters, CurrentTime: time.Now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("chain: %v", err)
	}
	sub, err := s.Events().Subscribe(ctx, events.CertRevoked)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if _, err := ca.Revoke(ctx, &sdkca.RevokeRequest{Serial: resp.Serial, Reason: 1}); err != nil {
		t.Fatal(err)
	}
	// Every replica's gateway and pulse hear of it on the events bus.
	select {
	case ev := <-sub.C():
		if ev.Subject != "issuing/"+resp.Serial || ev.Fields["reason"] != "1" || ev.Fields["ca"] != "ca.dilithium" {
			t.Fatalf("revocation event %+v", ev)
		}
	case <-time.After(time.Second):
		t.Fatal("no revocation event within a second")
	}
	crlResp, err := ca.CRL(ctx, &sdkca.CRLRequest{})
	if err != nil {
		t.Fatal(err)
	}
	crl, err := pqx509.ParseCRL(crlResp.CRL)
	if err != nil || crl.CheckSignatureFrom(inters[0], pqx509.DefaultVerifier) != nil || len(crl.Revoked) != 1 {
		t.Fatalf("CRL: %v", err)
	}
	// The CRL is served over HTTPS for relying parties.
	httpResp, err := httpsClient().Get("https://" + s.APIAddr() + "/pki/dilithium/crl")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(httpResp.Body)
	httpResp.Body.Close()
	served, err := pqx509.ParseCRL(body)
	if httpResp.StatusCode != 200 || httpResp.Header.Get("Content-Type") != "application/pkix-crl" || err != nil ||
		served.CheckSignatureFrom(inters[0], pqx509.DefaultVerifier) != nil || len(served.Revoked) != 1 {
		t.Fatalf("GET /pki/dilithium/crl: %d %s %v", httpResp.StatusCode, httpResp.Header.Get("Content-Type"), err)
	}
	if r, err := httpsClient().Get("https://" + s.APIAddr() + "/pki/dilithium/crl/nope"); err != nil || r.StatusCode != 404 {
		t.Fatalf("unknown issuer: %v %v", r, err)
	}

	// OCSP over HTTP, POST and GET forms: the revoked certificate is revoked.
	serial, _ := new(big.Int).SetString(resp.Serial, 16)
	ocspReq, err := pqx509.CreateOCSPRequest(inters[0], []*big.Int{serial}, crypto.SHA256, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, get := range []bool{false, true} {
		var hr *http.Response
		if get {
			hr, err = httpsClient().Get("https://" + s.APIAddr() + "/pki/dilithium/ocsp/" + url.PathEscape(base64.StdEncoding.EncodeToString(ocspReq)))
		} else {
			hr, err = httpsClient().Post("https://"+s.APIAddr()+"/pki/dilithium/ocsp", "application/ocsp-request", bytes.NewReader(ocspReq))
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(hr.Body)
		hr.Body.Close()
		or, err := pqx509.ParseOCSPResponse(body)
		if hr.StatusCode != 200 || err != nil || or.CheckSignatureFrom(inters[0], pqx509.DefaultVerifier) != nil ||
			len(or.Responses) != 1 || or.Responses[0].Status != pqx509.OCSPRevoked {
			t.Fatalf("OCSP (GET %v): %d %v %+v", get, hr.StatusCode, err, or)
		}
	}

	// The issue and the revocation are in the core's audit log.
	recs, _ := s.audit.List(ctx, 0, 100)
	var seen []string
	for _, r := range recs {
		if r.Source == "ca.dilithium" {
			seen = append(seen, r.Action)
		}
	}
	if fmt.Sprint(seen) != "[ca.init ca.issue ca.issue ca.revoke]" { // the gateway certificate, the test's
		t.Fatalf("audit records from the CA: %v", seen)
	}
}

// BenchmarkIssueEndToEnd: certificates per second from a request to a
// stored, signed certificate, through the plugin processes (ca-dilithium,
// kms-soft) and the embedded store, as the core runs them.
func BenchmarkIssueEndToEnd(b *testing.B) {
	dir := b.TempDir()
	cfgPath := writeConfig(b, dir, `
data_dir = "data"
api {
  listen = "127.0.0.1:0"
}
`+caConfig(b))
	s, err := Start(context.Background(), Options{ConfigPath: cfgPath, Logger: hclog.NewNullLogger()})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Stop(context.Background())
	inst, _ := s.Plugins().Get("ca", "dilithium")
	ca := inst.CA()
	ctx := context.Background()
	pk, sk, _ := mldsa65.GenerateKey(rand.Reader)
	raw, _ := pk.MarshalBinary()
	u, _ := url.Parse("avon://agent/bench")
	csr, err := pqx509.CreateCSR(ctx, pqx509.CSRTemplate{URIs: []*url.URL{u}}, &testKey{sk: sk, pub: pqx509.PublicKey{Algorithm: "ML-DSA-65", Raw: raw}})
	if err != nil {
		b.Fatal(err)
	}
	var n atomic.Int64
	b.SetParallelism(8) // 16 requests in flight on 2 cores, as many agents enrolling would be
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := ca.Issue(ctx, &sdkca.IssueRequest{CSR: csr, Profile: "agent"}); err != nil {
				b.Error(err)
				return
			}
			n.Add(1)
		}
	})
	b.ReportMetric(float64(n.Load())/b.Elapsed().Seconds(), "certs/s")
}
