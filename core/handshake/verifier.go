package handshake

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/maphash"
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
	// and must not keep chain; the Peer it returns must not alias chain
	// either (HandleFinish clears and reuses the buffer chain lies in once
	// it returns).
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
// intermediates are cached by their DER, parsed ML-DSA issuer keys by the
// key, and verified signatures by (algorithm, key, message, signature),
// each looked up by a seeded hash and compared in full (cachingVerifier),
// so a steady-state handshake costs one leaf parse and one signature
// verification by an already parsed issuer key.
type ChainVerifier struct {
	roots []*pqx509.Certificate
	known []*pqx509.Certificate // ChainVerifierOptions.Intermediates, parsed
	opts  ChainVerifierOptions
	sig   *cachingVerifier
	seed  maphash.Seed // of the caches' lookup hashes

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
	seed := maphash.MakeSeed()
	v := &ChainVerifier{opts: opts, seed: seed, sig: newCachingVerifier(opts.CacheSize, seed),
		inters: newBoundedCache[*pqx509.Certificate](opts.CacheSize)}
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
	// leaf.Raw is the parse's own copy of chain[0]; the rest of leaf
	// aliases chain, hence the copy of the key.
	return Peer{ID: id, PublicKey: append([]byte(nil), leaf.PublicKey.Raw...), Leaf: leaf.Raw,
		NotAfter: notAfter, Serial: new(big.Int).Set(leaf.SerialNumber)}, nil
}

// intermediate parses der or returns the cached parse.
func (v *ChainVerifier) intermediate(der []byte) (*pqx509.Certificate, error) {
	h := maphash.Bytes(v.seed, der)
	v.mu.Lock()
	c, ok := v.inters.get(h)
	v.mu.Unlock()
	if ok && bytes.Equal(c.Raw, der) {
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
// remembers verified signatures. Only successes are remembered, each with
// its own copy of everything verified (algorithm, key, message,
// signature), and a hit needs all of it equal, so a hit is as good as a
// verification.
//
// The caches are looked up by a seeded 64-bit hash (hash/maphash, keyed
// per process) of the bytes, then compared in full: both run at memory
// speed, where SHA-256 keys cost about 10 µs per handshake (the
// intermediate's TBS, key and signature are about 9 KB). A collision,
// which no peer can aim at without the seed, only costs a miss.
type cachingVerifier struct {
	seed maphash.Seed
	mu   sync.Mutex
	keys *boundedCache[parsedKey]
	ok   *boundedCache[verified]
}

// parsedKey is a cached ML-DSA-65 key: its encoding and its parse.
type parsedKey struct {
	raw []byte
	pk  *mldsa65.PublicKey
}

// verified is a memoized successful verification (copies of its inputs).
type verified struct {
	alg           string
	pub, msg, sig []byte
}

func newCachingVerifier(n int, seed maphash.Seed) *cachingVerifier {
	return &cachingVerifier{seed: seed, keys: newBoundedCache[parsedKey](n), ok: newBoundedCache[verified](n)}
}

// leafVerifier is the cachingVerifier of one VerifyChain call: it checks
// the leaf's own signature (recognized by its backing array: pqx509 passes
// the parsed leaf's Signature) with the cached issuer key but without the
// memo of verified signatures. A leaf comes back only when its agent
// reconnects, rarely within the memo's few hundred entries, and the memo
// would keep a copy of the leaf's TBS (about 5 KB with an ML-DSA-65 key)
// and signature. The chain's other signatures, the same for many agents,
// keep the memo.
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
	var h maphash.Hash
	h.SetSeed(c.seed)
	var l [8]byte
	for _, p := range [][]byte{[]byte(alg), pub, msg, sig} {
		be.PutUint64(l[:], uint64(len(p)))
		h.Write(l[:])
		h.Write(p)
	}
	memo := h.Sum64()
	c.mu.Lock()
	e, hit := c.ok.get(memo)
	c.mu.Unlock()
	if hit && e.alg == alg && bytes.Equal(e.sig, sig) && bytes.Equal(e.msg, msg) && bytes.Equal(e.pub, pub) {
		return nil
	}
	if err := c.verify(alg, pub, msg, sig); err != nil {
		return err
	}
	e = verified{alg: alg, pub: bytes.Clone(pub), msg: bytes.Clone(msg), sig: bytes.Clone(sig)}
	c.mu.Lock()
	c.ok.put(memo, e)
	c.mu.Unlock()
	return nil
}

// verify checks one signature, ML-DSA-65 with a cached parsed key.
func (c *cachingVerifier) verify(alg string, pub, msg, sig []byte) error {
	if alg != pqx509.MLDSA65 {
		return pqx509.DefaultVerifier.Verify(alg, pub, msg, sig)
	}
	kh := maphash.Bytes(c.seed, pub)
	c.mu.Lock()
	k, ok := c.keys.get(kh)
	c.mu.Unlock()
	pk := k.pk
	if !ok || !bytes.Equal(k.raw, pub) {
		var err error
		if pk, err = parseMLDSA65(pub); err != nil {
			return fmt.Errorf("%v: %w", err, pqx509.ErrBadKey)
		}
		c.mu.Lock()
		c.keys.put(kh, parsedKey{raw: bytes.Clone(pub), pk: pk})
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
	m     map[uint64]V
	order []uint64 // ring of keys in insertion order
	head  int
}

func newBoundedCache[V any](n int) *boundedCache[V] {
	return &boundedCache[V]{n: n, m: make(map[uint64]V, n), order: make([]uint64, 0, n)}
}

func (b *boundedCache[V]) get(k uint64) (V, bool) { v, ok := b.m[k]; return v, ok }

func (b *boundedCache[V]) put(k uint64, v V) {
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
