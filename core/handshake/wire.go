package handshake

import (
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/cloudflare/circl/kem/xwing"
	"github.com/cloudflare/circl/sign/mldsa/mldsa65"
)

// Version is the protocol version this package speaks. Version 2 added the
// Initiation's credential hint and the Response's delegated credential
// (docs/protocol.md §2); version 1 is refused like any other.
const Version = 2

// MessageType is byte 0 of every datagram.
type MessageType uint8

// Message types of protocol v1. This package builds and parses Initiation,
// Response, Finish, RekeyInit, RekeyResp and HandshakeError; Transport,
// CookieReply and Fragment belong to core/tunnel.
const (
	TypeInitiation     MessageType = 1
	TypeResponse       MessageType = 2
	TypeFinish         MessageType = 3
	TypeTransport      MessageType = 4
	TypeCookieReply    MessageType = 5
	TypeRekeyInit      MessageType = 6
	TypeRekeyResp      MessageType = 7
	TypeHandshakeError MessageType = 8
	TypeFragment       MessageType = 9
)

func (t MessageType) String() string {
	switch t {
	case TypeInitiation:
		return "initiation"
	case TypeResponse:
		return "response"
	case TypeFinish:
		return "finish"
	case TypeTransport:
		return "transport"
	case TypeCookieReply:
		return "cookie-reply"
	case TypeRekeyInit:
		return "rekey-init"
	case TypeRekeyResp:
		return "rekey-resp"
	case TypeHandshakeError:
		return "handshake-error"
	case TypeFragment:
		return "fragment"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Suite v1 identifiers.
const (
	KEMXWing   uint8 = 1 // X-Wing (ML-KEM-768 + X25519)
	SigMLDSA65 uint8 = 1 // ML-DSA-65, pure, with a context string
)

// AEADID is the transport AEAD negotiated in the Initiation's suite. The
// handshake's own encrypted fields always use AES-256-GCM; rekey messages
// use the negotiated AEAD.
type AEADID uint8

// Transport AEADs of suite v1.
const (
	AES256GCM        AEADID = 1
	ChaCha20Poly1305 AEADID = 2
)

// Valid reports whether id is an AEAD of suite v1.
func (id AEADID) Valid() bool { return id == AES256GCM || id == ChaCha20Poly1305 }

func (id AEADID) String() string {
	switch id {
	case AES256GCM:
		return "aes-256-gcm"
	case ChaCha20Poly1305:
		return "chacha20-poly1305"
	}
	return fmt.Sprintf("aead(%d)", uint8(id))
}

// Suite is the suite block of an Initiation. Flags has no bits defined in
// v1 and must be zero.
type Suite struct {
	KEM, Sig uint8
	AEAD     AEADID
	Flags    uint8
}

// Sizes of fields and messages, in bytes.
const (
	HeaderLen        = 4
	IndexLen         = 4
	NonceLen         = 32
	IDLen            = 32                   // responder_id: SHA-256 of the gateway's SubjectPublicKeyInfo
	MaxTokenLen      = 64                   // an address token is 64 bytes (core/tunnel/cookie)
	EphemeralKeyLen  = xwing.PublicKeySize  // 1216
	CiphertextLen    = xwing.CiphertextSize // 1120
	MACLen           = 16
	TagLen           = 16
	SignatureLen     = mldsa65.SignatureSize // 3309
	PublicKeyLen     = mldsa65.PublicKeySize // 1952
	MaxChainLen      = 12 * 1024             // DER bytes of the initiator's chain
	MaxChainCerts    = 8
	MaxErrorDetail   = 256
	CounterLen       = 8
	rekeyHeaderLen   = HeaderLen + 2*IndexLen + CounterLen // 20
	initFixedLen     = HeaderLen + IndexLen + 4 + 8 + NonceLen + IDLen + 2
	responseEncPlain = NonceLen + 4 + SignatureLen

	// InitiationMinLen is the length of an Initiation without a token;
	// every token byte adds one.
	InitiationMinLen = initFixedLen + EphemeralKeyLen + CredentialHashLen + 2*MACLen // 1366
	InitiationMaxLen = InitiationMinLen + MaxTokenLen                                // 1430
	// ResponseLen is the length of a Response without a credential (signed
	// by the pinned key, or by a delegated key whose credential the
	// initiator has); ResponseFullLen with one.
	ResponseLen     = HeaderLen + 2*IndexLen + CiphertextLen + responseEncPlain + TagLen // 4493
	ResponseFullLen = ResponseLen + CredentialLen                                        // 9806
	// FinishMinLen and FinishMaxLen bound a Finish: the chain is inside the
	// ciphertext, so the exact length is checked after decryption.
	FinishMinLen = HeaderLen + IndexLen + 2 + 1 + SignatureLen + TagLen // 3336
	FinishMaxLen = FinishMinLen - 1 + MaxChainLen                       // 15623
	// RekeyInitLen and RekeyRespLen are exact.
	RekeyInitLen = rekeyHeaderLen + EphemeralKeyLen + TagLen // 1252
	RekeyRespLen = rekeyHeaderLen + CiphertextLen + TagLen   // 1156
	// HandshakeErrorMinLen is an unauthenticated error without detail.
	HandshakeErrorMinLen = HeaderLen + IndexLen + 2 + 2 // 12
	HandshakeErrorMaxLen = HandshakeErrorMinLen + MaxErrorDetail + TagLen
)

// errAuthenticated is bit 15 of a HandshakeError's code field: a 16-byte
// tag follows the detail.
const errAuthenticated = 0x8000

var be = binary.BigEndian

// ParseHeader checks the common header (version 2, reserved bytes zero)
// and returns the message type. The gateway demultiplexes with it before
// any other work.
func ParseHeader(b []byte) (MessageType, error) {
	if len(b) < HeaderLen {
		return 0, fmt.Errorf("handshake: header of %d bytes: %w", len(b), ErrTruncated)
	}
	if b[1] != Version {
		return MessageType(b[0]), fmt.Errorf("handshake: version %d: %w", b[1], ErrVersion)
	}
	if b[2] != 0 || b[3] != 0 {
		return MessageType(b[0]), fmt.Errorf("handshake: reserved header bytes %#x %#x: %w", b[2], b[3], ErrMalformed)
	}
	return MessageType(b[0]), nil
}

// checkHeader checks the header of a message of type want whose length
// must lie in [min, max]. The version is judged before the length, since
// another version may have another layout.
func checkHeader(b []byte, want MessageType, min, max int) error {
	t, err := ParseHeader(b)
	if err != nil {
		return err
	}
	if t != want {
		return fmt.Errorf("handshake: %s expected, got %s: %w", want, t, ErrMalformed)
	}
	if len(b) < min {
		return fmt.Errorf("handshake: %s of %d bytes, want at least %d: %w", want, len(b), min, ErrTruncated)
	}
	if len(b) > max {
		return fmt.Errorf("handshake: %s of %d bytes, want at most %d: %w", want, len(b), max, ErrMalformed)
	}
	return nil
}

// appendHeader appends the HeaderLen bytes of a message of type t.
func appendHeader(b []byte, t MessageType) []byte { return append(b, byte(t), Version, 0, 0) }

// putHeader writes the header of a message of type t into b[:HeaderLen].
func putHeader(b []byte, t MessageType) { appendHeader(b[:0:HeaderLen], t) }

// Initiation is message 1. EphemeralKey aliases nothing: Parse copies.
type Initiation struct {
	SenderIndex  uint32
	Suite        Suite
	Timestamp    int64 // unix ns, the initiator's calibrated time
	Nonce        [NonceLen]byte
	ResponderID  [IDLen]byte
	Token        []byte // address token, at most MaxTokenLen
	EphemeralKey []byte // X-Wing public key, EphemeralKeyLen
	// CredentialHint is H("avon-v1 credential hint" ‖ nonce ‖ SHA-256 of
	// the delegated credential the initiator has), or random bytes.
	CredentialHint [CredentialHashLen]byte
	MAC1, MAC2     [MACLen]byte
}

// Len is the encoded length.
func (m *Initiation) Len() int { return InitiationMinLen + len(m.Token) }

// Marshal encodes the Initiation, MACs included as they are set.
func (m *Initiation) Marshal() ([]byte, error) {
	if len(m.Token) > MaxTokenLen {
		return nil, fmt.Errorf("handshake: token of %d bytes, at most %d: %w", len(m.Token), MaxTokenLen, ErrMalformed)
	}
	if len(m.EphemeralKey) != EphemeralKeyLen {
		return nil, fmt.Errorf("handshake: ephemeral key of %d bytes: %w", len(m.EphemeralKey), ErrMalformed)
	}
	b := make([]byte, m.Len())
	putHeader(b, TypeInitiation)
	be.PutUint32(b[4:], m.SenderIndex)
	b[8], b[9], b[10], b[11] = m.Suite.KEM, m.Suite.Sig, byte(m.Suite.AEAD), m.Suite.Flags
	be.PutUint64(b[12:], uint64(m.Timestamp))
	copy(b[20:52], m.Nonce[:])
	copy(b[52:84], m.ResponderID[:])
	be.PutUint16(b[84:], uint16(len(m.Token)))
	o := 86 + copy(b[86:], m.Token)
	o += copy(b[o:], m.EphemeralKey)
	o += copy(b[o:], m.CredentialHint[:])
	o += copy(b[o:], m.MAC1[:])
	copy(b[o:], m.MAC2[:])
	return b, nil
}

// ParseInitiation checks the layout of an Initiation (type, version,
// reserved bytes, token length, exact length) and decodes it. It does no
// cryptography and does not judge the suite, timestamp or key.
func ParseInitiation(b []byte) (*Initiation, error) {
	m, err := parseInitiation(b)
	if err != nil {
		return nil, err
	}
	if m.Token != nil {
		m.Token = append([]byte(nil), m.Token...)
	}
	m.EphemeralKey = append([]byte(nil), m.EphemeralKey...)
	return &m, nil
}

// parseInitiation is ParseInitiation by value, with Token and EphemeralKey
// views into b (the responder reads them while it handles b).
func parseInitiation(b []byte) (Initiation, error) {
	if err := checkHeader(b, TypeInitiation, InitiationMinLen, InitiationMaxLen); err != nil {
		return Initiation{}, err
	}
	tl := int(be.Uint16(b[84:]))
	if tl > MaxTokenLen {
		return Initiation{}, fmt.Errorf("handshake: token_len %d, at most %d: %w", tl, MaxTokenLen, ErrMalformed)
	}
	if want := InitiationMinLen + tl; len(b) != want {
		if len(b) < want {
			return Initiation{}, fmt.Errorf("handshake: initiation of %d bytes with token_len %d, want %d: %w", len(b), tl, want, ErrTruncated)
		}
		return Initiation{}, fmt.Errorf("handshake: initiation of %d bytes with token_len %d, want %d: %w", len(b), tl, want, ErrMalformed)
	}
	m := Initiation{
		SenderIndex: be.Uint32(b[4:]),
		Suite:       Suite{KEM: b[8], Sig: b[9], AEAD: AEADID(b[10]), Flags: b[11]},
		Timestamp:   int64(be.Uint64(b[12:])),
	}
	copy(m.Nonce[:], b[20:52])
	copy(m.ResponderID[:], b[52:84])
	o := 86
	if tl > 0 {
		m.Token = b[o : o+tl : o+tl]
	}
	o += tl
	m.EphemeralKey = b[o : o+EphemeralKeyLen : o+EphemeralKeyLen]
	o += EphemeralKeyLen
	copy(m.CredentialHint[:], b[o:])
	o += CredentialHashLen
	copy(m.MAC1[:], b[o:])
	copy(m.MAC2[:], b[o+MACLen:])
	return m, nil
}

// Response is message 2.
type Response struct {
	SenderIndex   uint32 // the responder's index
	ReceiverIndex uint32 // the initiator's sender_index
	Ciphertext    []byte // X-Wing ciphertext, CiphertextLen
	// Sealed is enc_r: AES-256-GCM of nonce_r ‖ flags ‖ [credential] ‖
	// sig_r, with its tag.
	Sealed []byte
}

// Response flags (the u32 inside enc_r).
const (
	// FlagDelegated: sig_r is made with the delegated key of a credential.
	// Clear: with the pinned gateway key (delegation turned off).
	FlagDelegated uint32 = 1 << 0
	// FlagCredential: the credential is in enc_r (only with FlagDelegated).
	// Clear with FlagDelegated: the initiator's hinted credential is meant.
	FlagCredential uint32 = 1 << 1
)

// responseSealedLen is the length of enc_r without a credential.
const responseSealedLen = responseEncPlain + TagLen

// Marshal encodes the Response.
func (m *Response) Marshal() ([]byte, error) { return m.AppendTo(nil) }

// AppendTo appends the encoded Response to dst and returns the extended
// slice; on error dst is returned unchanged.
func (m *Response) AppendTo(dst []byte) ([]byte, error) {
	if len(m.Ciphertext) != CiphertextLen || (len(m.Sealed) != responseSealedLen && len(m.Sealed) != responseSealedLen+CredentialLen) {
		return dst, fmt.Errorf("handshake: response fields of %d and %d bytes: %w", len(m.Ciphertext), len(m.Sealed), ErrMalformed)
	}
	dst = slices.Grow(dst, responseHeadLen+len(m.Sealed))
	dst = appendResponseHead(dst, m.SenderIndex, m.ReceiverIndex, m.Ciphertext)
	return append(dst, m.Sealed...), nil
}

// responseHeadLen is the length of a Response before enc_r: header, both
// indices and the ciphertext. It is what th2 hashes.
const responseHeadLen = HeaderLen + 2*IndexLen + CiphertextLen

// appendResponseHead appends a Response's header, indices and ciphertext
// (ct, CiphertextLen bytes: the caller checks) to dst. Response.AppendTo
// follows it with enc_r; the responder seals enc_r after it in the same
// buffer.
func appendResponseHead(dst []byte, sender, receiver uint32, ct []byte) []byte {
	dst = appendHeader(dst, TypeResponse)
	dst = be.AppendUint32(dst, sender)
	dst = be.AppendUint32(dst, receiver)
	return append(dst, ct...)
}

// ParseResponse checks the header and the length of a Response (exactly
// ResponseLen or ResponseFullLen) and decodes it.
func ParseResponse(b []byte) (*Response, error) {
	if err := checkHeader(b, TypeResponse, ResponseLen, ResponseFullLen); err != nil {
		return nil, err
	}
	if len(b) != ResponseLen && len(b) != ResponseFullLen {
		return nil, fmt.Errorf("handshake: response of %d bytes, want %d or %d: %w", len(b), ResponseLen, ResponseFullLen, ErrMalformed)
	}
	return &Response{
		SenderIndex:   be.Uint32(b[4:]),
		ReceiverIndex: be.Uint32(b[8:]),
		Ciphertext:    append([]byte(nil), b[12:12+CiphertextLen]...),
		Sealed:        append([]byte(nil), b[12+CiphertextLen:]...),
	}, nil
}

// Finish is message 3.
type Finish struct {
	ReceiverIndex uint32 // the responder's index
	Sealed        []byte // enc_i: AES-256-GCM of chain_len || chain || sig_i, with its tag
}

// Marshal encodes the Finish.
func (m *Finish) Marshal() ([]byte, error) {
	n := HeaderLen + IndexLen + len(m.Sealed)
	if n < FinishMinLen || n > FinishMaxLen {
		return nil, fmt.Errorf("handshake: finish of %d bytes: %w", n, ErrMalformed)
	}
	b := make([]byte, n)
	putHeader(b, TypeFinish)
	be.PutUint32(b[4:], m.ReceiverIndex)
	copy(b[8:], m.Sealed)
	return b, nil
}

// ParseFinish checks the length bounds and header of a Finish and decodes
// it. The exact length is known only after decryption (chain_len). Sealed
// is a view into b, not a copy (enc_i is up to 14 KB): it is valid while b
// is, and changes with it; clone it to keep or modify it.
func ParseFinish(b []byte) (*Finish, error) {
	f, err := parseFinish(b)
	if err != nil {
		return nil, err
	}
	return &f, nil
}

// parseFinish decodes a Finish by value. It keeps ParseFinish small enough
// to be inlined, so that the Finish does not escape to the heap where the
// caller does not keep it (the responder's HandleFinish).
func parseFinish(b []byte) (Finish, error) {
	if err := checkHeader(b, TypeFinish, FinishMinLen, FinishMaxLen); err != nil {
		return Finish{}, err
	}
	return Finish{ReceiverIndex: be.Uint32(b[4:]), Sealed: b[8:len(b):len(b)]}, nil
}

// HandshakeErrorMsg is message 8. Authenticated messages carry a tag keyed
// from the handshake's prk; the others are hints.
type HandshakeErrorMsg struct {
	ReceiverIndex uint32 // the initiator's sender_index
	Code          ErrorCode
	Detail        []byte // at most MaxErrorDetail bytes, UTF-8
	Authenticated bool
	Tag           [TagLen]byte // valid when Authenticated
}

// Marshal encodes the message with Tag as set.
func (m *HandshakeErrorMsg) Marshal() ([]byte, error) {
	if len(m.Detail) > MaxErrorDetail || m.Code&errAuthenticated != 0 {
		return nil, fmt.Errorf("handshake: error code %d with %d detail bytes: %w", m.Code, len(m.Detail), ErrMalformed)
	}
	n := HandshakeErrorMinLen + len(m.Detail)
	if m.Authenticated {
		n += TagLen
	}
	b := make([]byte, n)
	putHeader(b, TypeHandshakeError)
	be.PutUint32(b[4:], m.ReceiverIndex)
	c := uint16(m.Code)
	if m.Authenticated {
		c |= errAuthenticated
	}
	be.PutUint16(b[8:], c)
	be.PutUint16(b[10:], uint16(len(m.Detail)))
	copy(b[12:], m.Detail)
	if m.Authenticated {
		copy(b[12+len(m.Detail):], m.Tag[:])
	}
	return b, nil
}

// ParseHandshakeError checks the layout of a HandshakeError and decodes it.
// Unknown codes parse (the initiator logs them); the tag is not checked here.
func ParseHandshakeError(b []byte) (*HandshakeErrorMsg, error) {
	if err := checkHeader(b, TypeHandshakeError, HandshakeErrorMinLen, HandshakeErrorMaxLen); err != nil {
		return nil, err
	}
	c := be.Uint16(b[8:])
	dl := int(be.Uint16(b[10:]))
	if dl > MaxErrorDetail {
		return nil, fmt.Errorf("handshake: error detail_len %d: %w", dl, ErrMalformed)
	}
	m := &HandshakeErrorMsg{ReceiverIndex: be.Uint32(b[4:]), Code: ErrorCode(c &^ errAuthenticated), Authenticated: c&errAuthenticated != 0}
	want := HandshakeErrorMinLen + dl
	if m.Authenticated {
		want += TagLen
	}
	if len(b) != want {
		if len(b) < want {
			return nil, fmt.Errorf("handshake: error of %d bytes, want %d: %w", len(b), want, ErrTruncated)
		}
		return nil, fmt.Errorf("handshake: error of %d bytes, want %d: %w", len(b), want, ErrMalformed)
	}
	m.Detail = append([]byte(nil), b[12:12+dl]...)
	if m.Authenticated {
		copy(m.Tag[:], b[12+dl:])
	}
	return m, nil
}

// Rekey is message 6 (RekeyInit) or 7 (RekeyResp): the same header, then
// the sealed ephemeral key (6) or ciphertext (7).
type Rekey struct {
	Type          MessageType // TypeRekeyInit or TypeRekeyResp
	SenderIndex   uint32      // the sender's new index
	ReceiverIndex uint32      // RekeyInit: the responder's current index; RekeyResp: the initiator's new index
	Counter       uint64
	Sealed        []byte // AEAD of the key or ciphertext, with its tag
}

func rekeyLen(t MessageType) int {
	if t == TypeRekeyInit {
		return RekeyInitLen
	}
	return RekeyRespLen
}

// Marshal encodes the rekey message.
func (m *Rekey) Marshal() ([]byte, error) {
	if m.Type != TypeRekeyInit && m.Type != TypeRekeyResp {
		return nil, fmt.Errorf("handshake: %s is not a rekey message: %w", m.Type, ErrMalformed)
	}
	n := rekeyLen(m.Type)
	if rekeyHeaderLen+len(m.Sealed) != n {
		return nil, fmt.Errorf("handshake: %s sealed part of %d bytes: %w", m.Type, len(m.Sealed), ErrMalformed)
	}
	b := make([]byte, n)
	putRekeyHeader(b, m.Type, m.SenderIndex, m.ReceiverIndex, m.Counter)
	copy(b[rekeyHeaderLen:], m.Sealed)
	return b, nil
}

// ParseRekey checks the exact length and header of a rekey message of type
// t (TypeRekeyInit or TypeRekeyResp) and decodes it.
func ParseRekey(b []byte, t MessageType) (*Rekey, error) {
	if t != TypeRekeyInit && t != TypeRekeyResp {
		return nil, fmt.Errorf("handshake: %s is not a rekey message: %w", t, ErrMalformed)
	}
	m, err := parseRekey(b, t)
	if err != nil {
		return nil, err
	}
	m.Sealed = append([]byte(nil), m.Sealed...)
	return &m, nil
}

// parseRekey is ParseRekey by value, with Sealed a view into b (the
// responder reads the header fields and opens the sealed part in place).
func parseRekey(b []byte, t MessageType) (Rekey, error) {
	n := rekeyLen(t)
	if err := checkHeader(b, t, n, n); err != nil {
		return Rekey{}, err
	}
	return Rekey{
		Type:          t,
		SenderIndex:   be.Uint32(b[4:]),
		ReceiverIndex: be.Uint32(b[8:]),
		Counter:       be.Uint64(b[12:]),
		Sealed:        b[rekeyHeaderLen:n:n],
	}, nil
}

// putRekeyHeader writes the 20-byte header of a rekey message.
func putRekeyHeader(b []byte, t MessageType, sender, receiver uint32, counter uint64) {
	putHeader(b, t)
	be.PutUint32(b[4:], sender)
	be.PutUint32(b[8:], receiver)
	be.PutUint64(b[12:], counter)
}
