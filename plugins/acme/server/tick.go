package server

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/avonzt/avon/sdk/host"
)

// Clean-up of expired objects (RFC 8555 7.1.6). Reads already show an
// expired pending or ready order as invalid and an expired authorization
// as expired; Tick writes that down and, once an invalid order has been
// expired for Config.Retention, deletes it with its authorizations and its
// entry in the account's order list. Valid orders, their authorizations
// and certificates are never touched, nor is an order being finalized
// (processing): finalization owns it.
//
// Each Tick examines at most Config.SweepBatch orders, resuming after the
// last one it examined, so storage of any size is covered in bounded
// steps; a replica's cursor is its own, and every change is a conditional
// put or delete on the version read, so replicas sweeping at once skip,
// never undo, each other's (or a client's) changes.

// Defaults of the clean-up.
const (
	DefaultRetention  = 7 * 24 * time.Hour
	DefaultSweepBatch = 200
	maxSweepBatch     = 10000
)

// TickResult counts what one Tick did.
type TickResult struct {
	Examined    int  // orders read
	Invalidated int  // expired orders marked invalid
	Expired     int  // authorizations marked expired
	Deleted     int  // orders deleted with their authorizations
	Wrapped     bool // the sweep reached the end of the orders
}

// Now is the calibrated time; it fails closed (ErrNotCalibrated).
func (s *Server) Now(ctx context.Context) (time.Time, error) { return s.clock(ctx) }

// Tick runs one bounded step of the clean-up at now (the calibrated time).
// A Tick that finds another one running returns at once with nothing done.
func (s *Server) Tick(ctx context.Context, now time.Time) (TickResult, error) {
	var res TickResult
	if !s.sweep.mu.TryLock() {
		return res, nil
	}
	defer s.sweep.mu.Unlock()
	es, err := s.deps.Storage.List(ctx, host.ListOptions{Prefix: pfxOrder, After: s.sweep.after, Limit: s.cfg.SweepBatch})
	if err != nil {
		return res, fmt.Errorf("list orders: %w", err)
	}
	if len(es) < s.cfg.SweepBatch {
		s.sweep.after, res.Wrapped = "", true
	} else {
		s.sweep.after = es[len(es)-1].Key
	}
	for _, en := range es {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		res.Examined++
		var o Order
		if err := json.Unmarshal(en.Value, &o); err != nil {
			s.deps.Log.Warn("stored order does not parse; left alone", "key", en.Key, "error", err)
			continue
		}
		switch {
		case (o.Status == StatusPending || o.Status == StatusReady) && !now.Before(o.Expires):
			n, err := s.expireOrder(ctx, now, &o, en.Version)
			if err != nil {
				return res, err
			}
			if n >= 0 {
				res.Invalidated++
				res.Expired += n
			}
		case o.Status == StatusInvalid && !now.Before(o.Expires.Add(s.cfg.Retention)):
			ok, err := s.deleteOrder(ctx, &o, en.Version)
			if err != nil {
				return res, err
			}
			if ok {
				res.Deleted++
			}
		}
	}
	if res.Invalidated+res.Deleted > 0 {
		s.deps.Log.Info("expired acme orders cleaned up", "examined", res.Examined, "invalidated", res.Invalidated,
			"authz_expired", res.Expired, "deleted", res.Deleted)
		if err := s.deps.Audit(ctx, host.Event{Action: "acme.sweep", Target: "orders", Outcome: "success",
			Fields: map[string]string{"invalidated": fmt.Sprint(res.Invalidated), "authz_expired": fmt.Sprint(res.Expired),
				"deleted": fmt.Sprint(res.Deleted)}}); err != nil {
			return res, fmt.Errorf("audit: %w", err)
		}
	}
	return res, nil
}

// expireOrder marks an expired order invalid, then its expired pending or
// valid authorizations expired. It returns how many authorizations it
// marked, or -1 when the order changed meanwhile (left for the next sweep).
func (s *Server) expireOrder(ctx context.Context, now time.Time, o *Order, version int64) (int, error) {
	o.Status = StatusInvalid
	if _, err := putJSON(ctx, s.deps.Storage, pfxOrder+o.ID, o, true, version); err != nil {
		if isConflict(err) {
			return -1, nil
		}
		return 0, fmt.Errorf("invalidate order %s: %w", o.ID, err)
	}
	n := 0
	for _, id := range o.AuthzIDs {
		var a Authz
		ver, err := getJSON(ctx, s.deps.Storage, pfxAuthz+id, &a)
		if isNotFound(err) {
			continue
		}
		if err != nil {
			return n, fmt.Errorf("load authorization %s: %w", id, err)
		}
		if (a.Status != StatusPending && a.Status != StatusValid) || now.Before(a.Expires) {
			continue
		}
		a.Status = StatusExpired
		if _, err := putJSON(ctx, s.deps.Storage, pfxAuthz+id, &a, true, ver); err != nil {
			if isConflict(err) {
				continue
			}
			return n, fmt.Errorf("expire authorization %s: %w", id, err)
		}
		n++
	}
	return n, nil
}

// deleteOrder deletes an invalid order past its retention: its
// authorizations, its entry in the account's list, then the order (only
// if unchanged since read). It reports whether the order was deleted.
func (s *Server) deleteOrder(ctx context.Context, o *Order, version int64) (bool, error) {
	for _, id := range o.AuthzIDs {
		if !validID(id) || strings.Contains(id, "/") {
			continue
		}
		if err := s.deps.Storage.Delete(ctx, pfxAuthz+id, host.DeleteOptions{}); err != nil {
			return false, fmt.Errorf("delete authorization %s: %w", id, err)
		}
	}
	if err := s.deps.Storage.Delete(ctx, "acctorder/"+o.AccountID+"/"+o.ID, host.DeleteOptions{}); err != nil {
		return false, fmt.Errorf("delete order index %s: %w", o.ID, err)
	}
	if err := s.deps.Storage.Delete(ctx, pfxOrder+o.ID, host.DeleteOptions{Check: true, Version: version}); err != nil {
		if isConflict(err) || isNotFound(err) {
			return false, nil
		}
		return false, fmt.Errorf("delete order %s: %w", o.ID, err)
	}
	return true, nil
}
