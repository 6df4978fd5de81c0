package handshake

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"time"

	"github.com/cloudflare/circl/sign/mldsa/mldsa65"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"github.com/avonzt/avon/internal/pqx509"
)

// Peer is the authenticated identity of the other side.
type Peer struct {
	// ID is the agent id (from the leaf's avon://agent/<id> URI) on the
	// responder; on the initiator, "gateway:" and the hex responder_id.
	ID string
	// PublicKey is the peer's ML-DSA-65 public key.
	PublicKey []byte
	// Leaf is the peer's leaf certificate (DER); nil on the initiator, which
	// pins the gateway's key from its enrollment bundle.
	Leaf []byte
	// NotAfter is the earliest expiry in the verified chain: the session
	// must not outlive it. Zero on the initiator.
	NotAfter time.Time
	// Serial is the leaf certificate's serial number (the revocation
	// key), so the caller need not parse Leaf again; nil on the
	// initiator.
	Serial *big.Int
}

// PeerVerifier checks an initiator's certificate chain (leaf first, then
// intermediates, each DER) at the responder's calibrated time now.
type PeerVerifier interface {
	// VerifyChain returns the peer when the chain verifies to a trusted root
	// at now, the leaf is an agent certificate with an ML-DSA-65 key, and
	// the leaf is not revoked. Errors wrap ErrCertificate (and ErrExpired),
	// ErrRevoked or ErrStatusUnavailable. It must be safe for concurrent use
	// and must not keep chain.
	VerifyChain(chain [][]byte, now time.Time) (Peer, error)
}

// ChainVerifierOptions configure NewChainVerifier.
type ChainVerifierOptions struct {
	// Revoked reports whether the leaf with this serial is revoked. An
	// error fails the handshake closed (ErrStatusUnavailable). Nil means no
	// status check (tests, or status checked elsewhere).
	Revoked func(serial *big.Int) (bool, error)
	// KeyUsages the chain must allow; default ClientAuth (agent profile).
	KeyUsages []x509.ExtKeyUsage
	// CacheSize bounds each cache (parsed intermediates, parsed issuer
	// keys, verified signatures); default 256.
	CacheSize int
	// Intermediates are issuing CA certificates (DER) the responder
	// already knows, offered to path building besides those the initiator
	// sent. An agent whose chain exceeds MaxChainLen (an ML-DSA-65 leaf
	// and an issuing CA signed by an ML-DSA-87 root are about 12.5 KB)
	// sends its leaf alone, and the gateway completes the path with these.
	Intermediates [][]byte
}

// ChainVerifier is the PeerVerifier of the gateway, on internal/pqx509:
// full path validation (signatures, validity, cA/keyCertSign, pathLen,
// extended key usage, name constraints) against fixed roots. Parsed
// intermediates are cached by the SHA-256 of their DER, parsed ML-DSA
// issuer keys by the SHA-256 of the key, and verified signatures by the
// hash of (algorithm, key, message, signature), so a steady-state handshake
// costs one leaf parse and one signature verification by an already
// parsed issuer key.
type ChainVerifier struct {
	roots []*pqx509.Certificate
	known []*pqx509.Certificate // ChainVerifierOptions.Intermediates, parsed
	opts  ChainVerifierOptions
	sig   *cachingVerifier

	mu     sync.Mutex // guards inters
	inters *boundedCache[*pqx509.Certificate]
}

// NewChainVerifier returns a verifier trusting roots (DER certificates).
func NewChainVerifier(roots [][]byte, opts ChainVerifierOptions) (*ChainVerifier, error) {
	if len(roots) == 0 {
		return nil, fmt.Errorf("handshake: chain verifier without roots: %w", ErrConfig)
	}
	if opts.CacheSize <= 0 {
		opts.CacheSize = 256
	}
	if len(opts.KeyUsages) == 0 {
		opts.KeyUsages = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	v := &ChainVerifier{opts: opts, sig: newCachingVerifier(opts.CacheSize), inters: newBoundedCache[*pqx509.Certificate](opts.CacheSize)}
	for i, der := range roots {
		c, err := pqx509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("handshake: root %d: %v: %w", i, err, ErrConfig)
		}
		v.roots = append(v.roots, c)
	}
	for i, der := range opts.Intermediates {
		c, err := pqx509.ParseCertificate(bytes.Clone(der))
		if err != nil {
			return nil, fmt.Errorf("handshake: intermediate %d: %v: %w", i, err, ErrConfig)
		}
		v.known = append(v.known, c)
	}
	v.opts.Intermediates = nil
	return v, nil
}

// VerifyChain implements PeerVerifier.
func (v *ChainVerifier) VerifyChain(chain [][]byte, now time.Time) (Peer, error) {
	if len(chain) == 0 || len(chain) > MaxChainCerts {
		return Peer{}, fmt.Errorf("handshake: chain of %d certificates: %w", len(chain), ErrCertificate)
	}
	leaf, err := pqx509.ParseCertificate(chain[0])
	if err != nil {
		return Peer{}, fmt.Errorf("handshake: leaf certificate: %w: %w", ErrCertificate, err)
	}
	inters := make([]*pqx509.Certificate, 0, len(chain)-1+len(v.known))
	for i, der := range chain[1:] {
		c, err := v.intermediate(der)
		if err != nil {
			return Peer{}, fmt.Errorf("handshake: chain certificate %d: %w: %w", i+1, ErrCertificate, err)
		}
		inters = append(inters, c)
	}
	inters = append(inters, v.known...)
	chains, err := pqx509.Verify(leaf, pqx509.VerifyOptions{Roots: v.roots, Intermediates: inters, CurrentTime: now,
		KeyUsages: v.opts.KeyUsages, Verifier: &leafVerifier{c: v.sig, leafSig: leaf.Signature}})
	if err != nil {
		var ce *pqx509.CertificateInvalidError
		if errors.As(err, &ce) && ce.Reason == pqx509.Expired {
			return Peer{}, fmt.Errorf("handshake: peer chain: %w: %w: %w", ErrCertificate, ErrExpired, err)
		}
		return Peer{}, fmt.Errorf("handshake: peer chain: %w: %w", ErrCertificate, err)
	}
	if leaf.PublicKey.Algorithm != pqx509.MLDSA65 || len(leaf.PublicKey.Raw) != PublicKeyLen {
		return Peer{}, fmt.Errorf("handshake: leaf key is %s, suite v1 needs ML-DSA-65: %w", leaf.PublicKey.Algorithm, ErrCertificate)
	}
	id := ""
	for _, u := range leaf.URIs {
		if rest, ok := strings.CutPrefix(u.String(), "avon://agent/"); ok && rest != "" {
			id = rest
		}
	}
	if id == "" {
		return Peer{}, fmt.Errorf("handshake: leaf has no avon://agent/ URI: %w", ErrCertificate)
	}
	if v.opts.Revoked != nil {
		revoked, err := v.opts.Revoked(leaf.SerialNumber)
		if err != nil {
			return Peer{}, fmt.Errorf("handshake: status of serial %x: %w: %w", leaf.SerialNumber, ErrStatusUnavailable, err)
		}
		if revoked {
			return Peer{}, fmt.Errorf("handshake: serial %x of agent %s: %w", leaf.SerialNumber, id, ErrRevoked)
		}
	}
	notAfter := leaf.NotAfter
	for _, c := range chains[0] {
		if c.NotAfter.Before(notAfter) {
			notAfter = c.NotAfter
		}
	}
	return Peer{ID: id, PublicKey: append([]byte(nil), leaf.PublicKey.Raw...), Leaf: append([]byte(nil), chain[0]...),
		NotAfter: notAfter, Serial: new(big.Int).Set(leaf.SerialNumber)}, nil
}

// intermediate parses der or returns the cached parse.
func (v *ChainVerifier) intermediate(der []byte) (*pqx509.Certificate, error) {
	h := sha256.Sum256(der)
	v.mu.Lock()
	c, ok := v.inters.get(h)
	v.mu.Unlock()
	if ok {
		return c, nil
	}
	// The parse aliases its input and the cache outlives it: copy.
	c, err := pqx509.ParseCertificate(bytes.Clone(der))
	if err != nil {
		return nil, err
	}
	v.mu.Lock()
	v.inters.put(h, c)
	v.mu.Unlock()
	return c, nil
}

// cachingVerifier is a pqx509.Verifier that keeps parsed ML-DSA-65 keys and
// remembers verified signatures. Only successes are remembered, keyed by a
// hash of everything verified, so a hit is as good as a verification.
type cachingVerifier struct {
	mu   sync.Mutex
	keys *boundedCache[*mldsa65.PublicKey]
	ok   *boundedCache[struct{}]
}

func newCachingVerifier(n int) *cachingVerifier {
	return &cachingVerifier{keys: newBoundedCache[*mldsa65.PublicKey](n), ok: newBoundedCache[struct{}](n)}
}

// leafVerifier is the cachingVerifier of one VerifyChain call: it checks
// the leaf's own signature (recognized by its backing array: pqx509 passes
// the parsed leaf's Signature) with the cached issuer key but without the
// memo of verified signatures. A leaf comes back only when its agent
// reconnects, rarely within the memo's few hundred entries, and keying the
// memo means hashing the leaf's whole TBS (about 5 KB with an ML-DSA-65
// key), the issuer key and the signature (about 5.3 KB) on every
// handshake. The chain's other signatures, the same for many agents, keep
// the memo.
type leafVerifier struct {
	c       *cachingVerifier
	leafSig []byte
}

func (l *leafVerifier) Verify(alg string, pub, msg, sig []byte) error {
	if len(sig) > 0 && len(sig) == len(l.leafSig) && &sig[0] == &l.leafSig[0] {
		return l.c.verify(alg, pub, msg, sig)
	}
	return l.c.Verify(alg, pub, msg, sig)
}

func (c *cachingVerifier) Verify(alg string, pub, msg, sig []byte) error {
	h := sha256.New()
	var l [8]byte
	for _, p := range [][]byte{[]byte(alg), pub, msg, sig} {
		be.PutUint64(l[:], uint64(len(p)))
		h.Write(l[:])
		h.Write(p)
	}
	var memo [32]byte
	h.Sum(memo[:0])
	c.mu.Lock()
	_, hit := c.ok.get(memo)
	c.mu.Unlock()
	if hit {
		return nil
	}
	if err := c.verify(alg, pub, msg, sig); err != nil {
		return err
	}
	c.mu.Lock()
	c.ok.put(memo, struct{}{})
	c.mu.Unlock()
	return nil
}

// verify checks one signature, ML-DSA-65 with a cached parsed key.
func (c *cachingVerifier) verify(alg string, pub, msg, sig []byte) error {
	if alg != pqx509.MLDSA65 {
		return pqx509.DefaultVerifier.Verify(alg, pub, msg, sig)
	}
	kh := sha256.Sum256(pub)
	c.mu.Lock()
	pk, ok := c.keys.get(kh)
	c.mu.Unlock()
	if !ok {
		var err error
		if pk, err = parseMLDSA65(pub); err != nil {
			return fmt.Errorf("%v: %w", err, pqx509.ErrBadKey)
		}
		c.mu.Lock()
		c.keys.put(kh, pk)
		c.mu.Unlock()
	}
	if !mldsa65.Verify(pk, msg, nil, sig) {
		return fmt.Errorf("handshake: ML-DSA-65 certificate signature: %w", pqx509.ErrBadSignature)
	}
	return nil
}

// boundedCache is a map of at most n entries; when full, the oldest entry
// (insertion order) goes. Not safe for concurrent use.
type boundedCache[V any] struct {
	n     int
	m     map[[32]byte]V
	order [][32]byte // ring of keys in insertion order
	head  int
}

func newBoundedCache[V any](n int) *boundedCache[V] {
	return &boundedCache[V]{n: n, m: make(map[[32]byte]V, n), order: make([][32]byte, 0, n)}
}

func (b *boundedCache[V]) get(k [32]byte) (V, bool) { v, ok := b.m[k]; return v, ok }

func (b *boundedCache[V]) put(k [32]byte, v V) {
	if _, ok := b.m[k]; ok {
		b.m[k] = v
		return
	}
	if len(b.order) < b.n {
		b.order = append(b.order, k)
	} else {
		delete(b.m, b.order[b.head])
		b.order[b.head] = k
		b.head = (b.head + 1) % b.n
	}
	b.m[k] = v
}

// splitChain splits the concatenated DER of the chain into certificates.
func splitChain(b []byte) ([][]byte, error) {
	s := cryptobyte.String(b)
	var out [][]byte
	for !s.Empty() {
		if len(out) == MaxChainCerts {
			return nil, fmt.Errorf("handshake: more than %d certificates in the chain: %w", MaxChainCerts, ErrMalformed)
		}
		var el cryptobyte.String
		if !s.ReadASN1Element(&el, cbasn1.SEQUENCE) {
			return nil, fmt.Errorf("handshake: certificate %d of the chain is not a DER SEQUENCE: %w", len(out), ErrMalformed)
		}
		out = append(out, []byte(el))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("handshake: empty chain: %w", ErrMalformed)
	}
	return out, nil
}

// ResponderID is the responder_id of a gateway: SHA-256 of the
// SubjectPublicKeyInfo of its ML-DSA-65 key, as in its certificate.
func ResponderID(pub []byte) ([IDLen]byte, error) {
	spki, err := pqx509.MarshalSPKI(pqx509.PublicKey{Algorithm: pqx509.MLDSA65, Raw: pub})
	if err != nil {
		return [IDLen]byte{}, fmt.Errorf("handshake: gateway key: %v: %w", err, ErrConfig)
	}
	return sha256.Sum256(spki), nil
}

// ResponderIDFromCertificate is the responder_id of a gateway certificate.
func ResponderIDFromCertificate(der []byte) ([IDLen]byte, error) {
	c, err := pqx509.ParseCertificate(der)
	if err != nil {
		return [IDLen]byte{}, fmt.Errorf("handshake: gateway certificate: %v: %w", err, ErrConfig)
	}
	return sha256.Sum256(c.RawSubjectPublicKeyInfo), nil
}

func gatewayPeerID(id [IDLen]byte) string { return "gateway:" + hex.EncodeToString(id[:]) }

var _ PeerVerifier = (*ChainVerifier)(nil)
