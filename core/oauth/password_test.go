package oauth

import (
	"crypto/rand"
	"errors"
	"strings"
	"testing"
)

// testArgon2 keeps unit tests fast; the parameters travel in the hash.
var testArgon2 = Argon2Params{Memory: 8 << 10, Time: 1, Threads: 1}

func TestPasswordHashRoundTrip(t *testing.T) {
	h, err := HashPassword("correct horse battery", testArgon2, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=8192,t=1,p=1$") {
		t.Fatalf("encoding %q", h)
	}
	p, err := ParsePasswordHash(h)
	if err != nil || p.String() != h || len(p.Salt) != saltLen || len(p.Key) != keyLen {
		t.Fatalf("parse: %+v %v", p, err)
	}
	for _, tc := range []struct {
		pw   string
		want bool
	}{{"correct horse battery", true}, {"correct horse batterY", false}, {"", false}, {"correct horse battery ", false}} {
		ok, err := VerifyPassword(h, tc.pw)
		if err != nil || ok != tc.want {
			t.Errorf("%q: %v %v", tc.pw, ok, err)
		}
	}
	// Two hashes of one password differ (fresh salt).
	h2, _ := HashPassword("correct horse battery", testArgon2, rand.Reader)
	if h2 == h {
		t.Fatal("salt reused")
	}
	// A password longer than the limit never matches, even when its
	// prefix is the stored password.
	long := strings.Repeat("x", maxPassword)
	hl, err := HashPassword(long, testArgon2, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := VerifyPassword(hl, long+"y"); ok {
		t.Fatal("an over-long password matched its prefix")
	}
	if ok, _ := VerifyPassword(hl, long); !ok {
		t.Fatal("a password of the maximum length did not match")
	}
}

func TestParsePasswordHashRefusals(t *testing.T) {
	good, _ := HashPassword("pw", testArgon2, rand.Reader)
	parts := strings.Split(good, "$")
	salt, key := parts[4], parts[5]
	for _, bad := range []string{
		"",
		"$argon2i$v=19$m=8192,t=1,p=1$" + salt + "$" + key,
		"$argon2id$v=16$m=8192,t=1,p=1$" + salt + "$" + key,
		"$argon2id$v=19$m=8192,t=1$" + salt + "$" + key,
		"$argon2id$v=19$t=1,m=8192,p=1$" + salt + "$" + key,
		"$argon2id$v=19$m=08192,t=1,p=1$" + salt + "$" + key,
		"$argon2id$v=19$m=4096,t=1,p=1$" + salt + "$" + key,       // below the memory floor
		"$argon2id$v=19$m=4194304,t=1,p=1$" + salt + "$" + key,    // 4 GiB
		"$argon2id$v=19$m=8192,t=1000,p=1$" + salt + "$" + key,    // too many passes
		"$argon2id$v=19$m=8192,t=1,p=255$" + salt + "$" + key,     // too many lanes
		"$argon2id$v=19$m=8192,t=1,p=1$" + salt + "=$" + key,      // padded
		"$argon2id$v=19$m=8192,t=1,p=1$" + "AAAA" + "$" + key,     // short salt
		"$argon2id$v=19$m=8192,t=1,p=1$" + salt + "$" + "AAAA",    // short key
		"$argon2id$v=19$m=8192,t=1,p=1$" + salt + "$" + key + "$", // extra part
		"x" + good,
		good + strings.Repeat("A", 300),
	} {
		if _, err := ParsePasswordHash(bad); !errors.Is(err, ErrMalformedHash) {
			t.Errorf("%q: %v", bad, err)
		}
		if ok, err := VerifyPassword(bad, "pw"); ok || err == nil {
			t.Errorf("verify %q: %v %v", bad, ok, err)
		}
	}
	if _, err := HashPassword("pw", Argon2Params{Memory: 1024, Time: 1, Threads: 1}, rand.Reader); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("weak params: %v", err)
	}
}

func TestNewPasswordRules(t *testing.T) {
	for _, tc := range []struct {
		pw string
		ok bool
	}{{"short", false}, {"twelve chars", true}, {"with\x00control!", false}, {strings.Repeat("é", 12), true}, {strings.Repeat("a", maxPassword+1), false}} {
		if err := checkNewPassword(tc.pw); (err == nil) != tc.ok {
			t.Errorf("%q: %v", tc.pw, err)
		}
	}
}

func FuzzParsePasswordHash(f *testing.F) {
	good, _ := HashPassword("pw", testArgon2, rand.Reader)
	f.Add(good)
	f.Add("$argon2id$v=19$m=8192,t=1,p=1$$")
	f.Add("$argon2id$v=19$m=99999999999,t=1,p=1$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA")
	f.Fuzz(func(t *testing.T, s string) {
		h, err := ParsePasswordHash(s)
		if err != nil {
			if !errors.Is(err, ErrMalformedHash) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		// Whatever parses is within bounds and re-encodes canonically.
		if checkParams(h.Params) != nil || len(h.Salt) < 8 || len(h.Key) < 16 {
			t.Fatalf("accepted out-of-bounds hash %q", s)
		}
		if h2, err := ParsePasswordHash(h.String()); err != nil || h2.String() != h.String() {
			t.Fatalf("re-encoding of %q does not parse back: %v", s, err)
		}
	})
}

func BenchmarkHashPassword(b *testing.B) {
	for b.Loop() {
		if _, err := HashPassword("correct horse battery", DefaultArgon2, rand.Reader); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyPassword(b *testing.B) {
	h, _ := HashPassword("correct horse battery", DefaultArgon2, rand.Reader)
	for b.Loop() {
		if ok, _ := VerifyPassword(h, "correct horse battery"); !ok {
			b.Fatal("no match")
		}
	}
}
