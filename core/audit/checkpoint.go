package audit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/avonzt/avon/core/store"
	"github.com/avonzt/avon/internal/sigverify"
)

const (
	checkpointDomain  = "AVON-AUDIT-CHECKPOINT-v1\x00"
	checkpointHeadKey = Prefix + "checkpoint-head"
)

// Checkpoint is a signed statement "the log's record seq has hash Hash".
// Because every record commits to its predecessor, it commits to the whole
// log up to Seq. It is the document to anchor outside AVON.
type Checkpoint struct {
	Version   int       `json:"v"` // 1
	Seq       uint64    `json:"seq"`
	Hash      string    `json:"hash"`
	Time      time.Time `json:"time"`
	KeyID     string    `json:"key_id"`    // e.g. "kms.soft/avon-audit/v1"
	Algorithm string    `json:"algorithm"` // e.g. "ML-DSA-65"
	// PublicKeySHA256 names the verifying key (hex SHA-256 of its bytes).
	PublicKeySHA256 string `json:"public_key_sha256"`
	Signature       []byte `json:"signature,omitempty"` // base64 in JSON
}

// SignedMessage returns the bytes the signature covers.
func (c Checkpoint) SignedMessage() []byte {
	c.Signature = nil
	c.Time = c.Time.UTC()
	b, _ := json.Marshal(c)
	return append([]byte(checkpointDomain), b...)
}

// CheckpointKey returns the store key of the checkpoint at seq.
func CheckpointKey(seq uint64) string { return fmt.Sprintf("%s%020d", checkpointPrefix, seq) }

// PublicKey is a verifying key as stored beside the log and exported with
// checkpoints.
type PublicKey struct {
	KeyID     string `json:"key_id"`
	Algorithm string `json:"algorithm"`
	PublicKey []byte `json:"public_key"`
}

// Fingerprint returns the hex SHA-256 of the key bytes.
func (k PublicKey) Fingerprint() string {
	s := sha256.Sum256(k.PublicKey)
	return hex.EncodeToString(s[:])
}

// Verify checks the checkpoint's signature with k.
func (c Checkpoint) Verify(k PublicKey) error {
	if c.Version != 1 {
		return fmt.Errorf("checkpoint version %d is not 1", c.Version)
	}
	if k.Fingerprint() != c.PublicKeySHA256 {
		return fmt.Errorf("checkpoint names key %.16s…, not %.16s…", c.PublicKeySHA256, k.Fingerprint())
	}
	if k.Algorithm != c.Algorithm {
		return fmt.Errorf("checkpoint algorithm %q, key algorithm %q", c.Algorithm, k.Algorithm)
	}
	return sigverify.Verify(c.Algorithm, k.PublicKey, c.SignedMessage(), nil, c.Signature)
}

// Signer signs checkpoints; the server implements it over a KMS plugin.
type Signer interface {
	// Sign signs msg and returns the signature and the key that made it.
	Sign(ctx context.Context, msg []byte) (sig []byte, key PublicKey, err error)
	// Key returns the key the next Sign will use.
	Key(ctx context.Context) (PublicKey, error)
}

// CheckpointerOptions configure a Checkpointer.
type CheckpointerOptions struct {
	Every    int           // events between checkpoints; default 1000
	Interval time.Duration // at most this long between checkpoints when events arrived; default 5m
	Signer   Signer
	Logger   hclog.Logger
}

// Checkpointer signs the log's head every Every events or Interval.
type Checkpointer struct {
	log  *Log
	opts CheckpointerOptions

	mu      sync.Mutex
	last    Checkpoint
	lastErr error
}

// NewCheckpointer returns a Checkpointer for l.
func NewCheckpointer(l *Log, opts CheckpointerOptions) *Checkpointer {
	if opts.Every <= 0 {
		opts.Every = 1000
	}
	if opts.Interval <= 0 {
		opts.Interval = 5 * time.Minute
	}
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	return &Checkpointer{log: l, opts: opts}
}

// CheckpointStatus is what /readyz and /metrics show.
type CheckpointStatus struct {
	LastSeq  uint64
	LastTime time.Time
	Err      error // of the last attempt, nil when it succeeded
}

// Status returns the last checkpoint made (or found) and the last error.
func (c *Checkpointer) Status() CheckpointStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	return CheckpointStatus{LastSeq: c.last.Seq, LastTime: c.last.Time, Err: c.lastErr}
}

// LatestCheckpoint returns the newest stored checkpoint, or ErrNotFound
// from the store when there is none.
func LatestCheckpoint(ctx context.Context, kv store.KV) (Checkpoint, error) {
	e, err := kv.Get(ctx, checkpointHeadKey)
	if err != nil {
		return Checkpoint{}, err
	}
	var seq uint64
	if err := json.Unmarshal(e.Value, &seq); err != nil {
		return Checkpoint{}, fmt.Errorf("audit: corrupt checkpoint head: %w", err)
	}
	e, err = kv.Get(ctx, CheckpointKey(seq))
	if err != nil {
		return Checkpoint{}, fmt.Errorf("audit: checkpoint %d: %w", seq, err)
	}
	var cp Checkpoint
	if err := json.Unmarshal(e.Value, &cp); err != nil {
		return Checkpoint{}, fmt.Errorf("audit: checkpoint %d: %w", seq, err)
	}
	return cp, nil
}

// Checkpoint signs the current head now, unless the newest checkpoint
// already covers it. It returns the newest checkpoint.
func (c *Checkpointer) Checkpoint(ctx context.Context) (Checkpoint, error) {
	cp, err := c.checkpoint(ctx)
	c.mu.Lock()
	c.lastErr = err
	if err == nil {
		c.last = cp
	}
	c.mu.Unlock()
	if err != nil {
		c.opts.Logger.Warn("audit checkpoint failed", "error", err)
	}
	return cp, err
}

func (c *Checkpointer) checkpoint(ctx context.Context) (Checkpoint, error) {
	kv := c.log.kv
	latest, err := LatestCheckpoint(ctx, kv)
	var latestVersion int64
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return Checkpoint{}, err
	default:
		e, err := kv.Get(ctx, checkpointHeadKey)
		if err != nil {
			return Checkpoint{}, err
		}
		latestVersion = e.Version
	}
	h, _, err := readHead(ctx, kv)
	if err != nil {
		return Checkpoint{}, err
	}
	if h.Seq == 0 || h.Seq <= latest.Seq {
		return latest, nil
	}
	if c.opts.Signer == nil {
		return Checkpoint{}, errors.New("audit: no signing key configured for checkpoints")
	}
	// Sign only a chain that holds: the records since the last checkpoint
	// must link, from the record it signed to the head. A database edited
	// since then must not get a genuine signature.
	if err := checkSince(ctx, kv, latest, h, c.log.appendedHash); err != nil {
		return Checkpoint{}, err
	}
	key, err := c.opts.Signer.Key(ctx)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("audit: checkpoint key: %w", err)
	}
	cp := Checkpoint{Version: 1, Seq: h.Seq, Hash: h.Hash, Time: c.log.now().UTC().Round(0),
		KeyID: key.KeyID, Algorithm: key.Algorithm, PublicKeySHA256: key.Fingerprint()}
	sig, used, err := c.opts.Signer.Sign(ctx, cp.SignedMessage())
	if err != nil {
		return Checkpoint{}, fmt.Errorf("audit: sign checkpoint %d: %w", h.Seq, err)
	}
	if used.Fingerprint() != key.Fingerprint() {
		// The key rotated between Key and Sign: name the key that signed.
		cp.KeyID, cp.Algorithm, cp.PublicKeySHA256 = used.KeyID, used.Algorithm, used.Fingerprint()
		if sig, used, err = c.opts.Signer.Sign(ctx, cp.SignedMessage()); err != nil || used.Fingerprint() != cp.PublicKeySHA256 {
			return Checkpoint{}, fmt.Errorf("audit: sign checkpoint %d: key changed while signing: %v", h.Seq, err)
		}
	}
	cp.Signature = sig
	if err := cp.Verify(used); err != nil {
		return Checkpoint{}, fmt.Errorf("audit: checkpoint %d does not verify with its own key: %w", h.Seq, err)
	}
	if err := storeKey(ctx, kv, used); err != nil {
		return Checkpoint{}, err
	}
	b, _ := json.Marshal(cp)
	if _, err := kv.Put(ctx, CheckpointKey(cp.Seq), b, store.PutOptions{Check: true}); err != nil {
		if errors.Is(err, store.ErrVersionConflict) {
			return LatestCheckpoint(ctx, kv) // another replica signed this seq
		}
		return Checkpoint{}, fmt.Errorf("audit: store checkpoint %d: %w", cp.Seq, err)
	}
	if err := advanceCheckpointHead(ctx, kv, cp.Seq, latestVersion); err != nil {
		return Checkpoint{}, err
	}
	c.opts.Logger.Info("audit checkpoint", "seq", cp.Seq, "key", cp.KeyID)
	return cp, nil
}

// advanceCheckpointHead moves the checkpoint head to seq, never backwards:
// on a conflict with another replica it re-reads and retries while the head
// is still behind seq.
func advanceCheckpointHead(ctx context.Context, kv store.KV, seq uint64, version int64) error {
	hb, _ := json.Marshal(seq)
	for attempt := 0; attempt < maxAppendAttempts; attempt++ {
		if attempt > 0 {
			if err := backoff(ctx, attempt); err != nil {
				return err
			}
		}
		_, err := kv.Put(ctx, checkpointHeadKey, hb, store.PutOptions{Check: true, Version: version})
		if !errors.Is(err, store.ErrVersionConflict) {
			if err != nil {
				return fmt.Errorf("audit: advance checkpoint head: %w", err)
			}
			return nil
		}
		e, err := kv.Get(ctx, checkpointHeadKey)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("audit: read checkpoint head: %w", err)
		}
		version = 0
		if err == nil {
			var cur uint64
			if json.Unmarshal(e.Value, &cur) == nil && cur >= seq {
				return nil
			}
			version = e.Version
		}
	}
	return errors.New("audit: too much contention moving the checkpoint head")
}

// checkSince checks that the records from the one the last checkpoint
// signed (if any) up to the head link, that the head's hash is the last
// record's, and that every record this process appended still has the hash
// it had when appended (known).
func checkSince(ctx context.Context, kv store.KV, last Checkpoint, h head, known func(uint64) (string, bool)) error {
	prev := ZeroHash
	after := uint64(0)
	if last.Seq > 0 {
		e, err := kv.Get(ctx, RecordKey(last.Seq))
		if err != nil {
			return fmt.Errorf("audit: record %d, signed by the last checkpoint: %w", last.Seq, errors.Join(err, ErrBrokenChain))
		}
		rec, err := decodeStrict(e.Value)
		if err != nil || rec.Hash != last.Hash {
			return fmt.Errorf("audit: record %d differs from what the last checkpoint signed; not signing: %w", last.Seq, ErrBrokenChain)
		}
		prev, after = last.Hash, last.Seq
	}
	for seq := after; seq < h.Seq; {
		es, err := kv.List(ctx, store.ListOptions{Prefix: recordPrefix, After: RecordKey(seq), Limit: store.MaxLimit})
		if err != nil {
			return fmt.Errorf("audit: list records: %w", err)
		}
		if len(es) == 0 {
			return fmt.Errorf("audit: records %d to %d are missing; not signing: %w", seq+1, h.Seq, ErrBrokenChain)
		}
		for _, e := range es {
			n, ok := parseRecordKey(e.Key)
			if !ok || n != seq+1 {
				return fmt.Errorf("audit: record %d is missing or out of place; not signing: %w", seq+1, ErrBrokenChain)
			}
			if n > h.Seq {
				break
			}
			rec, err := decodeStrict(e.Value)
			if err != nil || rec.Seq != n || rec.Prev != prev {
				return fmt.Errorf("audit: record %d does not verify or link; not signing: %w", n, ErrBrokenChain)
			}
			if want, ok := known(n); ok && want != rec.Hash {
				return fmt.Errorf("audit: record %d was rewritten after this core appended it; not signing: %w", n, ErrBrokenChain)
			}
			prev, seq = rec.Hash, n
			if seq == h.Seq {
				break
			}
		}
	}
	if prev != h.Hash {
		return fmt.Errorf("audit: the head's hash is not record %d's; not signing: %w", h.Seq, ErrBrokenChain)
	}
	return nil
}

func storeKey(ctx context.Context, kv store.KV, k PublicKey) error {
	b, _ := json.Marshal(k)
	key := keyPrefix + k.Fingerprint()
	if _, err := kv.Put(ctx, key, b, store.PutOptions{Check: true}); err != nil && !errors.Is(err, store.ErrVersionConflict) {
		return fmt.Errorf("audit: store checkpoint key: %w", err)
	}
	return nil
}

// StoredKeys returns the checkpoint keys recorded beside the log, by
// fingerprint. They are only as trustworthy as the store: pin keys from a
// trusted copy when verifying (see VerifyOptions).
func StoredKeys(ctx context.Context, kv store.KV) (map[string]PublicKey, error) {
	out := map[string]PublicKey{}
	after := ""
	for i := 0; i < 1000; i++ {
		es, err := kv.List(ctx, store.ListOptions{Prefix: keyPrefix, After: after, Limit: store.MaxLimit})
		if err != nil {
			return nil, fmt.Errorf("audit: list keys: %w", err)
		}
		for _, e := range es {
			var k PublicKey
			if err := json.Unmarshal(e.Value, &k); err != nil || keyPrefix+k.Fingerprint() != e.Key {
				continue // a mangled key entry verifies nothing
			}
			out[k.Fingerprint()] = k
		}
		if len(es) < store.MaxLimit {
			break
		}
		after = es[len(es)-1].Key
	}
	return out, nil
}

// Run makes checkpoints until ctx ends: after every Every appended events,
// and every Interval when the head moved.
func (c *Checkpointer) Run(ctx context.Context) {
	if cp, err := LatestCheckpoint(ctx, c.log.kv); err == nil {
		c.mu.Lock()
		c.last = cp
		c.mu.Unlock()
	}
	t := time.NewTicker(c.opts.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_, _ = c.Checkpoint(ctx)
		case <-c.log.appended:
			seq, _, err := c.log.Head(ctx)
			if err != nil {
				continue
			}
			if seq >= c.Status().LastSeq+uint64(c.opts.Every) {
				_, _ = c.Checkpoint(ctx)
			}
		}
	}
}

// Export is the document `avon audit export --checkpoint` writes: the newest
// checkpoint and the key that verifies it.
type Export struct {
	Checkpoint Checkpoint `json:"checkpoint"`
	Key        PublicKey  `json:"key"`
}

// ExportLatest returns the newest checkpoint with its key.
func ExportLatest(ctx context.Context, kv store.KV) (Export, error) {
	cp, err := LatestCheckpoint(ctx, kv)
	if err != nil {
		return Export{}, err
	}
	keys, err := StoredKeys(ctx, kv)
	if err != nil {
		return Export{}, err
	}
	k, ok := keys[cp.PublicKeySHA256]
	if !ok {
		return Export{}, fmt.Errorf("audit: the key of checkpoint %d is not stored", cp.Seq)
	}
	return Export{Checkpoint: cp, Key: k}, nil
}

// ParseExport parses an exported checkpoint document strictly.
func ParseExport(b []byte) (Export, error) {
	var e Export
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		return Export{}, fmt.Errorf("audit: not a checkpoint export: %w", err)
	}
	if dec.More() {
		return Export{}, errors.New("audit: trailing data after the checkpoint export")
	}
	if len(e.Checkpoint.Hash) != 64 || e.Checkpoint.Seq == 0 {
		return Export{}, errors.New("audit: checkpoint export lacks seq or hash")
	}
	return e, nil
}
