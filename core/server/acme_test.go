package server

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-acme/lego/v4/certcrypto"
	"github.com/go-acme/lego/v4/certificate"
	"github.com/go-acme/lego/v4/challenge/dns01"
	"github.com/go-acme/lego/v4/challenge/http01"
	"github.com/go-acme/lego/v4/challenge/tlsalpn01"
	"github.com/go-acme/lego/v4/lego"
	"github.com/go-acme/lego/v4/providers/dns/rfc2136"
	"github.com/go-acme/lego/v4/registration"

	"github.com/avonzt/avon/plugins/acme/acmetest"
	sdkca "github.com/avonzt/avon/sdk/ca"
	"github.com/avonzt/avon/sdk/plugintest"
)

// legoUser is the account lego registers.
type legoUser struct {
	key crypto.PrivateKey
	reg *registration.Resource
}

func (u *legoUser) GetEmail() string                        { return "ops@avon.test" }
func (u *legoUser) GetRegistration() *registration.Resource { return u.reg }
func (u *legoUser) GetPrivateKey() crypto.PrivateKey        { return u.key }

// freePort returns a TCP port free on loopback for a client to bind later.
// It is drawn below the kernel's ephemeral range (32768 and up by
// default), where no other process's outgoing connection or ":0" listener
// can take it in the meantime, and checked free when drawn.
func freePort(t *testing.T) int {
	t.Helper()
	for range 200 {
		port := 20000 + mrand.IntN(12000)
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		_ = ln.Close()
		return port
	}
	t.Fatal("no free TCP port in 20000-31999 on loopback")
	return 0
}

// acmeConfig is a core with kms-soft, ca-dilithium (with its classical
// issuer) and the acme plugin validating against dnsAddr and httpPort.
func acmeConfig(t testing.TB, dnsAddr string, httpPort, alpnPort int) string {
	ca := plugintest.Build(t, "github.com/avonzt/avon/plugins/ca-dilithium")
	acme := plugintest.Build(t, "github.com/avonzt/avon/plugins/acme")
	return `
data_dir = "data"
api {
  listen = "127.0.0.1:0"
}
` + kmsSoftBlock(t) + fmt.Sprintf(`
plugin "ca" "dilithium" {
  command = %q
  sha256  = %q
  uses    = { kms = "soft" }
  config {
    classical_issuer = true
  }
}
plugin "acme" "acme" {
  command = %q
  sha256  = %q
  uses    = { ca = "dilithium" }
  config {
    resolver       = %q
    http01_port    = %d
    tlsalpn01_port = %d
  }
}
`, ca.Path, ca.SHA256, acme.Path, acme.SHA256, dnsAddr, httpPort, alpnPort)
}

// apiClient trusts the core's self-signed API certificate, fetched once
// (the way an operator pins it).
func apiClient(t testing.TB, addr string) *http.Client {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true}) // only to read the certificate to pin
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(conn.ConnectionState().PeerCertificates[0])
	_ = conn.Close()
	return &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

func newLego(t *testing.T, s *Server) *lego.Client {
	t.Helper()
	c, u := newLegoUnregistered(t, s)
	reg, err := c.Registration.Register(registration.RegisterOptions{TermsOfServiceAgreed: true})
	if err != nil {
		t.Fatalf("lego register: %v", err)
	}
	u.reg = reg
	return c
}

func newLegoUnregistered(t *testing.T, s *Server) (*lego.Client, *legoUser) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u := &legoUser{key: key}
	cfg := lego.NewConfig(u)
	cfg.CADirURL = "https://" + s.APIAddr() + "/acme/directory"
	cfg.HTTPClient = apiClient(t, s.APIAddr())
	cfg.Certificate.KeyType = certcrypto.EC256
	c, err := lego.NewClient(cfg)
	if err != nil {
		t.Fatalf("lego client: %v", err)
	}
	return c, u
}

// adminEAB makes an EAB key through the admin socket, as avon acme eab
// create does.
func adminEAB(t *testing.T, s *Server) (kid, hmacKey string) {
	t.Helper()
	sock := filepath.Join(s.Config().DataDir, AdminSocket)
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	resp, err := c.Post("http://avon-admin/v1/acme/eab", "application/json", strings.NewReader(`{"note":"lego test"}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		KID     string `json:"kid"`
		HMACKey string `json:"hmac_key"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK || out.KID == "" || out.HMACKey == "" {
		t.Fatalf("admin eab: %d %+v %v", resp.StatusCode, out, err)
	}
	return out.KID, out.HMACKey
}

// verifyChain checks lego's bundle against the CA's classical root.
func verifyChain(t *testing.T, s *Server, res *certificate.Resource, name string) *x509.Certificate {
	t.Helper()
	var certs []*x509.Certificate
	for rest := res.Certificate; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, c)
	}
	if len(certs) < 2 {
		t.Fatalf("bundle of %d certificates", len(certs))
	}
	inst, _ := s.Plugins().Get("ca", "dilithium")
	is, err := inst.CA().ListIssuers(context.Background(), &sdkca.ListIssuersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	roots, inters := x509.NewCertPool(), x509.NewCertPool()
	for _, i := range is.Issuers {
		if c, err := x509.ParseCertificate(i.Certificate); err == nil && c.CheckSignatureFrom(c) == nil {
			roots.AddCert(c)
		}
	}
	for _, c := range certs[1:] {
		inters.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, DNSName: name}); err != nil {
		t.Fatalf("lego's certificate does not verify against the CA's classical root: %v", err)
	}
	return certs[0]
}

// TestACMEClients: lego, a client no one here wrote, obtains certificates
// from the core over HTTPS with http-01 and tls-alpn-01 (lego's own
// challenge servers) and dns-01 (lego's RFC 2136 provider updating a DNS
// server on loopback that the acme plugin resolves through); every chain
// verifies; lego revokes one and registers with an EAB key made through the
// admin socket; certbot (Debian package) obtains one in standalone mode.
func TestACMEClients(t *testing.T) {
	dnsSrv := acmetest.StartDNS(t)
	httpPort, alpnPort := freePort(t), freePort(t)
	s, _ := startServer(t, writeConfig(t, t.TempDir(), acmeConfig(t, dnsSrv.Addr, httpPort, alpnPort)))

	t.Run("admin paths not served to the network", func(t *testing.T) {
		resp, err := apiClient(t, s.APIAddr()).Post("https://"+s.APIAddr()+"/acme/admin/eab", "application/json", strings.NewReader(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("POST /acme/admin/eab from the network: %d, want 404", resp.StatusCode)
		}
	})
	t.Run("http-01", func(t *testing.T) {
		c := newLego(t, s)
		if err := c.Challenge.SetHTTP01Provider(http01.NewProviderServer("127.0.0.1", strconv.Itoa(httpPort))); err != nil {
			t.Fatal(err)
		}
		before := pluginCalls(t, s)
		res, err := c.Certificate.Obtain(certificate.ObtainRequest{Domains: []string{"app.avon.test", "www.app.avon.test"}, Bundle: true})
		if err != nil {
			t.Fatalf("lego obtain (http-01): %v", err)
		}
		// The finalization went through the core to the CA's IssueOnce
		// (ca protocol minor 6), not Issue after a claim of the order.
		after := pluginCalls(t, s)
		if once, issue := after["ca.dilithium IssueOnce"].n-before["ca.dilithium IssueOnce"].n,
			after["ca.dilithium Issue"].n-before["ca.dilithium Issue"].n; once != 1 || issue != 0 {
			t.Fatalf("one finalization made %v IssueOnce and %v Issue calls to the CA; want 1 and 0", once, issue)
		}
		leaf := verifyChain(t, s, res, "www.app.avon.test")
		if _, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok {
			t.Fatalf("leaf key %T", leaf.PublicKey)
		}
		if err := c.Certificate.Revoke(res.Certificate); err != nil {
			t.Fatalf("lego revoke: %v", err)
		}
		inst, _ := s.Plugins().Get("ca", "dilithium")
		st, err := inst.CA().GetCertificate(context.Background(), &sdkca.GetCertificateRequest{Serial: leaf.SerialNumber.Text(16)})
		if err != nil || st.Status != sdkca.StatusRevoked {
			t.Fatalf("status after lego's revocation: %+v %v", st, err)
		}
	})
	t.Run("tls-alpn-01", func(t *testing.T) {
		c := newLego(t, s)
		if err := c.Challenge.SetTLSALPN01Provider(tlsalpn01.NewProviderServer("127.0.0.1", strconv.Itoa(alpnPort))); err != nil {
			t.Fatal(err)
		}
		res, err := c.Certificate.Obtain(certificate.ObtainRequest{Domains: []string{"alpn.avon.test"}, Bundle: true})
		if err != nil {
			t.Fatalf("lego obtain (tls-alpn-01): %v", err)
		}
		verifyChain(t, s, res, "alpn.avon.test")
	})
	t.Run("external account binding", func(t *testing.T) {
		kid, hmacKey := adminEAB(t, s)
		bad, _ := newLegoUnregistered(t, s)
		if _, err := bad.Registration.RegisterWithExternalAccountBinding(registration.RegisterEABOptions{TermsOfServiceAgreed: true,
			Kid: kid, HmacEncoded: base64.RawURLEncoding.EncodeToString([]byte("not the key the core made; 32 B+"))}); err == nil ||
			!strings.Contains(err.Error(), "unauthorized") {
			t.Fatalf("registration with a wrong EAB MAC key: %v", err)
		}
		c, u := newLegoUnregistered(t, s)
		reg, err := c.Registration.RegisterWithExternalAccountBinding(registration.RegisterEABOptions{TermsOfServiceAgreed: true, Kid: kid, HmacEncoded: hmacKey})
		if err != nil {
			t.Fatalf("lego register with EAB: %v", err)
		}
		u.reg = reg
		// The key binds that one account.
		again, _ := newLegoUnregistered(t, s)
		if _, err := again.Registration.RegisterWithExternalAccountBinding(registration.RegisterEABOptions{TermsOfServiceAgreed: true,
			Kid: kid, HmacEncoded: hmacKey}); err == nil {
			t.Fatal("an EAB key bound a second account")
		}
	})
	t.Run("certbot http-01", func(t *testing.T) {
		certbotObtain(t, s, httpPort, "certbot.avon.test")
	})
	t.Run("dns-01", func(t *testing.T) {
		c := newLego(t, s)
		cfg := rfc2136.NewDefaultConfig()
		cfg.Nameserver = dnsSrv.Addr
		cfg.PropagationTimeout, cfg.PollingInterval = 10*time.Second, 100*time.Millisecond
		cfg.SequenceInterval = 100 * time.Millisecond // both names share one TXT name; lego waits this between them
		p, err := rfc2136.NewDNSProviderConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Challenge.SetDNS01Provider(p, dns01.AddRecursiveNameservers([]string{dnsSrv.Addr}),
			dns01.DisableAuthoritativeNssPropagationRequirement()); err != nil {
			t.Fatal(err)
		}
		res, err := c.Certificate.Obtain(certificate.ObtainRequest{Domains: []string{"*.svc.avon.test", "svc.avon.test"}, Bundle: true})
		if err != nil {
			t.Fatalf("lego obtain (dns-01): %v", err)
		}
		verifyChain(t, s, res, "db.svc.avon.test")
	})
}

// certbotObtain runs certbot (the Debian package) in standalone mode: its
// own http-01 server on httpPort, an RSA account key (RS256), an ECDSA
// certificate key; the chain it saves must verify.
func certbotObtain(t *testing.T, s *Server, httpPort int, name string) {
	t.Helper()
	bin, err := exec.LookPath("certbot")
	if err != nil {
		t.Fatalf("certbot not installed (Debian package certbot): %v", err)
	}
	dir := t.TempDir()
	// certbot trusts the core's self-signed API certificate through
	// REQUESTS_CA_BUNDLE, as an operator would configure it.
	conn, err := tls.Dial("tcp", s.APIAddr(), &tls.Config{InsecureSkipVerify: true}) // only to read the certificate to pin
	if err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(dir, "api.pem")
	if err := os.WriteFile(bundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: conn.ConnectionState().PeerCertificates[0].Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "certonly", "--non-interactive", "--agree-tos", "--register-unsafely-without-email",
		"--server", "https://"+s.APIAddr()+"/acme/directory",
		"--standalone", "--preferred-challenges", "http", "--http-01-port", strconv.Itoa(httpPort), "--http-01-address", "127.0.0.1",
		"--key-type", "ecdsa", "--elliptic-curve", "secp256r1",
		"--config-dir", filepath.Join(dir, "config"), "--work-dir", filepath.Join(dir, "work"), "--logs-dir", filepath.Join(dir, "logs"),
		"-d", name)
	cmd.Env = append(os.Environ(), "REQUESTS_CA_BUNDLE="+bundle)
	out, err := cmd.CombinedOutput()
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "logs", "letsencrypt.log"))
		t.Fatalf("certbot: %v\n%s\n--- log ---\n%s", err, out, log)
	}
	chain, err := os.ReadFile(filepath.Join(dir, "config", "live", name, "fullchain.pem"))
	if err != nil {
		t.Fatalf("certbot saved no chain: %v\n%s", err, out)
	}
	verifyChain(t, s, &certificate.Resource{Certificate: chain}, name)
}
