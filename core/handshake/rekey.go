package handshake

import (
	"fmt"
	"io"
	"time"
)

// Rekey is a KEM-only exchange bound to the session through its rekey
// secret rk: no signatures, so it is cheap, and only the holders of rk can
// produce messages the other side accepts. The initiator of the session
// (the agent) always starts it.
//
//	RekeyInit: hdr | sender_index (new) | receiver_index | counter |
//	           AEAD(HKDF-Expand(rk, "avon-v1 rekey init"), counter, epk, ad = first 20 B)
//	RekeyResp: hdr | sender_index (new) | receiver_index | counter |
//	           AEAD(HKDF-Expand(rk, "avon-v1 rekey resp"), counter, ct, ad = first 20 B)
//	prk' = HKDF-Extract(rk, ss'), th' = H(rk || RekeyInit || RekeyResp)
//
// The counter is per session and strictly increasing; the responder
// refuses a counter not above the last one it accepted (checked before
// decryption, recorded only after), so a replayed RekeyInit is refused and
// no (key, nonce) pair is ever used twice.

// RekeyInitiator runs one rekey of an initiator's session.
type RekeyInitiator struct {
	res      *Result
	rand     io.Reader
	now      func() time.Time
	newLocal uint32

	eph     *ephemeral
	msg     []byte // the last RekeyInit sent
	counter uint64
	done    bool
}

// NewRekeyInitiator prepares a rekey of res (an initiator's session) under
// the new local index.
func NewRekeyInitiator(res *Result, rnd io.Reader, now func() time.Time, newLocalIndex uint32) (*RekeyInitiator, error) {
	if res == nil || rnd == nil || now == nil {
		return nil, fmt.Errorf("handshake: rekey needs a session, Rand and Now: %w", ErrConfig)
	}
	if !res.Initiator {
		return nil, fmt.Errorf("handshake: only the session's initiator starts a rekey: %w", ErrState)
	}
	if res.rekey == nil {
		return nil, fmt.Errorf("handshake: rekey of a zeroized session: %w", ErrState)
	}
	return &RekeyInitiator{res: res, rand: rnd, now: now, newLocal: newLocalIndex}, nil
}

// RekeyInit returns a RekeyInit with a fresh ephemeral key and the
// session's next counter. Calling it again (the answer was lost) makes a
// new one; only the answer to the latest is accepted.
func (r *RekeyInitiator) RekeyInit() ([]byte, error) {
	if r.done || r.res.rekey == nil {
		return nil, fmt.Errorf("handshake: rekey finished or session zeroized: %w", ErrState)
	}
	eph, err := newEphemeral(r.rand)
	if err != nil {
		return nil, err
	}
	st := r.res.rekey
	st.mu.Lock()
	st.counter++
	c := st.counter
	st.mu.Unlock()
	m := &Rekey{Type: TypeRekeyInit, SenderIndex: r.newLocal, ReceiverIndex: r.res.RemoteIndex, Counter: c,
		Sealed: make([]byte, EphemeralKeyLen+TagLen)}
	b, err := m.Marshal()
	if err != nil {
		eph.zeroize()
		return nil, err
	}
	if err := sealRekey(r.res, labelRekeyInit, b, eph.pub); err != nil {
		eph.zeroize()
		return nil, err
	}
	if r.eph != nil {
		r.eph.zeroize()
	}
	r.eph, r.msg, r.counter = eph, b, c
	return append([]byte(nil), b...), nil
}

// HandleRekeyResp takes the responder's answer to the latest RekeyInit and
// returns the new session. The old Result stays valid (the tunnel keeps its
// keys 10 s for packets in flight, then zeroizes it).
func (r *RekeyInitiator) HandleRekeyResp(b []byte) (*Result, error) {
	if r.done || r.msg == nil || r.res.rekey == nil {
		return nil, fmt.Errorf("handshake: rekey response without a pending rekey: %w", ErrState)
	}
	m, err := ParseRekey(b, TypeRekeyResp)
	if err != nil {
		return nil, err
	}
	if m.ReceiverIndex != r.newLocal {
		return nil, fmt.Errorf("handshake: rekey response for index %d, ours is %d: %w", m.ReceiverIndex, r.newLocal, ErrIndex)
	}
	if m.Counter != r.counter {
		return nil, fmt.Errorf("handshake: rekey response counter %d, pending %d: %w", m.Counter, r.counter, ErrReplay)
	}
	ct, err := openRekey(r.res, labelRekeyResp, b)
	if err != nil {
		return nil, err
	}
	ss := r.eph.decapsulate(ct)
	res := rekeyResult(r.res, ss, r.msg, b, r.newLocal, m.SenderIndex, r.now())
	clear(ss[:])
	r.eph.zeroize()
	r.done = true
	return res, nil
}

// Zeroize clears the pending ephemeral key.
func (r *RekeyInitiator) Zeroize() {
	if r.eph != nil {
		r.eph.zeroize()
	}
	r.done = true
}

// HandleRekeyInit answers a RekeyInit on the responder's session res under
// the new local index, returning the RekeyResp and the new session. It is
// safe for concurrent use on one res.
func HandleRekeyInit(res *Result, b []byte, rnd io.Reader, now func() time.Time, newLocalIndex uint32) ([]byte, *Result, error) {
	if res == nil || rnd == nil || now == nil {
		return nil, nil, fmt.Errorf("handshake: rekey needs a session, Rand and Now: %w", ErrConfig)
	}
	if res.Initiator {
		return nil, nil, fmt.Errorf("handshake: rekey init on the initiator's side: %w", ErrState)
	}
	st := res.rekey
	if st == nil {
		return nil, nil, fmt.Errorf("handshake: rekey of a zeroized session: %w", ErrState)
	}
	m, err := parseRekey(b, TypeRekeyInit)
	if err != nil {
		return nil, nil, err
	}
	if m.ReceiverIndex != res.LocalIndex {
		return nil, nil, fmt.Errorf("handshake: rekey init for index %d, ours is %d: %w", m.ReceiverIndex, res.LocalIndex, ErrIndex)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if m.Counter <= st.counter {
		return nil, nil, fmt.Errorf("handshake: rekey counter %d, last accepted %d: %w", m.Counter, st.counter, ErrReplay)
	}
	// Both message keys from one keyed HMAC.
	var kInit, kResp [32]byte
	defer clear(kInit[:])
	defer clear(kResp[:])
	ex := newExpander(&res.RekeySecret)
	ex.expand(labelRekeyInit, nil, kInit[:])
	ex.expand(labelRekeyResp, nil, kResp[:])
	// The RekeyResp's buffer: the ephemeral key is opened into it (its
	// capacity holds the key, 96 bytes longer than the ciphertext), and
	// once parsed (circl's key keeps no reference to the bytes) the
	// ciphertext overwrites it and is sealed in place.
	out := make([]byte, RekeyRespLen, max(RekeyRespLen, rekeyHeaderLen+EphemeralKeyLen))
	epkBytes, err := openRekeyTo(out[rekeyHeaderLen:rekeyHeaderLen], res.AEAD, &kInit, b)
	if err != nil {
		return nil, nil, err
	}
	st.counter = m.Counter // authenticated: record it even if what follows fails
	epk, err := parseEphemeral(epkBytes)
	if err != nil {
		return nil, nil, err
	}
	ct := out[rekeyHeaderLen : rekeyHeaderLen+CiphertextLen]
	ss, err := encapsulateTo(ct, epk, rnd)
	if err != nil {
		return nil, nil, err
	}
	defer clear(ss[:])
	putRekeyHeader(out, TypeRekeyResp, newLocalIndex, m.SenderIndex, m.Counter)
	if err := sealRekeyWith(res.AEAD, &kResp, out, ct); err != nil {
		return nil, nil, err
	}
	return out, rekeyResult(res, ss, b, out, newLocalIndex, m.SenderIndex, now()), nil
}

// sealRekey encrypts payload into msg[rekeyHeaderLen:] under the key
// HKDF-Expand(rk, label), nonce = counter, ad = the 20-byte header.
func sealRekey(res *Result, label string, msg, payload []byte) error {
	k := expand32(&res.RekeySecret, label, nil)
	defer clear(k[:])
	return sealRekeyWith(res.AEAD, &k, msg, payload)
}

// sealRekeyWith is sealRekey with the message key given. payload may be
// msg[rekeyHeaderLen:rekeyHeaderLen+len(payload)] (sealed in place).
func sealRekeyWith(id AEADID, k *[32]byte, msg, payload []byte) error {
	a, err := NewAEAD(id, k[:])
	if err != nil {
		return err
	}
	nonce := counterNonce(be.Uint64(msg[12:]))
	a.Seal(msg[rekeyHeaderLen:rekeyHeaderLen], nonce[:], payload, msg[:rekeyHeaderLen])
	return nil
}

func openRekey(res *Result, label string, msg []byte) ([]byte, error) {
	k := expand32(&res.RekeySecret, label, nil)
	defer clear(k[:])
	return openRekeyTo(nil, res.AEAD, &k, msg)
}

// openRekeyTo opens msg's sealed part under the message key k, appending
// the plaintext to dst (which must not overlap msg).
func openRekeyTo(dst []byte, id AEADID, k *[32]byte, msg []byte) ([]byte, error) {
	a, err := NewAEAD(id, k[:])
	if err != nil {
		return nil, err
	}
	nonce := counterNonce(be.Uint64(msg[12:]))
	pt, err := a.Open(dst, nonce[:], msg[rekeyHeaderLen:], msg[:rekeyHeaderLen])
	if err != nil {
		return nil, fmt.Errorf("handshake: %s: %w", MessageType(msg[0]), ErrDecrypt)
	}
	return pt, nil
}

// rekeyResult derives the new session from the old rk and ss'.
func rekeyResult(old *Result, ss [32]byte, initMsg, respMsg []byte, local, remote uint32, now time.Time) *Result {
	prk := extract(old.RekeySecret[:], ss[:])
	defer clear(prk[:])
	th := transcript(old.RekeySecret, initMsg, respMsg)
	keys := deriveSession(&prk, th[:])
	defer keys.zeroize()
	return newResult(old.Initiator, local, remote, old.AEAD, &keys, old.Peer, now)
}
