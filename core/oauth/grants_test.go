package oauth

import (
	"crypto/rand"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/avonzt/avon/core/store"
	"github.com/avonzt/avon/core/store/embedded"
	"github.com/avonzt/avon/core/store/memstore"
	"github.com/avonzt/avon/core/store/postgres"
	"github.com/avonzt/avon/internal/testsvc/pgtest"
)

// TestConcurrentRefreshIsReuse: one refresh token presented at once on
// several replicas (grants over one store each): exactly one rotation
// succeeds, every other presentation is reuse, and the grant ends revoked
// (a legitimate client never spends one refresh token twice).
func TestConcurrentRefreshIsReuse(t *testing.T) {
	stores := map[string]func(t *testing.T) []store.KV{
		"memstore": func(*testing.T) []store.KV { kv := memstore.New(); return []store.KV{kv, kv} },
		"embedded": func(t *testing.T) []store.KV {
			kv, err := embedded.Open(bg, filepath.Join(t.TempDir(), "a.db"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = kv.Close() })
			return []store.KV{kv, kv}
		},
		"postgres": func(t *testing.T) []store.KV {
			pg := pgtest.Start(t)
			dsn := pg.CreateDatabase(t, "grants")
			var out []store.KV
			for range 2 { // two replicas, two pools
				kv, err := postgres.Open(bg, dsn)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = kv.Close() })
				out = append(out, kv)
			}
			return out
		},
	}
	for name, open := range stores {
		t.Run(name, func(t *testing.T) {
			kvs := open(t)
			reps := []*grants{{kv: kvs[0], rand: rand.Reader}, {kv: kvs[1], rand: rand.Reader}}
			now := time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC)
			for round := range 5 {
				g, tok, err := reps[0].create(bg, "alice", CLIClientID, "admin", now, time.Hour)
				if err != nil {
					t.Fatal(err)
				}
				var mu sync.Mutex
				var wins, reuse int
				var wg sync.WaitGroup
				for i := range 6 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						_, _, err := reps[i%2].rotate(bg, tok, CLIClientID, now)
						mu.Lock()
						defer mu.Unlock()
						switch {
						case err == nil:
							wins++
						case errors.Is(err, ErrRefreshReuse) || errors.Is(err, ErrInvalidGrant):
							reuse++
						default:
							t.Errorf("round %d: %v", round, err)
						}
					}()
				}
				wg.Wait()
				if wins != 1 || reuse != 5 {
					t.Fatalf("round %d: %d rotations, %d refusals", round, wins, reuse)
				}
				if _, err := reps[1].active(bg, g.ID, now); !errors.Is(err, ErrRevoked) {
					t.Fatalf("round %d: grant after concurrent reuse: %v", round, err)
				}
			}
		})
	}
}

func TestRefreshExpiryAndClient(t *testing.T) {
	g := &grants{kv: memstore.New(), rand: rand.Reader}
	now := time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC)
	gr, tok, err := g.create(bg, "alice", CLIClientID, "admin", now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := g.rotate(bg, tok, "console", now); !errors.Is(err, ErrInvalidGrant) {
		t.Fatalf("another client: %v", err)
	}
	if _, _, err := g.rotate(bg, tok, CLIClientID, now.Add(time.Hour)); !errors.Is(err, ErrInvalidGrant) {
		t.Fatalf("expired: %v", err)
	}
	// Neither refusal spent the token or revoked the grant.
	if _, err := g.active(bg, gr.ID, now); err != nil {
		t.Fatal(err)
	}
	g2, next, err := g.rotate(bg, tok, CLIClientID, now.Add(time.Minute))
	if err != nil || g2.Generation != 2 || next == tok {
		t.Fatalf("rotate: %+v %v", g2, err)
	}
	for _, bad := range []string{"", "avon-rt-v1.", RefreshPrefix + "!!", "avon-rt-v2." + tok[len(RefreshPrefix):]} {
		if _, _, err := g.rotate(bg, bad, CLIClientID, now); !errors.Is(err, ErrInvalidGrant) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}
