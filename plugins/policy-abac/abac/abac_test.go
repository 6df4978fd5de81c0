package abac

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/avonzt/avon/sdk/policy"
)

var testNow = time.Date(2026, 12, 2, 13, 30, 0, 0, time.UTC) // a Wednesday

const basePolicies = `@id("eng-web")
@reason("engineering may reach the web tier on 443")
permit (
  principal in Group::"eng",
  action == Action::"reach",
  resource in Network::"corp"
) when { context.destination.port == 443 };

@id("no-ssh")
@reason("nobody reaches port 22")
forbid (principal, action == Action::"reach", resource)
when { context.destination.port == 22 };

@id("eng-ssh")
permit (principal in Group::"eng", action == Action::"reach", resource)
when { context.destination.port == 22 };

@id("unencrypted")
@reason("the disk must be encrypted")
forbid (principal, action == Action::"reach", resource is Network)
unless { context.posture.hasTag("disk.encrypted") && context.posture.getTag("disk.encrypted") == "true" };

@id("admins")
permit (principal in Group::"ops", action in Action::"admin", resource)
when { context.mfa };
`

func mustCompile(t testing.TB, src Source) *Set {
	t.Helper()
	s, diags := Compile(src)
	if s == nil {
		t.Fatalf("compile: %+v", diags)
	}
	return s
}

func ref(typ, id string) policy.EntityRef { return policy.EntityRef{Type: typ, ID: id} }

var testEntities = []policy.Entity{
	{Ref: ref("Group", "eng"), Attributes: []byte(`{"name":"Engineering"}`)},
	{Ref: ref("Group", "ops"), Attributes: []byte(`{"name":"Operations"}`)},
	{Ref: ref("Agent", "laptop"), Attributes: []byte(`{"name":"laptop","os":"linux"}`), Parents: []policy.EntityRef{ref("Group", "eng")}},
	{Ref: ref("Agent", "kiosk"), Attributes: []byte(`{"name":"kiosk","os":"linux"}`)},
	{Ref: ref("User", "alice"), Attributes: []byte(`{"name":"Alice","email":"alice@example.com"}`), Parents: []policy.EntityRef{ref("Group", "ops")}},
	{Ref: ref("Network", "corp"), Attributes: []byte(`{"name":"corp","cidr":"10.20.0.0/16"}`)},
	{Ref: ref("Api", "policies")},
}

func flowContext(port int, encrypted bool) []byte {
	tags := `{}`
	if encrypted {
		tags = `{"disk.encrypted":"true"}`
	}
	return fmt.Appendf(nil, `{
 "calibration_skew_ms": 3,
 "posture": {"os":"linux","agent_version":"0.3.0","clock_offset_ms":-2,"skew_ms":1,"tags":%s},
 "source": {"ip":"203.0.113.7","port":51234},
 "location": {"country":"DE","region":"BE","city":"Berlin"},
 "destination": {"ip":"10.20.0.10","port":%d,"protocol":"tcp"}
}`, tags, port)
}

func reach(agent string, port int, encrypted bool) policy.Query {
	return policy.Query{Principal: ref("Agent", agent), Action: ref("Action", "reach"), Resource: ref("Network", "corp"), Context: flowContext(port, encrypted)}
}

func TestDecisions(t *testing.T) {
	s := mustCompile(t, Source{ID: "default", Policies: basePolicies})
	adminCtx := func(mfa bool) []byte {
		return fmt.Appendf(nil, `{"calibration_skew_ms":0,"source":{"ip":"192.0.2.1","port":443},"mfa":%v}`, mfa)
	}
	cases := []struct {
		name     string
		q        policy.Query
		allow    bool
		policies []string
		reason   string
		errSub   string
	}{
		{"permit", reach("laptop", 443, true), true, []string{"eng-web"}, "engineering may reach the web tier on 443", ""},
		{"default deny other port", reach("laptop", 8080, true), false, nil, `no policy permits Agent::"laptop" to reach Network::"corp"`, ""},
		{"default deny other group", reach("kiosk", 443, true), false, nil, "no policy permits", ""},
		{"forbid overrides permit", reach("laptop", 22, true), false, []string{"no-ssh"}, "nobody reaches port 22", ""},
		{"posture forbid", reach("laptop", 443, false), false, []string{"unencrypted"}, "the disk must be encrypted", ""},
		{"admin group with mfa", policy.Query{Principal: ref("User", "alice"), Action: ref("Action", "admin:policy"), Resource: ref("Api", "policies"), Context: adminCtx(true)},
			true, []string{"admins"}, "permitted by policy admins", ""},
		{"admin without mfa", policy.Query{Principal: ref("User", "alice"), Action: ref("Action", "admin:policy"), Resource: ref("Api", "policies"), Context: adminCtx(false)},
			false, nil, "no policy permits", ""},
		{"unknown action", policy.Query{Principal: ref("Agent", "laptop"), Action: ref("Action", "fly"), Resource: ref("Network", "corp"), Context: flowContext(443, true)},
			false, nil, "invalid query", "not in the schema"},
		{"wrong principal type", policy.Query{Principal: ref("User", "alice"), Action: ref("Action", "reach"), Resource: ref("Network", "corp"), Context: flowContext(443, true)},
			false, nil, "invalid query", `principal of type "User"`},
		{"bad context", policy.Query{Principal: ref("Agent", "laptop"), Action: ref("Action", "reach"), Resource: ref("Network", "corp"), Context: []byte(`{"destination":1}`)},
			false, nil, "invalid query", "context.destination: want an object"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ds, err := s.Evaluate(testEntities, []policy.Query{c.q}, At(testNow))
			if err != nil {
				t.Fatal(err)
			}
			d := ds[0]
			if d.Allow != c.allow || d.ReportOnly {
				t.Fatalf("allow %v report-only %v, want %v: %+v", d.Allow, d.ReportOnly, c.allow, d)
			}
			if !slices.Equal(d.DeterminingPolicies, c.policies) {
				t.Fatalf("policies %v, want %v", d.DeterminingPolicies, c.policies)
			}
			if len(d.Reasons) == 0 || !strings.Contains(strings.Join(d.Reasons, "; "), c.reason) {
				t.Fatalf("reasons %q, want %q", d.Reasons, c.reason)
			}
			if (c.errSub == "") != (len(d.Errors) == 0) || (c.errSub != "" && !strings.Contains(d.Errors[0], c.errSub)) {
				t.Fatalf("errors %q, want %q", d.Errors, c.errSub)
			}
		})
	}
}

func TestEvaluationErrorDenies(t *testing.T) {
	s := mustCompile(t, Source{ID: "errs", Policies: `
@id("all") permit (principal, action == Action::"reach", resource);
@id("linux-only") @reason("only linux agents")
forbid (principal, action == Action::"reach", resource) unless { principal.os == "linux" };
`})
	// ghost is not among the entities: principal.os cannot be read, so the
	// forbid errs; Cedar would skip it and allow through "all".
	ds, err := s.Evaluate(testEntities, []policy.Query{reach("ghost", 443, true), reach("laptop", 443, true)}, At(testNow))
	if err != nil {
		t.Fatal(err)
	}
	if d := ds[0]; d.Allow || len(d.Errors) != 1 || !strings.HasPrefix(d.Errors[0], "policy linux-only: ") || len(d.DeterminingPolicies) != 0 ||
		!strings.Contains(d.Reasons[len(d.Reasons)-1], "linux-only could not be evaluated") {
		t.Fatalf("ghost: %+v", d)
	}
	if d := ds[1]; !d.Allow || len(d.Errors) != 0 || !slices.Equal(d.DeterminingPolicies, []string{"all"}) {
		t.Fatalf("laptop: %+v", d)
	}
}

func TestReportOnly(t *testing.T) {
	s := mustCompile(t, Source{ID: "ro", Policies: basePolicies, ReportOnly: true})
	bad := policy.Query{Principal: ref("Agent", "laptop"), Action: ref("Action", "nope"), Resource: ref("Network", "corp"), Context: flowContext(22, true)}
	ds, err := s.Evaluate(testEntities, []policy.Query{reach("laptop", 22, true), reach("laptop", 443, true), bad}, At(testNow))
	if err != nil {
		t.Fatal(err)
	}
	if d := ds[0]; !d.Allow || !d.ReportOnly || !slices.Equal(d.DeterminingPolicies, []string{"no-ssh"}) || d.Reasons[0] != "nobody reaches port 22" {
		t.Fatalf("would-deny: %+v", d)
	}
	if d := ds[1]; !d.Allow || d.ReportOnly {
		t.Fatalf("allow: %+v", d)
	}
	// A malformed query is not a policy verdict: denied even in report-only mode.
	if d := ds[2]; d.Allow || d.ReportOnly || len(d.Errors) == 0 {
		t.Fatalf("invalid query: %+v", d)
	}
}

// TestBatchMemoMatchesSingle: a batch (which converts each distinct
// nested context object once) decides exactly as the same queries one by
// one, across actions whose contexts share bytes but not types.
func TestBatchMemoMatchesSingle(t *testing.T) {
	s := mustCompile(t, Source{ID: "memo", Policies: basePolicies + `
@id("gw") permit (principal in Group::"eng", action == Action::"connect", resource) when { context.posture.os == "linux" };`})
	ents := append(slices.Clone(testEntities), policy.Entity{Ref: ref("Gateway", "gw"), Attributes: []byte(`{"name":"gw","region":"eu"}`)})
	var qs []policy.Query
	for _, agent := range []string{"laptop", "kiosk", "ghost"} {
		for _, port := range []int{22, 443, 8080} {
			for _, enc := range []bool{true, false} {
				qs = append(qs, reach(agent, port, enc))
				c := strings.Replace(string(flowContext(port, enc)), `"destination"`, `"unused"`, 1)
				c = c[:strings.Index(c, `"unused"`)-3] + "\n}"
				qs = append(qs, policy.Query{Principal: ref("Agent", agent), Action: ref("Action", "connect"), Resource: ref("Gateway", "gw"), Context: []byte(c)})
			}
		}
	}
	batch, err := s.Evaluate(ents, qs, At(testNow))
	if err != nil {
		t.Fatal(err)
	}
	allowed := 0
	for i, q := range qs {
		one, err := s.Evaluate(ents, []policy.Query{q}, At(testNow))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(batch[i], one[0]) {
			t.Fatalf("query %d: batch %+v, alone %+v", i, batch[i], one[0])
		}
		if one[0].Allow {
			allowed++
		}
		if len(one[0].Errors) > 0 {
			t.Fatalf("query %d: %v", i, one[0].Errors)
		}
	}
	if allowed == 0 || allowed == len(qs) {
		t.Fatalf("%d of %d allowed: the test decides nothing", allowed, len(qs))
	}
}

// TestEntityCache: entities converted for one batch are reused by the
// next only when type, id, attributes and parents are all the same; the
// cache is safe under parallel batches.
func TestEntityCache(t *testing.T) {
	s := mustCompile(t, Source{ID: "cache", Policies: basePolicies})
	withParents := func(ps ...policy.EntityRef) []policy.Entity {
		ents := slices.Clone(testEntities)
		ents[2].Parents = ps
		return ents
	}
	decide := func(ents []policy.Entity) (policy.Decision, error) {
		ds, err := s.Evaluate(ents, []policy.Query{reach("laptop", 443, true)}, At(testNow))
		if err != nil {
			return policy.Decision{}, err
		}
		return ds[0], nil
	}
	for range 2 {
		if d, err := decide(withParents(ref("Group", "eng"))); err != nil || !d.Allow {
			t.Fatalf("in eng: %+v %v", d, err)
		}
		if d, err := decide(withParents()); err != nil || d.Allow {
			t.Fatalf("in no group: %+v %v", d, err)
		}
		bad := withParents(ref("Group", "eng"))
		bad[2].Attributes = []byte(`{"name":"laptop"}`)
		if _, err := decide(bad); !errors.Is(err, ErrInvalidEntity) {
			t.Fatalf("invalid attributes: %v", err)
		}
	}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				ents := withParents(ref("Group", "eng"))
				if (i+w)%2 == 0 {
					ents = withParents()
				}
				ents[2].Attributes = fmt.Appendf(nil, `{"name":"laptop-%d","os":"linux"}`, i%7)
				d, err := decide(ents)
				if err != nil || d.Allow != ((i+w)%2 != 0) {
					t.Errorf("worker %d round %d: %+v %v", w, i, d, err)
					return
				}
			}
		}()
	}
	wg.Wait()
}
