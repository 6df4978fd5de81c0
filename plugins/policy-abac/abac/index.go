package abac

import (
	"iter"
	"slices"

	"github.com/cedar-policy/cedar-go"
	"github.com/cedar-policy/cedar-go/types"
	xast "github.com/cedar-policy/cedar-go/x/exp/ast"
)

// indexFrom is the set size from which decisions use the principal index:
// below it, evaluating every policy costs less than finding candidates.
const indexFrom = 16

// principalIndex finds, for a principal, the policies whose principal
// scope can hold: a policy left out has a scope that is false for it, and
// Cedar evaluates a false scope to "does not apply" without an error, so
// the decision is the same as over the whole set. Each policy is in
// exactly one bucket.
type principalIndex struct {
	policies []indexed
	all      []int                      // principal (no constraint)
	byType   map[types.EntityType][]int // principal is T
	byEntity map[types.EntityUID][]int  // principal == E, principal in E, principal is T in E
}

type indexed struct {
	id cedar.PolicyID
	p  *cedar.Policy
}

func newPrincipalIndex() *principalIndex {
	return &principalIndex{byType: map[types.EntityType][]int{}, byEntity: map[types.EntityUID][]int{}}
}

func (x *principalIndex) add(id cedar.PolicyID, p *cedar.Policy) {
	i := len(x.policies)
	x.policies = append(x.policies, indexed{id: id, p: p})
	switch sc := (*xast.Policy)(p.AST()).Principal.(type) {
	case xast.ScopeTypeEq:
		x.byEntity[sc.Entity] = append(x.byEntity[sc.Entity], i)
	case xast.ScopeTypeIn:
		x.byEntity[sc.Entity] = append(x.byEntity[sc.Entity], i)
	case xast.ScopeTypeIsIn:
		x.byEntity[sc.Entity] = append(x.byEntity[sc.Entity], i)
	case xast.ScopeTypeIs:
		x.byType[sc.Type] = append(x.byType[sc.Type], i)
	default:
		x.all = append(x.all, i)
	}
}

// candidates returns the policies that may apply to principal, given the
// entities that define its ancestors.
func (x *principalIndex) candidates(principal types.EntityUID, ents types.EntityGetter) candidateList {
	c := candidateList{x: x, idx: make([]int, 0, len(x.all)+8)}
	c.idx = append(c.idx, x.all...)
	c.idx = append(c.idx, x.byType[principal.Type]...)
	c.idx = append(c.idx, x.byEntity[principal]...)
	// The principal's ancestors, as Cedar's `in` walks them: every parent,
	// and the parents of those the store knows.
	var seenBuf, todoBuf [16]types.EntityUID
	seen := uidSet{small: append(seenBuf[:0], principal)}
	todo := append(todoBuf[:0], principal)
	for len(todo) > 0 {
		u := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		e, ok := ents.Get(u)
		if !ok {
			continue
		}
		for par := range e.Parents.All() {
			if !seen.add(par) {
				continue
			}
			c.idx = append(c.idx, x.byEntity[par]...)
			todo = append(todo, par)
		}
	}
	return c
}

// uidSet is a set of entity UIDs: a slice while it is small (an agent has
// a few groups), a map past that.
type uidSet struct {
	small []types.EntityUID
	big   map[types.EntityUID]struct{}
}

// add adds u and says whether it was new.
func (s *uidSet) add(u types.EntityUID) bool {
	if s.big != nil {
		if _, ok := s.big[u]; ok {
			return false
		}
		s.big[u] = struct{}{}
		return true
	}
	if slices.Contains(s.small, u) {
		return false
	}
	if len(s.small) < 32 {
		s.small = append(s.small, u)
		return true
	}
	s.big = make(map[types.EntityUID]struct{}, 2*len(s.small))
	for _, x := range s.small {
		s.big[x] = struct{}{}
	}
	s.big[u] = struct{}{}
	return true
}

// candidateList is a cedar.PolicyIterator over some policies of a set.
type candidateList struct {
	x   *principalIndex
	idx []int
}

func (c candidateList) All() iter.Seq2[cedar.PolicyID, *cedar.Policy] {
	return func(yield func(cedar.PolicyID, *cedar.Policy) bool) {
		for _, i := range c.idx {
			p := c.x.policies[i]
			if !yield(p.id, p.p) {
				return
			}
		}
	}
}
