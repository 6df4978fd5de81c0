package pulse

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
)

// Labels of the token derivation.
const (
	labelSecret = "avon-v1 pulse secret"
	labelToken  = "avon-v1 pulse token"
)

// Token is a session token: what the next pulse must carry.
type Token = [32]byte

// ID identifies a session: the 16-byte sid of the handshake's key schedule.
type ID [16]byte

// String is the id in lowercase hex, as SessionKilled events name it.
func (id ID) String() string { return hex.EncodeToString(id[:]) }

// ParseID reads an id from 32 hex digits (any case).
func ParseID(s string) (ID, error) {
	var id ID
	if len(s) != 2*len(id) {
		return ID{}, fmt.Errorf("session id %.40q: %d characters, want 32 hex digits: %w", s, len(s), ErrInvalidArgument)
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return ID{}, fmt.Errorf("session id %q: %w", s, ErrInvalidArgument)
	}
	return id, nil
}

// sessionSecret derives a session's token secret from the tracker key.
func sessionSecret(key *[32]byte, id ID) (s [32]byte) {
	m := hmac.New(sha256.New, key[:])
	m.Write([]byte(labelSecret))
	m.Write(id[:])
	m.Sum(s[:0])
	return s
}

// token is the session token issued after accepting the pulse numbered seq
// (seq 0: the first token, sent in the SessionConfig).
func token(secret *[32]byte, seq uint64) (t Token) {
	m := hmac.New(sha256.New, secret[:])
	var b [len(labelToken) + 8]byte
	copy(b[:], labelToken)
	binary.BigEndian.PutUint64(b[len(labelToken):], seq)
	m.Write(b[:])
	m.Sum(t[:0])
	return t
}

// NormalizeSerial returns the form serials are matched in: lowercase hex
// without colons or leading zeros ("0A:1B" and "a1b" are the same serial,
// as big.Int's %x and the CA's zero-padded 32 digits print it). It returns
// "" for a string that is not a hex serial of at most 64 digits.
func NormalizeSerial(s string) string {
	if len(s) == 0 || len(s) > 96 {
		return ""
	}
	var b strings.Builder
	b.Grow(len(s))
	leading := true
	for i := range len(s) {
		c := s[i]
		switch {
		case c == ':':
			continue
		case c >= 'A' && c <= 'F':
			c += 'a' - 'A'
		case c >= 'a' && c <= 'f', c >= '0' && c <= '9':
		default:
			return ""
		}
		if leading && c == '0' {
			continue
		}
		leading = false
		b.WriteByte(c)
	}
	if b.Len() > 64 {
		return ""
	}
	if b.Len() == 0 {
		if strings.ContainsAny(s, "0") {
			return "0"
		}
		return ""
	}
	return b.String()
}
