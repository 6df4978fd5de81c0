package events

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/avonzt/avon/core/cache"
	"github.com/avonzt/avon/core/cache/memcache"
	"github.com/avonzt/avon/core/cache/redis"
	"github.com/avonzt/avon/internal/testsvc/redistest"
)

var bg = context.Background()

func recv(t *testing.T, s *Subscription, within time.Duration) Event {
	t.Helper()
	select {
	case e, ok := <-s.C():
		if !ok {
			t.Fatal("subscription closed")
		}
		return e
	case <-time.After(within):
		t.Fatalf("no event within %s", within)
	}
	return Event{}
}

func noEvent(t *testing.T, s *Subscription, within time.Duration) {
	t.Helper()
	select {
	case e := <-s.C():
		t.Fatalf("unexpected event %+v", e)
	case <-time.After(within):
	}
}

// between runs the replica-to-replica checks on two caches sharing one
// backend.
func between(t *testing.T, a, b cache.Cache) {
	pub := New(a, "replica-a", nil)
	sub, err := New(b, "replica-b", nil).Subscribe(bg, CertRevoked, SessionKilled)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	sent, err := pub.Publish(bg, CertRevoked, "issuing-1/0a1b2c", map[string]string{"reason": "keyCompromise"})
	if err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	got := recv(t, sub, time.Second)
	if got.ID != sent.ID || got.Kind != CertRevoked || got.Subject != "issuing-1/0a1b2c" || got.Origin != "replica-a" ||
		got.Fields["reason"] != "keyCompromise" {
		t.Fatalf("received %+v, sent %+v", got, sent)
	}
	t.Logf("delivered across replicas in %s", time.Since(began))
	// Kinds not asked for are filtered out.
	if _, err := pub.Publish(bg, PolicyChanged, "default", nil); err != nil {
		t.Fatal(err)
	}
	noEvent(t, sub, 100*time.Millisecond)
	// A payload that is not an event is counted, not delivered.
	if err := a.Publish(bg, Channel, []byte(`{"v":1,"kind":"cert.revoked","subject":"x","id":"short"}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := pub.Publish(bg, SessionKilled, "sess-1", nil); err != nil {
		t.Fatal(err)
	}
	if e := recv(t, sub, time.Second); e.Kind != SessionKilled {
		t.Fatalf("%+v", e)
	}
	if sub.Malformed() != 1 {
		t.Fatalf("malformed count %d", sub.Malformed())
	}
}

func TestInProcess(t *testing.T) {
	be := memcache.NewBackend(memcache.Options{})
	between(t, be.Open(), be.Open())
}

func TestAcrossRedis(t *testing.T) {
	rd := redistest.Start(t)
	open := func() cache.Cache {
		c, err := redis.Open(bg, redis.Options{Addr: rd.Addr()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	a, b := open(), open()
	between(t, a, b)

	// A Redis restart is a gap: the subscriber is told to re-read, and
	// events published afterwards arrive.
	sub, err := New(b, "b", nil).Subscribe(bg)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if err := rd.Restart(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sub.Gaps():
	case <-time.After(10 * time.Second):
		t.Fatal("no gap signalled after a Redis restart")
	}
	pub := New(a, "a", nil)
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := pub.Publish(bg, AgentDisabled, "agent-7", nil)
		if err == nil {
			select {
			case e := <-sub.C():
				if e.Kind != AgentDisabled {
					t.Fatalf("%+v", e)
				}
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no event after the restart (last publish error %v)", err)
		}
	}
}

func TestDecodeRefusals(t *testing.T) {
	good := Event{V: 1, ID: strings.Repeat("a", 32), Kind: CertRevoked, Subject: "s", Time: time.Unix(1, 0).UTC()}
	b, _ := json.Marshal(good)
	if e, err := Decode(b); err != nil || e.Subject != "s" {
		t.Fatalf("good: %v", err)
	}
	rotated := `{"v":1,"id":"` + strings.Repeat("a", 32) + `","kind":"ca.rotated","subject":"dilithium","time":"2026-01-01T00:00:00Z","fields":{"issuer":"issuing","generation":"2"}}`
	if e, err := Decode([]byte(rotated)); err != nil || e.Kind != CARotated || e.Fields["generation"] != "2" {
		t.Fatalf("ca.rotated: %+v %v", e, err)
	}
	for name, raw := range map[string]string{
		"unknown field": `{"v":1,"id":"` + strings.Repeat("a", 32) + `","kind":"cert.revoked","subject":"s","time":"2026-01-01T00:00:00Z","x":1}`,
		"unknown kind":  `{"v":1,"id":"` + strings.Repeat("a", 32) + `","kind":"cert.issued","subject":"s","time":"2026-01-01T00:00:00Z"}`,
		"version":       `{"v":2,"id":"` + strings.Repeat("a", 32) + `","kind":"cert.revoked","subject":"s","time":"2026-01-01T00:00:00Z"}`,
		"no subject":    `{"v":1,"id":"` + strings.Repeat("a", 32) + `","kind":"cert.revoked","subject":"","time":"2026-01-01T00:00:00Z"}`,
		"trailing":      string(b) + `{}`,
		"not json":      `\x00`,
	} {
		if _, err := Decode([]byte(raw)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := New(memcache.New(memcache.Options{}), "o", nil).Publish(bg, "cert.issued", "s", nil); !errors.Is(err, ErrMalformed) {
		t.Errorf("publish of an unknown kind: %v", err)
	}
}

func FuzzDecode(f *testing.F) {
	b, _ := json.Marshal(Event{V: 1, ID: strings.Repeat("a", 32), Kind: CertRevoked, Subject: "s"})
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := Decode(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("untyped: %v", err)
			}
			return
		}
		if e.check() != nil {
			t.Fatal("accepted an invalid event")
		}
	})
}
