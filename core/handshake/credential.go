package handshake

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/cloudflare/circl/sign/mldsa/mldsa65"

	"github.com/avonzt/avon/internal/mldsahedge"
)

// Delegated handshake keys (docs/protocol.md §3.2.1), after TLS delegated
// credentials (RFC 9345): the pinned gateway key, which lives in a KMS or
// HSM, signs a short-lived credential for an ML-DSA-65 key the gateway keeps
// in memory, and the gateway signs sig_r with that key. One KMS signature
// per credential instead of one per handshake.

// Sizes and limits of a credential.
const (
	credentialBodyLen = 4 + 8 + 8 + IDLen + PublicKeyLen // what the pinned key signs
	// CredentialLen is the exact length of an encoded credential.
	CredentialLen = credentialBodyLen + SignatureLen // 5313
	// CredentialHashLen is the length of SHA-256(credential).
	CredentialHashLen = 32
	// MaxCredentialValidity bounds not_after - not_before. A credential
	// valid longer is refused by both sides: the validity is the window in
	// which a key outside the KMS can be abused.
	MaxCredentialValidity = 24 * time.Hour
	// DefaultCredentialValidity is the validity IssueCredential uses when
	// given zero.
	DefaultCredentialValidity = 8 * time.Hour
)

// labelCredential is the ML-DSA context of the pinned key's signature over
// a credential; labelCredentialHint keys the Initiation's credential hint.
const (
	labelCredential     = "avon-v1 delegated credential"
	labelCredentialHint = "avon-v1 credential hint"
)

// Credential is a delegated credential: the pinned gateway key's signature
// binding an ML-DSA-65 public key to a validity period and to the pinned
// key's responder_id. Raw is the encoding; the other fields are decoded
// from it and must not be changed.
type Credential struct {
	// NotBefore and NotAfter bound the validity (calibrated time).
	NotBefore, NotAfter time.Time
	// ResponderID is the responder_id of the key that signed it.
	ResponderID [IDLen]byte
	// PublicKey is the delegated ML-DSA-65 public key.
	PublicKey []byte
	// Raw is the whole encoding, CredentialLen bytes.
	Raw []byte
	// Hash is SHA-256(Raw): what the Initiation's hint is made from.
	Hash [CredentialHashLen]byte

	pk       *mldsa65.PublicKey
	verified bool // the signature verified with the pinned key of ResponderID
}

// ParseCredential checks the layout of a credential (exact length, suite
// bytes, reserved bytes, validity period at most MaxCredentialValidity, a
// parsable public key) and decodes it. It does not verify the signature or
// the time: VerifyCredential does. Errors wrap ErrCredential (and
// ErrTruncated or ErrMalformed for layout errors).
func ParseCredential(b []byte) (*Credential, error) {
	if len(b) < CredentialLen {
		return nil, fmt.Errorf("handshake: credential of %d bytes, want %d: %w: %w", len(b), CredentialLen, ErrCredential, ErrTruncated)
	}
	if len(b) > CredentialLen {
		return nil, fmt.Errorf("handshake: credential of %d bytes, want %d: %w: %w", len(b), CredentialLen, ErrCredential, ErrMalformed)
	}
	if b[0] != SigMLDSA65 || b[1] != SigMLDSA65 {
		return nil, fmt.Errorf("handshake: credential algorithms %d/%d: %w: %w", b[0], b[1], ErrCredential, ErrSuite)
	}
	if b[2] != 0 || b[3] != 0 {
		return nil, fmt.Errorf("handshake: credential reserved bytes %#x %#x: %w: %w", b[2], b[3], ErrCredential, ErrMalformed)
	}
	nb, na := int64(be.Uint64(b[4:])), int64(be.Uint64(b[12:]))
	if na <= nb || na-nb > int64(MaxCredentialValidity) {
		return nil, fmt.Errorf("handshake: credential validity from %d to %d ns, at most %s: %w: %w", nb, na, MaxCredentialValidity, ErrCredential, ErrMalformed)
	}
	c := &Credential{NotBefore: time.Unix(0, nb).UTC(), NotAfter: time.Unix(0, na).UTC(),
		PublicKey: append([]byte(nil), b[52:52+PublicKeyLen]...), Raw: append([]byte(nil), b...)}
	copy(c.ResponderID[:], b[20:52])
	pk, err := parseMLDSA65(c.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("%v: %w: %w", err, ErrCredential, ErrMalformed)
	}
	c.pk = pk
	c.Hash = sha256.Sum256(c.Raw)
	return c, nil
}

// VerifyCredential parses b and verifies it for the pinned gateway key
// pinned (ML-DSA-65, its responder_id must be the credential's): the
// signature, then the validity at now with maxSkew of allowance on both
// ends. Errors wrap ErrCredential; ErrExpired too when the time is the
// reason.
func VerifyCredential(b, pinned []byte, now time.Time, maxSkew time.Duration) (*Credential, error) {
	c, err := ParseCredential(b)
	if err != nil {
		return nil, err
	}
	pk, err := parseMLDSA65(pinned)
	if err != nil {
		return nil, fmt.Errorf("%v: %w", err, ErrConfig)
	}
	id, err := ResponderID(pinned)
	if err != nil {
		return nil, err
	}
	if err := c.verify(pk, id); err != nil {
		return nil, err
	}
	if err := c.ValidAt(now, maxSkew); err != nil {
		return nil, err
	}
	return c, nil
}

// verify checks the responder_id and the pinned key's signature.
func (c *Credential) verify(pinned *mldsa65.PublicKey, id [IDLen]byte) error {
	if subtle.ConstantTimeCompare(c.ResponderID[:], id[:]) != 1 {
		return fmt.Errorf("handshake: credential for responder %x: %w", c.ResponderID[:8], ErrCredential)
	}
	if !verifyMLDSA65(pinned, c.Raw[:credentialBodyLen], labelCredential, c.Raw[credentialBodyLen:]) {
		return fmt.Errorf("handshake: credential signature: %w", ErrCredential)
	}
	c.verified = true
	return nil
}

// ValidAt reports whether now lies in [NotBefore-maxSkew, NotAfter+maxSkew];
// the error wraps ErrCredential and ErrExpired.
func (c *Credential) ValidAt(now time.Time, maxSkew time.Duration) error {
	if now.Before(c.NotBefore.Add(-maxSkew)) || now.After(c.NotAfter.Add(maxSkew)) {
		return fmt.Errorf("handshake: credential valid %s to %s, now %s: %w: %w",
			c.NotBefore.Format(time.RFC3339), c.NotAfter.Format(time.RFC3339), now.UTC().Format(time.RFC3339), ErrCredential, ErrExpired)
	}
	return nil
}

// credentialHint is the Initiation's credential hint: H(label ‖ nonce_i ‖
// SHA-256(credential)). Blinded by the fresh nonce so that two Initiations
// of one agent cannot be linked by it.
func credentialHint(nonce *[NonceLen]byte, hash *[CredentialHashLen]byte) [CredentialHashLen]byte {
	h := sha256.New()
	h.Write([]byte(labelCredentialHint))
	h.Write(nonce[:])
	h.Write(hash[:])
	var out [CredentialHashLen]byte
	h.Sum(out[:0])
	return out
}

// DelegatedKey is a delegated ML-DSA-65 private key with its credential, as
// the responder uses it. Sign is safe for concurrent use; Close (when the key
// is replaced) waits for the signatures in flight and clears the key.
type DelegatedKey struct {
	cred *Credential
	mu   sync.RWMutex // held for reading while a handshake signs with the key; s is cleared under the write lock
	s    *delegatedSigner
}

// delegatedSigner signs with the delegated key. Unlike MLDSA65Signer it
// holds its mutex only to draw the hedging randomness, so the gateway's
// workers sign in parallel; the key itself is protected from Close by
// DelegatedKey.mu.
type delegatedSigner struct {
	sk     *mldsa65.PrivateKey
	pub    []byte
	randMu sync.Mutex // a reader need not be safe for concurrent use
	rand   io.Reader
}

func (s *delegatedSigner) Public() []byte { return s.pub }

func (s *delegatedSigner) Sign(msg, ctx []byte) ([]byte, error) {
	if len(ctx) > 255 {
		return nil, fmt.Errorf("handshake: signing context of %d bytes: %w", len(ctx), ErrSigner)
	}
	var rnd [32]byte
	defer clear(rnd[:])
	s.randMu.Lock()
	_, err := io.ReadFull(s.rand, rnd[:])
	s.randMu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("handshake: signing randomness: %v: %w", err, ErrRandom)
	}
	return mldsahedge.Sign65(s.sk, mldsahedge.MessagePrime(msg, ctx), rnd), nil
}

// Credential returns the key's credential.
func (k *DelegatedKey) Credential() *Credential { return k.cred }

// Close clears the private key once no handshake signs with it any more.
func (k *DelegatedKey) Close() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.s != nil {
		*k.s.sk = mldsa65.PrivateKey{} // best effort, as MLDSA65Signer.Close
		k.s = nil
	}
}

// IssueCredential generates a delegated ML-DSA-65 key pair from rnd (32
// bytes; later signatures with it draw their hedging randomness from rnd
// too) and has pinned — the gateway key, a KMS signer in production — sign
// its credential, valid from now for validity (DefaultCredentialValidity
// when zero, at most MaxCredentialValidity). This is the one KMS call per
// credential.
func IssueCredential(pinned Signer, rnd io.Reader, now time.Time, validity time.Duration) (*DelegatedKey, error) {
	if pinned == nil || rnd == nil {
		return nil, fmt.Errorf("handshake: issuing a credential needs the pinned signer and a random source: %w", ErrConfig)
	}
	if validity == 0 {
		validity = DefaultCredentialValidity
	}
	if validity < 0 || validity > MaxCredentialValidity {
		return nil, fmt.Errorf("handshake: credential validity %s, at most %s: %w", validity, MaxCredentialValidity, ErrConfig)
	}
	id, err := ResponderID(pinned.Public())
	if err != nil {
		return nil, err
	}
	var seed [mldsa65.SeedSize]byte
	defer clear(seed[:])
	if _, err := io.ReadFull(rnd, seed[:]); err != nil {
		return nil, fmt.Errorf("handshake: delegated key seed: %v: %w", err, ErrRandom)
	}
	if err := mldsahedge.Ready(); err != nil {
		return nil, fmt.Errorf("handshake: %v: %w", err, ErrSigner)
	}
	pub, sk := mldsa65.NewKeyFromSeed(&seed)
	pk, _ := pub.MarshalBinary()
	s := &delegatedSigner{sk: sk, pub: pk, rand: rnd}
	dispose := func() { *sk = mldsa65.PrivateKey{} }
	raw := make([]byte, CredentialLen)
	raw[0], raw[1] = SigMLDSA65, SigMLDSA65
	be.PutUint64(raw[4:], uint64(now.UnixNano()))
	be.PutUint64(raw[12:], uint64(now.Add(validity).UnixNano()))
	copy(raw[20:], id[:])
	copy(raw[52:], pk)
	sig, err := signChecked(pinned, raw[:credentialBodyLen], labelCredential)
	if err != nil {
		dispose()
		return nil, err
	}
	copy(raw[credentialBodyLen:], sig)
	c, err := ParseCredential(raw)
	if err == nil {
		ppk, perr := parseMLDSA65(pinned.Public())
		if perr != nil {
			err = fmt.Errorf("%v: %w", perr, ErrConfig)
		} else {
			err = c.verify(ppk, id) // a KMS that signed with another key is caught here
		}
	}
	if err != nil {
		dispose()
		return nil, fmt.Errorf("handshake: issued credential: %w: %w", ErrSigner, err)
	}
	return &DelegatedKey{cred: c, s: s}, nil
}

// DelegatedKeys holds the responder's current delegated key. Install
// replaces it; the replaced key is closed (cleared) as soon as the
// handshakes signing with it finish. Safe for concurrent use.
type DelegatedKeys struct {
	mu  sync.RWMutex // guards cur; taken before a key's own lock
	cur *DelegatedKey
}

// Install makes k the current key and closes the one it replaces once the
// handshakes in flight with it are done.
func (d *DelegatedKeys) Install(k *DelegatedKey) {
	d.mu.Lock()
	old := d.cur
	d.cur = k
	d.mu.Unlock()
	if old != nil && old != k {
		old.Close()
	}
}

// Current returns the current credential, or nil.
func (d *DelegatedKeys) Current() *Credential {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.cur == nil {
		return nil
	}
	return d.cur.cred
}

// Close clears the current key; handshakes that need one fail afterwards.
func (d *DelegatedKeys) Close() { d.Install(nil) }

// acquire returns the current key locked for signing (release with
// k.mu.RUnlock), or nil when there is none or it was closed.
func (d *DelegatedKeys) acquire() *DelegatedKey {
	d.mu.RLock()
	defer d.mu.RUnlock()
	k := d.cur
	if k == nil {
		return nil
	}
	k.mu.RLock()
	if k.s == nil {
		k.mu.RUnlock()
		return nil
	}
	return k
}
