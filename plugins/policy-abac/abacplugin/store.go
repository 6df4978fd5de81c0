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
// one, or says no change is needed. It returns the version in force.
func store(ctx context.Context, st host.Storage, id string, update func(cur record, ok bool) (record, bool)) (uint64, bool, error) {
	const attempts = 8
	for range attempts {
		cur, ver, ok, err := load(ctx, st, id)
		if err != nil && !errors.Is(err, policy.ErrInvalidPolicy) {
			return 0, false, err
		}
		next, change := update(cur, ok)
		if !change {
			return ver, false, nil
		}
		b, err := json.Marshal(next)
		if err != nil {
			return 0, false, fmt.Errorf("encode policy set %q: %w", id, err)
		}
		nv, err := st.Put(ctx, setPrefix+id, b, host.PutOptions{Check: true, Version: int64(ver)})
		if errors.Is(err, host.ErrVersionConflict) {
			continue
		}
		if err != nil {
			return 0, false, fmt.Errorf("write policy set %q: %w", id, err)
		}
		return uint64(nv), true, nil
	}
	return 0, false, fmt.Errorf("write policy set %q: changed concurrently %d times: %w", id, attempts, host.ErrVersionConflict)
}
