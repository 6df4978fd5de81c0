package gateway

import "time"

// timerWheel is a hashed timing wheel: it files entries by the time they
// next need the timer loop, so a tick touches only the entries due (and
// the few far-future ones sharing their slot) instead of every session.
//
// Time is cut into slots of width; slot k holds [k*width, (k+1)*width) in
// Unix time. The wheel has a power-of-two number of buckets, and an entry
// due in slot k lives in bucket k mod len(buckets): one due beyond the
// wheel's span simply stays in its bucket when a tick passes it early.
// Entries fire at the first due call whose time reaches their slot, so up
// to one width late and never early. Firing early is the caller's choice:
// scheduleBy keeps the earlier of two times, and callers re-check their
// real deadlines when an entry fires (lazy rescheduling: a deadline that
// moved later needs no wheel operation).
//
// A clock that steps back more than one slot makes every entry fire at the
// next due call, so the caller re-evaluates them against the new clock.
//
// It is not safe for concurrent use; the Gateway guards it with its own
// mutex (a leaf lock: nothing else is locked while it is held).
type timerWheel[T any] struct {
	width   int64 // slot width in ns
	buckets []*wheelEntry[T]
	mask    int64
	next    int64 // the first slot no due call has passed yet
	n       int
}

// wheelEntry is a wheel's intrusive list node, embedded in what it
// schedules (one per session): filing and removal allocate nothing.
type wheelEntry[T any] struct {
	prev, next *wheelEntry[T]
	slot       int64 // the slot it is due in, while linked
	linked     bool
	v          T
}

// newTimerWheel returns an empty wheel of nbuckets (rounded up to a power
// of two, at least 2) slots of width, whose clock starts at now.
func newTimerWheel[T any](width time.Duration, nbuckets int, now time.Time) *timerWheel[T] {
	if width <= 0 {
		width = time.Second
	}
	n := 2
	for n < nbuckets && n < 1<<20 {
		n <<= 1
	}
	w := &timerWheel[T]{width: int64(width), buckets: make([]*wheelEntry[T], n), mask: int64(n - 1)}
	w.next = w.slotOf(now)
	return w
}

func (w *timerWheel[T]) slotOf(t time.Time) int64 {
	ns := t.UnixNano()
	s := ns / w.width
	if ns < 0 && ns%w.width != 0 {
		s-- // floor for times before 1970
	}
	return s
}

// Len returns how many entries are scheduled.
func (w *timerWheel[T]) Len() int { return w.n }

// scheduleBy makes e fire no later than the slot of at: an unscheduled
// entry is filed at at, a scheduled one moves only if at is earlier. A
// time already passed fires at the next due call.
func (w *timerWheel[T]) scheduleBy(e *wheelEntry[T], at time.Time) {
	s := max(w.slotOf(at), w.next)
	if e.linked {
		if e.slot <= s {
			return
		}
		w.unlink(e)
	}
	b := &w.buckets[s&w.mask]
	e.slot, e.linked, e.prev, e.next = s, true, nil, *b
	if *b != nil {
		(*b).prev = e
	}
	*b = e
	w.n++
}

// remove unschedules e (a no-op when it is not scheduled).
func (w *timerWheel[T]) remove(e *wheelEntry[T]) {
	if e.linked {
		w.unlink(e)
	}
}

func (w *timerWheel[T]) unlink(e *wheelEntry[T]) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		w.buckets[e.slot&w.mask] = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	}
	e.prev, e.next, e.linked = nil, nil, false
	w.n--
}

// due unschedules every entry due at now and appends its value to out.
func (w *timerWheel[T]) due(now time.Time, out []T) []T {
	cur := w.slotOf(now)
	if cur < w.next-1 {
		// The clock stepped back: everything fires, to be re-filed
		// against the new clock.
		for i := range w.buckets {
			for e := w.buckets[i]; e != nil; {
				nx := e.next
				out = append(out, e.v)
				w.unlink(e)
				e = nx
			}
		}
		w.next = cur + 1
		return out
	}
	if cur < w.next {
		return out
	}
	// Visit the buckets of slots next..cur, each at most once.
	first := w.next
	if cur-first >= int64(len(w.buckets)) {
		first = cur - int64(len(w.buckets)) + 1
	}
	for s := first; s <= cur; s++ {
		for e := w.buckets[s&w.mask]; e != nil; {
			nx := e.next
			if e.slot <= cur {
				out = append(out, e.v)
				w.unlink(e)
			}
			e = nx
		}
	}
	w.next = cur + 1
	return out
}
