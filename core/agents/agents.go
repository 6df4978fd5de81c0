// Package agents is the registry of enrolled agents: one record per agent
// under agents/<id> in the core's store, written when the agent enrolls or
// renews, and changed by operators (disable, enable) through the Admin
// API. The gateway asks it whether an agent is disabled before giving it a
// session and when it re-reads the durable state after an event gap; the
// renewal endpoint refuses a disabled agent.
//
// Every change is a compare-and-set on the record's store version, so two
// operators (or an operator and a renewal) never overwrite each other: the
// loser gets ErrVersionConflict and nothing changes.
//
// The package must not publish events, audit or end sessions: the Admin
// API does those around its calls.
package agents

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/avonzt/avon/core/store"
)

// Prefix is the store prefix of agent records.
const Prefix = "agents/"

// MaxReason bounds an operator's disable reason.
const MaxReason = 256

// Errors, wrapped with context; match with errors.Is.
var (
	ErrNotFound        = errors.New("agents: no such agent")
	ErrInvalid         = errors.New("agents: invalid argument")
	ErrVersionConflict = errors.New("agents: the agent record changed")
)

var idRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,127}$`)

// ValidID reports whether id can name an agent.
func ValidID(id string) bool { return idRE.MatchString(id) }

// Agent is an agent's record.
type Agent struct {
	ID           string    `json:"id"`
	Group        string    `json:"group"`
	EnrolledAt   time.Time `json:"enrolled_at"`
	CertSerial   string    `json:"cert_serial"` // the newest certificate's serial, hex
	CertNotAfter time.Time `json:"cert_not_after"`
	RenewedAt    time.Time `json:"renewed_at,omitzero"`
	Disabled     bool      `json:"disabled"`
	// Who disabled (or last enabled) the agent, when and why.
	ChangedAt    time.Time `json:"changed_at,omitzero"`
	ChangedBy    string    `json:"changed_by,omitempty"`
	ChangeReason string    `json:"change_reason,omitempty"`
}

// Entry is an agent record and its store version (its ETag).
type Entry struct {
	Agent
	Version int64 `json:"-"`
}

// Registry reads and writes agent records.
type Registry struct{ kv store.KV }

// New returns the registry over kv.
func New(kv store.KV) *Registry { return &Registry{kv: kv} }

func decode(e store.Entry) (Entry, error) {
	var a Agent
	if err := json.Unmarshal(e.Value, &a); err != nil {
		return Entry{}, fmt.Errorf("agents: record %s is corrupt: %w", e.Key, err)
	}
	return Entry{Agent: a, Version: e.Version}, nil
}

// Get returns agent id's record. Errors: ErrInvalid, ErrNotFound, store
// errors.
func (r *Registry) Get(ctx context.Context, id string) (Entry, error) {
	if !ValidID(id) {
		return Entry{}, fmt.Errorf("%w: agent id %.80q", ErrInvalid, id)
	}
	e, err := r.kv.Get(ctx, Prefix+id)
	if errors.Is(err, store.ErrNotFound) {
		return Entry{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return Entry{}, fmt.Errorf("agents: read %s: %w", id, err)
	}
	return decode(e)
}

// maxAttempts bounds the compare-and-set retries of Enrolled.
const maxAttempts = 8

// Enrolled records that agent a.ID enrolled or renewed with a certificate:
// a new record, or the existing one with the new serial and expiry (its
// group kept unless a.Group is set, its disabled state always kept).
func (r *Registry) Enrolled(ctx context.Context, a Agent, now time.Time) (Entry, error) {
	if !ValidID(a.ID) || a.CertSerial == "" {
		return Entry{}, fmt.Errorf("%w: agent %.80q serial %.80q", ErrInvalid, a.ID, a.CertSerial)
	}
	for range maxAttempts {
		cur, err := r.Get(ctx, a.ID)
		var rec Agent
		var version int64
		switch {
		case errors.Is(err, ErrNotFound):
			rec = Agent{ID: a.ID, Group: a.Group, EnrolledAt: now.UTC()}
		case err != nil:
			return Entry{}, err
		default:
			rec, version = cur.Agent, cur.Version
			rec.RenewedAt = now.UTC()
			if a.Group != "" {
				rec.Group = a.Group
			}
		}
		rec.CertSerial, rec.CertNotAfter = strings.ToLower(a.CertSerial), a.CertNotAfter.UTC()
		b, _ := json.Marshal(rec)
		v, err := r.kv.Put(ctx, Prefix+a.ID, b, store.PutOptions{Check: true, Version: version})
		if errors.Is(err, store.ErrVersionConflict) {
			continue // changed meanwhile: apply to the new record
		}
		if err != nil {
			return Entry{}, fmt.Errorf("agents: write %s: %w", a.ID, err)
		}
		return Entry{Agent: rec, Version: v}, nil
	}
	return Entry{}, fmt.Errorf("%w: %s kept changing", ErrVersionConflict, a.ID)
}

// SetDisabled disables (or enables) agent id, provided its record is still
// at version (the ETag the operator read). Errors: ErrInvalid, ErrNotFound,
// ErrVersionConflict (nothing changed), store errors.
func (r *Registry) SetDisabled(ctx context.Context, id string, version int64, disabled bool, by, reason string, now time.Time) (Entry, error) {
	if len(reason) > MaxReason {
		return Entry{}, fmt.Errorf("%w: reason of %d bytes (at most %d)", ErrInvalid, len(reason), MaxReason)
	}
	cur, err := r.Get(ctx, id)
	if err != nil {
		return Entry{}, err
	}
	if cur.Version != version {
		return Entry{}, fmt.Errorf("%w: %s is at another version", ErrVersionConflict, id)
	}
	rec := cur.Agent
	rec.Disabled, rec.ChangedAt, rec.ChangedBy, rec.ChangeReason = disabled, now.UTC(), by, reason
	b, _ := json.Marshal(rec)
	v, err := r.kv.Put(ctx, Prefix+id, b, store.PutOptions{Check: true, Version: version})
	if errors.Is(err, store.ErrVersionConflict) {
		return Entry{}, fmt.Errorf("%w: %s changed meanwhile", ErrVersionConflict, id)
	}
	if err != nil {
		return Entry{}, fmt.Errorf("agents: write %s: %w", id, err)
	}
	return Entry{Agent: rec, Version: v}, nil
}

// Disabled reports whether agent id is disabled. An agent without a record
// (enrolled before the registry existed) is not; a read that fails is an
// error, which callers treat as "refuse" (fail closed).
func (r *Registry) Disabled(ctx context.Context, id string) (bool, error) {
	e, err := r.Get(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return e.Disabled, nil
}

// ListOptions select a page of agents: ids after After, in id order, at
// most Limit (1..store.MaxLimit), only of Group when set, only disabled
// ones when Disabled is set.
type ListOptions struct {
	After    string
	Limit    int
	Group    string
	Disabled bool
}

// scanChunk is how many records List reads from the store at a time.
const scanChunk = 500

// List returns a page of agents and whether more may follow.
func (r *Registry) List(ctx context.Context, o ListOptions) ([]Entry, bool, error) {
	if o.Limit < 1 || o.Limit > store.MaxLimit {
		return nil, false, fmt.Errorf("%w: limit %d", ErrInvalid, o.Limit)
	}
	if o.After != "" && !ValidID(o.After) {
		return nil, false, fmt.Errorf("%w: position %.80q", ErrInvalid, o.After)
	}
	var out []Entry
	after := ""
	if o.After != "" {
		after = Prefix + o.After
	}
	// Each round reads the next chunk; the store is finite, and every
	// round moves after forward, so the loop ends.
	for {
		es, err := r.kv.List(ctx, store.ListOptions{Prefix: Prefix, After: after, Limit: scanChunk})
		if err != nil {
			return nil, false, fmt.Errorf("agents: list: %w", err)
		}
		for _, e := range es {
			after = e.Key
			a, err := decode(e)
			if err != nil {
				return nil, false, err
			}
			if (o.Group != "" && a.Group != o.Group) || (o.Disabled && !a.Disabled) {
				continue
			}
			if len(out) == o.Limit {
				return out, true, nil
			}
			out = append(out, a)
		}
		if len(es) < scanChunk {
			return out, false, nil
		}
	}
}
