// Package memstore is an in-memory store.KV (and store.Batcher) for fast
// unit tests of the packages that use a store. It passes the same
// conformance suite (storetest) as the real backends.
//
// It must not be used by a running core: nothing survives the process, and
// List sorts the whole map on every call.
package memstore

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/avonzt/avon/core/store"
)

// Store is an in-memory store.KV. One mutex serializes every call, which
// makes each one atomic and compare-and-set trivially correct.
type Store struct {
	mu     sync.Mutex // guards the fields below
	seq    int64
	data   map[string]store.Entry
	closed bool
}

// New returns an empty store.
func New() *Store { return &Store{data: map[string]store.Entry{}} }

// begin checks ctx and Close; the caller must hold s.mu.
func (s *Store) begin(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.closed {
		return store.ErrClosed
	}
	return nil
}

// Get implements store.KV.
func (s *Store) Get(ctx context.Context, key string) (store.Entry, error) {
	if err := store.ValidateKey(key); err != nil {
		return store.Entry{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.begin(ctx); err != nil {
		return store.Entry{}, err
	}
	e, ok := s.data[key]
	if !ok {
		return store.Entry{}, fmt.Errorf("get %q: %w", key, store.ErrNotFound)
	}
	e.Value = append([]byte{}, e.Value...)
	return e, nil
}

// check enforces a compare-and-set condition; the caller must hold s.mu.
func (s *Store) check(key string, check bool, version int64) error {
	if !check {
		return nil
	}
	e, ok := s.data[key]
	if (version == 0 && ok) || (version != 0 && (!ok || e.Version != version)) {
		return fmt.Errorf("key %q: %w", key, store.ErrVersionConflict)
	}
	return nil
}

// Put implements store.KV.
func (s *Store) Put(ctx context.Context, key string, value []byte, o store.PutOptions) (int64, error) {
	if err := store.ValidateKey(key); err != nil {
		return 0, err
	}
	if err := store.CheckValue(value); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.begin(ctx); err != nil {
		return 0, err
	}
	if err := s.check(key, o.Check, o.Version); err != nil {
		return 0, err
	}
	s.seq++
	s.data[key] = store.Entry{Key: key, Value: append([]byte{}, value...), Version: s.seq}
	return s.seq, nil
}

// Delete implements store.KV.
func (s *Store) Delete(ctx context.Context, key string, o store.DeleteOptions) error {
	if err := store.ValidateKey(key); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.begin(ctx); err != nil {
		return err
	}
	if err := s.check(key, o.Check, o.Version); err != nil {
		return err
	}
	delete(s.data, key)
	return nil
}

// Apply implements store.Batcher: under the lock it checks every op, then
// applies them all, so a failed check writes nothing.
func (s *Store) Apply(ctx context.Context, ops []store.Op) ([]int64, error) {
	if err := store.CheckBatch(ops); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.begin(ctx); err != nil {
		return nil, err
	}
	// Keys are distinct, so checking every op before the first write is
	// the same as checking each one as it comes.
	for i, op := range ops {
		if err := s.check(op.Key, op.Check, op.Version); err != nil {
			return nil, &store.BatchError{Index: i, Key: op.Key, Err: err}
		}
	}
	vs := make([]int64, len(ops))
	for i, op := range ops {
		if op.Delete {
			delete(s.data, op.Key)
			continue
		}
		s.seq++
		s.data[op.Key] = store.Entry{Key: op.Key, Value: append([]byte{}, op.Value...), Version: s.seq}
		vs[i] = s.seq
	}
	return vs, nil
}

// List implements store.KV.
func (s *Store) List(ctx context.Context, o store.ListOptions) ([]store.Entry, error) {
	limit, err := store.CheckList(o)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.begin(ctx); err != nil {
		return nil, err
	}
	keys := make([]string, 0)
	for k := range s.data {
		if strings.HasPrefix(k, o.Prefix) && k > o.After {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	if len(keys) > limit {
		keys = keys[:limit]
	}
	out := make([]store.Entry, 0, len(keys))
	for _, k := range keys {
		e := s.data[k]
		e.Value = append([]byte{}, e.Value...)
		out = append(out, e)
	}
	return out, nil
}

// Ping implements store.KV.
func (s *Store) Ping(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.begin(ctx)
}

// Close implements store.KV.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

var (
	_ store.KV      = (*Store)(nil)
	_ store.Batcher = (*Store)(nil)
)
