package kms

import (
	"context"
	"fmt"

	"github.com/avonzt/avon/sdk/errdef"
)

// Unimplemented answers every KMS method with errdef.ErrNotImplemented.
// Embed it to write a partial backend (or a test double) that keeps
// compiling when methods are added in a later minor protocol version.
type Unimplemented struct{}

func notImpl(m string) error { return fmt.Errorf("kms %s: %w", m, errdef.ErrNotImplemented) }

func (Unimplemented) GenerateKey(context.Context, *GenerateKeyRequest) (*GenerateKeyResponse, error) {
	return nil, notImpl("GenerateKey")
}
func (Unimplemented) GetKey(context.Context, *GetKeyRequest) (*GetKeyResponse, error) {
	return nil, notImpl("GetKey")
}
func (Unimplemented) ListKeys(context.Context, *ListKeysRequest) (*ListKeysResponse, error) {
	return nil, notImpl("ListKeys")
}
func (Unimplemented) PublicKey(context.Context, *PublicKeyRequest) (*PublicKeyResponse, error) {
	return nil, notImpl("PublicKey")
}
func (Unimplemented) Sign(context.Context, *SignRequest) (*SignResponse, error) {
	return nil, notImpl("Sign")
}
func (Unimplemented) Verify(context.Context, *VerifyRequest) (*VerifyResponse, error) {
	return nil, notImpl("Verify")
}
func (Unimplemented) Decapsulate(context.Context, *DecapsulateRequest) (*DecapsulateResponse, error) {
	return nil, notImpl("Decapsulate")
}
func (Unimplemented) Encrypt(context.Context, *EncryptRequest) (*EncryptResponse, error) {
	return nil, notImpl("Encrypt")
}
func (Unimplemented) Decrypt(context.Context, *DecryptRequest) (*DecryptResponse, error) {
	return nil, notImpl("Decrypt")
}
func (Unimplemented) RotateKey(context.Context, *RotateKeyRequest) (*RotateKeyResponse, error) {
	return nil, notImpl("RotateKey")
}
func (Unimplemented) DestroyKey(context.Context, *DestroyKeyRequest) (*DestroyKeyResponse, error) {
	return nil, notImpl("DestroyKey")
}

var _ KMS = Unimplemented{}
