package oauth

import (
	"testing"
	"time"
)

// RFC 6238 appendix B, SHA-1 rows, last six digits of the eight shown.
func TestTOTPVectors(t *testing.T) {
	secret := []byte("12345678901234567890")
	for _, v := range []struct {
		unix int64
		code string
	}{{59, "287082"}, {1111111109, "081804"}, {1111111111, "050471"}, {1234567890, "005924"}, {2000000000, "279037"}, {20000000000, "353130"}} {
		if got := TOTPCode(secret, TOTPStepAt(time.Unix(v.unix, 0))); got != v.code {
			t.Errorf("t=%d: %s, want %s", v.unix, got, v.code)
		}
	}
}

func TestMatchTOTPWindowAndReplay(t *testing.T) {
	secret := []byte("12345678901234567890")
	now := time.Unix(1_800_000_000, 0)
	cur := TOTPStepAt(now)
	for _, tc := range []struct {
		name     string
		step     uint64
		lastUsed uint64
		ok       bool
		replay   bool
	}{
		{"current", cur, 0, true, false},
		{"previous step", cur - 1, 0, true, false},
		{"next step", cur + 1, 0, true, false},
		{"two steps back", cur - 2, 0, false, false},
		{"two steps ahead", cur + 2, 0, false, false},
		{"same step again", cur, cur, false, true},
		{"older than the last used", cur - 1, cur, false, true},
		{"newer than the last used", cur + 1, cur, true, false},
	} {
		step, ok, replay := MatchTOTP(secret, TOTPCode(secret, tc.step), now, tc.lastUsed)
		if ok != tc.ok || replay != tc.replay || (ok && step != tc.step) {
			t.Errorf("%s: step %d ok %v replay %v", tc.name, step, ok, replay)
		}
	}
	for _, bad := range []string{"", "12345", "1234567", "12345a", " 12345", "１２３４５６"} {
		if _, ok, _ := MatchTOTP(secret, bad, now, 0); ok {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestTOTPURI(t *testing.T) {
	u := TOTPURI("AVON core", "alice", []byte("12345678901234567890"))
	want := "otpauth://totp/AVON%20core:alice?algorithm=SHA1&digits=6&issuer=AVON+core&period=30&secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
	if u != want {
		t.Fatalf("%s\nwant %s", u, want)
	}
}
