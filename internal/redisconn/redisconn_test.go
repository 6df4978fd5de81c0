package redisconn

import (
	"crypto/tls"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// password is a setting no error or text may contain.
const password = "pw-never-shown-8c2a"

var testDefaults = Defaults{
	KeyPrefix:    "dflt:",
	DialTimeout:  time.Second,
	ReadTimeout:  2 * time.Second,
	WriteTimeout: 3 * time.Second,
}

func TestNormalize(t *testing.T) {
	for _, c := range []struct {
		name string
		in   Settings
		want Settings
	}{
		{
			name: "defaults filled",
			in:   Settings{Addr: "127.0.0.1:6379"},
			want: Settings{Addr: "127.0.0.1:6379", KeyPrefix: "dflt:", DialTimeout: time.Second, ReadTimeout: 2 * time.Second, WriteTimeout: 3 * time.Second},
		},
		{
			name: "given values kept",
			in: Settings{Addr: "[::1]:7000", Username: "u", Password: password, DB: 15, TLS: &tls.Config{ServerName: "r"},
				KeyPrefix: "é:", DialTimeout: time.Millisecond, ReadTimeout: time.Minute, WriteTimeout: time.Nanosecond, PoolSize: 3},
			want: Settings{Addr: "[::1]:7000", Username: "u", Password: password, DB: 15, TLS: &tls.Config{ServerName: "r"},
				KeyPrefix: "é:", DialTimeout: time.Millisecond, ReadTimeout: time.Minute, WriteTimeout: time.Nanosecond, PoolSize: 3},
		},
		{
			name: "one timeout given",
			in:   Settings{Addr: "redis.example:6379", ReadTimeout: 7 * time.Second},
			want: Settings{Addr: "redis.example:6379", KeyPrefix: "dflt:", DialTimeout: time.Second, ReadTimeout: 7 * time.Second, WriteTimeout: 3 * time.Second},
		},
		{
			name: "longest prefix",
			in:   Settings{Addr: "h:1", KeyPrefix: strings.Repeat("p", MaxKeyPrefix)},
			want: Settings{Addr: "h:1", KeyPrefix: strings.Repeat("p", MaxKeyPrefix), DialTimeout: time.Second, ReadTimeout: 2 * time.Second, WriteTimeout: 3 * time.Second},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := c.in
			if err := s.Normalize(testDefaults); err != nil {
				t.Fatalf("Normalize(%v) = %v", c.in, err)
			}
			if !reflect.DeepEqual(s, c.want) {
				t.Fatalf("Normalize(%v) gave %v; want %v", c.in, s, c.want)
			}
			again := s
			if err := again.Normalize(testDefaults); err != nil || !reflect.DeepEqual(again, s) {
				t.Fatalf("Normalize of a normalized %v = %v, %v; want no change", s, again, err)
			}
		})
	}
}

func TestNormalizeRefuses(t *testing.T) {
	ok := Settings{Addr: "127.0.0.1:6379", Password: password}
	with := func(f func(*Settings)) Settings { s := ok; f(&s); return s }
	for _, c := range []struct {
		name string
		in   Settings
		msg  string // the whole error message
	}{
		{"empty address", with(func(s *Settings) { s.Addr = "" }), "empty address"},
		{"no port", with(func(s *Settings) { s.Addr = "no-port" }), `address "no-port": address no-port: missing port in address`},
		{"url", with(func(s *Settings) { s.Addr = "redis://h:1/0" }), `address "redis://h:1/0": address redis://h:1/0: too many colons in address`},
		{"control character in prefix", with(func(s *Settings) { s.KeyPrefix = "a\x00" }), `key prefix "a\x00": want at most 64 bytes of UTF-8 without control characters`},
		{"newline in prefix", with(func(s *Settings) { s.KeyPrefix = "a\n" }), `key prefix "a\n": want at most 64 bytes of UTF-8 without control characters`},
		{"invalid UTF-8 prefix", with(func(s *Settings) { s.KeyPrefix = "bad\xff" }), `key prefix "bad\xff": want at most 64 bytes of UTF-8 without control characters`},
		{"long prefix", with(func(s *Settings) { s.KeyPrefix = strings.Repeat("p", MaxKeyPrefix+1) }), fmt.Sprintf("key prefix %q: want at most 64 bytes of UTF-8 without control characters", strings.Repeat("p", MaxKeyPrefix+1))},
		{"negative db", with(func(s *Settings) { s.DB = -1 }), "db -1 is negative"},
		{"negative dial timeout", with(func(s *Settings) { s.DialTimeout = -time.Second }), "dial timeout -1s is negative"},
		{"negative read timeout", with(func(s *Settings) { s.ReadTimeout = -time.Millisecond }), "read timeout -1ms is negative"},
		{"negative write timeout", with(func(s *Settings) { s.WriteTimeout = -1 }), "write timeout -1ns is negative"},
		{"negative pool size", with(func(s *Settings) { s.PoolSize = -1 }), "pool size -1 is negative"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := c.in
			err := s.Normalize(testDefaults)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Normalize(%v) = %v; want ErrInvalid", c.in, err)
			}
			if err.Error() != c.msg {
				t.Errorf("Normalize(%v) = %q; want %q", c.in, err, c.msg)
			}
			if strings.Contains(err.Error(), password) {
				t.Errorf("error %q holds the password", err)
			}
			if !reflect.DeepEqual(s, c.in) {
				t.Errorf("refused Normalize changed the settings: %v, was %v", s, c.in)
			}
		})
	}
}

func TestDefaultsCheck(t *testing.T) {
	if err := testDefaults.Check(); err != nil {
		t.Fatalf("Check(%+v) = %v", testDefaults, err)
	}
	for _, c := range []struct {
		name string
		d    func(*Defaults)
		msg  string
	}{
		{"empty prefix", func(d *Defaults) { d.KeyPrefix = "" }, ""}, // an empty default prefix is allowed
		{"bad prefix", func(d *Defaults) { d.KeyPrefix = "\x7f" }, `default key prefix "\x7f": want at most 64 bytes of UTF-8 without control characters`},
		{"zero dial timeout", func(d *Defaults) { d.DialTimeout = 0 }, "default dial timeout 0s is not positive"},
		{"negative read timeout", func(d *Defaults) { d.ReadTimeout = -time.Second }, "default read timeout -1s is not positive"},
		{"zero write timeout", func(d *Defaults) { d.WriteTimeout = 0 }, "default write timeout 0s is not positive"},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := testDefaults
			c.d(&d)
			in := Settings{Addr: "127.0.0.1:6379"}
			s := in
			err := s.Normalize(d)
			if c.msg == "" {
				if err != nil || s.KeyPrefix != "" {
					t.Fatalf("Normalize with defaults %+v = %v, prefix %q", d, err, s.KeyPrefix)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) || err.Error() != c.msg {
				t.Fatalf("Normalize with defaults %+v = %v; want %q", d, err, c.msg)
			}
			if !reflect.DeepEqual(s, in) {
				t.Fatalf("refused Normalize changed the settings: %v", s)
			}
		})
	}
}

// TestCallerDefaults checks each caller's defaults as the callers state
// them: both are valid and differ where the packages document they do.
func TestCallerDefaults(t *testing.T) {
	cacheLike := Defaults{KeyPrefix: "avon:", DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second}
	storeLike := Defaults{KeyPrefix: "avon:kv:", DialTimeout: 5 * time.Second, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second}
	for _, d := range []Defaults{cacheLike, storeLike} {
		s := Settings{Addr: "127.0.0.1:6379"}
		if err := s.Normalize(d); err != nil {
			t.Fatal(err)
		}
		if s.KeyPrefix != d.KeyPrefix || s.DialTimeout != d.DialTimeout || s.ReadTimeout != d.ReadTimeout || s.WriteTimeout != d.WriteTimeout {
			t.Fatalf("Normalize with %+v gave %v", d, s)
		}
	}
}

func TestOptions(t *testing.T) {
	tc := &tls.Config{ServerName: "redis.internal"}
	s := Settings{Addr: "10.0.0.1:6380", Username: "avon", Password: password, DB: 4, TLS: tc, KeyPrefix: "ignored:",
		DialTimeout: time.Second, ReadTimeout: 2 * time.Second, WriteTimeout: 3 * time.Second, PoolSize: 7}
	got := s.Options()
	want := &goredis.Options{
		Addr: "10.0.0.1:6380", Username: "avon", Password: password, DB: 4, TLSConfig: tc,
		Protocol:    2,
		DialTimeout: time.Second, ReadTimeout: 2 * time.Second, WriteTimeout: 3 * time.Second,
		ContextTimeoutEnabled: true,
		PoolSize:              7,
		MaxRetries:            -1,
		DialerRetries:         1,
		DisableIdentity:       true,
		MaintNotificationsConfig: &maintnotifications.Config{
			Mode: maintnotifications.ModeDisabled,
		},
	}
	if !reflect.DeepEqual(got, want) {
		shown := func(o *goredis.Options) goredis.Options { c := *o; c.Password = "(hidden)"; return c }
		t.Fatalf("Options() = %+v\nwant %+v", shown(got), shown(want))
	}
	if got.TLSConfig != tc {
		t.Fatalf("Options() copied the TLS configuration; want the caller's")
	}
	// Each call gives options of its own: go-redis fills them in.
	if got == s.Options() || got.MaintNotificationsConfig == s.Options().MaintNotificationsConfig {
		t.Fatalf("Options() shares its result between calls")
	}
}

func TestStringHidesPassword(t *testing.T) {
	s := Settings{Addr: "127.0.0.1:6379", Username: "avon", Password: password, KeyPrefix: "p:"}
	for _, f := range []string{"%v", "%+v", "%#v", "%s", "%q"} {
		out := fmt.Sprintf(f, s)
		if strings.Contains(out, password) {
			t.Errorf("%s of Settings shows the password: %s", f, out)
		}
		if !strings.Contains(out, "127.0.0.1:6379") || !strings.Contains(out, "password set") {
			t.Errorf("%s of Settings = %s; want the address and that a password is set", f, out)
		}
	}
	for _, f := range []string{"%v", "%+v"} {
		if out := fmt.Sprintf(f, &s); strings.Contains(out, password) {
			t.Errorf("%s of *Settings shows the password: %s", f, out)
		}
	}
	if out := (Settings{Addr: "h:1"}).String(); !strings.Contains(out, "password none") {
		t.Errorf("String() = %s; want password none", out)
	}
}

// FuzzNormalize: no input panics; a refused input changes nothing and its
// error wraps ErrInvalid without the password; an accepted one is valid,
// complete and stays as it is under Normalize again.
func FuzzNormalize(f *testing.F) {
	f.Add("127.0.0.1:6379", "", 0, int64(0), int64(0), int64(0), 0)
	f.Add("[::1]:1", "avon:", 3, int64(time.Second), int64(-1), int64(5), 10)
	f.Add("no-port", "a\x00", -1, int64(0), int64(0), int64(0), -1)
	f.Add(":0", "\xff", 1<<40, int64(-1<<62), int64(1<<62), int64(1), 1<<30)
	f.Add("h:"+password, password, 0, int64(0), int64(0), int64(0), 0)
	f.Fuzz(func(t *testing.T, addr, prefix string, db int, dial, read, write int64, pool int) {
		in := Settings{Addr: addr, Username: "u", Password: password, DB: db, KeyPrefix: prefix,
			DialTimeout: time.Duration(dial), ReadTimeout: time.Duration(read), WriteTimeout: time.Duration(write), PoolSize: pool}
		s := in
		if err := s.Normalize(testDefaults); err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			if !strings.Contains(addr, password) && !strings.Contains(prefix, password) && strings.Contains(err.Error(), password) {
				t.Fatalf("error %q holds the password", err)
			}
			if !reflect.DeepEqual(s, in) {
				t.Fatalf("refused Normalize changed the settings")
			}
			return
		}
		if s.KeyPrefix == "" || len(s.KeyPrefix) > MaxKeyPrefix || !utf8.ValidString(s.KeyPrefix) || strings.ContainsFunc(s.KeyPrefix, unicode.IsControl) {
			t.Fatalf("accepted key prefix %q", s.KeyPrefix)
		}
		if s.DB < 0 || s.PoolSize < 0 || s.DialTimeout <= 0 || s.ReadTimeout <= 0 || s.WriteTimeout <= 0 {
			t.Fatalf("accepted %v", s)
		}
		if s.Addr != in.Addr || s.Password != in.Password || s.DB != in.DB || s.PoolSize != in.PoolSize {
			t.Fatalf("Normalize changed given settings: %v, was %v", s, in)
		}
		again := s
		if err := again.Normalize(testDefaults); err != nil || !reflect.DeepEqual(again, s) {
			t.Fatalf("Normalize is not stable: %v, %v", again, err)
		}
		if !strings.Contains(addr, password) && !strings.Contains(prefix, password) && strings.Contains(s.String(), password) {
			t.Fatalf("String shows the password")
		}
	})
}
