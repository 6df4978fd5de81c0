package frag

import "errors"

// Errors returned by this package, wrapped with context; match with errors.Is.
var (
	// ErrMalformed: a fragment that breaks the wire format or this
	// reassembler's limits (short header, wrong type or version, non-zero
	// reserved bytes, count 0 or above MaxCount, index >= count, total_len
	// 0 or above MaxTotal, a payload larger than MaxChunk, or sizes that
	// cannot describe one message). Nothing was stored.
	ErrMalformed = errors.New("frag: malformed fragment")
	// ErrConflict: a fragment disagreed with the reassembly it belongs to
	// (another count, total_len or chunk size, or different bytes at an
	// index already received). The whole reassembly was discarded.
	ErrConflict = errors.New("frag: conflicting fragment")
	// ErrInvalidArgument: Split was asked for something the format cannot
	// carry (an empty or oversize message, a chunk size out of range, more
	// than 255 fragments).
	ErrInvalidArgument = errors.New("frag: invalid argument")
	// ErrInvalidConfig: a Config value out of range.
	ErrInvalidConfig = errors.New("frag: invalid config")
)
