package calibtest

import (
	"testing"
	"time"
)

func TestFakeClockTimelines(t *testing.T) {
	start := time.Date(2026, 12, 2, 7, 0, 0, 0, time.UTC)
	c := NewFakeClock(start)
	t0 := c.Now()
	if !t0.Equal(start) {
		t.Fatalf("wall %s, want %s", t0, start)
	}
	c.Advance(3 * time.Second)
	t1 := c.Now()
	if d := t1.Sub(t0); d != 3*time.Second {
		t.Fatalf("monotonic advance %s, want 3s", d)
	}
	for _, step := range []time.Duration{time.Hour, -2 * time.Hour} {
		before := c.Now()
		c.StepWall(step)
		after := c.Now()
		if d := after.Sub(before); d != 0 {
			t.Fatalf("StepWall(%s) moved the monotonic clock by %s", step, d)
		}
		if d := after.Round(0).Sub(before.Round(0)); d != step {
			t.Fatalf("StepWall(%s) moved the wall clock by %s", step, d)
		}
	}
	if c.WallError() != -time.Hour {
		t.Fatalf("WallError %s, want -1h", c.WallError())
	}
	if got, want := c.Now().Round(0), start.Add(3*time.Second-time.Hour); !got.Equal(want) {
		t.Fatalf("wall %s, want %s", got, want)
	}
}

func TestFakeClockAdvanceNegativePanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("Advance(-1s) did not panic")
		}
	}()
	NewFakeClock(time.Now()).Advance(-time.Second)
}
