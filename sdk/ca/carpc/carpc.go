// Package carpc is the gRPC shim of the ca plugin kind: Client turns a
// connection into a ca.CA (and the optional ca.OCSPResponder,
// ca.CertificateLister, ca.Rotator, ca.Initializer and ca.OnceIssuer: a plugin without one
// answers errdef.ErrNotImplemented), Server serves one. Errors
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

func issueToProto(r *ca.IssueRequest) *cav1.IssueRequest {
	p := &cav1.IssueRequest{Csr: r.CSR, PublicKey: r.PublicKey, PublicKeyAlgorithm: r.PublicKeyAlgorithm, Profile: r.Profile,
		Issuer: r.Issuer, CommonName: r.CommonName, DnsNames: r.DNSNames, IpAddresses: r.IPAddresses, Uris: r.URIs}
	if r.Lifetime != 0 {
		p.Lifetime = durationpb.New(r.Lifetime)
	}
	return p
}

func issueFromProto(p *cav1.IssueRequest) ca.IssueRequest {
	return ca.IssueRequest{CSR: p.GetCsr(), PublicKey: p.GetPublicKey(), PublicKeyAlgorithm: p.GetPublicKeyAlgorithm(),
		Profile: p.GetProfile(), Issuer: p.GetIssuer(), CommonName: p.GetCommonName(), DNSNames: p.GetDnsNames(),
		IPAddresses: p.GetIpAddresses(), URIs: p.GetUris(), Lifetime: p.GetLifetime().AsDuration()}
}

func issuedFromProto(p *cav1.IssueResponse) ca.IssueResponse {
	return ca.IssueResponse{Certificate: p.GetCertificate(), Chain: p.GetChain(), Serial: p.GetSerial(),
		NotBefore: fromTS(p.GetNotBefore()), NotAfter: fromTS(p.GetNotAfter())}
}

func issuedToProto(r *ca.IssueResponse) *cav1.IssueResponse {
	return &cav1.IssueResponse{Certificate: r.Certificate, Chain: r.Chain, Serial: r.Serial, NotBefore: ts(r.NotBefore), NotAfter: ts(r.NotAfter)}
}

func (c *Client) Issue(ctx context.Context, r *ca.IssueRequest) (*ca.IssueResponse, error) {
	resp, err := c.c.Issue(ctx, issueToProto(r))
	if err != nil {
		return nil, errdef.FromStatus(err)
	}
	out := issuedFromProto(resp)
	return &out, nil
}

// IssueOnce implements ca.OnceIssuer; a plugin (or a core in between)
// without it answers errdef.ErrNotImplemented, having issued nothing.
func (c *Client) IssueOnce(ctx context.Context, r *ca.IssueOnceRequest) (*ca.IssueOnceResponse, error) {
	resp, err := c.c.IssueOnce(ctx, &cav1.IssueOnceRequest{Key: r.Key, Request: issueToProto(&r.Request)})
	if err != nil {
		return nil, errdef.FromStatus(err)
	}
	if resp.GetIssued() == nil {
		return nil, fmt.Errorf("issue once: the CA answered without a certificate: %w", errdef.ErrInternal)
	}
	return &ca.IssueOnceResponse{Issued: issuedFromProto(resp.GetIssued()), Replayed: resp.GetReplayed()}, nil
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
		out.Issuers = append(out.Issuers, issuerFromProto(i))
	}
	return out, nil
}

func issuerFromProto(i *cav1.Issuer) ca.Issuer {
	out := ca.Issuer{Name: i.GetName(), Algorithm: i.GetAlgorithm(), Certificate: i.GetCertificate(), Default: i.GetDefault(),
		Family: i.GetFamily(), Generation: int(i.GetGeneration()), Active: i.GetActive(), KMS: i.GetKms(), Chain: i.GetChain()}
	for _, c := range i.GetAlternateChains() {
		out.AlternateChains = append(out.AlternateChains, c.GetCertificates())
	}
	return out
}

func issuerToProto(i ca.Issuer) *cav1.Issuer {
	out := &cav1.Issuer{Name: i.Name, Algorithm: i.Algorithm, Certificate: i.Certificate, Default: i.Default,
		Family: i.Family, Generation: int32(i.Generation), Active: i.Active, Kms: i.KMS, Chain: i.Chain}
	for _, c := range i.AlternateChains {
		out.AlternateChains = append(out.AlternateChains, &cav1.Chain{Certificates: c})
	}
	return out
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

// ListCertificates implements ca.CertificateLister; a plugin without it
// answers errdef.ErrNotImplemented.
func (c *Client) ListCertificates(ctx context.Context, r *ca.ListCertificatesRequest) (*ca.ListCertificatesResponse, error) {
	resp, err := c.c.ListCertificates(ctx, &cav1.ListCertificatesRequest{After: r.After, Limit: int32(r.Limit), Status: string(r.Status),
		Profile: r.Profile, Issuer: r.Issuer})
	if err != nil {
		return nil, errdef.FromStatus(err)
	}
	out := &ca.ListCertificatesResponse{Next: resp.GetNext()}
	for _, ci := range resp.GetCertificates() {
		out.Certificates = append(out.Certificates, ca.CertificateInfo{Serial: ci.GetSerial(), Subject: ci.GetSubject(), SANs: ci.GetSans(),
			Profile: ci.GetProfile(), Issuer: ci.GetIssuer(), Status: ca.Status(ci.GetStatus()), NotBefore: fromTS(ci.GetNotBefore()),
			NotAfter: fromTS(ci.GetNotAfter()), RevokedAt: fromTS(ci.GetRevokedAt()), Reason: int(ci.GetReason())})
	}
	return out, nil
}

// RotateIssuer implements ca.Rotator; a plugin without it answers
// errdef.ErrNotImplemented.
func (c *Client) RotateIssuer(ctx context.Context, r *ca.RotateRequest) (*ca.RotateResponse, error) {
	resp, err := c.c.RotateIssuer(ctx, &cav1.RotateRequest{Issuer: r.Issuer, Kms: r.KMS, Algorithm: r.Algorithm})
	if err != nil {
		return nil, errdef.FromStatus(err)
	}
	return &ca.RotateResponse{Issuer: resp.GetIssuer(), Generation: int(resp.GetGeneration()), Serial: resp.GetSerial(), KMS: resp.GetKms(),
		Algorithm: resp.GetAlgorithm(), NotAfter: fromTS(resp.GetNotAfter()), Certificate: resp.GetCertificate()}, nil
}

// Initialize implements ca.Initializer; a plugin without it answers
// errdef.ErrNotImplemented.
func (c *Client) Initialize(ctx context.Context, r *ca.InitializeRequest) (*ca.InitializeResponse, error) {
	resp, err := c.c.Initialize(ctx, &cav1.InitializeRequest{Kms: r.KMS})
	if err != nil {
		return nil, errdef.FromStatus(err)
	}
	out := &ca.InitializeResponse{Root: resp.GetRoot(), RootSHA256: resp.GetRootSha256(), RootSubject: resp.GetRootSubject()}
	for _, i := range resp.GetIssuers() {
		out.Issuers = append(out.Issuers, issuerFromProto(i))
	}
	return out, nil
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
	var out []string
	if _, ok := impl.(ca.OCSPResponder); ok {
		out = append(out, "ca.ocsp_responder")
	}
	if _, ok := impl.(ca.CertificateLister); ok {
		out = append(out, "ca.certificate_lister")
	}
	if _, ok := impl.(ca.Rotator); ok {
		out = append(out, "ca.rotator")
	}
	if _, ok := impl.(ca.Initializer); ok {
		out = append(out, "ca.initializer")
	}
	if _, ok := impl.(ca.OnceIssuer); ok {
		out = append(out, "ca.once_issuer")
	}
	return out
}

func (s *Server) Issue(ctx context.Context, p *cav1.IssueRequest) (*cav1.IssueResponse, error) {
	req := issueFromProto(p)
	r, err := s.impl.Issue(ctx, &req)
	if err != nil {
		return nil, errdef.ToStatus(err)
	}
	return issuedToProto(r), nil
}

func (s *Server) IssueOnce(ctx context.Context, p *cav1.IssueOnceRequest) (*cav1.IssueOnceResponse, error) {
	o, ok := s.impl.(ca.OnceIssuer)
	if !ok {
		return nil, errdef.ToStatus(fmt.Errorf("issue once: %w", errdef.ErrNotImplemented))
	}
	r, err := o.IssueOnce(ctx, &ca.IssueOnceRequest{Key: p.GetKey(), Request: issueFromProto(p.GetRequest())})
	if err != nil {
		return nil, errdef.ToStatus(err)
	}
	return &cav1.IssueOnceResponse{Issued: issuedToProto(&r.Issued), Replayed: r.Replayed}, nil
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
		out.Issuers = append(out.Issuers, issuerToProto(i))
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

func (s *Server) ListCertificates(ctx context.Context, p *cav1.ListCertificatesRequest) (*cav1.ListCertificatesResponse, error) {
	l, ok := s.impl.(ca.CertificateLister)
	if !ok {
		return nil, errdef.ToStatus(fmt.Errorf("list certificates: %w", errdef.ErrNotImplemented))
	}
	r, err := l.ListCertificates(ctx, &ca.ListCertificatesRequest{After: p.GetAfter(), Limit: int(p.GetLimit()), Status: ca.Status(p.GetStatus()),
		Profile: p.GetProfile(), Issuer: p.GetIssuer()})
	if err != nil {
		return nil, errdef.ToStatus(err)
	}
	out := &cav1.ListCertificatesResponse{Next: r.Next}
	for _, c := range r.Certificates {
		out.Certificates = append(out.Certificates, &cav1.CertificateInfo{Serial: c.Serial, Subject: c.Subject, Sans: c.SANs, Profile: c.Profile,
			Issuer: c.Issuer, Status: string(c.Status), NotBefore: ts(c.NotBefore), NotAfter: ts(c.NotAfter), RevokedAt: ts(c.RevokedAt),
			Reason: int32(c.Reason)})
	}
	return out, nil
}

func (s *Server) RotateIssuer(ctx context.Context, p *cav1.RotateRequest) (*cav1.RotateResponse, error) {
	ro, ok := s.impl.(ca.Rotator)
	if !ok {
		return nil, errdef.ToStatus(fmt.Errorf("rotate issuer: %w", errdef.ErrNotImplemented))
	}
	r, err := ro.RotateIssuer(ctx, &ca.RotateRequest{Issuer: p.GetIssuer(), KMS: p.GetKms(), Algorithm: p.GetAlgorithm()})
	if err != nil {
		return nil, errdef.ToStatus(err)
	}
	return &cav1.RotateResponse{Issuer: r.Issuer, Generation: int32(r.Generation), Serial: r.Serial, Kms: r.KMS, Algorithm: r.Algorithm,
		NotAfter: ts(r.NotAfter), Certificate: r.Certificate}, nil
}

func (s *Server) Initialize(ctx context.Context, p *cav1.InitializeRequest) (*cav1.InitializeResponse, error) {
	in, ok := s.impl.(ca.Initializer)
	if !ok {
		return nil, errdef.ToStatus(fmt.Errorf("initialize: %w", errdef.ErrNotImplemented))
	}
	r, err := in.Initialize(ctx, &ca.InitializeRequest{KMS: p.GetKms()})
	if err != nil {
		return nil, errdef.ToStatus(err)
	}
	out := &cav1.InitializeResponse{Root: r.Root, RootSha256: r.RootSHA256, RootSubject: r.RootSubject}
	for _, i := range r.Issuers {
		out.Issuers = append(out.Issuers, issuerToProto(i))
	}
	return out, nil
}

var (
	_ ca.CA                = (*Client)(nil)
	_ ca.OCSPResponder     = (*Client)(nil)
	_ ca.CertificateLister = (*Client)(nil)
	_ ca.Rotator           = (*Client)(nil)
	_ ca.Initializer       = (*Client)(nil)
	_ ca.OnceIssuer        = (*Client)(nil)
)
