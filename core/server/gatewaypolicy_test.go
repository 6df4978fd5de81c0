package server

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/avonzt/avon/core/cache/memcache"
	"github.com/avonzt/avon/core/events"
)

type countingChanger struct{ n atomic.Int64 }

func (c *countingChanger) PolicyChanged() int { c.n.Add(1); return 0 }

// TestWatchPolicy: a policy.changed event published by another replica
// re-evaluates the gateway's flows; other events do not.
func TestWatchPolicy(t *testing.T) {
	be := memcache.NewBackend(memcache.Options{})
	pub, sub := events.New(be.Open(), "replica-a", nil), events.New(be.Open(), "replica-b", nil)
	var c countingChanger
	stop, err := watchPolicy(context.Background(), sub, &c, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := pub.Publish(ctx, events.CARotated, "dilithium", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := pub.Publish(ctx, events.PolicyChanged, "default", nil); err != nil {
		t.Fatal(err)
	}
	for i := 0; c.n.Load() == 0; i++ {
		if i == 10000 {
			t.Fatal("no re-evaluation after policy.changed")
		}
		time.Sleep(time.Millisecond)
	}
	stop()
	if got := c.n.Load(); got != 1 {
		t.Fatalf("%d re-evaluations for one policy.changed", got)
	}
}
