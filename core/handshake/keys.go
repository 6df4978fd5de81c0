package handshake

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"hash"
	"io"
	"math/big"

	"github.com/cloudflare/circl/kem/xwing"
	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/hkdf"
)

// Labels of the key schedule. All start with "avon-v1 " so no key or
// signature of this protocol can be confused with another use of the same
// primitive.
const (
	labelProtocol    = "avon-v1 tunnel handshake"
	labelResponder   = "avon-v1 responder key"
	labelInitiator   = "avon-v1 initiator key"
	labelI2R         = "avon-v1 i2r"
	labelR2I         = "avon-v1 r2i"
	labelRekey       = "avon-v1 rekey"
	labelSessionID   = "avon-v1 session id"
	labelError       = "avon-v1 error"
	labelRekeyInit   = "avon-v1 rekey init"
	labelRekeyResp   = "avon-v1 rekey resp"
	contextResponder = "avon-v1 responder" // ML-DSA context of sig_r
	contextInitiator = "avon-v1 initiator" // ML-DSA context of sig_i
)

// th0 is the first transcript hash, a constant.
var th0 = sha256.Sum256([]byte(labelProtocol))

// transcript returns H(prev || parts...).
func transcript(prev [32]byte, parts ...[]byte) [32]byte {
	h := sha256.New()
	h.Write(prev[:])
	for _, p := range parts {
		h.Write(p)
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// extract is HKDF-Extract(salt, ikm) with SHA-256.
func extract(salt, ikm []byte) [32]byte {
	var prk [32]byte
	copy(prk[:], hkdf.Extract(sha256.New, ikm, salt))
	return prk
}

// expand is HKDF-Expand(prk, label || th, n) with SHA-256, n <= 32.
func expand(prk *[32]byte, label string, th []byte, out []byte) {
	newExpander(prk).expand(label, th, out)
}

// expander computes several HKDF-Expand outputs of at most 32 bytes under
// one prk. Each is the first block of RFC 5869's expansion,
// T(1) = HMAC-SHA-256(prk, info || 0x01), so one keyed HMAC serves them
// all (Reset returns it to its keyed state without rehashing the key).
type expander struct{ mac hash.Hash }

func newExpander(prk *[32]byte) expander { return expander{mac: hmac.New(sha256.New, prk[:])} }

// expand writes HKDF-Expand(prk, label || th, len(out)) to out
// (len(out) <= 32).
func (e expander) expand(label string, th []byte, out []byte) {
	var info [64]byte
	e.mac.Reset()
	if len(label)+1 <= len(info) {
		b := append(info[:0], label...)
		e.mac.Write(b)
	} else {
		e.mac.Write([]byte(label))
	}
	e.mac.Write(th)
	info[0] = 1
	e.mac.Write(info[:1])
	var t [32]byte
	e.mac.Sum(t[:0])
	copy(out, t[:])
	clear(t[:])
}

func expand32(prk *[32]byte, label string, th []byte) [32]byte {
	var k [32]byte
	expand(prk, label, th, k[:])
	return k
}

// signedTranscript is thc = H(th2 ‖ flags u32 ‖ credential hash), what
// sig_r signs and what th3 continues from: it binds the signing mode and
// the credential (32 zero bytes without one) even when the credential is
// not sent.
func signedTranscript(th2 [32]byte, flags uint32, cred *Credential) [32]byte {
	var f [4]byte
	be.PutUint32(f[:], flags)
	var h [CredentialHashLen]byte
	if cred != nil {
		h = cred.Hash
	}
	return transcript(th2, f[:], h[:])
}

// sessionKeys derives the transport keys, rekey secret and session id of
// a session from its prk and final transcript hash (th4, or th' of a rekey).
type sessionKeys struct {
	i2r, r2i, rk [32]byte
	sid          [16]byte
}

func deriveSession(prk *[32]byte, th []byte) sessionKeys {
	var k sessionKeys
	e := newExpander(prk)
	e.expand(labelI2R, th, k.i2r[:])
	e.expand(labelR2I, th, k.r2i[:])
	e.expand(labelRekey, th, k.rk[:])
	e.expand(labelSessionID, th, k.sid[:])
	return k
}

func (k *sessionKeys) zeroize() { clear(k.i2r[:]); clear(k.r2i[:]); clear(k.rk[:]); clear(k.sid[:]) }

// handshakeAEAD is AES-256-GCM for enc_r and enc_i. Every key is used for
// exactly one message, so the all-zero nonce is safe.
func handshakeAEAD(key *[32]byte) cipher.AEAD {
	b, err := aes.NewCipher(key[:])
	if err != nil {
		return nil // unreachable: the key is 32 bytes
	}
	g, err := cipher.NewGCM(b)
	if err != nil {
		return nil
	}
	return g
}

var zeroNonce [12]byte

// seal appends the AES-256-GCM sealing of plaintext (ciphertext and tag)
// to dst and returns the extended slice; pass nil for a fresh one. To seal
// in place, pass plaintext[:0] as dst: when cap(plaintext) leaves TagLen
// bytes past it, nothing is allocated (the responder's enc_r is sealed so
// in the Response's own buffer). dst's spare capacity must not otherwise
// overlap plaintext.
func seal(dst []byte, key *[32]byte, plaintext, ad []byte) ([]byte, error) {
	a := handshakeAEAD(key)
	if a == nil {
		return nil, fmt.Errorf("handshake: aes-256-gcm unavailable: %w", ErrConfig)
	}
	return a.Seal(dst, zeroNonce[:], plaintext, ad), nil
}

func open(key *[32]byte, sealed, ad []byte) ([]byte, error) {
	return openTo(nil, key, sealed, ad)
}

// openTo is open appending the plaintext to dst: with room in dst's
// capacity nothing is allocated. dst must not overlap sealed.
func openTo(dst []byte, key *[32]byte, sealed, ad []byte) ([]byte, error) {
	a := handshakeAEAD(key)
	if a == nil {
		return nil, fmt.Errorf("handshake: aes-256-gcm unavailable: %w", ErrConfig)
	}
	pt, err := a.Open(dst, zeroNonce[:], sealed, ad)
	if err != nil {
		return nil, ErrDecrypt
	}
	return pt, nil
}

// NewAEAD returns the cipher of id keyed with key (32 bytes), for the
// rekey messages here and for transport in core/tunnel.
func NewAEAD(id AEADID, key []byte) (cipher.AEAD, error) {
	switch id {
	case AES256GCM:
		b, err := aes.NewCipher(key)
		if err != nil {
			return nil, fmt.Errorf("handshake: %s key: %w", id, ErrConfig)
		}
		return cipher.NewGCM(b)
	case ChaCha20Poly1305:
		a, err := chacha20poly1305.New(key)
		if err != nil {
			return nil, fmt.Errorf("handshake: %s key: %w", id, ErrConfig)
		}
		return a, nil
	}
	return nil, fmt.Errorf("handshake: %s: %w", id, ErrSuite)
}

// counterNonce is the transport nonce layout: 4 zero bytes || counter BE.
func counterNonce(c uint64) [12]byte {
	var n [12]byte
	binary.BigEndian.PutUint64(n[4:], c)
	return n
}

// errorTag authenticates a HandshakeError after the Response:
// HMAC-SHA-256(HKDF-Expand(prk, "avon-v1 error", 32), message before the
// tag), truncated to 16 bytes. A MAC, not GCM with a fixed nonce, because
// several errors may be tagged under one key.
func errorTag(key *[32]byte, msg []byte) [TagLen]byte {
	m := hmac.New(sha256.New, key[:])
	m.Write(msg)
	var t [TagLen]byte
	copy(t[:], m.Sum(nil))
	return t
}

// X25519 u-coordinates of small order (RFC 7748 encodings, little endian,
// bit 255 ignored as X25519 ignores it): 0 and 1, the two points of order 8
// on the curve, p-1 (order 4 on the twist), and the non-canonical encodings
// p and p+1 of 0 and 1. Curve25519 has cofactor 8 (torsion Z/8: O, (0,0),
// two points with u=1, four with two u values) and its twist cofactor 4, so
// these are all. A test checks each against golang.org/x/crypto/curve25519.
var lowOrderX25519 = func() [][32]byte {
	p := new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 255), big.NewInt(19))
	dec := func(s string) *big.Int { n, _ := new(big.Int).SetString(s, 10); return n }
	us := []*big.Int{
		big.NewInt(0),
		big.NewInt(1),
		dec("325606250916557431795983626356110631294008115727848805560023387167927233504"),
		dec("39382357235489614581723060781553021112529911719440698176882885853963445705823"),
		new(big.Int).Sub(p, big.NewInt(1)),
		new(big.Int).Set(p),
		new(big.Int).Add(p, big.NewInt(1)),
	}
	out := make([][32]byte, len(us))
	for i, u := range us {
		be := u.FillBytes(make([]byte, 32))
		for j := range 32 {
			out[i][j] = be[31-j]
		}
	}
	return out
}()

// lowOrderX25519Point reports, in constant time over the table, whether the
// 32-byte X25519 public key u has small order.
func lowOrderX25519Point(u []byte) bool {
	var c [32]byte
	copy(c[:], u)
	c[31] &= 0x7f
	found := 0
	for i := range lowOrderX25519 {
		found |= subtle.ConstantTimeCompare(c[:], lowOrderX25519[i][:])
	}
	return found == 1
}

// x25519Offset is where the X25519 key starts in an X-Wing public key
// (after the ML-KEM-768 encapsulation key).
const x25519Offset = EphemeralKeyLen - 32

// parseEphemeral checks an X-Wing public key: the ML-KEM-768 part must pass
// FIPS 203's modulus check (circl's Unpack) and the X25519 part must not be
// of small order (X-Wing itself accepts it and derives an all-zero X25519
// secret, leaving only ML-KEM; we refuse such a key outright).
func parseEphemeral(epk []byte) (*xwing.PublicKey, error) {
	if len(epk) != EphemeralKeyLen {
		return nil, fmt.Errorf("handshake: ephemeral key of %d bytes: %w", len(epk), ErrMalformed)
	}
	if lowOrderX25519Point(epk[x25519Offset:]) {
		return nil, fmt.Errorf("handshake: x25519 part of the ephemeral key has small order: %w", ErrKey)
	}
	var pk xwing.PublicKey
	if err := pk.Unpack(epk); err != nil {
		return nil, fmt.Errorf("handshake: ml-kem part of the ephemeral key: %v: %w", err, ErrKey)
	}
	return &pk, nil
}

// encapsulateTo runs X-Wing encapsulation to pk with 64 bytes from rnd,
// writing the ciphertext to ct (CiphertextLen bytes: the message's own
// buffer, so it is not copied).
func encapsulateTo(ct []byte, pk *xwing.PublicKey, rnd io.Reader) (ss [32]byte, err error) {
	if len(ct) != CiphertextLen {
		return ss, fmt.Errorf("handshake: ciphertext buffer of %d bytes: %w", len(ct), ErrMalformed)
	}
	var seed [xwing.EncapsulationSeedSize]byte
	defer clear(seed[:])
	if _, err := io.ReadFull(rnd, seed[:]); err != nil {
		return ss, fmt.Errorf("handshake: encapsulation seed: %v: %w", err, ErrRandom)
	}
	pk.EncapsulateTo(ct, ss[:], seed[:])
	return ss, nil
}

// ephemeral is an X-Wing key pair generated from 32 bytes of rnd.
//
// Zeroization is best effort: the seed and the X25519 scalar are cleared,
// but circl keeps the ML-KEM secret vector behind a pointer it does not let
// us clear; dropping the key leaves it to the garbage collector.
type ephemeral struct {
	seed [xwing.SeedSize]byte
	sk   *xwing.PrivateKey
	pub  []byte
}

func newEphemeral(rnd io.Reader) (*ephemeral, error) {
	e := &ephemeral{}
	if _, err := io.ReadFull(rnd, e.seed[:]); err != nil {
		return nil, fmt.Errorf("handshake: ephemeral key seed: %v: %w", err, ErrRandom)
	}
	sk, pk := xwing.DeriveKeyPair(e.seed[:])
	e.sk = sk
	e.pub = make([]byte, EphemeralKeyLen)
	pk.Pack(e.pub)
	return e, nil
}

// decapsulate returns the shared secret of ct (CiphertextLen bytes).
func (e *ephemeral) decapsulate(ct []byte) [32]byte {
	var ss [32]byte
	e.sk.DecapsulateTo(ss[:], ct)
	return ss
}

func (e *ephemeral) zeroize() {
	clear(e.seed[:])
	if e.sk != nil {
		*e.sk = xwing.PrivateKey{}
		e.sk = nil
	}
}
