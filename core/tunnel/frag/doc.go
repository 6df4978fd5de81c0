// Package frag splits AVON tunnel handshake messages into Fragment datagrams
// (type 9) and reassembles them, with hard caps on everything an attacker
// controls.
//
// Only Response (2) and Finish (3) are ever fragmented; Initiation, rekey
// and transport messages never are. The wire format of a fragment is
//
//	type u8 (9) | version u8 (1) | reserved [2] (zero) |
//	msg_id u32 | index u8 | count u8 | total_len u16 | payload
//
// with all integers big-endian. Every fragment but the last carries exactly
// the sender's chunk size; the last carries the remainder, so the first
// fragment seen of a message fixes the chunk size and every later fragment
// must agree with it.
//
// The package is pure: it does no I/O, keeps no goroutines and takes the
// time as an argument. It must not decide whether a source may reassemble at
// all: the gateway calls Add only for sources that proved their address
// (a source it sent a Response to), so fragment state never precedes proof.
//
// # Limits
//
// A Reassembler refuses a fragment before storing anything when its header
// breaks the format or the Config (count, total_len, payload size). It keeps
// at most PerSource pending reassemblies per source (address and port; the
// oldest of that source is evicted for a new one) and at most Global in all
// (the globally oldest is evicted), each at most MaxTotal bytes, so memory is
// bounded by Global*MaxTotal. A reassembly not completed within Timeout of
// its first fragment is dropped. Allocation happens only for a fragment that
// passed every check: a buffer of MaxTotal bytes' capacity, total_len of them
// used, or one handed back by Recycle (a caller done with a message returns
// its buffer so the next reassembly does not allocate; the pool's spare
// buffers go to the GC when unused).
package frag
