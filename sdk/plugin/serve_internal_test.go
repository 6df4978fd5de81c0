package plugin

import (
	"runtime"
	"testing"
)

// TestCapProcs: MaxProcs lowers GOMAXPROCS, never raises it, and yields
// to a GOMAXPROCS the operator put in the plugin's environment.
func TestCapProcs(t *testing.T) {
	orig := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(orig) })

	t.Setenv("GOMAXPROCS", "")
	runtime.GOMAXPROCS(3)
	capProcs(1)
	if n := runtime.GOMAXPROCS(0); n != 1 {
		t.Fatalf("GOMAXPROCS %d after MaxProcs 1, want 1", n)
	}
	capProcs(2)
	if n := runtime.GOMAXPROCS(0); n != 1 {
		t.Fatalf("GOMAXPROCS %d after MaxProcs 2 on 1, want 1 (never raised)", n)
	}
	runtime.GOMAXPROCS(3)
	capProcs(0)
	if n := runtime.GOMAXPROCS(0); n != 3 {
		t.Fatalf("GOMAXPROCS %d after MaxProcs 0, want 3 (untouched)", n)
	}
	t.Setenv("GOMAXPROCS", "3")
	capProcs(1)
	if n := runtime.GOMAXPROCS(0); n != 3 {
		t.Fatalf("GOMAXPROCS %d with the operator's GOMAXPROCS=3, want 3", n)
	}
}
