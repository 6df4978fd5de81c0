package handshake

import (
	"crypto/subtle"
	"fmt"
	"io"
	"sync"
	"time"
	"unicode/utf8"
)

// Defaults of ResponderConfig.
const (
	DefaultMaxSkew         = 5 * time.Second // the calibration default
	DefaultReplayCacheSize = 1 << 16
)

// ResponderConfig configures the gateway's side.
type ResponderConfig struct {
	// Signer holds the gateway's ML-DSA-65 key (KMS-backed in production):
	// the pinned key agents know. With Delegated it signs only credentials
	// (IssueCredential), not handshakes.
	Signer Signer
	// Delegated, when set, holds the delegated key sig_r is made with
	// (docs/protocol.md §3.2.1); the Response then carries its credential
	// unless the Initiation's hint names it. Without a current, valid
	// delegated key the responder refuses with ErrSigner: it never falls
	// back to signing with Signer. Nil: every sig_r is made by Signer.
	Delegated *DelegatedKeys
	// ResponderID is SHA-256 of the gateway certificate's
	// SubjectPublicKeyInfo. Zero: derived from Signer.Public(); when set it
	// must match it.
	ResponderID [IDLen]byte
	// Verifier checks initiators' certificate chains (NewChainVerifier).
	Verifier PeerVerifier
	// Rand supplies encapsulation seeds and nonce_r; it must be safe for
	// concurrent use (the core's DRBG is). Required.
	Rand io.Reader
	// Now is the calibrated clock; it must fail closed on its own (return
	// only trusted time). Required.
	Now func() time.Time
	// MaxSkew is the calibration's max_skew: how far an Initiation's
	// timestamp may be from Now. Default DefaultMaxSkew.
	MaxSkew time.Duration
	// ReplayCacheSize bounds the nonce replay cache; entries live
	// 2*MaxSkew. Default DefaultReplayCacheSize. A full cache refuses new
	// Initiations with ErrBusy rather than forget a nonce.
	ReplayCacheSize int
}

// Responder is the gateway's long-lived handshake responder. It is safe for
// concurrent use; the only state it keeps is the nonce replay cache. Each
// answered Initiation yields a PendingHandshake that core/tunnel keeps
// (indexed by the local index) until the Finish or a timeout.
type Responder struct {
	cfg ResponderConfig

	mu     sync.Mutex // guards replay
	replay replayCache
}

// NewResponder validates cfg.
func NewResponder(cfg ResponderConfig) (*Responder, error) {
	if cfg.Signer == nil || cfg.Verifier == nil || cfg.Rand == nil || cfg.Now == nil {
		return nil, fmt.Errorf("handshake: responder needs Signer, Verifier, Rand and Now: %w", ErrConfig)
	}
	if cfg.MaxSkew < 0 || cfg.ReplayCacheSize < 0 {
		return nil, fmt.Errorf("handshake: negative MaxSkew or ReplayCacheSize: %w", ErrConfig)
	}
	if cfg.MaxSkew == 0 {
		cfg.MaxSkew = DefaultMaxSkew
	}
	if cfg.ReplayCacheSize == 0 {
		cfg.ReplayCacheSize = DefaultReplayCacheSize
	}
	if _, err := parseMLDSA65(cfg.Signer.Public()); err != nil {
		return nil, fmt.Errorf("handshake: signer: %v: %w", err, ErrConfig)
	}
	id, err := ResponderID(cfg.Signer.Public())
	if err != nil {
		return nil, err
	}
	if cfg.ResponderID != ([IDLen]byte{}) && subtle.ConstantTimeCompare(cfg.ResponderID[:], id[:]) != 1 {
		return nil, fmt.Errorf("handshake: responder id does not belong to the signer's key: %w", ErrConfig)
	}
	cfg.ResponderID = id
	return &Responder{cfg: cfg, replay: newReplayCache(cfg.ReplayCacheSize)}, nil
}

// ID returns the responder_id.
func (r *Responder) ID() [IDLen]byte { return r.cfg.ResponderID }

// HandleInitiation answers an Initiation with a Response (to be fragmented
// by core/tunnel/frag) and the PendingHandshake that will take the Finish.
//
// Precondition: the caller checked mac1, and mac2 or the address token
// (core/tunnel/cookie) — this is where the expensive work starts.
//
// Checks, cheapest first, all before any cryptography: layout, version,
// suite, responder_id, timestamp within MaxSkew of Now (a *ClockSkewError,
// no state kept), the ephemeral key (ML-KEM modulus check, X25519 not of
// small order), then the nonce against the replay cache (ErrReplay; the
// nonce is remembered for 2*MaxSkew; a full cache gives ErrBusy). Then one
// encapsulation and one signature: with the current delegated key when
// Delegated is set (ErrSigner when there is none valid), else with Signer.
func (r *Responder) HandleInitiation(b []byte, localIndex uint32) ([]byte, *PendingHandshake, error) {
	return r.HandleInitiationTo(nil, b, localIndex)
}

// HandleInitiationTo is HandleInitiation building the Response in dst's
// capacity when it is large enough (ResponseFullLen holds any Response),
// so a caller can reuse one buffer once each Response is sent; otherwise
// in a new buffer. dst's contents are overwritten; it must not overlap b.
func (r *Responder) HandleInitiationTo(dst, b []byte, localIndex uint32) ([]byte, *PendingHandshake, error) {
	m, err := parseInitiation(b)
	if err != nil {
		return nil, nil, err
	}
	if m.Suite.KEM != KEMXWing || m.Suite.Sig != SigMLDSA65 || !m.Suite.AEAD.Valid() {
		return nil, nil, fmt.Errorf("handshake: suite kem %d sig %d aead %d: %w", m.Suite.KEM, m.Suite.Sig, m.Suite.AEAD, ErrSuite)
	}
	if m.Suite.Flags != 0 {
		return nil, nil, fmt.Errorf("handshake: suite flags %#x, none defined in v1: %w", m.Suite.Flags, ErrSuite)
	}
	if subtle.ConstantTimeCompare(m.ResponderID[:], r.cfg.ResponderID[:]) != 1 {
		return nil, nil, fmt.Errorf("handshake: initiation for responder %x: %w", m.ResponderID[:8], ErrUnknownResponder)
	}
	now := r.cfg.Now()
	claimed := time.Unix(0, m.Timestamp)
	if d := claimed.Sub(now); d > r.cfg.MaxSkew || d < -r.cfg.MaxSkew {
		return nil, nil, &ClockSkewError{Claimed: claimed, Local: now, MaxSkew: r.cfg.MaxSkew}
	}
	epk, err := parseEphemeral(m.EphemeralKey)
	if err != nil {
		return nil, nil, err
	}
	r.mu.Lock()
	err = r.replay.add(m.Nonce, now, now.Add(2*r.cfg.MaxSkew))
	r.mu.Unlock()
	if err != nil {
		return nil, nil, err
	}

	signer, flags, cred := r.cfg.Signer, uint32(0), (*Credential)(nil)
	if r.cfg.Delegated != nil {
		k := r.cfg.Delegated.acquire()
		if k == nil {
			return nil, nil, fmt.Errorf("handshake: no delegated key: %w", ErrSigner)
		}
		defer k.mu.RUnlock() // the key is not cleared while it signs
		if err := k.cred.ValidAt(now, 0); err != nil {
			return nil, nil, fmt.Errorf("handshake: delegated key: %w: %w", ErrSigner, err)
		}
		signer, flags, cred = k.s, FlagDelegated, k.cred
		hint := credentialHint(&m.Nonce, &cred.Hash)
		if subtle.ConstantTimeCompare(hint[:], m.CredentialHint[:]) != 1 {
			flags |= FlagCredential
		}
	}

	credLen := 0
	if flags&FlagCredential != 0 {
		credLen = CredentialLen
	}
	// The Response is built in its final buffer, as Response.AppendTo
	// lays it out: the head first (the ciphertext encapsulated straight
	// into it), then enc_r sealed in place after it.
	if n := responseHeadLen + responseSealedLen + credLen; cap(dst) < n {
		dst = make([]byte, 0, n)
	}
	out := appendResponseHead(dst[:0], localIndex, m.SenderIndex, zeroCiphertext[:])
	ss, err := encapsulateTo(out[responseHeadLen-CiphertextLen:responseHeadLen], epk, r.cfg.Rand)
	if err != nil {
		return nil, nil, err
	}
	th1 := transcript(th0, b[:len(b)-2*MACLen])
	p := &PendingHandshake{r: r, localIndex: localIndex, remoteIndex: m.SenderIndex, aead: m.Suite.AEAD, created: now}
	p.prk = extract(th1[:], ss[:])
	clear(ss[:])
	th2 := transcript(th1, out)
	thc := signedTranscript(th2, flags, cred)
	sig, err := signChecked(signer, thc[:], contextResponder)
	if err != nil {
		p.Zeroize()
		return nil, nil, err
	}
	plain := out[responseHeadLen : responseHeadLen+responseEncPlain+credLen]
	if _, err := io.ReadFull(r.cfg.Rand, plain[:NonceLen]); err != nil {
		p.Zeroize()
		return nil, nil, fmt.Errorf("handshake: nonce_r: %v: %w", err, ErrRandom)
	}
	be.PutUint32(plain[NonceLen:], flags)
	if credLen > 0 {
		copy(plain[NonceLen+4:], cred.Raw)
	}
	copy(plain[NonceLen+4+credLen:], sig)
	ex := newExpander(&p.prk)
	var kr [32]byte
	ex.expand(labelResponder, th2[:], kr[:])
	enc, err := seal(plain[:0], &kr, plain, th2[:]) // the tag fills out's last TagLen bytes
	clear(kr[:])
	if err != nil {
		p.Zeroize()
		return nil, nil, err
	}
	out = out[:responseHeadLen+len(enc)]
	p.th3 = transcript(thc, enc)
	ex.expand(labelInitiator, p.th3[:], p.ki[:])
	ex.expand(labelError, nil, p.errKey[:])
	return out, p, nil
}

// ErrorFor builds the unauthenticated HandshakeError answering a refused
// Initiation from receiverIndex (its sender_index), or reports false when
// the refusal gets no answer (see CodeFor). For a clock skew the detail is
// the responder's calibrated time, so the agent can correct its clock.
func (r *Responder) ErrorFor(receiverIndex uint32, err error) ([]byte, bool) {
	code, ok := CodeFor(err)
	if !ok {
		return nil, false
	}
	return buildError(receiverIndex, code, r.detailFor(code, err), nil), true
}

func (r *Responder) detailFor(code ErrorCode, err error) []byte {
	if code != CodeClockSkew {
		return nil
	}
	t := r.cfg.Now()
	if ce, ok := err.(*ClockSkewError); ok {
		t = ce.Local
	}
	return be.AppendUint64(nil, uint64(t.UnixNano()))
}

// ErrorMessage builds a HandshakeError with a text detail (truncated to
// MaxErrorDetail bytes at a rune boundary), unauthenticated.
func (r *Responder) ErrorMessage(receiverIndex uint32, code ErrorCode, detail string) []byte {
	return buildError(receiverIndex, code, truncateUTF8(detail, MaxErrorDetail), nil)
}

func truncateUTF8(s string, n int) []byte {
	if len(s) <= n {
		return []byte(s)
	}
	b := []byte(s[:n])
	for len(b) > 0 && !utf8.Valid(b) {
		b = b[:len(b)-1]
	}
	return b
}

// buildError marshals a HandshakeError, tagged when key is not nil.
func buildError(receiverIndex uint32, code ErrorCode, detail []byte, key *[32]byte) []byte {
	m := &HandshakeErrorMsg{ReceiverIndex: receiverIndex, Code: code, Detail: detail, Authenticated: key != nil}
	b, err := m.Marshal()
	if err != nil {
		return nil // unreachable: codes and details are ours and in range
	}
	if key != nil {
		t := errorTag(key, b[:len(b)-TagLen])
		copy(b[len(b)-TagLen:], t[:])
	}
	return b
}

// zeroCiphertext is the placeholder appendResponseHead lays out before
// the ciphertext is encapsulated into its place.
var zeroCiphertext [CiphertextLen]byte

// finishPlainPool holds buffers for the plaintext of a Finish's enc_i
// (at most FinishMaxLen bytes: ParseFinish bounds the message, and the
// plaintext is shorter than the message). Buffers go back cleared.
var finishPlainPool = sync.Pool{New: func() any { b := make([]byte, 0, FinishMaxLen); return &b }}

type pendingState uint8

const (
	pendingOpen pendingState = iota
	pendingDone
	pendingFailed
	pendingClosed
)

// PendingHandshake is the responder's half-open state after a Response:
// what it needs to open and check the Finish. It is safe for concurrent
// use and single use: once a Finish decrypted (it came from the holder of
// the ephemeral key), the outcome is final and the keys are cleared. A
// Finish that does not decrypt changes nothing, so a forged one cannot
// end the real handshake.
type PendingHandshake struct {
	r                       *Responder
	localIndex, remoteIndex uint32
	aead                    AEADID
	created                 time.Time

	mu     sync.Mutex
	state  pendingState
	prk    [32]byte
	th3    [32]byte
	ki     [32]byte
	errKey [32]byte // kept after a failed Finish, for ErrorFor
}

// LocalIndex is the responder's index of this handshake (the Finish's
// receiver_index).
func (p *PendingHandshake) LocalIndex() uint32 { return p.localIndex }

// RemoteIndex is the initiator's sender_index.
func (p *PendingHandshake) RemoteIndex() uint32 { return p.remoteIndex }

// Created is the calibrated time the Response was made; core/tunnel drops
// pending handshakes after its timeout.
func (p *PendingHandshake) Created() time.Time { return p.created }

// HandleFinish opens the Finish, verifies the initiator's chain (through
// the Verifier, at the calibrated time) and sig_i, and returns the session.
// Errors: ErrTruncated/ErrMalformed/ErrIndex/ErrDecrypt leave the pending
// handshake open; after decryption any error (ErrMalformed, ErrCertificate,
// ErrRevoked, ErrStatusUnavailable, ErrSignature) is final, and ErrorFor
// builds the authenticated answer. A second call returns ErrState. b is
// read, neither kept nor modified.
func (p *PendingHandshake) HandleFinish(b []byte) (*Result, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state != pendingOpen {
		return nil, fmt.Errorf("handshake: finish on a completed handshake: %w", ErrState)
	}
	// ParseFinish copies nothing (and, inlined, allocates nothing): enc_i
	// is opened straight from b.
	f, err := ParseFinish(b)
	if err != nil {
		return nil, err
	}
	if f.ReceiverIndex != p.localIndex {
		return nil, fmt.Errorf("handshake: finish for index %d, ours is %d: %w", f.ReceiverIndex, p.localIndex, ErrIndex)
	}
	sealed := f.Sealed
	// enc_i (up to 15.6 KB: the chain and sig_i) is opened into a pooled
	// buffer: the Verifier keeps nothing of the chain and the Result holds
	// copies, so after a success the buffer is cleared and reused. After a
	// refusal it is cleared but not reused: the error may hold the parsed
	// leaf (a pqx509.CertificateInvalidError), whose fields alias the chain,
	// and another handshake must not write under it.
	buf := finishPlainPool.Get().(*[]byte)
	pt, err := openTo((*buf)[:0], &p.ki, sealed, p.th3[:])
	if err != nil {
		finishPlainPool.Put(buf) // nothing was decrypted into it (GCM clears its output on failure)
		return nil, fmt.Errorf("handshake: finish enc_i: %w", err)
	}
	// From here on the sender holds this handshake's keys: the outcome is final.
	res, err := p.finish(sealed, pt)
	clear(pt)
	clear(p.prk[:])
	clear(p.th3[:])
	clear(p.ki[:])
	if err != nil {
		p.state = pendingFailed
		return nil, err
	}
	finishPlainPool.Put(buf)
	p.state = pendingDone // errKey stays until Zeroize: the gateway may still refuse by policy
	return res, nil
}

func (p *PendingHandshake) finish(sealed, pt []byte) (*Result, error) {
	cl := int(be.Uint16(pt))
	if cl == 0 || cl > MaxChainLen || len(pt) != 2+cl+SignatureLen {
		return nil, fmt.Errorf("handshake: finish chain_len %d in %d bytes: %w", cl, len(pt), ErrMalformed)
	}
	chainBytes := pt[2 : 2+cl]
	sigI := pt[2+cl:]
	chain, err := splitChain(chainBytes)
	if err != nil {
		return nil, err
	}
	now := p.r.cfg.Now()
	peer, err := p.r.cfg.Verifier.VerifyChain(chain, now)
	if err != nil {
		return nil, err
	}
	signed := transcript(p.th3, chainBytes)
	ok, err := verifyMLDSA65Raw(peer.PublicKey, signed[:], contextInitiator, sigI)
	if err != nil {
		return nil, fmt.Errorf("%v: %w", err, ErrCertificate)
	}
	if !ok {
		return nil, fmt.Errorf("handshake: initiator signature of %s: %w", peer.ID, ErrSignature)
	}
	th4 := transcript(p.th3, sealed)
	keys := deriveSession(&p.prk, th4[:])
	defer keys.zeroize()
	return newResult(false, p.localIndex, p.remoteIndex, p.aead, &keys, peer, now), nil
}

// ErrorFor builds the HandshakeError answering a refused Finish (or, after
// a successful one, a refusal by policy: ErrNotAuthorized), authenticated
// with this handshake's error key. It reports false when the refusal gets
// no answer or there is no key to tag with (no Finish decrypted yet, or
// Zeroize was called). Call Zeroize once the answer is sent.
func (p *PendingHandshake) ErrorFor(err error) ([]byte, bool) {
	code, ok := CodeFor(err)
	if !ok {
		return nil, false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state != pendingFailed && p.state != pendingDone {
		return nil, false
	}
	return buildError(p.remoteIndex, code, p.r.detailFor(code, err), &p.errKey), true
}

// Zeroize clears every key of the pending handshake; it can no longer take
// a Finish. Call it when the handshake times out or is dropped.
func (p *PendingHandshake) Zeroize() {
	p.mu.Lock()
	defer p.mu.Unlock()
	clear(p.prk[:])
	clear(p.th3[:])
	clear(p.ki[:])
	clear(p.errKey[:])
	p.state = pendingClosed
}

// replayCache remembers Initiation nonces until they expire. Entries are
// appended in arrival order with expiry now+2*MaxSkew, so they expire in
// that order too (the calibrated clock does not step back; if it did,
// entries would only live longer). Not safe for concurrent use.
type replayCache struct {
	seen map[[NonceLen]byte]struct{}
	ring []replayEntry // FIFO, len == capacity
	head int           // oldest entry
	n    int
}

type replayEntry struct {
	nonce  [NonceLen]byte
	expiry time.Time
}

func newReplayCache(size int) replayCache {
	return replayCache{seen: make(map[[NonceLen]byte]struct{}), ring: make([]replayEntry, size)}
}

// add records nonce, refusing a nonce already present (ErrReplay) and
// refusing when every slot holds an unexpired nonce (ErrBusy).
func (c *replayCache) add(nonce [NonceLen]byte, now, expiry time.Time) error {
	for c.n > 0 && !c.ring[c.head].expiry.After(now) {
		delete(c.seen, c.ring[c.head].nonce)
		c.ring[c.head] = replayEntry{}
		c.head = (c.head + 1) % len(c.ring)
		c.n--
	}
	if _, ok := c.seen[nonce]; ok {
		return fmt.Errorf("handshake: initiation nonce seen within %s: %w", expiry.Sub(now), ErrReplay)
	}
	if c.n == len(c.ring) {
		return fmt.Errorf("handshake: replay cache full (%d unexpired nonces): %w", c.n, ErrBusy)
	}
	c.ring[(c.head+c.n)%len(c.ring)] = replayEntry{nonce: nonce, expiry: expiry}
	c.seen[nonce] = struct{}{}
	c.n++
	return nil
}
