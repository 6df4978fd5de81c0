package server

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloudflare/circl/sign/mldsa/mldsa65"

	"github.com/avonzt/avon/internal/pqx509"
	"github.com/avonzt/avon/plugins/kms-hsm/softhsmtest"
	sdkca "github.com/avonzt/avon/sdk/ca"
	"github.com/avonzt/avon/sdk/kms"
	"github.com/avonzt/avon/sdk/plugintest"
)

// twoKMSConfig is the core with kms-soft ("soft") and kms-hsm ("hsm", on a
// fresh SoftHSM2 token) both wired to ca-dilithium, soft the default.
func twoKMSConfig(t *testing.T, caExtra string) string {
	t.Helper()
	h := softhsmtest.Require(t)
	label := "ca-rotate-" + strings.ReplaceAll(strings.ToLower(t.Name()), "/", "-")
	h.InitToken(t, label)
	hsm := plugintest.BuildCGO(t, "github.com/avonzt/avon/plugins/kms-hsm")
	ca := plugintest.Build(t, "github.com/avonzt/avon/plugins/ca-dilithium")
	return `
data_dir = "data"
api {
  listen = "127.0.0.1:0"
}
` + kmsSoftBlock(t) + fmt.Sprintf(`
plugin "kms" "hsm" {
  command = %q
  sha256  = %q
  config {
    module      = %q
    token_label = %q
    pin         = %q
  }
}
plugin "ca" "dilithium" {
  command = %q
  sha256  = %q
  uses    = { kms = ["soft", "hsm"] }
  config {
%s
  }
}
`, hsm.Path, hsm.SHA256, h.Module, label, softhsmtest.PIN, ca.Path, ca.SHA256, caExtra)
}

// adminHTTP is a client over the core's admin socket.
func adminHTTP(s *Server) *http.Client {
	sock := filepath.Join(s.cfg.DataDir, AdminSocket)
	return &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}}}
}

func adminPost(t *testing.T, c *http.Client, path string, body any, into any) int {
	t.Helper()
	b, _ := json.Marshal(body)
	resp, err := c.Post("http://avon-admin"+path, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, into); err != nil {
		t.Fatalf("%s: %d %s", path, resp.StatusCode, raw)
	}
	return resp.StatusCode
}

func agentCSRFor(t *testing.T, id string) []byte {
	t.Helper()
	pk, sk, _ := mldsa65.GenerateKey(rand.Reader)
	raw, _ := pk.MarshalBinary()
	u, _ := url.Parse("avon://agent/" + id)
	csr, err := pqx509.CreateCSR(context.Background(), pqx509.CSRTemplate{Subject: pkix.Name{CommonName: id}, URIs: []*url.URL{u}},
		&testKey{sk: sk, pub: pqx509.PublicKey{Algorithm: "ML-DSA-65", Raw: raw}})
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

// hierarchy returns the root and the issuers by name.
func hierarchy(t *testing.T, c sdkca.CA) (*pqx509.Certificate, map[string]sdkca.Issuer, map[string]*pqx509.Certificate) {
	t.Helper()
	resp, err := c.ListIssuers(context.Background(), &sdkca.ListIssuersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var root *pqx509.Certificate
	byName, certs := map[string]sdkca.Issuer{}, map[string]*pqx509.Certificate{}
	for _, is := range resp.Issuers {
		cert, err := pqx509.ParseCertificate(is.Certificate)
		if err != nil {
			t.Fatal(err)
		}
		byName[is.Name], certs[is.Name] = is, cert
		if is.Name == "root" {
			root = cert
		}
	}
	return root, byName, certs
}

// TestCARotateIntoHSM is the key ceremony with real plugin processes: the
// CA starts on kms-soft, its issuing CA is rotated into the SoftHSM2 token
// through the admin socket; new certificates chain to the new intermediate
// under the unchanged root, a certificate of the old generation is still
// revoked in that generation's CRL and OCSP, and after a restart both
// generations load and issuance stays on the new one.
func TestCARotateIntoHSM(t *testing.T) {
	dir := t.TempDir()
	cfgPath := writeConfig(t, dir, twoKMSConfig(t, ""))
	s, _ := startServer(t, cfgPath)
	ctx := context.Background()
	inst, _ := s.Plugins().Get("ca", "dilithium")
	ca := inst.CA()
	old, err := ca.Issue(ctx, &sdkca.IssueRequest{CSR: agentCSRFor(t, "before"), Profile: "agent"})
	if err != nil {
		t.Fatal(err)
	}
	root, _, certs := hierarchy(t, ca)
	oldInter := certs["issuing"]

	admin := adminHTTP(s)
	var bad map[string]any
	if code := adminPost(t, admin, "/v1/ca/rotate", RotateRequest{KMS: "nope"}, &bad); code != 400 ||
		!strings.Contains(fmt.Sprint(bad["detail"]), "wired: hsm, soft") {
		t.Fatalf("unknown kms: %d %v", code, bad)
	}
	if code := adminPost(t, admin, "/v1/ca/rotate", RotateRequest{Issuer: "root", KMS: "hsm"}, &bad); code != 501 ||
		!strings.Contains(fmt.Sprint(bad["detail"]), "rotating a root CA is not supported") {
		t.Fatalf("root: %d %v", code, bad)
	}
	var rot RotateResult
	if code := adminPost(t, admin, "/v1/ca/rotate", RotateRequest{KMS: "hsm"}, &rot); code != 200 ||
		rot.Generation != 2 || rot.KMS != "hsm" || rot.Issuer != "issuing" || !strings.HasPrefix(rot.By, "local-admin:uid=") {
		t.Fatalf("rotate: %d %+v", code, rot)
	}
	hsmInst, _ := s.Plugins().Get("kms", "hsm")
	if k, err := hsmInst.KMS().GetKey(ctx, &kms.GetKeyRequest{ID: "ca-issuing-2"}); err != nil || k.Key.Algorithm != kms.MLDSA65 {
		t.Fatalf("ca-issuing-2 on the token: %v", err)
	}

	root2, byName, certs := hierarchy(t, ca)
	newInter := certs["issuing"]
	if string(root2.Raw) != string(root.Raw) || !byName["issuing"].Active || byName["issuing.1"].Active ||
		string(certs["issuing.1"].Raw) != string(oldInter.Raw) {
		t.Fatalf("issuers after rotation: %+v", byName)
	}
	verifyLeaf := func(resp *sdkca.IssueResponse) {
		t.Helper()
		leaf, err := pqx509.ParseCertificate(resp.Certificate)
		if err != nil {
			t.Fatal(err)
		}
		chains, err := pqx509.Verify(leaf, pqx509.VerifyOptions{Roots: []*pqx509.Certificate{root}, Intermediates: []*pqx509.Certificate{newInter},
			CurrentTime: time.Now(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		if err != nil || len(chains) != 1 || string(chains[0][1].Raw) != string(newInter.Raw) {
			t.Fatalf("new certificate does not chain to the new intermediate: %v", err)
		}
	}
	fresh, err := ca.Issue(ctx, &sdkca.IssueRequest{CSR: agentCSRFor(t, "after"), Profile: "agent"})
	if err != nil {
		t.Fatal(err)
	}
	verifyLeaf(fresh)

	// Revoking a certificate of the old generation.
	if _, err := ca.Revoke(ctx, &sdkca.RevokeRequest{Serial: old.Serial, Reason: 1}); err != nil {
		t.Fatal(err)
	}
	oldSerial, _ := new(big.Int).SetString(old.Serial, 16)
	checkOldGeneration := func(ca sdkca.CA) {
		t.Helper()
		crlResp, err := ca.CRL(ctx, &sdkca.CRLRequest{Issuer: "issuing.1"})
		if err != nil {
			t.Fatal(err)
		}
		crl, err := pqx509.ParseCRL(crlResp.CRL)
		if err != nil || crl.CheckSignatureFrom(oldInter, pqx509.DefaultVerifier) != nil || len(crl.Revoked) != 1 ||
			crl.Revoked[0].SerialNumber.Cmp(oldSerial) != 0 {
			t.Fatalf("old generation's CRL: %v", err)
		}
		req, err := pqx509.CreateOCSPRequest(oldInter, []*big.Int{oldSerial}, crypto.SHA256, nil)
		if err != nil {
			t.Fatal(err)
		}
		o, err := ca.(sdkca.OCSPResponder).RespondOCSP(ctx, &sdkca.OCSPRequest{Request: req})
		if err != nil {
			t.Fatal(err)
		}
		or, err := pqx509.ParseOCSPResponse(o.Response)
		if err != nil || or.CheckSignatureFrom(oldInter, pqx509.DefaultVerifier) != nil || or.Responses[0].Status != pqx509.OCSPRevoked {
			t.Fatalf("old generation's OCSP: %v %+v", err, or)
		}
	}
	checkOldGeneration(ca)

	// The core and the plugins restart: both generations load, each
	// against its KMS, and issuance stays on the new one.
	if err := s.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	s, _ = startServer(t, cfgPath)
	inst, _ = s.Plugins().Get("ca", "dilithium")
	ca = inst.CA()
	_, byName, _ = hierarchy(t, ca)
	if len(byName) != 3 || !byName["issuing"].Active || byName["issuing"].Generation != 2 || byName["issuing"].KMS != "hsm" ||
		byName["issuing.1"].Generation != 1 {
		t.Fatalf("after restart: %+v", byName)
	}
	again, err := ca.Issue(ctx, &sdkca.IssueRequest{CSR: agentCSRFor(t, "restarted"), Profile: "agent"})
	if err != nil {
		t.Fatal(err)
	}
	verifyLeaf(again)
	checkOldGeneration(ca)

	// Audited: the operator's request with the uid, the CA's rotation.
	recs, _ := s.audit.List(ctx, 0, 1000)
	var seen []string
	for _, r := range recs {
		if r.Action == "ca.rotate" || (r.Action == "ca.rotate.request" && r.Outcome == "requested" && strings.HasPrefix(r.Actor, "local-admin:uid=")) {
			seen = append(seen, r.Action+" "+r.Target)
		}
	}
	if fmt.Sprint(seen) != "[ca.rotate.request issuer/issuing ca.rotate.request issuer/root ca.rotate.request issuer/issuing ca.rotate issuer/issuing.2]" {
		t.Fatalf("audit: %v", seen)
	}
}

// TestCAManualInit: with init = "manual" the core starts, its gateway
// certificate waits, issuance fails with ErrNotInitialized until the init
// over the admin socket, which issues the gateway certificate too; a second
// init is refused with 409.
func TestCAManualInit(t *testing.T) {
	dir := t.TempDir()
	s, logs := startServer(t, writeConfig(t, dir, twoKMSConfig(t, `    init = "manual"`)))
	ctx := context.Background()
	inst, _ := s.Plugins().Get("ca", "dilithium")
	ca := inst.CA()
	if !strings.Contains(logs.String(), "gateway certificate waits for avon ca init") {
		t.Fatal("no log of the waiting gateway certificate")
	}
	if _, err := s.GatewayCertificate(ctx); err == nil {
		t.Fatal("a gateway certificate without a CA hierarchy")
	}
	if _, err := ca.Issue(ctx, &sdkca.IssueRequest{CSR: agentCSRFor(t, "early"), Profile: "agent"}); !errors.Is(err, sdkca.ErrNotInitialized) {
		t.Fatalf("issue before init: %v", err)
	}
	var out InitResult
	if code := adminPost(t, adminHTTP(s), "/v1/ca/init", map[string]string{"kms": "hsm"}, &out); code != 200 || len(out.RootSHA256) != 64 ||
		out.GatewayCertificate != "issued" {
		t.Fatalf("init: %d %+v", code, out)
	}
	if _, err := s.GatewayCertificate(ctx); err != nil {
		t.Fatalf("gateway certificate after init: %v", err)
	}
	if _, err := ca.Issue(ctx, &sdkca.IssueRequest{CSR: agentCSRFor(t, "late"), Profile: "agent"}); err != nil {
		t.Fatal(err)
	}
	var again map[string]any
	if code := adminPost(t, adminHTTP(s), "/v1/ca/init", map[string]string{}, &again); code != 409 {
		t.Fatalf("second init: %d %v", code, again)
	}
}
