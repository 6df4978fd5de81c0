package server_test

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"net/http"
	"testing"

	"github.com/avonzt/avon/plugins/acme/acmetest"
	"github.com/avonzt/avon/plugins/acme/server"
)

// TestRSACertificates: CSRs with RSA keys of 2048 and 4096 bits are issued
// by the ECDSA issuer and verify with crypto/x509 to the ECDSA root; a
// 1024-bit key is refused with badCSR and the order goes invalid.
func TestRSACertificates(t *testing.T) {
	caClient := acmetest.StartCA(t)
	e := newEnv(t, caClient, nil)
	for _, bits := range []int{2048, 4096} {
		t.Run(itoa(bits), func(t *testing.T) {
			e.t = t
			k, err := rsa.GenerateKey(rand.Reader, bits)
			if err != nil {
				t.Fatal(err)
			}
			c := e.client()
			name := "rsa" + itoa(bits) + ".svc.test"
			_, o := e.newOrder(c, name)
			e.solve(c, o, server.ChallengeHTTP01)
			r := c.Post(acmetest.Path(t, str(o, "finalize")), finalizePayload(csr(t, k, "", name)))
			if r.Status != http.StatusOK || str(r.JSON, "status") != "valid" {
				t.Fatalf("finalize: %d %s", r.Status, r.Body)
			}
			cert := c.Post(acmetest.Path(t, str(r.JSON, "certificate")), nil)
			certs := parsePEM(t, cert.Body)
			if len(certs) != 2 {
				t.Fatalf("chain of %d", len(certs))
			}
			if pk, ok := certs[0].PublicKey.(*rsa.PublicKey); !ok || !pk.Equal(&k.PublicKey) {
				t.Fatalf("certificate key %T is not the CSR's", certs[0].PublicKey)
			}
			if certs[0].SignatureAlgorithm != x509.ECDSAWithSHA384 {
				t.Fatalf("signed with %v, want the ECDSA-P384 issuer", certs[0].SignatureAlgorithm)
			}
			inter := x509.NewCertPool()
			inter.AddCert(certs[1])
			if _, err := certs[0].Verify(x509.VerifyOptions{Roots: classicalRoot(t, e.ca), Intermediates: inter, DNSName: name}); err != nil {
				t.Fatalf("RSA-%d certificate does not verify: %v", bits, err)
			}
		})
	}
	t.Run("1024", func(t *testing.T) {
		e.t = t
		k, err := rsa.GenerateKey(rand.Reader, 1024)
		if err != nil {
			t.Fatal(err)
		}
		c := e.client()
		_, o := e.newOrder(c, "rsa1024.svc.test")
		e.solve(c, o, server.ChallengeHTTP01)
		want(t, c.Post(acmetest.Path(t, str(o, "finalize")), finalizePayload(csr(t, k, "", "rsa1024.svc.test"))), http.StatusBadRequest, "badCSR")
	})
}
