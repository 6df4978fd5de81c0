package postgres

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// pingIdleAfter: a connection idle this long is pinged before it is handed
// out, so a server restart costs no failed call on a connection that died
// while idle.
const pingIdleAfter = time.Second

var errPoolClosed = errors.New("connection pool closed")

// pool is a bounded pool of pgx connections: at most max open at once,
// idle ones reused last-in first-out, broken ones (closed by the driver
// after a network error or an interrupted call) and ones left inside a
// transaction dropped on release.
type pool struct {
	cfg         *pgx.ConnConfig
	pingTimeout time.Duration
	tokens      chan struct{} // one per connection handed out; cap = max
	done        chan struct{} // closed by close

	mu     sync.Mutex // guards the fields below
	idle   []idleConn
	closed bool
	inUse  int   // connections handed out
	opened int64 // connections dialled, for Stat
}

type idleConn struct {
	c     *pgx.Conn
	since time.Time
}

func newPool(cfg *pgx.ConnConfig, max int, pingTimeout time.Duration) *pool {
	return &pool{cfg: cfg, pingTimeout: pingTimeout, tokens: make(chan struct{}, max), done: make(chan struct{})}
}

// acquire returns a live connection, waiting (bounded by ctx) while all are
// in use. Every successful acquire must be paired with release.
func (p *pool) acquire(ctx context.Context) (*pgx.Conn, error) {
	select {
	case <-p.done:
		return nil, errPoolClosed
	default:
	}
	select {
	case p.tokens <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-p.done:
		return nil, errPoolClosed
	}
	// Idle connections first; at most as many tries as there are idle
	// connections, then a new one.
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			<-p.tokens
			return nil, errPoolClosed
		}
		n := len(p.idle)
		if n == 0 {
			p.opened++
			p.mu.Unlock()
			break
		}
		ic := p.idle[n-1]
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		if ic.c.IsClosed() {
			continue
		}
		if time.Since(ic.since) < pingIdleAfter {
			return p.handOut(ic.c), nil
		}
		pctx, cancel := context.WithTimeout(ctx, p.pingTimeout)
		err := ic.c.Ping(pctx)
		cancel()
		if err == nil {
			return p.handOut(ic.c), nil
		}
		closeQuietly(ic.c)
		if ctx.Err() != nil {
			<-p.tokens
			return nil, ctx.Err()
		}
	}
	c, err := pgx.ConnectConfig(ctx, p.cfg)
	if err != nil {
		<-p.tokens
		return nil, err
	}
	return p.handOut(c), nil
}

func (p *pool) handOut(c *pgx.Conn) *pgx.Conn {
	p.mu.Lock()
	p.inUse++
	p.mu.Unlock()
	return c
}

// release returns c to the pool, or closes it when it is broken, inside a
// transaction, or the pool is closed.
func (p *pool) release(c *pgx.Conn) {
	defer func() { <-p.tokens }()
	p.mu.Lock()
	p.inUse--
	if c.IsClosed() || c.PgConn().TxStatus() != 'I' || c.PgConn().IsBusy() {
		p.mu.Unlock()
		closeQuietly(c)
		return
	}
	if p.closed {
		p.mu.Unlock()
		closeQuietly(c)
		return
	}
	p.idle = append(p.idle, idleConn{c: c, since: time.Now()})
	p.mu.Unlock()
}

// close refuses new acquires, closes the idle connections and waits for
// those in use to be released (each call is bounded by its own context).
func (p *pool) close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	close(p.done)
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, ic := range idle {
		closeQuietly(ic.c)
	}
	// Taking every token means every connection in use came back.
	for range cap(p.tokens) {
		p.tokens <- struct{}{}
	}
}

// closeQuietly ends a connection, giving the Terminate message a moment.
func closeQuietly(c *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = c.Close(ctx)
}

// PoolStat is a snapshot of the connection pool.
type PoolStat struct {
	MaxConns  int   // the pool's bound
	InUse     int   // connections handed out to calls right now
	Idle      int   // open connections waiting for a call
	Dialled   int64 // connections opened since Open
	Saturated bool  // every connection is in use
}

func (p *pool) stat() PoolStat {
	p.mu.Lock()
	defer p.mu.Unlock()
	return PoolStat{MaxConns: cap(p.tokens), InUse: p.inUse, Idle: len(p.idle), Dialled: p.opened, Saturated: p.inUse == cap(p.tokens)}
}
