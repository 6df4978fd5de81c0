// Package enroll holds the core's side of agent enrollment. This file is
// the one-time enrollment tokens: `avon token create --group eng --ttl 1h`
// makes one, `avon-agent enroll --token T` spends it.
//
// A token is "avon-enroll-v1." followed by 32 random bytes from the core
// DRBG, base64url. The store keeps only its SHA-256 (the token id, also its
// JTI), so a copy of the database yields no usable token. Spending is a
// compare-and-set on the record, so across any number of core
// replicas sharing the store exactly one spender wins: the record (under
// enroll/token/<id>) moves to "used" with a compare-and-set on its version
// and stays, so a replay is told apart from an unknown token.
// Expiry is judged on calibrated time: with a stale calibration nothing is
// spent (fail closed).
package enroll

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
	"strings"
	"time"

	"github.com/avonzt/avon/core/store"
)

// TokenPrefix starts every enrollment token.
const TokenPrefix = "avon-enroll-v1."

const (
	tokenPrefixKey = "enroll/token/"
	// MaxTTL bounds a token's lifetime.
	MaxTTL = 30 * 24 * time.Hour
)

// Errors. Spend wraps exactly one of them (or a store/clock error).
var (
	ErrMalformed = errors.New("enroll: malformed token")
	ErrUnknown   = errors.New("enroll: unknown token")
	ErrUsed      = errors.New("enroll: token already used")
	ErrExpired   = errors.New("enroll: token expired")
	ErrInvalid   = errors.New("enroll: invalid request")
	// ErrVersionConflict: a conditional change of a record that changed
	// since it was read; nothing changed.
	ErrVersionConflict = errors.New("enroll: token record changed")
)

var groupRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// Token is what the store keeps about a token (never the token itself).
type Token struct {
	ID        string    `json:"id"` // hex SHA-256 of the token: its JTI
	Group     string    `json:"group"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	CreatedBy string    `json:"created_by,omitempty"`
	UsedAt    time.Time `json:"used_at,omitempty"`
	UsedBy    string    `json:"used_by,omitempty"`
}

// Tokens issues and spends enrollment tokens.
type Tokens struct {
	kv   store.KV
	rand io.Reader
	now  func() (time.Time, error) // calibrated time; an error fails closed
}

// NewTokens returns token operations over kv, with randomness from rand
// (the core DRBG) and time from now (the calibrated clock).
func NewTokens(kv store.KV, rand io.Reader, now func() (time.Time, error)) *Tokens {
	return &Tokens{kv: kv, rand: rand, now: now}
}

// tokenID returns the id of a token, or ErrMalformed.
func tokenID(token string) (string, error) {
	body, ok := strings.CutPrefix(token, TokenPrefix)
	if !ok {
		return "", fmt.Errorf("%w: does not start with %q", ErrMalformed, TokenPrefix)
	}
	raw, err := base64.RawURLEncoding.DecodeString(body)
	if err != nil || len(raw) != 32 {
		return "", fmt.Errorf("%w: want 32 base64url bytes after the prefix", ErrMalformed)
	}
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:]), nil
}

// Create makes a token for group valid for ttl and returns it with its
// record. The token is shown once; only its hash is stored.
func (t *Tokens) Create(ctx context.Context, group string, ttl time.Duration, createdBy string) (string, Token, error) {
	if !groupRE.MatchString(group) {
		return "", Token{}, fmt.Errorf("%w: group %q: want 1 to 64 of a-z 0-9 . _ - starting with a letter or digit", ErrInvalid, group)
	}
	if ttl <= 0 || ttl > MaxTTL {
		return "", Token{}, fmt.Errorf("%w: ttl %s: want more than 0 and at most %s", ErrInvalid, ttl, MaxTTL)
	}
	now, err := t.now()
	if err != nil {
		return "", Token{}, fmt.Errorf("enroll: no trusted time: %w", err)
	}
	raw := make([]byte, 32)
	if _, err := io.ReadFull(t.rand, raw); err != nil {
		return "", Token{}, fmt.Errorf("enroll: randomness: %w", err)
	}
	token := TokenPrefix + base64.RawURLEncoding.EncodeToString(raw)
	clear(raw)
	id, _ := tokenID(token)
	rec := Token{ID: id, Group: group, CreatedAt: now.UTC(), ExpiresAt: now.Add(ttl).UTC(), CreatedBy: createdBy}
	b, _ := json.Marshal(rec)
	if _, err := t.kv.Put(ctx, tokenPrefixKey+id, b, store.PutOptions{Check: true}); err != nil {
		return "", Token{}, fmt.Errorf("enroll: store token: %w", err)
	}
	return token, rec, nil
}

// Spend consumes token once and returns its record: of concurrent spenders
// across all replicas exactly one succeeds. usedBy names the spender (the
// agent's key fingerprint, say).
func (t *Tokens) Spend(ctx context.Context, token, usedBy string) (Token, error) {
	id, err := tokenID(token)
	if err != nil {
		return Token{}, err
	}
	now, err := t.now()
	if err != nil {
		return Token{}, fmt.Errorf("enroll: no trusted time: %w", err)
	}
	e, err := t.kv.Get(ctx, tokenPrefixKey+id)
	if errors.Is(err, store.ErrNotFound) {
		return Token{}, ErrUnknown
	}
	if err != nil {
		return Token{}, fmt.Errorf("enroll: read token: %w", err)
	}
	var rec Token
	if err := json.Unmarshal(e.Value, &rec); err != nil || subtle.ConstantTimeCompare([]byte(rec.ID), []byte(id)) != 1 {
		return Token{}, fmt.Errorf("enroll: token record %.12s… is corrupt", id)
	}
	if !rec.UsedAt.IsZero() {
		return Token{}, fmt.Errorf("%w at %s (id %.12s…)", ErrUsed, rec.UsedAt.Format(time.RFC3339), id)
	}
	if !now.Before(rec.ExpiresAt) {
		return Token{}, fmt.Errorf("%w at %s", ErrExpired, rec.ExpiresAt.Format(time.RFC3339))
	}
	// The spend: whoever moves this version of the record to "used" wins.
	rec.UsedAt, rec.UsedBy = now.UTC(), usedBy
	b, _ := json.Marshal(rec)
	if _, err := t.kv.Put(ctx, tokenPrefixKey+id, b, store.PutOptions{Check: true, Version: e.Version}); err != nil {
		if errors.Is(err, store.ErrVersionConflict) {
			return Token{}, fmt.Errorf("%w (id %.12s…)", ErrUsed, id)
		}
		return Token{}, fmt.Errorf("enroll: spend token: %w", err)
	}
	return rec, nil
}

// List returns the unspent tokens (expired ones included, marked by their
// ExpiresAt) among the first limit records.
func (t *Tokens) List(ctx context.Context, limit int) ([]Token, error) {
	es, err := t.kv.List(ctx, store.ListOptions{Prefix: tokenPrefixKey, Limit: limit})
	if err != nil {
		return nil, fmt.Errorf("enroll: list tokens: %w", err)
	}
	out := make([]Token, 0, len(es))
	for _, e := range es {
		var rec Token
		if json.Unmarshal(e.Value, &rec) == nil && rec.UsedAt.IsZero() {
			out = append(out, rec)
		}
	}
	return out, nil
}

// Revoke deletes an unspent token by id.
func (t *Tokens) Revoke(ctx context.Context, id string) error {
	if _, err := hex.DecodeString(id); err != nil || len(id) != 64 {
		return fmt.Errorf("%w: token id %q: want 64 hex digits", ErrInvalid, id)
	}
	e, err := t.kv.Get(ctx, tokenPrefixKey+id)
	if errors.Is(err, store.ErrNotFound) {
		return ErrUnknown
	}
	if err != nil {
		return fmt.Errorf("enroll: read token: %w", err)
	}
	var rec Token
	if json.Unmarshal(e.Value, &rec) == nil && !rec.UsedAt.IsZero() {
		return fmt.Errorf("%w: already used; nothing to revoke", ErrUsed)
	}
	if err := t.kv.Delete(ctx, tokenPrefixKey+id, store.DeleteOptions{Check: true, Version: e.Version}); err != nil {
		if errors.Is(err, store.ErrVersionConflict) {
			return fmt.Errorf("%w: spent while being revoked", ErrUsed)
		}
		return fmt.Errorf("enroll: revoke token: %w", err)
	}
	return nil
}

// TokenEntry is a token record and its store version (its ETag).
type TokenEntry struct {
	Token
	Version int64 `json:"-"`
}

// validID checks a token id: 64 lowercase hex digits.
func validID(id string) bool {
	if len(id) != 64 {
		return false
	}
	for _, c := range id {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// Get returns the record of token id. Errors: ErrInvalid, ErrUnknown.
func (t *Tokens) Get(ctx context.Context, id string) (TokenEntry, error) {
	if !validID(id) {
		return TokenEntry{}, fmt.Errorf("%w: token id %.80q: want 64 hex digits", ErrInvalid, id)
	}
	e, err := t.kv.Get(ctx, tokenPrefixKey+id)
	if errors.Is(err, store.ErrNotFound) {
		return TokenEntry{}, ErrUnknown
	}
	if err != nil {
		return TokenEntry{}, fmt.Errorf("enroll: read token: %w", err)
	}
	var rec Token
	if err := json.Unmarshal(e.Value, &rec); err != nil || rec.ID != id {
		return TokenEntry{}, fmt.Errorf("enroll: token record %.12s… is corrupt", id)
	}
	return TokenEntry{Token: rec, Version: e.Version}, nil
}

// Page returns up to limit token records (spent ones too when withUsed)
// with ids after after, in id order, and whether more may follow.
func (t *Tokens) Page(ctx context.Context, after string, limit int, withUsed bool) ([]TokenEntry, bool, error) {
	if after != "" && !validID(after) {
		return nil, false, fmt.Errorf("%w: position %.80q", ErrInvalid, after)
	}
	if limit < 1 || limit > store.MaxLimit {
		return nil, false, fmt.Errorf("%w: limit %d", ErrInvalid, limit)
	}
	var out []TokenEntry
	cursor := ""
	if after != "" {
		cursor = tokenPrefixKey + after
	}
	// Every round moves cursor forward through a finite keyspace.
	for {
		es, err := t.kv.List(ctx, store.ListOptions{Prefix: tokenPrefixKey, After: cursor, Limit: 500})
		if err != nil {
			return nil, false, fmt.Errorf("enroll: list tokens: %w", err)
		}
		for _, e := range es {
			cursor = e.Key
			var rec Token
			if json.Unmarshal(e.Value, &rec) != nil || (!withUsed && !rec.UsedAt.IsZero()) {
				continue
			}
			if len(out) == limit {
				return out, true, nil
			}
			out = append(out, TokenEntry{Token: rec, Version: e.Version})
		}
		if len(es) < 500 {
			return out, false, nil
		}
	}
}

// RevokeAt deletes unspent token id provided its record is still at
// version. Errors: ErrInvalid, ErrUnknown, ErrUsed, ErrVersionConflict.
func (t *Tokens) RevokeAt(ctx context.Context, id string, version int64) error {
	cur, err := t.Get(ctx, id)
	if err != nil {
		return err
	}
	if cur.Version != version {
		return fmt.Errorf("%w: token %.12s… changed", ErrVersionConflict, id)
	}
	if !cur.UsedAt.IsZero() {
		return fmt.Errorf("%w: already used; nothing to revoke", ErrUsed)
	}
	if err := t.kv.Delete(ctx, tokenPrefixKey+id, store.DeleteOptions{Check: true, Version: version}); err != nil {
		if errors.Is(err, store.ErrVersionConflict) {
			return fmt.Errorf("%w: token %.12s… changed", ErrVersionConflict, id)
		}
		return fmt.Errorf("enroll: revoke token: %w", err)
	}
	return nil
}
