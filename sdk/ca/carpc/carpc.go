// Package carpc is the gRPC shim of the ca plugin kind: Client turns a
// connection into a ca.CA (and ca.OCSPResponder), Server serves one. Errors
// cross in-band (sdk/errdef). The shim only translates.
package carpc

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/avonzt/avon/sdk/ca"
	"github.com/avonzt/avon/sdk/errdef"
	cav1 "github.com/avonzt/avon/sdk/proto/ca/v1"
)

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func fromTS(t *timestamppb.Timestamp) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.AsTime()
}

// Client is a ca.CA backed by a remote plugin.
type Client struct{ c cav1.CAClient }

// NewClient returns a client over cc.
func NewClient(cc grpc.ClientConnInterface) *Client { return &Client{c: cav1.NewCAClient(cc)} }

func (c *Client) Issue(ctx context.Context, r *ca.IssueRequest) (*ca.IssueResponse, error) {
	p := &cav1.IssueRequest{Csr: r.CSR, PublicKey: r.PublicKey, PublicKeyAlgorithm: r.PublicKeyAlgorithm, Profile: r.Profile,
		Issuer: r.Issuer, CommonName: r.CommonName, DnsNames: r.DNSNames, IpAddresses: r.IPAddresses, Uris: r.URIs}
	if r.Lifetime != 0 {
		p.Lifetime = durationpb.New(r.Lifetime)
	}
	resp, err := c.c.Issue(ctx, p)
	if err != nil {
		return nil, errdef.FromStatus(err)
	}
	return &ca.IssueResponse{Certificate: resp.GetCertificate(), Chain: resp.GetChain(), Serial: resp.GetSerial(),
		NotBefore: fromTS(resp.GetNotBefore()), NotAfter: fromTS(resp.GetNotAfter())}, nil
}

func (c *Client) Revoke(ctx context.Context, r *ca.RevokeRequest) (*ca.RevokeResponse, error) {
	if _, err := c.c.Revoke(ctx, &cav1.RevokeRequest{Serial: r.Serial, Reason: int32(r.Reason), Time: ts(r.Time)}); err != nil {
		return nil, errdef.FromStatus(err)
	}
	return &ca.RevokeResponse{}, nil
}

func (c *Client) GetCertificate(ctx context.Context, r *ca.GetCertificateRequest) (*ca.GetCertificateResponse, error) {
	resp, err := c.c.GetCertificate(ctx, &cav1.GetCertificateRequest{Serial: r.Serial})
	if err != nil {
		return nil, errdef.FromStatus(err)
	}
	return &ca.GetCertificateResponse{Certificate: resp.GetCertificate(), Status: ca.Status(resp.GetStatus()),
		RevokedAt: fromTS(resp.GetRevokedAt()), RevocationReason: int(resp.GetRevocationReason())}, nil
}

func (c *Client) ListIssuers(ctx context.Context, _ *ca.ListIssuersRequest) (*ca.ListIssuersResponse, error) {
	resp, err := c.c.ListIssuers(ctx, &cav1.ListIssuersRequest{})
	if err != nil {
		return nil, errdef.FromStatus(err)
	}
	out := &ca.ListIssuersResponse{}
	for _, i := range resp.GetIssuers() {
		out.Issuers = append(out.Issuers, ca.Issuer{Name: i.GetName(), Algorithm: i.GetAlgorithm(), Certificate: i.GetCertificate(), Default: i.GetDefault()})
	}
	return out, nil
}

func (c *Client) CRL(ctx context.Context, r *ca.CRLRequest) (*ca.CRLResponse, error) {
	resp, err := c.c.CRL(ctx, &cav1.CRLRequest{Issuer: r.Issuer})
	if err != nil {
		return nil, errdef.FromStatus(err)
	}
	return &ca.CRLResponse{CRL: resp.GetCrl(), ThisUpdate: fromTS(resp.GetThisUpdate()), NextUpdate: fromTS(resp.GetNextUpdate())}, nil
}

func (c *Client) RespondOCSP(ctx context.Context, r *ca.OCSPRequest) (*ca.OCSPResponse, error) {
	resp, err := c.c.RespondOCSP(ctx, &cav1.OCSPRequest{Request: r.Request})
	if err != nil {
		return nil, errdef.FromStatus(err)
	}
	return &ca.OCSPResponse{Response: resp.GetResponse()}, nil
}

// Server serves a ca.CA over gRPC.
type Server struct {
	cav1.UnimplementedCAServer
	impl ca.CA
}

// Register registers impl on s.
func Register(s grpc.ServiceRegistrar, impl ca.CA) { cav1.RegisterCAServer(s, &Server{impl: impl}) }

// Capabilities lists the optional capabilities impl offers.
func Capabilities(impl ca.CA) []string {
	if _, ok := impl.(ca.OCSPResponder); ok {
		return []string{"ca.ocsp_responder"}
	}
	return nil
}

func (s *Server) Issue(ctx context.Context, p *cav1.IssueRequest) (*cav1.IssueResponse, error) {
	r, err := s.impl.Issue(ctx, &ca.IssueRequest{CSR: p.GetCsr(), PublicKey: p.GetPublicKey(), PublicKeyAlgorithm: p.GetPublicKeyAlgorithm(),
		Profile: p.GetProfile(), Issuer: p.GetIssuer(), CommonName: p.GetCommonName(), DNSNames: p.GetDnsNames(),
		IPAddresses: p.GetIpAddresses(), URIs: p.GetUris(), Lifetime: p.GetLifetime().AsDuration()})
	if err != nil {
		return nil, errdef.ToStatus(err)
	}
	return &cav1.IssueResponse{Certificate: r.Certificate, Chain: r.Chain, Serial: r.Serial, NotBefore: ts(r.NotBefore), NotAfter: ts(r.NotAfter)}, nil
}

func (s *Server) Revoke(ctx context.Context, p *cav1.RevokeRequest) (*cav1.RevokeResponse, error) {
	if _, err := s.impl.Revoke(ctx, &ca.RevokeRequest{Serial: p.GetSerial(), Reason: int(p.GetReason()), Time: fromTS(p.GetTime())}); err != nil {
		return nil, errdef.ToStatus(err)
	}
	return &cav1.RevokeResponse{}, nil
}

func (s *Server) GetCertificate(ctx context.Context, p *cav1.GetCertificateRequest) (*cav1.GetCertificateResponse, error) {
	r, err := s.impl.GetCertificate(ctx, &ca.GetCertificateRequest{Serial: p.GetSerial()})
	if err != nil {
		return nil, errdef.ToStatus(err)
	}
	return &cav1.GetCertificateResponse{Certificate: r.Certificate, Status: string(r.Status), RevokedAt: ts(r.RevokedAt), RevocationReason: int32(r.RevocationReason)}, nil
}

func (s *Server) ListIssuers(ctx context.Context, _ *cav1.ListIssuersRequest) (*cav1.ListIssuersResponse, error) {
	r, err := s.impl.ListIssuers(ctx, &ca.ListIssuersRequest{})
	if err != nil {
		return nil, errdef.ToStatus(err)
	}
	out := &cav1.ListIssuersResponse{}
	for _, i := range r.Issuers {
		out.Issuers = append(out.Issuers, &cav1.Issuer{Name: i.Name, Algorithm: i.Algorithm, Certificate: i.Certificate, Default: i.Default})
	}
	return out, nil
}

func (s *Server) CRL(ctx context.Context, p *cav1.CRLRequest) (*cav1.CRLResponse, error) {
	r, err := s.impl.CRL(ctx, &ca.CRLRequest{Issuer: p.GetIssuer()})
	if err != nil {
		return nil, errdef.ToStatus(err)
	}
	return &cav1.CRLResponse{Crl: r.CRL, ThisUpdate: ts(r.ThisUpdate), NextUpdate: ts(r.NextUpdate)}, nil
}

func (s *Server) RespondOCSP(ctx context.Context, p *cav1.OCSPRequest) (*cav1.OCSPResponse, error) {
	o, ok := s.impl.(ca.OCSPResponder)
	if !ok {
		return nil, errdef.ToStatus(fmt.Errorf("respond ocsp: %w", errdef.ErrNotImplemented))
	}
	r, err := o.RespondOCSP(ctx, &ca.OCSPRequest{Request: p.GetRequest()})
	if err != nil {
		return nil, errdef.ToStatus(err)
	}
	return &cav1.OCSPResponse{Response: r.Response}, nil
}

var (
	_ ca.CA            = (*Client)(nil)
	_ ca.OCSPResponder = (*Client)(nil)
)
