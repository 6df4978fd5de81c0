package kmsrpc

import (
	"context"
	"fmt"

	"google.golang.org/grpc"

	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/kms"
	kmsv1 "github.com/avonzt/avon/sdk/proto/kms/v1"
)

// Server serves a kms.KMS over gRPC.
type Server struct {
	kmsv1.UnimplementedKMSServer
	impl kms.KMS
}

// Register registers impl on s.
func Register(s grpc.ServiceRegistrar, impl kms.KMS) {
	kmsv1.RegisterKMSServer(s, &Server{impl: impl})
}

// Capabilities lists the optional capabilities impl offers, by wire name.
func Capabilities(impl kms.KMS) []string {
	var caps []string
	if _, ok := impl.(kms.Exporter); ok {
		caps = append(caps, "kms.exporter")
	}
	if _, ok := impl.(kms.RandomSource); ok {
		caps = append(caps, "kms.random_source")
	}
	return caps
}

func (s *Server) GenerateKey(ctx context.Context, p *kmsv1.GenerateKeyRequest) (*kmsv1.KeyResponse, error) {
	r, err := s.impl.GenerateKey(ctx, &kms.GenerateKeyRequest{ID: p.GetId(), Algorithm: kms.Algorithm(p.GetAlgorithm()), Labels: p.GetLabels(), Exportable: p.GetExportable()})
	if err != nil {
		return nil, errdef.ToStatus(err)
	}
	return &kmsv1.KeyResponse{Key: keyToProto(r.Key)}, nil
}

func (s *Server) GetKey(ctx context.Context, p *kmsv1.GetKeyRequest) (*kmsv1.KeyResponse, error) {
	r, err := s.impl.GetKey(ctx, &kms.GetKeyRequest{ID: p.GetId()})
	if err != nil {
		return nil, errdef.ToStatus(err)
	}
	return &kmsv1.KeyResponse{Key: keyToProto(r.Key)}, nil
}

func (s *Server) ListKeys(ctx context.Context, p *kmsv1.ListKeysRequest) (*kmsv1.ListKeysResponse, error) {
	r, err := s.impl.ListKeys(ctx, &kms.ListKeysRequest{PageSize: int(p.GetPageSize()), PageToken: p.GetPageToken()})
	if err != nil {
		return nil, errdef.ToStatus(err)
	}
	out := &kmsv1.ListKeysResponse{NextPageToken: r.NextPageToken}
	for _, k := range r.Keys {
		out.Keys = append(out.Keys, keyToProto(k))
	}
	return out, nil
}

func (s *Server) PublicKey(ctx context.Context, p *kmsv1.PublicKeyRequest) (*kmsv1.PublicKeyResponse, error) {
	r, err := s.impl.PublicKey(ctx, &kms.PublicKeyRequest{ID: p.GetId(), Version: int(p.GetVersion())})
	if err != nil {
		return nil, errdef.ToStatus(err)
	}
	return &kmsv1.PublicKeyResponse{Algorithm: string(r.Algorithm), Version: u32(r.Version), PublicKey: r.PublicKey}, nil
}

func (s *Server) Sign(ctx context.Context, p *kmsv1.SignRequest) (*kmsv1.SignResponse, error) {
	r, err := s.impl.Sign(ctx, &kms.SignRequest{ID: p.GetId(), Message: p.GetMessage(), Context: p.GetContext()})
	if err != nil {
		return nil, errdef.ToStatus(err)
	}
	return &kmsv1.SignResponse{Signature: r.Signature, Version: u32(r.Version)}, nil
}

func (s *Server) Verify(ctx context.Context, p *kmsv1.VerifyRequest) (*kmsv1.VerifyResponse, error) {
	r, err := s.impl.Verify(ctx, &kms.VerifyRequest{ID: p.GetId(), Version: int(p.GetVersion()), Message: p.GetMessage(), Context: p.GetContext(), Signature: p.GetSignature()})
	if err != nil {
		return nil, errdef.ToStatus(err)
	}
	return &kmsv1.VerifyResponse{Valid: r.Valid}, nil
}

func (s *Server) Decapsulate(ctx context.Context, p *kmsv1.DecapsulateRequest) (*kmsv1.DecapsulateResponse, error) {
	r, err := s.impl.Decapsulate(ctx, &kms.DecapsulateRequest{ID: p.GetId(), Version: int(p.GetVersion()), Ciphertext: p.GetCiphertext()})
	if err != nil {
		return nil, errdef.ToStatus(err)
	}
	return &kmsv1.DecapsulateResponse{SharedSecret: r.SharedSecret}, nil
}

func (s *Server) Encrypt(ctx context.Context, p *kmsv1.EncryptRequest) (*kmsv1.EncryptResponse, error) {
	r, err := s.impl.Encrypt(ctx, &kms.EncryptRequest{ID: p.GetId(), Plaintext: p.GetPlaintext(), AAD: p.GetAad()})
	if err != nil {
		return nil, errdef.ToStatus(err)
	}
	return &kmsv1.EncryptResponse{Ciphertext: r.Ciphertext, Version: u32(r.Version)}, nil
}

func (s *Server) Decrypt(ctx context.Context, p *kmsv1.DecryptRequest) (*kmsv1.DecryptResponse, error) {
	r, err := s.impl.Decrypt(ctx, &kms.DecryptRequest{ID: p.GetId(), Ciphertext: p.GetCiphertext(), AAD: p.GetAad()})
	if err != nil {
		return nil, errdef.ToStatus(err)
	}
	return &kmsv1.DecryptResponse{Plaintext: r.Plaintext}, nil
}

func (s *Server) RotateKey(ctx context.Context, p *kmsv1.RotateKeyRequest) (*kmsv1.KeyResponse, error) {
	r, err := s.impl.RotateKey(ctx, &kms.RotateKeyRequest{ID: p.GetId()})
	if err != nil {
		return nil, errdef.ToStatus(err)
	}
	return &kmsv1.KeyResponse{Key: keyToProto(r.Key)}, nil
}

func (s *Server) DestroyKey(ctx context.Context, p *kmsv1.DestroyKeyRequest) (*kmsv1.KeyResponse, error) {
	r, err := s.impl.DestroyKey(ctx, &kms.DestroyKeyRequest{ID: p.GetId(), Version: int(p.GetVersion())})
	if err != nil {
		return nil, errdef.ToStatus(err)
	}
	return &kmsv1.KeyResponse{Key: keyToProto(r.Key)}, nil
}

func (s *Server) ExportKey(ctx context.Context, p *kmsv1.ExportKeyRequest) (*kmsv1.ExportKeyResponse, error) {
	ex, ok := s.impl.(kms.Exporter)
	if !ok {
		return nil, errdef.ToStatus(fmt.Errorf("export key: %w", errdef.ErrNotImplemented))
	}
	r, err := ex.ExportKey(ctx, &kms.ExportKeyRequest{ID: p.GetId(), Version: int(p.GetVersion())})
	if err != nil {
		return nil, errdef.ToStatus(err)
	}
	return &kmsv1.ExportKeyResponse{Algorithm: string(r.Algorithm), Version: u32(r.Version), PrivateKey: r.PrivateKey}, nil
}

func (s *Server) GenerateRandom(ctx context.Context, p *kmsv1.GenerateRandomRequest) (*kmsv1.GenerateRandomResponse, error) {
	rs, ok := s.impl.(kms.RandomSource)
	if !ok {
		return nil, errdef.ToStatus(fmt.Errorf("generate random: %w", errdef.ErrNotImplemented))
	}
	r, err := rs.GenerateRandom(ctx, &kms.GenerateRandomRequest{Length: int(p.GetLength())})
	if err != nil {
		return nil, errdef.ToStatus(err)
	}
	return &kmsv1.GenerateRandomResponse{Random: r.Random}, nil
}
