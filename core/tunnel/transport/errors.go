package transport

import "errors"

// Errors of this package; match with errors.Is. NewKeypair, Seal and
// ParseInner wrap them with context. ParseHeader and Open, on the per-packet
// receive path, return them bare so that a dropped datagram costs no
// allocation. Every error of Open and ParseHeader means "drop the datagram";
// none of them is worth an answer to the sender.
var (
	// ErrTruncated: a packet shorter than a header plus an AEAD tag, or
	// whose ciphertext is not a whole number of 16-byte blocks plus the tag.
	ErrTruncated = errors.New("transport: truncated packet")
	// ErrTooLarge: an inner packet larger than MaxInnerSize, or a packet
	// that could only carry one.
	ErrTooLarge = errors.New("transport: packet too large")
	// ErrType: the message type is not Transport (4).
	ErrType = errors.New("transport: not a transport packet")
	// ErrVersion: a protocol version other than 1.
	ErrVersion = errors.New("transport: unsupported protocol version")
	// ErrReserved: the reserved header bytes are not zero.
	ErrReserved = errors.New("transport: reserved bytes not zero")
	// ErrIndex: the receiver index is not this keypair's local index.
	ErrIndex = errors.New("transport: receiver index does not match")
	// ErrReplay: the counter is too old, already seen, or at or above
	// the limit.
	ErrReplay = errors.New("transport: replayed or too old counter")
	// ErrAuth: the AEAD did not open: a forgery, corruption or wrong key.
	ErrAuth = errors.New("transport: authentication failed")
	// ErrCounterExhausted: the send counter reached RejectAfterMessages;
	// this keypair can send nothing more and must be replaced.
	ErrCounterExhausted = errors.New("transport: send counter exhausted")
	// ErrClosed: the keypair was zeroized.
	ErrClosed = errors.New("transport: keypair closed")
	// ErrKey: a missing key, or send and receive keys that are equal.
	ErrKey = errors.New("transport: bad key")
	// ErrAEAD: an unknown AEAD identifier.
	ErrAEAD = errors.New("transport: unknown aead")
)

// Errors of ParseInner: the decrypted (or TUN-read) inner packet is not a
// consistent IPv4 or IPv6 packet.
var (
	// ErrInnerShort: fewer bytes than the fixed IP header.
	ErrInnerShort = errors.New("transport: inner packet shorter than an ip header")
	// ErrInnerVersion: the IP version nibble is neither 4 nor 6.
	ErrInnerVersion = errors.New("transport: inner packet is not ipv4 or ipv6")
	// ErrInnerHeader: an IPv4 IHL below 5 or options past the end of the
	// packet.
	ErrInnerHeader = errors.New("transport: bad inner ip header length")
	// ErrInnerLength: the IP length field is larger than the buffer or
	// smaller than the header.
	ErrInnerLength = errors.New("transport: inner ip length inconsistent")
	// ErrInnerExtension: an IPv6 extension header chain that runs past the
	// payload or is longer than MaxExtensionHeaders.
	ErrInnerExtension = errors.New("transport: bad inner ipv6 extension headers")
	// ErrInnerTransport: a TCP, UDP or ICMP header cut short in an
	// unfragmented packet or a first fragment.
	ErrInnerTransport = errors.New("transport: inner transport header truncated")
)
