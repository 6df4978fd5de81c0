package oauth

import (
	"context"
	"crypto/rand"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/avonzt/avon/core/store"
	"github.com/avonzt/avon/core/store/memstore"
)

// breakableKV fails every call with store.ErrUnavailable while broken.
type breakableKV struct {
	store.KV
	broken atomic.Bool
	puts   atomic.Int64
}

var errDown = errors.New("test store down")

func (k *breakableKV) Get(ctx context.Context, key string) (store.Entry, error) {
	if k.broken.Load() {
		return store.Entry{}, errDown
	}
	return k.KV.Get(ctx, key)
}

func (k *breakableKV) Put(ctx context.Context, key string, v []byte, o store.PutOptions) (int64, error) {
	if k.broken.Load() {
		return 0, errDown
	}
	k.puts.Add(1)
	return k.KV.Put(ctx, key, v, o)
}

func (k *breakableKV) List(ctx context.Context, o store.ListOptions) ([]store.Entry, error) {
	if k.broken.Load() {
		return nil, errDown
	}
	return k.KV.List(ctx, o)
}

func newTestTokens(t *testing.T) (*APITokens, *breakableKV, *fixedClock) {
	t.Helper()
	kv := &breakableKV{KV: memstore.New()}
	c := &fixedClock{t: time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)}
	return NewAPITokens(kv, rand.Reader, c.now), kv, c
}

func TestAPITokenLifecycle(t *testing.T) {
	a, kv, c := newTestTokens(t)
	tok, info, err := a.Create(bg, "ci-deploy", []string{ScopeAdminWrite, ScopeAdminRead, ScopeAdminRead}, 48*time.Hour, "user:alice")
	if err != nil {
		t.Fatal(err)
	}
	if !IsAPIToken(tok) || len(tok) != len(APITokenPrefix)+apiTokenIDLen+1+apiTokenSecretLen {
		t.Fatalf("token %q", tok)
	}
	if strings.Join(info.Scopes, " ") != "admin:read admin:write" || info.Name != "ci-deploy" || info.CreatedBy != "user:alice" ||
		!info.ExpiresAt.Equal(c.t.Add(48*time.Hour)) || info.Revoked {
		t.Fatalf("info %+v", info)
	}
	// Only the hash is stored.
	e, err := kv.Get(bg, apiTokenKeyPrefix+info.ID)
	if err != nil {
		t.Fatal(err)
	}
	secret := tok[len(tok)-apiTokenSecretLen:]
	if strings.Contains(string(e.Value), secret) {
		t.Fatalf("the stored record holds the secret: %s", e.Value)
	}

	got, err := a.Check(bg, tok)
	if err != nil || got.ID != info.ID || got.Actor() != "apitoken:ci-deploy/"+info.ID {
		t.Fatalf("check: %+v %v", got, err)
	}
	// Last use is written once a minute at most.
	puts := kv.puts.Load()
	for range 5 {
		if _, err := a.Check(bg, tok); err != nil {
			t.Fatal(err)
		}
	}
	if kv.puts.Load() != puts {
		t.Fatalf("%d writes for 5 checks within a minute", kv.puts.Load()-puts)
	}
	c.t = c.t.Add(2 * time.Minute)
	if _, err := a.Check(bg, tok); err != nil {
		t.Fatal(err)
	}
	if g, _ := a.Get(bg, info.ID); !g.LastUsedAt.Equal(c.t) {
		t.Fatalf("last used %v, want %v", g.LastUsedAt, c.t)
	}

	list, err := a.List(bg)
	if err != nil || len(list) != 1 || list[0].ID != info.ID {
		t.Fatalf("list %+v %v", list, err)
	}

	r, err := a.Revoke(bg, info.ID, "user:bob")
	if err != nil || !r.Revoked || r.RevokedBy != "user:bob" {
		t.Fatalf("revoke %+v %v", r, err)
	}
	if _, err := a.Check(bg, tok); !errors.Is(err, ErrRevoked) {
		t.Fatalf("revoked token: %v", err)
	}
	// Revoking again changes nothing.
	puts = kv.puts.Load()
	if r2, err := a.Revoke(bg, info.ID, "user:carol"); err != nil || r2.RevokedBy != "user:bob" || kv.puts.Load() != puts {
		t.Fatalf("second revoke %+v %v", r2, err)
	}
}

func TestAPITokenExpiry(t *testing.T) {
	a, _, c := newTestTokens(t)
	tok, _, err := a.Create(bg, "short", []string{ScopeAdminRead}, time.Hour, "local-admin")
	if err != nil {
		t.Fatal(err)
	}
	c.t = c.t.Add(time.Hour - time.Second)
	if _, err := a.Check(bg, tok); err != nil {
		t.Fatalf("one second before expiry: %v", err)
	}
	c.t = c.t.Add(time.Second)
	if _, err := a.Check(bg, tok); !errors.Is(err, ErrExpired) {
		t.Fatalf("at expiry: %v", err)
	}
	// Default lifetime.
	_, info, err := a.Create(bg, "default", []string{ScopeAdminRead}, 0, "local-admin")
	if err != nil || !info.ExpiresAt.Equal(c.t.Add(DefaultAPITokenTTL)) {
		t.Fatalf("default ttl: %+v %v", info, err)
	}
}

func TestAPITokenRefusals(t *testing.T) {
	a, kv, c := newTestTokens(t)
	tok, info, err := a.Create(bg, "ops", []string{ScopeAdminRead}, time.Hour, "local-admin")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		scopes []string
		ttl    time.Duration
	}{
		{"", []string{ScopeAdminRead}, time.Hour},
		{"Has Spaces", []string{ScopeAdminRead}, time.Hour},
		{strings.Repeat("a", 65), []string{ScopeAdminRead}, time.Hour},
		{"ok", nil, time.Hour},
		{"ok", []string{"admin"}, time.Hour},
		{"ok", []string{"admin:users"}, time.Hour},
		{"ok", []string{ScopeAdminRead}, time.Second},
		{"ok", []string{ScopeAdminRead}, MaxAPITokenTTL + time.Hour},
		{"ok", []string{ScopeAdminRead}, -time.Hour},
	} {
		puts := kv.puts.Load()
		if _, _, err := a.Create(bg, tc.name, tc.scopes, tc.ttl, "x"); !errors.Is(err, ErrInvalidArgument) || kv.puts.Load() != puts {
			t.Errorf("create %q %v %v: %v (writes %d)", tc.name, tc.scopes, tc.ttl, err, kv.puts.Load()-puts)
		}
	}

	// The secret's first character changed (its last holds padding bits
	// that strict base64 checks).
	i := len(APITokenPrefix) + apiTokenIDLen + 1
	flip := byte('A')
	if tok[i] == 'A' {
		flip = 'B'
	}
	wrongSecret := tok[:i] + string(flip) + tok[i+1:]
	otherID := APITokenPrefix + strings.Repeat("0", apiTokenIDLen) + tok[len(APITokenPrefix)+apiTokenIDLen:]
	for _, tc := range []struct {
		bearer string
		want   error
	}{
		{"", ErrMalformedToken},
		{APITokenPrefix, ErrMalformedToken},
		{tok[:len(tok)-1], ErrMalformedToken},
		{tok + "A", ErrMalformedToken},
		{strings.ToUpper(tok[:len(APITokenPrefix)]) + tok[len(APITokenPrefix):], ErrMalformedToken},
		{APITokenPrefix + strings.ToUpper(info.ID) + tok[len(APITokenPrefix)+apiTokenIDLen:], ErrMalformedToken},
		{strings.Replace(tok, "_", "-", 3), ErrMalformedToken},
		{tok[:len(tok)-1] + "=", ErrMalformedToken},
		{wrongSecret, ErrUnknownToken},
		{otherID, ErrUnknownToken},
	} {
		if _, err := a.Check(bg, tc.bearer); !errors.Is(err, tc.want) {
			t.Errorf("check %q: %v, want %v", tc.bearer, err, tc.want)
		}
	}
	// Unknown id and wrong secret read the same.
	_, e1 := a.Check(bg, wrongSecret)
	_, e2 := a.Check(bg, otherID)
	if e1 == nil || e2 == nil || e1.Error() != e2.Error() {
		t.Errorf("unknown id %v and wrong secret %v differ", e2, e1)
	}

	if _, err := a.Get(bg, "../etc"); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("get bad id: %v", err)
	}
	if _, err := a.Revoke(bg, strings.Repeat("f", apiTokenIDLen), "x"); !errors.Is(err, ErrUnknownToken) {
		t.Errorf("revoke unknown: %v", err)
	}

	// No trusted time: fail closed.
	c.err = errors.New("calibration stale")
	if _, err := a.Check(bg, tok); !errors.Is(err, ErrNoTime) {
		t.Errorf("no time: %v", err)
	}
	c.err = nil
	// Store down: unavailable, never accepted.
	kv.broken.Store(true)
	if _, err := a.Check(bg, tok); !errors.Is(err, ErrUnavailable) {
		t.Errorf("store down: %v", err)
	}
	if _, _, err := a.Create(bg, "x", []string{ScopeAdminRead}, time.Hour, "x"); !errors.Is(err, ErrUnavailable) {
		t.Errorf("create, store down: %v", err)
	}
	kv.broken.Store(false)
	if _, err := a.Check(bg, tok); err != nil {
		t.Errorf("store back: %v", err)
	}
}

func FuzzParseAPIToken(f *testing.F) {
	f.Add(APITokenPrefix + strings.Repeat("a", apiTokenIDLen) + "_" + strings.Repeat("B", apiTokenSecretLen))
	f.Add(APITokenPrefix)
	f.Add("avon_pat_0123456789abcdef0123_")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		id, secret, err := parseAPIToken(s)
		if err != nil {
			if !errors.Is(err, ErrMalformedToken) || id != "" || secret != "" {
				t.Fatalf("%q: %q %q %v", s, id, secret, err)
			}
			return
		}
		if s != APITokenPrefix+id+"_"+secret || !apiTokenIDRE.MatchString(id) {
			t.Fatalf("%q parsed to %q %q", s, id, secret)
		}
	})
}
