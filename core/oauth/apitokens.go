package oauth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/avonzt/avon/core/store"
)

// API tokens are the credentials of automation: long-lived bearer tokens
// with a fixed set of Admin API scopes, made by an operator, shown once,
// stored only as a hash, revocable, and named in every audit record of
// what they do (actor "apitoken:<name>/<id>").
//
// A token is "avon_pat_" + a 20-hex-digit id + "_" + 43 base64url
// characters of secret (256 bits from the core's DRBG). The store keeps
// SHA-256 of the secret under oauth/apitoken/<id>: the secret is uniformly
// random, so a fast hash is as good as a password hash here and lets every
// API call check it in microseconds.
const (
	APITokenPrefix    = "avon_pat_"
	apiTokenKeyPrefix = "oauth/apitoken/"
	apiTokenIDLen     = 20 // hex digits
	apiTokenSecretLen = 43 // base64url of 32 bytes

	// DefaultAPITokenTTL is a token's lifetime when the request names none.
	DefaultAPITokenTTL = 90 * 24 * time.Hour
	// MaxAPITokenTTL bounds a token's lifetime: automation rotates its
	// credentials at least yearly.
	MaxAPITokenTTL = 366 * 24 * time.Hour
	// MinAPITokenTTL is the shortest lifetime a token may have.
	MinAPITokenTTL = time.Minute
	// lastUsedEvery is how often a token's last-used time is written: a
	// token called a thousand times a minute costs one write a minute.
	lastUsedEvery = time.Minute
)

// API scopes an API token may hold: those of the Admin API. A token never
// holds a role, so it can neither manage operator users nor API tokens
// (those changes need an operator with the admin role).
const (
	ScopeAdminRead  = "admin:read"
	ScopeAdminWrite = "admin:write"
)

// APIScopes lists the scopes an API token may hold.
var APIScopes = []string{ScopeAdminRead, ScopeAdminWrite}

var (
	apiTokenNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)
	apiTokenIDRE   = regexp.MustCompile(`^[0-9a-f]{20}$`)
)

// APIToken is a token as stored. SecretHash is SHA-256 of the secret.
type APIToken struct {
	ID         string    `json:"id"`
	Name       string    `json:"name"`
	Scopes     []string  `json:"scopes"`
	SecretHash []byte    `json:"secret_hash"`
	CreatedBy  string    `json:"created_by"`
	CreatedAt  time.Time `json:"created_at"`
	ExpiresAt  time.Time `json:"expires_at"`
	RevokedAt  time.Time `json:"revoked_at,omitzero"`
	RevokedBy  string    `json:"revoked_by,omitempty"`
	LastUsedAt time.Time `json:"last_used_at,omitzero"`
}

// APITokenInfo is what listings show of a token (never its secret or hash).
type APITokenInfo struct {
	ID         string    `json:"id"`
	Name       string    `json:"name"`
	Scopes     []string  `json:"scopes"`
	CreatedBy  string    `json:"created_by"`
	CreatedAt  time.Time `json:"created_at"`
	ExpiresAt  time.Time `json:"expires_at"`
	Revoked    bool      `json:"revoked"`
	RevokedAt  time.Time `json:"revoked_at,omitzero"`
	RevokedBy  string    `json:"revoked_by,omitempty"`
	LastUsedAt time.Time `json:"last_used_at,omitzero"`
}

// Info returns the public view of t.
func (t APIToken) Info() APITokenInfo {
	return APITokenInfo{ID: t.ID, Name: t.Name, Scopes: t.Scopes, CreatedBy: t.CreatedBy, CreatedAt: t.CreatedAt,
		ExpiresAt: t.ExpiresAt, Revoked: !t.RevokedAt.IsZero(), RevokedAt: t.RevokedAt, RevokedBy: t.RevokedBy,
		LastUsedAt: t.LastUsedAt}
}

// Actor is how audit records name a caller holding this token.
func (t APITokenInfo) Actor() string { return "apitoken:" + t.Name + "/" + t.ID }

// APITokens manages API tokens in the store and checks them.
type APITokens struct {
	kv   store.KV
	rand io.Reader
	now  func() (time.Time, error)

	mu       sync.Mutex
	lastSeen map[string]time.Time // id -> last-used time last written
}

// NewAPITokens returns token operations over kv, with secrets from rand
// (the core DRBG) and calibrated time from now.
func NewAPITokens(kv store.KV, rand io.Reader, now func() (time.Time, error)) *APITokens {
	return &APITokens{kv: kv, rand: rand, now: now, lastSeen: map[string]time.Time{}}
}

func (a *APITokens) trustedNow() (time.Time, error) {
	t, err := a.now()
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: %w", ErrNoTime, err)
	}
	return t.UTC(), nil
}

// CheckAPIScopes validates and normalizes a token's scopes: at least one,
// each in APIScopes, without repeats, in APIScopes' order.
func CheckAPIScopes(scopes []string) ([]string, error) {
	if len(scopes) == 0 {
		return nil, fmt.Errorf("%w: an API token needs at least one scope (%s)", ErrInvalidArgument, strings.Join(APIScopes, ", "))
	}
	for _, s := range scopes {
		if !slices.Contains(APIScopes, s) {
			return nil, fmt.Errorf("%w: scope %q; an API token may hold %s", ErrInvalidArgument, s, strings.Join(APIScopes, ", "))
		}
	}
	out := []string{}
	for _, s := range APIScopes {
		if slices.Contains(scopes, s) {
			out = append(out, s)
		}
	}
	return out, nil
}

// Create makes a token named name with scopes, living ttl (0: the
// default), made by actor by. It returns the bearer string, shown this
// once, and the token's public view. Errors: ErrInvalidArgument (nothing
// written), ErrNoTime, ErrUnavailable.
func (a *APITokens) Create(ctx context.Context, name string, scopes []string, ttl time.Duration, by string) (string, APITokenInfo, error) {
	if !apiTokenNameRE.MatchString(name) {
		return "", APITokenInfo{}, fmt.Errorf("%w: token name %q: want 1 to 64 of a-z 0-9 . _ -, starting with a letter or digit", ErrInvalidArgument, clip(name))
	}
	scopes, err := CheckAPIScopes(scopes)
	if err != nil {
		return "", APITokenInfo{}, err
	}
	if ttl == 0 {
		ttl = DefaultAPITokenTTL
	}
	if ttl < MinAPITokenTTL || ttl > MaxAPITokenTTL {
		return "", APITokenInfo{}, fmt.Errorf("%w: token lifetime %s: want %s to %s", ErrInvalidArgument, ttl, MinAPITokenTTL, MaxAPITokenTTL)
	}
	now, err := a.trustedNow()
	if err != nil {
		return "", APITokenInfo{}, err
	}
	raw := make([]byte, 10+32)
	if _, err := io.ReadFull(a.rand, raw); err != nil {
		return "", APITokenInfo{}, fmt.Errorf("%w: randomness: %w", ErrUnavailable, err)
	}
	id := hex.EncodeToString(raw[:10])
	secret := base64.RawURLEncoding.EncodeToString(raw[10:])
	clear(raw)
	h := sha256.Sum256([]byte(secret))
	t := APIToken{ID: id, Name: name, Scopes: scopes, SecretHash: h[:], CreatedBy: by, CreatedAt: now,
		ExpiresAt: now.Add(ttl)}
	b, err := json.Marshal(t)
	if err != nil {
		return "", APITokenInfo{}, err
	}
	if _, err := a.kv.Put(ctx, apiTokenKeyPrefix+id, b, store.PutOptions{Check: true}); err != nil {
		return "", APITokenInfo{}, fmt.Errorf("%w: store API token: %w", ErrUnavailable, err)
	}
	return APITokenPrefix + id + "_" + secret, t.Info(), nil
}

// IsAPIToken reports whether a bearer string is meant as an API token (by
// its prefix; Check says whether it is a valid one).
func IsAPIToken(bearer string) bool { return strings.HasPrefix(bearer, APITokenPrefix) }

// parseAPIToken splits a bearer string into id and secret.
func parseAPIToken(bearer string) (id, secret string, err error) {
	rest, ok := strings.CutPrefix(bearer, APITokenPrefix)
	if !ok || len(rest) != apiTokenIDLen+1+apiTokenSecretLen || rest[apiTokenIDLen] != '_' {
		return "", "", fmt.Errorf("%w: not an API token (%s<20 hex>_<43 base64url>)", ErrMalformedToken, APITokenPrefix)
	}
	id, secret = rest[:apiTokenIDLen], rest[apiTokenIDLen+1:]
	if !apiTokenIDRE.MatchString(id) {
		return "", "", fmt.Errorf("%w: API token id is not 20 lowercase hex digits", ErrMalformedToken)
	}
	if b, err := base64.RawURLEncoding.Strict().DecodeString(secret); err != nil || len(b) != 32 {
		return "", "", fmt.Errorf("%w: API token secret is not 32 bytes of base64url", ErrMalformedToken)
	}
	return id, secret, nil
}

func (a *APITokens) get(ctx context.Context, id string) (APIToken, int64, error) {
	e, err := a.kv.Get(ctx, apiTokenKeyPrefix+id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return APIToken{}, 0, fmt.Errorf("%w: API token %s", ErrUnknownToken, id)
	case err != nil:
		return APIToken{}, 0, fmt.Errorf("%w: read API token: %w", ErrUnavailable, err)
	}
	var t APIToken
	if err := json.Unmarshal(e.Value, &t); err != nil || t.ID != id {
		return APIToken{}, 0, fmt.Errorf("%w: stored API token %s is corrupt", ErrUnavailable, id)
	}
	return t, e.Version, nil
}

// Check verifies a bearer API token: well formed, known, its secret's hash
// equal (in constant time) to the stored one, not revoked, not expired by
// calibrated time. It returns the token's public view. Errors:
// ErrMalformedToken, ErrUnknownToken (unknown id or wrong secret: the
// message does not say which), ErrRevoked, ErrExpired, ErrNoTime,
// ErrUnavailable. A successful check records the last-used time at most
// once a minute per token (best effort: a failed write does not refuse the call).
func (a *APITokens) Check(ctx context.Context, bearer string) (APITokenInfo, error) {
	id, secret, err := parseAPIToken(bearer)
	if err != nil {
		return APITokenInfo{}, err
	}
	now, err := a.trustedNow()
	if err != nil {
		return APITokenInfo{}, err
	}
	t, v, err := a.get(ctx, id)
	if errors.Is(err, ErrUnknownToken) {
		return APITokenInfo{}, fmt.Errorf("%w: unknown API token or wrong secret", ErrUnknownToken)
	} else if err != nil {
		return APITokenInfo{}, err
	}
	h := sha256.Sum256([]byte(secret))
	if subtle.ConstantTimeCompare(h[:], t.SecretHash) != 1 {
		return APITokenInfo{}, fmt.Errorf("%w: unknown API token or wrong secret", ErrUnknownToken)
	}
	switch {
	case !t.RevokedAt.IsZero():
		return APITokenInfo{}, fmt.Errorf("%w: API token %s (%s) was revoked at %s by %s", ErrRevoked, t.Name, t.ID,
			t.RevokedAt.Format(time.RFC3339), t.RevokedBy)
	case !now.Before(t.ExpiresAt):
		return APITokenInfo{}, fmt.Errorf("%w: API token %s (%s) expired at %s", ErrExpired, t.Name, t.ID, t.ExpiresAt.Format(time.RFC3339))
	}
	a.touch(ctx, t, v, now)
	return t.Info(), nil
}

// touch writes t's last-used time when the last write is a minute old.
func (a *APITokens) touch(ctx context.Context, t APIToken, v int64, now time.Time) {
	a.mu.Lock()
	seen := a.lastSeen[t.ID]
	if seen.IsZero() {
		seen = t.LastUsedAt
	}
	due := now.Sub(seen) >= lastUsedEvery
	if due {
		a.lastSeen[t.ID] = now
		if len(a.lastSeen) > 100_000 { // bounded: forget, and write again next time
			clear(a.lastSeen)
		}
	}
	a.mu.Unlock()
	if !due {
		return
	}
	t.LastUsedAt = now
	if b, err := json.Marshal(t); err == nil {
		// A conflict means another replica or a revocation wrote it
		// meanwhile: theirs stands.
		_, _ = a.kv.Put(ctx, apiTokenKeyPrefix+t.ID, b, store.PutOptions{Check: true, Version: v})
	}
}

// Get returns one token's public view (ErrUnknownToken, ErrUnavailable).
func (a *APITokens) Get(ctx context.Context, id string) (APITokenInfo, error) {
	if !apiTokenIDRE.MatchString(id) {
		return APITokenInfo{}, fmt.Errorf("%w: API token id %q: want 20 lowercase hex digits", ErrInvalidArgument, clip(id))
	}
	t, _, err := a.get(ctx, id)
	return t.Info(), err
}

// Revoke revokes the token id on behalf of by; revoking a revoked token
// changes nothing and returns it. Errors: ErrInvalidArgument,
// ErrUnknownToken, ErrNoTime, ErrUnavailable.
func (a *APITokens) Revoke(ctx context.Context, id, by string) (APITokenInfo, error) {
	if !apiTokenIDRE.MatchString(id) {
		return APITokenInfo{}, fmt.Errorf("%w: API token id %q: want 20 lowercase hex digits", ErrInvalidArgument, clip(id))
	}
	now, err := a.trustedNow()
	if err != nil {
		return APITokenInfo{}, err
	}
	for range 10 { // bounded compare-and-set retries
		t, v, err := a.get(ctx, id)
		if err != nil {
			return APITokenInfo{}, err
		}
		if !t.RevokedAt.IsZero() {
			return t.Info(), nil
		}
		t.RevokedAt, t.RevokedBy = now, by
		b, err := json.Marshal(t)
		if err != nil {
			return APITokenInfo{}, err
		}
		_, err = a.kv.Put(ctx, apiTokenKeyPrefix+id, b, store.PutOptions{Check: true, Version: v})
		switch {
		case errors.Is(err, store.ErrVersionConflict):
			continue
		case err != nil:
			return APITokenInfo{}, fmt.Errorf("%w: revoke API token: %w", ErrUnavailable, err)
		}
		return t.Info(), nil
	}
	return APITokenInfo{}, fmt.Errorf("%w: revoke API token %s: too many concurrent changes", ErrUnavailable, id)
}

// List returns every token's public view, in id order.
func (a *APITokens) List(ctx context.Context) ([]APITokenInfo, error) {
	out := []APITokenInfo{}
	after := ""
	for range 10_000 { // bounded pages
		es, err := a.kv.List(ctx, store.ListOptions{Prefix: apiTokenKeyPrefix, After: after, Limit: store.DefaultLimit})
		if err != nil {
			return nil, fmt.Errorf("%w: list API tokens: %w", ErrUnavailable, err)
		}
		for _, e := range es {
			var t APIToken
			if json.Unmarshal(e.Value, &t) == nil {
				out = append(out, t.Info())
			}
		}
		if len(es) < store.DefaultLimit {
			break
		}
		after = es[len(es)-1].Key
	}
	return out, nil
}
