package oauth

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/base32"
	"encoding/binary"
	"fmt"
	"net/url"
	"time"
)

// TOTP parameters (RFC 6238 with the defaults every authenticator app
// supports): HMAC-SHA-1, 30-second steps, 6 digits, a 160-bit secret, and
// one step of tolerance either side.
const (
	TOTPStep    = 30 * time.Second
	TOTPDigits  = 6
	TOTPSkew    = 1 // steps accepted either side of the current one
	totpSecret  = 20
	totpModulus = 1_000_000
)

// TOTPCode returns the code of secret at time step step (RFC 4226 dynamic
// truncation of HMAC-SHA-1 over the big-endian step).
func TOTPCode(secret []byte, step uint64) string {
	var msg [8]byte
	binary.BigEndian.PutUint64(msg[:], step)
	m := hmac.New(sha1.New, secret)
	m.Write(msg[:])
	sum := m.Sum(nil)
	off := sum[len(sum)-1] & 0x0f
	bin := binary.BigEndian.Uint32(sum[off:off+4]) & 0x7fffffff
	return fmt.Sprintf("%0*d", TOTPDigits, bin%totpModulus)
}

// TOTPStepAt returns the time step containing t.
func TOTPStepAt(t time.Time) uint64 {
	u := t.Unix()
	if u < 0 {
		return 0
	}
	return uint64(u) / uint64(TOTPStep/time.Second)
}

// MatchTOTP returns the step within ±TOTPSkew of now whose code is code
// and that is later than lastUsed (the step of the last accepted code, 0
// for none), so that a code is never accepted twice. Every candidate step
// is computed and compared in constant time.
func MatchTOTP(secret []byte, code string, now time.Time, lastUsed uint64) (step uint64, ok bool, replay bool) {
	if len(code) != TOTPDigits {
		return 0, false, false
	}
	for _, c := range []byte(code) {
		if c < '0' || c > '9' {
			return 0, false, false
		}
	}
	cur := TOTPStepAt(now)
	for d := -TOTPSkew; d <= TOTPSkew; d++ {
		s := cur + uint64(d)
		if d < 0 && cur < uint64(-d) {
			continue
		}
		if subtle.ConstantTimeCompare([]byte(TOTPCode(secret, s)), []byte(code)) == 1 {
			if s <= lastUsed {
				replay = true
				continue
			}
			if !ok {
				step, ok = s, true
			}
		}
	}
	if ok {
		replay = false
	}
	return step, ok, replay
}

// TOTPURI is the otpauth:// URI authenticator apps import (as a QR code
// or pasted), with the secret in unpadded base32.
func TOTPURI(issuer, user string, secret []byte) string {
	label := url.PathEscape(issuer) + ":" + url.PathEscape(user)
	q := url.Values{"secret": {EncodeTOTPSecret(secret)}, "issuer": {issuer}, "algorithm": {"SHA1"},
		"digits": {fmt.Sprint(TOTPDigits)}, "period": {fmt.Sprint(int(TOTPStep / time.Second))}}
	return "otpauth://totp/" + label + "?" + q.Encode()
}

// EncodeTOTPSecret is the base32 form of a secret that users type in.
func EncodeTOTPSecret(secret []byte) string {
	return base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(secret)
}
