package oauth

import (
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"io"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Argon2Params are the Argon2id cost parameters (RFC 9106). They are
// written into every hash, so raising them applies to new and changed
// passwords while old hashes still verify with the parameters they were
// made with.
type Argon2Params struct {
	Memory  uint32 // KiB
	Time    uint32 // passes
	Threads uint8
}

// DefaultArgon2 is the cost of a new hash: 64 MiB, 2 passes, 2 lanes
// (above RFC 9106's second recommended option for memory-constrained
// servers; about 100 ms on the reference machines).
var DefaultArgon2 = Argon2Params{Memory: 64 << 10, Time: 2, Threads: 2}

// Bounds a stored hash must respect to be verified at all, so a corrupt or
// planted record cannot make a login allocate gigabytes or spin for
// minutes.
const (
	minArgonMemory = 8 << 10 // 8 MiB
	maxArgonMemory = 1 << 20 // 1 GiB
	maxArgonTime   = 16      // passes
	maxArgonLanes  = 16      // threads
	saltLen        = 16      // bytes in a new hash
	keyLen         = 32      // bytes of derived key in a new hash
	maxSaltLen     = 64      // bytes accepted in a stored hash
	maxKeyLen      = 64      // bytes accepted in a stored hash
	maxHashLen     = 256     // characters of an encoded hash
	minPassword    = 12      // characters of a new password
	maxPassword    = 1024    // bytes of any password
	argonVersion   = argon2.Version
)

// PasswordHash is a parsed Argon2id PHC string:
//
//	$argon2id$v=19$m=65536,t=2,p=2$<salt>$<key>
//
// with salt and key in unpadded standard base64.
type PasswordHash struct {
	Params Argon2Params
	Salt   []byte
	Key    []byte
}

// HashPassword hashes password with fresh salt from rand (the core DRBG).
func HashPassword(password string, p Argon2Params, rand io.Reader) (string, error) {
	if err := checkParams(p); err != nil {
		return "", err
	}
	if len(password) > maxPassword {
		return "", fmt.Errorf("%w: password longer than %d bytes", ErrInvalidArgument, maxPassword)
	}
	salt := make([]byte, saltLen)
	if _, err := io.ReadFull(rand, salt); err != nil {
		return "", fmt.Errorf("oauth: salt: %w", err)
	}
	key := argon2.IDKey([]byte(password), salt, p.Time, p.Memory, p.Threads, keyLen)
	return PasswordHash{Params: p, Salt: salt, Key: key}.String(), nil
}

func checkParams(p Argon2Params) error {
	if p.Memory < minArgonMemory || p.Memory > maxArgonMemory || p.Time < 1 || p.Time > maxArgonTime ||
		p.Threads < 1 || p.Threads > maxArgonLanes || p.Memory < 8*uint32(p.Threads) {
		return fmt.Errorf("%w: argon2id m=%d t=%d p=%d outside m=%d..%d KiB, t=1..%d, p=1..%d", ErrInvalidArgument,
			p.Memory, p.Time, p.Threads, minArgonMemory, maxArgonMemory, maxArgonTime, maxArgonLanes)
	}
	return nil
}

// String encodes h as a PHC string.
func (h PasswordHash) String() string {
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argonVersion, h.Params.Memory, h.Params.Time, h.Params.Threads,
		b64.EncodeToString(h.Salt), b64.EncodeToString(h.Key))
}

// ParsePasswordHash parses an encoded Argon2id hash and checks its
// parameters against the bounds above. The error wraps ErrMalformedHash.
func ParsePasswordHash(s string) (PasswordHash, error) {
	bad := func(why string) (PasswordHash, error) {
		return PasswordHash{}, fmt.Errorf("%w: %s", ErrMalformedHash, why)
	}
	if len(s) > maxHashLen {
		return bad("too long")
	}
	parts := strings.Split(s, "$")
	if len(parts) != 6 || parts[0] != "" {
		return bad("want $argon2id$v=19$m=..,t=..,p=..$salt$key")
	}
	if parts[1] != "argon2id" {
		return bad("not argon2id")
	}
	if parts[2] != "v="+strconv.Itoa(argonVersion) {
		return bad("not version 19")
	}
	var p Argon2Params
	fields := strings.Split(parts[3], ",")
	if len(fields) != 3 {
		return bad("want m=..,t=..,p=..")
	}
	for i, name := range []string{"m", "t", "p"} {
		v, ok := strings.CutPrefix(fields[i], name+"=")
		if !ok || v == "" || (len(v) > 1 && v[0] == '0') {
			return bad("want m=..,t=..,p=.. in that order, decimal")
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return bad("parameter " + name + " is not a number")
		}
		switch name {
		case "m":
			p.Memory = uint32(n)
		case "t":
			p.Time = uint32(n)
		default:
			if n > 255 {
				return bad("parameter p out of range")
			}
			p.Threads = uint8(n)
		}
	}
	if err := checkParams(p); err != nil {
		return bad(err.Error())
	}
	salt, err := base64.RawStdEncoding.Strict().DecodeString(parts[4])
	if err != nil || len(salt) < 8 || len(salt) > maxSaltLen {
		return bad("salt")
	}
	key, err := base64.RawStdEncoding.Strict().DecodeString(parts[5])
	if err != nil || len(key) < 16 || len(key) > maxKeyLen {
		return bad("key")
	}
	return PasswordHash{Params: p, Salt: salt, Key: key}, nil
}

// VerifyPassword reports whether password matches the encoded hash. The
// comparison is constant time; the cost is that of the hash's parameters.
func VerifyPassword(encoded, password string) (bool, error) {
	h, err := ParsePasswordHash(encoded)
	if err != nil {
		return false, err
	}
	tooLong := len(password) > maxPassword
	if tooLong {
		password = password[:maxPassword] // still pay the full cost, then refuse
	}
	got := argon2.IDKey([]byte(password), h.Salt, h.Params.Time, h.Params.Memory, h.Params.Threads, uint32(len(h.Key)))
	return subtle.ConstantTimeCompare(got, h.Key) == 1 && !tooLong, nil
}

// checkNewPassword enforces the rules for a password being set.
func checkNewPassword(pw string) error {
	if n := len([]rune(pw)); n < minPassword {
		return fmt.Errorf("%w: password of %d characters; want at least %d", ErrInvalidArgument, n, minPassword)
	}
	if len(pw) > maxPassword {
		return fmt.Errorf("%w: password longer than %d bytes", ErrInvalidArgument, maxPassword)
	}
	for _, r := range pw {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%w: password contains a control character", ErrInvalidArgument)
		}
	}
	return nil
}
