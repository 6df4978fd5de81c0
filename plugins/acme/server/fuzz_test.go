package server_test

import (
	"context"
	"crypto/rand"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/avonzt/avon/plugins/acme/jose"
	"github.com/avonzt/avon/plugins/acme/server"
	"github.com/avonzt/avon/sdk/acme"
	"github.com/avonzt/avon/sdk/ca"
	"github.com/avonzt/avon/sdk/plugintest"
)

// refusingCA is a CA double for fuzzing only (no fuzz input gets as far
// as a signed, nonce-bearing finalization): every call fails.
type refusingCA struct{}

var errRefused = errors.New("fuzz: no CA")

func (refusingCA) Issue(context.Context, *ca.IssueRequest) (*ca.IssueResponse, error) {
	return nil, errRefused
}
func (refusingCA) Revoke(context.Context, *ca.RevokeRequest) (*ca.RevokeResponse, error) {
	return nil, errRefused
}
func (refusingCA) GetCertificate(context.Context, *ca.GetCertificateRequest) (*ca.GetCertificateResponse, error) {
	return nil, errRefused
}
func (refusingCA) ListIssuers(context.Context, *ca.ListIssuersRequest) (*ca.ListIssuersResponse, error) {
	return nil, errRefused
}
func (refusingCA) CRL(context.Context, *ca.CRLRequest) (*ca.CRLResponse, error) {
	return nil, errRefused
}

type noValidator struct{}

func (noValidator) Validate(context.Context, server.ValidationRequest) *server.Problem {
	return server.NewProblem(server.ProbConnection, "fuzz")
}

// FuzzHandle: any method, path, content type and body gets an answer
// with a valid status, never a panic; every error is an RFC 8555 problem.
func FuzzHandle(f *testing.F) {
	h := plugintest.NewHost()
	s, err := server.New(server.Config{Wildcards: true}, server.Deps{Storage: h.Storage(), Cache: h.Cache(), CA: refusingCA{},
		Rand: rand.Reader, Clock: h.Now, Audit: h.Audit, Validator: noValidator{}})
	if err != nil {
		f.Fatal(err)
	}
	key := ecKey(f)
	for _, p := range []string{"/new-account", "/new-order", "/key-change", "/revoke-cert", "/account/x", "/order/x/finalize", "/chall/a/http-01"} {
		b, _ := jose.Sign(rand.Reader, key, jose.SignHeader{Nonce: "AAAAAAAAAAAAAAAAAAAAAA", URL: "https://a.test/acme" + p}, []byte(`{"identifiers":[{"type":"dns","value":"a.test"}]}`))
		f.Add("POST", p, "application/jose+json", b)
	}
	f.Add("GET", "/directory", "", []byte(nil))
	f.Add("HEAD", "/new-nonce", "", []byte(nil))
	f.Add("GET", "/renewal-info/AAAA.AQ", "", []byte(nil))
	f.Add("POST", "/admin/eab", "application/json", []byte(`{"note":"x"}`))
	f.Fuzz(func(t *testing.T, method, path, ctype string, body []byte) {
		if len(body) > acme.MaxBodySize {
			return
		}
		resp, err := s.Handle(context.Background(), &acme.HTTPRequest{Method: method, Path: path, Body: body,
			Header: map[string][]string{"Content-Type": {ctype}}, BaseURL: "https://a.test/acme"})
		if err != nil {
			t.Fatalf("no answer: %v", err)
		}
		if resp.Status < 100 || resp.Status > 599 {
			t.Fatalf("status %d", resp.Status)
		}
		if resp.Status >= 400 {
			if ct := resp.Header["Content-Type"]; len(ct) != 1 || ct[0] != "application/problem+json" ||
				!strings.Contains(string(resp.Body), `"type":"urn:ietf:params:acme:error:`) {
				t.Fatalf("error %d without a problem document: %v %s", resp.Status, resp.Header, resp.Body)
			}
		}
		if method == http.MethodPost && len(resp.Header["Replay-Nonce"]) != 1 {
			t.Fatalf("POST answered without one Replay-Nonce")
		}
	})
}
