package ca

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"

	sdkca "github.com/avonzt/avon/sdk/ca"
	"github.com/avonzt/avon/sdk/host"
)

// The issuers change only when the hierarchy is created (Init,
// Initialize), rotated (RotateIssuer) or cross-certified (ensureCross).
// Every such write of an issuers/ or cross/ record is followed by a write of
// epochKey (the cross/ records one ensureCross makes by one write, after
// the last); storage versions strictly increase and are never reused, so
// the key's version names the state of the issuer records. An engine keeps
// the version it last loaded (Engine.epoch) with its in-memory issuers and
// its prepared ListIssuers answer: a ListIssuers reads that one small key
// and answers from memory while the version is unchanged, and reloads the
// records when another replica (or this one) changed them. The version is
// read before the records, so what is loaded is never older than the
// version recorded with it.
const epochKey = "issuers-epoch"

// readEpoch returns epochKey's version: 0 while it has never been written
// (a CA made before it existed, or none yet).
func (e *Engine) readEpoch(ctx context.Context) (int64, error) {
	en, err := e.st.Get(ctx, epochKey)
	if errors.Is(err, host.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("issuers epoch: %w", err)
	}
	return en.Version, nil
}

// bumpEpoch tells every engine on this storage that issuer or
// cross-certificate records changed; call it after the records are stored.
// what names the change, for someone reading the store. When nobody moved
// the epoch since this engine loaded (a compare-and-set from its version
// succeeds), the engine takes the new version as its own: the change is
// its own, and the caller loads or attaches it (ensureCross does; a
// concurrent activate resets crossDone, so a missed record is attached at
// the next ListIssuers). Otherwise the engine keeps its version and
// reloads at its next ListIssuers.
func (e *Engine) bumpEpoch(ctx context.Context, what string) error {
	e.mu.RLock()
	v := e.epoch
	e.mu.RUnlock()
	nv, err := e.st.Put(ctx, epochKey, []byte(what), host.PutOptions{Check: true, Version: v})
	if err == nil {
		e.mu.Lock()
		if e.epoch == v {
			e.epoch = nv
		}
		e.mu.Unlock()
		return nil
	}
	if !errors.Is(err, host.ErrVersionConflict) {
		return fmt.Errorf("issuers epoch: %w", err)
	}
	if _, err := e.st.Put(ctx, epochKey, []byte(what), host.PutOptions{}); err != nil {
		return fmt.Errorf("issuers epoch: %w", err)
	}
	return nil
}

// load reads the epoch, then the issuer records, and activates them (their
// cross-certificates included).
func (e *Engine) load(ctx context.Context) error {
	v, err := e.readEpoch(ctx)
	if err != nil {
		return err
	}
	recs, err := e.loadIssuers(ctx)
	if err != nil {
		return err
	}
	return e.activateAt(ctx, recs, v)
}

// activateAt is activate recording v as the epoch of what it loaded.
func (e *Engine) activateAt(ctx context.Context, recs []issuerRecord, v int64) error {
	if err := e.activate(ctx, recs); err != nil {
		return err
	}
	e.mu.Lock()
	e.epoch = v
	e.mu.Unlock()
	return nil
}

// refresh reloads the issuers when the stored epoch is not the one loaded.
// An engine without a hierarchy loads nothing here: Init and Initialize
// do that.
func (e *Engine) refresh(ctx context.Context) error {
	v, err := e.readEpoch(ctx)
	if err != nil {
		return err
	}
	e.mu.RLock()
	same, n := v == e.epoch, len(e.issuers)
	e.mu.RUnlock()
	if same || n == 0 {
		return nil
	}
	e.reloadMu.Lock()
	defer e.reloadMu.Unlock()
	e.mu.RLock()
	same = v == e.epoch
	e.mu.RUnlock()
	if same {
		return nil // another call loaded it meanwhile
	}
	recs, err := e.loadIssuers(ctx)
	if err != nil {
		return err
	}
	return e.activateAt(ctx, recs, v)
}

// listingLocked returns the ListIssuers answer, building it once per
// change of the issuers. Caller must hold e.mu for writing.
func (e *Engine) listingLocked() []sdkca.Issuer {
	if e.listed != nil {
		return e.listed
	}
	out := make([]sdkca.Issuer, 0, len(e.issuers))
	for _, is := range e.issuers {
		out = append(out, sdkca.Issuer{Name: e.publicNameLocked(is), Algorithm: is.rec.Algorithm, Certificate: is.rec.DER, Default: is.rec.Default,
			Family: is.rec.family(), Generation: is.rec.generation(), Active: e.active[is.rec.family()] == is, KMS: is.rec.KMS,
			Chain: is.chain, AlternateChains: is.alternates})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Family != out[j].Family {
			return out[i].Family < out[j].Family
		}
		return out[i].Generation < out[j].Generation
	})
	e.listed = out
	return out
}

// ListIssuers returns the issuers: from memory, after one read of the
// epoch key (see epochKey). The certificates and chains in the answer are
// shared with the engine and must not be modified.
func (e *Engine) ListIssuers(ctx context.Context, _ *sdkca.ListIssuersRequest) (*sdkca.ListIssuersResponse, error) {
	if err := e.refresh(ctx); err != nil {
		return nil, err
	}
	e.mu.RLock()
	pending := len(e.issuers) > 0 && !e.crossDone
	e.mu.RUnlock()
	if pending {
		// Missing cross-certificates are made here; without trusted
		// time (or on a store error) the issuers are listed without
		// them and the next call tries again.
		_, _ = e.ensureCross(ctx)
	}
	e.mu.RLock()
	out := slices.Clone(e.listed)
	e.mu.RUnlock()
	if out == nil {
		e.mu.Lock()
		out = slices.Clone(e.listingLocked())
		e.mu.Unlock()
	}
	return &sdkca.ListIssuersResponse{Issuers: out}, nil
}
