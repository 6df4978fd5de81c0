package abac

import (
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cedar-policy/cedar-go"
	"github.com/cedar-policy/cedar-go/types"
	"github.com/cedar-policy/cedar-go/x/exp/schema/resolved"

	"github.com/avonzt/avon/sdk/policy"
)

// Context attributes the engine derives when the schema's context type
// declares them: time (datetime) is filled with the decision time when the
// context omits it; weekday (Long, 0 = Sunday, UTC) is always computed from
// time and must not be sent.
const (
	ContextTime    = "time"
	ContextWeekday = "weekday"
)

// Entities converts a batch's entities into Cedar entities checked against
// the schema: a known, non-action type; attributes of the type's shape;
// parents of the types the schema allows; no UID twice. Any problem fails
// the whole batch with ErrInvalidEntity.
func (s *Set) Entities(in []policy.Entity) (types.EntityMap, error) {
	out := make(types.EntityMap, len(in))
	for i, e := range in {
		uid := types.NewEntityUID(types.EntityType(e.Ref.Type), types.String(e.Ref.ID))
		if _, dup := out[uid]; dup {
			return nil, fmt.Errorf("entity %d (%s): given twice: %w", i, uid, ErrInvalidEntity)
		}
		key := entityKey(e)
		if ent, ok := s.entities.get(key); ok {
			out[uid] = ent
			continue
		}
		ent, err := s.entity(uid, e)
		if err != nil {
			return nil, fmt.Errorf("entity %d (%s): %w", i, uid, err)
		}
		s.entities.put(key, ent)
		out[uid] = ent
	}
	return out, nil
}

func (s *Set) entity(uid types.EntityUID, e policy.Entity) (types.Entity, error) {
	def, ok := s.schema.resolved.Entities[uid.Type]
	if !ok {
		return types.Entity{}, fmt.Errorf("type %q is not in the schema: %w", e.Ref.Type, ErrInvalidEntity)
	}
	attrs := e.Attributes
	if len(attrs) == 0 {
		attrs = []byte("{}")
	}
	n, err := parseJSON(attrs)
	if err != nil {
		return types.Entity{}, fmt.Errorf("attributes: %v: %w", err, ErrInvalidEntity)
	}
	c := converter{sc: s.schema}
	r, err := c.record(n, def.Shape, "attributes")
	if err != nil {
		return types.Entity{}, fmt.Errorf("%v: %w", err, ErrInvalidEntity)
	}
	parents := make([]types.EntityUID, 0, len(e.Parents))
	for _, p := range e.Parents {
		pt := types.EntityType(p.Type)
		if !slices.Contains(def.ParentTypes, pt) {
			return types.Entity{}, fmt.Errorf("a %s cannot be in a %s: %w", uid.Type, p.Type, ErrInvalidEntity)
		}
		parents = append(parents, types.NewEntityUID(pt, types.String(p.ID)))
	}
	return types.Entity{UID: uid, Attributes: types.NewRecord(r), Parents: types.NewEntityUIDSet(parents...)}, nil
}

// entityKey is everything a converted entity depends on, unambiguously.
func entityKey(e policy.Entity) string {
	var b strings.Builder
	b.Grow(len(e.Ref.Type) + len(e.Ref.ID) + len(e.Attributes) + 16*len(e.Parents) + 16)
	field := func(s string) {
		b.WriteString(strconv.Itoa(len(s)))
		b.WriteByte(':')
		b.WriteString(s)
	}
	field(e.Ref.Type)
	field(e.Ref.ID)
	field(string(e.Attributes))
	for _, p := range e.Parents {
		field(p.Type)
		field(p.ID)
	}
	return b.String()
}

// maxCachedEntities bounds a set's cache of converted entities: the core
// sends the same groups, networks and services with every batch.
const maxCachedEntities = 4096

// entityCache holds converted entities by entityKey. Cedar entities are
// immutable, so batches share them.
type entityCache struct {
	mu sync.Mutex // guards m
	m  map[string]types.Entity
}

func (c *entityCache) get(k string) (types.Entity, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k]
	return e, ok
}

func (c *entityCache) put(k string, e types.Entity) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxCachedEntities {
		c.m = make(map[string]types.Entity, 64) // full: start over rather than track recency
	}
	c.m[k] = e
}

// store resolves entities for one query: the query's inline entities, then
// the batch's, then the schema's actions.
type store struct {
	inline  types.EntityMap
	batch   types.EntityMap
	actions types.EntityMap
	memo    map[memoKey]memoVal // nested context objects converted in this batch
	noIndex bool                // evaluate every policy (the reference the index is tested against)
	// slow converts every context with Set.context, never the fast path
	// (the reference the fast path is tested against).
	slow bool
}

func (s *store) Get(uid types.EntityUID) (types.Entity, bool) {
	if e, ok := s.inline[uid]; ok {
		return e, true
	}
	if e, ok := s.batch[uid]; ok {
		return e, true
	}
	e, ok := s.actions[uid]
	return e, ok
}

// Clock returns the calibrated decision time, or the zero time when none
// is available.
type Clock func() time.Time

// At is a Clock that always says t.
func At(t time.Time) Clock { return func() time.Time { return t } }

// Evaluate decides each query against the set, with the batch's entities.
// now gives the time for contexts that omit theirs; it is called at most
// once, and only if such a context comes. When it gives the zero time,
// those queries are denied with ErrNoTime. The error is for the batch as a
// whole (an invalid entity); per-query problems are denials carrying the
// error. A large batch is decided on every core (GOMAXPROCS workers).
func (s *Set) Evaluate(entities []policy.Entity, queries []policy.Query, now Clock) ([]policy.Decision, error) {
	batch, err := s.Entities(entities)
	if err != nil {
		return nil, err
	}
	out := make([]policy.Decision, len(queries))
	var (
		once sync.Once
		t    time.Time
	)
	lazy := func() time.Time {
		once.Do(func() {
			if now != nil {
				t = now()
			}
		})
		return t
	}
	workers := min(runtime.GOMAXPROCS(0), len(queries)/perWorker)
	if workers <= 1 {
		s.decideRange(batch, queries, out, lazy, nil)
		return out, nil
	}
	// Queries are independent: the workers take chunks of them in turn and
	// each writes its own decisions.
	var (
		next atomic.Int64
		wg   sync.WaitGroup
	)
	for range workers {
		wg.Go(func() { s.decideRange(batch, queries, out, lazy, &next) })
	}
	wg.Wait()
	return out, nil
}

// perWorker is the fewest queries worth a worker of their own; chunk is
// how many a worker takes at a time.
const (
	perWorker = 32
	chunk     = 16
)

// decideRange decides queries into out: all of them when next is nil,
// else chunks claimed through next until none is left.
func (s *Set) decideRange(batch types.EntityMap, queries []policy.Query, out []policy.Decision, now Clock, next *atomic.Int64) {
	st := &store{batch: batch, actions: s.schema.actions}
	if len(queries) > 1 {
		st.memo = map[memoKey]memoVal{}
	}
	if next == nil {
		for i := range queries {
			out[i] = s.decide(st, &queries[i], now)
		}
		return
	}
	for {
		lo := int(next.Add(chunk)) - chunk
		if lo >= len(queries) {
			return
		}
		for i := lo; i < min(lo+chunk, len(queries)); i++ {
			out[i] = s.decide(st, &queries[i], now)
		}
	}
}

// Decide evaluates one query against converted entities (see Entities).
func (s *Set) Decide(entities types.EntityMap, q policy.Query, now Clock) policy.Decision {
	return s.decide(&store{batch: entities, actions: s.schema.actions}, &q, now)
}

func (s *Set) decide(st *store, q *policy.Query, now Clock) (d policy.Decision) {
	defer func() {
		// A panic in the Cedar evaluator denies this query, with the reason.
		if r := recover(); r != nil {
			msg := fmt.Sprintf("internal error in the Cedar library: %v", r)
			d = policy.Decision{Errors: []string{msg}, Reasons: []string{"denied: " + msg}}
		}
	}()
	req, inline, err := s.request(q, now, st)
	if err != nil {
		return policy.Decision{Errors: []string{err.Error()}, Reasons: []string{"invalid query: " + err.Error()}}
	}
	st.inline = inline
	var dec types.Decision
	var diag types.Diagnostic
	if len(s.ids) >= indexFrom && !st.noIndex {
		dec, diag = cedar.Authorize(s.byPrin.candidates(req.Principal, st), st, req)
	} else {
		dec, diag = s.policies.IsAuthorized(st, req)
	}
	st.inline = nil
	d = policy.Decision{Allow: dec == cedar.Allow && len(diag.Errors) == 0}
	for _, r := range diag.Reasons {
		d.DeterminingPolicies = append(d.DeterminingPolicies, string(r.PolicyID))
	}
	s.sortIDs(d.DeterminingPolicies)
	for _, id := range d.DeterminingPolicies {
		d.Reasons = append(d.Reasons, s.reason(id))
	}
	if len(diag.Errors) > 0 {
		errs := slices.Clone(diag.Errors)
		slices.SortFunc(errs, func(a, b types.DiagnosticError) int { return s.order(string(a.PolicyID)) - s.order(string(b.PolicyID)) })
		for _, e := range errs {
			d.Errors = append(d.Errors, fmt.Sprintf("policy %s: %s", e.PolicyID, e.Message))
		}
		if dec == cedar.Allow {
			// Cedar skips a policy that errs; a forbid that could not be
			// evaluated must not let a permit through.
			d.DeterminingPolicies, d.Reasons = nil, nil
		}
		d.Reasons = append(d.Reasons, fmt.Sprintf("denied: policy %s could not be evaluated", errs[0].PolicyID))
	} else if len(d.DeterminingPolicies) == 0 {
		d.Reasons = []string{fmt.Sprintf("no policy permits %s to %s %s", req.Principal, q.Action.ID, req.Resource)}
	}
	if !d.Allow && s.src.ReportOnly {
		d.Allow, d.ReportOnly = true, true
	}
	return d
}

func (s *Set) reason(id string) string {
	m := s.meta[cedar.PolicyID(id)]
	if m.reason != "" {
		return m.reason
	}
	if m.forbid {
		return "forbidden by policy " + id
	}
	return "permitted by policy " + id
}

func (s *Set) order(id string) int {
	if i, ok := s.index[id]; ok {
		return i
	}
	return len(s.ids)
}

func (s *Set) sortIDs(ids []string) {
	if len(ids) > 1 {
		slices.SortFunc(ids, func(a, b string) int { return s.order(a) - s.order(b) })
	}
}

// request checks a query against the schema and converts its context.
func (s *Set) request(q *policy.Query, now Clock, st *store) (types.Request, types.EntityMap, error) {
	principal := types.NewEntityUID(types.EntityType(q.Principal.Type), types.String(q.Principal.ID))
	resource := types.NewEntityUID(types.EntityType(q.Resource.Type), types.String(q.Resource.ID))
	action := types.NewEntityUID(types.EntityType(q.Action.Type), types.String(q.Action.ID))
	a, ok := s.schema.resolved.Actions[action]
	if !ok {
		return types.Request{}, nil, fmt.Errorf("action %s is not in the schema: %w", action, ErrInvalidQuery)
	}
	if a.AppliesTo == nil {
		return types.Request{}, nil, fmt.Errorf("action %s is a group and applies to nothing: %w", action, ErrInvalidQuery)
	}
	if !slices.Contains(a.AppliesTo.Principals, principal.Type) {
		return types.Request{}, nil, fmt.Errorf("action %s does not apply to a principal of type %q: %w", action, principal.Type, ErrInvalidQuery)
	}
	if !slices.Contains(a.AppliesTo.Resources, resource.Type) {
		return types.Request{}, nil, fmt.Errorf("action %s does not apply to a resource of type %q: %w", action, resource.Type, ErrInvalidQuery)
	}
	if !st.slow {
		if ctx, inline, ok := s.fastContext(q.Context, s.schema.contexts[action], now); ok {
			return types.Request{Principal: principal, Action: action, Resource: resource, Context: ctx}, inline, nil
		}
	}
	ctx, inline, err := s.context(q.Context, a.AppliesTo.Context, now, st.memo, action.String())
	if err != nil {
		return types.Request{}, nil, err
	}
	return types.Request{Principal: principal, Action: action, Resource: resource, Context: ctx}, inline, nil
}

func (s *Set) context(raw []byte, t resolved.RecordType, now Clock, memo map[memoKey]memoVal, scope string) (types.Record, types.EntityMap, error) {
	if len(raw) == 0 {
		raw = []byte("{}")
	}
	n, err := parseJSON(raw)
	if err != nil {
		return types.Record{}, nil, fmt.Errorf("context: %v: %w", err, ErrInvalidContext)
	}
	if n.kind != 'o' {
		return types.Record{}, nil, fmt.Errorf("context: want an object, got %s: %w", n.kindName(), ErrInvalidContext)
	}
	if a, ok := t[ContextTime]; ok && a.Type == resolved.IsType(resolved.ExtensionType("datetime")) {
		if _, given := n.get(ContextTime); !given {
			var t time.Time
			if now != nil {
				t = now()
			}
			if t.IsZero() {
				return types.Record{}, nil, fmt.Errorf("context has no time: %w", ErrNoTime)
			}
			n.obj = append(n.obj, member{key: ContextTime, val: node{kind: 's', str: t.UTC().Format(time.RFC3339Nano)}})
		}
	}
	weekday := false
	if a, ok := t[ContextWeekday]; ok && a.Type == resolved.IsType(resolved.LongType{}) {
		if _, given := n.get(ContextWeekday); given {
			return types.Record{}, nil, fmt.Errorf("context.weekday is derived from context.time; do not send it: %w", ErrInvalidContext)
		}
		weekday = true
		n.obj = append(n.obj, member{key: ContextWeekday, val: node{kind: 'n', str: "0"}})
	}
	c := converter{sc: s.schema, inline: types.EntityMap{}, memo: memo, scope: scope}
	r, err := c.record(n, t, "context")
	if err != nil {
		return types.Record{}, nil, fmt.Errorf("%v: %w", err, ErrInvalidContext)
	}
	if weekday {
		if dt, ok := r[ContextTime].(types.Datetime); ok {
			r[ContextWeekday] = types.Long(dt.Time().UTC().Weekday())
		}
	}
	if len(c.inline) == 0 {
		c.inline = nil
	}
	return types.NewRecord(r), c.inline, nil
}
