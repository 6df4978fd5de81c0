package transport

import (
	"crypto/aes"
	"crypto/cipher"
	"fmt"
	"runtime"

	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/sys/cpu"
)

// AEADID names the transport AEAD negotiated in the handshake (the "aead"
// byte of the suite).
type AEADID uint8

// The transport AEADs of suite v1.
const (
	AES256GCM        AEADID = 1 // AES-256-GCM, the default
	ChaCha20Poly1305 AEADID = 2 // ChaCha20-Poly1305 (RFC 8439), for CPUs without AES instructions
)

// Valid reports whether id is a known AEAD.
func (id AEADID) Valid() bool { return id == AES256GCM || id == ChaCha20Poly1305 }

func (id AEADID) String() string {
	switch id {
	case AES256GCM:
		return "aes-256-gcm"
	case ChaCha20Poly1305:
		return "chacha20-poly1305"
	}
	return fmt.Sprintf("aead(%d)", uint8(id))
}

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
	switch id {
	case AES256GCM:
		b, err := aes.NewCipher(key[:])
		if err != nil {
			return nil, fmt.Errorf("build aes: %w", err)
		}
		g, err := cipher.NewGCM(b)
		if err != nil {
			return nil, fmt.Errorf("build gcm: %w", err)
		}
		return g, nil
	case ChaCha20Poly1305:
		c, err := chacha20poly1305.New(key[:])
		if err != nil {
			return nil, fmt.Errorf("build chacha20-poly1305: %w", err)
		}
		return c, nil
	}
	return nil, fmt.Errorf("build cipher %v: %w", id, ErrAEAD)
}
