package server

import (
	"context"
	"errors"
	"math/big"
	"sync"
	"testing"
	"time"
)

// fakeStatus is a CA status lookup with a call counter.
type fakeStatus struct {
	mu      sync.Mutex
	revoked map[string]bool
	err     error
	calls   int
	during  func() // runs inside the lookup (races with Invalidate)
}

func (f *fakeStatus) lookup(_ context.Context, serial string) (bool, error) {
	f.mu.Lock()
	f.calls++
	during, revoked, err := f.during, f.revoked[serial], f.err
	f.mu.Unlock()
	if during != nil {
		during()
	}
	return revoked, err
}

func (f *fakeStatus) set(fn func(*fakeStatus)) { f.mu.Lock(); fn(f); f.mu.Unlock() }

func TestStatusCache(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	clock := func() time.Time { return now }
	serial := big.NewInt(0xabc)

	t.Run("good is remembered for its TTL", func(t *testing.T) {
		f := &fakeStatus{revoked: map[string]bool{}}
		c := newStatusCache(f.lookup, clock)
		for range 3 {
			if r, err := c.Revoked(serial); r || err != nil {
				t.Fatalf("Revoked = %v, %v", r, err)
			}
		}
		if f.calls != 1 {
			t.Fatalf("%d lookups, want 1", f.calls)
		}
		now = now.Add(statusGoodTTL)
		_, _ = c.Revoked(serial)
		if f.calls != 2 {
			t.Fatalf("%d lookups after the TTL, want 2", f.calls)
		}
	})
	t.Run("invalidate forgets good answers", func(t *testing.T) {
		f := &fakeStatus{revoked: map[string]bool{}}
		c := newStatusCache(f.lookup, clock)
		_, _ = c.Revoked(serial)
		f.set(func(f *fakeStatus) { f.revoked["abc"] = true })
		c.Invalidate()
		if r, err := c.Revoked(serial); !r || err != nil {
			t.Fatalf("after invalidate: %v, %v", r, err)
		}
		f.set(func(f *fakeStatus) { f.revoked["abc"] = false }) // revoked stays revoked
		if r, _ := c.Revoked(serial); !r {
			t.Fatal("a revoked answer was forgotten")
		}
	})
	t.Run("errors fail closed and are not remembered", func(t *testing.T) {
		f := &fakeStatus{revoked: map[string]bool{}, err: errors.New("ca down")}
		c := newStatusCache(f.lookup, clock)
		if _, err := c.Revoked(serial); err == nil {
			t.Fatal("no error")
		}
		f.set(func(f *fakeStatus) { f.err = nil })
		if r, err := c.Revoked(serial); r || err != nil {
			t.Fatalf("after recovery: %v, %v", r, err)
		}
		if f.calls != 2 {
			t.Fatalf("%d lookups, want 2", f.calls)
		}
	})
	t.Run("an answer raced by an invalidation is not stored", func(t *testing.T) {
		f := &fakeStatus{revoked: map[string]bool{}}
		c := newStatusCache(f.lookup, clock)
		f.during = c.Invalidate
		_, _ = c.Revoked(serial)
		f.set(func(f *fakeStatus) { f.during = nil })
		_, _ = c.Revoked(serial)
		if f.calls != 2 {
			t.Fatalf("%d lookups, want 2: the raced good answer was kept", f.calls)
		}
	})
}
