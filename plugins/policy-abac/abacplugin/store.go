package abacplugin

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/avonzt/avon/plugins/policy-abac/abac"
	"github.com/avonzt/avon/sdk/host"
	"github.com/avonzt/avon/sdk/policy"
)

// setPrefix is where policy sets live in the plugin's storage, one key
// per set: every replica of the core reads the same sets, and a set's
// Version is its key's storage version (increasing, never reused).
const setPrefix = "sets/"

// record is a stored policy set.
type record struct {
	Policies   string `json:"policies"`
	Schema     string `json:"schema,omitempty"`
	ReportOnly bool   `json:"report_only,omitempty"`
	// FileDigest is the digest of the policy_dir files last applied to
	// this set: a file is applied again only when it changes, so a change
	// made through the API survives restarts until the file changes.
	FileDigest string `json:"file_digest,omitempty"`
}

func (r record) source(id string) abac.Source {
	return abac.Source{ID: id, Policies: r.Policies, Schema: r.Schema, ReportOnly: r.ReportOnly}
}

func digest(s abac.Source) string {
	h := sha256.New()
	for _, part := range []string{s.Policies, s.Schema, fmt.Sprint(s.ReportOnly)} {
		fmt.Fprintf(h, "%d:%s", len(part), part)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// load reads a set: ok false when absent. An unreadable record is an
// ErrInvalidPolicy with its version, so that a write can replace it.
func load(ctx context.Context, st host.Storage, id string) (record, uint64, bool, error) {
	e, err := st.Get(ctx, setPrefix+id)
	if errors.Is(err, host.ErrNotFound) {
		return record{}, 0, false, nil
	}
	if err != nil {
		return record{}, 0, false, fmt.Errorf("read policy set %q: %w", id, err)
	}
	var r record
	if err := json.Unmarshal(e.Value, &r); err != nil {
		return record{}, uint64(e.Version), false, fmt.Errorf("stored policy set %q is not readable: %v: %w", id, err, policy.ErrInvalidPolicy)
	}
	return r, uint64(e.Version), true, nil
}

// store writes a set with compare-and-set, retrying on a concurrent
// change; update turns the current record (ok false: none) into the new
// one, or says no change is needed. After a write, audit records it; if
// audit fails the write is rolled back (compare-and-set on the version
// just written), so that no change stands unaudited, and its error is
// returned. store returns the version in force and whether it changed.
// A non-nil ifVersion makes the write conditional: the set's version when
// read must be *ifVersion (0: no set), checked on every attempt and made
// atomic by the compare-and-set; otherwise policy.ErrVersionConflict.
func store(ctx context.Context, st host.Storage, id string, ifVersion *uint64, update func(cur record, ok bool) (record, bool),
	audit func(ver uint64) error) (uint64, bool, error) {
	const attempts = 8
	key := setPrefix + id
	for range attempts {
		prev, err := st.Get(ctx, key)
		exists := err == nil
		if err != nil && !errors.Is(err, host.ErrNotFound) {
			return 0, false, fmt.Errorf("read policy set %q: %w", id, err)
		}
		if ifVersion != nil && uint64(prev.Version) != *ifVersion {
			if !exists {
				return 0, false, fmt.Errorf("policy set %q does not exist (expected version %d): %w", id, *ifVersion, policy.ErrVersionConflict)
			}
			return uint64(prev.Version), false, fmt.Errorf("policy set %q is at version %d, not %d: %w", id, prev.Version, *ifVersion,
				policy.ErrVersionConflict)
		}
		var cur record
		ok := exists && json.Unmarshal(prev.Value, &cur) == nil
		if !ok {
			cur = record{}
		}
		next, change := update(cur, ok)
		if !change {
			return uint64(prev.Version), false, nil
		}
		b, err := json.Marshal(next)
		if err != nil {
			return 0, false, fmt.Errorf("encode policy set %q: %w", id, err)
		}
		nv, err := st.Put(ctx, key, b, host.PutOptions{Check: true, Version: prev.Version})
		if errors.Is(err, host.ErrVersionConflict) {
			continue
		}
		if err != nil {
			return 0, false, fmt.Errorf("write policy set %q: %w", id, err)
		}
		aerr := audit(uint64(nv))
		if aerr == nil {
			return uint64(nv), true, nil
		}
		var rerr error
		if exists {
			_, rerr = st.Put(ctx, key, prev.Value, host.PutOptions{Check: true, Version: nv})
		} else {
			rerr = st.Delete(ctx, key, host.DeleteOptions{Check: true, Version: nv})
		}
		if rerr != nil {
			return uint64(nv), true, fmt.Errorf("policy set %q version %d is in force but not audited (rollback failed: %v): %w", id, nv, rerr, aerr)
		}
		return uint64(prev.Version), false, fmt.Errorf("policy set %q not applied: audit: %w", id, aerr)
	}
	return 0, false, fmt.Errorf("write policy set %q: changed concurrently %d times: %w", id, attempts, host.ErrVersionConflict)
}
