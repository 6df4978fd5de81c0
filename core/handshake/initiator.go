package handshake

import (
	"crypto/hmac"
	"crypto/subtle"
	"fmt"
	"io"
	"time"

	"github.com/cloudflare/circl/sign/mldsa/mldsa65"
)

// InitiatorConfig configures one handshake of an agent.
type InitiatorConfig struct {
	// Signer holds the agent's ML-DSA-65 key (its certificate's key).
	Signer Signer
	// Chain is the agent's certificate chain, leaf first, then
	// intermediates, DER; at most MaxChainCerts and MaxChainLen bytes.
	Chain [][]byte
	// ResponderPublicKey is the gateway's ML-DSA-65 key from the enrollment
	// bundle; sig_r must verify with it.
	ResponderPublicKey []byte
	// ResponderID is SHA-256 of the gateway's SubjectPublicKeyInfo; it must
	// belong to ResponderPublicKey (see ResponderID). Zero: derived.
	ResponderID [IDLen]byte
	// AEAD is the transport AEAD to propose; zero means AES256GCM.
	AEAD AEADID
	// Rand supplies the ephemeral key, the nonce and the Finish's signing
	// randomness goes through Signer. Required.
	Rand io.Reader
	// Now is the agent's calibrated clock. Required.
	Now func() time.Time
	// LocalIndex is this side's sender_index, chosen by core/tunnel.
	LocalIndex uint32
	// Credential is the last delegated credential this agent verified for
	// this gateway (Result.Credential of an earlier handshake), or nil.
	// While it is valid the Initiation hints at it and the gateway may
	// leave it out of the Response. One of another gateway is ignored; one
	// that did not come from a verification is verified here.
	Credential *Credential
	// MaxSkew is the clock allowance for a credential's validity, the
	// calibration's max_skew. Default DefaultMaxSkew.
	MaxSkew time.Duration
}

type initiatorState uint8

const (
	initIdle initiatorState = iota
	initSent
	initDone
)

// Initiator is the agent's side of one handshake: Initiation, then
// HandleResponse, which yields the Finish and the session. It is not safe
// for concurrent use (one tunnel goroutine drives it).
//
// A message that fails a check leaves the Initiator as it was, so a forged
// or corrupted Response cannot end a handshake the real gateway will
// answer; the caller retries or gives up on its own timers.
type Initiator struct {
	cfg   InitiatorConfig
	rpk   *mldsa65.PublicKey
	chain []byte // concatenated DER
	id    [IDLen]byte

	state      initiatorState
	eph        *ephemeral
	initiation []byte // as sent, MACs zero
	th1        [32]byte
	errKey     [32]byte // HKDF-Expand(prk, "avon-v1 error") once a Response verified
	hasErrKey  bool
}

// NewInitiator validates cfg and returns an idle Initiator.
func NewInitiator(cfg InitiatorConfig) (*Initiator, error) {
	if cfg.Signer == nil || cfg.Rand == nil || cfg.Now == nil {
		return nil, fmt.Errorf("handshake: initiator needs Signer, Rand and Now: %w", ErrConfig)
	}
	if len(cfg.Signer.Public()) != PublicKeyLen {
		return nil, fmt.Errorf("handshake: signer key of %d bytes is not ML-DSA-65: %w", len(cfg.Signer.Public()), ErrConfig)
	}
	if cfg.AEAD == 0 {
		cfg.AEAD = AES256GCM
	}
	if !cfg.AEAD.Valid() {
		return nil, fmt.Errorf("handshake: %s: %w", cfg.AEAD, ErrConfig)
	}
	rpk, err := parseMLDSA65(cfg.ResponderPublicKey)
	if err != nil {
		return nil, fmt.Errorf("%v: %w", err, ErrConfig)
	}
	id, err := ResponderID(cfg.ResponderPublicKey)
	if err != nil {
		return nil, err
	}
	if cfg.ResponderID != ([IDLen]byte{}) && subtle.ConstantTimeCompare(cfg.ResponderID[:], id[:]) != 1 {
		return nil, fmt.Errorf("handshake: responder id does not belong to the responder key: %w", ErrConfig)
	}
	if len(cfg.Chain) == 0 || len(cfg.Chain) > MaxChainCerts {
		return nil, fmt.Errorf("handshake: chain of %d certificates: %w", len(cfg.Chain), ErrConfig)
	}
	var chain []byte
	for _, c := range cfg.Chain {
		chain = append(chain, c...)
	}
	if len(chain) > MaxChainLen {
		return nil, fmt.Errorf("handshake: chain of %d bytes, at most %d: %w", len(chain), MaxChainLen, ErrConfig)
	}
	if parts, err := splitChain(chain); err != nil || len(parts) != len(cfg.Chain) {
		return nil, fmt.Errorf("handshake: chain is not a list of DER certificates: %w", ErrConfig)
	}
	if cfg.MaxSkew < 0 {
		return nil, fmt.Errorf("handshake: negative MaxSkew: %w", ErrConfig)
	}
	if cfg.MaxSkew == 0 {
		cfg.MaxSkew = DefaultMaxSkew
	}
	if c := cfg.Credential; c != nil && (c.ResponderID != id || c.pk == nil || (!c.verified && c.verify(rpk, id) != nil)) {
		cfg.Credential = nil // a cache entry for another key, or a forged one: only a hint is lost
	}
	return &Initiator{cfg: cfg, rpk: rpk, chain: chain, id: id}, nil
}

// Initiation starts (or restarts) the handshake: a fresh X-Wing key pair
// and nonce, the current calibrated time. token is an address token from
// an earlier session (at most MaxTokenLen bytes) or nil. The mac1 and mac2
// fields (the last 2*MACLen bytes) are zero: core/tunnel/cookie fills them;
// the transcript excludes them. A retransmission after a CookieReply resends
// these bytes with a new mac2; after a timeout, call Initiation again (the
// responder refuses a repeated nonce).
func (in *Initiator) Initiation(token []byte) ([]byte, error) {
	if in.state == initDone {
		return nil, fmt.Errorf("handshake: initiation after the handshake finished: %w", ErrState)
	}
	if len(token) > MaxTokenLen {
		return nil, fmt.Errorf("handshake: token of %d bytes, at most %d: %w", len(token), MaxTokenLen, ErrConfig)
	}
	eph, err := newEphemeral(in.cfg.Rand)
	if err != nil {
		return nil, err
	}
	m := &Initiation{
		SenderIndex:  in.cfg.LocalIndex,
		Suite:        Suite{KEM: KEMXWing, Sig: SigMLDSA65, AEAD: in.cfg.AEAD},
		Timestamp:    in.cfg.Now().UnixNano(),
		ResponderID:  in.id,
		Token:        token,
		EphemeralKey: eph.pub,
	}
	if _, err := io.ReadFull(in.cfg.Rand, m.Nonce[:]); err != nil {
		eph.zeroize()
		return nil, fmt.Errorf("handshake: initiation nonce: %v: %w", err, ErrRandom)
	}
	if c := in.cfg.Credential; c != nil && c.ValidAt(in.cfg.Now(), in.cfg.MaxSkew) == nil {
		m.CredentialHint = credentialHint(&m.Nonce, &c.Hash)
	} else if _, err := io.ReadFull(in.cfg.Rand, m.CredentialHint[:]); err != nil {
		// Random, so that an agent without a credential looks like one with.
		eph.zeroize()
		return nil, fmt.Errorf("handshake: credential hint: %v: %w", err, ErrRandom)
	}
	b, err := m.Marshal()
	if err != nil {
		eph.zeroize()
		return nil, err
	}
	if in.eph != nil {
		in.eph.zeroize()
	}
	in.eph, in.initiation, in.state = eph, b, initSent
	in.th1 = transcript(th0, b[:len(b)-2*MACLen])
	return append([]byte(nil), b...), nil
}

// HandleResponse processes the gateway's Response (reassembled): it
// decapsulates, opens enc_r, verifies sig_r — with the pinned gateway key,
// or with the delegated key of a credential the pinned key signed (sent in
// the Response or, when left out, the one the Initiation hinted at; valid at
// the calibrated time within MaxSkew) — and only then signs and returns the
// Finish together with the session. The initiator may send transport data
// right after the Finish.
func (in *Initiator) HandleResponse(b []byte) ([]byte, *Result, error) {
	if in.state != initSent || in.eph == nil || in.eph.sk == nil {
		return nil, nil, fmt.Errorf("handshake: response without a pending initiation: %w", ErrState)
	}
	m, err := ParseResponse(b)
	if err != nil {
		return nil, nil, err
	}
	if m.ReceiverIndex != in.cfg.LocalIndex {
		return nil, nil, fmt.Errorf("handshake: response for index %d, ours is %d: %w", m.ReceiverIndex, in.cfg.LocalIndex, ErrIndex)
	}
	ss := in.eph.decapsulate(m.Ciphertext)
	prk := extract(in.th1[:], ss[:])
	clear(ss[:])
	defer clear(prk[:])
	th2 := transcript(in.th1, b[:12+CiphertextLen])
	kr := expand32(&prk, labelResponder, th2[:])
	pt, err := open(&kr, m.Sealed, th2[:])
	clear(kr[:])
	if err != nil {
		return nil, nil, fmt.Errorf("handshake: response enc_r: %w", err)
	}
	cred, thc, err := in.verifyResponder(th2, pt)
	if err != nil {
		return nil, nil, err
	}
	th3 := transcript(thc, m.Sealed)
	ki := expand32(&prk, labelInitiator, th3[:])
	defer clear(ki[:])
	signed := transcript(th3, in.chain)
	sigI, err := signChecked(in.cfg.Signer, signed[:], contextInitiator)
	if err != nil {
		return nil, nil, err
	}
	plain := make([]byte, 0, 2+len(in.chain)+SignatureLen)
	plain = be.AppendUint16(plain, uint16(len(in.chain)))
	plain = append(plain, in.chain...)
	plain = append(plain, sigI...)
	enc, err := seal(nil, &ki, plain, th3[:])
	if err != nil {
		return nil, nil, err
	}
	finish, err := (&Finish{ReceiverIndex: m.SenderIndex, Sealed: enc}).Marshal()
	if err != nil {
		return nil, nil, err
	}
	th4 := transcript(th3, enc)
	keys := deriveSession(&prk, th4[:])
	defer keys.zeroize()
	in.errKey, in.hasErrKey = expand32(&prk, labelError, nil), true
	res := newResult(true, in.cfg.LocalIndex, m.SenderIndex, in.cfg.AEAD, &keys,
		Peer{ID: gatewayPeerID(in.id), PublicKey: append([]byte(nil), in.cfg.ResponderPublicKey...)}, in.cfg.Now())
	res.Credential = cred
	in.eph.zeroize()
	in.state = initDone
	return finish, res, nil
}

// verifyResponder checks the plaintext of enc_r (nonce_r ‖ flags ‖
// [credential] ‖ sig_r): the flags, the credential and sig_r over thc. It
// returns the credential sig_r was verified with (nil when the pinned key
// signed) and thc.
func (in *Initiator) verifyResponder(th2 [32]byte, pt []byte) (*Credential, [32]byte, error) {
	if len(pt) < NonceLen+4 {
		return nil, [32]byte{}, fmt.Errorf("handshake: response plaintext of %d bytes: %w", len(pt), ErrMalformed)
	}
	flags := be.Uint32(pt[NonceLen:])
	body := pt[NonceLen+4:]
	hasCred := len(body) == CredentialLen+SignatureLen
	if flags&^(FlagDelegated|FlagCredential) != 0 || (flags&FlagCredential != 0) != hasCred ||
		(flags == FlagCredential) || (!hasCred && len(body) != SignatureLen) {
		return nil, [32]byte{}, fmt.Errorf("handshake: response flags %#x with %d bytes: %w", flags, len(body), ErrMalformed)
	}
	pk, cred := in.rpk, (*Credential)(nil)
	now := in.cfg.Now()
	switch {
	case hasCred:
		c, err := ParseCredential(body[:CredentialLen])
		if err != nil {
			return nil, [32]byte{}, err
		}
		if err := c.verify(in.rpk, in.id); err != nil {
			return nil, [32]byte{}, err
		}
		cred = c
	case flags&FlagDelegated != 0:
		if in.cfg.Credential == nil {
			return nil, [32]byte{}, fmt.Errorf("handshake: response names a credential this initiator does not have: %w", ErrCredential)
		}
		cred = in.cfg.Credential
	}
	if cred != nil {
		if err := cred.ValidAt(now, in.cfg.MaxSkew); err != nil {
			return nil, [32]byte{}, err
		}
		pk = cred.pk
	}
	thc := signedTranscript(th2, flags, cred)
	if !verifyMLDSA65(pk, thc[:], contextResponder, body[len(body)-SignatureLen:]) {
		return nil, [32]byte{}, fmt.Errorf("handshake: responder signature: %w", ErrSignature)
	}
	return cred, thc, nil
}

// HandshakeErrorInfo is a HandshakeError the initiator received.
type HandshakeErrorInfo struct {
	Code ErrorCode
	// Detail is the raw detail (UTF-8 text, or for clock_skew the
	// responder's time).
	Detail []byte
	// Authenticated is true when the tag verified under this handshake's
	// error key: the gateway itself refused the Finish. Otherwise the
	// message is a hint anyone could have sent; keep retrying with backoff
	// and never end a working session on it.
	Authenticated bool
	// ResponderTime is the gateway's calibrated time for CodeClockSkew.
	ResponderTime time.Time
}

// HandleError parses a HandshakeError addressed to this initiator and
// checks its tag when it claims to be authenticated.
func (in *Initiator) HandleError(b []byte) (*HandshakeErrorInfo, error) {
	m, err := ParseHandshakeError(b)
	if err != nil {
		return nil, err
	}
	if m.ReceiverIndex != in.cfg.LocalIndex {
		return nil, fmt.Errorf("handshake: error for index %d, ours is %d: %w", m.ReceiverIndex, in.cfg.LocalIndex, ErrIndex)
	}
	if m.Authenticated {
		if !in.hasErrKey {
			return nil, fmt.Errorf("handshake: authenticated error before a verified response: %w", ErrDecrypt)
		}
		want := errorTag(&in.errKey, b[:len(b)-TagLen])
		if !hmac.Equal(want[:], m.Tag[:]) {
			return nil, fmt.Errorf("handshake: error tag: %w", ErrDecrypt)
		}
	}
	info := &HandshakeErrorInfo{Code: m.Code, Detail: m.Detail, Authenticated: m.Authenticated}
	if m.Code == CodeClockSkew && len(m.Detail) == 8 {
		info.ResponderTime = time.Unix(0, int64(be.Uint64(m.Detail))).UTC()
	}
	return info, nil
}

// Zeroize clears the ephemeral key and the error key.
func (in *Initiator) Zeroize() {
	if in.eph != nil {
		in.eph.zeroize()
	}
	clear(in.errKey[:])
	in.hasErrKey = false
}
