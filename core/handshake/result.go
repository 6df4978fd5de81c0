package handshake

import (
	"sync"
	"time"
)

// Result is an established session: what core/tunnel needs to run
// transport and rekeys. Keys are values; call Zeroize when the session's
// keys are retired (the tunnel keeps old keys 10 s after a rekey).
type Result struct {
	LocalIndex, RemoteIndex uint32
	// Initiator is true on the agent's side.
	Initiator bool
	AEAD      AEADID
	// SendKey and RecvKey are t_i2r and t_r2i, by role.
	SendKey, RecvKey [32]byte
	// RekeySecret is rk, from which the next rekey derives its keys.
	RekeySecret [32]byte
	SessionID   [16]byte
	Peer        Peer
	Established time.Time
	// Credential is, on the initiator, the delegated credential sig_r was
	// verified with (nil when the pinned key signed): the agent keeps it
	// for its next InitiatorConfig.Credential. Nil on the responder.
	Credential *Credential

	// rekey holds the per-session rekey counter; shared by copies of the
	// Result, created with it.
	rekey *rekeyState
}

// rekeyState is the rekey counter of one session: on the initiator the last
// counter sent, on the responder the last counter accepted.
type rekeyState struct {
	mu      sync.Mutex
	counter uint64
}

// Zeroize clears the keys and the rekey secret. The Result can no longer
// rekey afterwards.
func (r *Result) Zeroize() {
	clear(r.SendKey[:])
	clear(r.RecvKey[:])
	clear(r.RekeySecret[:])
	clear(r.SessionID[:])
	r.rekey = nil
}

func newResult(initiator bool, local, remote uint32, aead AEADID, k *sessionKeys, peer Peer, now time.Time) *Result {
	res := &Result{LocalIndex: local, RemoteIndex: remote, Initiator: initiator, AEAD: aead,
		RekeySecret: k.rk, SessionID: k.sid, Peer: peer, Established: now, rekey: &rekeyState{}}
	if initiator {
		res.SendKey, res.RecvKey = k.i2r, k.r2i
	} else {
		res.SendKey, res.RecvKey = k.r2i, k.i2r
	}
	return res
}
