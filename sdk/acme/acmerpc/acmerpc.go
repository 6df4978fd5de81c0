// Package acmerpc is the gRPC shim of the acme plugin kind. The shim only
// translates; errors cross in-band (sdk/errdef).
package acmerpc

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/avonzt/avon/sdk/acme"
	"github.com/avonzt/avon/sdk/errdef"
	acmev1 "github.com/avonzt/avon/sdk/proto/acme/v1"
)

func toHeader(h map[string][]string) map[string]*acmev1.HeaderValues {
	if len(h) == 0 {
		return nil
	}
	out := make(map[string]*acmev1.HeaderValues, len(h))
	for k, v := range h {
		out[k] = &acmev1.HeaderValues{Values: v}
	}
	return out
}

func fromHeader(h map[string]*acmev1.HeaderValues) map[string][]string {
	if len(h) == 0 {
		return nil
	}
	out := make(map[string][]string, len(h))
	for k, v := range h {
		out[k] = v.GetValues()
	}
	return out
}

// Client is an acme.Server backed by a remote plugin.
type Client struct{ c acmev1.ACMEClient }

// NewClient returns a client over cc.
func NewClient(cc grpc.ClientConnInterface) *Client { return &Client{c: acmev1.NewACMEClient(cc)} }

func (c *Client) HandleHTTP(ctx context.Context, r *acme.HTTPRequest) (*acme.HTTPResponse, error) {
	if r == nil {
		return nil, fmt.Errorf("nil request: %w", errdef.ErrInvalidArgument)
	}
	if len(r.Body) > acme.MaxBodySize {
		return nil, fmt.Errorf("body of %d bytes: %w", len(r.Body), acme.ErrBodyTooLarge)
	}
	resp, err := c.c.HandleHTTP(ctx, &acmev1.HTTPRequest{Method: r.Method, Path: r.Path, RawQuery: r.RawQuery,
		Header: toHeader(r.Header), Body: r.Body, RemoteAddr: r.RemoteAddr, BaseUrl: r.BaseURL})
	if err != nil {
		return nil, errdef.FromStatus(err)
	}
	return &acme.HTTPResponse{Status: int(resp.GetStatus()), Header: fromHeader(resp.GetHeader()), Body: resp.GetBody()}, nil
}

func (c *Client) Tick(ctx context.Context, r *acme.TickRequest) (*acme.TickResponse, error) {
	if _, err := c.c.Tick(ctx, &acmev1.TickRequest{Now: timestamppb.New(r.Now)}); err != nil {
		return nil, errdef.FromStatus(err)
	}
	return &acme.TickResponse{}, nil
}

// Server serves an acme.Server over gRPC.
type Server struct {
	acmev1.UnimplementedACMEServer
	impl acme.Server
}

// Register registers impl on s.
func Register(s grpc.ServiceRegistrar, impl acme.Server) {
	acmev1.RegisterACMEServer(s, &Server{impl: impl})
}

// Capabilities lists the optional capabilities impl offers.
func Capabilities(impl acme.Server) []string {
	if _, ok := impl.(acme.Maintainer); ok {
		return []string{"acme.maintainer"}
	}
	return nil
}

func (s *Server) HandleHTTP(ctx context.Context, p *acmev1.HTTPRequest) (*acmev1.HTTPResponse, error) {
	if len(p.GetBody()) > acme.MaxBodySize {
		return nil, errdef.ToStatus(fmt.Errorf("body of %d bytes: %w", len(p.GetBody()), acme.ErrBodyTooLarge))
	}
	r, err := s.impl.HandleHTTP(ctx, &acme.HTTPRequest{Method: p.GetMethod(), Path: p.GetPath(), RawQuery: p.GetRawQuery(),
		Header: fromHeader(p.GetHeader()), Body: p.GetBody(), RemoteAddr: p.GetRemoteAddr(), BaseURL: p.GetBaseUrl()})
	if err != nil {
		return nil, errdef.ToStatus(err)
	}
	return &acmev1.HTTPResponse{Status: int32(r.Status), Header: toHeader(r.Header), Body: r.Body}, nil
}

func (s *Server) Tick(ctx context.Context, p *acmev1.TickRequest) (*acmev1.TickResponse, error) {
	m, ok := s.impl.(acme.Maintainer)
	if !ok {
		return nil, errdef.ToStatus(fmt.Errorf("tick: %w", errdef.ErrNotImplemented))
	}
	if _, err := m.Tick(ctx, &acme.TickRequest{Now: p.GetNow().AsTime()}); err != nil {
		return nil, errdef.ToStatus(err)
	}
	return &acmev1.TickResponse{}, nil
}

var (
	_ acme.Server     = (*Client)(nil)
	_ acme.Maintainer = (*Client)(nil)
)
