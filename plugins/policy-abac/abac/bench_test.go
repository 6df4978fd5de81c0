package abac

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/avonzt/avon/sdk/policy"
)

// manyPolicies returns n policies: one per port, each for its own group
// (scoped) or for every principal, plus a forbid, so that without the
// principal index every query runs every policy.
func manyPolicies(n int, scoped bool) string {
	var b strings.Builder
	for i := range n - 1 {
		prin := "principal"
		if scoped {
			prin = fmt.Sprintf(`principal in Group::"g%d"`, i)
		}
		fmt.Fprintf(&b, "@id(\"p%d\") permit (%s, action == Action::\"reach\", resource in Network::\"corp\") when { context.destination.port == %d };\n", i, prin, 1000+i)
	}
	b.WriteString(`@id("no-ssh") @reason("no ssh") forbid (principal, action == Action::"reach", resource) when { context.destination.port == 22 };` + "\n")
	return b.String()
}

// cpuTime is the process's user and system CPU time: on a shared machine
// it says what an operation costs better than the wall clock does.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// flows returns n new-flow queries as a gateway batches them: each to its
// own destination, from 16 sessions (16 distinct postures and sources).
func flows(n int) []policy.Query {
	qs := make([]policy.Query, n)
	for i := range qs {
		q := reach("laptop", 443, true)
		c := strings.Replace(string(q.Context), `"10.20.0.10"`, fmt.Sprintf(`"10.20.%d.%d"`, i/250, 1+i%250), 1)
		c = strings.Replace(c, `"0.3.0"`, fmt.Sprintf(`"0.3.%d"`, i%16), 1)
		c = strings.Replace(c, `"port":51234`, fmt.Sprintf(`"port":%d`, 50000+i%16), 1)
		q.Context = []byte(c)
		qs[i] = q
	}
	return qs
}

func benchEvaluate(b *testing.B, s *Set, batch int) {
	qs := flows(batch)
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	for b.Loop() {
		ds, err := s.Evaluate(testEntities, qs, At(testNow))
		if err != nil || !ds[0].Allow {
			b.Fatalf("%v %+v", err, ds[0])
		}
	}
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "decisions/s")
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N*batch), "cpu-ns/decision")
}

// BenchmarkEvaluate: decisions with AVON's full flow context (parsed and
// converted per query) against basePolicies, batches of 1 and 256.
func BenchmarkEvaluate(b *testing.B) {
	s := mustCompile(b, Source{ID: "bench", Policies: basePolicies})
	for _, n := range []int{1, 256} {
		b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) { benchEvaluate(b, s, n) })
	}
}

// BenchmarkPolicies: one decision against sets of 10, 100 and 1,000
// policies: scoped to groups (the principal index leaves the agent's own)
// and unscoped (every policy is evaluated).
func BenchmarkPolicies(b *testing.B) {
	for _, scoped := range []bool{true, false} {
		for _, n := range []int{10, 100, 1000} {
			s := mustCompile(b, Source{ID: "bench", Policies: manyPolicies(n, scoped)})
			name := fmt.Sprintf("scoped=%v/policies=%d", scoped, n)
			b.Run(name, func(b *testing.B) {
				ents, err := s.Entities(testEntities)
				if err != nil {
					b.Fatal(err)
				}
				q := reach("laptop", 443, true)
				b.ReportAllocs()
				cpu0 := cpuTime()
				for b.Loop() {
					if d := s.Decide(ents, q, At(testNow)); d.Allow {
						b.Fatalf("%+v", d)
					}
				}
				b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
			})
		}
	}
}

// BenchmarkCompile: parse and validate sets of 10, 100 and 1,000 policies.
func BenchmarkCompile(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		text := manyPolicies(n, true)
		b.Run(fmt.Sprintf("policies=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if s, d := Compile(Source{ID: "bench", Policies: text}); s == nil {
					b.Fatal(d)
				}
			}
		})
	}
}
