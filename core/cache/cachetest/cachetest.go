// Package cachetest is the conformance suite for cache.Cache. Every backend
// (memcache, redis) calls Run from its own tests; a backend is correct when
// Run passes against it, and a new rule of the cache.Cache contract gets its
// test here, once, for all of them.
//
// Two clients opened on one backend play two core replicas: the suite
// writes on one and reads, consumes, counts or receives on the other.
//
// It must not depend on any backend, and it measures no speed. It does wait
// for TTLs to run out, with short TTLs and bounded polling, because the
// shared backends keep time on the server.
package cachetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/avonzt/avon/core/cache"
)

// Opener returns two clients of one new, empty backend (two replicas). Run
// closes both (through t.Cleanup). Clients of different calls must not see
// each other's entries or messages.
type Opener func(t *testing.T) (a, b cache.Cache)

// Run runs the suite; the subtests may run in any order.
func Run(t *testing.T, open Opener) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a, b := open(t)
			t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
			c.fn(t, a, b)
		})
	}
}

var cases = []struct {
	name string
	fn   func(t *testing.T, a, b cache.Cache)
}{
	{"SessionRoundTrip", testSessionRoundTrip},
	{"SessionOverwrite", testSessionOverwrite},
	{"SessionTouch", testSessionTouch},
	{"SessionDelete", testSessionDelete},
	{"SessionExpiry", testSessionExpiry},
	{"ValuesAreCopied", testValuesCopied},
	{"MarkUsedFirstRepeat", testMarkUsed},
	{"MarkUsedExpiry", testMarkUsedExpiry},
	{"MarkUsedConcurrentOneFirst", testMarkUsedConcurrent},
	{"TokenOnce", testTokenOnce},
	{"TokenExpiry", testTokenExpiry},
	{"TokenConcurrentOneConsumer", testTokenConcurrent},
	{"TokenAddPeekDelete", testTokenAddPeekDelete},
	{"TokenAddConcurrentOneAdds", testTokenAddConcurrent},
	{"TokenPeekExpiry", testTokenPeekExpiry},
	{"KindsAreSeparate", testKindsSeparate},
	{"AllowCountsThenDenies", testAllowCounts},
	{"AllowWindowResets", testAllowReset},
	{"AllowConcurrentNeverOverLimit", testAllowConcurrent},
	{"PubSubDelivery", testPubSubDelivery},
	{"PubSubMultipleChannels", testPubSubChannels},
	{"PubSubFanOut", testPubSubFanOut},
	{"PubSubClose", testPubSubClose},
	{"InvalidArguments", testInvalid},
	{"ContextDone", testContextDone},
	{"Closed", testClosed},
}

// Bounds of the suite's waits.
const (
	shortTTL    = 60 * time.Millisecond
	expiryWait  = 3 * time.Second // TTL expiry observed within
	receiveWait = 5 * time.Second // a published message arrives within
	pollEvery   = 10 * time.Millisecond
	concurrency = 32
)

func bg() context.Context { return context.Background() }

func mustPutSession(t *testing.T, c cache.Cache, id string, v []byte, ttl time.Duration) {
	t.Helper()
	if err := c.PutSession(bg(), id, v, ttl); err != nil {
		t.Fatalf("PutSession(%q): %v", id, err)
	}
}

func wantSession(t *testing.T, c cache.Cache, id string, v []byte, maxTTL time.Duration) time.Duration {
	t.Helper()
	got, left, err := c.GetSession(bg(), id)
	if err != nil {
		t.Fatalf("GetSession(%q): %v", id, err)
	}
	if got == nil || !bytes.Equal(got, v) {
		t.Fatalf("GetSession(%q) = %d bytes (nil %v), want %d bytes", id, len(got), got == nil, len(v))
	}
	if left <= 0 || left > maxTTL {
		t.Fatalf("GetSession(%q) ttlLeft = %v, want in (0, %v]", id, left, maxTTL)
	}
	return left
}

func wantNoSession(t *testing.T, c cache.Cache, id string) {
	t.Helper()
	if v, left, err := c.GetSession(bg(), id); !errors.Is(err, cache.ErrNotFound) {
		t.Fatalf("GetSession(%q) = %q, %v, %v; want ErrNotFound", id, v, left, err)
	}
}

// eventually polls cond every pollEvery until it holds or limit passes.
func eventually(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, limit)
		}
		time.Sleep(pollEvery)
	}
}

func testSessionRoundTrip(t *testing.T, a, b cache.Cache) {
	for _, v := range []struct {
		name   string
		in     []byte
		want   []byte
		reader cache.Cache
	}{
		{"nil", nil, []byte{}, a},
		{"empty", []byte{}, []byte{}, b},
		{"text", []byte("hello"), []byte("hello"), b},
		{"binary", bytes.Repeat([]byte{0, 255, 7, '\n', '\r'}, 1000), bytes.Repeat([]byte{0, 255, 7, '\n', '\r'}, 1000), b},
		{"max", bytes.Repeat([]byte{0xa5}, cache.MaxValueSize), bytes.Repeat([]byte{0xa5}, cache.MaxValueSize), b},
	} {
		t.Run(v.name, func(t *testing.T) {
			id := "s-" + v.name
			mustPutSession(t, a, id, v.in, time.Hour)
			wantSession(t, v.reader, id, v.want, time.Hour)
		})
	}
	// Unicode and punctuation are ordinary ids.
	for _, id := range []string{"é😀", "a:b", "*", "sess:x", strings.Repeat("x", cache.MaxNameSize)} {
		mustPutSession(t, a, id, []byte(id), time.Hour)
		wantSession(t, b, id, []byte(id), time.Hour)
	}
	wantNoSession(t, b, "never")
}

func testSessionOverwrite(t *testing.T, a, b cache.Cache) {
	mustPutSession(t, a, "s", []byte("one"), shortTTL)
	mustPutSession(t, b, "s", []byte("two"), time.Hour)
	left := wantSession(t, a, "s", []byte("two"), time.Hour)
	if left <= time.Minute {
		t.Fatalf("overwrite kept the old TTL: %v left", left)
	}
}

func testSessionTouch(t *testing.T, a, b cache.Cache) {
	if err := a.TouchSession(bg(), "missing", time.Hour); !errors.Is(err, cache.ErrNotFound) {
		t.Fatalf("TouchSession(missing) = %v, want ErrNotFound", err)
	}
	wantNoSession(t, a, "missing") // touch created nothing
	mustPutSession(t, a, "s", []byte("v"), 10*time.Second)
	if err := b.TouchSession(bg(), "s", time.Hour); err != nil {
		t.Fatalf("TouchSession: %v", err)
	}
	if left := wantSession(t, a, "s", []byte("v"), time.Hour); left <= 10*time.Second {
		t.Fatalf("after touch to 1h, %v left", left)
	}
	// Touch may shorten too.
	if err := a.TouchSession(bg(), "s", 5*time.Second); err != nil {
		t.Fatalf("TouchSession: %v", err)
	}
	wantSession(t, b, "s", []byte("v"), 5*time.Second)
}

func testSessionDelete(t *testing.T, a, b cache.Cache) {
	mustPutSession(t, a, "s", []byte("v"), time.Hour)
	mustPutSession(t, a, "other", []byte("w"), time.Hour)
	if err := b.DeleteSession(bg(), "s"); err != nil {
		t.Fatalf("DeleteSession: %v", err)
	}
	wantNoSession(t, a, "s")
	if err := a.DeleteSession(bg(), "s"); err != nil {
		t.Fatalf("DeleteSession of an absent session: %v", err)
	}
	if err := a.TouchSession(bg(), "s", time.Hour); !errors.Is(err, cache.ErrNotFound) {
		t.Fatalf("TouchSession after delete = %v, want ErrNotFound", err)
	}
	wantSession(t, a, "other", []byte("w"), time.Hour)
}

func testSessionExpiry(t *testing.T, a, b cache.Cache) {
	mustPutSession(t, a, "short", []byte("v"), shortTTL)
	mustPutSession(t, a, "long", []byte("v"), time.Hour)
	eventually(t, expiryWait, "session with a short TTL expires", func() bool {
		_, _, err := b.GetSession(bg(), "short")
		if err != nil && !errors.Is(err, cache.ErrNotFound) {
			t.Fatalf("GetSession: %v", err)
		}
		return err != nil
	})
	if err := a.TouchSession(bg(), "short", time.Hour); !errors.Is(err, cache.ErrNotFound) {
		t.Fatalf("TouchSession of an expired session = %v, want ErrNotFound", err)
	}
	wantNoSession(t, a, "short")
	wantSession(t, b, "long", []byte("v"), time.Hour)
}

func testValuesCopied(t *testing.T, a, b cache.Cache) {
	in := []byte("original")
	mustPutSession(t, a, "s", in, time.Hour)
	copy(in, "XXXXXXXX")
	out, _, err := a.GetSession(bg(), "s")
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != "original" {
		t.Fatalf("stored value changed with the caller's slice: %q", out)
	}
	copy(out, "YYYYYYYY")
	wantSession(t, a, "s", []byte("original"), time.Hour)

	tok := []byte("token")
	if err := a.PutToken(bg(), "t", "id", tok, time.Hour); err != nil {
		t.Fatal(err)
	}
	copy(tok, "XXXXX")
	if got, err := b.ConsumeToken(bg(), "t", "id"); err != nil || string(got) != "token" {
		t.Fatalf("ConsumeToken = %q, %v; want token", got, err)
	}
}

func testMarkUsed(t *testing.T, a, b cache.Cache) {
	mark := func(c cache.Cache, set, id string, want bool) {
		t.Helper()
		first, err := c.MarkUsed(bg(), set, id, time.Hour)
		if err != nil || first != want {
			t.Fatalf("MarkUsed(%q, %q) = %v, %v; want %v", set, id, first, err, want)
		}
	}
	mark(a, "jti", "1", true)
	mark(a, "jti", "1", false)
	mark(b, "jti", "1", false) // the other replica sees the mark
	mark(b, "jti", "2", true)
	mark(a, "enroll", "1", true) // sets are separate
	mark(a, "jti", "1:x", true)
	mark(a, "jti", "1:x", false)
}

func testMarkUsedExpiry(t *testing.T, a, b cache.Cache) {
	if first, err := a.MarkUsed(bg(), "jti", "x", shortTTL); err != nil || !first {
		t.Fatalf("MarkUsed = %v, %v; want first", first, err)
	}
	if first, err := a.MarkUsed(bg(), "jti", "long", time.Hour); err != nil || !first {
		t.Fatalf("MarkUsed = %v, %v; want first", first, err)
	}
	// A repeat does not extend the mark; once it expires the id is new.
	eventually(t, expiryWait, "replay mark with a short TTL expires", func() bool {
		first, err := b.MarkUsed(bg(), "jti", "x", shortTTL)
		if err != nil {
			t.Fatalf("MarkUsed: %v", err)
		}
		return first
	})
	if first, err := b.MarkUsed(bg(), "jti", "long", time.Hour); err != nil || first {
		t.Fatalf("MarkUsed(long) = %v, %v; want repeat", first, err)
	}
}

// race runs fn(i) on concurrency goroutines released together, alternating
// between the two clients.
func race(a, b cache.Cache, fn func(i int, c cache.Cache)) {
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range concurrency {
		c := a
		if i%2 == 1 {
			c = b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			fn(i, c)
		}()
	}
	close(start)
	wg.Wait()
}

func testMarkUsedConcurrent(t *testing.T, a, b cache.Cache) {
	for round := range 8 {
		id := fmt.Sprintf("jti-%d", round)
		var mu sync.Mutex
		firsts, errs := 0, []error(nil)
		race(a, b, func(_ int, c cache.Cache) {
			first, err := c.MarkUsed(bg(), "jti", id, time.Hour)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
			}
			if first {
				firsts++
			}
		})
		if len(errs) > 0 || firsts != 1 {
			t.Fatalf("round %d: %d of %d concurrent MarkUsed reported first (errors %v); want exactly 1", round, firsts, concurrency, errs)
		}
	}
}

func testTokenOnce(t *testing.T, a, b cache.Cache) {
	if err := a.PutToken(bg(), "enroll", "t1", []byte("agent-7"), time.Hour); err != nil {
		t.Fatal(err)
	}
	got, err := b.ConsumeToken(bg(), "enroll", "t1")
	if err != nil || string(got) != "agent-7" {
		t.Fatalf("ConsumeToken = %q, %v; want agent-7", got, err)
	}
	for _, c := range []cache.Cache{a, b} {
		if got, err := c.ConsumeToken(bg(), "enroll", "t1"); !errors.Is(err, cache.ErrNotFound) || got != nil {
			t.Fatalf("second ConsumeToken = %q, %v; want ErrNotFound", got, err)
		}
	}
	if _, err := a.ConsumeToken(bg(), "enroll", "never"); !errors.Is(err, cache.ErrNotFound) {
		t.Fatalf("ConsumeToken(never issued) = %v, want ErrNotFound", err)
	}
	// Re-issuing replaces; an empty value is a value.
	if err := a.PutToken(bg(), "enroll", "t2", []byte("old"), time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := a.PutToken(bg(), "enroll", "t2", nil, time.Hour); err != nil {
		t.Fatal(err)
	}
	if got, err := b.ConsumeToken(bg(), "enroll", "t2"); err != nil || got == nil || len(got) != 0 {
		t.Fatalf("ConsumeToken(t2) = %q (nil %v), %v; want empty", got, got == nil, err)
	}
	// Same id, other set: separate.
	if err := a.PutToken(bg(), "reset", "t1", []byte("r"), time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := a.ConsumeToken(bg(), "enroll", "t1"); !errors.Is(err, cache.ErrNotFound) {
		t.Fatalf("token leaked across sets: %v", err)
	}
	if got, err := a.ConsumeToken(bg(), "reset", "t1"); err != nil || string(got) != "r" {
		t.Fatalf("ConsumeToken(reset) = %q, %v", got, err)
	}
}

func testTokenExpiry(t *testing.T, a, b cache.Cache) {
	if err := a.PutToken(bg(), "enroll", "short", []byte("v"), shortTTL); err != nil {
		t.Fatal(err)
	}
	if err := a.PutToken(bg(), "enroll", "long", []byte("w"), time.Hour); err != nil {
		t.Fatal(err)
	}
	// Consuming would remove a live token, so wait past the TTL once.
	time.Sleep(3 * shortTTL)
	if got, err := b.ConsumeToken(bg(), "enroll", "short"); !errors.Is(err, cache.ErrNotFound) {
		t.Fatalf("ConsumeToken of an expired token = %q, %v; want ErrNotFound", got, err)
	}
	if got, err := b.ConsumeToken(bg(), "enroll", "long"); err != nil || string(got) != "w" {
		t.Fatalf("ConsumeToken(long) = %q, %v", got, err)
	}
}

func testTokenConcurrent(t *testing.T, a, b cache.Cache) {
	for round := range 8 {
		id := fmt.Sprintf("tok-%d", round)
		if err := a.PutToken(bg(), "enroll", id, []byte(id), time.Hour); err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		winners, errs := 0, []error(nil)
		race(a, b, func(_ int, c cache.Cache) {
			got, err := c.ConsumeToken(bg(), "enroll", id)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil && string(got) == id:
				winners++
			case errors.Is(err, cache.ErrNotFound):
			default:
				errs = append(errs, fmt.Errorf("%q, %w", got, err))
			}
		})
		if len(errs) > 0 || winners != 1 {
			t.Fatalf("round %d: %d of %d concurrent ConsumeToken got the value (other results %v); want exactly 1", round, winners, concurrency, errs)
		}
	}
}

func testTokenAddPeekDelete(t *testing.T, a, b cache.Cache) {
	added, err := a.AddToken(bg(), "nonce", "n1", []byte("first"), time.Hour)
	if err != nil || !added {
		t.Fatalf("AddToken(absent) = %v, %v; want added", added, err)
	}
	// A live token is not replaced.
	if added, err := b.AddToken(bg(), "nonce", "n1", []byte("second"), time.Hour); err != nil || added {
		t.Fatalf("AddToken(present) = %v, %v; want not added", added, err)
	}
	for _, c := range []cache.Cache{a, b} {
		v, left, err := c.PeekToken(bg(), "nonce", "n1")
		if err != nil || string(v) != "first" || left <= 0 || left > time.Hour {
			t.Fatalf("PeekToken = %q, %v, %v; want first with at most an hour left", v, left, err)
		}
	}
	// Peeking consumed nothing.
	if got, err := b.ConsumeToken(bg(), "nonce", "n1"); err != nil || string(got) != "first" {
		t.Fatalf("ConsumeToken after peeks = %q, %v", got, err)
	}
	if _, _, err := a.PeekToken(bg(), "nonce", "n1"); !errors.Is(err, cache.ErrNotFound) {
		t.Fatalf("PeekToken after consume = %v, want ErrNotFound", err)
	}
	// Once consumed, the id can be added again.
	if added, err := a.AddToken(bg(), "nonce", "n1", nil, time.Hour); err != nil || !added {
		t.Fatalf("AddToken after consume = %v, %v", added, err)
	}
	if v, _, err := b.PeekToken(bg(), "nonce", "n1"); err != nil || v == nil || len(v) != 0 {
		t.Fatalf("PeekToken of an empty value = %q (nil %v), %v; want empty", v, v == nil, err)
	}
	if err := b.DeleteToken(bg(), "nonce", "n1"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.ConsumeToken(bg(), "nonce", "n1"); !errors.Is(err, cache.ErrNotFound) {
		t.Fatalf("ConsumeToken after DeleteToken = %v, want ErrNotFound", err)
	}
	if err := a.DeleteToken(bg(), "nonce", "never"); err != nil {
		t.Fatalf("DeleteToken(absent) = %v, want nil", err)
	}
}

func testTokenAddConcurrent(t *testing.T, a, b cache.Cache) {
	for round := range 8 {
		id := fmt.Sprintf("add-%d", round)
		var mu sync.Mutex
		adders, errs := []int(nil), []error(nil)
		race(a, b, func(i int, c cache.Cache) {
			added, err := c.AddToken(bg(), "lock", id, []byte(fmt.Sprint(i)), time.Hour)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
			}
			if added {
				adders = append(adders, i)
			}
		})
		if len(errs) > 0 || len(adders) != 1 {
			t.Fatalf("round %d: %d of %d concurrent AddToken added (errors %v); want exactly 1", round, len(adders), concurrency, errs)
		}
		// The value kept is the winner's.
		if v, _, err := a.PeekToken(bg(), "lock", id); err != nil || string(v) != fmt.Sprint(adders[0]) {
			t.Fatalf("round %d: value %q, %v; want the winner's %d", round, v, err, adders[0])
		}
	}
}

func testTokenPeekExpiry(t *testing.T, a, b cache.Cache) {
	if added, err := a.AddToken(bg(), "nonce", "short", []byte("v"), shortTTL); err != nil || !added {
		t.Fatalf("AddToken = %v, %v", added, err)
	}
	eventually(t, expiryWait, "an added token to expire", func() bool {
		_, _, err := b.PeekToken(bg(), "nonce", "short")
		return errors.Is(err, cache.ErrNotFound)
	})
	// Expired: the id is free again.
	if added, err := b.AddToken(bg(), "nonce", "short", []byte("w"), time.Hour); err != nil || !added {
		t.Fatalf("AddToken after expiry = %v, %v; want added", added, err)
	}
}

func testKindsSeparate(t *testing.T, a, b cache.Cache) {
	mustPutSession(t, a, "x", []byte("session"), time.Hour)
	if _, err := a.ConsumeToken(bg(), "s", "x"); !errors.Is(err, cache.ErrNotFound) {
		t.Fatalf("a session is visible as a token: %v", err)
	}
	if first, err := a.MarkUsed(bg(), "s", "x", time.Hour); err != nil || !first {
		t.Fatalf("MarkUsed(s, x) = %v, %v; want first", first, err)
	}
	if err := a.PutToken(bg(), "s", "x", []byte("token"), time.Hour); err != nil {
		t.Fatal(err)
	}
	if d, err := a.Allow(bg(), "x", 1, time.Hour); err != nil || !d.Allowed {
		t.Fatalf("Allow(x) = %+v, %v", d, err)
	}
	wantSession(t, b, "x", []byte("session"), time.Hour)
	if got, err := b.ConsumeToken(bg(), "s", "x"); err != nil || string(got) != "token" {
		t.Fatalf("ConsumeToken = %q, %v", got, err)
	}
}

func allow(t *testing.T, c cache.Cache, key string, limit int, window time.Duration) cache.Decision {
	t.Helper()
	d, err := c.Allow(bg(), key, limit, window)
	if err != nil {
		t.Fatalf("Allow(%q): %v", key, err)
	}
	return d
}

func testAllowCounts(t *testing.T, a, b cache.Cache) {
	const limit = 5
	for i := range limit {
		c := a
		if i%2 == 1 {
			c = b
		}
		d := allow(t, c, "login:alice", limit, time.Hour)
		if !d.Allowed || d.Remaining != limit-1-i || d.RetryAfter != 0 {
			t.Fatalf("call %d: %+v; want allowed with %d remaining", i+1, d, limit-1-i)
		}
	}
	for range 3 {
		d := allow(t, b, "login:alice", limit, time.Hour)
		if d.Allowed || d.Remaining != 0 || d.RetryAfter <= 0 || d.RetryAfter > time.Hour {
			t.Fatalf("over the limit: %+v; want denied, RetryAfter in (0, 1h]", d)
		}
	}
	if d := allow(t, a, "login:bob", limit, time.Hour); !d.Allowed || d.Remaining != limit-1 {
		t.Fatalf("another key: %+v", d)
	}
	if d := allow(t, a, "one", 1, time.Hour); !d.Allowed || d.Remaining != 0 {
		t.Fatalf("limit 1, first call: %+v", d)
	}
	if d := allow(t, a, "one", 1, time.Hour); d.Allowed {
		t.Fatalf("limit 1, second call: %+v", d)
	}
}

func testAllowReset(t *testing.T, a, b cache.Cache) {
	const window = 100 * time.Millisecond
	for range 2 {
		if d := allow(t, a, "k", 2, window); !d.Allowed {
			t.Fatalf("within the limit: %+v", d)
		}
	}
	d := allow(t, b, "k", 2, window)
	if d.Allowed || d.RetryAfter <= 0 || d.RetryAfter > window {
		t.Fatalf("over the limit: %+v; want denied, RetryAfter in (0, %v]", d, window)
	}
	eventually(t, expiryWait, "rate-limit window resets", func() bool {
		d := allow(t, b, "k", 2, window)
		return d.Allowed && d.Remaining == 1
	})
}

func testAllowConcurrent(t *testing.T, a, b cache.Cache) {
	const limit = 10
	for round := range 4 {
		key := fmt.Sprintf("burst-%d", round)
		var mu sync.Mutex
		allowed, errs := 0, []error(nil)
		race(a, b, func(_ int, c cache.Cache) {
			for range 2 {
				d, err := c.Allow(bg(), key, limit, time.Hour)
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				}
				if d.Allowed {
					allowed++
				}
				mu.Unlock()
			}
		})
		if len(errs) > 0 || allowed != limit {
			t.Fatalf("round %d: %d of %d concurrent calls allowed (errors %v); want exactly %d", round, allowed, 2*concurrency, errs, limit)
		}
	}
}

// Receive waits up to limit for the next message on sub.
func Receive(t testing.TB, sub cache.Subscription, limit time.Duration) cache.Message {
	t.Helper()
	timer := time.NewTimer(limit)
	defer timer.Stop()
	select {
	case m, ok := <-sub.C():
		if !ok {
			t.Fatalf("subscription closed while waiting for a message")
		}
		return m
	case <-timer.C:
		t.Fatalf("no message within %v", limit)
	}
	return cache.Message{}
}

// wantQuiet checks that nothing arrives on sub for a short while.
func wantQuiet(t *testing.T, sub cache.Subscription) {
	t.Helper()
	select {
	case m := <-sub.C():
		t.Fatalf("unexpected message %q on %q", m.Payload, m.Channel)
	case <-time.After(100 * time.Millisecond):
	}
}

func subscribe(t *testing.T, c cache.Cache, channels ...string) cache.Subscription {
	t.Helper()
	sub, err := c.Subscribe(bg(), channels...)
	if err != nil {
		t.Fatalf("Subscribe(%q): %v", channels, err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	return sub
}

func testPubSubDelivery(t *testing.T, a, b cache.Cache) {
	if err := a.Publish(bg(), "revocations", []byte("nobody listens")); err != nil {
		t.Fatalf("Publish without subscribers: %v", err)
	}
	sub := subscribe(t, b, "revocations")
	payloads := [][]byte{[]byte("cert 1"), {}, bytes.Repeat([]byte{0, 0xff, '\r', '\n'}, 4096)}
	for i := range 20 {
		payloads = append(payloads, fmt.Appendf(nil, "m%02d", i))
	}
	for _, p := range payloads {
		buf := bytes.Clone(p)
		if err := a.Publish(bg(), "revocations", buf); err != nil {
			t.Fatalf("Publish: %v", err)
		}
		copy(buf, "XXXX") // the message was copied at Publish
	}
	for i, p := range payloads {
		m := Receive(t, sub, receiveWait)
		if m.Channel != "revocations" || m.Payload == nil || !bytes.Equal(m.Payload, p) {
			t.Fatalf("message %d = %q on %q; want %d bytes on revocations, in publishing order", i, m.Payload, m.Channel, len(p))
		}
	}
}

func testPubSubChannels(t *testing.T, a, b cache.Cache) {
	sub := subscribe(t, b, "x", "y", "x")
	for _, ch := range []string{"z", "x", "y", "x:y", "y"} {
		if err := a.Publish(bg(), ch, []byte("on "+ch)); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []string{"x", "y", "y"} {
		if m := Receive(t, sub, receiveWait); m.Channel != want || string(m.Payload) != "on "+want {
			t.Fatalf("got %q on %q; want a message on %q", m.Payload, m.Channel, want)
		}
	}
	wantQuiet(t, sub)
}

func testPubSubFanOut(t *testing.T, a, b cache.Cache) {
	s1 := subscribe(t, a, "policy")
	s2 := subscribe(t, b, "policy")
	s3 := subscribe(t, b, "policy")
	if err := a.Publish(bg(), "policy", []byte("v42")); err != nil {
		t.Fatal(err)
	}
	for i, s := range []cache.Subscription{s1, s2, s3} {
		if m := Receive(t, s, receiveWait); string(m.Payload) != "v42" {
			t.Fatalf("subscriber %d got %q", i, m.Payload)
		}
	}
}

func testPubSubClose(t *testing.T, a, b cache.Cache) {
	sub := subscribe(t, b, "ev")
	keep := subscribe(t, b, "ev")
	if err := sub.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := sub.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := a.Publish(bg(), "ev", []byte("after close")); err != nil {
		t.Fatal(err)
	}
	if m := Receive(t, keep, receiveWait); string(m.Payload) != "after close" {
		t.Fatalf("open subscription got %q", m.Payload)
	}
	// C is closed; anything still buffered came before Close.
	timer := time.NewTimer(receiveWait)
	defer timer.Stop()
	for range 10 {
		select {
		case m, ok := <-sub.C():
			if !ok {
				return
			}
			if string(m.Payload) == "after close" {
				t.Fatalf("closed subscription received a message published after Close")
			}
		case <-timer.C:
			t.Fatalf("C not closed within %v of Close", receiveWait)
		}
	}
	t.Fatalf("C not closed after 10 receives")
}

func testInvalid(t *testing.T, a, b cache.Cache) {
	mustPutSession(t, a, "s", []byte("keep"), time.Hour)
	if err := a.PutToken(bg(), "tok", "t", []byte("keep"), time.Hour); err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("x", cache.MaxNameSize+1)
	big := make([]byte, cache.MaxValueSize+1)
	names := []string{"", long, "a\x00b", "\n", "\x7f", "\u0085", "\xff\xfe", "\xc0\x80"}
	sets := []string{"", "Jti", "a:b", "a b", "é", strings.Repeat("a", cache.MaxSetSize+1), "a\x00"}
	ttls := []time.Duration{0, -time.Second, time.Microsecond, cache.MaxTTL + time.Millisecond}

	var calls []struct {
		name string
		err  error
	}
	add := func(name string, err error) {
		calls = append(calls, struct {
			name string
			err  error
		}{name, err})
	}
	for _, n := range names {
		q := fmt.Sprintf("%q", n)
		add("PutSession id "+q, a.PutSession(bg(), n, []byte("x"), time.Hour))
		_, _, err := a.GetSession(bg(), n)
		add("GetSession id "+q, err)
		add("TouchSession id "+q, a.TouchSession(bg(), n, time.Hour))
		add("DeleteSession id "+q, a.DeleteSession(bg(), n))
		_, err = a.MarkUsed(bg(), "jti", n, time.Hour)
		add("MarkUsed id "+q, err)
		add("PutToken id "+q, a.PutToken(bg(), "tok", n, nil, time.Hour))
		_, err = a.ConsumeToken(bg(), "tok", n)
		add("ConsumeToken id "+q, err)
		_, err = a.AddToken(bg(), "tok", n, nil, time.Hour)
		add("AddToken id "+q, err)
		_, _, err = a.PeekToken(bg(), "tok", n)
		add("PeekToken id "+q, err)
		add("DeleteToken id "+q, a.DeleteToken(bg(), "tok", n))
		_, err = a.Allow(bg(), n, 1, time.Hour)
		add("Allow key "+q, err)
		add("Publish channel "+q, a.Publish(bg(), n, nil))
		_, err = a.Subscribe(bg(), "ok", n)
		add("Subscribe channel "+q, err)
	}
	for _, s := range sets {
		q := fmt.Sprintf("%q", s)
		first, err := a.MarkUsed(bg(), s, "id", time.Hour)
		if first {
			t.Errorf("MarkUsed with set %s reported first", q)
		}
		add("MarkUsed set "+q, err)
		add("PutToken set "+q, a.PutToken(bg(), s, "t", nil, time.Hour))
		_, err = a.ConsumeToken(bg(), s, "t")
		add("ConsumeToken set "+q, err)
		_, err = a.AddToken(bg(), s, "t", nil, time.Hour)
		add("AddToken set "+q, err)
		_, _, err = a.PeekToken(bg(), s, "t")
		add("PeekToken set "+q, err)
		add("DeleteToken set "+q, a.DeleteToken(bg(), s, "t"))
	}
	for _, d := range ttls {
		q := d.String()
		add("PutSession ttl "+q, a.PutSession(bg(), "s", []byte("x"), d))
		add("TouchSession ttl "+q, a.TouchSession(bg(), "s", d))
		_, err := a.MarkUsed(bg(), "jti", "new", d)
		add("MarkUsed ttl "+q, err)
		add("PutToken ttl "+q, a.PutToken(bg(), "tok", "t", []byte("x"), d))
		_, err = a.AddToken(bg(), "tok", "t2", []byte("x"), d)
		add("AddToken ttl "+q, err)
		_, err = a.Allow(bg(), "k", 1, d)
		add("Allow window "+q, err)
	}
	for _, l := range []int{0, -1, cache.MaxLimit + 1} {
		_, err := a.Allow(bg(), "k", l, time.Hour)
		add(fmt.Sprintf("Allow limit %d", l), err)
	}
	add("PutSession value too large", a.PutSession(bg(), "s", big, time.Hour))
	add("PutToken value too large", a.PutToken(bg(), "tok", "t", big, time.Hour))
	_, addErr := a.AddToken(bg(), "tok", "t2", big, time.Hour)
	add("AddToken value too large", addErr)
	add("Publish payload too large", a.Publish(bg(), "ch", big))
	_, err := a.Subscribe(bg())
	add("Subscribe to nothing", err)
	many := make([]string, cache.MaxChannels+1)
	for i := range many {
		many[i] = fmt.Sprint("c", i)
	}
	_, err = a.Subscribe(bg(), many...)
	add("Subscribe to too many", err)

	for _, c := range calls {
		if !errors.Is(c.err, cache.ErrInvalidArgument) {
			t.Errorf("%s: %v; want ErrInvalidArgument", c.name, c.err)
		}
	}
	// Nothing changed.
	wantSession(t, b, "s", []byte("keep"), time.Hour)
	if first, err := b.MarkUsed(bg(), "jti", "new", time.Hour); err != nil || !first {
		t.Fatalf("a refused MarkUsed left a mark: %v, %v", first, err)
	}
	if d := allow(t, b, "k", 1, time.Hour); !d.Allowed {
		t.Fatalf("a refused Allow was counted: %+v", d)
	}
	if got, err := b.ConsumeToken(bg(), "tok", "t"); err != nil || string(got) != "keep" {
		t.Fatalf("token after refused calls = %q, %v", got, err)
	}
}

func testContextDone(t *testing.T, a, b cache.Cache) {
	mustPutSession(t, a, "s", []byte("keep"), time.Hour)
	if err := a.PutToken(bg(), "tok", "t", []byte("keep"), time.Hour); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(bg())
	cancel()
	expired, cancel2 := context.WithDeadline(bg(), time.Now().Add(-time.Second))
	defer cancel2()
	for _, cc := range []struct {
		ctx  context.Context
		want error
	}{{ctx, context.Canceled}, {expired, context.DeadlineExceeded}} {
		ctx := cc.ctx
		errs := map[string]error{
			"PutSession":    a.PutSession(ctx, "s", []byte("changed"), time.Hour),
			"TouchSession":  a.TouchSession(ctx, "s", time.Second),
			"DeleteSession": a.DeleteSession(ctx, "s"),
			"PutToken":      a.PutToken(ctx, "tok", "t", []byte("changed"), time.Hour),
			"Publish":       a.Publish(ctx, "ch", nil),
			"Ping":          a.Ping(ctx),
		}
		_, _, errs["GetSession"] = a.GetSession(ctx, "s")
		first, err := a.MarkUsed(ctx, "jti", "x", time.Hour)
		if first {
			t.Errorf("MarkUsed with a done context reported first")
		}
		errs["MarkUsed"] = err
		_, errs["ConsumeToken"] = a.ConsumeToken(ctx, "tok", "t")
		_, errs["AddToken"] = a.AddToken(ctx, "tok", "t2", nil, time.Hour)
		_, _, errs["PeekToken"] = a.PeekToken(ctx, "tok", "t")
		errs["DeleteToken"] = a.DeleteToken(ctx, "tok", "t")
		_, errs["Allow"] = a.Allow(ctx, "k", 1, time.Hour)
		_, errs["Subscribe"] = a.Subscribe(ctx, "ch")
		for name, err := range errs {
			if !errors.Is(err, cc.want) {
				t.Errorf("%s with a done context: %v; want %v", name, err, cc.want)
			}
		}
	}
	if left := wantSession(t, b, "s", []byte("keep"), time.Hour); left <= time.Minute {
		t.Fatalf("a cancelled TouchSession took effect: %v left", left)
	}
	if first, err := b.MarkUsed(bg(), "jti", "x", time.Hour); err != nil || !first {
		t.Fatalf("a cancelled MarkUsed left a mark: %v, %v", first, err)
	}
	if d := allow(t, b, "k", 1, time.Hour); !d.Allowed {
		t.Fatalf("a cancelled Allow was counted: %+v", d)
	}
	if got, err := b.ConsumeToken(bg(), "tok", "t"); err != nil || string(got) != "keep" {
		t.Fatalf("token after cancelled calls = %q, %v", got, err)
	}
}

func testClosed(t *testing.T, a, b cache.Cache) {
	sub := subscribe(t, a, "ev")
	mustPutSession(t, b, "s", []byte("v"), time.Hour)
	if err := a.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := a.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	errs := map[string]error{
		"PutSession":    a.PutSession(bg(), "s", []byte("x"), time.Hour),
		"TouchSession":  a.TouchSession(bg(), "s", time.Hour),
		"DeleteSession": a.DeleteSession(bg(), "s"),
		"PutToken":      a.PutToken(bg(), "tok", "t", nil, time.Hour),
		"Publish":       a.Publish(bg(), "ev", nil),
		"Ping":          a.Ping(bg()),
	}
	_, _, errs["GetSession"] = a.GetSession(bg(), "s")
	first, err := a.MarkUsed(bg(), "jti", "x", time.Hour)
	if first {
		t.Errorf("MarkUsed after Close reported first")
	}
	errs["MarkUsed"] = err
	_, errs["ConsumeToken"] = a.ConsumeToken(bg(), "tok", "t")
	_, errs["AddToken"] = a.AddToken(bg(), "tok", "t", nil, time.Hour)
	_, _, errs["PeekToken"] = a.PeekToken(bg(), "tok", "t")
	errs["DeleteToken"] = a.DeleteToken(bg(), "tok", "t")
	_, errs["Allow"] = a.Allow(bg(), "k", 1, time.Hour)
	_, errs["Subscribe"] = a.Subscribe(bg(), "ev")
	for name, err := range errs {
		if !errors.Is(err, cache.ErrClosed) {
			t.Errorf("%s after Close: %v; want ErrClosed", name, err)
		}
	}
	// The subscription was closed with the cache.
	timer := time.NewTimer(receiveWait)
	defer timer.Stop()
	select {
	case _, ok := <-sub.C():
		if ok {
			t.Fatalf("subscription delivered a message after its cache closed")
		}
	case <-timer.C:
		t.Fatalf("subscription not closed within %v of the cache's Close", receiveWait)
	}
	// The other replica is unaffected.
	wantSession(t, b, "s", []byte("v"), time.Hour)
	if err := b.Ping(bg()); err != nil {
		t.Fatalf("Ping on the other client: %v", err)
	}
}
