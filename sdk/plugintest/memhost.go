package plugintest

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/avonzt/avon/sdk/ca"
	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/host"
	"github.com/avonzt/avon/sdk/kms"
	"github.com/avonzt/avon/sdk/policy"
	"github.com/avonzt/avon/sdk/pqc"
)

// MemHost is an in-memory host.Host with the core's storage semantics
// (versions from one global sequence, compare-and-set), the core cache's
// semantics (TTLs on the host's clock, atomic consume), randomness from a
// reader of the test's choice, and audit events kept for inspection.
type MemHost struct {
	rand io.Reader
	now  func() time.Time
	kms  []namedKMS // wired kms plugins, the default first

	mu     sync.Mutex // guards the fields below
	seq    int64
	data   map[string]host.Entry
	cache  map[string]*cacheEntry // "v"+key: values; "r"+key: rate counters
	events []host.Event
	// FailAudit makes Audit fail, to test fail-closed behaviour.
	failAudit bool
	failCache bool
}

// HostOption configures a MemHost.
type HostOption func(*MemHost)

// WithRand sets the randomness source (default crypto/rand).
func WithRand(r io.Reader) HostOption { return func(h *MemHost) { h.rand = r } }

// WithNow sets the clock (default time.Now).
func WithNow(now func() time.Time) HostOption { return func(h *MemHost) { h.now = now } }

type namedKMS struct {
	name string
	kms  kms.KMS
}

// WithKMS wires a kms plugin by name, as `uses = { kms = [...] }` does: the
// first one wired is the default KMS returns.
func WithKMS(name string, k kms.KMS) HostOption {
	return func(h *MemHost) { h.kms = append(h.kms, namedKMS{name: name, kms: k}) }
}

// NewHost returns an empty in-memory host.
func NewHost(opts ...HostOption) *MemHost {
	h := &MemHost{rand: rand.Reader, now: time.Now, data: map[string]host.Entry{}, cache: map[string]*cacheEntry{}}
	for _, o := range opts {
		o(h)
	}
	return h
}

func (h *MemHost) Rand() io.Reader       { return h.rand }
func (h *MemHost) Storage() host.Storage { return (*memStorage)(h) }
func (h *MemHost) Cache() host.Cache     { return (*memCache)(h) }

func (h *MemHost) Now(context.Context) (host.Time, error) {
	return host.Time{Time: h.now(), Calibrated: true}, nil
}

// SetAuditFailure makes every later Audit call fail (or succeed again).
func (h *MemHost) SetAuditFailure(fail bool) {
	h.mu.Lock()
	h.failAudit = fail
	h.mu.Unlock()
}

func (h *MemHost) Audit(_ context.Context, ev host.Event) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.failAudit {
		return fmt.Errorf("test audit failure: %w", host.ErrAuditFailed)
	}
	h.events = append(h.events, ev)
	return nil
}

// Events returns the audit events received so far.
func (h *MemHost) Events() []host.Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]host.Event(nil), h.events...)
}

// KMS returns the first kms plugin wired with WithKMS.
func (h *MemHost) KMS() (kms.KMS, error) {
	if len(h.kms) == 0 {
		return nil, host.ErrNotWired
	}
	return h.kms[0].kms, nil
}

// KMSNamed returns the kms plugin wired with WithKMS under name ("" = KMS).
func (h *MemHost) KMSNamed(name string) (kms.KMS, error) {
	if name == "" {
		return h.KMS()
	}
	var names []string
	for _, k := range h.kms {
		if k.name == name {
			return k.kms, nil
		}
		names = append(names, k.name)
	}
	sort.Strings(names)
	if len(names) == 0 {
		names = []string{"none"}
	}
	return nil, fmt.Errorf("kms %q (wired: %s): %w", name, strings.Join(names, ", "), host.ErrNotWired)
}

func (h *MemHost) PQC() (pqc.Provider, error) { return nil, host.ErrNotWired }

// CA is not wired on a MemHost.
func (h *MemHost) CA() (ca.CA, error) { return nil, host.ErrNotWired }

// Policy is not wired on a MemHost.
func (h *MemHost) Policy() (policy.Engine, error) { return nil, host.ErrNotWired }

type memStorage MemHost

func validKey(k string) error {
	if k == "" || len(k) > 512 || !utf8.ValidString(k) {
		return fmt.Errorf("key %q: %w", k, host.ErrInvalidKey)
	}
	for _, r := range k {
		if unicode.IsControl(r) {
			return fmt.Errorf("key %q: control character: %w", k, host.ErrInvalidKey)
		}
	}
	return nil
}

func (s *memStorage) Get(_ context.Context, key string) (host.Entry, error) {
	if err := validKey(key); err != nil {
		return host.Entry{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.data[key]
	if !ok {
		return host.Entry{}, fmt.Errorf("get %q: %w", key, host.ErrNotFound)
	}
	e.Value = append([]byte(nil), e.Value...)
	return e, nil
}

func (s *memStorage) check(key string, check bool, version int64) error {
	if !check {
		return nil
	}
	e, ok := s.data[key]
	if (version == 0 && ok) || (version != 0 && (!ok || e.Version != version)) {
		return fmt.Errorf("key %q: %w", key, host.ErrVersionConflict)
	}
	return nil
}

func (s *memStorage) Put(_ context.Context, key string, value []byte, o host.PutOptions) (int64, error) {
	if err := validKey(key); err != nil {
		return 0, err
	}
	if len(value) > 32<<20 {
		return 0, host.ErrValueTooLarge
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(key, o.Check, o.Version); err != nil {
		return 0, err
	}
	s.seq++
	s.data[key] = host.Entry{Key: key, Value: append([]byte(nil), value...), Version: s.seq}
	return s.seq, nil
}

func (s *memStorage) Delete(_ context.Context, key string, o host.DeleteOptions) error {
	if err := validKey(key); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(key, o.Check, o.Version); err != nil {
		return err
	}
	delete(s.data, key)
	return nil
}

func (s *memStorage) List(_ context.Context, o host.ListOptions) ([]host.Entry, error) {
	limit := o.Limit
	switch {
	case limit < 0 || limit > 10000:
		return nil, fmt.Errorf("list limit %d: %w", limit, errdef.ErrInvalidArgument)
	case limit == 0:
		limit = 1000
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var keys []string
	for k := range s.data {
		if strings.HasPrefix(k, o.Prefix) && k > o.After {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	if len(keys) > limit {
		keys = keys[:limit]
	}
	out := make([]host.Entry, 0, len(keys))
	for _, k := range keys {
		e := s.data[k]
		e.Value = append([]byte(nil), e.Value...)
		out = append(out, e)
	}
	return out, nil
}

// Apply implements host.Applier: under the lock it checks every op, then
// writes them all, or returns the first failed check and writes nothing.
func (s *memStorage) Apply(_ context.Context, ops []host.Op) ([]int64, error) {
	if err := host.CheckApply(ops); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkLocked(ops); err != nil {
		return nil, err
	}
	return s.applyLocked(ops), nil
}

// checkLocked checks every op's version; the first that fails comes back
// as a *host.ApplyError. The caller holds s.mu.
func (s *memStorage) checkLocked(ops []host.Op) error {
	for i, op := range ops {
		if err := s.check(op.Key, op.Check, op.Version); err != nil {
			return &host.ApplyError{Index: i, Key: op.Key, Err: err}
		}
	}
	return nil
}

// applyLocked writes checked ops; the caller holds s.mu.
func (s *memStorage) applyLocked(ops []host.Op) []int64 {
	vs := make([]int64, len(ops))
	for i, op := range ops {
		if op.Delete {
			delete(s.data, op.Key)
			continue
		}
		s.seq++
		s.data[op.Key] = host.Entry{Key: op.Key, Value: append([]byte{}, op.Value...), Version: s.seq}
		vs[i] = s.seq
	}
	return vs
}

// ApplyAudited implements host.AuditedApplier: under the lock it checks
// every op, then writes them all and records ev, or returns the first
// failed check (or the audit failure SetAuditFailure set) and changes
// nothing.
func (s *memStorage) ApplyAudited(_ context.Context, ops []host.Op, ev host.Event) ([]int64, error) {
	if err := host.CheckAuditedApply(ops, ev); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkLocked(ops); err != nil {
		return nil, err
	}
	if s.failAudit {
		return nil, fmt.Errorf("test audit failure: %w", host.ErrAuditFailed)
	}
	vs := s.applyLocked(ops)
	s.events = append(s.events, ev)
	return vs, nil
}

var (
	_ host.Host           = (*MemHost)(nil)
	_ host.Applier        = (*memStorage)(nil)
	_ host.AuditedApplier = (*memStorage)(nil)
)
