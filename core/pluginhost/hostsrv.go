package pluginhost

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/avonzt/avon/core/cache"
	"github.com/avonzt/avon/core/store"
	"github.com/avonzt/avon/sdk/ca"
	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/host"
	"github.com/avonzt/avon/sdk/kms"
	"github.com/avonzt/avon/sdk/policy"
	"github.com/avonzt/avon/sdk/pqc"
)

// Clock is the core's calibrated clock as the host services need it.
type Clock interface {
	Now() host.Time
}

// SystemClock is the system clock, used until the calibration service
// provides the core's calibrated clock. It reports a zero uncertainty and
// calibration age, and calibrated.
type SystemClock struct{}

// Now returns the system time.
func (SystemClock) Now() host.Time { return host.Time{Time: time.Now(), Calibrated: true} }

// AuditSink receives audit events from plugins. An error means the event was
// not recorded; the plugin is told and must refuse the audited operation.
type AuditSink interface {
	Emit(ctx context.Context, source string, ev host.Event) error
}

// AuditBatcher is an AuditSink that also records an event in one store
// transaction with writes of Services.Store (audit.Log.AppendWith): it
// serves host.AuditedApplier. ops carry keys of Services.Store; on success
// it returns one version per op; a failed check is a *store.BatchError
// naming the op (index into ops) and wrapping store.ErrVersionConflict,
// with nothing of ops written and the event not recorded. A sink that is
// no AuditBatcher, or one whose store has no batches (an error wrapping
// errdef.ErrNotImplemented), leaves plugins on separate writes and events.
type AuditBatcher interface {
	AuditSink
	EmitWith(ctx context.Context, source string, ev host.Event, ops []store.Op) ([]int64, error)
}

// Services are what the core lends every plugin.
type Services struct {
	Rand  io.Reader // the core RNG
	Clock Clock
	Store store.KV // root store; each plugin sees only plugins/<kind>/<name>/
	Audit AuditSink
	// Cache backs host.Cache: each plugin's keys live in the token set
	// "plugin" under "<kind>.<name>:" and its rate-limit keys under
	// "plugin/<kind>.<name>/". nil: every cache call fails with
	// host.ErrCacheUnavailable.
	Cache cache.Cache
}

// pluginHost is host.Host as one plugin instance sees it: served to the
// plugin with host.Register over the broker.
type pluginHost struct {
	source  string // "<kind>.<name>", stamped on audit events
	svc     Services
	storage storageView
	cache   cacheView
}

func newPluginHost(source string, svc Services, ns store.KV) *pluginHost {
	return &pluginHost{source: source, svc: svc, storage: storageView{kv: ns, audit: svc.Audit, source: source},
		cache: cacheView{c: svc.Cache, id: source + ":", rate: "plugin/" + source + "/"}}
}

func (h *pluginHost) Rand() io.Reader { return h.svc.Rand }

func (h *pluginHost) Now(context.Context) (host.Time, error) { return h.svc.Clock.Now(), nil }

func (h *pluginHost) Storage() host.Storage { return h.storage }

func (h *pluginHost) Cache() host.Cache { return h.cache }

func (h *pluginHost) Audit(ctx context.Context, ev host.Event) error {
	if h.svc.Audit == nil {
		return fmt.Errorf("no audit log: %w", host.ErrAuditFailed)
	}
	if err := h.svc.Audit.Emit(ctx, h.source, ev); err != nil {
		return fmt.Errorf("audit: %v: %w", err, host.ErrAuditFailed)
	}
	return nil
}

// Wired plugins are served on their own broker streams, not through Host.
func (h *pluginHost) KMS() (kms.KMS, error)            { return nil, host.ErrNotWired }
func (h *pluginHost) KMSNamed(string) (kms.KMS, error) { return nil, host.ErrNotWired }
func (h *pluginHost) PQC() (pqc.Provider, error)       { return nil, host.ErrNotWired }
func (h *pluginHost) CA() (ca.CA, error)               { return nil, host.ErrNotWired }
func (h *pluginHost) Policy() (policy.Engine, error)   { return nil, host.ErrNotWired }

// storageView maps the core store's errors onto the host protocol's.
type storageView struct {
	kv     store.KV  // the plugin's namespace
	audit  AuditSink // for ApplyAudited
	source string    // "<kind>.<name>", stamped on audit events
}

func storeErr(op, key string, err error) error {
	var target error
	switch {
	case errors.Is(err, store.ErrNotFound):
		target = host.ErrNotFound
	case errors.Is(err, store.ErrVersionConflict):
		target = host.ErrVersionConflict
	case errors.Is(err, store.ErrInvalidKey):
		target = host.ErrInvalidKey
	case errors.Is(err, store.ErrValueTooLarge):
		target = host.ErrValueTooLarge
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	default:
		target = host.ErrStorageFailed
	}
	return fmt.Errorf("storage %s %q: %v: %w", op, key, err, target)
}

func (v storageView) Get(ctx context.Context, key string) (host.Entry, error) {
	e, err := v.kv.Get(ctx, key)
	if err != nil {
		return host.Entry{}, storeErr("get", key, err)
	}
	return host.Entry{Key: e.Key, Value: e.Value, Version: e.Version}, nil
}

func (v storageView) Put(ctx context.Context, key string, value []byte, o host.PutOptions) (int64, error) {
	ver, err := v.kv.Put(ctx, key, value, store.PutOptions{Check: o.Check, Version: o.Version})
	if err != nil {
		return 0, storeErr("put", key, err)
	}
	return ver, nil
}

func (v storageView) Delete(ctx context.Context, key string, o host.DeleteOptions) error {
	if err := v.kv.Delete(ctx, key, store.DeleteOptions{Check: o.Check, Version: o.Version}); err != nil {
		return storeErr("delete", key, err)
	}
	return nil
}

func (v storageView) List(ctx context.Context, o host.ListOptions) ([]host.Entry, error) {
	es, err := v.kv.List(ctx, store.ListOptions{Prefix: o.Prefix, After: o.After, Limit: o.Limit})
	if err != nil {
		return nil, storeErr("list", o.Prefix, err)
	}
	out := make([]host.Entry, 0, len(es))
	for _, e := range es {
		out = append(out, host.Entry{Key: e.Key, Value: e.Value, Version: e.Version})
	}
	return out, nil
}

// Apply implements host.Applier over the core store's Batcher (every
// backend is one; a store that is not answers ErrNotImplemented). A failed
// check comes back as a *host.ApplyError naming the plugin's key.
func (v storageView) Apply(ctx context.Context, ops []host.Op) ([]int64, error) {
	if err := host.CheckApply(ops); err != nil {
		return nil, err
	}
	b, ok := v.kv.(store.Batcher)
	if !ok {
		return nil, fmt.Errorf("storage apply: the store writes one key at a time: %w", errdef.ErrNotImplemented)
	}
	vs, err := b.Apply(ctx, storeOps(ops))
	if ae := conflictOf(ops, err); ae != nil {
		return nil, ae
	}
	if errors.Is(err, store.ErrInvalidArgument) {
		return nil, fmt.Errorf("storage apply: %v: %w", err, errdef.ErrInvalidArgument)
	}
	if err != nil {
		return nil, storeErr("apply", ops[0].Key, err)
	}
	return vs, nil
}

// storeOps are a plugin's ops as the core store takes them.
func storeOps(ops []host.Op) []store.Op {
	in := make([]store.Op, len(ops))
	for i, op := range ops {
		in[i] = store.Op{Key: op.Key, Value: op.Value, Delete: op.Delete, Check: op.Check, Version: op.Version}
	}
	return in
}

// conflictOf is the *host.ApplyError naming the plugin's key when err is
// the store's failed check of one of ops; nil otherwise.
func conflictOf(ops []host.Op, err error) *host.ApplyError {
	var be *store.BatchError
	if errors.As(err, &be) && be.Index >= 0 && be.Index < len(ops) && errors.Is(err, store.ErrVersionConflict) {
		return &host.ApplyError{Index: be.Index, Key: ops[be.Index].Key,
			Err: fmt.Errorf("%v: %w", be.Err, host.ErrVersionConflict)}
	}
	return nil
}

// ApplyAudited implements host.AuditedApplier: the ops, checked and
// confined to the plugin's namespace exactly as by Apply, and the event,
// stamped with the plugin's id as by Audit, go to the audit log as one
// store batch. A failed check comes back as a *host.ApplyError naming the
// plugin's key; a sink or store that cannot answers ErrNotImplemented.
func (v storageView) ApplyAudited(ctx context.Context, ops []host.Op, ev host.Event) ([]int64, error) {
	if err := host.CheckAuditedApply(ops, ev); err != nil {
		return nil, err
	}
	ab, ok := v.audit.(AuditBatcher)
	if !ok {
		if v.audit == nil {
			return nil, fmt.Errorf("storage apply audited: no audit log: %w", host.ErrAuditFailed)
		}
		return nil, fmt.Errorf("storage apply audited: the audit log takes no store writes: %w", errdef.ErrNotImplemented)
	}
	sc, ok := v.kv.(store.Scoper)
	if !ok {
		return nil, fmt.Errorf("storage apply audited: the store writes one key at a time: %w", errdef.ErrNotImplemented)
	}
	full, err := sc.Scope(storeOps(ops))
	if errors.Is(err, store.ErrInvalidArgument) {
		return nil, fmt.Errorf("storage apply audited: %v: %w", err, errdef.ErrInvalidArgument)
	}
	if err != nil {
		return nil, storeErr("apply audited", ops[0].Key, err)
	}
	vs, err := ab.EmitWith(ctx, v.source, ev, full)
	ae := conflictOf(ops, err)
	switch {
	case err == nil:
		if len(vs) != len(ops) {
			return nil, fmt.Errorf("storage apply audited: %d versions for %d ops: %w", len(vs), len(ops), host.ErrStorageFailed)
		}
		return vs, nil
	case ae != nil:
		return nil, ae
	case errors.Is(err, errdef.ErrNotImplemented):
		return nil, fmt.Errorf("storage apply audited: %w", err)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return nil, err
	case errors.Is(err, store.ErrUnavailable), errors.Is(err, store.ErrClosed):
		return nil, storeErr("apply audited", ops[0].Key, err)
	}
	return nil, fmt.Errorf("storage apply audited: %v: %w", err, host.ErrAuditFailed)
}

// cacheSet is the token set of every plugin's cache values; the plugin's
// id prefixes its keys, so no plugin reaches another's.
const cacheSet = "plugin"

// cacheView is host.Cache over the core cache, confined to one plugin.
type cacheView struct {
	c    cache.Cache
	id   string // "<kind>.<name>:" before every key
	rate string // "plugin/<kind>.<name>/" before every rate-limit key
}

// cacheErr maps the core cache's errors onto the host protocol's.
func cacheErr(op, key string, err error) error {
	var target error
	switch {
	case errors.Is(err, cache.ErrNotFound):
		target = host.ErrCacheMiss
	case errors.Is(err, cache.ErrInvalidArgument):
		target = host.ErrCacheInvalid
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		if !errors.Is(err, cache.ErrUnavailable) {
			return err
		}
		target = host.ErrCacheUnavailable
	default:
		target = host.ErrCacheUnavailable
	}
	return fmt.Errorf("cache %s %q: %v: %w", op, key, err, target)
}

func (v cacheView) ready(op, key string) error {
	if v.c == nil {
		return fmt.Errorf("cache %s %q: no cache configured: %w", op, key, host.ErrCacheUnavailable)
	}
	return nil
}

func (v cacheView) Put(ctx context.Context, key string, value []byte, o host.CachePutOptions) (bool, error) {
	if err := host.CheckCachePut(key, value, o.TTL); err != nil {
		return false, err
	}
	if err := v.ready("put", key); err != nil {
		return false, err
	}
	if o.IfAbsent {
		added, err := v.c.AddToken(ctx, cacheSet, v.id+key, value, o.TTL)
		if err != nil {
			return false, cacheErr("put", key, err)
		}
		return added, nil
	}
	if err := v.c.PutToken(ctx, cacheSet, v.id+key, value, o.TTL); err != nil {
		return false, cacheErr("put", key, err)
	}
	return true, nil
}

func (v cacheView) Get(ctx context.Context, key string) ([]byte, time.Duration, error) {
	if err := host.CheckCacheKey(key); err != nil {
		return nil, 0, err
	}
	if err := v.ready("get", key); err != nil {
		return nil, 0, err
	}
	val, left, err := v.c.PeekToken(ctx, cacheSet, v.id+key)
	if err != nil {
		return nil, 0, cacheErr("get", key, err)
	}
	return val, left, nil
}

func (v cacheView) Delete(ctx context.Context, key string) error {
	if err := host.CheckCacheKey(key); err != nil {
		return err
	}
	if err := v.ready("delete", key); err != nil {
		return err
	}
	if err := v.c.DeleteToken(ctx, cacheSet, v.id+key); err != nil {
		return cacheErr("delete", key, err)
	}
	return nil
}

func (v cacheView) Consume(ctx context.Context, key string) ([]byte, error) {
	if err := host.CheckCacheKey(key); err != nil {
		return nil, err
	}
	if err := v.ready("consume", key); err != nil {
		return nil, err
	}
	val, err := v.c.ConsumeToken(ctx, cacheSet, v.id+key)
	if err != nil {
		return nil, cacheErr("consume", key, err)
	}
	return val, nil
}

func (v cacheView) Count(ctx context.Context, key string, limit int, window time.Duration) (host.RateDecision, error) {
	if err := host.CheckCacheCount(key, limit, window); err != nil {
		return host.RateDecision{}, err
	}
	if err := v.ready("count", key); err != nil {
		return host.RateDecision{}, err
	}
	d, err := v.c.Allow(ctx, v.rate+key, limit, window)
	if err != nil {
		return host.RateDecision{}, cacheErr("count", key, err)
	}
	return host.RateDecision{Allowed: d.Allowed, Remaining: d.Remaining, RetryAfter: d.RetryAfter}, nil
}

var (
	_ host.Host           = (*pluginHost)(nil)
	_ host.Applier        = storageView{}
	_ host.AuditedApplier = storageView{}
)
