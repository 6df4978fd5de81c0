package main_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/avonzt/avon/plugins/acme/acmeplugin"
	"github.com/avonzt/avon/plugins/acme/acmetest"
	"github.com/avonzt/avon/plugins/acme/jose"
	"github.com/avonzt/avon/sdk/acme"
	"github.com/avonzt/avon/sdk/acme/acmerpc"
	"github.com/avonzt/avon/sdk/ca/carpc"
	"github.com/avonzt/avon/sdk/plugin"
	"github.com/avonzt/avon/sdk/plugintest"
)

func TestMain(m *testing.M) { plugintest.Main(m) }

const pkg = "github.com/avonzt/avon/plugins/acme"

// TestThroughPlugin drives the acme binary as the core does: a process
// over gRPC, the CA plugins wired to it, nonces and state in the host.
func TestThroughPlugin(t *testing.T) {
	bin := plugintest.Build(t, pkg)
	caClient := acmetest.StartCA(t)
	dns := acmetest.StartDNS(t)
	h01 := acmetest.StartHTTP01(t)
	h := plugintest.NewHost()
	s := plugintest.Start(t, bin, plugin.KindACME, plugintest.Options{
		Host:   h,
		Config: acmetest.Config(t, acmeplugin.Schema, fmt.Sprintf("resolver = %q\nhttp01_port = %d\n", dns.Addr, h01.Port)),
		Uses:   map[plugin.Kind]func(*grpc.Server){plugin.KindCA: func(s *grpc.Server) { carpc.Register(s, caClient) }},
	})
	srv := acmerpc.NewClient(s.Conn.Conn)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	c := acmetest.NewClient(t, srv, key)
	c.Register()

	o := c.Post("/new-order", []byte(`{"identifiers":[{"type":"dns","value":"proc.avon.test"}]}`))
	if o.Status != http.StatusCreated {
		t.Fatalf("new-order: %d %s", o.Status, o.Body)
	}
	authz := c.Post(acmetest.Path(t, o.JSON["authorizations"].([]any)[0].(string)), nil)
	jwk, _ := jose.NewJWK(key.Public())
	for _, ch := range authz.JSON["challenges"].([]any) {
		m := ch.(map[string]any)
		if m["type"] != "http-01" {
			continue
		}
		h01.Set(m["token"].(string), m["token"].(string)+"."+jwk.Thumbprint())
		if r := c.Post(acmetest.Path(t, m["url"].(string)), []byte(`{}`)); r.JSON["status"] != "valid" {
			t.Fatalf("challenge: %s", r.Body)
		}
	}
	certKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{}, DNSNames: []string{"proc.avon.test"}}, certKey)
	fin := c.Post(acmetest.Path(t, o.JSON["finalize"].(string)), []byte(`{"csr":"`+jose.Encode(der)+`"}`))
	if fin.Status != http.StatusOK || fin.JSON["status"] != "valid" {
		t.Fatalf("finalize: %d %s", fin.Status, fin.Body)
	}
	cert := c.Post(acmetest.Path(t, fin.JSON["certificate"].(string)), nil)
	if cert.Status != http.StatusOK || strings.Count(string(cert.Body), "BEGIN CERTIFICATE") < 2 {
		t.Fatalf("certificate: %d %s", cert.Status, cert.Body)
	}
	// The plugin's state went through the host: the nonce is used up
	// there, and an audit event recorded the issuance.
	n := c.Nonce()
	path := acmetest.Path(t, c.KID)
	if r := c.Do(http.MethodPost, path, acmetest.JOSE, c.Sign(path, nil, &jose.SignHeader{Nonce: n})); r.Status != http.StatusOK {
		t.Fatalf("account: %d %s", r.Status, r.Body)
	}
	if r := c.Do(http.MethodPost, path, acmetest.JOSE, c.Sign(path, nil, &jose.SignHeader{Nonce: n})); r.ProblemType() != "badNonce" {
		t.Fatalf("replayed nonce through the plugin: %d %s", r.Status, r.Body)
	}
	found := false
	for _, ev := range h.Events() {
		found = found || ev.Action == "acme.order.finalize"
	}
	if !found {
		t.Fatalf("no acme.order.finalize audit event in %+v", h.Events())
	}

	// The periodic clean-up through the process: an order left pending
	// reads invalid once a tick past its expiry (order_ttl 24h) ran;
	// the finalized order stays valid.
	stale := c.Post("/new-order", []byte(`{"identifiers":[{"type":"dns","value":"stale.avon.test"}]}`))
	if stale.Status != http.StatusCreated {
		t.Fatalf("new-order: %d %s", stale.Status, stale.Body)
	}
	if _, err := srv.Tick(context.Background(), &acme.TickRequest{Now: time.Now().Add(25 * time.Hour)}); err != nil {
		t.Fatalf("tick through the plugin: %v", err)
	}
	e, err := h.Storage().Get(context.Background(), "order/"+path2id(stale.Header("Location")))
	if err != nil || !strings.Contains(string(e.Value), `"status":"invalid"`) {
		t.Fatalf("stale order after the tick: %s %v", e.Value, err)
	}
	if r := c.Post(acmetest.Path(t, o.Header("Location")), nil); r.JSON["status"] != "valid" {
		t.Fatalf("finalized order after the tick: %s", r.Body)
	}
}

func path2id(url string) string { return url[strings.LastIndexByte(url, '/')+1:] }

func TestConfigProblems(t *testing.T) {
	bin := plugintest.Build(t, pkg)
	s := plugintest.StartUnconfigured(t, bin, plugin.KindACME)
	// Without a CA wired.
	ps, err := s.Configure(t, plugintest.Options{Config: acmetest.Config(t, acmeplugin.Schema, "")})
	if err != nil || len(ps) != 1 || !strings.Contains(ps[0].Summary, "uses = { ca") {
		t.Fatalf("no CA: %+v %v", ps, err)
	}
	ps, err = s.Configure(t, plugintest.Options{Config: acmetest.Config(t, acmeplugin.Schema, `
nonce_ttl    = "soon"
resolver     = "no-port"
http01_port  = 0
require_terms = true
profiles     = { x = ":1h" }
`)})
	if err != nil {
		t.Fatal(err)
	}
	attrs := map[string]bool{}
	for _, p := range ps {
		attrs[p.Attribute] = true
	}
	for _, a := range []string{"nonce_ttl", "resolver", "http01_port", "require_terms", "profiles"} {
		if !attrs[a] {
			t.Errorf("no problem reported for %s (got %+v)", a, ps)
		}
	}
	// Unconfigured, it answers nothing.
	if _, err := acmerpc.NewClient(s.Conn.Conn).HandleHTTP(context.Background(), &acme.HTTPRequest{Method: "GET", Path: "/directory"}); err == nil {
		t.Fatal("an unconfigured plugin answered")
	}
}
