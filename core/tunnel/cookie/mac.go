package cookie

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"time"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/avonzt/avon/core/handshake"
)

// Wire constants.
const (
	// MACLen is the size of mac1, mac2 and a cookie.
	MACLen = 16
	// ReplyType is the message type of a CookieReply.
	ReplyType = uint8(handshake.TypeCookieReply)
	// Version is the protocol version this package writes and accepts.
	Version = uint8(handshake.Version)
	// ReplyLen is the exact size of a CookieReply.
	ReplyLen = 4 + 4 + chacha20poly1305.NonceSizeX + MACLen + chacha20poly1305.Overhead
	// MinMessageLen is the shortest message AddMACs and the checks take:
	// a common header and the two MACs.
	MinMessageLen = 4 + 2*MACLen

	// CookieLifetime is how long an initiator uses a received cookie.
	CookieLifetime = 120 * time.Second
	// RotationPeriod is how often the responder replaces its cookie secret.
	RotationPeriod = 120 * time.Second
)

const (
	labelMAC1   = "avon-v1 mac1"
	labelCookie = "avon-v1 cookie"
	labelToken  = "avon-v1 token"
)

// Cookie is a cookie an initiator received from a CookieReply, with the time
// it arrived. Its zero value is no cookie.
type Cookie struct {
	Value    [MACLen]byte
	Received time.Time
}

// Valid reports whether c is a cookie still usable at now: received less
// than CookieLifetime ago and not in the future (a clock that went back
// makes the initiator fetch a new one). A nil or zero Cookie is not valid.
func (c *Cookie) Valid(now time.Time) bool {
	if c == nil || c.Received.IsZero() {
		return false
	}
	age := now.Sub(c.Received)
	return age >= 0 && age < CookieLifetime
}

func labelKey(label string, responderID [32]byte) [32]byte {
	h := sha256.New()
	h.Write([]byte(label))
	h.Write(responderID[:])
	var k [32]byte
	h.Sum(k[:0])
	return k
}

// mac computes HMAC-SHA-256(key, data) cut to MACLen bytes.
func mac(key, data []byte) [MACLen]byte {
	h := hmac.New(sha256.New, key)
	h.Write(data)
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	var m [MACLen]byte
	copy(m[:], sum[:])
	return m
}

// MAC1 returns the mac1 field of an Initiation (bytes len-32..len-16), which
// the initiator needs to open a CookieReply.
func MAC1(msg []byte) ([MACLen]byte, error) {
	var m [MACLen]byte
	if len(msg) < MinMessageLen {
		return m, fmt.Errorf("mac1: %d bytes: %w", len(msg), ErrMalformed)
	}
	copy(m[:], msg[len(msg)-2*MACLen:])
	return m, nil
}

// AddMACs writes mac1 and mac2 into the last 32 bytes of msg, an Initiation
// complete up to them. mac2 is computed with c when c is Valid at now, else
// it is zeros.
func AddMACs(msg []byte, responderID [32]byte, c *Cookie, now time.Time) error {
	if len(msg) < MinMessageLen {
		return fmt.Errorf("add macs: %d bytes: %w", len(msg), ErrMalformed)
	}
	k := labelKey(labelMAC1, responderID)
	n := len(msg)
	m1 := mac(k[:], msg[:n-2*MACLen])
	copy(msg[n-2*MACLen:], m1[:])
	var m2 [MACLen]byte
	if c.Valid(now) {
		m2 = mac(c.Value[:], msg[:n-MACLen])
	}
	copy(msg[n-MACLen:], m2[:])
	return nil
}

// ReplyReceiver returns the receiver index of a CookieReply (the
// initiator's sender_index), so the initiator can find the handshake it
// answers before opening it.
func ReplyReceiver(reply []byte) (uint32, error) {
	if err := checkReplyHeader(reply); err != nil {
		return 0, fmt.Errorf("reply receiver: %w", err)
	}
	return binary.BigEndian.Uint32(reply[4:8]), nil
}

func checkReplyHeader(reply []byte) error {
	if len(reply) != ReplyLen {
		return fmt.Errorf("cookie reply of %d bytes: %w", len(reply), ErrMalformed)
	}
	if reply[0] != ReplyType || reply[1] != Version || reply[2] != 0 || reply[3] != 0 {
		return fmt.Errorf("cookie reply header % x: %w", reply[:4], ErrMalformed)
	}
	return nil
}

// OpenReply opens a CookieReply answering the Initiation whose mac1 is
// given, from the responder named responderID, and returns the cookie
// stamped with now. The caller matches the receiver index (ReplyReceiver)
// to its pending handshake.
func OpenReply(reply []byte, responderID [32]byte, mac1 [MACLen]byte, now time.Time) (Cookie, error) {
	if err := checkReplyHeader(reply); err != nil {
		return Cookie{}, fmt.Errorf("open reply: %w", err)
	}
	k := labelKey(labelCookie, responderID)
	aead, err := chacha20poly1305.NewX(k[:])
	if err != nil {
		return Cookie{}, fmt.Errorf("open reply: %w", err)
	}
	nonce := reply[8 : 8+chacha20poly1305.NonceSizeX]
	var out [MACLen]byte
	pt, err := aead.Open(out[:0], nonce, reply[8+chacha20poly1305.NonceSizeX:], mac1[:])
	if err != nil || len(pt) != MACLen {
		return Cookie{}, fmt.Errorf("open reply: %w", ErrReplyInvalid)
	}
	return Cookie{Value: out, Received: now}, nil
}
