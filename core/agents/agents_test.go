package agents

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/avonzt/avon/core/store"
	"github.com/avonzt/avon/core/store/embedded"
	"github.com/avonzt/avon/core/store/memstore"
)

func backends(t *testing.T) map[string]store.KV {
	t.Helper()
	kv, err := embedded.Open(context.Background(), filepath.Join(t.TempDir(), "a.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kv.Close() })
	return map[string]store.KV{"memstore": memstore.New(), "embedded": kv}
}

func TestRegistry(t *testing.T) {
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	ctx := context.Background()
	for name, kv := range backends(t) {
		t.Run(name, func(t *testing.T) {
			r := New(kv)
			if _, err := r.Get(ctx, "nope"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("get unknown: %v", err)
			}
			if _, err := r.Get(ctx, "../x"); !errors.Is(err, ErrInvalid) {
				t.Fatalf("get bad id: %v", err)
			}
			if d, err := r.Disabled(ctx, "nope"); d || err != nil {
				t.Fatalf("disabled unknown: %v %v", d, err)
			}
			e, err := r.Enrolled(ctx, Agent{ID: "a1", Group: "eng", CertSerial: "ABC1", CertNotAfter: now.Add(time.Hour)}, now)
			if err != nil || e.EnrolledAt != now || e.CertSerial != "abc1" || e.Version == 0 {
				t.Fatalf("enroll: %+v %v", e, err)
			}
			// Disable at the version read; a stale version changes nothing.
			d, err := r.SetDisabled(ctx, "a1", e.Version, true, "op", "lost laptop", now)
			if err != nil || !d.Disabled || d.ChangedBy != "op" || d.Version <= e.Version {
				t.Fatalf("disable: %+v %v", d, err)
			}
			if _, err := r.SetDisabled(ctx, "a1", e.Version, false, "op2", "", now); !errors.Is(err, ErrVersionConflict) {
				t.Fatalf("stale enable: %v", err)
			}
			if dis, _ := r.Disabled(ctx, "a1"); !dis {
				t.Fatal("the stale enable took effect")
			}
			// A renewal keeps the disabled state and the group.
			ren, err := r.Enrolled(ctx, Agent{ID: "a1", CertSerial: "abc2"}, now.Add(time.Minute))
			if err != nil || !ren.Disabled || ren.Group != "eng" || ren.CertSerial != "abc2" || ren.RenewedAt.IsZero() {
				t.Fatalf("renew: %+v %v", ren, err)
			}
			if _, err := r.SetDisabled(ctx, "a1", ren.Version, false, "op", string(make([]byte, MaxReason+1)), now); !errors.Is(err, ErrInvalid) {
				t.Fatalf("long reason: %v", err)
			}
			if _, err := r.Enrolled(ctx, Agent{ID: "a2"}, now); !errors.Is(err, ErrInvalid) {
				t.Fatalf("no serial: %v", err)
			}
		})
	}
}

func TestListPages(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	for name, kv := range backends(t) {
		t.Run(name, func(t *testing.T) {
			r := New(kv)
			const n = 1203 // more than two scan chunks
			for i := range n {
				group := "eng"
				if i%3 == 0 {
					group = "ops"
				}
				if _, err := r.Enrolled(ctx, Agent{ID: fmt.Sprintf("a%05d", i), Group: group, CertSerial: "01"}, now); err != nil {
					t.Fatal(err)
				}
			}
			for _, tc := range []struct {
				group string
				limit int
				want  int
			}{{"", 1000, n}, {"", 7, n}, {"ops", 100, 401}, {"eng", 333, 802}, {"none", 10, 0}} {
				after, got := "", 0
				for pages := 0; pages < n+2; pages++ {
					es, more, err := r.List(ctx, ListOptions{After: after, Limit: tc.limit, Group: tc.group})
					if err != nil {
						t.Fatal(err)
					}
					for _, e := range es {
						if e.ID <= after || (tc.group != "" && e.Group != tc.group) {
							t.Fatalf("%+v after %q", e.Agent, after)
						}
						after = e.ID
						got++
					}
					if !more {
						break
					}
				}
				if got != tc.want {
					t.Fatalf("group %q limit %d: %d agents, want %d", tc.group, tc.limit, got, tc.want)
				}
			}
			if _, _, err := r.List(ctx, ListOptions{Limit: 0}); !errors.Is(err, ErrInvalid) {
				t.Fatalf("limit 0: %v", err)
			}
		})
	}
}
