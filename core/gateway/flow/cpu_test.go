package flow

import (
	"syscall"
	"testing"
	"time"
)

// cpuMeter reports the process's CPU time per operation ("cpu-ns/op")
// next to the wall time: the machines these benchmarks run on are shared,
// and CPU time is what a packet costs whatever the load.
type cpuMeter struct{ start time.Duration }

func cpuNow() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func startCPU(b *testing.B) *cpuMeter {
	b.Helper()
	return &cpuMeter{start: cpuNow()}
}

func (m *cpuMeter) report(b *testing.B) {
	b.Helper()
	if d := cpuNow() - m.start; d > 0 && b.N > 0 {
		b.ReportMetric(float64(d.Nanoseconds())/float64(b.N), "cpu-ns/op")
	}
}
