package enroll

import (
	"context"
	"crypto/rand"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/avonzt/avon/core/store"
	"github.com/avonzt/avon/core/store/memstore"
	"github.com/avonzt/avon/core/store/postgres"
	"github.com/avonzt/avon/internal/testsvc/pgtest"
)

var bg = context.Background()

type clock struct {
	mu  sync.Mutex
	t   time.Time
	err error
}

func (c *clock) now() (time.Time, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t, c.err
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestCreateAndSpendOnce(t *testing.T) {
	kv := memstore.New()
	c := &clock{t: time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC)}
	tk := NewTokens(kv, rand.Reader, c.now)
	tok, rec, err := tk.Create(bg, "eng", time.Hour, "operator:alice")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok, TokenPrefix) || len(tok) != len(TokenPrefix)+43 || rec.Group != "eng" || !rec.ExpiresAt.Equal(c.t.Add(time.Hour)) {
		t.Fatalf("token %q record %+v", tok, rec)
	}
	// Only the hash is stored.
	es, _ := kv.List(bg, store.ListOptions{})
	for _, e := range es {
		if strings.Contains(string(e.Value), strings.TrimPrefix(tok, TokenPrefix)) || strings.Contains(e.Key, strings.TrimPrefix(tok, TokenPrefix)) {
			t.Fatalf("the token itself is stored: %s", e.Key)
		}
	}
	got, err := tk.Spend(bg, tok, "agent-key-1")
	if err != nil || got.Group != "eng" || got.UsedBy != "agent-key-1" {
		t.Fatalf("spend: %+v %v", got, err)
	}
	if _, err := tk.Spend(bg, tok, "agent-key-2"); !errors.Is(err, ErrUsed) {
		t.Fatalf("second spend: %v", err)
	}
	if list, _ := tk.List(bg, 10); len(list) != 0 {
		t.Fatalf("spent token still listed: %+v", list)
	}
}

func TestSpendRefusals(t *testing.T) {
	kv := memstore.New()
	c := &clock{t: time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC)}
	tk := NewTokens(kv, rand.Reader, c.now)
	tok, _, err := tk.Create(bg, "eng", time.Minute, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"", "avon-enroll-v1.", "avon-enroll-v2." + strings.Repeat("A", 43), TokenPrefix + "!!!", TokenPrefix + strings.Repeat("A", 42)} {
		if _, err := tk.Spend(bg, bad, ""); !errors.Is(err, ErrMalformed) {
			t.Errorf("%q: %v", bad, err)
		}
	}
	other := TokenPrefix + strings.Repeat("B", 43)
	if _, err := tk.Spend(bg, other, ""); !errors.Is(err, ErrUnknown) {
		t.Errorf("unknown: %v", err)
	}
	// No trusted time: nothing is spent.
	c.err = errors.New("calibration is 40s old")
	if _, err := tk.Spend(bg, tok, ""); err == nil || !strings.Contains(err.Error(), "no trusted time") {
		t.Fatalf("stale clock: %v", err)
	}
	c.err = nil
	c.advance(time.Minute)
	if _, err := tk.Spend(bg, tok, ""); !errors.Is(err, ErrExpired) {
		t.Fatalf("expired: %v", err)
	}
	for _, tc := range []struct {
		group string
		ttl   time.Duration
	}{{"Eng", time.Hour}, {"", time.Hour}, {"eng", 0}, {"eng", 31 * 24 * time.Hour}} {
		if _, _, err := tk.Create(bg, tc.group, tc.ttl, ""); !errors.Is(err, ErrInvalid) {
			t.Errorf("create %q %s: %v", tc.group, tc.ttl, err)
		}
	}
	list, err := tk.List(bg, 10)
	if err != nil || len(list) != 1 {
		t.Fatalf("list: %+v %v", list, err)
	}
	if err := tk.Revoke(bg, list[0].ID); err != nil {
		t.Fatal(err)
	}
	if err := tk.Revoke(bg, list[0].ID); !errors.Is(err, ErrUnknown) {
		t.Fatalf("revoke twice: %v", err)
	}
}

// spendRace spends one token from n goroutines over the given stores (one
// per replica) and returns how many succeeded.
func spendRace(t *testing.T, n int, tks ...*Tokens) int {
	tok, _, err := tks[0].Create(bg, "eng", time.Hour, "")
	if err != nil {
		t.Fatal(err)
	}
	var wins, used atomic.Int32
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, err := tks[i%len(tks)].Spend(bg, tok, "")
			switch {
			case err == nil:
				wins.Add(1)
			case errors.Is(err, ErrUsed):
				used.Add(1)
			default:
				t.Errorf("spend: %v", err)
			}
		}()
	}
	close(start)
	wg.Wait()
	if int(wins.Load()+used.Load()) != n {
		t.Fatalf("%d wins + %d used of %d", wins.Load(), used.Load(), n)
	}
	return int(wins.Load())
}

func TestConcurrentSpendOneWinner(t *testing.T) {
	c := &clock{t: time.Now()}
	tk := NewTokens(memstore.New(), rand.Reader, c.now)
	for i := 0; i < 5; i++ {
		if w := spendRace(t, 32, tk); w != 1 {
			t.Fatalf("round %d: %d spenders won", i, w)
		}
	}
}

// TestConcurrentSpendAcrossReplicas: two core replicas (two pools on one
// real PostgreSQL) race for the same token.
func TestConcurrentSpendAcrossReplicas(t *testing.T) {
	pg := pgtest.Start(t)
	dsn := pg.CreateDatabase(t, "enroll")
	c := &clock{t: time.Now()}
	var tks []*Tokens
	for i := 0; i < 2; i++ {
		kv, err := postgres.Open(bg, dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = kv.Close() })
		tks = append(tks, NewTokens(kv, rand.Reader, c.now))
	}
	for i := 0; i < 5; i++ {
		if w := spendRace(t, 16, tks...); w != 1 {
			t.Fatalf("round %d: %d spenders won", i, w)
		}
	}
}

func FuzzTokenID(f *testing.F) {
	f.Add(TokenPrefix + strings.Repeat("A", 43))
	f.Add("avon-enroll-v1.")
	f.Fuzz(func(t *testing.T, s string) {
		id, err := tokenID(s)
		if err == nil && len(id) != 64 {
			t.Fatalf("id %q", id)
		}
		if err != nil && !errors.Is(err, ErrMalformed) {
			t.Fatalf("untyped: %v", err)
		}
	})
}

func TestPageGetRevokeAt(t *testing.T) {
	kv := memstore.New()
	c := &clock{t: time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC)}
	tk := NewTokens(kv, rand.Reader, c.now)
	var toks []string
	for i := range 1203 {
		tok, _, err := tk.Create(bg, "eng", time.Hour, "op")
		if err != nil {
			t.Fatal(err)
		}
		if i < 3 {
			toks = append(toks, tok)
		}
	}
	spent, err := tk.Spend(bg, toks[0], "agent")
	if err != nil {
		t.Fatal(err)
	}
	for _, withUsed := range []bool{false, true} {
		after, n, pages := "", 0, 0
		for ; pages < 2000; pages++ {
			es, more, err := tk.Page(bg, after, 100, withUsed)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range es {
				if e.ID <= after || e.Version == 0 || (!withUsed && !e.UsedAt.IsZero()) {
					t.Fatalf("%+v after %q", e, after)
				}
				after = e.ID
				n++
			}
			if !more {
				break
			}
		}
		if want := map[bool]int{false: 1202, true: 1203}[withUsed]; n != want {
			t.Fatalf("withUsed %v: %d tokens, want %d", withUsed, n, want)
		}
	}
	if _, _, err := tk.Page(bg, "x", 10, false); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad position: %v", err)
	}
	// RevokeAt: a stale version and a used token change nothing.
	id, _ := tokenID(toks[1])
	e, err := tk.Get(bg, id)
	if err != nil {
		t.Fatal(err)
	}
	if err := tk.RevokeAt(bg, id, e.Version+1); !errors.Is(err, ErrVersionConflict) {
		t.Fatalf("stale version: %v", err)
	}
	if err := tk.RevokeAt(bg, id, e.Version); err != nil {
		t.Fatal(err)
	}
	if _, err := tk.Get(bg, id); !errors.Is(err, ErrUnknown) {
		t.Fatalf("after revoke: %v", err)
	}
	used, _ := tk.Get(bg, spent.ID)
	if err := tk.RevokeAt(bg, spent.ID, used.Version); !errors.Is(err, ErrUsed) {
		t.Fatalf("revoke a used token: %v", err)
	}
	if _, err := tk.Get(bg, "ABC"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad id: %v", err)
	}
}
