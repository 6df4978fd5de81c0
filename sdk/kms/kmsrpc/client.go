// Package kmsrpc is the gRPC shim of the kms plugin kind: Client turns a
// connection into a kms.KMS, Server turns a kms.KMS into a gRPC service.
// Errors cross in-band (sdk/errdef), so errors.Is works on both sides.
// The shim holds no state and does no work beyond translation.
package kmsrpc

import (
	"context"
	"fmt"

	"google.golang.org/grpc"

	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/kms"
	kmsv1 "github.com/avonzt/avon/sdk/proto/kms/v1"
)

// Client is a kms.KMS backed by a remote plugin. It also implements the
// optional capabilities; a plugin that lacks one answers
// errdef.ErrNotImplemented.
type Client struct{ c kmsv1.KMSClient }

// NewClient returns a client over cc.
func NewClient(cc grpc.ClientConnInterface) *Client { return &Client{c: kmsv1.NewKMSClient(cc)} }

func (c *Client) GenerateKey(ctx context.Context, req *kms.GenerateKeyRequest) (*kms.GenerateKeyResponse, error) {
	r, err := c.c.GenerateKey(ctx, &kmsv1.GenerateKeyRequest{Id: req.ID, Algorithm: string(req.Algorithm), Labels: req.Labels, Exportable: req.Exportable})
	if err != nil {
		return nil, errdef.FromStatus(err)
	}
	return &kms.GenerateKeyResponse{Key: keyFromProto(r.GetKey())}, nil
}

func (c *Client) GetKey(ctx context.Context, req *kms.GetKeyRequest) (*kms.GetKeyResponse, error) {
	r, err := c.c.GetKey(ctx, &kmsv1.GetKeyRequest{Id: req.ID})
	if err != nil {
		return nil, errdef.FromStatus(err)
	}
	return &kms.GetKeyResponse{Key: keyFromProto(r.GetKey())}, nil
}

func (c *Client) ListKeys(ctx context.Context, req *kms.ListKeysRequest) (*kms.ListKeysResponse, error) {
	if req.PageSize < 0 {
		return nil, fmt.Errorf("page size %d: %w", req.PageSize, errdef.ErrInvalidArgument)
	}
	r, err := c.c.ListKeys(ctx, &kmsv1.ListKeysRequest{PageSize: u32(req.PageSize), PageToken: req.PageToken})
	if err != nil {
		return nil, errdef.FromStatus(err)
	}
	out := &kms.ListKeysResponse{NextPageToken: r.GetNextPageToken()}
	for _, k := range r.GetKeys() {
		out.Keys = append(out.Keys, keyFromProto(k))
	}
	return out, nil
}

func (c *Client) PublicKey(ctx context.Context, req *kms.PublicKeyRequest) (*kms.PublicKeyResponse, error) {
	if err := checkVersion(req.Version); err != nil {
		return nil, err
	}
	r, err := c.c.PublicKey(ctx, &kmsv1.PublicKeyRequest{Id: req.ID, Version: u32(req.Version)})
	if err != nil {
		return nil, errdef.FromStatus(err)
	}
	return &kms.PublicKeyResponse{Algorithm: kms.Algorithm(r.GetAlgorithm()), Version: int(r.GetVersion()), PublicKey: r.GetPublicKey()}, nil
}

func (c *Client) Sign(ctx context.Context, req *kms.SignRequest) (*kms.SignResponse, error) {
	r, err := c.c.Sign(ctx, &kmsv1.SignRequest{Id: req.ID, Message: req.Message, Context: req.Context})
	if err != nil {
		return nil, errdef.FromStatus(err)
	}
	return &kms.SignResponse{Signature: r.GetSignature(), Version: int(r.GetVersion())}, nil
}

func (c *Client) Verify(ctx context.Context, req *kms.VerifyRequest) (*kms.VerifyResponse, error) {
	if err := checkVersion(req.Version); err != nil {
		return nil, err
	}
	r, err := c.c.Verify(ctx, &kmsv1.VerifyRequest{Id: req.ID, Version: u32(req.Version), Message: req.Message, Context: req.Context, Signature: req.Signature})
	if err != nil {
		return nil, errdef.FromStatus(err)
	}
	return &kms.VerifyResponse{Valid: r.GetValid()}, nil
}

func (c *Client) Decapsulate(ctx context.Context, req *kms.DecapsulateRequest) (*kms.DecapsulateResponse, error) {
	if err := checkVersion(req.Version); err != nil {
		return nil, err
	}
	r, err := c.c.Decapsulate(ctx, &kmsv1.DecapsulateRequest{Id: req.ID, Version: u32(req.Version), Ciphertext: req.Ciphertext})
	if err != nil {
		return nil, errdef.FromStatus(err)
	}
	return &kms.DecapsulateResponse{SharedSecret: r.GetSharedSecret()}, nil
}

func (c *Client) Encrypt(ctx context.Context, req *kms.EncryptRequest) (*kms.EncryptResponse, error) {
	r, err := c.c.Encrypt(ctx, &kmsv1.EncryptRequest{Id: req.ID, Plaintext: req.Plaintext, Aad: req.AAD})
	if err != nil {
		return nil, errdef.FromStatus(err)
	}
	return &kms.EncryptResponse{Ciphertext: r.GetCiphertext(), Version: int(r.GetVersion())}, nil
}

func (c *Client) Decrypt(ctx context.Context, req *kms.DecryptRequest) (*kms.DecryptResponse, error) {
	r, err := c.c.Decrypt(ctx, &kmsv1.DecryptRequest{Id: req.ID, Ciphertext: req.Ciphertext, Aad: req.AAD})
	if err != nil {
		return nil, errdef.FromStatus(err)
	}
	return &kms.DecryptResponse{Plaintext: r.GetPlaintext()}, nil
}

func (c *Client) RotateKey(ctx context.Context, req *kms.RotateKeyRequest) (*kms.RotateKeyResponse, error) {
	r, err := c.c.RotateKey(ctx, &kmsv1.RotateKeyRequest{Id: req.ID})
	if err != nil {
		return nil, errdef.FromStatus(err)
	}
	return &kms.RotateKeyResponse{Key: keyFromProto(r.GetKey())}, nil
}

func (c *Client) DestroyKey(ctx context.Context, req *kms.DestroyKeyRequest) (*kms.DestroyKeyResponse, error) {
	if err := checkVersion(req.Version); err != nil {
		return nil, err
	}
	r, err := c.c.DestroyKey(ctx, &kmsv1.DestroyKeyRequest{Id: req.ID, Version: u32(req.Version)})
	if err != nil {
		return nil, errdef.FromStatus(err)
	}
	return &kms.DestroyKeyResponse{Key: keyFromProto(r.GetKey())}, nil
}

func (c *Client) ExportKey(ctx context.Context, req *kms.ExportKeyRequest) (*kms.ExportKeyResponse, error) {
	if err := checkVersion(req.Version); err != nil {
		return nil, err
	}
	r, err := c.c.ExportKey(ctx, &kmsv1.ExportKeyRequest{Id: req.ID, Version: u32(req.Version)})
	if err != nil {
		return nil, errdef.FromStatus(err)
	}
	return &kms.ExportKeyResponse{Algorithm: kms.Algorithm(r.GetAlgorithm()), Version: int(r.GetVersion()), PrivateKey: r.GetPrivateKey()}, nil
}

func (c *Client) GenerateRandom(ctx context.Context, req *kms.GenerateRandomRequest) (*kms.GenerateRandomResponse, error) {
	r, err := c.c.GenerateRandom(ctx, &kmsv1.GenerateRandomRequest{Length: u32(req.Length)})
	if err != nil {
		return nil, errdef.FromStatus(err)
	}
	return &kms.GenerateRandomResponse{Random: r.GetRandom()}, nil
}

var (
	_ kms.KMS          = (*Client)(nil)
	_ kms.Exporter     = (*Client)(nil)
	_ kms.RandomSource = (*Client)(nil)
)

// checkVersion rejects what the wire cannot carry: versions are unsigned there.
func checkVersion(v int) error {
	if v < 0 {
		return fmt.Errorf("key version %d: %w", v, errdef.ErrInvalidArgument)
	}
	return nil
}
