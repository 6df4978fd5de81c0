package frag

import (
	"encoding/binary"
	"fmt"

	"github.com/avonzt/avon/core/handshake"
)

// Wire constants of the Fragment message.
const (
	// Type is the message type of a fragment.
	Type = uint8(handshake.TypeFragment)
	// Version is the protocol version this package writes and accepts.
	Version = uint8(handshake.Version)
	// HeaderLen is the size of the fragment header before the payload.
	HeaderLen = 12
	// MaxFragments is the most fragments the format can describe (count is
	// a u8).
	MaxFragments = 255
	// MaxMessage is the largest message the format can describe (total_len
	// is a u16).
	MaxMessage = 65535
)

// Header is the parsed header of one fragment.
type Header struct {
	MsgID    uint32
	Index    uint8
	Count    uint8
	TotalLen uint16
}

// ParseHeader checks the fixed part of a fragment and returns its header
// and payload (a sub-slice of frag). It checks only what holds for every
// fragment regardless of configuration: length, type, version, reserved
// bytes, 1 <= count, index < count, total_len >= 1 and a non-empty payload
// no longer than total_len.
func ParseHeader(frag []byte) (Header, []byte, error) {
	if len(frag) < HeaderLen {
		return Header{}, nil, fmt.Errorf("parse header: %d bytes: %w", len(frag), ErrMalformed)
	}
	if frag[0] != Type || frag[1] != Version || frag[2] != 0 || frag[3] != 0 {
		return Header{}, nil, fmt.Errorf("parse header: type %d version %d: %w", frag[0], frag[1], ErrMalformed)
	}
	h := Header{
		MsgID:    binary.BigEndian.Uint32(frag[4:8]),
		Index:    frag[8],
		Count:    frag[9],
		TotalLen: binary.BigEndian.Uint16(frag[10:12]),
	}
	payload := frag[HeaderLen:]
	switch {
	case h.Count == 0:
		return Header{}, nil, fmt.Errorf("parse header: count 0: %w", ErrMalformed)
	case h.Index >= h.Count:
		return Header{}, nil, fmt.Errorf("parse header: index %d of %d: %w", h.Index, h.Count, ErrMalformed)
	case h.TotalLen == 0:
		return Header{}, nil, fmt.Errorf("parse header: total_len 0: %w", ErrMalformed)
	case len(payload) == 0 || len(payload) > int(h.TotalLen):
		return Header{}, nil, fmt.Errorf("parse header: payload %d of total %d: %w", len(payload), h.TotalLen, ErrMalformed)
	}
	return h, payload, nil
}

// chunkSize derives the sender's chunk size from one fragment and checks
// that the fragment can belong to a message of h.TotalLen bytes in h.Count
// fragments: every fragment but the last carries chunk bytes, the last
// 1..chunk bytes. It returns 0 when no chunk size fits.
func chunkSize(h Header, payloadLen int) int {
	count, total := int(h.Count), int(h.TotalLen)
	if count == 1 {
		if payloadLen != total {
			return 0
		}
		return total
	}
	var chunk int
	if int(h.Index) < count-1 {
		chunk = payloadLen
	} else {
		rest := total - payloadLen
		if rest <= 0 || rest%(count-1) != 0 {
			return 0
		}
		chunk = rest / (count - 1)
	}
	last := total - (count-1)*chunk
	if last < 1 || last > chunk {
		return 0
	}
	return chunk
}

// SplitForGSO is Split with the fragments laid out for a sender that
// coalesces them: they lie back to back in one buffer and the first one's
// capacity spans all of them, so appending the following fragments to the
// first copies each onto itself and yields one buffer of equal-sized
// segments (the last may be shorter). That is how conn.StdNetBind sends a
// run of datagrams to one destination as one UDP GSO super-datagram, so
// the message crosses the kernel's UDP stack once instead of once per
// fragment. Unlike Split's, the first fragment must not be appended to
// for any other purpose: that would overwrite the others.
func SplitForGSO(msg []byte, msgID uint32, chunk int) ([][]byte, error) {
	return split(nil, msg, msgID, chunk, true)
}

// SplitForGSOTo is SplitForGSO laying the fragments out in buf's capacity
// when it is large enough (SplitLen), so a sender can reuse one buffer per
// message; otherwise in a new one. buf must not overlap msg. The fragments
// alias buf: reuse it only once they are sent.
func SplitForGSOTo(buf, msg []byte, msgID uint32, chunk int) ([][]byte, error) {
	return split(buf, msg, msgID, chunk, true)
}

// SplitLen is the buffer size the fragments of a message of n bytes take
// (a fragment header each), or 0 when n or chunk is out of range.
func SplitLen(n, chunk int) int {
	if n < 1 || n > MaxMessage || chunk < 1 || chunk > MaxMessage {
		return 0
	}
	return (n+chunk-1)/chunk*HeaderLen + n
}

// Split cuts msg into fragments of at most chunk payload bytes, all under
// msgID (which the sender draws at random per message). Every fragment but
// the last carries exactly chunk bytes. The fragments are new slices; msg is
// not retained.
func Split(msg []byte, msgID uint32, chunk int) ([][]byte, error) {
	return split(nil, msg, msgID, chunk, false)
}

func split(buf, msg []byte, msgID uint32, chunk int, gso bool) ([][]byte, error) {
	switch {
	case len(msg) == 0 || len(msg) > MaxMessage:
		return nil, fmt.Errorf("split: message of %d bytes: %w", len(msg), ErrInvalidArgument)
	case chunk < 1 || chunk > MaxMessage:
		return nil, fmt.Errorf("split: chunk %d: %w", chunk, ErrInvalidArgument)
	}
	count := (len(msg) + chunk - 1) / chunk
	if count > MaxFragments {
		return nil, fmt.Errorf("split: %d fragments: %w", count, ErrInvalidArgument)
	}
	if need := count*HeaderLen + len(msg); cap(buf) >= need {
		buf = buf[:need]
	} else {
		buf = make([]byte, need)
	}
	out := make([][]byte, 0, count)
	for i := 0; i < count; i++ {
		payload := msg[i*chunk : min((i+1)*chunk, len(msg))]
		n := HeaderLen + len(payload)
		f := buf[:n:n]
		if i == 0 && gso {
			f = buf[:n] // the others follow, in its capacity
		}
		buf = buf[n:]
		f[0], f[1], f[2], f[3] = Type, Version, 0, 0
		binary.BigEndian.PutUint32(f[4:8], msgID)
		f[8], f[9] = byte(i), byte(count)
		binary.BigEndian.PutUint16(f[10:12], uint16(len(msg)))
		copy(f[HeaderLen:], payload)
		out = append(out, f)
	}
	return out, nil
}
