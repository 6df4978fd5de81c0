package engine

import (
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/sha512"
	"errors"

	"github.com/cloudflare/circl/kem"
	"github.com/cloudflare/circl/kem/mlkem/mlkem1024"
	"github.com/cloudflare/circl/kem/mlkem/mlkem768"
	"github.com/cloudflare/circl/kem/xwing"
	"github.com/cloudflare/circl/sign/mldsa/mldsa44"
	"github.com/cloudflare/circl/sign/mldsa/mldsa65"
	"github.com/cloudflare/circl/sign/mldsa/mldsa87"

	"github.com/avonzt/avon/internal/sigverify"
	"github.com/avonzt/avon/sdk/kms"
)

// tokenResident reports whether keys of a live in the token (classical
// algorithms the token has mechanisms for) rather than as wrapped seeds.
func tokenResident(a kms.Algorithm) bool {
	switch a {
	case kms.ECDSAP256, kms.ECDSAP384, kms.Ed25519, kms.AES256:
		return true
	}
	return false
}

// publicKeySize is the size of a's raw public key (0 for AES-256).
func publicKeySize(a kms.Algorithm) int {
	switch a {
	case kms.MLDSA44:
		return mldsa44.PublicKeySize
	case kms.MLDSA65:
		return mldsa65.PublicKeySize
	case kms.MLDSA87:
		return mldsa87.PublicKeySize
	case kms.MLKEM768:
		return mlkem768.PublicKeySize
	case kms.MLKEM1024:
		return mlkem1024.PublicKeySize
	case kms.XWing:
		return xwing.PublicKeySize
	case kms.ECDSAP256:
		return 65
	case kms.ECDSAP384:
		return 97
	case kms.Ed25519:
		return ed25519.PublicKeySize
	}
	return 0
}

// seedSize is the size of a PQ key's seed (0 for token-resident
// algorithms): the same seeds kms-soft stores.
func seedSize(a kms.Algorithm) int {
	switch a {
	case kms.MLDSA44, kms.MLDSA65, kms.MLDSA87:
		return 32 // FIPS 204 ξ
	case kms.MLKEM768, kms.MLKEM1024:
		return 64 // FIPS 203 d || z
	case kms.XWing:
		return xwing.SeedSize
	}
	return 0
}

func kemSchemeOf(a kms.Algorithm) kem.Scheme {
	switch a {
	case kms.MLKEM768:
		return mlkem768.Scheme()
	case kms.MLKEM1024:
		return mlkem1024.Scheme()
	case kms.XWing:
		return xwing.Scheme()
	}
	return nil
}

func curveOf(a kms.Algorithm) elliptic.Curve {
	switch a {
	case kms.ECDSAP256:
		return elliptic.P256()
	case kms.ECDSAP384:
		return elliptic.P384()
	}
	return nil
}

func digest(a kms.Algorithm, msg []byte) []byte {
	if a == kms.ECDSAP384 {
		h := sha512.Sum384(msg)
		return h[:]
	}
	h := sha256.Sum256(msg)
	return h[:]
}

// verify checks sig with a public key on the host: verification needs no
// secret, so neither the token nor a wrapped seed is touched. A signature
// that does not verify is (false, nil); an error means the stored public
// key is unusable.
func verify(a kms.Algorithm, pub, msg, ctx, sig []byte) (bool, error) {
	err := sigverify.Verify(string(a), pub, msg, ctx, sig)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, sigverify.ErrBadSignature):
		return false, nil
	}
	return false, err
}
