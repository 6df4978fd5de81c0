package transport

import (
	"encoding/binary"

	"github.com/avonzt/avon/core/handshake"
)

// Wire constants of the transport message.
const (
	MessageType     = uint8(handshake.TypeTransport) // message type byte of a transport packet
	ProtocolVersion = uint8(handshake.Version)       // protocol version byte
	HeaderSize      = 16                             // type, version, 2 reserved, receiver index u32, counter u64
	TagSize         = 16                             // AEAD tag of both suites
	PadBlock        = 16                             // inner packets are zero-padded to a multiple of this

	// MinPacketSize is a keepalive: a header and a tag around nothing.
	MinPacketSize = HeaderSize + TagSize
	// MaxInnerSize is the largest inner packet Seal takes: the largest IP
	// packet without a jumbogram.
	MaxInnerSize = 65535
	// MaxPacketSize is the largest packet Open looks at: MaxInnerSize padded,
	// plus header and tag.
	MaxPacketSize = HeaderSize + (MaxInnerSize+PadBlock-1)/PadBlock*PadBlock + TagSize
)

// Header is the clear part of a transport packet.
type Header struct {
	ReceiverIndex uint32 // the receiver's local index: which keypair opens it
	Counter       uint64 // the sender's message counter, also the AEAD nonce
}

// ParseHeader validates everything about pkt that can be checked without a
// key (type, version, reserved bytes, length within MinPacketSize ..
// MaxPacketSize, ciphertext a whole number of blocks plus the tag) and
// returns the header, for routing the packet to its keypair by receiver index.
// Its errors are the bare sentinels (ErrTruncated, ErrTooLarge, ErrType,
// ErrVersion, ErrReserved): dropping a packet allocates nothing.
func ParseHeader(pkt []byte) (Header, error) {
	if len(pkt) < 4 {
		return Header{}, ErrTruncated
	}
	if pkt[0] != MessageType {
		return Header{}, ErrType
	}
	if pkt[1] != ProtocolVersion {
		return Header{}, ErrVersion
	}
	if pkt[2] != 0 || pkt[3] != 0 {
		return Header{}, ErrReserved
	}
	if len(pkt) < MinPacketSize || (len(pkt)-MinPacketSize)%PadBlock != 0 {
		return Header{}, ErrTruncated
	}
	if len(pkt) > MaxPacketSize {
		return Header{}, ErrTooLarge
	}
	return Header{
		ReceiverIndex: binary.BigEndian.Uint32(pkt[4:8]),
		Counter:       binary.BigEndian.Uint64(pkt[8:16]),
	}, nil
}

// putHeader writes a transport header into b[:HeaderSize].
func putHeader(b []byte, receiver uint32, counter uint64) {
	_ = b[HeaderSize-1]
	b[0], b[1], b[2], b[3] = MessageType, ProtocolVersion, 0, 0
	binary.BigEndian.PutUint32(b[4:8], receiver)
	binary.BigEndian.PutUint64(b[8:16], counter)
}

// paddedLen is n rounded up to a multiple of PadBlock.
func paddedLen(n int) int { return (n + PadBlock - 1) &^ (PadBlock - 1) }
