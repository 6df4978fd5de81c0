package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/avonzt/avon/core/store"
	"github.com/avonzt/avon/core/store/storetest"
)

// TestApplyVersionText: the script hands out a batch's versions from one
// INCRBY as decimal text, in op order; the text must be exact where a Lua
// number is not (above 2^53) and across a carry.
func TestApplyVersionText(t *testing.T) {
	srv := server(t)
	raw := rawClient(t, srv.Addr())
	ctx := context.Background()
	for _, c := range []struct {
		counter string // "" for none
		want    []string
	}{
		{"", []string{"1", "2", "3"}},
		{"7", []string{"8", "9", "10"}},
		{"997", []string{"998", "999", "1000"}},
		{"1099", []string{"1100", "1101", "1102"}},
		{"9007199254740992", []string{"9007199254740993", "9007199254740994", "9007199254740995"}},
		{"9223372036854775804", []string{"9223372036854775805", "9223372036854775806", "9223372036854775807"}},
	} {
		t.Run("counter "+c.counter, func(t *testing.T) {
			p := uniquePrefix()
			s := openTest(t, Options{Addr: srv.Addr(), KeyPrefix: p})
			if c.counter != "" {
				if err := raw.Set(ctx, p+"version", c.counter, 0).Err(); err != nil {
					t.Fatal(err)
				}
			}
			ops := []store.Op{
				{Key: "a", Value: []byte("1")},
				{Key: "gone", Delete: true},
				{Key: "b", Value: []byte("2"), Check: true},
				{Key: "absent", Delete: true, Check: true},
				{Key: "c", Value: []byte("3")},
			}
			vs, err := s.Apply(ctx, ops)
			if err != nil {
				t.Fatal(err)
			}
			got := []string{fmt.Sprint(vs[0]), fmt.Sprint(vs[2]), fmt.Sprint(vs[4])}
			if strings.Join(got, ",") != strings.Join(c.want, ",") || vs[1] != 0 || vs[3] != 0 {
				t.Fatalf("versions %v, want %v at the puts", vs, c.want)
			}
			for i, k := range []string{"a", "b", "c"} {
				if v, err := raw.HGet(ctx, p+"k:"+k, "v").Result(); err != nil || v != c.want[i] {
					t.Fatalf("%s stored version %q, %v; want %q", k, v, err, c.want[i])
				}
			}
			if v, err := raw.Get(ctx, p+"version").Result(); err != nil || v != c.want[2] {
				t.Fatalf("counter %q, %v; want %q", v, err, c.want[2])
			}
		})
	}
}

// TestApplyCounterRefused: a counter that cannot give the batch its
// versions (exhausted, negative) refuses the whole batch before anything
// is written, the counter included.
func TestApplyCounterRefused(t *testing.T) {
	srv := server(t)
	raw := rawClient(t, srv.Addr())
	ctx := context.Background()
	for _, counter := range []string{"9223372036854775806", "9223372036854775807", "-5", "0x10"} {
		t.Run(counter, func(t *testing.T) {
			p := uniquePrefix()
			s := openTest(t, Options{Addr: srv.Addr(), KeyPrefix: p})
			if _, err := s.Put(ctx, "keep", []byte("v"), store.PutOptions{}); err != nil {
				t.Fatal(err)
			}
			if err := raw.Set(ctx, p+"version", counter, 0).Err(); err != nil {
				t.Fatal(err)
			}
			before := dump(t, raw, p)
			_, err := s.Apply(ctx, []store.Op{{Key: "a"}, {Key: "keep", Delete: true}, {Key: "b"}})
			if !errors.Is(err, ErrCorrupt) || !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), "nothing was written") {
				t.Fatalf("Apply with counter %s: %v; want ErrCorrupt, nothing written", counter, err)
			}
			if after := dump(t, raw, p); after != before {
				t.Fatalf("a refused batch changed the data:\nbefore %s\nafter  %s", before, after)
			}
			// A batch of deletes draws no version and goes through.
			if _, err := s.Apply(ctx, []store.Op{{Key: "keep", Delete: true}}); err != nil {
				t.Fatalf("deletes only, counter %s: %v", counter, err)
			}
		})
	}
}

// TestApplyConflictMessages: a failed check names the op, its key and
// what was found, like Put's and Delete's.
func TestApplyConflictMessages(t *testing.T) {
	s := openShared(t)
	ctx := context.Background()
	v, err := s.Put(ctx, "k", []byte("v"), store.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		op   store.Op
		want string
	}{
		{store.Op{Key: "k", Check: true}, fmt.Sprintf(`batch op 1 ("k"): put "k": key exists at version %d`, v)},
		{store.Op{Key: "k", Check: true, Version: v + 5}, fmt.Sprintf(`put "k": key at version %d, not %d`, v, v+5)},
		{store.Op{Key: "absent", Check: true, Version: v}, fmt.Sprintf(`put "absent": key absent, not at version %d`, v)},
		{store.Op{Key: "k", Delete: true, Check: true}, fmt.Sprintf(`delete "k": key exists at version %d`, v)},
		{store.Op{Key: "absent", Delete: true, Check: true, Version: v}, fmt.Sprintf(`delete "absent": key absent, not at version %d`, v)},
	} {
		ops := []store.Op{{Key: "other"}, c.op}
		_, err := s.Apply(ctx, ops)
		var be *store.BatchError
		if !errors.As(err, &be) || be.Index != 1 || !errors.Is(err, store.ErrVersionConflict) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Apply(%+v) = %v; want a BatchError for op 1 saying %q", c.op, err, c.want)
		}
	}
}

// BenchmarkRedisStoreApply runs storetest.BenchApply: 10 writes as one Apply (one script)
// against the same 10 writes as sequential Puts.
func BenchmarkRedisStoreApply(b *testing.B) {
	storetest.BenchApply(b, func(b *testing.B) store.KV { return benchStore(b) })
}
