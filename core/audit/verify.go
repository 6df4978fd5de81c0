package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/avonzt/avon/core/store"
)

// Kinds of problem Verify reports.
const (
	ProblemAltered    = "altered"    // a record's bytes do not match its hash, or are not canonical
	ProblemMissing    = "missing"    // a gap in the sequence, or records cut from the end
	ProblemInserted   = "inserted"   // a row that is not part of the chain
	ProblemUnlinked   = "unlinked"   // prev does not match the predecessor's hash
	ProblemCheckpoint = "checkpoint" // a checkpoint that does not verify or does not match the records
	ProblemUnsigned   = "unsigned"   // more records after the last verified checkpoint than allowed
	ProblemEmpty      = "empty"      // no records at all
)

// Problem is one finding of Verify.
type Problem struct {
	Seq    uint64 `json:"seq"` // the record concerned (0: not a record)
	Kind   string `json:"kind"`
	Detail string `json:"detail"`
}

func (p Problem) String() string {
	if p.Seq == 0 {
		return fmt.Sprintf("%s: %s", p.Kind, p.Detail)
	}
	return fmt.Sprintf("record %d %s: %s", p.Seq, p.Kind, p.Detail)
}

// VerifyOptions tune Verify.
type VerifyOptions struct {
	// TrustedKeys, when set, are the only keys checkpoints may be signed
	// with (pinned from a trusted copy). Without them the keys stored
	// beside the log are used, which an attacker with write access to the
	// store could have replaced.
	TrustedKeys []PublicKey
	// Anchors are checkpoints exported earlier and kept outside AVON; the
	// log must still contain exactly what each one signed.
	Anchors []Export
	// MaxProblems bounds the report (default 100); the walk goes on.
	MaxProblems int
	// MaxUnsigned, when positive, is how many records may follow the
	// newest checkpoint that verifies (checkpoint_every). More is a
	// problem: records cut from the end and replaced would otherwise pass.
	MaxUnsigned uint64
	// AllowEmpty accepts a log without records (a wiped store otherwise
	// looks intact).
	AllowEmpty bool
}

// Report is the result of Verify.
type Report struct {
	Records             uint64    `json:"records"`
	Head                uint64    `json:"head"`
	Checkpoints         int       `json:"checkpoints"`
	CheckpointsVerified int       `json:"checkpoints_verified"`
	LastCheckpoint      uint64    `json:"last_checkpoint"` // newest checkpoint that verified
	Unsigned            uint64    `json:"unsigned"`        // records after it, covered only by the chain
	KeysPinned          bool      `json:"keys_pinned"`
	Problems            []Problem `json:"problems"`
	Truncated           bool      `json:"truncated,omitempty"` // more problems than MaxProblems
	problemLimit        int
	hashes              hashLookup
}

type hashLookup map[uint64]string

// OK reports whether no problem was found.
func (r *Report) OK() bool { return len(r.Problems) == 0 }

// First returns the first problem by seq.
func (r *Report) First() (Problem, bool) {
	if len(r.Problems) == 0 {
		return Problem{}, false
	}
	return r.Problems[0], true
}

func (r *Report) add(seq uint64, kind, format string, args ...any) {
	if len(r.Problems) >= r.problemLimit {
		r.Truncated = true
		return
	}
	r.Problems = append(r.Problems, Problem{Seq: seq, Kind: kind, Detail: fmt.Sprintf(format, args...)})
}

// Verify walks the whole log in kv and checks every record's hash and link,
// the sequence, the head, every stored checkpoint (signature and the hash it
// signed) and every anchor. The error is for I/O only; findings are in the
// report.
func Verify(ctx context.Context, kv store.KV, opts VerifyOptions) (*Report, error) {
	r := &Report{problemLimit: opts.MaxProblems, KeysPinned: len(opts.TrustedKeys) > 0}
	if r.problemLimit <= 0 {
		r.problemLimit = 100
	}
	h, _, err := readHead(ctx, kv)
	if err != nil {
		return nil, err
	}
	r.Head = h.Seq
	cps, err := listCheckpoints(ctx, kv, r)
	if err != nil {
		return nil, err
	}
	// The hashes the walk must remember: where checkpoints, anchors and
	// the head point.
	need := map[uint64]bool{h.Seq: true}
	for _, cp := range cps {
		need[cp.Seq] = true
	}
	for _, a := range opts.Anchors {
		need[a.Checkpoint.Seq] = true
	}
	r.hashes = hashLookup{}

	expected, prevHash, last := uint64(1), ZeroHash, uint64(0)
	after := ""
	for page := 0; ; page++ {
		es, err := kv.List(ctx, store.ListOptions{Prefix: recordPrefix, After: after, Limit: store.MaxLimit})
		if err != nil {
			return nil, fmt.Errorf("audit: list records: %w", err)
		}
		for _, e := range es {
			seq, ok := parseRecordKey(e.Key)
			if !ok {
				r.add(0, ProblemInserted, "row %q is not a record key", e.Key)
				continue
			}
			if seq > expected {
				if seq == expected+1 {
					r.add(expected, ProblemMissing, "the record is missing (found %d after %d)", seq, expected-1)
				} else {
					r.add(expected, ProblemMissing, "records %d to %d are missing", expected, seq-1)
				}
				prevHash = "" // unknown predecessor
			}
			rec, derr := decodeStrict(e.Value)
			switch {
			case derr != nil:
				r.add(seq, ProblemAltered, "%v", derr)
			case rec.Seq != seq:
				r.add(seq, ProblemAltered, "it says it is record %d", rec.Seq)
			case prevHash != "" && rec.Prev != prevHash:
				r.add(seq, ProblemUnlinked, "prev does not match the hash of record %d: record %d was rewritten with a new hash, or record %d was inserted", seq-1, seq-1, seq)
			}
			if need[seq] {
				r.hashes[seq] = rec.Hash
			}
			prevHash = rec.Hash
			if len(prevHash) != 64 {
				prevHash = ""
			}
			expected, last = seq+1, seq
			r.Records++
		}
		if len(es) < store.MaxLimit {
			break
		}
		after = es[len(es)-1].Key
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}

	switch {
	case h.Seq > last:
		r.add(last+1, ProblemMissing, "records %d to %d are missing: the head says the log ends at %d", last+1, h.Seq, h.Seq)
	case last > h.Seq+1:
		// One record past the head is the crash window of an append.
		r.add(h.Seq+2, ProblemInserted, "records %d to %d lie beyond the head (%d)", h.Seq+2, last, h.Seq)
	}
	if got, ok := r.hashes[h.Seq]; h.Seq > 0 && ok && got != h.Hash {
		r.add(h.Seq, ProblemAltered, "the head's hash does not match the record")
	}

	keys, err := trustedKeys(ctx, kv, opts)
	if err != nil {
		return nil, err
	}
	for _, cp := range cps {
		if r.checkCheckpoint(cp, keys, "checkpoint") {
			r.CheckpointsVerified++
			r.LastCheckpoint = max(r.LastCheckpoint, cp.Seq)
		}
	}
	// The checkpoint head names the newest checkpoint ever stored; it must
	// still be there.
	if e, err := kv.Get(ctx, checkpointHeadKey); err == nil {
		var seq uint64
		if json.Unmarshal(e.Value, &seq) != nil {
			r.add(0, ProblemCheckpoint, "the checkpoint head is unreadable")
		} else if _, err := kv.Get(ctx, CheckpointKey(seq)); err != nil {
			r.add(seq, ProblemCheckpoint, "the newest checkpoint (at %d, named by the checkpoint head) is missing", seq)
		}
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("audit: read checkpoint head: %w", err)
	} else if len(cps) > 0 {
		r.add(0, ProblemCheckpoint, "checkpoints exist but the checkpoint head is missing")
	}
	if r.Head > r.LastCheckpoint {
		r.Unsigned = r.Head - r.LastCheckpoint
	}
	if r.KeysPinned && r.Head > 0 && r.CheckpointsVerified == 0 {
		r.add(0, ProblemCheckpoint, "no checkpoint verifies with the pinned keys")
	}
	if opts.MaxUnsigned > 0 && r.Unsigned > opts.MaxUnsigned {
		r.add(r.LastCheckpoint+1, ProblemUnsigned, "%d records follow the newest verified checkpoint (at %d); at most %d are expected: the end of the log may have been replaced",
			r.Unsigned, r.LastCheckpoint, opts.MaxUnsigned)
	}
	if !opts.AllowEmpty && r.Records == 0 && r.Head == 0 {
		r.add(0, ProblemEmpty, "the log has no records: a running core has at least its start record; a wiped or wrong store looks like this")
	}
	for _, a := range opts.Anchors {
		if r.KeysPinned {
			r.checkCheckpoint(a.Checkpoint, keys, "anchored checkpoint")
		} else {
			r.checkCheckpoint(a.Checkpoint, map[string]PublicKey{a.Key.Fingerprint(): a.Key}, "anchored checkpoint")
		}
	}
	// By record, the log-wide findings (seq 0) after the ones that name one.
	sort.SliceStable(r.Problems, func(i, j int) bool {
		a, b := r.Problems[i].Seq, r.Problems[j].Seq
		if a == 0 || b == 0 {
			return b == 0 && a != 0
		}
		return a < b
	})
	return r, nil
}

// checkCheckpoint verifies one checkpoint's signature and that the log
// still holds what it signed; it reports whether it verified.
func (r *Report) checkCheckpoint(cp Checkpoint, keys map[string]PublicKey, what string) bool {
	k, ok := keys[cp.PublicKeySHA256]
	if !ok {
		r.add(cp.Seq, ProblemCheckpoint, "%s at %d is signed by key %.16s…, which is not trusted", what, cp.Seq, cp.PublicKeySHA256)
		return false
	}
	if err := cp.Verify(k); err != nil {
		r.add(cp.Seq, ProblemCheckpoint, "%s at %d does not verify: %v", what, cp.Seq, err)
		return false
	}
	got, ok := r.hashes[cp.Seq]
	switch {
	case !ok:
		r.add(cp.Seq, ProblemMissing, "the record signed by the %s is missing", what)
		return false
	case got != cp.Hash:
		r.add(cp.Seq, ProblemAltered, "the record differs from the one the %s of %s signed: the log up to it was rewritten",
			what, cp.Time.Format("2006-01-02T15:04:05Z"))
		return false
	}
	return true
}

func trustedKeys(ctx context.Context, kv store.KV, opts VerifyOptions) (map[string]PublicKey, error) {
	if len(opts.TrustedKeys) > 0 {
		m := map[string]PublicKey{}
		for _, k := range opts.TrustedKeys {
			m[k.Fingerprint()] = k
		}
		return m, nil
	}
	return StoredKeys(ctx, kv)
}

func listCheckpoints(ctx context.Context, kv store.KV, r *Report) ([]Checkpoint, error) {
	var out []Checkpoint
	after := ""
	for {
		es, err := kv.List(ctx, store.ListOptions{Prefix: checkpointPrefix, After: after, Limit: store.MaxLimit})
		if err != nil {
			return nil, fmt.Errorf("audit: list checkpoints: %w", err)
		}
		for _, e := range es {
			var cp Checkpoint
			if err := json.Unmarshal(e.Value, &cp); err != nil || CheckpointKey(cp.Seq) != e.Key {
				r.add(0, ProblemCheckpoint, "row %q is not a readable checkpoint", strings.TrimPrefix(e.Key, Prefix))
				continue
			}
			out = append(out, cp)
		}
		r.Checkpoints += len(es)
		if len(es) < store.MaxLimit {
			return out, nil
		}
		after = es[len(es)-1].Key
	}
}
