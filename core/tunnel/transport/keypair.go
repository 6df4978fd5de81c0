// Package transport is the data plane of the AVON tunnel: the transport
// packets (message type 4) that carry inner IP packets once a handshake or a
// rekey produced a pair of directional keys, and the parsing of those inner
// packets for routing, policy and cryptokey routing.
//
// A transport packet is
//
//	type=4 u8 | version=1 u8 | reserved u16 (zero) | receiver_index u32 |
//	counter u64 | AEAD(key, nonce = 4 zero bytes || counter BE,
//	                   plaintext = inner packet zero-padded to a multiple of 16,
//	                   ad = the first 16 bytes)
//
// An empty plaintext is a keepalive. A Keypair seals with the sending key and
// an atomic counter, and opens with the receiving key behind an RFC 6479
// window (core/tunnel/replay): the window is checked before the AEAD runs and
// updated only after it opened, so forged packets never move it.
//
// The package does no I/O, keeps no clock and starts no goroutines: the
// session layer owns the keypairs, reads the time, asks NeedsRekey and Expired
// and replaces or zeroizes keypairs. It must not make policy decisions; it
// only reports what the inner packet says (ParseInner).
package transport

import (
	"crypto/cipher"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/avonzt/avon/core/tunnel/replay"
)

// Key lifetimes of the design. The initiator starts a rekey when either rekey
// limit is reached; a keypair past either reject limit is not used at all.
const (
	RekeyAfterTime      = 120 * time.Second
	RejectAfterTime     = 180 * time.Second
	RekeyAfterMessages  = uint64(1) << 48
	RejectAfterMessages = replay.Limit // 2^60
)

// NeedsRekey reports whether a key created at created, which has carried count
// messages, is due for a rekey at now. A creation time after now (the clock
// went back) also asks for a rekey: a fresh key is cheap, a key of unknown age
// is not to be trusted.
func NeedsRekey(created, now time.Time, count uint64) bool {
	age := now.Sub(created)
	return age >= RekeyAfterTime || age < 0 || count >= RekeyAfterMessages
}

// Expired reports whether a key created at created, which has carried count
// messages, must no longer seal or open anything at now.
func Expired(created, now time.Time, count uint64) bool {
	return now.Sub(created) >= RejectAfterTime || count >= RejectAfterMessages
}

// Keypair is one direction pair of transport keys of a session.
//
// Seal, Open, NeedsRekey, Expired and Zeroize are safe for concurrent use.
// Keypair does not read the clock: its owner calls Expired before Seal and
// Open (or zeroizes the keypair when it expires) and NeedsRekey on its send
// path or timer.
type Keypair struct {
	id          AEADID
	localIndex  uint32 // our index: packets to us carry it as receiver_index
	remoteIndex uint32 // the peer's index: we put it in what we send
	created     time.Time

	// ciphers is nil after Zeroize. It is set once in NewKeypair and
	// swapped to nil once, never mutated in between.
	ciphers atomic.Pointer[ciphers]

	// sendCounter is the next counter to seal with.
	sendCounter atomic.Uint64
	// recvHighest mirrors recv.window.Highest() for lock-free reads
	// (NeedsRekey, Expired). Written only with recv held.
	recvHighest atomic.Uint64

	recv struct {
		sync.Mutex
		window replay.Window // guarded by recv
	}
}

// ciphers holds the raw keys and the AEADs built from them.
type ciphers struct {
	sendKey, recvKey [32]byte
	send, recv       cipher.AEAD
}

// NewKeypair builds a keypair for AEAD id from the directional keys the key
// schedule derived (t_i2r and t_r2i: the initiator sends with t_i2r and
// receives with t_r2i, the responder the other way around). localIndex is the
// index the peer addresses us by, remoteIndex the one we address it by.
//
// The keys are copied; the caller still owns sendKey and recvKey and must
// zeroize its copies. The two keys must differ (equal keys would let an
// attacker reflect our own packets back to us).
func NewKeypair(id AEADID, sendKey, recvKey *[32]byte, localIndex, remoteIndex uint32, created time.Time) (*Keypair, error) {
	if !id.Valid() {
		return nil, fmt.Errorf("new keypair with %v: %w", id, ErrAEAD)
	}
	if sendKey == nil || recvKey == nil {
		return nil, fmt.Errorf("new keypair: %w", ErrKey)
	}
	if subtle.ConstantTimeCompare(sendKey[:], recvKey[:]) == 1 {
		return nil, fmt.Errorf("new keypair with equal send and receive keys: %w", ErrKey)
	}
	c := &ciphers{sendKey: *sendKey, recvKey: *recvKey}
	var err error
	if c.send, err = newAEAD(id, &c.sendKey); err == nil {
		c.recv, err = newAEAD(id, &c.recvKey)
	}
	if err != nil {
		clear(c.sendKey[:])
		clear(c.recvKey[:])
		return nil, fmt.Errorf("new keypair: %w", err)
	}
	k := &Keypair{id: id, localIndex: localIndex, remoteIndex: remoteIndex, created: created}
	k.ciphers.Store(c)
	return k, nil
}

// AEAD returns the keypair's AEAD.
func (k *Keypair) AEAD() AEADID { return k.id }

// LocalIndex returns the index packets to us carry as receiver_index.
func (k *Keypair) LocalIndex() uint32 { return k.localIndex }

// RemoteIndex returns the index we put in packets to the peer.
func (k *Keypair) RemoteIndex() uint32 { return k.remoteIndex }

// Created returns the creation time given to NewKeypair.
func (k *Keypair) Created() time.Time { return k.created }

// SendCounter returns the counter the next Seal will use (the number of
// packets sealed so far, up to RejectAfterMessages).
func (k *Keypair) SendCounter() uint64 { return min(k.sendCounter.Load(), RejectAfterMessages) }

// count is the message count of the key for the rekey limits: the larger of
// what we sent and the highest counter we accepted.
func (k *Keypair) count() uint64 { return max(k.SendCounter(), k.recvHighest.Load()) }

// NeedsRekey reports whether this keypair is due for a rekey at now (see the
// function NeedsRekey), counting both directions.
func (k *Keypair) NeedsRekey(now time.Time) bool { return NeedsRekey(k.created, now, k.count()) }

// Expired reports whether this keypair must no longer be used at now, or was
// zeroized.
func (k *Keypair) Expired(now time.Time) bool {
	return k.ciphers.Load() == nil || Expired(k.created, now, k.count())
}

// Seal appends to dst the transport packet carrying inner (an IP packet, or
// nothing for a keepalive) and returns the extended slice. inner may overlap
// dst's spare capacity, for example sit HeaderSize bytes into it, so a caller
// can build packets in place. The packet is HeaderSize + len(inner) rounded
// up to 16 + TagSize bytes.
//
// Errors: ErrClosed after Zeroize, ErrTooLarge for inner beyond MaxInnerSize,
// ErrCounterExhausted once RejectAfterMessages packets were sealed. On error
// dst is returned unchanged.
func (k *Keypair) Seal(dst, inner []byte) ([]byte, error) {
	c := k.ciphers.Load()
	if c == nil {
		return dst, fmt.Errorf("seal: %w", ErrClosed)
	}
	if len(inner) > MaxInnerSize {
		return dst, fmt.Errorf("seal %d bytes: %w", len(inner), ErrTooLarge)
	}
	counter := k.sendCounter.Add(1) - 1
	if counter >= RejectAfterMessages {
		// Keep the counter from ever wrapping around to valid values.
		k.sendCounter.Store(RejectAfterMessages)
		return dst, fmt.Errorf("seal: %w", ErrCounterExhausted)
	}
	padded := paddedLen(len(inner))
	ret, out := grow(dst, HeaderSize+padded+TagSize)
	// Copy first: inner may overlap where the header goes.
	n := copy(out[HeaderSize:], inner)
	clear(out[HeaderSize+n : HeaderSize+padded])
	putHeader(out, k.remoteIndex, counter)
	var nonce [12]byte
	binary.BigEndian.PutUint64(nonce[4:], counter)
	c.send.Seal(out[HeaderSize:HeaderSize], nonce[:], out[HeaderSize:HeaderSize+padded], out[:HeaderSize])
	return ret, nil
}

// Open authenticates and decrypts the transport packet pkt, appends its
// plaintext to dst and returns the extended slice and the packet's counter.
// The plaintext is the inner packet with its zero padding: ParseInner reads
// the true length (Inner.Length) to strip it. An empty plaintext is a
// keepalive. dst may be pkt[HeaderSize:HeaderSize] to decrypt in place.
//
// Order of checks: header and length (ParseHeader), receiver index, replay
// window (Check), AEAD, then the window is updated (Accept) — only for a
// packet that authenticated, and a second copy racing the first through the
// AEAD is refused there. Errors: those of ParseHeader, ErrClosed, ErrIndex,
// ErrReplay, ErrAuth, returned bare (not wrapped) so that dropping a packet
// allocates nothing; the counter is returned with them once the header
// parsed. On error dst is returned unchanged (its spare capacity may have
// been written) and nothing in the keypair changed.
func (k *Keypair) Open(dst, pkt []byte) ([]byte, uint64, error) {
	h, err := ParseHeader(pkt)
	if err != nil {
		return dst, 0, err
	}
	c := k.ciphers.Load()
	if c == nil {
		return dst, h.Counter, ErrClosed
	}
	if h.ReceiverIndex != k.localIndex {
		return dst, h.Counter, ErrIndex
	}
	k.recv.Lock()
	ok := k.recv.window.Check(h.Counter)
	k.recv.Unlock()
	if !ok {
		return dst, h.Counter, ErrReplay
	}
	var nonce [12]byte
	binary.BigEndian.PutUint64(nonce[4:], h.Counter)
	out, err := c.recv.Open(dst, nonce[:], pkt[HeaderSize:], pkt[:HeaderSize])
	if err != nil {
		return dst, h.Counter, ErrAuth
	}
	k.recv.Lock()
	ok = k.recv.window.Accept(h.Counter)
	if ok {
		k.recvHighest.Store(k.recv.window.Highest())
	}
	k.recv.Unlock()
	if !ok {
		return dst, h.Counter, ErrReplay
	}
	return out, h.Counter, nil
}

// Zeroize clears the keypair's raw keys, drops its ciphers and empties its
// window; every later Seal and Open returns ErrClosed. A Seal or Open that
// loaded the ciphers before Zeroize may still complete with them. Calling it
// again does nothing.
//
// The AES round keys and the ChaCha20 key copy inside the standard ciphers
// are out of reach; they become garbage here and are not cleared.
func (k *Keypair) Zeroize() {
	c := k.ciphers.Swap(nil)
	if c == nil {
		return
	}
	clear(c.sendKey[:])
	clear(c.recvKey[:])
	k.recv.Lock()
	k.recv.window.Reset()
	k.recv.Unlock()
}

// grow extends b by n bytes, reallocating when its capacity is short, and
// returns the whole slice and the n new bytes.
func grow(b []byte, n int) (whole, tail []byte) {
	total := len(b) + n
	if cap(b) >= total {
		whole = b[:total]
	} else {
		whole = make([]byte, total)
		copy(whole, b)
	}
	return whole, whole[len(b):]
}
