// Package control encodes and parses the AVON tunnel's control messages: the
// transport plaintexts that are not IP packets.
//
// A decrypted transport plaintext whose first byte is below 0x40 is a control
// message (an IPv4 packet starts 0x4_, an IPv6 packet 0x6_; an empty
// plaintext is a keepalive and neither). Its layout is
//
//	type u8 | length u16 | body [length] | zero padding
//
// with every integer big-endian. The body is at most MaxBody (1200) bytes so
// a control message always fits one tunnel packet. The transport pads the
// plaintext with zeros to a multiple of 16; Parse accepts those zeros (up to
// the next multiple of 16 after the body, and only zeros) and nothing else
// after the body: a non-zero byte or a whole extra block is refused.
//
// # Bodies
//
// Fixed fields and length-prefixed fields, no TLVs, no JSON. A prefix is
// family u8 (4 or 6) | bits u8 | address [4 or 16]; an address and port is
// family u8 | address [4 or 16] | port u16. IPv4-mapped IPv6 addresses and
// zones are refused (an IPv4 address travels as family 4). Strings are UTF-8.
//
//	SessionConfig 0x01  gateway -> agent, the first packet after Finish
//	  n u8 (1..8) | prefix * n               tunnel addresses
//	  n u8 (0..64) | prefix * n              routes (masked: no host bits)
//	  mtu u16 (>= 576; >= 1280 with an IPv6 address)
//	  pulse_interval u32 (ms, 1000..600000)
//	  n u8 (0..96) | address token
//	  session_token [32]
//	Pulse 0x02  agent -> gateway
//	  seq u64 | session_token [32] | agent_time i64 (unix ns) |
//	  clock_offset i64 (ns) | n u8 (0..64) | os | n u8 (0..64) | agent_version |
//	  n u8 (0..32) | (klen u8 (1..64) | key | vlen u16 (0..256) | value) * n
//	  keys strictly increasing bytewise (sorted, no duplicates)
//	PulseAck 0x03  gateway -> agent
//	  seq u64 | next_token [32] | server_time i64 (unix ns) |
//	  n u8 (0..96) | address token
//	Denial 0x04  gateway -> agent: a flow was denied
//	  proto u8 | src addr+port | dst addr+port (same family) |
//	  n u16 (0..256) | reason | n u8 (0..16) | (n u8 (1..128) | policy id) * n
//	Close 0x05  either way: the session ends
//	  code u16 | n u16 (0..256) | reason
//	  (codes: Close* constants; 7, connect_denied, may come instead of
//	  the SessionConfig: docs/protocol.md)
//
// Every encoding is canonical: a body Parse accepts is exactly what Marshal
// produces for the message it returns, so parse, marshal and parse again is
// stable. Marshal refuses a message Parse would refuse, with the same errors.
//
// Errors: ErrTruncated (the bytes end before the header, the body or a
// field), ErrTooLarge (a body over MaxBody, a count or a string over its
// limit), ErrMalformed (a value out of range, invalid UTF-8, unsorted keys,
// trailing bytes, a first byte that is not a control type), ErrUnknownType
// (a well-framed message of a type this version does not know: count it and
// ignore it). The package is pure: no I/O, no goroutines, no state.
package control
