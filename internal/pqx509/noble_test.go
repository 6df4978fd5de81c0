package pqx509

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/x509/pkix"
	"encoding/json"
	"maps"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// needTool finds a program on PATH: a missing one skips the test, unless
// AVON_REQUIRE_SERVICES=1 (CI), where it fails.
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("AVON_REQUIRE_SERVICES") == "1" {
			t.Fatalf("%s required (AVON_REQUIRE_SERVICES=1) but not on PATH: %v", name, err)
		}
		t.Skipf("%s not on PATH (set AVON_REQUIRE_SERVICES=1 to make this a failure): %v", name, err)
	}
	return p
}

type nobleItem struct {
	Name   string `json:"name"`
	Kind   string `json:"kind"`
	File   string `json:"file"`
	Issuer string `json:"issuer,omitempty"`
	want   bool
	alg    string
}

type nobleResult struct {
	Name          string `json:"name"`
	Alg           string `json:"alg"`
	Valid         bool   `json:"valid"`
	TamperedValid bool   `json:"tamperedValid"`
	Error         string `json:"error"`
}

// Our ML-DSA certificates, CSRs, CRLs and OCSP responses, verified by
// @noble/post-quantum through a DER walk of its own (testdata/noble).
func TestNobleVerifies(t *testing.T) {
	node, npm := needTool(t, "node"), needTool(t, "npm")
	dir := t.TempDir()
	for _, f := range []string{"package.json", "package-lock.json", "verify.mjs"} {
		b, err := os.ReadFile(filepath.Join("testdata", "noble", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm ci: %v\n%s", err, out)
	}

	var items []nobleItem
	write := func(name string, der []byte) string {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), der, 0o644); err != nil {
			t.Fatal(err)
		}
		return name
	}
	add := func(name, kind string, der []byte, issuer, alg string, want bool) {
		items = append(items, nobleItem{Name: name, Kind: kind, File: write(name+".der", der), Issuer: issuer, want: want, alg: alg})
	}
	bg := context.Background()
	for _, alg := range []string{MLDSA44, MLDSA65, MLDSA87} {
		ch := makeChain(t, func() Signer { return newMLDSASigner(t, alg) })
		root, inter := write(alg+"-root.der", ch.rootDER), write(alg+"-inter.der", ch.interDER)
		add(alg+"-root", "cert", ch.rootDER, root, alg, true)
		add(alg+"-inter", "cert", ch.interDER, root, alg, true)
		add(alg+"-leaf", "cert", ch.leafDER, inter, alg, true)
		bad := bytes.Clone(ch.leafDER)
		bad[len(bad)-40] ^= 0x01 // in the signature
		add(alg+"-leaf-tampered", "cert", bad, inter, alg, false)
		add(alg+"-leaf-wrong-issuer", "cert", ch.leafDER, root, alg, false)

		csr, err := CreateCSR(bg, CSRTemplate{Subject: pkix.Name{CommonName: "agent"}, DNSNames: []string{"agent.avon.test"}}, ch.leafS)
		if err != nil {
			t.Fatal(err)
		}
		add(alg+"-csr", "csr", csr, "", alg, true)
		crl, err := CreateCRL(bg, CRLTemplate{Number: big.NewInt(1), ThisUpdate: testNow, NextUpdate: testNow.Add(time.Hour),
			Revoked: []RevokedCertificate{{SerialNumber: big.NewInt(12), RevocationTime: testNow, ReasonCode: 1}}}, ch.inter, ch.interS)
		if err != nil {
			t.Fatal(err)
		}
		add(alg+"-crl", "crl", crl, inter, alg, true)
		id, _ := NewCertID(ch.inter, ch.leaf.SerialNumber, crypto.SHA256)
		resp, err := CreateOCSPResponse(bg, OCSPResponseTemplate{ProducedAt: testNow, Nonce: []byte("n0nce"),
			Responses: []OCSPSingleResponse{{CertID: id, Status: OCSPGood, ThisUpdate: testNow}}}, ch.inter, ch.interS)
		if err != nil {
			t.Fatal(err)
		}
		add(alg+"-ocsp", "ocsp", resp, inter, alg, true)
	}
	// The RFC 9881 examples too, self-signed.
	for _, alg := range []string{MLDSA44, MLDSA65, MLDSA87} {
		der := readPEM(t, "rfc9881/"+alg+".crt", "CERTIFICATE")
		add("rfc9881-"+alg, "cert", der, write("rfc9881-"+alg+"-self.der", der), alg, true)
	}
	manifest, _ := json.Marshal(items)
	write("manifest.json", manifest)

	runCtx, cancelRun := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancelRun()
	cmd = exec.CommandContext(runCtx, node, "verify.mjs", "manifest.json")
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node verify.mjs: %v\n%s", err, stderr.String())
	}
	results := map[string]nobleResult{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var r nobleResult
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("node output %q: %v", sc.Text(), err)
		}
		results[r.Name] = r
	}
	if len(results) != len(items) {
		t.Fatalf("node reported %d results for %d items:\n%s", len(results), len(items), out)
	}
	var valid int
	for _, it := range items {
		r := results[it.Name]
		if r.Valid != it.want {
			t.Errorf("%s: noble says valid=%v, want %v (%s)", it.Name, r.Valid, it.want, r.Error)
		}
		if it.want && (r.Alg != it.alg || r.TamperedValid) {
			t.Errorf("%s: alg %q, tampered message valid=%v", it.Name, r.Alg, r.TamperedValid)
		}
		if r.Valid {
			valid++
		}
	}
	t.Logf("@noble/post-quantum checked %d items, %d valid: %s", len(items), valid, strings.Join(slices.Sorted(maps.Keys(results)), " "))
}
