package server

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	pebbleca "github.com/letsencrypt/pebble/v2/ca"
	pebbledb "github.com/letsencrypt/pebble/v2/db"
	pebbleva "github.com/letsencrypt/pebble/v2/va"
	pebblewfe "github.com/letsencrypt/pebble/v2/wfe"

	"github.com/avonzt/avon/plugins/acme/acmetest"
	"github.com/avonzt/avon/plugins/acme/jose"
)

// loadClient is the benchmark's load generator: a minimal ACME client
// over HTTPS driven by the directory, the same code against both servers.
// It polls every 2 ms, so a server that answers "processing" costs its
// real delay and no more.
type loadClient struct {
	b     testing.TB
	http  *http.Client
	dir   map[string]any
	key   *ecdsa.PrivateKey
	kid   string
	nonce string
	// steps accumulates the wall-clock time of each kind of request
	// (newOrder, authz, challenge, order, finalize, cert), polls included.
	steps map[string]time.Duration
}

// fatalf fails the benchmark and ends the calling goroutine (the
// benchmark's or a concurrent worker's).
func (c *loadClient) fatalf(format string, args ...any) {
	c.b.Helper()
	c.b.Errorf(format, args...)
	runtime.Goexit()
}

// timed runs f and adds its duration to step.
func (c *loadClient) timed(step string, f func()) {
	t0 := time.Now()
	f()
	c.steps[step] += time.Since(t0)
}

func (c *loadClient) newNonce() string {
	resp, err := c.http.Head(c.dir["newNonce"].(string))
	if err != nil {
		c.fatalf("%v", err)
	}
	resp.Body.Close()
	return resp.Header.Get("Replay-Nonce")
}

// post sends a JWS (nil payload: POST-as-GET) and returns the answer,
// retrying once on badNonce (Pebble rejects some nonces on purpose unless
// told not to).
func (c *loadClient) post(url string, payload []byte) (*http.Response, map[string]any, []byte) {
	c.b.Helper()
	for attempt := 0; ; attempt++ {
		n := c.nonce
		if n == "" {
			n = c.newNonce()
		}
		c.nonce = ""
		body, err := jose.Sign(rand.Reader, c.key, jose.SignHeader{Nonce: n, URL: url, KID: c.kid}, payload)
		if err != nil {
			c.fatalf("%v", err)
		}
		resp, err := c.http.Post(url, "application/jose+json", bytes.NewReader(body))
		if err != nil {
			c.fatalf("%v", err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		c.nonce = resp.Header.Get("Replay-Nonce")
		var m map[string]any
		_ = json.Unmarshal(raw, &m)
		if t, _ := m["type"].(string); strings.HasSuffix(t, ":badNonce") && attempt < 3 {
			continue
		}
		if resp.StatusCode >= 400 {
			c.fatalf("POST %s: %d %s", url, resp.StatusCode, raw)
		}
		return resp, m, raw
	}
}

// pollStatus POST-as-GETs url until its status is one of want (10 s).
func (c *loadClient) pollStatus(url string, m map[string]any, want ...string) map[string]any {
	c.b.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, _ := m["status"].(string)
		for _, w := range want {
			if st == w {
				return m
			}
		}
		if st == "invalid" || time.Now().After(deadline) {
			c.fatalf("%s: status %q, want %v: %v", url, st, want, m)
		}
		time.Sleep(2 * time.Millisecond)
		_, m, _ = c.post(url, nil)
	}
}

func newLoadClient(b testing.TB, hc *http.Client, dirURL string) *loadClient {
	resp, err := hc.Get(dirURL)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	c := &loadClient{b: b, http: hc, steps: map[string]time.Duration{}}
	if err := json.NewDecoder(resp.Body).Decode(&c.dir); err != nil {
		b.Fatal(err)
	}
	c.key, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	r, _, raw := c.post(c.dir["newAccount"].(string), []byte(`{"termsOfServiceAgreed":true}`))
	if c.kid = r.Header.Get("Location"); c.kid == "" {
		b.Fatalf("new account: %s", raw)
	}
	return c
}

// order runs one complete order for name: new order, the http-01
// challenge of each authorization (served by h01 when not nil), finalize,
// download.
func (c *loadClient) order(name string, csrDER []byte, h01 *acmetest.HTTP01) {
	c.b.Helper()
	var orderURL string
	var o map[string]any
	c.timed("newOrder", func() {
		var r *http.Response
		var raw []byte
		r, o, raw = c.post(c.dir["newOrder"].(string), []byte(`{"identifiers":[{"type":"dns","value":"`+name+`"}]}`))
		if orderURL = r.Header.Get("Location"); orderURL == "" {
			c.fatalf("new order: %s", raw)
		}
	})
	thumb, _ := jose.NewJWK(c.key.Public())
	for _, au := range o["authorizations"].([]any) {
		var a map[string]any
		c.timed("authz", func() { _, a, _ = c.post(au.(string), nil) })
		for _, ch := range a["challenges"].([]any) {
			m := ch.(map[string]any)
			// Pebble reuses a valid authorization about one time in a
			// hundred even with PEBBLE_AUTHZREUSE=0: nothing to answer.
			if m["type"] != "http-01" || m["status"] == "valid" {
				continue
			}
			if h01 != nil {
				h01.Set(m["token"].(string), m["token"].(string)+"."+thumb.Thumbprint())
			}
			c.timed("challenge", func() {
				_, chm, _ := c.post(m["url"].(string), []byte(`{}`))
				c.pollStatus(m["url"].(string), chm, "valid")
			})
		}
	}
	c.timed("order", func() {
		_, o, _ = c.post(orderURL, nil)
		c.pollStatus(orderURL, o, "ready")
	})
	c.timed("finalize", func() {
		_, o, _ = c.post(o["finalize"].(string), []byte(`{"csr":"`+jose.Encode(csrDER)+`"}`))
		o = c.pollStatus(orderURL, o, "valid")
	})
	c.timed("cert", func() {
		if _, _, pemChain := c.post(o["certificate"].(string), nil); !bytes.Contains(pemChain, []byte("BEGIN CERTIFICATE")) {
			c.fatalf("download: %s", pemChain)
		}
	})
}

// reportSteps reports the mean milliseconds per order of each step.
func (c *loadClient) reportSteps(b *testing.B) {
	for step, d := range c.steps {
		b.ReportMetric(float64(d.Microseconds())/1000/float64(b.N), step+"-ms")
	}
}

// BenchmarkCompleteOrders compares complete orders per second (account
// reused; new order, challenge, finalize, download) from one load
// generator against AVON (the real core: embedded storage, the acme,
// ca-dilithium and kms-soft plugin processes, every state change
// persisted, the http-01 challenge really validated over loopback) and
// against Pebble in this process (memory only; PEBBLE_VA_ALWAYS_VALID,
// no VA sleep, no nonce rejection, no authorization reuse). Run:
//
//	go test -run '^$' -bench CompleteOrders -benchtime 200x ./core/server
func BenchmarkCompleteOrders(b *testing.B) {
	csrFor := benchCSR(b)
	b.Run("avon", func(b *testing.B) {
		dnsSrv := acmetest.StartDNS(b)
		h01 := acmetest.StartHTTP01(b)
		s := startBenchServer(b, writeConfig(b, b.TempDir(), acmeConfig(b, dnsSrv.Addr, h01.Port, 1)))
		hc := apiClient(b, s.APIAddr())
		c := newLoadClient(b, hc, "https://"+s.APIAddr()+"/acme/directory")
		csrDER := csrFor("bench.avon.test")
		before := pluginCalls(b, s)
		b.ResetTimer()
		for range b.N {
			c.order("bench.avon.test", csrDER, h01)
		}
		b.StopTimer()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "orders/s")
		c.reportSteps(b)
		after := pluginCalls(b, s)
		for m, a := range after {
			d := pluginCall{n: a.n - before[m].n, sec: a.sec - before[m].sec}
			if d.n > 0 {
				b.Logf("%-40s %6.1f calls/order %8.3f ms/call", m, d.n/float64(b.N), 1000*d.sec/d.n)
			}
		}
	})
	b.Run("pebble", func(b *testing.B) {
		srv := startPebble(b)
		c := newLoadClient(b, srv.Client(), srv.URL+pebblewfe.DirectoryPath)
		csrDER := csrFor("bench.pebble.test")
		b.ResetTimer()
		for range b.N {
			c.order("bench.pebble.test", csrDER, nil)
		}
		b.StopTimer()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "orders/s")
		c.reportSteps(b)
	})
}

// BenchmarkCompleteOrdersConcurrent is BenchmarkCompleteOrders with the
// load generator running concurrentClients clients at once (one account
// each, each ordering one certificate after another): the servers'
// capacity rather than one client's latency. Same servers and settings,
// AVON then Pebble in one run:
//
//	go test -run '^$' -bench CompleteOrdersConcurrent -benchtime 200x ./core/server
func BenchmarkCompleteOrdersConcurrent(b *testing.B) {
	csrFor := benchCSR(b)
	run := func(b *testing.B, newClient func() *loadClient, name string, h01 *acmetest.HTTP01) {
		csrDER := csrFor(name)
		clients := make([]*loadClient, concurrentClients)
		for i := range clients {
			clients[i] = newClient()
		}
		var next atomic.Int64
		var wg sync.WaitGroup
		b.ResetTimer()
		for _, c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for next.Add(1) <= int64(b.N) {
					c.order(name, csrDER, h01)
				}
			}()
		}
		wg.Wait()
		b.StopTimer()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "orders/s")
		var total time.Duration
		for _, c := range clients {
			for _, d := range c.steps {
				total += d
			}
		}
		b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "latency-ms")
	}
	b.Run("avon", func(b *testing.B) {
		dnsSrv := acmetest.StartDNS(b)
		h01 := acmetest.StartHTTP01(b)
		s := startBenchServer(b, writeConfig(b, b.TempDir(), acmeConfig(b, dnsSrv.Addr, h01.Port, 1)))
		hc := apiClient(b, s.APIAddr())
		run(b, func() *loadClient { return newLoadClient(b, hc, "https://"+s.APIAddr()+"/acme/directory") }, "bench.avon.test", h01)
	})
	b.Run("pebble", func(b *testing.B) {
		srv := startPebble(b)
		run(b, func() *loadClient { return newLoadClient(b, srv.Client(), srv.URL+pebblewfe.DirectoryPath) }, "bench.pebble.test", nil)
	})
}

// concurrentClients is how many clients BenchmarkCompleteOrdersConcurrent
// runs at once.
const concurrentClients = 8

// startPebble starts Pebble in this process, memory only: validation
// always valid without its sleep, no nonce rejection, no authorization
// reuse.
func startPebble(b *testing.B) *httptest.Server {
	b.Setenv("PEBBLE_VA_ALWAYS_VALID", "1")
	b.Setenv("PEBBLE_VA_NOSLEEP", "1")
	b.Setenv("PEBBLE_WFE_NONCEREJECT", "0")
	b.Setenv("PEBBLE_AUTHZREUSE", "0")
	logger := log.New(io.Discard, "", 0)
	db := pebbledb.NewMemoryStore()
	ca := pebbleca.New(logger, db, "", "ecdsa", 0, 1, map[string]pebbleca.Profile{"default": {Description: "default"}})
	va := pebbleva.New(logger, 80, 443, false, "", db)
	w := pebblewfe.New(logger, db, va, ca, []string{"pebble.letsencrypt.org"}, false, false, 0, 0)
	srv := httptest.NewUnstartedServer(w.Handler())
	srv.Config.ErrorLog = logger // a client's connection closed mid-handshake at the end is not news
	srv.StartTLS()
	b.Cleanup(srv.Close)
	return srv
}

// benchCSR returns a maker of CSRs for one name, all under one P-256 key.
func benchCSR(b *testing.B) func(name string) []byte {
	certKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	return func(name string) []byte {
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: []string{name}}, certKey)
		if err != nil {
			b.Fatal(err)
		}
		return der
	}
}

// startBenchServer starts a core that logs warnings only.
func startBenchServer(b testing.TB, cfgPath string) *Server {
	b.Helper()
	var diags bytes.Buffer
	s, err := Start(context.Background(), Options{ConfigPath: cfgPath, Diagnostics: &diags,
		Logger: hclog.New(&hclog.LoggerOptions{Output: io.Discard, Level: hclog.Warn})})
	if err != nil {
		b.Fatalf("start: %v\n%s", err, diags.String())
	}
	b.Cleanup(func() { _ = s.Stop(context.Background()) })
	return s
}

// pluginCall is a count of plugin calls and their summed latency.
type pluginCall struct{ n, sec float64 }

// pluginCalls reads the core's plugin call latency histograms: calls
// and seconds by "kind.name method".
func pluginCalls(b testing.TB, s *Server) map[string]pluginCall {
	b.Helper()
	mfs, err := s.registry.Gather()
	if err != nil {
		b.Fatal(err)
	}
	out := map[string]pluginCall{}
	for _, mf := range mfs {
		if mf.GetName() != "avon_plugin_call_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			h := m.GetHistogram()
			out[l["kind"]+"."+l["name"]+" "+l["method"]] = pluginCall{n: float64(h.GetSampleCount()), sec: h.GetSampleSum()}
		}
	}
	return out
}
