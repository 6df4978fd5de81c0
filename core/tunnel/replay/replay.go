// Package replay is the anti-replay window of the AVON tunnel's transport
// packets: the sliding bitmap of RFC 6479 over 64-bit counters, 2048 bits kept
// as a ring of 32 blocks of 64 bits.
//
// A receiver asks Check before it spends any work on a packet (a cheap
// rejection of a counter that is too old or already seen) and calls Accept
// only after the packet authenticated, so a forged packet can never move the
// window or burn a counter. Accept re-checks, so two goroutines that both
// passed Check with the same counter cannot both be accepted.
//
// The package is pure: no clock, no I/O, no locks. A Window is not safe for
// concurrent use; its owner serializes Check, Accept and Reset under its own
// mutex (core/tunnel/transport.Keypair holds one next to its Window). It must
// not be used for anything but counters of one key: a new key gets a new (or
// Reset) Window.
package replay

// Limit is the first counter that is never accepted: the design's
// RejectAfterMessages (2^60). A sender stops before it, and a receiver refuses
// any counter at or above it.
const Limit uint64 = 1 << 60

const (
	blockShift = 6               // 64 bits per block
	blockBits  = 1 << blockShift // bits in a block
	bitMask    = blockBits - 1   // counter -> bit within its block
	ringBlocks = 32              // 32 * 64 = 2048 bits
	ringMask   = ringBlocks - 1  // block number -> ring slot

	// WindowSize is how far behind the highest accepted counter a counter
	// may be and still be accepted (if unseen): a counter c is too old when
	// c + WindowSize < highest. RFC 6479 gives up one block of the ring so
	// that advancing never has to clear bits that are still in the window,
	// so a 2048-bit ring keeps a 1984-counter window.
	WindowSize = (ringBlocks - 1) * blockBits
)

// Window is an RFC 6479 sliding replay window. The zero value is an empty
// window ready to use, in which every counter below Limit is acceptable.
//
// Not safe for concurrent use: the owner holds a lock around every call.
type Window struct {
	// highest is the highest accepted counter, 0 for an empty window. An
	// empty window and one that accepted only 0 differ only in bit 0 of
	// block 0, which is what makes counter 0 acceptable exactly once.
	highest uint64
	ring    [ringBlocks]uint64
}

// Check reports whether counter could be accepted now: below Limit, not too
// far behind the highest accepted counter, and not seen before. It changes
// nothing.
func (w *Window) Check(counter uint64) bool {
	if counter >= Limit {
		return false
	}
	if counter > w.highest {
		// Ahead of everything accepted: it cannot have been seen.
		return true
	}
	if w.highest-counter > WindowSize {
		return false
	}
	return w.ring[(counter>>blockShift)&ringMask]&(1<<(counter&bitMask)) == 0
}

// Accept marks counter as seen and reports whether it was acceptable (see
// Check). A counter that was not acceptable changes nothing. A counter ahead
// of the window slides it forward, clearing the blocks it passes over (all of
// them after a jump of 2048 or more).
func (w *Window) Accept(counter uint64) bool {
	if !w.Check(counter) {
		return false
	}
	if counter > w.highest {
		from := w.highest >> blockShift
		to := counter >> blockShift
		// Blocks from+1 .. to are entering the window; clear at most the
		// whole ring once.
		n := to - from
		if n > ringBlocks {
			n = ringBlocks
		}
		for i := uint64(1); i <= n; i++ {
			w.ring[(from+i)&ringMask] = 0
		}
		w.highest = counter
	}
	w.ring[(counter>>blockShift)&ringMask] |= 1 << (counter & bitMask)
	return true
}

// Highest returns the highest accepted counter (0 when nothing, or only
// counter 0, was accepted). Callers use it to count received messages for
// the rekey limits.
func (w *Window) Highest() uint64 { return w.highest }

// Reset empties the window, as for a new key.
func (w *Window) Reset() {
	*w = Window{}
}
