package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/avonzt/avon/core/cache"
	"github.com/avonzt/avon/core/config"
	"github.com/avonzt/avon/core/gateway"
	"github.com/avonzt/avon/core/store"
)

// Several core replicas share the store and the cache. Each one's gateway
// holds its own tunnel sessions in memory; what an operator asks of any
// replica (GET /v1/sessions) covers all of them:
//
//   - Every replica names itself in the store (replicas/<origin>, refreshed
//     every replicaRefresh) and publishes the rows of its live sessions in
//     the cache (session records replica-sessions/<origin>/<chunk>),
//     rewritten at every pulse interval with a TTL of a few intervals. A
//     replica that stops cleanly removes both; one that dies has its rows
//     expire with the TTL, and its name is pruned from the store once it
//     has not been refreshed for replicaForget.
//   - A listing reads this replica's sessions live and every other named
//     replica's rows from the cache; a replica without rows is skipped.
//   - Kill records (sessions/killed/<id>) matter only while the killed
//     session can still be live somewhere: a gateway ends every session at
//     gateway.MaxSessionAge, so a record older than that (plus a margin for
//     clock differences between replicas) is pruned.

const (
	replicasPrefix        = "replicas/"
	replicaSessionsName   = "replica-sessions/"
	replicaChunk          = 1000 // sessions per cache record (well under cache.MaxValueSize)
	replicaMaxChunks      = 1000 // at most this many records per replica are read
	replicaRefresh        = 5 * time.Minute
	replicaForget         = 3 * replicaRefresh
	minReplicaRowsTTL     = 5 * time.Second
	killRecordMargin      = time.Hour
	pruneEvery            = 10 * time.Minute
	replicaPublishTimeout = 5 * time.Second
)

// KillRecordMaxAge is how long a kill record is kept: past it the killed
// session has ended by its age limit on every replica.
const KillRecordMaxAge = gateway.MaxSessionAge + killRecordMargin

// replicaRecord is what replicas/<origin> holds.
type replicaRecord struct {
	Origin  string    `json:"origin"`
	Gateway string    `json:"gateway,omitempty"` // the gateway's endpoint
	Started time.Time `json:"started"`
	Seen    time.Time `json:"seen"`
}

// replicaRows is one cache record of a replica's live sessions. Chunk 0
// says how many chunks there are.
type replicaRows struct {
	Chunks   int           `json:"chunks"`
	Updated  time.Time     `json:"updated"`
	Sessions []SessionInfo `json:"sessions"`
}

// rowsName is the cache session name of a replica's chunk i.
func rowsName(origin string, i int) string {
	return replicaSessionsName + origin + "/" + strconv.Itoa(i)
}

// chunkRows splits rows into the records to publish (at least one, so an
// empty replica still says it has no sessions).
func chunkRows(rows []SessionInfo, now time.Time) []replicaRows {
	n := max(1, (len(rows)+replicaChunk-1)/replicaChunk)
	n = min(n, replicaMaxChunks)
	out := make([]replicaRows, n)
	for i := range out {
		lo, hi := min(i*replicaChunk, len(rows)), min((i+1)*replicaChunk, len(rows))
		out[i] = replicaRows{Chunks: n, Updated: now.UTC(), Sessions: rows[lo:hi]}
	}
	return out
}

// rowsTTL is how long a replica's published rows live: three publishing
// intervals, so one late write does not make its sessions vanish.
func rowsTTL(interval time.Duration) time.Duration {
	return max(3*interval, minReplicaRowsTTL)
}

// localSessionRows are this replica's live sessions as the API shows them,
// in id order.
func (s *Server) localSessionRows() []SessionInfo {
	live := s.gatewaySessions()
	out := make([]SessionInfo, 0, len(live))
	for _, si := range live {
		out = append(out, s.sessionInfo(si))
	}
	slices.SortFunc(out, func(a, b SessionInfo) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// presenceConfig is what the presence code reads of the configuration,
// copied once at start (Reload replaces s.cfg, and cannot change these).
type presenceConfig struct {
	interval time.Duration // how often this replica rewrites its rows
	gateway  string        // the gateway's endpoint, "" without one
}

func newPresenceConfig(cfg *config.Config) presenceConfig {
	p := presenceConfig{interval: 10 * time.Second}
	if cfg == nil {
		return p
	}
	if cfg.Gateway.PulseInterval > 0 {
		p.interval = cfg.Gateway.PulseInterval
	}
	if cfg.Gateway.Enabled {
		p.gateway = cfg.Gateway.Endpoint
	}
	return p
}

// publishInterval is how often this replica rewrites its rows.
func (s *Server) publishInterval() time.Duration {
	if s.presence.interval > 0 {
		return s.presence.interval
	}
	return 10 * time.Second
}

// registerReplica writes replicas/<origin>.
func (s *Server) registerReplica(ctx context.Context, started time.Time) error {
	now := s.wallNow()
	rec := replicaRecord{Origin: s.events.Origin(), Gateway: s.presence.gateway, Started: started.UTC(), Seen: now.UTC()}
	b, _ := json.Marshal(rec)
	_, err := s.store.Put(ctx, replicasPrefix+rec.Origin, b, store.PutOptions{})
	return err
}

// publishSessions writes this replica's rows to the cache.
func (s *Server) publishSessions(ctx context.Context) error {
	origin := s.events.Origin()
	chunks := chunkRows(s.localSessionRows(), s.wallNow())
	ttl := rowsTTL(s.publishInterval())
	// The later chunks first: a reader that sees chunk 0 finds the rest.
	for i := len(chunks) - 1; i >= 0; i-- {
		b, err := json.Marshal(chunks[i])
		if err != nil {
			return err
		}
		if err := s.cache.PutSession(ctx, rowsName(origin, i), b, ttl); err != nil {
			return fmt.Errorf("publish sessions: %w", err)
		}
	}
	return nil
}

// unpublishSessions removes this replica's rows and name (a clean stop).
func (s *Server) unpublishSessions(ctx context.Context) {
	origin := s.events.Origin()
	if v, _, err := s.cache.GetSession(ctx, rowsName(origin, 0)); err == nil {
		if r, err := decodeRows(v); err == nil {
			for i := 1; i < r.Chunks; i++ {
				_ = s.cache.DeleteSession(ctx, rowsName(origin, i))
			}
		}
	}
	_ = s.cache.DeleteSession(ctx, rowsName(origin, 0))
	if err := s.store.Delete(ctx, replicasPrefix+origin, store.DeleteOptions{}); err != nil && !errors.Is(err, store.ErrNotFound) {
		s.log.Warn("replica name not removed from the store; it is pruned later", "origin", origin, "error", err)
	}
}

// remoteRows reads a replica's published rows; none (expired, never
// written) is not an error.
func (s *Server) remoteRows(ctx context.Context, origin string) ([]SessionInfo, error) {
	v, _, err := s.cache.GetSession(ctx, rowsName(origin, 0))
	if errors.Is(err, cache.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	first, err := decodeRows(v)
	if err != nil {
		s.log.Warn("replica's session rows unreadable; skipped", "origin", origin, "error", err)
		return nil, nil
	}
	out := first.Sessions
	for i := 1; i < first.Chunks; i++ {
		v, _, err := s.cache.GetSession(ctx, rowsName(origin, i))
		if errors.Is(err, cache.ErrNotFound) {
			continue // rewritten meanwhile with fewer chunks, or expired
		}
		if err != nil {
			return nil, err
		}
		if r, err := decodeRows(v); err == nil {
			out = append(out, r.Sessions...)
		}
	}
	return out, nil
}

// ErrBadRows is wrapped by decodeRows's errors.
var ErrBadRows = errors.New("malformed replica session rows")

// decodeRows parses one cache record of a replica's rows (written by
// another process: checked, never trusted).
func decodeRows(b []byte) (replicaRows, error) {
	var r replicaRows
	if err := json.Unmarshal(b, &r); err != nil {
		return replicaRows{}, fmt.Errorf("%w: %w", ErrBadRows, err)
	}
	switch {
	case r.Chunks < 1 || r.Chunks > replicaMaxChunks:
		return replicaRows{}, fmt.Errorf("%w: %d chunks, want 1..%d", ErrBadRows, r.Chunks, replicaMaxChunks)
	case len(r.Sessions) > replicaChunk:
		return replicaRows{}, fmt.Errorf("%w: %d rows in one record, want at most %d", ErrBadRows, len(r.Sessions), replicaChunk)
	}
	return r, nil
}

// replicaNames lists the replicas named in the store.
func (s *Server) replicaNames(ctx context.Context) ([]replicaRecord, error) {
	var out []replicaRecord
	after := ""
	for range 100 { // at most 100 pages of store.MaxLimit replicas
		es, err := s.store.List(ctx, store.ListOptions{Prefix: replicasPrefix, After: after, Limit: store.MaxLimit})
		if err != nil {
			return nil, err
		}
		for _, e := range es {
			var r replicaRecord
			if json.Unmarshal(e.Value, &r) == nil && r.Origin != "" {
				out = append(out, r)
			}
		}
		if len(es) < store.MaxLimit {
			break
		}
		after = es[len(es)-1].Key
	}
	return out, nil
}

// clusterSessions lists the live sessions of every replica, in id order:
// this replica's live, the others' as they last published them.
func (s *Server) clusterSessions(ctx context.Context) ([]SessionInfo, error) {
	out := s.localSessionRows()
	names, err := s.replicaNames(ctx)
	if err != nil {
		return nil, fmt.Errorf("list replicas: %w", err)
	}
	self := s.events.Origin()
	seen := map[string]bool{}
	for _, r := range out {
		seen[r.ID] = true
	}
	for _, n := range names {
		if n.Origin == self {
			continue
		}
		rows, err := s.remoteRows(ctx, n.Origin)
		if err != nil {
			return nil, fmt.Errorf("sessions of replica %s: %w", n.Origin, err)
		}
		for _, r := range rows {
			if !seen[r.ID] { // a session moving between replicas shows once
				seen[r.ID] = true
				out = append(out, r)
			}
		}
	}
	slices.SortFunc(out, func(a, b SessionInfo) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// runReplicaPresence publishes this replica's rows every pulse interval,
// refreshes its name every replicaRefresh, prunes stale names and old kill
// records every pruneEvery, and removes its rows and name when ctx
// ends.
func (s *Server) runReplicaPresence(ctx context.Context) {
	started := s.wallNow()
	interval := s.publishInterval()
	var lastName, lastPrune time.Time
	tk := time.NewTicker(interval)
	defer tk.Stop()
	for {
		now := s.wallNow()
		cctx, cancel := context.WithTimeout(ctx, replicaPublishTimeout)
		if now.Sub(lastName) >= replicaRefresh || lastName.IsZero() {
			if err := s.registerReplica(cctx, started); err != nil {
				s.log.Warn("replica name not written; other replicas list its sessions once it is", "error", err)
			} else {
				lastName = now
			}
		}
		if err := s.publishSessions(cctx); err != nil {
			s.log.Warn("session rows not published; other replicas list them once they are", "error", err)
		}
		if now.Sub(lastPrune) >= pruneEvery || lastPrune.IsZero() {
			lastPrune = now
			if n, err := s.pruneReplicaNames(cctx, now); err != nil {
				s.log.Warn("stale replica names not pruned", "error", err)
			} else if n > 0 {
				s.log.Info("stale replica names pruned", "count", n)
			}
			if n, err := pruneKillRecords(cctx, s.store, s.wallNow(), KillRecordMaxAge); err != nil {
				s.log.Warn("old kill records not pruned", "error", err)
			} else if n > 0 {
				s.log.Info("old kill records pruned", "count", n)
			}
		}
		cancel()
		select {
		case <-ctx.Done():
			dctx, dcancel := context.WithTimeout(context.Background(), replicaPublishTimeout)
			s.unpublishSessions(dctx)
			dcancel()
			return
		case <-tk.C:
		}
	}
}

// wallNow is the calibrated time, or the system clock without a
// calibration (the presence records only need rough times).
func (s *Server) wallNow() time.Time {
	if c := s.calibrator(); c != nil {
		if t, err := c.Now(); err == nil {
			return t
		}
	}
	return time.Now()
}

// pruneReplicaNames deletes the names of replicas that have not refreshed
// them for replicaForget (they died without a clean stop).
func (s *Server) pruneReplicaNames(ctx context.Context, now time.Time) (int, error) {
	es, err := s.store.List(ctx, store.ListOptions{Prefix: replicasPrefix, Limit: store.MaxLimit})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range es {
		var r replicaRecord
		if json.Unmarshal(e.Value, &r) != nil || now.Sub(r.Seen) < replicaForget {
			continue
		}
		err := s.store.Delete(ctx, e.Key, store.DeleteOptions{Check: true, Version: e.Version})
		switch {
		case err == nil:
			n++
		case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrVersionConflict):
			// Another replica pruned it, or it came back.
		default:
			return n, err
		}
	}
	return n, nil
}

// pruneKillRecords deletes the kill records (sessions/killed/<id>) made
// more than maxAge before now, and returns how many it deleted. A record
// whose time cannot be read is kept. Each delete is conditional on the
// version listed, so replicas pruning at once do not trip over each other.
func pruneKillRecords(ctx context.Context, kv store.KV, now time.Time, maxAge time.Duration) (int, error) {
	n := 0
	after := ""
	for range 1000 { // at most 1000 pages
		es, err := kv.List(ctx, store.ListOptions{Prefix: killedPrefix, After: after, Limit: store.MaxLimit})
		if err != nil {
			return n, err
		}
		for _, e := range es {
			if !killRecordExpired(e.Value, now, maxAge) {
				continue
			}
			err := kv.Delete(ctx, e.Key, store.DeleteOptions{Check: true, Version: e.Version})
			switch {
			case err == nil:
				n++
			case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrVersionConflict):
			default:
				return n, err
			}
		}
		if len(es) < store.MaxLimit {
			return n, nil
		}
		after = es[len(es)-1].Key
	}
	return n, nil
}

// killRecordExpired reports whether a kill record made more than maxAge
// before now can go: false when its time cannot be read.
func killRecordExpired(value []byte, now time.Time, maxAge time.Duration) bool {
	var k killRecord
	if err := json.Unmarshal(value, &k); err != nil || k.At.IsZero() {
		return false
	}
	return now.Sub(k.At) > maxAge
}
