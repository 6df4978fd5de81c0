package oauth

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/avonzt/avon/core/store"
)

// RefreshPrefix starts every refresh token.
const RefreshPrefix = "avon-rt-v1."

const (
	grantPrefix   = "oauth/grant/"
	refreshPrefix = "oauth/refresh/"
)

// Grant is one login: the family of refresh tokens rotated from it and the
// access tokens issued under it (their sid). Revoking it ends them all.
// Stored under oauth/grant/<id>.
type Grant struct {
	ID         string    `json:"id"`
	User       string    `json:"user"`
	ClientID   string    `json:"client_id"`
	Scope      string    `json:"scope"`
	CreatedAt  time.Time `json:"created_at"`
	ExpiresAt  time.Time `json:"expires_at"` // absolute: refresh_ttl after login
	Generation int       `json:"generation"` // of the current refresh token
	RevokedAt  time.Time `json:"revoked_at,omitzero"`
	Reason     string    `json:"reason,omitempty"`
}

// refreshRecord is what the store keeps of a refresh token: never the
// token, only its SHA-256 (the key, oauth/refresh/<hex>).
type refreshRecord struct {
	Grant      string    `json:"grant"`
	Generation int       `json:"generation"`
	IssuedAt   time.Time `json:"issued_at"`
	ExpiresAt  time.Time `json:"expires_at"`
	UsedAt     time.Time `json:"used_at,omitzero"`
}

// grants keeps grants and refresh tokens in the store.
type grants struct {
	kv   store.KV
	rand io.Reader
}

func (g *grants) random(n int) ([]byte, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(g.rand, b); err != nil {
		return nil, fmt.Errorf("%w: randomness: %w", ErrUnavailable, err)
	}
	return b, nil
}

// refreshID returns the store id of a refresh token, or ErrInvalidGrant
// for a string that is not one.
func refreshID(token string) (string, error) {
	body, ok := strings.CutPrefix(token, RefreshPrefix)
	if !ok {
		return "", fmt.Errorf("%w: not a refresh token", ErrInvalidGrant)
	}
	raw, err := b64.DecodeString(body)
	if err != nil || len(raw) != 32 {
		return "", fmt.Errorf("%w: malformed refresh token", ErrInvalidGrant)
	}
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:]), nil
}

func (g *grants) newRefresh() (token, id string, err error) {
	raw, err := g.random(32)
	if err != nil {
		return "", "", err
	}
	token = RefreshPrefix + base64.RawURLEncoding.EncodeToString(raw)
	clear(raw)
	id, _ = refreshID(token)
	return token, id, nil
}

// apply writes ops atomically when the store can, else one by one (the
// first op is always the one that decides: a create or a compare-and-set).
func (g *grants) apply(ctx context.Context, ops []store.Op) error {
	if b, ok := g.kv.(store.Batcher); ok {
		_, err := b.Apply(ctx, ops)
		return err
	}
	for _, op := range ops {
		if _, err := g.kv.Put(ctx, op.Key, op.Value, store.PutOptions{Check: op.Check, Version: op.Version}); err != nil {
			return err
		}
	}
	return nil
}

// create starts a grant and returns it with its first refresh token.
func (g *grants) create(ctx context.Context, user, client, scope string, now time.Time, ttl time.Duration) (Grant, string, error) {
	idb, err := g.random(16)
	if err != nil {
		return Grant{}, "", err
	}
	gr := Grant{ID: hex.EncodeToString(idb), User: user, ClientID: client, Scope: scope, CreatedAt: now.UTC(),
		ExpiresAt: now.Add(ttl).UTC(), Generation: 1}
	tok, rid, err := g.newRefresh()
	if err != nil {
		return Grant{}, "", err
	}
	gb, _ := json.Marshal(gr)
	rb, _ := json.Marshal(refreshRecord{Grant: gr.ID, Generation: 1, IssuedAt: now.UTC(), ExpiresAt: gr.ExpiresAt})
	if err := g.apply(ctx, []store.Op{
		{Key: grantPrefix + gr.ID, Value: gb, Check: true},
		{Key: refreshPrefix + rid, Value: rb, Check: true},
	}); err != nil {
		return Grant{}, "", fmt.Errorf("%w: store grant: %w", ErrUnavailable, err)
	}
	return gr, tok, nil
}

// get reads a grant and its version.
func (g *grants) get(ctx context.Context, id string) (Grant, int64, error) {
	if len(id) != 32 {
		return Grant{}, 0, fmt.Errorf("%w: unknown grant", ErrRevoked)
	}
	if _, err := hex.DecodeString(id); err != nil {
		return Grant{}, 0, fmt.Errorf("%w: unknown grant", ErrRevoked)
	}
	e, err := g.kv.Get(ctx, grantPrefix+id)
	if errors.Is(err, store.ErrNotFound) {
		return Grant{}, 0, fmt.Errorf("%w: unknown grant", ErrRevoked)
	}
	if err != nil {
		return Grant{}, 0, fmt.Errorf("%w: read grant: %w", ErrUnavailable, err)
	}
	var gr Grant
	if err := json.Unmarshal(e.Value, &gr); err != nil || gr.ID != id {
		return Grant{}, 0, fmt.Errorf("%w: grant record %s is corrupt", ErrUnavailable, id)
	}
	return gr, e.Version, nil
}

// active returns the grant when it is neither revoked nor past its
// absolute expiry at now.
func (g *grants) active(ctx context.Context, id string, now time.Time) (Grant, error) {
	gr, _, err := g.get(ctx, id)
	if err != nil {
		return Grant{}, err
	}
	if !gr.RevokedAt.IsZero() {
		return gr, fmt.Errorf("%w at %s (%s)", ErrRevoked, gr.RevokedAt.Format(time.RFC3339), gr.Reason)
	}
	if !now.Before(gr.ExpiresAt) {
		return gr, fmt.Errorf("%w: grant expired at %s", ErrRevoked, gr.ExpiresAt.Format(time.RFC3339))
	}
	return gr, nil
}

// revoke marks a grant revoked (idempotent: the first reason stays).
func (g *grants) revoke(ctx context.Context, id, reason string, now time.Time) (Grant, error) {
	for range 5 {
		gr, v, err := g.get(ctx, id)
		if err != nil {
			return Grant{}, err
		}
		if !gr.RevokedAt.IsZero() {
			return gr, nil
		}
		gr.RevokedAt, gr.Reason = now.UTC(), reason
		b, _ := json.Marshal(gr)
		_, err = g.kv.Put(ctx, grantPrefix+id, b, store.PutOptions{Check: true, Version: v})
		if errors.Is(err, store.ErrVersionConflict) {
			continue
		}
		if err != nil {
			return Grant{}, fmt.Errorf("%w: revoke grant: %w", ErrUnavailable, err)
		}
		return gr, nil
	}
	return Grant{}, fmt.Errorf("%w: grant %s changed concurrently", ErrUnavailable, id)
}

// lookupRefresh returns a refresh token's record and version.
func (g *grants) lookupRefresh(ctx context.Context, token string) (string, refreshRecord, int64, error) {
	id, err := refreshID(token)
	if err != nil {
		return "", refreshRecord{}, 0, err
	}
	e, err := g.kv.Get(ctx, refreshPrefix+id)
	if errors.Is(err, store.ErrNotFound) {
		return "", refreshRecord{}, 0, fmt.Errorf("%w: unknown refresh token", ErrInvalidGrant)
	}
	if err != nil {
		return "", refreshRecord{}, 0, fmt.Errorf("%w: read refresh token: %w", ErrUnavailable, err)
	}
	var rec refreshRecord
	if err := json.Unmarshal(e.Value, &rec); err != nil {
		return "", refreshRecord{}, 0, fmt.Errorf("%w: refresh record is corrupt", ErrUnavailable)
	}
	return id, rec, e.Version, nil
}

// rotate spends a refresh token and returns its grant and the next token.
// A token that was already spent revokes the whole grant and fails with
// ErrRefreshReuse (and the revoked grant, for the audit record); of two
// concurrent spends of one token at most one succeeds, and the other is
// reuse.
func (g *grants) rotate(ctx context.Context, token, client string, now time.Time) (Grant, string, error) {
	for range 5 {
		id, rec, rv, err := g.lookupRefresh(ctx, token)
		if err != nil {
			return Grant{}, "", err
		}
		gr, gv, err := g.get(ctx, rec.Grant)
		if err != nil {
			if errors.Is(err, ErrRevoked) {
				return Grant{}, "", fmt.Errorf("%w: %w", ErrInvalidGrant, err)
			}
			return Grant{}, "", err
		}
		if gr.ClientID != client {
			return Grant{}, "", fmt.Errorf("%w: refresh token issued to another client", ErrInvalidGrant)
		}
		if !gr.RevokedAt.IsZero() {
			return gr, "", fmt.Errorf("%w: grant revoked (%s)", ErrInvalidGrant, gr.Reason)
		}
		if !rec.UsedAt.IsZero() || rec.Generation != gr.Generation {
			rg, err := g.revoke(ctx, gr.ID, "refresh token reused", now)
			if err != nil {
				return gr, "", err
			}
			return rg, "", fmt.Errorf("%w: %w", ErrInvalidGrant, ErrRefreshReuse)
		}
		if !now.Before(rec.ExpiresAt) || !now.Before(gr.ExpiresAt) {
			return gr, "", fmt.Errorf("%w: refresh token expired", ErrInvalidGrant)
		}
		next, nid, err := g.newRefresh()
		if err != nil {
			return Grant{}, "", err
		}
		rec.UsedAt = now.UTC()
		gr.Generation++
		nb, _ := json.Marshal(refreshRecord{Grant: gr.ID, Generation: gr.Generation, IssuedAt: now.UTC(), ExpiresAt: gr.ExpiresAt})
		rb, _ := json.Marshal(rec)
		gb, _ := json.Marshal(gr)
		err = g.apply(ctx, []store.Op{
			{Key: refreshPrefix + id, Value: rb, Check: true, Version: rv}, // the spend
			{Key: grantPrefix + gr.ID, Value: gb, Check: true, Version: gv},
			{Key: refreshPrefix + nid, Value: nb, Check: true},
		})
		if errors.Is(err, store.ErrVersionConflict) {
			continue // spent or revoked meanwhile: look again
		}
		if err != nil {
			return Grant{}, "", fmt.Errorf("%w: rotate refresh token: %w", ErrUnavailable, err)
		}
		return gr, next, nil
	}
	return Grant{}, "", fmt.Errorf("%w: refresh token contended", ErrUnavailable)
}
