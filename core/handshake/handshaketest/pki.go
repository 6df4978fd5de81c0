package handshaketest

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net/url"
	"sync"
	"time"

	"github.com/avonzt/avon/internal/pqx509"
)

// Validity of the CAs around Options.Now.
const (
	RootNotBefore    = -365 * 24 * time.Hour     // root valid from Now minus a year
	RootNotAfter     = 10 * 365 * 24 * time.Hour // to Now plus ten years
	IssuingNotBefore = -30 * 24 * time.Hour      // issuing CA valid from Now minus 30 days
	IssuingNotAfter  = 5 * 365 * 24 * time.Hour  // to Now plus five years
)

// FirstLeafSerial is the serial of the first certificate a PKI issues
// (the root is 1, the issuing CA 2); each further one takes the next.
const FirstLeafSerial = 101

// Options configure New.
type Options struct {
	// Name starts the CA names ("<Name> Root CA", "<Name> Agents CA")
	// and the labels of their keys ("<Name> root", "<Name> intermediate").
	// Default "AVON Test".
	Name string
	// Now anchors the CA validity (RootNotBefore and the others); default
	// time.Now().
	Now time.Time
	// Keys returns the key for a label; nil draws fresh keys from
	// crypto/rand. LabelKeys gives a deterministic PKI.
	Keys func(label string) (*Key, error)
}

// PKI is a root CA and an issuing CA under it (path length 0). Agent
// certificates come from the issuing CA, gateway certificates from the
// root. It is safe for concurrent use.
type PKI struct {
	Root, Issuing       *pqx509.Certificate
	RootDER, IssuingDER []byte
	RootKey, IssuingKey *Key

	mu     sync.Mutex // guards serial
	serial int64
}

// Leaf is an end-entity certificate and its key.
type Leaf struct {
	// Chain is the certificate followed by its issuers up to, not
	// including, the root: what the handshake carries.
	Chain  [][]byte
	Serial *big.Int
	Key    *Key
}

// New makes the two CAs.
func New(opts Options) (*PKI, error) {
	if opts.Name == "" {
		opts.Name = "AVON Test"
	}
	if opts.Now.IsZero() {
		opts.Now = time.Now()
	}
	if opts.Keys == nil {
		opts.Keys = func(string) (*Key, error) { return NewKey(nil) }
	}
	ctx := context.Background()
	p := &PKI{serial: FirstLeafSerial - 1}
	var err error
	if p.RootKey, err = opts.Keys(opts.Name + " root"); err != nil {
		return nil, fmt.Errorf("handshaketest: root key: %w", err)
	}
	p.RootDER, err = pqx509.CreateCertificate(ctx, &pqx509.Template{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: opts.Name + " Root CA"},
		NotBefore: opts.Now.Add(RootNotBefore), NotAfter: opts.Now.Add(RootNotAfter),
		PublicKey: p.RootKey.Public(), KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true, IsCA: true, MaxPathLen: 1,
	}, nil, p.RootKey)
	if err != nil {
		return nil, fmt.Errorf("handshaketest: root: %w", err)
	}
	if p.Root, err = pqx509.ParseCertificate(p.RootDER); err != nil {
		return nil, fmt.Errorf("handshaketest: root: %w", err)
	}
	if p.IssuingKey, err = opts.Keys(opts.Name + " intermediate"); err != nil {
		return nil, fmt.Errorf("handshaketest: issuing key: %w", err)
	}
	p.IssuingDER, err = pqx509.CreateCertificate(ctx, &pqx509.Template{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: opts.Name + " Agents CA"},
		NotBefore: opts.Now.Add(IssuingNotBefore), NotAfter: opts.Now.Add(IssuingNotAfter),
		PublicKey: p.IssuingKey.Public(), KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true, IsCA: true, MaxPathLen: 0, MaxPathLenZero: true,
	}, p.Root, p.RootKey)
	if err != nil {
		return nil, fmt.Errorf("handshaketest: issuing ca: %w", err)
	}
	if p.Issuing, err = pqx509.ParseCertificate(p.IssuingDER); err != nil {
		return nil, fmt.Errorf("handshaketest: issuing ca: %w", err)
	}
	return p, nil
}

// Roots returns the root certificate as handshake.NewChainVerifier takes
// its roots.
func (p *PKI) Roots() [][]byte { return [][]byte{p.RootDER} }

func (p *PKI) nextSerial() *big.Int {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.serial++
	return big.NewInt(p.serial)
}

// IssueAgent issues the agent certificate of id for key, valid [notBefore,
// notAfter], from the issuing CA: subject CN id, URI avon://agent/<id>,
// digitalSignature, clientAuth. Its chain is (leaf, issuing CA).
func (p *PKI) IssueAgent(id string, key *Key, notBefore, notAfter time.Time) (*Leaf, error) {
	u, err := url.Parse("avon://agent/" + id)
	if err != nil {
		return nil, fmt.Errorf("handshaketest: agent id %q: %w", id, err)
	}
	serial := p.nextSerial()
	der, err := pqx509.CreateCertificate(context.Background(), &pqx509.Template{
		SerialNumber: serial, Subject: pkix.Name{CommonName: id},
		NotBefore: notBefore, NotAfter: notAfter, PublicKey: key.Public(),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs: []*url.URL{u},
	}, p.Issuing, p.IssuingKey)
	if err != nil {
		return nil, fmt.Errorf("handshaketest: agent %q: %w", id, err)
	}
	return &Leaf{Chain: [][]byte{der, p.IssuingDER}, Serial: serial, Key: key}, nil
}

// IssueGateway issues a gateway certificate for key, valid [notBefore,
// notAfter], from the root: subject CN and DNS name name,
// digitalSignature, serverAuth. Its chain is the leaf alone.
func (p *PKI) IssueGateway(name string, key *Key, notBefore, notAfter time.Time) (*Leaf, error) {
	serial := p.nextSerial()
	der, err := pqx509.CreateCertificate(context.Background(), &pqx509.Template{
		SerialNumber: serial, Subject: pkix.Name{CommonName: name},
		NotBefore: notBefore, NotAfter: notAfter, PublicKey: key.Public(),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{name},
	}, p.Root, p.RootKey)
	if err != nil {
		return nil, fmt.Errorf("handshaketest: gateway %q: %w", name, err)
	}
	return &Leaf{Chain: [][]byte{der}, Serial: serial, Key: key}, nil
}
