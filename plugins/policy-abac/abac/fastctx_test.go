package abac

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/avonzt/avon/sdk/policy"
)

// diffPolicies use every part of the flow context, the derived weekday,
// the time, and inline posture tags.
const diffPolicies = basePolicies + `
@id("weekday") @reason("weekdays only")
forbid (principal, action == Action::"reach", resource) unless { context.weekday >= 1 && context.weekday <= 5 };

@id("from-lan") @reason("from the office LAN")
permit (principal, action == Action::"reach", resource) when {
  context.source.ip.isInRange(ip("203.0.113.0/24")) && context.location.country == "DE" && context.destination.port == 8443 };

@id("new-agent") @reason("agent 0.3 or later")
forbid (principal, action == Action::"reach", resource) when { context.posture.agent_version like "0.2*" };

@id("skew") @reason("clock within 500 ms")
forbid (principal, action == Action::"reach", resource) when { context.calibration_skew_ms > 500 || context.posture.skew_ms > 500 };

@id("evening")
forbid (principal, action, resource) when { context.time.toTime() >= duration("22h") };

@id("tagged")
permit (principal, action == Action::"reach", resource) when { context.posture.hasTag("role") && context.posture.getTag("role") == "kiosk" };

@id("wednesday") @reason("port 80 on Wednesdays")
permit (principal, action == Action::"reach", resource) when { context.weekday == 3 && context.destination.port == 80 };

@id("connect")
permit (principal in Group::"eng", action == Action::"connect", resource);
`

// randomContext makes a context for reach or connect: mostly valid, often
// with the parts a session shares, and now and then malformed in one of
// the ways the fast path must hand to the straightforward one.
func randomContext(r *rand.Rand, flow bool) []byte {
	pick := func(xs ...string) string { return xs[r.IntN(len(xs))] }
	// choose: one of valid, or now and then one of invalid.
	choose := func(valid, invalid []string) string {
		if r.IntN(16) == 0 {
			return invalid[r.IntN(len(invalid))]
		}
		return valid[r.IntN(len(valid))]
	}
	type kv struct{ k, v string }
	var ms []kv
	if r.IntN(5) != 0 {
		ms = append(ms, kv{"time", choose(
			[]string{`"2026-12-02T13:30:00Z"`, `"2026-12-05T23:10:00.250Z"`, `"2026-12-02T10:00:00+01:00"`, `"2026-12-07T08:00:00.000Z"`,
				`"2026-12-04T12:00:00Z"`, `"2026-12-06T12:00:00Z"`},
			[]string{`"not a time"`, `1700000000`})})
	}
	ms = append(ms, kv{"calibration_skew_ms", choose([]string{"3", "3", "900", "-1"}, []string{"1.5", `"3"`, "99999999999999999999"})})
	ms = append(ms, kv{"posture", choose([]string{
		`{"os":"linux","agent_version":"0.3.0","clock_offset_ms":-2,"skew_ms":1,"tags":{"disk.encrypted":"true"}}`,
		`{"os":"linux","agent_version":"0.3.0","clock_offset_ms":-2,"skew_ms":1,"tags":{"disk.encrypted":"true"}}`,
		`{"os":"linux","agent_version":"0.2.9","clock_offset_ms":0,"skew_ms":0,"tags":{}}`,
		`{ "os" : "linux", "agent_version":"0.3.1","clock_offset_ms":0,"skew_ms":700,"tags":{"role":"kiosk","disk.encrypted":"false"}}`,
		`{"os":"linux","agent_version":"0.3.0","clock_offset_ms":0,"skew_ms":0}`,
		`{"type":"Posture","id":"p1"}`,
		`{"os":"lin\u0075x","agent_version":"0.3.0","clock_offset_ms":0,"skew_ms":0,"tags":{"disk.encrypted":"tr\"ue"}}`,
	}, []string{
		`{"os":"linux","agent_version":"0.3.0","clock_offset_ms":0}`,
		`{"os":"linux","agent_version":"0.3.0","clock_offset_ms":0,"skew_ms":0,"extra":1}`,
		`{"os":"linux","os":"bsd","agent_version":"0.3.0","clock_offset_ms":0,"skew_ms":0}`,
		`[1,2]`, `{"os":"linux",`,
	})})
	ms = append(ms, kv{"source", choose([]string{`{"ip":"203.0.113.7","port":51234}`, `{"ip":"198.51.100.1","port":0}`, `{"port":1,"ip":"203.0.113.9"}`},
		[]string{`{"ip":"203.0.113.300","port":1}`, `{"ip":"203.0.113.7"}`})})
	ms = append(ms, kv{"location", choose([]string{`{"country":"DE","region":"BE","city":"Berlin"}`, `{"country":"FR","region":"","city":""}`},
		[]string{`{"country":"DE","region":"","city":"","x":""}`})})
	if flow {
		ms = append(ms, kv{"destination", fmt.Sprintf(`{"ip":"10.20.%d.%d","port":%s,"protocol":"tcp"}`, r.IntN(3), r.IntN(256),
			choose([]string{"443", "22", "8443", "80"}, []string{"443.0", `"443"`}))})
	}
	switch r.IntN(40) {
	case 0:
		ms = append(ms, kv{"weekday", "3"})
	case 1:
		ms = append(ms, kv{"unknown", "1"})
	case 2:
		ms = append(ms, ms[r.IntN(len(ms))]) // a key twice
	case 3:
		ms[r.IntN(len(ms))].k = "po\\u0073ture" // an escaped key
	case 4:
		ms = ms[1:] // one attribute fewer
	}
	r.Shuffle(len(ms), func(i, j int) { ms[i], ms[j] = ms[j], ms[i] })
	sp := func() string { return pick("", "", " ", "\n\t") }
	var b strings.Builder
	b.WriteString(sp() + "{")
	for i, m := range ms {
		if i > 0 {
			b.WriteString("," + sp())
		}
		fmt.Fprintf(&b, `%s"%s"%s:%s%s`, sp(), m.k, sp(), sp(), m.v)
	}
	b.WriteString(sp() + "}" + sp())
	s := b.String()
	switch r.IntN(60) {
	case 0:
		s = s[:r.IntN(len(s))] // truncated
	case 1:
		s += "x" // trailing data
	case 2:
		s = pick("", "[]", "null", `"{}"`, "{}")
	case 3:
		s = strings.Replace(s, "}", "]", 1)
	}
	return []byte(s)
}

// TestFastContextDifferential: the fast context path (with the member cache
// warm from earlier batches) and the straightforward path decide random
// queries the same: verdict, determining policies, reasons and errors.
func TestFastContextDifferential(t *testing.T) {
	s := mustCompile(t, Source{ID: "diff", Policies: diffPolicies})
	r := rand.New(rand.NewPCG(3, 4))
	agents := []string{"laptop", "kiosk", "ghost"}
	allowed, denied, invalid := 0, 0, 0
	for batch := range 200 {
		var now Clock = At(testNow)
		switch batch % 3 {
		case 1:
			now = At(testNow.Add(9 * time.Hour)) // 22:30, a Wednesday
		case 2:
			now = At(time.Time{}) // no calibrated time
		}
		qs := make([]policy.Query, 1+r.IntN(40)+r.IntN(2)*r.IntN(200)) // large ones on several workers
		for i := range qs {
			flow := r.IntN(6) != 0
			q := policy.Query{Principal: ref("Agent", agents[r.IntN(len(agents))]), Action: ref("Action", "reach"),
				Resource: ref("Network", "corp"), Context: randomContext(r, flow)}
			if !flow {
				q.Action, q.Resource = ref("Action", "connect"), ref("Gateway", "gw1")
			}
			qs[i] = q
		}
		ents := append(cloneEntities(testEntities), policy.Entity{Ref: ref("Gateway", "gw1"), Attributes: []byte(`{"name":"gw1","region":"eu"}`)})
		got, err := s.Evaluate(ents, qs, now)
		if err != nil {
			t.Fatal(err)
		}
		batchEnts, err := s.Entities(ents)
		if err != nil {
			t.Fatal(err)
		}
		for i := range qs {
			want := s.decide(&store{batch: batchEnts, actions: s.schema.actions, noIndex: true, slow: true}, &qs[i], now)
			if !reflect.DeepEqual(got[i], want) {
				t.Fatalf("batch %d query %d, context %s:\nfast %+v\nslow %+v", batch, i, qs[i].Context, got[i], want)
			}
			switch {
			case len(want.Errors) > 0:
				invalid++
			case want.Allow:
				allowed++
			default:
				denied++
			}
		}
	}
	t.Logf("%d allowed, %d denied, %d with errors", allowed, denied, invalid)
	if allowed < 100 || denied < 100 || invalid < 100 {
		t.Fatalf("%d allowed, %d denied, %d with errors: the random queries do not cover the cases", allowed, denied, invalid)
	}
}

func cloneEntities(es []policy.Entity) []policy.Entity { return append([]policy.Entity(nil), es...) }

// TestMemberCacheBounded: a stream of distinct members never grows the
// cache past its two generations, and what a session repeats stays.
func TestMemberCacheBounded(t *testing.T) {
	s := mustCompile(t, Source{ID: "bound", Policies: basePolicies})
	shared := reach("laptop", 443, true)
	for i := range 3 * maxCachedMembers {
		q := reach("laptop", 443, true)
		q.Context = []byte(strings.Replace(string(q.Context), `"10.20.0.10"`, fmt.Sprintf(`"10.%d.%d.%d"`, i>>16, i>>8&0xff, i&0xff), 1))
		ds, err := s.Evaluate(testEntities, []policy.Query{q, shared}, At(testNow))
		if err != nil || !ds[0].Allow || !ds[1].Allow {
			t.Fatalf("%v %+v", err, ds)
		}
	}
	s.members.mu.Lock()
	defer s.members.mu.Unlock()
	if n := len(s.members.cur) + len(s.members.old); n > 2*maxCachedMembers {
		t.Fatalf("%d cached members", n)
	}
	if c := s.members.bytes; c > maxCachedMemberBytes {
		t.Fatalf("%d bytes cached", c)
	}
	found := 0
	for k, m := range s.members.cur {
		if k.sh.list[k.attr].name == "posture" && strings.Contains(string(m.raw), "disk.encrypted") {
			found++
		}
	}
	if found != 1 {
		t.Fatalf("the shared posture is cached %d times in the current generation", found)
	}
}

// TestEvaluateWorkers: a batch large enough for several workers asks the
// clock once, and decides each query as one query alone does.
func TestEvaluateWorkers(t *testing.T) {
	s := mustCompile(t, Source{ID: "workers", Policies: diffPolicies})
	qs := flows(8 * perWorker)
	for i := range qs {
		if i%3 == 0 {
			qs[i].Context = []byte(strings.Replace(string(qs[i].Context), `"port":443`, `"port":22`, 1))
		}
	}
	var calls atomic.Int32
	clock := func() time.Time { calls.Add(1); return testNow }
	ds, err := s.Evaluate(testEntities, qs, clock)
	if err != nil {
		t.Fatal(err)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("the clock was asked %d times", n)
	}
	allowed := 0
	for i, q := range qs {
		one, err := s.Evaluate(testEntities, []policy.Query{q}, At(testNow))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(ds[i], one[0]) {
			t.Fatalf("query %d: in the batch %+v, alone %+v", i, ds[i], one[0])
		}
		if one[0].Allow {
			allowed++
		}
	}
	if allowed == 0 || allowed == len(qs) {
		t.Fatalf("%d of %d allowed", allowed, len(qs))
	}
}

// FuzzFastContext: for any context bytes, the fast context path decides
// as the straightforward one does, cold and with the member cache warm.
func FuzzFastContext(f *testing.F) {
	f.Add(flowContext(443, true), true)
	f.Add(flowContext(22, false), false)
	f.Add([]byte(`{"time":"2026-12-04T12:00:00Z","calibration_skew_ms":3,"posture":{"type":"Posture","id":"p"},"source":{"ip":"203.0.113.7","port":1},"location":{"country":"DE","region":"","city":""},"destination":{"ip":"10.20.0.1","port":80,"protocol":"tcp"}}`), true)
	f.Add([]byte(` { "posture" : {"os":"l\u0069nux"} , "po\u0073ture":1 } `), false)
	f.Add([]byte(`{"weekday":3,"destination":{"ip":"10.20.0.1","port":443,"protocol":"tcp"}}`), true)
	f.Add([]byte(`{"calibration_skew_ms":3,"calibration_skew_ms":4}`), false)
	s := mustCompile(f, Source{ID: "fuzz", Policies: diffPolicies})
	batch, err := s.Entities(testEntities)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, ctx []byte, clock bool) {
		now := At(time.Time{})
		if clock {
			now = At(testNow)
		}
		q := policy.Query{Principal: ref("Agent", "laptop"), Action: ref("Action", "reach"), Resource: ref("Network", "corp"), Context: ctx}
		want := s.decide(&store{batch: batch, actions: s.schema.actions, slow: true}, &q, now)
		for range 2 { // cold, then from the member cache
			got := s.decide(&store{batch: batch, actions: s.schema.actions}, &q, now)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("context %q:\nfast %+v\nslow %+v", ctx, got, want)
			}
		}
	})
}
