package server_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/avonzt/avon/plugins/acme/acmetest"
	"github.com/avonzt/avon/plugins/acme/jose"
	"github.com/avonzt/avon/plugins/acme/server"
	"github.com/avonzt/avon/plugins/acme/validate"
	"github.com/avonzt/avon/sdk/acme"
	"github.com/avonzt/avon/sdk/ca"
	"github.com/avonzt/avon/sdk/host"
	"github.com/avonzt/avon/sdk/plugintest"
)

func TestMain(m *testing.M) { plugintest.Main(m) }

// handler serves a Server as an acme.Server.
type handler struct{ s *server.Server }

func (h handler) HandleHTTP(ctx context.Context, r *acme.HTTPRequest) (*acme.HTTPResponse, error) {
	return h.s.Handle(ctx, r)
}

// env is a server on an in-memory host, issuing through the real CA
// plugins, validating against a DNS server and an http-01 responder on
// loopback.
type env struct {
	t      testing.TB
	srv    *server.Server
	acme   acme.Server
	host   *plugintest.MemHost
	ca     ca.CA
	dns    *acmetest.DNS
	http01 *acmetest.HTTP01
	alpn   *alpnResponder
}

func newEnv(t testing.TB, ca ca.CA, mod func(*server.Config)) *env {
	t.Helper()
	return newEnvStorage(t, ca, mod, nil)
}

// newEnvStorage is newEnv with the server's storage wrapped by wrap (nil:
// the in-memory host's own).
func newEnvStorage(t testing.TB, ca ca.CA, mod func(*server.Config), wrap func(host.Storage) host.Storage) *env {
	t.Helper()
	e := &env{t: t, host: plugintest.NewHost(), ca: ca, dns: acmetest.StartDNS(t), http01: acmetest.StartHTTP01(t), alpn: startALPN(t)}
	cfg := server.Config{Wildcards: true, ValidationTimeout: 5 * time.Second}
	if mod != nil {
		mod(&cfg)
	}
	v := validate.New(validate.Config{Resolver: e.dns.Addr, HTTPPort: e.http01.Port, TLSALPNPort: e.alpn.port})
	st := e.host.Storage()
	if wrap != nil {
		st = wrap(st)
	}
	s, err := server.New(cfg, server.Deps{Storage: st, Cache: e.host.Cache(), CA: ca, Rand: rand.Reader,
		Clock: e.host.Now, Audit: e.host.Audit, Validator: v})
	if err != nil {
		t.Fatal(err)
	}
	e.srv, e.acme = s, handler{s}
	return e
}

func ecKey(t testing.TB) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// client returns a registered client with a fresh P-256 key.
func (e *env) client() *acmetest.Client {
	e.t.Helper()
	c := acmetest.NewClient(e.t, e.acme, ecKey(e.t))
	c.Register()
	return c
}

func want(t testing.TB, r *acmetest.Response, status int, problem string) {
	t.Helper()
	if r.Status != status || r.ProblemType() != problem {
		t.Fatalf("got %d %q (%s); want %d %q", r.Status, r.ProblemType(), r.Body, status, problem)
	}
}

func str(m map[string]any, k string) string { s, _ := m[k].(string); return s }

func strs(m map[string]any, k string) []string {
	var out []string
	l, _ := m[k].([]any)
	for _, v := range l {
		s, _ := v.(string)
		out = append(out, s)
	}
	return out
}

// newOrder orders names and returns the order's path and body.
func (e *env) newOrder(c *acmetest.Client, names ...string) (string, map[string]any) {
	e.t.Helper()
	var ids []string
	for _, n := range names {
		ids = append(ids, fmt.Sprintf(`{"type":"dns","value":%q}`, n))
	}
	r := c.Post("/new-order", []byte(`{"identifiers":[`+strings.Join(ids, ",")+`]}`))
	want(e.t, r, http.StatusCreated, "")
	return acmetest.Path(e.t, r.Header("Location")), r.JSON
}

// keyAuth is the key authorization of token for c's key.
func keyAuth(t testing.TB, c *acmetest.Client, token string) string {
	k, err := jose.NewJWK(c.Key.Public())
	if err != nil {
		t.Fatal(err)
	}
	return token + "." + k.Thumbprint()
}

// solve answers every authorization of an order with typ and checks each
// challenge comes back valid.
func (e *env) solve(c *acmetest.Client, order map[string]any, typ string) {
	e.t.Helper()
	for _, au := range strs(order, "authorizations") {
		a := c.Post(acmetest.Path(e.t, au), nil)
		want(e.t, a, http.StatusOK, "")
		ident, _ := a.JSON["identifier"].(map[string]any)
		domain := str(ident, "value")
		var chURL, token string
		for _, ch := range a.JSON["challenges"].([]any) {
			m := ch.(map[string]any)
			if str(m, "type") == typ {
				chURL, token = str(m, "url"), str(m, "token")
			}
		}
		if chURL == "" {
			e.t.Fatalf("no %s challenge in %s", typ, a.Body)
		}
		ka := keyAuth(e.t, c, token)
		switch typ {
		case server.ChallengeHTTP01:
			e.http01.Set(token, ka)
		case server.ChallengeDNS01:
			e.dns.SetTXT("_acme-challenge."+domain, server.DNS01Value(ka))
		case server.ChallengeTLSALPN01:
			e.alpn.set(e.t, domain, ka)
		}
		r := c.Post(acmetest.Path(e.t, chURL), []byte(`{}`))
		if r.Status != http.StatusOK || str(r.JSON, "status") != "valid" {
			e.t.Fatalf("challenge %s: %d %s", typ, r.Status, r.Body)
		}
	}
}

// csr makes a CSR for names with key.
func csr(t testing.TB, key crypto.Signer, cn string, names ...string) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}, DNSNames: names}, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func finalizePayload(der []byte) []byte { return []byte(`{"csr":"` + jose.Encode(der) + `"}`) }

// issue runs a whole order for names with a fresh P-256 certificate key
// and returns the order and the PEM chain.
func (e *env) issue(c *acmetest.Client, typ string, names ...string) (map[string]any, []byte) {
	e.t.Helper()
	path, o := e.newOrder(c, names...)
	e.solve(c, o, typ)
	r := c.Post(path, nil)
	if str(r.JSON, "status") != "ready" {
		e.t.Fatalf("order after the challenges: %s", r.Body)
	}
	r = c.Post(acmetest.Path(e.t, str(o, "finalize")), finalizePayload(csr(e.t, ecKey(e.t), "", names...)))
	if r.Status != http.StatusOK || str(r.JSON, "status") != "valid" {
		e.t.Fatalf("finalize: %d %s", r.Status, r.Body)
	}
	cert := c.Post(acmetest.Path(e.t, str(r.JSON, "certificate")), nil)
	if cert.Status != http.StatusOK || cert.Header("Content-Type") != "application/pem-certificate-chain" {
		e.t.Fatalf("download: %d %s", cert.Status, cert.Body)
	}
	return r.JSON, cert.Body
}

func parsePEM(t testing.TB, b []byte) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}

// classicalRoot is the CA's ECDSA root.
func classicalRoot(t testing.TB, c ca.CA) *x509.CertPool {
	t.Helper()
	is, err := c.ListIssuers(context.Background(), &ca.ListIssuersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	for _, i := range is.Issuers {
		if cert, err := x509.ParseCertificate(i.Certificate); err == nil && cert.IsCA && cert.CheckSignatureFrom(cert) == nil {
			pool.AddCert(cert)
		}
	}
	return pool
}

// alpnResponder answers tls-alpn-01 on a loopback port.
type alpnResponder struct {
	port  int
	certs chan map[string]*tls.Certificate
}

func startALPN(t testing.TB) *alpnResponder {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &alpnResponder{port: ln.Addr().(*net.TCPAddr).Port, certs: make(chan map[string]*tls.Certificate, 1)}
	a.certs <- map[string]*tls.Certificate{}
	cfg := &tls.Config{NextProtos: []string{"acme-tls/1"}, GetCertificate: func(hi *tls.ClientHelloInfo) (*tls.Certificate, error) {
		m := <-a.certs
		c := m[hi.ServerName]
		a.certs <- m
		if c == nil {
			return nil, fmt.Errorf("no certificate for %q", hi.ServerName)
		}
		return c, nil
	}}
	tl := tls.NewListener(ln, cfg)
	go func() {
		for {
			conn, err := tl.Accept()
			if err != nil {
				return
			}
			go func() {
				_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
				_ = conn.(*tls.Conn).Handshake()
				_ = conn.Close()
			}()
		}
	}()
	t.Cleanup(func() { _ = ln.Close() })
	return a
}

// set serves an RFC 8737 certificate for domain.
func (a *alpnResponder) set(t testing.TB, domain, keyAuth string) {
	t.Helper()
	k := ecKey(t)
	digest := sha256Sum([]byte(keyAuth))
	ext, _ := asn1Marshal(digest)
	tmpl := &x509.Certificate{SerialNumber: bigOne(), DNSNames: []string{domain}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtraExtensions: []pkix.Extension{{Id: []int{1, 3, 6, 1, 5, 5, 7, 1, 31}, Critical: true, Value: ext}}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	m := <-a.certs
	m[domain] = &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}
	a.certs <- m
}
