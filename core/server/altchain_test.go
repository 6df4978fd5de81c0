package server

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-acme/lego/v4/certcrypto"
	"github.com/go-acme/lego/v4/certificate"
	"github.com/go-acme/lego/v4/challenge/http01"
	"github.com/go-acme/lego/v4/lego"
	"github.com/go-acme/lego/v4/registration"
	"github.com/hashicorp/go-hclog"

	"github.com/avonzt/avon/internal/pqx509"
	"github.com/avonzt/avon/plugins/acme/acmetest"
	sdkca "github.com/avonzt/avon/sdk/ca"
)

// TestACMEAlternateChainsAndSweep runs the core with ca-dilithium (both
// hierarchies) and the acme plugin: lego, asking for the chain under the
// ML-DSA root by its common name (PreferredChain), gets the alternate
// chain through the cross-certificate, which verifies with pqx509; without
// a preference it gets the classical chain, which verifies with
// crypto/x509. lego with an RSA-2048 certificate key gets a certificate
// from the ECDSA issuer that verifies. The core's periodic Tick makes a stale order invalid and
// reclaims it after the retention.
func TestACMEAlternateChainsAndSweep(t *testing.T) {
	dnsSrv := acmetest.StartDNS(t)
	httpPort, alpnPort := freePort(t), freePort(t)
	cfg := strings.Replace(acmeConfig(t, dnsSrv.Addr, httpPort, alpnPort), "    resolver ",
		"    order_ttl = \"20s\"\n    authz_ttl = \"20s\"\n    retention = \"1s\"\n    resolver ", 1)
	logs := &syncWriter{w: &bytes.Buffer{}}
	s, err := Start(context.Background(), Options{ConfigPath: writeConfig(t, t.TempDir(), cfg), Diagnostics: io.Discard,
		Logger: hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Debug}), ACMETickInterval: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Stop(context.Background()) })

	inst, _ := s.Plugins().Get("ca", "dilithium")
	is, err := inst.CA().ListIssuers(context.Background(), &sdkca.ListIssuersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var pqRoot *pqx509.Certificate
	for _, i := range is.Issuers {
		if i.Name == "root" {
			pqRoot, _ = pqx509.ParseCertificate(i.Certificate)
		}
	}
	if pqRoot == nil {
		t.Fatal("no ML-DSA root")
	}

	t.Run("lego PreferredChain", func(t *testing.T) {
		c := newLego(t, s)
		if err := c.Challenge.SetHTTP01Provider(http01.NewProviderServer("127.0.0.1", strconv.Itoa(httpPort))); err != nil {
			t.Fatal(err)
		}
		def, err := c.Certificate.Obtain(certificate.ObtainRequest{Domains: []string{"chain.avon.test"}, Bundle: true})
		if err != nil {
			t.Fatalf("lego obtain: %v", err)
		}
		verifyChain(t, s, def, "chain.avon.test")

		alt, err := c.Certificate.Obtain(certificate.ObtainRequest{Domains: []string{"chain.avon.test"}, Bundle: true,
			PreferredChain: pqRoot.Subject.CommonName})
		if err != nil {
			t.Fatalf("lego obtain with PreferredChain %q: %v", pqRoot.Subject.CommonName, err)
		}
		if !strings.HasSuffix(alt.CertURL, "/1") {
			t.Fatalf("lego took %s, not the alternate chain", alt.CertURL)
		}
		var chain []*pqx509.Certificate
		for rest := alt.Certificate; ; {
			var b *pem.Block
			if b, rest = pem.Decode(rest); b == nil {
				break
			}
			c, err := pqx509.ParseCertificate(b.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			chain = append(chain, c)
		}
		if len(chain) != 2 || chain[1].Issuer.CommonName != pqRoot.Subject.CommonName {
			t.Fatalf("alternate bundle of %d certificates", len(chain))
		}
		if _, err := pqx509.Verify(chain[0], pqx509.VerifyOptions{Roots: []*pqx509.Certificate{pqRoot}, Intermediates: chain[1:],
			CurrentTime: time.Now(), DNSName: "chain.avon.test"}); err != nil {
			t.Fatalf("the alternate chain does not verify under the ML-DSA root: %v", err)
		}
	})

	t.Run("lego RSA-2048", func(t *testing.T) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		u := &legoUser{key: key}
		cfg := lego.NewConfig(u)
		cfg.CADirURL = "https://" + s.APIAddr() + "/acme/directory"
		cfg.HTTPClient = apiClient(t, s.APIAddr())
		cfg.Certificate.KeyType = certcrypto.RSA2048
		c, err := lego.NewClient(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if u.reg, err = c.Registration.Register(registration.RegisterOptions{TermsOfServiceAgreed: true}); err != nil {
			t.Fatal(err)
		}
		if err := c.Challenge.SetHTTP01Provider(http01.NewProviderServer("127.0.0.1", strconv.Itoa(httpPort))); err != nil {
			t.Fatal(err)
		}
		res, err := c.Certificate.Obtain(certificate.ObtainRequest{Domains: []string{"rsa.avon.test"}, Bundle: true})
		if err != nil {
			t.Fatalf("lego obtain with an RSA-2048 key: %v", err)
		}
		leaf := verifyChain(t, s, res, "rsa.avon.test")
		if pk, ok := leaf.PublicKey.(*rsa.PublicKey); !ok || pk.N.BitLen() != 2048 {
			t.Fatalf("leaf key %T", leaf.PublicKey)
		}
	})

	t.Run("sweep", func(t *testing.T) {
		acmeInst, err := s.acmeInstance()
		if err != nil || acmeInst == nil {
			t.Fatalf("acme instance: %v", err)
		}
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		c := acmetest.NewClient(t, acmeInst.ACME(), key)
		c.Register()
		o := c.Post("/new-order", []byte(`{"identifiers":[{"type":"dns","value":"stale.avon.test"}]}`))
		if o.Status != http.StatusCreated {
			t.Fatalf("new-order: %d %s", o.Status, o.Body)
		}
		orderPath := acmetest.Path(t, o.Header("Location"))
		// Expiry after 20 s, invalid at the next tick, deleted 1 s later:
		// wait for the order to be gone, at most 90 s.
		deadline := time.Now().Add(90 * time.Second)
		for {
			r := c.Post(orderPath, nil)
			if r.Status == http.StatusNotFound {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("stale order still there: %d %s", r.Status, r.Body)
			}
			time.Sleep(500 * time.Millisecond)
		}
		recs, err := s.audit.List(context.Background(), 0, 1000)
		if err != nil {
			t.Fatal(err)
		}
		var invalidated, deleted bool
		for _, r := range recs {
			if r.Action == "acme.sweep" && r.Source == "acme.acme" {
				invalidated = invalidated || r.Fields["invalidated"] != "0"
				deleted = deleted || r.Fields["deleted"] != "0"
			}
		}
		if !invalidated || !deleted {
			t.Fatalf("acme.sweep audit records: invalidated %v deleted %v", invalidated, deleted)
		}
	})
}
