package abac

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/avonzt/avon/sdk/policy"
)

// randomWorld makes a set of at least indexFrom policies over every kind
// of principal scope, and entities with a random group hierarchy (cycles
// included, some principals and groups absent).
func randomWorld(r *rand.Rand) (Source, []policy.Entity, []policy.Query) {
	var b strings.Builder
	n := indexFrom + r.IntN(24)
	for i := range n {
		effect := "permit"
		if r.IntN(4) == 0 {
			effect = "forbid"
		}
		var scope string
		switch r.IntN(6) {
		case 0:
			scope = "principal"
		case 1:
			scope = fmt.Sprintf(`principal == Agent::"a%d"`, r.IntN(5))
		case 2:
			scope = fmt.Sprintf(`principal in Group::"g%d"`, r.IntN(6))
		case 3:
			scope = "principal is Agent"
		case 4:
			scope = fmt.Sprintf(`principal is Agent in Group::"g%d"`, r.IntN(6))
		case 5:
			scope = fmt.Sprintf(`principal in User::"u%d"`, r.IntN(2))
		}
		cond := "true"
		switch r.IntN(3) {
		case 0:
			cond = fmt.Sprintf("context.destination.port == %d", 440+r.IntN(6))
		case 1:
			cond = `principal.os == "linux"` // errs for an agent the batch lacks
		}
		fmt.Fprintf(&b, "@id(\"p%d\") %s (%s, action == Action::\"reach\", resource) when { %s };\n", i, effect, scope, cond)
	}
	ents := []policy.Entity{{Ref: ref("Network", "corp"), Attributes: []byte(`{"name":"corp","cidr":"10.0.0.0/8"}`)}}
	for g := range 6 {
		if r.IntN(6) == 0 {
			continue // absent group
		}
		e := policy.Entity{Ref: ref("Group", fmt.Sprintf("g%d", g)), Attributes: []byte(`{"name":"g"}`)}
		for range r.IntN(3) {
			e.Parents = appendRef(e.Parents, ref("Group", fmt.Sprintf("g%d", r.IntN(6))))
		}
		ents = append(ents, e)
	}
	for u := range 2 {
		ents = append(ents, policy.Entity{Ref: ref("User", fmt.Sprintf("u%d", u)), Attributes: []byte(`{"name":"u","email":"u@x"}`),
			Parents: []policy.EntityRef{ref("Group", fmt.Sprintf("g%d", r.IntN(6)))}})
	}
	for a := range 4 { // a4 is never given
		e := policy.Entity{Ref: ref("Agent", fmt.Sprintf("a%d", a)), Attributes: []byte(`{"name":"a","os":"linux"}`)}
		for range r.IntN(3) {
			e.Parents = appendRef(e.Parents, ref("Group", fmt.Sprintf("g%d", r.IntN(6))))
		}
		if r.IntN(3) == 0 {
			e.Parents = appendRef(e.Parents, ref("User", fmt.Sprintf("u%d", r.IntN(2))))
		}
		ents = append(ents, e)
	}
	var qs []policy.Query
	for range 12 {
		q := reach(fmt.Sprintf("a%d", r.IntN(5)), 440+r.IntN(6), true)
		qs = append(qs, q)
	}
	return Source{ID: "rand", Policies: b.String()}, ents, qs
}

func appendRef(rs []policy.EntityRef, r policy.EntityRef) []policy.EntityRef {
	for _, x := range rs {
		if x == r {
			return rs
		}
	}
	return append(rs, r)
}

// checkIndex decides every query with the principal index and over the
// whole set, and wants the same decisions.
func checkIndex(t *testing.T, src Source, ents []policy.Entity, qs []policy.Query) (allowed, denied int) {
	t.Helper()
	s, diags := Compile(src)
	if s == nil {
		t.Fatalf("%+v\n%s", diags, src.Policies)
	}
	batch, err := s.Entities(ents)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range qs {
		fast := s.decide(&store{batch: batch, actions: s.schema.actions}, &q, At(testNow))
		full := s.decide(&store{batch: batch, actions: s.schema.actions, noIndex: true}, &q, At(testNow))
		if !reflect.DeepEqual(fast, full) {
			t.Fatalf("principal %s:\nindexed %+v\nfull    %+v\n%s", q.Principal.ID, fast, full, src.Policies)
		}
		if fast.Allow {
			allowed++
		} else {
			denied++
		}
	}
	return allowed, denied
}

// TestPrincipalIndex: a differential test of the principal index against
// evaluating every policy, over random sets and group hierarchies.
func TestPrincipalIndex(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	allowed, denied := 0, 0
	for range 300 {
		src, ents, qs := randomWorld(r)
		a, d := checkIndex(t, src, ents, qs)
		allowed, denied = allowed+a, denied+d
	}
	if allowed == 0 || denied == 0 {
		t.Fatalf("%d allowed, %d denied: the worlds decide nothing", allowed, denied)
	}
}

// FuzzPrincipalIndex: the same differential test from fuzzed seeds.
func FuzzPrincipalIndex(f *testing.F) {
	f.Add(uint64(1), uint64(2))
	f.Add(uint64(7), uint64(99))
	f.Fuzz(func(t *testing.T, a, b uint64) {
		src, ents, qs := randomWorld(rand.New(rand.NewPCG(a, b)))
		checkIndex(t, src, ents, qs)
	})
}

// TestPrincipalIndexDeepHierarchy: an agent 80 groups deep (with a cycle
// back to the first) is matched by policies scoped to any of them, past
// the point where the walk's set of seen groups becomes a map.
func TestPrincipalIndexDeepHierarchy(t *testing.T) {
	const depth = 80
	var b strings.Builder
	for i := range indexFrom {
		fmt.Fprintf(&b, "@id(\"p%d\") permit (principal in Group::\"g%d\", action == Action::\"reach\", resource) when { context.destination.port == %d };\n", i, i*5, 440+i%3)
	}
	fmt.Fprintf(&b, "@id(\"deep\") permit (principal in Group::\"g%d\", action == Action::\"reach\", resource) when { context.destination.port == 22 };\n", depth-1)
	ents := []policy.Entity{{Ref: ref("Agent", "a0"), Attributes: []byte(`{"name":"a","os":"linux"}`), Parents: []policy.EntityRef{ref("Group", "g0")}}}
	for g := range depth {
		ents = append(ents, policy.Entity{Ref: ref("Group", fmt.Sprintf("g%d", g)), Attributes: []byte(`{"name":"g"}`),
			Parents: []policy.EntityRef{ref("Group", fmt.Sprintf("g%d", (g+1)%depth))}})
	}
	qs := []policy.Query{reach("a0", 22, true), reach("a0", 440, true), reach("a0", 441, true), reach("a0", 9, true), reach("a1", 22, true)}
	allowed, denied := checkIndex(t, Source{ID: "deep", Policies: b.String()}, ents, qs)
	if allowed != 3 || denied != 2 {
		t.Fatalf("%d allowed, %d denied", allowed, denied)
	}
}
