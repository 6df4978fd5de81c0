package carpc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"github.com/avonzt/avon/sdk/ca"
	"github.com/avonzt/avon/sdk/errdef"
	cav1 "github.com/avonzt/avon/sdk/proto/ca/v1"
)

// baseCA implements ca.CA and none of the optional capabilities.
type baseCA struct{}

func (baseCA) Issue(context.Context, *ca.IssueRequest) (*ca.IssueResponse, error) {
	return nil, ca.ErrNotInitialized
}
func (baseCA) Revoke(context.Context, *ca.RevokeRequest) (*ca.RevokeResponse, error) {
	return &ca.RevokeResponse{}, nil
}
func (baseCA) GetCertificate(context.Context, *ca.GetCertificateRequest) (*ca.GetCertificateResponse, error) {
	return nil, ca.ErrCertificateNotFound
}
func (baseCA) ListIssuers(context.Context, *ca.ListIssuersRequest) (*ca.ListIssuersResponse, error) {
	return &ca.ListIssuersResponse{Issuers: []ca.Issuer{{Name: "issuing.1", Family: "issuing", Generation: 1, KMS: "soft",
		Chain: [][]byte{[]byte("issuing")}, AlternateChains: [][][]byte{{[]byte("cross-a")}, {[]byte("cross-b"), []byte("bridge")}}}}}, nil
}
func (baseCA) CRL(context.Context, *ca.CRLRequest) (*ca.CRLResponse, error) {
	return nil, ca.ErrUnknownIssuer
}

// fullCA adds the capabilities.
type fullCA struct{ baseCA }

func (fullCA) ListCertificates(_ context.Context, r *ca.ListCertificatesRequest) (*ca.ListCertificatesResponse, error) {
	return &ca.ListCertificatesResponse{Certificates: []ca.CertificateInfo{{Serial: "01", Status: r.Status, Issuer: r.Issuer}}, Next: "01"}, nil
}
func (fullCA) RotateIssuer(_ context.Context, r *ca.RotateRequest) (*ca.RotateResponse, error) {
	if r.KMS == "nope" {
		return nil, ca.ErrUnknownKMS
	}
	return &ca.RotateResponse{Issuer: r.Issuer, Generation: 2, KMS: r.KMS, Algorithm: r.Algorithm}, nil
}
func (fullCA) Initialize(context.Context, *ca.InitializeRequest) (*ca.InitializeResponse, error) {
	return nil, ca.ErrAlreadyInitialized
}

func (fullCA) IssueOnce(_ context.Context, r *ca.IssueOnceRequest) (*ca.IssueOnceResponse, error) {
	if r.Key == "taken" {
		return nil, ca.ErrAlreadyIssued
	}
	// The answer carries what arrived, to check nothing was lost.
	return &ca.IssueOnceResponse{Replayed: r.Key == "again", Issued: ca.IssueResponse{Serial: r.Key, Certificate: r.Request.CSR,
		Chain: [][]byte{[]byte(r.Request.Profile), []byte(r.Request.DNSNames[0]), []byte(r.Request.Lifetime.String())}}}, nil
}

func serve(t *testing.T, register func(*grpc.Server)) *Client {
	t.Helper()
	ln := bufconn.Listen(1 << 20)
	s := grpc.NewServer()
	register(s)
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(s.Stop)
	cc, err := grpc.NewClient("passthrough:///buf", grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
		return ln.DialContext(ctx)
	}), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return NewClient(cc)
}

// oldServer is a plugin built before minor 1: the RPCs are Unimplemented.
type oldServer struct{ cav1.UnimplementedCAServer }

func TestCapabilitiesAcrossTheShim(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name     string
		register func(*grpc.Server)
	}{
		{"without the capabilities", func(s *grpc.Server) { Register(s, baseCA{}) }},
		{"older plugin", func(s *grpc.Server) { cav1.RegisterCAServer(s, oldServer{}) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := serve(t, tc.register)
			if _, err := c.ListCertificates(ctx, &ca.ListCertificatesRequest{}); !errors.Is(err, errdef.ErrNotImplemented) {
				t.Fatalf("list: %v", err)
			}
			if _, err := c.RotateIssuer(ctx, &ca.RotateRequest{}); !errors.Is(err, errdef.ErrNotImplemented) {
				t.Fatalf("rotate: %v", err)
			}
			if _, err := c.Initialize(ctx, &ca.InitializeRequest{}); !errors.Is(err, errdef.ErrNotImplemented) {
				t.Fatalf("init: %v", err)
			}
			if _, err := c.IssueOnce(ctx, &ca.IssueOnceRequest{Key: "k", Request: ca.IssueRequest{CSR: []byte("csr")}}); !errors.Is(err, errdef.ErrNotImplemented) {
				t.Fatalf("issue once: %v", err)
			}
		})
	}
	c := serve(t, func(s *grpc.Server) { Register(s, fullCA{}) })
	l, err := c.ListCertificates(ctx, &ca.ListCertificatesRequest{Status: ca.StatusRevoked, Issuer: "issuing.1"})
	if err != nil || l.Next != "01" || len(l.Certificates) != 1 || l.Certificates[0].Status != ca.StatusRevoked || l.Certificates[0].Issuer != "issuing.1" {
		t.Fatalf("list: %+v %v", l, err)
	}
	r, err := c.RotateIssuer(ctx, &ca.RotateRequest{Issuer: "issuing", KMS: "hsm", Algorithm: "ML-DSA-87"})
	if err != nil || r.Generation != 2 || r.KMS != "hsm" || r.Algorithm != "ML-DSA-87" {
		t.Fatalf("rotate: %+v %v", r, err)
	}
	if _, err := c.RotateIssuer(ctx, &ca.RotateRequest{KMS: "nope"}); !errors.Is(err, ca.ErrUnknownKMS) {
		t.Fatalf("rotate: %v", err)
	}
	if _, err := c.Initialize(ctx, &ca.InitializeRequest{}); !errors.Is(err, ca.ErrAlreadyInitialized) {
		t.Fatalf("init: %v", err)
	}
	if _, err := c.Issue(ctx, &ca.IssueRequest{}); !errors.Is(err, ca.ErrNotInitialized) {
		t.Fatalf("issue: %v", err)
	}
	is, err := c.ListIssuers(ctx, &ca.ListIssuersRequest{})
	if err != nil || is.Issuers[0].Family != "issuing" || is.Issuers[0].Generation != 1 || is.Issuers[0].KMS != "soft" {
		t.Fatalf("issuers: %+v %v", is, err)
	}
	if got := fmt.Sprintf("%s %s", is.Issuers[0].Chain, is.Issuers[0].AlternateChains); got != "[issuing] [[cross-a] [cross-b bridge]]" {
		t.Fatalf("chains across the shim: %s", got)
	}
	o, err := c.IssueOnce(ctx, &ca.IssueOnceRequest{Key: "again", Request: ca.IssueRequest{CSR: []byte("csr"), Profile: "server",
		DNSNames: []string{"a.test"}, Lifetime: time.Hour}})
	if err != nil || !o.Replayed || o.Issued.Serial != "again" || string(o.Issued.Certificate) != "csr" ||
		fmt.Sprintf("%s", o.Issued.Chain) != "[server a.test 1h0m0s]" {
		t.Fatalf("issue once: %+v %v", o, err)
	}
	if _, err := c.IssueOnce(ctx, &ca.IssueOnceRequest{Key: "taken", Request: ca.IssueRequest{CSR: []byte("csr")}}); !errors.Is(err, ca.ErrAlreadyIssued) {
		t.Fatalf("issue once under a taken key: %v", err)
	}
	if got := Capabilities(fullCA{}); len(got) != 4 {
		t.Fatalf("capabilities %v", got)
	}
}
