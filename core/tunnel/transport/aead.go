package transport

import (
	"crypto/cipher"
	"fmt"
	"runtime"

	"golang.org/x/sys/cpu"

	"github.com/avonzt/avon/core/handshake"
)

// AEADID names the transport AEAD negotiated in the handshake (the "aead"
// byte of the suite); the handshake owns the type.
type AEADID = handshake.AEADID

// The transport AEADs of suite v1.
const (
	AES256GCM        = handshake.AES256GCM        // AES-256-GCM, the default
	ChaCha20Poly1305 = handshake.ChaCha20Poly1305 // ChaCha20-Poly1305 (RFC 8439), for CPUs without AES instructions
)

// DefaultAEAD returns AES256GCM when this CPU has AES and carry-less multiply
// instructions (so GCM is constant time and fast), else ChaCha20Poly1305.
func DefaultAEAD() AEADID {
	if hasAESGCMHardware() {
		return AES256GCM
	}
	return ChaCha20Poly1305
}

func hasAESGCMHardware() bool {
	switch runtime.GOARCH {
	case "amd64", "386":
		return cpu.X86.HasAES && cpu.X86.HasPCLMULQDQ
	case "arm64":
		return cpu.ARM64.HasAES && cpu.ARM64.HasPMULL
	case "s390x":
		return cpu.S390X.HasAES && cpu.S390X.HasAESGCM
	case "ppc64le":
		// POWER8 and later have vcipher and vpmsumd; Go requires POWER8.
		return true
	}
	return false
}

// newAEAD builds the cipher for id from a 32-byte key.
func newAEAD(id AEADID, key *[32]byte) (cipher.AEAD, error) {
	a, err := handshake.NewAEAD(id, key[:])
	if err != nil {
		return nil, fmt.Errorf("build cipher %v: %v: %w", id, err, ErrAEAD)
	}
	return a, nil
}
