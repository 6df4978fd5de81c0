package cache_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/go-hclog"

	"github.com/avonzt/avon/core/cache"
	"github.com/avonzt/avon/core/cache/memcache"
)

// validNameRef is the name rule written the slow, obvious way, for
// differential testing of ValidateName.
func validNameRef(s string) bool {
	if len(s) == 0 || len(s) > cache.MaxNameSize {
		return false
	}
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size <= 1 {
			return false
		}
		if r < 0x20 || (r >= 0x7f && r <= 0x9f) {
			return false
		}
		i += size
	}
	return true
}

func validSetRef(s string) bool {
	if len(s) == 0 || len(s) > cache.MaxSetSize {
		return false
	}
	return strings.Trim(s, "abcdefghijklmnopqrstuvwxyz0123456789._-") == ""
}

func TestValidateName(t *testing.T) {
	for _, c := range []struct {
		name string
		ok   bool
	}{
		{"a", true},
		{"sess:1/2", true},
		{"é😀", true},
		{"\ufffd", true},
		{strings.Repeat("x", cache.MaxNameSize), true},
		{"", false},
		{strings.Repeat("x", cache.MaxNameSize+1), false},
		{"a\x00", false},
		{"\t", false},
		{"\x7f", false},
		{"\u0085", false},
		{"\xff", false},
		{"\xc0\x80", false},
	} {
		err := cache.ValidateName("id", c.name)
		if c.ok != (err == nil) || (err != nil && !errors.Is(err, cache.ErrInvalidArgument)) {
			t.Errorf("ValidateName(%q) = %v, want ok=%v", c.name, err, c.ok)
		}
		if validNameRef(c.name) != c.ok {
			t.Errorf("reference disagrees on %q", c.name)
		}
	}
}

func TestValidateSet(t *testing.T) {
	for _, c := range []struct {
		set string
		ok  bool
	}{
		{"jti", true},
		{"enroll.v2_x-y", true},
		{strings.Repeat("a", cache.MaxSetSize), true},
		{"", false},
		{strings.Repeat("a", cache.MaxSetSize+1), false},
		{"JTI", false},
		{"a:b", false},
		{"a b", false},
		{"é", false},
		{"a\x00", false},
	} {
		err := cache.ValidateSet(c.set)
		if c.ok != (err == nil) || (err != nil && !errors.Is(err, cache.ErrInvalidArgument)) {
			t.Errorf("ValidateSet(%q) = %v, want ok=%v", c.set, err, c.ok)
		}
		if validSetRef(c.set) != c.ok {
			t.Errorf("reference disagrees on %q", c.set)
		}
	}
}

func TestChecks(t *testing.T) {
	for _, c := range []struct {
		d  time.Duration
		ok bool
	}{{cache.MinTTL, true}, {cache.MaxTTL, true}, {time.Hour, true}, {0, false}, {-1, false}, {cache.MinTTL - 1, false}, {cache.MaxTTL + 1, false}} {
		if err := cache.CheckTTL("ttl", c.d); c.ok != (err == nil) || (err != nil && !errors.Is(err, cache.ErrInvalidArgument)) {
			t.Errorf("CheckTTL(%v) = %v", c.d, err)
		}
	}
	for _, c := range []struct {
		n  int
		ok bool
	}{{1, true}, {cache.MaxLimit, true}, {0, false}, {-5, false}, {cache.MaxLimit + 1, false}} {
		if err := cache.CheckLimit(c.n); c.ok != (err == nil) {
			t.Errorf("CheckLimit(%d) = %v", c.n, err)
		}
	}
	if err := cache.CheckValue(make([]byte, cache.MaxValueSize)); err != nil {
		t.Errorf("CheckValue(max) = %v", err)
	}
	if err := cache.CheckValue(make([]byte, cache.MaxValueSize+1)); !errors.Is(err, cache.ErrInvalidArgument) {
		t.Errorf("CheckValue(max+1) = %v", err)
	}
	for _, c := range []struct {
		d    time.Duration
		want int64
	}{{time.Millisecond, 1}, {1500 * time.Microsecond, 2}, {time.Nanosecond, 1}, {time.Second, 1000}, {0, 0}} {
		if got := cache.Millis(c.d); got != c.want {
			t.Errorf("Millis(%v) = %d, want %d", c.d, got, c.want)
		}
	}
	chs, err := cache.CheckChannels([]string{"b", "a", "b"})
	if err != nil || fmt.Sprint(chs) != "[b a]" {
		t.Errorf("CheckChannels dedup = %v, %v", chs, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := cache.CheckContext(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("CheckContext(cancelled) = %v", err)
	}
}

// failing is a Cache whose Allow fails with err.
type failing struct {
	cache.Cache
	err   error
	calls int
}

func (f *failing) Allow(context.Context, string, int, time.Duration) (cache.Decision, error) {
	f.calls++
	return cache.Decision{}, f.err
}

func TestAllowFailOpen(t *testing.T) {
	logs := &bytes.Buffer{}
	log := hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Warn})
	ctx := context.Background()

	// A working cache decides.
	mc := memcache.New(memcache.Options{})
	defer mc.Close()
	if d := cache.AllowFailOpen(ctx, mc, log, "k", 1, time.Minute); !d.Allowed || d.Remaining != 0 {
		t.Fatalf("first call: %+v", d)
	}
	if d := cache.AllowFailOpen(ctx, mc, log, "k", 1, time.Minute); d.Allowed || d.RetryAfter <= 0 {
		t.Fatalf("over the limit the real decision stands: %+v", d)
	}
	if logs.Len() != 0 {
		t.Fatalf("logged without a failure: %q", logs.String())
	}

	// A failing cache lets the call through, counts and logs it once.
	for _, c := range []struct {
		err    error
		reason string
	}{
		{fmt.Errorf("redis 127.0.0.1:6390: allow: i/o timeout: %w", cache.ErrUnavailable), cache.ReasonUnavailable},
		{fmt.Errorf("x: %w", cache.ErrClosed), cache.ReasonClosed},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), cache.ReasonContext},
		{fmt.Errorf("x: %w", cache.ErrInvalidArgument), cache.ReasonInvalid},
		{errors.New("strange"), cache.ReasonOther},
	} {
		f := &failing{err: c.err}
		before := cache.FailOpenCount(c.reason)
		d := cache.AllowFailOpen(ctx, f, log, "k", 1, time.Minute)
		if !d.Allowed || f.calls != 1 {
			t.Errorf("%v: %+v after %d calls; want allowed", c.err, d, f.calls)
		}
		if got := cache.FailOpenCount(c.reason); got != before+1 {
			t.Errorf("%v: counter %q went from %v to %v", c.err, c.reason, before, got)
		}
	}
	out := logs.String()
	if strings.Count(out, "rate limit not enforced") != 1 || !strings.Contains(out, "127.0.0.1:6390") || !strings.Contains(out, "[WARN]") {
		t.Fatalf("want exactly one warning naming the first error (the rest rate-limited); got %q", out)
	}
	// A nil logger is allowed.
	if d := cache.AllowFailOpen(ctx, &failing{err: cache.ErrUnavailable}, nil, "k", 1, time.Minute); !d.Allowed {
		t.Fatalf("nil logger: %+v", d)
	}
	if len(cache.Collectors()) == 0 {
		t.Fatal("no collectors to register")
	}
}

func FuzzValidateName(f *testing.F) {
	for _, s := range []string{"", "a", "\x00", "é", "\xff", strings.Repeat("x", 300), "\u0085"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := cache.ValidateName("id", s)
		if (err == nil) != validNameRef(s) {
			t.Fatalf("ValidateName(%q) = %v, reference says %v", s, err, validNameRef(s))
		}
		if err != nil && !errors.Is(err, cache.ErrInvalidArgument) {
			t.Fatalf("untyped error %v", err)
		}
		serr := cache.ValidateSet(s)
		if (serr == nil) != validSetRef(s) {
			t.Fatalf("ValidateSet(%q) = %v, reference says %v", s, serr, validSetRef(s))
		}
	})
}

// FuzzMemcacheNames feeds arbitrary bytes as ids, sets, keys and channels
// to a backend: no panic, and a call succeeds exactly when the rules allow.
func FuzzMemcacheNames(f *testing.F) {
	f.Add("jti", "id", []byte("v"))
	f.Add("", "\x00", []byte(nil))
	f.Add("a:b", "é", []byte{0xff})
	f.Fuzz(func(t *testing.T, set, id string, v []byte) {
		c := memcache.New(memcache.Options{})
		defer c.Close()
		ctx := context.Background()
		nameOK, setOK := validNameRef(id), validSetRef(set)
		check := func(op string, err error, ok bool) {
			t.Helper()
			if ok != (err == nil) || (err != nil && !errors.Is(err, cache.ErrInvalidArgument)) {
				t.Fatalf("%s(%q, %q) = %v, want ok=%v", op, set, id, err, ok)
			}
		}
		check("PutSession", c.PutSession(ctx, id, v, time.Minute), nameOK && len(v) <= cache.MaxValueSize)
		first, err := c.MarkUsed(ctx, set, id, time.Minute)
		check("MarkUsed", err, nameOK && setOK)
		if first != (err == nil) {
			t.Fatalf("MarkUsed first=%v with err %v", first, err)
		}
		check("PutToken", c.PutToken(ctx, set, id, v, time.Minute), nameOK && setOK && len(v) <= cache.MaxValueSize)
		if nameOK && setOK && len(v) <= cache.MaxValueSize {
			got, err := c.ConsumeToken(ctx, set, id)
			if err != nil || !bytes.Equal(got, v) {
				t.Fatalf("ConsumeToken = %q, %v; want %q", got, err, v)
			}
		}
		_, err = c.Allow(ctx, id, 1, time.Minute)
		check("Allow", err, nameOK)
		check("Publish", c.Publish(ctx, id, v), nameOK && len(v) <= cache.MaxValueSize)
	})
}
