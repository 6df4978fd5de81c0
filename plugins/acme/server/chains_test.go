package server_test

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudflare/circl/sign/mldsa/mldsa65"

	"github.com/avonzt/avon/internal/pqx509"
	"github.com/avonzt/avon/plugins/acme/acmetest"
	"github.com/avonzt/avon/plugins/acme/server"
	"github.com/avonzt/avon/sdk/ca"
)

// pqxPEM parses a PEM chain with pqx509 (ML-DSA signatures included).
func pqxPEM(t testing.TB, b []byte) []*pqx509.Certificate {
	t.Helper()
	var out []*pqx509.Certificate
	for {
		var blk *pem.Block
		if blk, b = pem.Decode(b); blk == nil {
			break
		}
		c, err := pqx509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}

// caRoots returns the CA's two roots, parsed by pqx509.
func caRoots(t testing.TB, c ca.CA) (mldsa, ecdsa *pqx509.Certificate) {
	t.Helper()
	is, err := c.ListIssuers(context.Background(), &ca.ListIssuersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range is.Issuers {
		switch i.Name {
		case "root":
			mldsa, _ = pqx509.ParseCertificate(i.Certificate)
		case "classical-root":
			ecdsa, _ = pqx509.ParseCertificate(i.Certificate)
		}
	}
	if mldsa == nil || ecdsa == nil {
		t.Fatal("the CA lacks one of its roots")
	}
	return mldsa, ecdsa
}

// links returns the alternate links of a response.
func links(r *acmetest.Response) []string {
	var out []string
	for k, vs := range r.HTTPResponse.Header {
		if !strings.EqualFold(k, "Link") {
			continue
		}
		for _, v := range vs {
			if u, ok := strings.CutSuffix(v, `>;rel="alternate"`); ok {
				out = append(out, strings.TrimPrefix(u, "<"))
			}
		}
	}
	slices.Sort(out)
	return out
}

// pqVerify checks a served chain with pqx509 under root: the leaf first,
// every other certificate an intermediate.
func pqVerify(t testing.TB, chain []*pqx509.Certificate, root *pqx509.Certificate, name string) {
	t.Helper()
	got, err := pqx509.Verify(chain[0], pqx509.VerifyOptions{Roots: []*pqx509.Certificate{root}, Intermediates: chain[1:],
		CurrentTime: time.Now(), DNSName: name})
	if err != nil || len(got) != 1 || len(got[0]) != len(chain)+1 {
		t.Fatalf("pqx509 verify under %s: %v", root.Subject.CommonName, err)
	}
}

// TestAlternateChains: a certificate downloads with its default chain and
// links to the alternate chain through the cross-certificate the CA made;
// every chain verifies, classical ones with crypto/x509 too.
func TestAlternateChains(t *testing.T) {
	caClient := acmetest.StartCA(t)
	pqRoot, ecRoot := caRoots(t, caClient)
	e := newEnv(t, caClient, nil)

	t.Run("ECDSA", func(t *testing.T) {
		e.t = t
		c := e.client()
		order, body := e.issue(c, server.ChallengeHTTP01, "alt.svc.test")
		certURL := str(order, "certificate")
		path := acmetest.Path(t, certURL)
		def := c.Post(path, nil)
		if got := links(def); len(got) != 1 || got[0] != certURL+"/1" {
			t.Fatalf("default download links %v, want [%s/1]", got, certURL)
		}
		// Default: the classical chain, crypto/x509 under the ECDSA root.
		std := parsePEM(t, body)
		inter := x509.NewCertPool()
		for _, ic := range std[1:] {
			inter.AddCert(ic)
		}
		if _, err := std[0].Verify(x509.VerifyOptions{Roots: classicalRoot(t, e.ca), Intermediates: inter, DNSName: "alt.svc.test"}); err != nil {
			t.Fatalf("default chain, crypto/x509: %v", err)
		}
		pqVerify(t, pqxPEM(t, body), ecRoot, "alt.svc.test")

		// Alternate 1: the same leaf, the cross-certificate under the ML-DSA root.
		alt := c.Post(path+"/1", nil)
		if alt.Status != http.StatusOK || alt.Header("Content-Type") != "application/pem-certificate-chain" {
			t.Fatalf("alternate download: %d %s", alt.Status, alt.Body)
		}
		if got := links(alt); len(got) != 1 || got[0] != certURL {
			t.Fatalf("alternate download links %v, want [%s]", got, certURL)
		}
		ac := pqxPEM(t, alt.Body)
		if len(ac) != 2 || string(ac[0].Raw) != string(std[0].Raw) || string(ac[1].Raw) == string(std[1].Raw) {
			t.Fatalf("alternate chain of %d certificates", len(ac))
		}
		pqVerify(t, ac, pqRoot, "alt.svc.test")
		if err := ac[1].CheckSignatureFrom(pqRoot, pqx509.DefaultVerifier); err != nil || !strings.HasPrefix(ac[1].SignatureAlgorithm, "ML-DSA") {
			t.Fatalf("cross-certificate signed %s: %v", ac[1].SignatureAlgorithm, err)
		}
		// The default chain does not reach the ML-DSA root, nor the
		// alternate the ECDSA one: the chains differ for real.
		if _, err := pqx509.Verify(ac[0], pqx509.VerifyOptions{Roots: []*pqx509.Certificate{pqRoot}, Intermediates: pqxPEM(t, body)[1:],
			CurrentTime: time.Now()}); err == nil {
			t.Fatal("the default chain verified under the ML-DSA root")
		}
		if _, err := pqx509.Verify(ac[0], pqx509.VerifyOptions{Roots: []*pqx509.Certificate{ecRoot}, Intermediates: ac[1:],
			CurrentTime: time.Now()}); err == nil {
			t.Fatal("the alternate chain verified under the ECDSA root")
		}

		for _, bad := range []string{"/0", "/2", "/01", "/-1", "/+1", "/x", "/1000", "/99999999999999999999"} {
			want(t, c.Post(path+bad, nil), http.StatusNotFound, "malformed")
		}
		other := e.client()
		want(t, other.Post(path+"/1", nil), http.StatusForbidden, "unauthorized")
		want(t, c.Post(path+"/1", []byte(`{}`)), http.StatusBadRequest, "malformed")
		want(t, c.Do(http.MethodGet, path+"/1", nil, nil), http.StatusMethodNotAllowed, "malformed")
	})

	t.Run("MLDSA", func(t *testing.T) {
		e.t = t
		c := e.client()
		_, o := e.newOrder(c, "pqalt.svc.test")
		e.solve(c, o, server.ChallengeHTTP01)
		pk, sk, _ := mldsa65.GenerateKey(rand.Reader)
		raw, _ := pk.MarshalBinary()
		der, err := pqx509.CreateCSR(context.Background(), pqx509.CSRTemplate{DNSNames: []string{"pqalt.svc.test"}},
			&mldsaSigner{sk: sk, pub: pqx509.PublicKey{Algorithm: "ML-DSA-65", Raw: raw}})
		if err != nil {
			t.Fatal(err)
		}
		r := c.Post(acmetest.Path(t, str(o, "finalize")), finalizePayload(der))
		if r.Status != http.StatusOK {
			t.Fatalf("finalize: %d %s", r.Status, r.Body)
		}
		path := acmetest.Path(t, str(r.JSON, "certificate"))
		def := c.Post(path, nil)
		if len(links(def)) != 1 {
			t.Fatalf("ML-DSA certificate links %v", links(def))
		}
		pqVerify(t, pqxPEM(t, def.Body), pqRoot, "pqalt.svc.test")
		alt := c.Post(path+"/1", nil)
		if alt.Status != http.StatusOK {
			t.Fatalf("alternate: %d %s", alt.Status, alt.Body)
		}
		pqVerify(t, pqxPEM(t, alt.Body), ecRoot, "pqalt.svc.test")
	})

	t.Run("NoAlternates", func(t *testing.T) {
		// A CA reporting no alternate chains: no links, and /1 is not found.
		ne := newEnv(t, noAlternates{caClient}, nil)
		c := ne.client()
		order, _ := ne.issue(c, server.ChallengeHTTP01, "plain.svc.test")
		path := acmetest.Path(t, str(order, "certificate"))
		if got := links(c.Post(path, nil)); len(got) != 0 {
			t.Fatalf("links %v without alternate chains", got)
		}
		want(t, c.Post(path+"/1", nil), http.StatusNotFound, "malformed")
	})

	t.Run("CAUnavailable", func(t *testing.T) {
		// The default chain is stored with the certificate: it is
		// served while the CA cannot say which alternates exist.
		fc := &failingIssuers{CA: caClient}
		fe := newEnv(t, fc, nil)
		c := fe.client()
		// Finalized but not downloaded: nothing of the CA's is cached.
		_, o := fe.newOrder(c, "down.svc.test")
		fe.solve(c, o, server.ChallengeHTTP01)
		r := c.Post(acmetest.Path(t, str(o, "finalize")), finalizePayload(csr(t, ecKey(t), "", "down.svc.test")))
		if r.Status != http.StatusOK {
			t.Fatalf("finalize: %d %s", r.Status, r.Body)
		}
		path := acmetest.Path(t, str(r.JSON, "certificate"))
		fc.fail.Store(true)
		def := c.Post(path, nil)
		if def.Status != http.StatusOK || len(links(def)) != 0 || len(parsePEM(t, def.Body)) != 2 {
			t.Fatalf("default download with the CA down: %d links %v", def.Status, links(def))
		}
		want(t, c.Post(path+"/1", nil), http.StatusInternalServerError, "serverInternal")
		fc.fail.Store(false)
		if got := links(c.Post(path, nil)); len(got) != 1 {
			t.Fatalf("links %v once the CA is back", got)
		}
	})
}

// noAlternates is the real CA with the alternate chains hidden.
type noAlternates struct{ ca.CA }

func (n noAlternates) ListIssuers(ctx context.Context, r *ca.ListIssuersRequest) (*ca.ListIssuersResponse, error) {
	resp, err := n.CA.ListIssuers(ctx, r)
	if err != nil {
		return nil, err
	}
	for i := range resp.Issuers {
		resp.Issuers[i].AlternateChains = nil
	}
	return resp, nil
}

// failingIssuers is the real CA whose ListIssuers fails while fail is set.
type failingIssuers struct {
	ca.CA
	fail atomic.Bool
}

func (f *failingIssuers) ListIssuers(ctx context.Context, r *ca.ListIssuersRequest) (*ca.ListIssuersResponse, error) {
	if f.fail.Load() {
		return nil, errors.New("ca plugin unavailable")
	}
	return f.CA.ListIssuers(ctx, r)
}
