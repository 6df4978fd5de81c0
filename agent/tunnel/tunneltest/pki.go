// Package tunneltest is a test gateway for the agent's tunnel engine
// (agent/tunnel): the responder side of protocol v1 assembled from the real
// parts (core/handshake's Responder, core/tunnel/cookie's Checker,
// core/tunnel/frag, core/tunnel/transport keypairs, core/pulse's Tracker)
// over any wireguard-go conn.Bind, plus a small CA that issues an agent
// chain and a gateway certificate.
//
// It is for tests only: one process, every session in memory, no policy,
// no rate limits, no persistence. It must not be imported by production
// code.
package tunneltest

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net/url"
	"time"

	"github.com/cloudflare/circl/sign/mldsa/mldsa65"

	"github.com/avonzt/avon/core/handshake"
	"github.com/avonzt/avon/internal/pqx509"
)

// Key is an ML-DSA-65 key pair usable as a certificate signer and, through
// HandshakeSigner, as a handshake signer.
type Key struct {
	Seed [mldsa65.SeedSize]byte
	sk   *mldsa65.PrivateKey
	pub  []byte
}

// NewKey draws a fresh key.
func NewKey() (*Key, error) {
	var k Key
	if _, err := rand.Read(k.Seed[:]); err != nil {
		return nil, err
	}
	pk, sk := mldsa65.NewKeyFromSeed(&k.Seed)
	k.sk = sk
	k.pub, _ = pk.MarshalBinary()
	return &k, nil
}

// Public implements pqx509.Signer.
func (k *Key) Public() pqx509.PublicKey {
	return pqx509.PublicKey{Algorithm: pqx509.MLDSA65, Raw: k.pub}
}

// Raw returns the encoded public key.
func (k *Key) Raw() []byte { return k.pub }

// Sign implements pqx509.Signer (pure ML-DSA-65, empty context).
func (k *Key) Sign(_ context.Context, msg []byte) ([]byte, error) {
	sig := make([]byte, mldsa65.SignatureSize)
	return sig, mldsa65.SignTo(k.sk, msg, nil, true, sig)
}

// HandshakeSigner returns a handshake.Signer over the key.
func (k *Key) HandshakeSigner() (*handshake.MLDSA65Signer, error) {
	return handshake.NewMLDSA65Signer(k.sk, rand.Reader)
}

// PKI is a root CA, one agent with its chain and one gateway.
type PKI struct {
	RootDER    []byte
	AgentID    string
	AgentKey   *Key
	AgentChain [][]byte // leaf, intermediate
	GatewayKey *Key
	GatewayDER []byte
}

// NewPKI issues root -> intermediate -> agent leaf (avon://agent/<id>,
// clientAuth) and root -> gateway (serverAuth), valid around now; the
// agent leaf expires at agentNotAfter.
func NewPKI(id string, now, agentNotAfter time.Time) (*PKI, error) {
	ctx := context.Background()
	rootKey, err := NewKey()
	if err != nil {
		return nil, err
	}
	rootDER, err := pqx509.CreateCertificate(ctx, &pqx509.Template{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "AVON Test Root"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(365 * 24 * time.Hour), PublicKey: rootKey.Public(),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true, MaxPathLen: 1,
	}, nil, rootKey)
	if err != nil {
		return nil, fmt.Errorf("root: %w", err)
	}
	root, err := pqx509.ParseCertificate(rootDER)
	if err != nil {
		return nil, err
	}
	interKey, err := NewKey()
	if err != nil {
		return nil, err
	}
	interDER, err := pqx509.CreateCertificate(ctx, &pqx509.Template{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "AVON Test Agents CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(300 * 24 * time.Hour), PublicKey: interKey.Public(),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true,
		MaxPathLen: 0, MaxPathLenZero: true,
	}, root, rootKey)
	if err != nil {
		return nil, fmt.Errorf("intermediate: %w", err)
	}
	inter, err := pqx509.ParseCertificate(interDER)
	if err != nil {
		return nil, err
	}
	p := &PKI{RootDER: rootDER, AgentID: id}
	if p.AgentKey, err = NewKey(); err != nil {
		return nil, err
	}
	u, _ := url.Parse("avon://agent/" + id)
	leaf, err := pqx509.CreateCertificate(ctx, &pqx509.Template{
		SerialNumber: big.NewInt(100), Subject: pkix.Name{CommonName: id},
		NotBefore: now.Add(-time.Hour), NotAfter: agentNotAfter, PublicKey: p.AgentKey.Public(),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs: []*url.URL{u},
	}, inter, interKey)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	p.AgentChain = [][]byte{leaf, interDER}
	if p.GatewayKey, err = NewKey(); err != nil {
		return nil, err
	}
	p.GatewayDER, err = pqx509.CreateCertificate(ctx, &pqx509.Template{
		SerialNumber: big.NewInt(200), Subject: pkix.Name{CommonName: "gateway"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(300 * 24 * time.Hour), PublicKey: p.GatewayKey.Public(),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{"gateway.test"},
	}, root, rootKey)
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	return p, nil
}
