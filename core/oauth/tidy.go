package oauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/avonzt/avon/core/store"
)

// What Tidy keeps after it can no longer matter.
const (
	// grantGrace: a grant and its refresh records are deleted this long
	// after the grant's absolute expiry. No token of the grant is valid by
	// then (refresh tokens end with the grant, access tokens long before),
	// so neither its revocation nor reuse detection has anything left to
	// refuse.
	grantGrace = 24 * time.Hour
	// apiTokenRetention: a revoked or expired API token stays listed this
	// long (for operators reading what happened), then is deleted; the
	// audit log keeps its history.
	apiTokenRetention = 30 * 24 * time.Hour
	// tidyPage is how many records one List reads.
	tidyPage = 500
)

// TidyReport says what one Tidy pass deleted.
type TidyReport struct {
	Grants, RefreshTokens, APITokens int
	// More: the pass stopped at its budget with records left to examine.
	More bool
}

// Tidy deletes, in one bounded pass (at most budget records examined),
// the stored records of operator login that can no longer matter: grants
// and refresh records past their expiry plus a day, and API tokens revoked
// or expired more than 30 days ago. Deletes are conditional on the version
// read, so a replica tidying at the same time, or a change in between,
// costs nothing but a skipped record. Without trusted time it does nothing
// (ErrNoTime).
func (s *Server) Tidy(ctx context.Context, budget int) (TidyReport, error) {
	var rep TidyReport
	now, err := s.now()
	if err != nil {
		return rep, err
	}
	left := budget
	sweep := func(prefix string, dead func(b []byte) bool, n *int) error {
		after := ""
		for left > 0 {
			es, err := s.deps.KV.List(ctx, store.ListOptions{Prefix: prefix, After: after, Limit: min(tidyPage, left)})
			if err != nil {
				return fmt.Errorf("%w: tidy %s: %w", ErrUnavailable, prefix, err)
			}
			for _, e := range es {
				left--
				if !dead(e.Value) {
					continue
				}
				err := s.deps.KV.Delete(ctx, e.Key, store.DeleteOptions{Check: true, Version: e.Version})
				switch {
				case err == nil:
					*n++
				case errors.Is(err, store.ErrVersionConflict), errors.Is(err, store.ErrNotFound):
				default:
					return fmt.Errorf("%w: tidy %s: %w", ErrUnavailable, e.Key, err)
				}
			}
			if len(es) < min(tidyPage, left+len(es)) {
				return nil
			}
			after = es[len(es)-1].Key
		}
		rep.More = true
		return nil
	}
	if err := sweep(grantPrefix, func(b []byte) bool {
		var g Grant
		return json.Unmarshal(b, &g) == nil && now.After(g.ExpiresAt.Add(grantGrace))
	}, &rep.Grants); err != nil {
		return rep, err
	}
	if err := sweep(refreshPrefix, func(b []byte) bool {
		var r refreshRecord
		return json.Unmarshal(b, &r) == nil && now.After(r.ExpiresAt.Add(grantGrace))
	}, &rep.RefreshTokens); err != nil {
		return rep, err
	}
	err = sweep(apiTokenKeyPrefix, func(b []byte) bool {
		var t APIToken
		if json.Unmarshal(b, &t) != nil {
			return false
		}
		end := t.ExpiresAt
		if !t.RevokedAt.IsZero() && t.RevokedAt.Before(end) {
			end = t.RevokedAt
		}
		return now.After(end.Add(apiTokenRetention))
	}, &rep.APITokens)
	return rep, err
}
