package server_test

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudflare/circl/sign/mldsa/mldsa65"

	"github.com/avonzt/avon/internal/pqx509"
	"github.com/avonzt/avon/plugins/acme/acmetest"
	"github.com/avonzt/avon/plugins/acme/jose"
	"github.com/avonzt/avon/plugins/acme/server"
	"github.com/avonzt/avon/sdk/ca"
)

// TestServer runs the protocol against the real CA plugins; the subtests
// share the CA processes.
func TestServer(t *testing.T) {
	caClient := acmetest.StartCA(t)
	e := newEnv(t, caClient, nil)
	t.Run("Directory", func(t *testing.T) { e.t = t; testDirectory(e) })
	t.Run("IssueHTTP01", func(t *testing.T) { e.t = t; testIssue(e, server.ChallengeHTTP01) })
	t.Run("IssueDNS01Wildcard", func(t *testing.T) { e.t = t; testIssueDNS01Wildcard(e) })
	t.Run("IssueTLSALPN01", func(t *testing.T) { e.t = t; testIssue(e, server.ChallengeTLSALPN01) })
	t.Run("IssueMLDSA", func(t *testing.T) { e.t = t; testIssueMLDSA(e) })
	t.Run("BadJWS", func(t *testing.T) { e.t = t; testBadJWS(e) })
	t.Run("Accounts", func(t *testing.T) { e.t = t; testAccounts(e) })
	t.Run("KeyChange", func(t *testing.T) { e.t = t; testKeyChange(e) })
	t.Run("BadCSR", func(t *testing.T) { e.t = t; testBadCSR(e) })
	t.Run("FinalizeConcurrently", func(t *testing.T) { e.t = t; testFinalizeConcurrently(e) })
	t.Run("ChallengeFailures", func(t *testing.T) { e.t = t; testChallengeFailures(e) })
	t.Run("Revoke", func(t *testing.T) { e.t = t; testRevoke(e) })
	t.Run("RenewalInfo", func(t *testing.T) { e.t = t; testRenewalInfo(e) })
	t.Run("Identifiers", func(t *testing.T) { e.t = t; testIdentifiers(e) })
	t.Run("EAB", func(t *testing.T) { testEAB(newEnv(t, caClient, func(c *server.Config) { c.RequireEAB = true })) })
	t.Run("RateLimit", func(t *testing.T) { testRateLimit(newEnv(t, caClient, func(c *server.Config) { c.OrdersPerHour = 2 })) })
	t.Run("Profiles", func(t *testing.T) {
		testProfiles(newEnv(t, caClient, func(c *server.Config) {
			c.Profiles = map[string]server.Profile{"shortlived": {Description: "one day", CAProfile: "server", Lifetime: 24 * time.Hour}}
		}))
	})
}

func testDirectory(e *env) {
	c := acmetest.NewClient(e.t, e.acme, ecKey(e.t))
	r := c.Do(http.MethodGet, "/directory", nil, nil)
	want(e.t, r, http.StatusOK, "")
	for _, k := range []string{"newNonce", "newAccount", "newOrder", "revokeCert", "keyChange", "renewalInfo"} {
		if !strings.HasPrefix(str(r.JSON, k), acmetest.BaseURL+"/") {
			e.t.Fatalf("directory %s = %q", k, str(r.JSON, k))
		}
	}
	if g := c.Do(http.MethodGet, "/new-nonce", nil, nil); g.Status != http.StatusNoContent || g.Header("Replay-Nonce") == "" {
		e.t.Fatalf("GET new-nonce: %d %q", g.Status, g.Header("Replay-Nonce"))
	}
	if a, b := c.Nonce(), c.Nonce(); a == b || len(a) < 22 {
		e.t.Fatalf("nonces %q and %q", a, b)
	}
	want(e.t, c.Do(http.MethodPut, "/new-order", nil, nil), http.StatusMethodNotAllowed, "malformed")
	want(e.t, c.Do(http.MethodGet, "/new-order", nil, nil), http.StatusMethodNotAllowed, "malformed")
}

func testIssue(e *env, typ string) {
	c := e.client()
	_, chain := e.issue(c, typ, "www.svc.test", "api.svc.test")
	certs := parsePEM(e.t, chain)
	if len(certs) < 2 {
		e.t.Fatalf("chain of %d certificates", len(certs))
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: classicalRoot(e.t, e.ca), Intermediates: inter, DNSName: "api.svc.test"}); err != nil {
		e.t.Fatalf("chain does not verify to the classical root: %v", err)
	}
}

func testIssueDNS01Wildcard(e *env) {
	c := e.client()
	o, chain := e.issue(c, server.ChallengeDNS01, "*.wild.test", "wild.test")
	if got := parsePEM(e.t, chain)[0].DNSNames; len(got) != 2 {
		e.t.Fatalf("names %v", got)
	}
	_ = o
}

// mldsaSigner signs a CSR with ML-DSA-65 for pqx509.
type mldsaSigner struct {
	sk  *mldsa65.PrivateKey
	pub pqx509.PublicKey
}

func (k *mldsaSigner) Public() pqx509.PublicKey { return k.pub }
func (k *mldsaSigner) Sign(_ context.Context, msg []byte) ([]byte, error) {
	sig := make([]byte, mldsa65.SignatureSize)
	return sig, mldsa65.SignTo(k.sk, msg, nil, true, sig)
}

func testIssueMLDSA(e *env) {
	c := e.client()
	path, o := e.newOrder(c, "pq.svc.test")
	e.solve(c, o, server.ChallengeHTTP01)
	pk, sk, _ := mldsa65.GenerateKey(rand.Reader)
	raw, _ := pk.MarshalBinary()
	der, err := pqx509.CreateCSR(context.Background(), pqx509.CSRTemplate{DNSNames: []string{"pq.svc.test"}},
		&mldsaSigner{sk: sk, pub: pqx509.PublicKey{Algorithm: "ML-DSA-65", Raw: raw}})
	if err != nil {
		e.t.Fatal(err)
	}
	r := c.Post(acmetest.Path(e.t, str(o, "finalize")), finalizePayload(der))
	if r.Status != http.StatusOK || str(r.JSON, "status") != "valid" {
		e.t.Fatalf("finalize: %d %s", r.Status, r.Body)
	}
	_ = path
	cert := c.Post(acmetest.Path(e.t, str(r.JSON, "certificate")), nil)
	leaf, err := pqx509.ParseCertificate(firstDER(e.t, cert.Body))
	if err != nil {
		e.t.Fatal(err)
	}
	if leaf.PublicKey.Algorithm != "ML-DSA-65" || !strings.HasPrefix(leaf.SignatureAlgorithm, "ML-DSA") {
		e.t.Fatalf("ML-DSA CSR issued with key %s, signed %s; want an ML-DSA issuer", leaf.PublicKey.Algorithm, leaf.SignatureAlgorithm)
	}
}

func firstDER(t testing.TB, p []byte) []byte {
	blk, _ := pem.Decode(p)
	if blk == nil {
		t.Fatalf("not PEM: %q", p)
	}
	return blk.Bytes
}

func testBadJWS(e *env) {
	t := e.t.(*testing.T)
	c := e.client()
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	edJWK, _ := jose.NewJWK(ed.Public())
	post := func(path string, jws []byte) *acmetest.Response {
		return c.Do(http.MethodPost, path, acmetest.JOSE, jws)
	}
	rawJWS := func(hdr map[string]any, sig []byte) []byte {
		hb, _ := json.Marshal(hdr)
		b, _ := json.Marshal(map[string]string{"protected": jose.Encode(hb), "payload": jose.Encode([]byte(`{}`)), "signature": jose.Encode(sig)})
		return b
	}
	// Each case is one mistake, checked in Boulder's order.
	t.Run("alg none", func(t *testing.T) {
		r := post("/new-order", rawJWS(map[string]any{"alg": "none", "nonce": c.Nonce(), "url": acmetest.BaseURL + "/new-order", "kid": c.KID}, nil))
		want(t, r, http.StatusBadRequest, "badSignatureAlgorithm")
		if r.JSON["algorithms"] == nil {
			t.Fatal("badSignatureAlgorithm without the accepted algorithms")
		}
	})
	t.Run("HS256", func(t *testing.T) {
		r := post("/new-order", rawJWS(map[string]any{"alg": "HS256", "nonce": c.Nonce(), "url": acmetest.BaseURL + "/new-order", "kid": c.KID}, make([]byte, 32)))
		want(t, r, http.StatusBadRequest, "badSignatureAlgorithm")
	})
	t.Run("alg not the key's", func(t *testing.T) {
		// An Ed25519 signature under "alg": "ES256" with the key embedded.
		jws, err := jose.Sign(rand.Reader, ed, jose.SignHeader{Nonce: c.Nonce(), URL: acmetest.BaseURL + "/new-account", Extra: map[string]any{"alg": "ES256"}}, []byte(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		want(t, post("/new-account", jws), http.StatusBadRequest, "badSignatureAlgorithm")
		// The same through an account: ES256 header, Ed25519 account key.
		edc := acmetest.NewClient(t, e.acme, ed)
		edc.Register()
		jws = edc.Sign("/new-order", []byte(`{}`), &jose.SignHeader{Extra: map[string]any{"alg": "ES256"}})
		want(t, edc.Do(http.MethodPost, "/new-order", acmetest.JOSE, jws), http.StatusBadRequest, "badSignatureAlgorithm")
	})
	t.Run("missing nonce", func(t *testing.T) {
		r := post("/new-order", c.Sign("/new-order", []byte(`{}`), &jose.SignHeader{Extra: map[string]any{"nonce": nil}}))
		want(t, r, http.StatusBadRequest, "badNonce")
		if r.Header("Replay-Nonce") == "" {
			t.Fatal("badNonce without a fresh Replay-Nonce")
		}
	})
	t.Run("reused nonce", func(t *testing.T) {
		n := c.Nonce()
		first := post("/account/"+kidID(c), c.Sign("/account/"+kidID(c), nil, &jose.SignHeader{Nonce: n}))
		want(t, first, http.StatusOK, "")
		r := post("/account/"+kidID(c), c.Sign("/account/"+kidID(c), nil, &jose.SignHeader{Nonce: n}))
		want(t, r, http.StatusBadRequest, "badNonce")
		if r.Header("Replay-Nonce") == "" {
			t.Fatal("badNonce without a fresh Replay-Nonce")
		}
	})
	t.Run("foreign nonce", func(t *testing.T) {
		r := post("/new-order", c.Sign("/new-order", []byte(`{}`), &jose.SignHeader{Nonce: "bm90LWZyb20tdGhpcy1zZXJ2ZXI"}))
		want(t, r, http.StatusBadRequest, "badNonce")
	})
	t.Run("nonce used by a bad signature", func(t *testing.T) {
		// The nonce is used up when the request arrives; the answer is
		// still the earlier check's (Boulder's order), and the nonce is
		// not good again.
		n := c.Nonce()
		other := acmetest.NewClient(t, e.acme, ecKey(t))
		other.KID = c.KID
		want(t, post("/account/"+kidID(c), other.Sign("/account/"+kidID(c), nil, &jose.SignHeader{Nonce: n})), http.StatusBadRequest, "malformed")
		want(t, post("/account/"+kidID(c), c.Sign("/account/"+kidID(c), nil, &jose.SignHeader{Nonce: n})), http.StatusBadRequest, "badNonce")
		want(t, post("/account/"+kidID(c), c.Sign("/account/"+kidID(c), nil, nil)), http.StatusOK, "")
	})
	t.Run("url mismatch", func(t *testing.T) {
		r := post("/new-order", c.Sign("/new-order", []byte(`{}`), &jose.SignHeader{URL: acmetest.BaseURL + "/new-account"}))
		want(t, r, http.StatusForbidden, "unauthorized")
	})
	t.Run("url missing", func(t *testing.T) {
		r := post("/new-order", c.Sign("/new-order", []byte(`{}`), &jose.SignHeader{Extra: map[string]any{"url": nil}}))
		want(t, r, http.StatusBadRequest, "malformed")
	})
	t.Run("jwk and kid", func(t *testing.T) {
		k, _ := jose.NewJWK(c.Key.Public())
		r := post("/new-order", c.Sign("/new-order", []byte(`{}`), &jose.SignHeader{Extra: map[string]any{"jwk": json.RawMessage(k.JSON())}}))
		want(t, r, http.StatusBadRequest, "malformed")
	})
	t.Run("jwk where kid is required", func(t *testing.T) {
		anon := acmetest.NewClient(t, e.acme, ecKey(t))
		want(t, anon.Post("/new-order", []byte(`{}`)), http.StatusBadRequest, "malformed")
	})
	t.Run("unknown account", func(t *testing.T) {
		r := post("/new-order", c.Sign("/new-order", []byte(`{}`), &jose.SignHeader{KID: acmetest.BaseURL + "/account/nosuchaccount"}))
		want(t, r, http.StatusBadRequest, "accountDoesNotExist")
	})
	t.Run("deactivated account", func(t *testing.T) {
		d := e.client()
		want(t, d.Post(acmetest.Path(t, d.KID), []byte(`{"status":"deactivated"}`)), http.StatusOK, "")
		want(t, d.Post("/new-order", []byte(`{"identifiers":[{"type":"dns","value":"x.svc.test"}]}`)), http.StatusForbidden, "unauthorized")
	})
	t.Run("POST-as-GET with a body", func(t *testing.T) {
		path, _ := e.newOrder(c, "body.svc.test")
		want(t, c.Post(path, []byte(`{}`)), http.StatusBadRequest, "malformed")
		want(t, c.Post(path, nil), http.StatusOK, "")
	})
	t.Run("content type", func(t *testing.T) {
		r := c.Do(http.MethodPost, "/new-order", map[string][]string{"Content-Type": {"application/json"}}, c.Sign("/new-order", []byte(`{}`), nil))
		want(t, r, http.StatusUnsupportedMediaType, "malformed")
	})
	t.Run("unprotected header", func(t *testing.T) {
		var m map[string]string
		_ = json.Unmarshal(c.Sign("/new-order", []byte(`{}`), nil), &m)
		b, _ := json.Marshal(map[string]any{"protected": m["protected"], "payload": m["payload"], "signature": m["signature"], "header": map[string]string{"kid": c.KID}})
		want(t, post("/new-order", b), http.StatusBadRequest, "malformed")
	})
	t.Run("other account's order", func(t *testing.T) {
		path, _ := e.newOrder(c, "mine.svc.test")
		want(t, e.client().Post(path, nil), http.StatusForbidden, "unauthorized")
	})
	_ = edJWK
}

func kidID(c *acmetest.Client) string { return c.KID[strings.LastIndexByte(c.KID, '/')+1:] }

func testAccounts(e *env) {
	t := e.t.(*testing.T)
	key := ecKey(t)
	c := acmetest.NewClient(t, e.acme, key)
	want(t, c.Post("/new-account", []byte(`{"onlyReturnExisting":true}`)), http.StatusBadRequest, "accountDoesNotExist")
	want(t, c.Post("/new-account", []byte(`{"contact":["tel:+1555"]}`)), http.StatusBadRequest, "unsupportedContact")
	want(t, c.Post("/new-account", []byte(`{"contact":["mailto:a@b.test,c@d.test"]}`)), http.StatusBadRequest, "invalidContact")
	r := c.Register()
	if r.Status != http.StatusCreated || str(r.JSON, "status") != "valid" {
		t.Fatalf("new account: %d %s", r.Status, r.Body)
	}
	// The same key again: the same account, 200.
	again := acmetest.NewClient(t, e.acme, key)
	r2 := again.Post("/new-account", []byte(`{"onlyReturnExisting":true}`))
	if r2.Status != http.StatusOK || r2.Header("Location") != c.KID {
		t.Fatalf("existing account: %d %s at %q", r2.Status, r2.Body, r2.Header("Location"))
	}
	up := c.Post(acmetest.Path(t, c.KID), []byte(`{"contact":["mailto:new@svc.test"]}`))
	if up.Status != http.StatusOK || strs(up.JSON, "contact")[0] != "mailto:new@svc.test" {
		t.Fatalf("update: %d %s", up.Status, up.Body)
	}
	want(t, c.Post(acmetest.Path(t, c.KID), []byte(`{"status":"valid"}`)), http.StatusBadRequest, "malformed")
	orders := c.Post(acmetest.Path(t, c.KID)+"/orders", nil)
	want(t, orders, http.StatusOK, "")
	want(t, c.Post(acmetest.Path(t, c.KID), []byte(`{"status":"deactivated"}`)), http.StatusOK, "")
	want(t, c.Post(acmetest.Path(t, c.KID), nil), http.StatusForbidden, "unauthorized")
	want(t, again.Post("/new-account", []byte(`{}`)), http.StatusForbidden, "unauthorized")
}

func testKeyChange(e *env) {
	t := e.t.(*testing.T)
	c := e.client()
	other := e.client()
	oldKey := c.Key
	oldJWK, _ := jose.NewJWK(oldKey.Public())
	mk := func(signer signerAny, account string) []byte {
		b, err := jose.Sign(rand.Reader, signer, jose.SignHeader{URL: acmetest.BaseURL + "/key-change"},
			[]byte(`{"account":"`+account+`","oldKey":`+string(oldJWK.JSON())+`}`))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// To a key bound to another account: 409, Location of that account.
	r := c.Post("/key-change", mk(other.Key, c.KID))
	if r.Status != http.StatusConflict || r.Header("Location") != other.KID {
		t.Fatalf("rollover to another account's key: %d %s at %q", r.Status, r.Body, r.Header("Location"))
	}
	// The inner JWS naming another account.
	newKey := ecKey(t)
	want(t, c.Post("/key-change", mk(newKey, other.KID)), http.StatusForbidden, "unauthorized")
	// Done right.
	want(t, c.Post("/key-change", mk(newKey, c.KID)), http.StatusOK, "")
	// The old key no longer signs for the account; the new one does.
	want(t, c.Post(acmetest.Path(t, c.KID), nil), http.StatusBadRequest, "malformed")
	c.Key = newKey
	want(t, c.Post(acmetest.Path(t, c.KID), nil), http.StatusOK, "")
	// The old key is free for a new account.
	fresh := acmetest.NewClient(t, e.acme, oldKey)
	want(t, fresh.Post("/new-account", []byte(`{"onlyReturnExisting":true}`)), http.StatusBadRequest, "accountDoesNotExist")
}

type signerAny = crypto.Signer

func testBadCSR(e *env) {
	t := e.t.(*testing.T)
	c := e.client()
	ready := func(names ...string) string {
		t.Helper()
		_, o := e.newOrder(c, names...)
		e.solve(c, o, server.ChallengeHTTP01)
		return acmetest.Path(t, str(o, "finalize"))
	}
	fin := ready("a.csr.test", "b.csr.test")
	good := csr(t, ecKey(t), "", "a.csr.test", "b.csr.test")
	bad := append([]byte{}, good...)
	bad[len(bad)-5] ^= 0xff // inside the signature
	cases := []struct {
		name string
		der  []byte
	}{
		{"bad signature", bad},
		{"account key", csr(t, c.Key, "", "a.csr.test", "b.csr.test")},
		{"name not in the order", csr(t, ecKey(t), "", "a.csr.test", "c.csr.test")},
		{"extra SAN", csr(t, ecKey(t), "", "a.csr.test", "b.csr.test", "c.csr.test")},
		{"missing name", csr(t, ecKey(t), "", "a.csr.test")},
		{"common name not in the order", csr(t, ecKey(t), "other.csr.test", "a.csr.test", "b.csr.test")},
		{"not a CSR", []byte("garbage")},
	}
	for _, cs := range cases {
		t.Run(cs.name, func(t *testing.T) {
			want(t, c.Post(fin, finalizePayload(cs.der)), http.StatusBadRequest, "badCSR")
		})
	}
	// None of that changed the order: it finalizes with a good CSR.
	r := c.Post(fin, finalizePayload(good))
	if r.Status != http.StatusOK || str(r.JSON, "status") != "valid" {
		t.Fatalf("finalize after refused CSRs: %d %s", r.Status, r.Body)
	}
	want(t, c.Post(fin, finalizePayload(good)), http.StatusForbidden, "orderNotReady")
	// A pending order is not ready.
	_, o := e.newOrder(c, "pending.csr.test")
	want(t, c.Post(acmetest.Path(t, str(o, "finalize")), finalizePayload(csr(t, ecKey(t), "", "pending.csr.test"))), http.StatusForbidden, "orderNotReady")
}

// postAtOnce posts every body (each a signed JWS) to url at the same
// moment and returns the answers in the bodies' order.
func postAtOnce(c *acmetest.Client, url string, bodies [][]byte) []*acmetest.Response {
	results := make([]*acmetest.Response, len(bodies))
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range bodies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			results[i] = c.Do(http.MethodPost, url, acmetest.JOSE, bodies[i])
		}()
	}
	close(start)
	wg.Wait()
	return results
}

func testFinalizeConcurrently(e *env) {
	t := e.t.(*testing.T)
	c := e.client()
	_, o := e.newOrder(c, "race.svc.test")
	e.solve(c, o, server.ChallengeHTTP01)
	fin := acmetest.Path(t, str(o, "finalize"))
	der := csr(t, ecKey(t), "", "race.svc.test")
	const n = 8
	bodies := make([][]byte, n)
	for i := range bodies {
		bodies[i] = c.Sign(fin, finalizePayload(der), nil) // each its own nonce
	}
	before := countCerts(t, e.ca)
	results := postAtOnce(c, fin, bodies)
	ok := 0
	for _, r := range results {
		switch {
		case r.Status == http.StatusOK:
			ok++
		case r.ProblemType() != "orderNotReady":
			t.Fatalf("concurrent finalize: %d %s", r.Status, r.Body)
		}
	}
	if ok != 1 {
		t.Fatalf("%d of %d concurrent finalizations succeeded; want 1", ok, n)
	}
	if got := countCerts(t, e.ca) - before; got != 1 {
		t.Fatalf("the CA issued %d certificates for one order; want 1", got)
	}
}

func countCerts(t testing.TB, c ca.CA) int {
	t.Helper()
	l, ok := c.(ca.CertificateLister)
	if !ok {
		t.Fatal("the CA cannot list certificates")
	}
	n, after := 0, ""
	for range 1000 {
		r, err := l.ListCertificates(context.Background(), &ca.ListCertificatesRequest{After: after, Limit: ca.MaxListLimit})
		if err != nil {
			t.Fatal(err)
		}
		n += len(r.Certificates)
		if r.Next == "" {
			return n
		}
		after = r.Next
	}
	t.Fatal("more than a million certificates")
	return 0
}

func testChallengeFailures(e *env) {
	t := e.t.(*testing.T)
	c := e.client()
	post := func(typ string, set func(token, domain string)) *acmetest.Response {
		_, o := e.newOrder(c, "fail-"+strings.ReplaceAll(typ, "-", "")+".svc.test")
		a := c.Post(acmetest.Path(t, strs(o, "authorizations")[0]), nil)
		for _, ch := range a.JSON["challenges"].([]any) {
			m := ch.(map[string]any)
			if str(m, "type") == typ {
				set(str(m, "token"), "fail-"+strings.ReplaceAll(typ, "-", "")+".svc.test")
				return c.Post(acmetest.Path(t, str(m, "url")), []byte(`{}`))
			}
		}
		t.Fatalf("no %s challenge", typ)
		return nil
	}
	r := post(server.ChallengeHTTP01, func(token, _ string) { e.http01.Set(token, "wrong") })
	if str(r.JSON, "status") != "invalid" || !strings.HasSuffix(str(r.JSON["error"].(map[string]any), "type"), "incorrectResponse") {
		t.Fatalf("wrong http-01 answer: %s", r.Body)
	}
	r = post(server.ChallengeDNS01, func(string, string) {})
	if str(r.JSON, "status") != "invalid" || !strings.HasSuffix(str(r.JSON["error"].(map[string]any), "type"), ":dns") {
		t.Fatalf("absent TXT record: %s", r.Body)
	}
	r = post(server.ChallengeTLSALPN01, func(string, string) {})
	if str(r.JSON, "status") != "invalid" || !strings.HasSuffix(str(r.JSON["error"].(map[string]any), "type"), ":tls") {
		t.Fatalf("no tls-alpn-01 certificate: %s", r.Body)
	}
}

func testRevoke(e *env) {
	t := e.t.(*testing.T)
	c := e.client()
	// By the account.
	_, chain := e.issue(c, server.ChallengeHTTP01, "rev1.svc.test")
	leaf := parsePEM(t, chain)[0]
	payload := func(der []byte, reason int) []byte {
		return []byte(`{"certificate":"` + jose.Encode(der) + `","reason":` + itoa(reason) + `}`)
	}
	want(t, c.Post("/revoke-cert", payload(leaf.Raw, 2)), http.StatusBadRequest, "badRevocationReason")
	want(t, e.client().Post("/revoke-cert", payload(leaf.Raw, 0)), http.StatusForbidden, "unauthorized")
	want(t, c.Post("/revoke-cert", payload(leaf.Raw, 4)), http.StatusOK, "")
	want(t, c.Post("/revoke-cert", payload(leaf.Raw, 4)), http.StatusBadRequest, "alreadyRevoked")
	st, err := e.ca.GetCertificate(context.Background(), &ca.GetCertificateRequest{Serial: leaf.SerialNumber.Text(16)})
	if err != nil || st.Status != ca.StatusRevoked || st.RevocationReason != 4 {
		t.Fatalf("CA status after revocation: %+v %v", st, err)
	}
	// By the certificate's key, without an account.
	path, o := e.newOrder(c, "rev2.svc.test")
	e.solve(c, o, server.ChallengeHTTP01)
	certKey := ecKey(t)
	r := c.Post(acmetest.Path(t, str(o, "finalize")), finalizePayload(csr(t, certKey, "", "rev2.svc.test")))
	want(t, r, http.StatusOK, "")
	_ = path
	leaf2 := parsePEM(t, c.Post(acmetest.Path(t, str(r.JSON, "certificate")), nil).Body)[0]
	byKey := acmetest.NewClient(t, e.acme, certKey)
	want(t, byKey.Post("/revoke-cert", payload(leaf2.Raw, 1)), http.StatusOK, "")
	// A key that is neither.
	stranger := acmetest.NewClient(t, e.acme, ecKey(t))
	want(t, stranger.Post("/revoke-cert", payload(leaf2.Raw, 1)), http.StatusForbidden, "unauthorized")
}

func itoa(i int) string { return strconv.Itoa(i) }

func testRenewalInfo(e *env) {
	t := e.t.(*testing.T)
	c := e.client()
	_, chain := e.issue(c, server.ChallengeHTTP01, "ari.svc.test")
	leaf, err := pqx509.ParseCertificate(parsePEM(t, chain)[0].Raw)
	if err != nil {
		t.Fatal(err)
	}
	id := server.CertID(leaf)
	r := c.Do(http.MethodGet, "/renewal-info/"+id, nil, nil)
	want(t, r, http.StatusOK, "")
	w, _ := r.JSON["suggestedWindow"].(map[string]any)
	start, err1 := time.Parse(time.RFC3339, str(w, "start"))
	end, err2 := time.Parse(time.RFC3339, str(w, "end"))
	if err1 != nil || err2 != nil || !start.Before(end) || !start.After(leaf.NotBefore) || !end.Before(leaf.NotAfter) || r.Header("Retry-After") == "" {
		t.Fatalf("renewal info %s", r.Body)
	}
	want(t, c.Do(http.MethodGet, "/renewal-info/not-an-id", nil, nil), http.StatusBadRequest, "malformed")
	// A replacement order names it; a second replacement is refused.
	body := []byte(`{"identifiers":[{"type":"dns","value":"ari.svc.test"}],"replaces":"` + id + `"}`)
	o := c.Post("/new-order", body)
	want(t, o, http.StatusCreated, "")
	if str(o.JSON, "replaces") != id {
		t.Fatalf("order %s", o.Body)
	}
	e.solve(c, o.JSON, server.ChallengeHTTP01)
	want(t, c.Post(acmetest.Path(t, str(o.JSON, "finalize")), finalizePayload(csr(t, ecKey(t), "", "ari.svc.test"))), http.StatusOK, "")
	want(t, c.Post("/new-order", body), http.StatusConflict, "malformed")
}

func testIdentifiers(e *env) {
	t := e.t.(*testing.T)
	c := e.client()
	order := func(body string) *acmetest.Response { return c.Post("/new-order", []byte(body)) }
	want(t, order(`{"identifiers":[{"type":"ip","value":"10.0.0.1"}]}`), http.StatusBadRequest, "unsupportedIdentifier")
	want(t, order(`{"identifiers":[{"type":"dns","value":"UPPER.svc.test"}]}`), http.StatusBadRequest, "rejectedIdentifier")
	want(t, order(`{"identifiers":[{"type":"dns","value":"bad_label.svc.test"}]}`), http.StatusBadRequest, "rejectedIdentifier")
	want(t, order(`{"identifiers":[{"type":"dns","value":"localhost"}]}`), http.StatusBadRequest, "rejectedIdentifier")
	want(t, order(`{"identifiers":[]}`), http.StatusBadRequest, "malformed")
	want(t, order(`{"identifiers":[{"type":"dns","value":"a.svc.test"}],"notAfter":"2030-01-01T00:00:00Z"}`), http.StatusBadRequest, "malformed")
	want(t, order(`{"identifiers":[{"type":"dns","value":"a.svc.test"}],"profile":"nope"}`), http.StatusBadRequest, "invalidProfile")
	want(t, order(`{"identifiers":`), http.StatusBadRequest, "malformed")
	r := order(`{"identifiers":[{"type":"dns","value":"x.svc.test"},{"type":"dns","value":"-x.svc.test"},{"type":"ip","value":"::1"}]}`)
	want(t, r, http.StatusBadRequest, "rejectedIdentifier")
	if subs, _ := r.JSON["subproblems"].([]any); len(subs) != 2 {
		t.Fatalf("subproblems: %s", r.Body)
	}
}

func testEAB(e *env) {
	t := e.t.(*testing.T)
	kid, hmacKey, err := e.srv.CreateEAB(context.Background(), "team a")
	if err != nil {
		t.Fatal(err)
	}
	key, _ := base64.RawURLEncoding.DecodeString(hmacKey)
	c := acmetest.NewClient(t, e.acme, ecKey(t))
	want(t, c.Post("/new-account", []byte(`{"termsOfServiceAgreed":true}`)), http.StatusBadRequest, "externalAccountRequired")
	jwk, _ := jose.NewJWK(c.Key.Public())
	eab := func(k []byte, kid string, jwk *jose.JWK) []byte {
		return []byte(`{"termsOfServiceAgreed":true,"externalAccountBinding":` + string(jose.SignEAB(kid, k, acmetest.BaseURL+"/new-account", jwk)) + `}`)
	}
	want(t, c.Post("/new-account", eab([]byte("wrong key of 32 bytes, not it..."), kid, jwk)), http.StatusForbidden, "unauthorized")
	want(t, c.Post("/new-account", eab(key, "unknownkid", jwk)), http.StatusForbidden, "unauthorized")
	otherJWK, _ := jose.NewJWK(ecKey(t).Public())
	want(t, c.Post("/new-account", eab(key, kid, otherJWK)), http.StatusBadRequest, "malformed")
	r := c.Post("/new-account", eab(key, kid, jwk))
	want(t, r, http.StatusCreated, "")
	// The key binds one account only.
	d := acmetest.NewClient(t, e.acme, ecKey(t))
	djwk, _ := jose.NewJWK(d.Key.Public())
	want(t, d.Post("/new-account", eab(key, kid, djwk)), http.StatusForbidden, "unauthorized")
}

func testRateLimit(e *env) {
	t := e.t.(*testing.T)
	c := e.client()
	for i := range 2 {
		e.newOrder(c, "rl"+itoa(i)+".svc.test")
	}
	r := c.Post("/new-order", []byte(`{"identifiers":[{"type":"dns","value":"rl9.svc.test"}]}`))
	want(t, r, http.StatusTooManyRequests, "rateLimited")
	if r.Header("Retry-After") == "" {
		t.Fatal("rateLimited without Retry-After")
	}
	// Other accounts have their own budget.
	e.newOrder(e.client(), "rl8.svc.test")
	// A cache outage lets orders through (rate limits fail open) but no
	// nonce is accepted (fail closed).
	n := c.Nonce()
	e.host.SetCacheFailure(true)
	r = c.Do(http.MethodPost, "/new-order", acmetest.JOSE, c.Sign("/new-order", []byte(`{"identifiers":[{"type":"dns","value":"rl7.svc.test"}]}`), &jose.SignHeader{Nonce: n}))
	e.host.SetCacheFailure(false)
	want(t, r, http.StatusInternalServerError, "serverInternal")
}

func testProfiles(e *env) {
	t := e.t.(*testing.T)
	c := e.client()
	d := c.Do(http.MethodGet, "/directory", nil, nil)
	if p, _ := d.JSON["meta"].(map[string]any)["profiles"].(map[string]any); p["shortlived"] == nil {
		t.Fatalf("directory meta: %s", d.Body)
	}
	o := c.Post("/new-order", []byte(`{"identifiers":[{"type":"dns","value":"short.svc.test"}],"profile":"shortlived"}`))
	want(t, o, http.StatusCreated, "")
	e.solve(c, o.JSON, server.ChallengeHTTP01)
	r := c.Post(acmetest.Path(t, str(o.JSON, "finalize")), finalizePayload(csr(t, ecKey(t), "", "short.svc.test")))
	want(t, r, http.StatusOK, "")
	leaf := parsePEM(t, c.Post(acmetest.Path(t, str(r.JSON, "certificate")), nil).Body)[0]
	if life := leaf.NotAfter.Sub(leaf.NotBefore); life > 25*time.Hour {
		t.Fatalf("shortlived certificate lives %v", life)
	}
}
