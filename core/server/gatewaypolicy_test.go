package server

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/avonzt/avon/core/cache/memcache"
	"github.com/avonzt/avon/core/events"
	"github.com/avonzt/avon/core/pluginhost"
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

type downRecorder struct{ n atomic.Int64 }

func (d *downRecorder) PolicyUnavailable(error) { d.n.Add(1) }

// TestWatchPolicyPlugin: the gateway is told once per outage when the
// policy plugin leaves the running and healthy state.
func TestWatchPolicyPlugin(t *testing.T) {
	var state atomic.Value
	state.Store(pluginhost.Status{Kind: "policy", Name: "abac", State: pluginhost.StateRunning, Healthy: true})
	var polls atomic.Int64
	status := func() pluginhost.Status { polls.Add(1); return state.Load().(pluginhost.Status) }
	var d downRecorder
	stop := watchPolicyPlugin(status, &d, time.Millisecond, hclog.NewNullLogger())
	defer stop()
	waitPolls := func(n int64) {
		t.Helper()
		start := polls.Load()
		for i := 0; polls.Load() < start+n; i++ {
			if i == 10000 {
				t.Fatal("the watcher stopped polling")
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitPolls(3)
	if d.n.Load() != 0 {
		t.Fatal("told while the plugin runs")
	}
	state.Store(pluginhost.Status{Kind: "policy", Name: "abac", State: pluginhost.StateRestarting})
	waitPolls(3)
	if got := d.n.Load(); got != 1 {
		t.Fatalf("told %d times for one outage", got)
	}
	state.Store(pluginhost.Status{Kind: "policy", Name: "abac", State: pluginhost.StateRunning, Healthy: true})
	waitPolls(3)
	state.Store(pluginhost.Status{Kind: "policy", Name: "abac", State: pluginhost.StateRunning, Healthy: false})
	waitPolls(3)
	if got := d.n.Load(); got != 2 {
		t.Fatalf("told %d times for two outages", got)
	}
}
