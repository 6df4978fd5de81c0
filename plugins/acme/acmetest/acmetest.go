// Package acmetest helps test the acme plugin: a small ACME client that
// signs what a test tells it to (including what no real client sends), a
// DNS server on loopback for challenge lookups, an http-01 responder, and
// the CA the plugin issues through (ca-dilithium and kms-soft run as real
// plugin processes).
//
// It is for tests only.
package acmetest

import (
	"context"
	"crypto"
	"crypto/rand"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/miekg/dns"
	"google.golang.org/grpc"

	"github.com/avonzt/avon/plugins/acme/jose"
	"github.com/avonzt/avon/plugins/ca-dilithium/caplugin"
	"github.com/avonzt/avon/plugins/kms-soft/softkms"
	"github.com/avonzt/avon/sdk/acme"
	"github.com/avonzt/avon/sdk/ca"
	"github.com/avonzt/avon/sdk/ca/carpc"
	"github.com/avonzt/avon/sdk/config"
	"github.com/avonzt/avon/sdk/kms/kmsrpc"
	"github.com/avonzt/avon/sdk/plugin"
	"github.com/avonzt/avon/sdk/plugintest"
)

// BaseURL is the mount point the tests pretend the core serves.
const BaseURL = "https://avon.test:8443/acme"

// Client is a minimal ACME client over an acme.Server.
type Client struct {
	t   testing.TB
	srv acme.Server
	Key crypto.Signer
	KID string // account URL once registered
}

// NewClient returns a client with key (an account key to be).
func NewClient(t testing.TB, srv acme.Server, key crypto.Signer) *Client {
	return &Client{t: t, srv: srv, Key: key}
}

// Response is an answer with its JSON body decoded when it has one.
type Response struct {
	*acme.HTTPResponse
	JSON map[string]any
}

// Header returns a response header.
func (r *Response) Header(name string) string {
	for k, v := range r.HTTPResponse.Header {
		if strings.EqualFold(k, name) && len(v) > 0 {
			return v[0]
		}
	}
	return ""
}

// ProblemType is the short type of a problem response ("" otherwise).
func (r *Response) ProblemType() string {
	t, _ := r.JSON["type"].(string)
	return strings.TrimPrefix(t, "urn:ietf:params:acme:error:")
}

// Do sends one raw request.
func (c *Client) Do(method, path string, header map[string][]string, body []byte) *Response {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := c.srv.HandleHTTP(ctx, &acme.HTTPRequest{Method: method, Path: path, Header: header, Body: body,
		RemoteAddr: "127.0.0.1:40000", BaseURL: BaseURL})
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	r := &Response{HTTPResponse: resp}
	if len(resp.Body) > 0 && resp.Body[0] == '{' {
		_ = json.Unmarshal(resp.Body, &r.JSON)
	}
	return r
}

// Nonce fetches a fresh nonce.
func (c *Client) Nonce() string {
	c.t.Helper()
	r := c.Do(http.MethodHead, "/new-nonce", nil, nil)
	n := r.Header("Replay-Nonce")
	if r.Status != http.StatusOK || n == "" {
		c.t.Fatalf("new-nonce: %d %q", r.Status, n)
	}
	return n
}

// JOSE is the content type of ACME POSTs.
var JOSE = map[string][]string{"Content-Type": {"application/jose+json"}}

// Sign makes the JWS a client would send to path: signed by Key, with kid
// when registered, a fresh nonce and the path's URL. h overrides any of
// these (h.Extra can remove or break header members).
func (c *Client) Sign(path string, payload []byte, h *jose.SignHeader) []byte {
	c.t.Helper()
	sh := jose.SignHeader{URL: BaseURL + path, KID: c.KID}
	if h != nil && h.Nonce != "" {
		sh.Nonce = h.Nonce
	} else {
		sh.Nonce = c.Nonce()
	}
	if h != nil {
		if h.URL != "" {
			sh.URL = h.URL
		}
		if h.KID != "" {
			sh.KID = h.KID
		}
		sh.Extra = h.Extra
	}
	b, err := jose.Sign(rand.Reader, c.Key, sh, payload)
	if err != nil {
		c.t.Fatal(err)
	}
	return b
}

// Post signs payload (nil: POST-as-GET) and posts it to path.
func (c *Client) Post(path string, payload []byte) *Response {
	c.t.Helper()
	return c.Do(http.MethodPost, path, JOSE, c.Sign(path, payload, nil))
}

// Path is the path of an absolute URL under BaseURL.
func Path(t testing.TB, url string) string {
	t.Helper()
	p, ok := strings.CutPrefix(url, BaseURL)
	if !ok {
		t.Fatalf("%q is not under %s", url, BaseURL)
	}
	return p
}

// Register creates the client's account and sets KID.
func (c *Client) Register() *Response {
	c.t.Helper()
	r := c.Post("/new-account", []byte(`{"termsOfServiceAgreed":true,"contact":["mailto:ops@avon.test"]}`))
	if r.Status != http.StatusCreated && r.Status != http.StatusOK {
		c.t.Fatalf("new-account: %d %s", r.Status, r.Body)
	}
	c.KID = r.Header("Location")
	return r
}

// DNS is an authoritative DNS server on loopback answering A records for
// every name (127.0.0.1) and the TXT records a test sets.
type DNS struct {
	Addr string

	mu  sync.Mutex // guards txt
	txt map[string][]string
}

// StartDNS serves DNS on a loopback UDP port until the test ends.
func StartDNS(t testing.TB) *DNS {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &DNS{Addr: pc.LocalAddr().String(), txt: map[string][]string{}}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(d.serve),
		MsgAcceptFunc: func(dns.Header) dns.MsgAcceptAction { return dns.MsgAccept }} // updates too
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go func() { _ = srv.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { _ = srv.Shutdown() })
	return d
}

// SetTXT sets (nil: removes) the TXT records of a name.
func (d *DNS) SetTXT(name string, values ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	name = dns.Fqdn(strings.ToLower(name))
	if len(values) == 0 {
		delete(d.txt, name)
		return
	}
	d.txt[name] = values
}

// Zone is the zone the test DNS server is authoritative for: it answers
// SOA queries for it, so clients that look for the zone (lego's rfc2136
// provider) find it.
const Zone = "avon.test."

func (d *DNS) serve(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	if req.Opcode == dns.OpcodeUpdate {
		// RFC 2136 dynamic updates of TXT records (no authentication:
		// loopback, tests only).
		d.mu.Lock()
		for _, rr := range req.Ns {
			t, ok := rr.(*dns.TXT)
			if !ok {
				continue
			}
			name := strings.ToLower(t.Hdr.Name)
			switch t.Hdr.Class {
			case dns.ClassINET:
				d.txt[name] = append(d.txt[name], strings.Join(t.Txt, ""))
			case dns.ClassNONE:
				var keep []string
				for _, v := range d.txt[name] {
					if v != strings.Join(t.Txt, "") {
						keep = append(keep, v)
					}
				}
				d.txt[name] = keep
			case dns.ClassANY:
				delete(d.txt, name)
			}
		}
		d.mu.Unlock()
		_ = w.WriteMsg(m)
		return
	}
	for _, q := range req.Question {
		name := strings.ToLower(q.Name)
		switch q.Qtype {
		case dns.TypeSOA:
			if name == Zone {
				m.Answer = append(m.Answer, &dns.SOA{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 0},
					Ns: "ns." + Zone, Mbox: "hostmaster." + Zone, Serial: 1, Refresh: 60, Retry: 60, Expire: 600, Minttl: 0})
			}
		case dns.TypeA:
			if !strings.HasPrefix(name, "_acme-challenge.") && !strings.HasPrefix(name, "nxdomain.") {
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 0}, A: net.IPv4(127, 0, 0, 1)})
			}
		case dns.TypeTXT:
			d.mu.Lock()
			for _, v := range d.txt[name] {
				m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 0}, Txt: []string{v}})
			}
			d.mu.Unlock()
		}
	}
	_ = w.WriteMsg(m)
}

// HTTP01 answers http-01 challenges on a loopback port.
type HTTP01 struct {
	Port int

	mu   sync.Mutex // guards keys
	keys map[string]string
}

// StartHTTP01 serves http-01 on a loopback port until the test ends.
func StartHTTP01(t testing.TB) *HTTP01 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &HTTP01{Port: ln.Addr().(*net.TCPAddr).Port, keys: map[string]string{}}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok := strings.TrimPrefix(r.URL.Path, "/.well-known/acme-challenge/")
		h.mu.Lock()
		ka, ok := h.keys[tok]
		h.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte(ka))
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return h
}

// Set serves keyAuth for token.
func (h *HTTP01) Set(token, keyAuth string) {
	h.mu.Lock()
	h.keys[token] = keyAuth
	h.mu.Unlock()
}

// StartCA runs kms-soft and ca-dilithium (with a classical issuer) as
// plugin processes and returns a CA client.
func StartCA(t testing.TB) ca.CA {
	t.Helper()
	kmsBin := plugintest.Build(t, "github.com/avonzt/avon/plugins/kms-soft")
	caBin := plugintest.Build(t, "github.com/avonzt/avon/plugins/ca-dilithium")
	k := plugintest.Start(t, kmsBin, plugin.KindKMS, plugintest.Options{
		Config: Config(t, softkms.Schema, `
passphrase     = "correct horse battery staple"
kdf_time       = 2
kdf_memory_kib = 19456
kdf_threads    = 1
`)})
	kmsClient := kmsrpc.NewClient(k.Conn.Conn)
	c := plugintest.Start(t, caBin, plugin.KindCA, plugintest.Options{
		Config: Config(t, caplugin.Schema, `classical_issuer = true`),
		Uses:   map[plugin.Kind]func(*grpc.Server){plugin.KindKMS: func(s *grpc.Server) { kmsrpc.Register(s, kmsClient) }},
	})
	return carpc.NewClient(c.Conn.Conn)
}

// Config decodes an HCL plugin body against a plugin's schema into the
// JSON the core would send it (defaults filled in).
func Config(t testing.TB, s config.Schema, body string) []byte {
	t.Helper()
	f, d := hclsyntax.ParseConfig([]byte(body), "config.hcl", hcl.InitialPos)
	if d.HasErrors() {
		t.Fatalf("config: %v", d)
	}
	js, d := config.Decode(f.Body, s, nil)
	if d.HasErrors() {
		t.Fatalf("config: %v", d)
	}
	return js
}
