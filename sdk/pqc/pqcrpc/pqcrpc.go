// Package pqcrpc is the gRPC shim of the pqc plugin kind: Client turns a
// connection into a pqc.Provider (and pqc.KEM), Server serves one.
// Errors cross in-band (sdk/errdef). The shim only translates.
package pqcrpc

import (
	"context"
	"fmt"

	"google.golang.org/grpc"

	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/pqc"
	pqcv1 "github.com/avonzt/avon/sdk/proto/pqc/v1"
)

// Client is a pqc.Provider and pqc.KEM backed by a remote plugin; a
// signature-only plugin answers the KEM methods with errdef.ErrNotImplemented.
type Client struct{ c pqcv1.PQCClient }

// NewClient returns a client over cc.
func NewClient(cc grpc.ClientConnInterface) *Client { return &Client{c: pqcv1.NewPQCClient(cc)} }

func (c *Client) ListAlgorithms(ctx context.Context, _ *pqc.ListAlgorithmsRequest) (*pqc.ListAlgorithmsResponse, error) {
	r, err := c.c.ListAlgorithms(ctx, &pqcv1.ListAlgorithmsRequest{})
	if err != nil {
		return nil, errdef.FromStatus(err)
	}
	out := &pqc.ListAlgorithmsResponse{}
	for _, a := range r.GetAlgorithms() {
		out.Algorithms = append(out.Algorithms, pqc.Algorithm{
			Name: a.GetName(), OID: a.GetOid(), Type: pqc.Type(a.GetType()),
			PublicKeySize: int(a.GetPublicKeySize()), PrivateKeySize: int(a.GetPrivateKeySize()),
			SignatureSize: int(a.GetSignatureSize()), CiphertextSize: int(a.GetCiphertextSize()),
			SharedSecretSize: int(a.GetSharedSecretSize()),
		})
	}
	return out, nil
}

func (c *Client) GenerateKey(ctx context.Context, req *pqc.GenerateKeyRequest) (*pqc.GenerateKeyResponse, error) {
	r, err := c.c.GenerateKey(ctx, &pqcv1.GenerateKeyRequest{Algorithm: req.Algorithm})
	if err != nil {
		return nil, errdef.FromStatus(err)
	}
	return &pqc.GenerateKeyResponse{PublicKey: r.GetPublicKey(), PrivateKey: r.GetPrivateKey()}, nil
}

func (c *Client) Sign(ctx context.Context, req *pqc.SignRequest) (*pqc.SignResponse, error) {
	r, err := c.c.Sign(ctx, &pqcv1.SignRequest{Algorithm: req.Algorithm, PrivateKey: req.PrivateKey, Message: req.Message, Context: req.Context})
	if err != nil {
		return nil, errdef.FromStatus(err)
	}
	return &pqc.SignResponse{Signature: r.GetSignature()}, nil
}

func (c *Client) Verify(ctx context.Context, req *pqc.VerifyRequest) (*pqc.VerifyResponse, error) {
	r, err := c.c.Verify(ctx, &pqcv1.VerifyRequest{Algorithm: req.Algorithm, PublicKey: req.PublicKey, Message: req.Message, Context: req.Context, Signature: req.Signature})
	if err != nil {
		return nil, errdef.FromStatus(err)
	}
	return &pqc.VerifyResponse{Valid: r.GetValid()}, nil
}

func (c *Client) Encapsulate(ctx context.Context, req *pqc.EncapsulateRequest) (*pqc.EncapsulateResponse, error) {
	r, err := c.c.Encapsulate(ctx, &pqcv1.EncapsulateRequest{Algorithm: req.Algorithm, PublicKey: req.PublicKey})
	if err != nil {
		return nil, errdef.FromStatus(err)
	}
	return &pqc.EncapsulateResponse{Ciphertext: r.GetCiphertext(), SharedSecret: r.GetSharedSecret()}, nil
}

func (c *Client) Decapsulate(ctx context.Context, req *pqc.DecapsulateRequest) (*pqc.DecapsulateResponse, error) {
	r, err := c.c.Decapsulate(ctx, &pqcv1.DecapsulateRequest{Algorithm: req.Algorithm, PrivateKey: req.PrivateKey, Ciphertext: req.Ciphertext})
	if err != nil {
		return nil, errdef.FromStatus(err)
	}
	return &pqc.DecapsulateResponse{SharedSecret: r.GetSharedSecret()}, nil
}

// Server serves a pqc.Provider over gRPC.
type Server struct {
	pqcv1.UnimplementedPQCServer
	impl pqc.Provider
}

// Register registers impl on s.
func Register(s grpc.ServiceRegistrar, impl pqc.Provider) {
	pqcv1.RegisterPQCServer(s, &Server{impl: impl})
}

// Capabilities lists the optional capabilities impl offers, by wire name.
func Capabilities(impl pqc.Provider) []string {
	if _, ok := impl.(pqc.KEM); ok {
		return []string{"pqc.kem"}
	}
	return nil
}

func (s *Server) ListAlgorithms(ctx context.Context, _ *pqcv1.ListAlgorithmsRequest) (*pqcv1.ListAlgorithmsResponse, error) {
	r, err := s.impl.ListAlgorithms(ctx, &pqc.ListAlgorithmsRequest{})
	if err != nil {
		return nil, errdef.ToStatus(err)
	}
	out := &pqcv1.ListAlgorithmsResponse{}
	for _, a := range r.Algorithms {
		out.Algorithms = append(out.Algorithms, &pqcv1.Algorithm{
			Name: a.Name, Oid: a.OID, Type: string(a.Type),
			PublicKeySize: uint32(a.PublicKeySize), PrivateKeySize: uint32(a.PrivateKeySize),
			SignatureSize: uint32(a.SignatureSize), CiphertextSize: uint32(a.CiphertextSize),
			SharedSecretSize: uint32(a.SharedSecretSize),
		})
	}
	return out, nil
}

func (s *Server) GenerateKey(ctx context.Context, p *pqcv1.GenerateKeyRequest) (*pqcv1.GenerateKeyResponse, error) {
	r, err := s.impl.GenerateKey(ctx, &pqc.GenerateKeyRequest{Algorithm: p.GetAlgorithm()})
	if err != nil {
		return nil, errdef.ToStatus(err)
	}
	return &pqcv1.GenerateKeyResponse{PublicKey: r.PublicKey, PrivateKey: r.PrivateKey}, nil
}

func (s *Server) Sign(ctx context.Context, p *pqcv1.SignRequest) (*pqcv1.SignResponse, error) {
	r, err := s.impl.Sign(ctx, &pqc.SignRequest{Algorithm: p.GetAlgorithm(), PrivateKey: p.GetPrivateKey(), Message: p.GetMessage(), Context: p.GetContext()})
	if err != nil {
		return nil, errdef.ToStatus(err)
	}
	return &pqcv1.SignResponse{Signature: r.Signature}, nil
}

func (s *Server) Verify(ctx context.Context, p *pqcv1.VerifyRequest) (*pqcv1.VerifyResponse, error) {
	r, err := s.impl.Verify(ctx, &pqc.VerifyRequest{Algorithm: p.GetAlgorithm(), PublicKey: p.GetPublicKey(), Message: p.GetMessage(), Context: p.GetContext(), Signature: p.GetSignature()})
	if err != nil {
		return nil, errdef.ToStatus(err)
	}
	return &pqcv1.VerifyResponse{Valid: r.Valid}, nil
}

func (s *Server) Encapsulate(ctx context.Context, p *pqcv1.EncapsulateRequest) (*pqcv1.EncapsulateResponse, error) {
	k, ok := s.impl.(pqc.KEM)
	if !ok {
		return nil, errdef.ToStatus(fmt.Errorf("encapsulate: %w", errdef.ErrNotImplemented))
	}
	r, err := k.Encapsulate(ctx, &pqc.EncapsulateRequest{Algorithm: p.GetAlgorithm(), PublicKey: p.GetPublicKey()})
	if err != nil {
		return nil, errdef.ToStatus(err)
	}
	return &pqcv1.EncapsulateResponse{Ciphertext: r.Ciphertext, SharedSecret: r.SharedSecret}, nil
}

func (s *Server) Decapsulate(ctx context.Context, p *pqcv1.DecapsulateRequest) (*pqcv1.DecapsulateResponse, error) {
	k, ok := s.impl.(pqc.KEM)
	if !ok {
		return nil, errdef.ToStatus(fmt.Errorf("decapsulate: %w", errdef.ErrNotImplemented))
	}
	r, err := k.Decapsulate(ctx, &pqc.DecapsulateRequest{Algorithm: p.GetAlgorithm(), PrivateKey: p.GetPrivateKey(), Ciphertext: p.GetCiphertext()})
	if err != nil {
		return nil, errdef.ToStatus(err)
	}
	return &pqcv1.DecapsulateResponse{SharedSecret: r.SharedSecret}, nil
}

var (
	_ pqc.Provider = (*Client)(nil)
	_ pqc.KEM      = (*Client)(nil)
)
