package frag

import (
	"bytes"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// Default limits of a Reassembler (the protocol design's defaults).
const (
	DefaultMaxCount  = 16
	DefaultMaxTotal  = 16384
	DefaultMaxChunk  = 1200
	DefaultPerSource = 4
	DefaultGlobal    = 1024
	DefaultTimeout   = 5 * time.Second

	// maxGlobal bounds Global, so a configuration cannot ask for an
	// unbounded table.
	maxGlobal = 1 << 20
)

// Config holds the limits of a Reassembler. A zero field takes its default;
// a negative one, or one the format cannot express, is an error.
type Config struct {
	// MaxCount is the most fragments per message (1..255, default 16).
	MaxCount int
	// MaxTotal is the largest reassembled message in bytes (1..65535,
	// default 16384).
	MaxTotal int
	// MaxChunk is the largest fragment payload in bytes (1..65535, default
	// 1200, which keeps a fragment within the IPv6 minimum MTU).
	MaxChunk int
	// PerSource is the most pending reassemblies per source address and
	// port (default 4); a new one evicts that source's oldest.
	PerSource int
	// Global is the most pending reassemblies in all (1..1<<20, default
	// 1024); a new one evicts the globally oldest.
	Global int
	// Timeout is how long a reassembly may stay incomplete after its first
	// fragment (default 5 s). It is not extended by later fragments.
	Timeout time.Duration
}

func (c Config) withDefaults() (Config, error) {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.MaxCount, DefaultMaxCount)
	def(&c.MaxTotal, DefaultMaxTotal)
	def(&c.MaxChunk, DefaultMaxChunk)
	def(&c.PerSource, DefaultPerSource)
	def(&c.Global, DefaultGlobal)
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	switch {
	case c.MaxCount < 1 || c.MaxCount > MaxFragments:
		return c, fmt.Errorf("max count %d: %w", c.MaxCount, ErrInvalidConfig)
	case c.MaxTotal < 1 || c.MaxTotal > MaxMessage:
		return c, fmt.Errorf("max total %d: %w", c.MaxTotal, ErrInvalidConfig)
	case c.MaxChunk < 1 || c.MaxChunk > MaxMessage:
		return c, fmt.Errorf("max chunk %d: %w", c.MaxChunk, ErrInvalidConfig)
	case c.PerSource < 1:
		return c, fmt.Errorf("per source %d: %w", c.PerSource, ErrInvalidConfig)
	case c.Global < 1 || c.Global > maxGlobal:
		return c, fmt.Errorf("global %d: %w", c.Global, ErrInvalidConfig)
	case c.Timeout < 0:
		return c, fmt.Errorf("timeout %v: %w", c.Timeout, ErrInvalidConfig)
	}
	return c, nil
}

// Stats counts what a Reassembler did with the fragments it was given.
type Stats struct {
	// Accepted fragments stored into a reassembly (new bytes).
	Accepted uint64
	// Duplicates: fragments identical to one already stored, ignored.
	Duplicates uint64
	// Conflicts: fragments that discarded their reassembly (ErrConflict).
	Conflicts uint64
	// Evicted reassemblies pushed out by the per-source or global cap.
	Evicted uint64
	// Expired reassemblies dropped after Timeout.
	Expired uint64
	// Refused fragments that failed the header or limit checks
	// (ErrMalformed); nothing was stored.
	Refused uint64
	// Completed messages returned by Add.
	Completed uint64
}

type key struct {
	src netip.AddrPort
	id  uint32
}

// pending is one reassembly in progress.
type pending struct {
	key     key
	count   int
	total   int
	chunk   int
	created time.Time
	buf     []byte    // total bytes, filled at index*chunk
	have    [4]uint64 // bitmap of received indexes (count <= 255)
	got     int

	// Global list in creation order, oldest at Reassembler.head.
	prev, next *pending
}

func (p *pending) has(i int) bool { return p.have[i>>6]&(1<<(i&63)) != 0 }
func (p *pending) set(i int)      { p.have[i>>6] |= 1 << (i & 63) }

// Reassembler puts fragmented handshake messages back together.
//
// It is safe for concurrent use: one mutex guards all its state, and every
// method holds it for a bounded amount of work (Add touches one reassembly
// plus evictions; Expire walks at most Global reassemblies).
type Reassembler struct {
	cfg Config
	// bufs holds message buffers of capacity cfg.MaxTotal given back by
	// Recycle, for new reassemblies.
	bufs sync.Pool

	mu struct {
		sync.Mutex
		byKey map[key]*pending
		// bySrc lists each source's reassemblies, oldest first; at most
		// PerSource each.
		bySrc      map[netip.AddrPort][]*pending
		head, tail *pending
		stats      Stats
	}
}

// NewReassembler returns a Reassembler with cfg's limits (zero fields take
// the defaults).
func NewReassembler(cfg Config) (*Reassembler, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("new reassembler: %w", err)
	}
	r := &Reassembler{cfg: c}
	r.mu.byKey = make(map[key]*pending)
	r.mu.bySrc = make(map[netip.AddrPort][]*pending)
	return r, nil
}

// Config returns the limits in force (defaults filled in).
func (r *Reassembler) Config() Config { return r.cfg }

// Add takes one fragment received from src at now. It returns the whole
// message and done=true when this fragment completed it; the message is a
// slice owned by the caller (which may hand it back with Recycle once done
// with it). A duplicate of a stored fragment returns
// (nil, false, nil). Errors: ErrMalformed (refused, nothing stored) and
// ErrConflict (the fragment's reassembly was discarded).
func (r *Reassembler) Add(src netip.AddrPort, frag []byte, now time.Time) (msg []byte, done bool, err error) {
	h, payload, err := ParseHeader(frag)
	if err == nil {
		err = r.checkLimits(h, len(payload))
	}
	var chunk int
	if err == nil {
		if chunk = chunkSize(h, len(payload)); chunk == 0 || chunk > r.cfg.MaxChunk {
			err = fmt.Errorf("%d payload bytes at index %d of %d for %d total: %w",
				len(payload), h.Index, h.Count, h.TotalLen, ErrMalformed)
		}
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.mu.stats.Refused++
		return nil, false, fmt.Errorf("add: %w", err)
	}
	r.expireOldestLocked(now)

	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	k := key{src: src, id: h.MsgID}
	p := r.mu.byKey[k]
	if p != nil && r.expired(p, now) {
		r.removeLocked(p)
		r.mu.stats.Expired++
		p = nil
	}
	if p == nil {
		p = r.createLocked(k, h, chunk, now)
	} else if int(h.Count) != p.count || int(h.TotalLen) != p.total || chunk != p.chunk {
		r.removeLocked(p)
		r.mu.stats.Conflicts++
		return nil, false, fmt.Errorf("add: count %d total %d chunk %d against %d/%d/%d: %w",
			h.Count, h.TotalLen, chunk, p.count, p.total, p.chunk, ErrConflict)
	}

	i := int(h.Index)
	off := i * p.chunk
	dst := p.buf[off : off+len(payload)]
	if p.has(i) {
		if !bytes.Equal(dst, payload) {
			r.removeLocked(p)
			r.mu.stats.Conflicts++
			return nil, false, fmt.Errorf("add: index %d again with other bytes: %w", i, ErrConflict)
		}
		r.mu.stats.Duplicates++
		return nil, false, nil
	}
	copy(dst, payload)
	p.set(i)
	p.got++
	r.mu.stats.Accepted++
	if p.got < p.count {
		return nil, false, nil
	}
	r.removeLocked(p)
	r.mu.stats.Completed++
	return p.buf, true, nil
}

func (r *Reassembler) checkLimits(h Header, payloadLen int) error {
	switch {
	case int(h.Count) > r.cfg.MaxCount:
		return fmt.Errorf("count %d above %d: %w", h.Count, r.cfg.MaxCount, ErrMalformed)
	case int(h.TotalLen) > r.cfg.MaxTotal:
		return fmt.Errorf("total_len %d above %d: %w", h.TotalLen, r.cfg.MaxTotal, ErrMalformed)
	case payloadLen > r.cfg.MaxChunk:
		return fmt.Errorf("payload %d above %d: %w", payloadLen, r.cfg.MaxChunk, ErrMalformed)
	}
	return nil
}

func (r *Reassembler) expired(p *pending, now time.Time) bool {
	return now.Sub(p.created) >= r.cfg.Timeout
}

// createLocked starts a reassembly for k, evicting first so the caps hold
// at every moment. The caller must hold r.mu.
func (r *Reassembler) createLocked(k key, h Header, chunk int, now time.Time) *pending {
	if list := r.mu.bySrc[k.src]; len(list) >= r.cfg.PerSource {
		r.removeLocked(list[0])
		r.mu.stats.Evicted++
	}
	if len(r.mu.byKey) >= r.cfg.Global {
		r.removeLocked(r.mu.head)
		r.mu.stats.Evicted++
	}
	p := &pending{
		key:     k,
		count:   int(h.Count),
		total:   int(h.TotalLen),
		chunk:   chunk,
		created: now,
		buf:     r.buffer(int(h.TotalLen)),
	}
	r.mu.byKey[k] = p
	r.mu.bySrc[k.src] = append(r.mu.bySrc[k.src], p)
	p.prev = r.mu.tail
	if r.mu.tail != nil {
		r.mu.tail.next = p
	} else {
		r.mu.head = p
	}
	r.mu.tail = p
	return p
}

// buffer returns n bytes for a new reassembly: a recycled buffer when
// there is one, else a new one of capacity MaxTotal (so it can be recycled).
// A recycled buffer holds an older message's bytes; Add returns a message
// only once every fragment was copied in, and the fragments cover it
// exactly (chunkSize), so none of the older bytes is ever returned.
func (r *Reassembler) buffer(n int) []byte {
	if b, ok := r.bufs.Get().(*[]byte); ok {
		return (*b)[:n]
	}
	return make([]byte, n, r.cfg.MaxTotal)
}

// Recycle hands back a message Add returned, once the caller no longer
// uses it (nor any slice of it), for a later reassembly to reuse. Other
// slices are ignored. The GC takes back what is not reused. Hand each
// message back at most once: a message recycled twice would be reassembled
// into by two reassemblies at once.
func (r *Reassembler) Recycle(msg []byte) {
	if cap(msg) != r.cfg.MaxTotal {
		return
	}
	msg = msg[:0]
	r.bufs.Put(&msg)
}

// removeLocked forgets p everywhere. The caller must hold r.mu.
func (r *Reassembler) removeLocked(p *pending) {
	delete(r.mu.byKey, p.key)
	list := r.mu.bySrc[p.key.src]
	if i := slices.Index(list, p); i >= 0 {
		list = slices.Delete(list, i, i+1) // clears the vacated slot
	}
	if len(list) == 0 {
		delete(r.mu.bySrc, p.key.src)
	} else {
		r.mu.bySrc[p.key.src] = list
	}
	if p.prev != nil {
		p.prev.next = p.next
	} else {
		r.mu.head = p.next
	}
	if p.next != nil {
		p.next.prev = p.prev
	} else {
		r.mu.tail = p.prev
	}
	p.prev, p.next = nil, nil
}

// expireOldestLocked drops expired reassemblies from the old end of the
// creation list, stopping at the first live one. The caller must hold r.mu.
func (r *Reassembler) expireOldestLocked(now time.Time) {
	for p := r.mu.head; p != nil && r.expired(p, now); p = r.mu.head {
		r.removeLocked(p)
		r.mu.stats.Expired++
	}
}

// Expire drops every reassembly older than Timeout at now. It walks all
// pending reassemblies (at most Global), so it also catches ones created
// under a clock that later went backwards.
func (r *Reassembler) Expire(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for p := r.mu.head; p != nil; {
		next := p.next
		if r.expired(p, now) {
			r.removeLocked(p)
			r.mu.stats.Expired++
		}
		p = next
	}
}

// Len returns the number of pending reassemblies.
func (r *Reassembler) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.mu.byKey)
}

// Stats returns a snapshot of the counters.
func (r *Reassembler) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.mu.stats
}
