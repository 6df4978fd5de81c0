package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/avonzt/avon/core/store"
)

// DefaultConnectTimeout bounds each new connection (TCP, TLS and startup)
// when neither the DSN (connect_timeout) nor WithConnectTimeout sets one.
const DefaultConnectTimeout = 5 * time.Second

// minServerVersion is PostgreSQL 14 (server_version_num).
const minServerVersion = 140000

// Option configures Open.
type Option func(*options)

type options struct {
	maxConns       int32
	connectTimeout time.Duration
	migrate        bool
	log            hclog.Logger
}

// WithMaxConns sets the pool's maximum number of connections (default: the
// DSN's pool_max_conns, else the greater of 4 and the number of CPUs); the
// DSN's pool_min_conns and pool_min_idle_conns are lowered to it. Values
// below 1 are ignored.
func WithMaxConns(n int) Option {
	return func(o *options) {
		if n > 0 {
			o.maxConns = int32(min(n, 1<<20))
		}
	}
}

// WithConnectTimeout bounds each new connection, overriding the DSN's
// connect_timeout (default DefaultConnectTimeout). Values below 1ns are
// ignored.
func WithConnectTimeout(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.connectTimeout = d
		}
	}
}

// WithoutMigrate makes Open check the schema instead of migrating it: Open
// fails with ErrSchemaBehind when a migration is pending (run Migrate, or
// `avon migrate`, first).
func WithoutMigrate() Option {
	return func(o *options) { o.migrate = false }
}

// WithLogger sets the logger for Open and migrations (default: no
// logging). The DSN and its password are never logged.
func WithLogger(l hclog.Logger) Option {
	return func(o *options) {
		if l != nil {
			o.log = l
		}
	}
}

// Store is the PostgreSQL store. Its methods follow the store.KV contract;
// it is safe for concurrent use by many goroutines and many processes (core
// replicas) sharing one database.
type Store struct {
	pool   *pgxpool.Pool
	addr   string // host:port (or socket path) for messages
	log    hclog.Logger
	closed atomic.Bool
}

// SQL of the hot paths. pgx prepares each once per connection.
const (
	qGet = `SELECT value, version FROM avon_kv WHERE key = $1`

	// An unconditional write. The version of an update is drawn inside
	// DO UPDATE, that is after the row lock is held, so writes to one key
	// take versions in commit order. (The VALUES draw is spent when the
	// key exists: a gap, never a reuse.)
	qPut = `INSERT INTO avon_kv AS kv (key, value, version)
		VALUES ($1, $2, nextval('avon_kv_version'))
		ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, version = nextval('avon_kv_version')
		RETURNING kv.version`

	// Create: no row when the key exists (waiting for a concurrent
	// insert of the same key to commit or roll back).
	qCreate = `INSERT INTO avon_kv (key, value, version)
		VALUES ($1, $2, nextval('avon_kv_version'))
		ON CONFLICT (key) DO NOTHING
		RETURNING version`

	// Update at a version: no row unless the key holds exactly $3 once the
	// row lock is held (READ COMMITTED re-checks the condition on the
	// latest row after waiting).
	qUpdate = `UPDATE avon_kv SET value = $2, version = nextval('avon_kv_version')
		WHERE key = $1 AND version = $3
		RETURNING version`

	qDelete        = `DELETE FROM avon_kv WHERE key = $1`
	qDeleteVersion = `DELETE FROM avon_kv WHERE key = $1 AND version = $2`
	qVersion       = `SELECT version FROM avon_kv WHERE key = $1`
)

// Open parses dsn (a postgres:// URL or key=value pairs, see the package
// documentation), connects, checks the server (PostgreSQL 14 or later, UTF8
// encoding) and applies pending migrations unless WithoutMigrate. ctx
// bounds the opening only. A server that cannot be reached gives an error
// wrapping store.ErrUnavailable; a malformed DSN, ErrInvalidDSN.
func Open(ctx context.Context, dsn string, opts ...Option) (*Store, error) {
	o := options{migrate: true, log: hclog.NewNullLogger()}
	for _, opt := range opts {
		opt(&o)
	}
	cfg, err := parseDSN(dsn)
	if err != nil {
		return nil, err
	}
	if o.maxConns > 0 {
		cfg.MaxConns = o.maxConns
		cfg.MinConns = min(cfg.MinConns, cfg.MaxConns)
		cfg.MinIdleConns = min(cfg.MinIdleConns, cfg.MaxConns)
	}
	cc := cfg.ConnConfig
	if o.connectTimeout > 0 || cc.ConnectTimeout == 0 {
		cc.ConnectTimeout = cmp(o.connectTimeout, DefaultConnectTimeout)
	}
	if _, ok := cc.RuntimeParams["application_name"]; !ok {
		cc.RuntimeParams["application_name"] = "avon"
	}
	// A connection idle for a while is pinged before it is handed out;
	// the ping gets no longer than a new connection would (unless the
	// DSN's pool_ping_timeout says otherwise). A dead one is dropped and
	// the next one tried.
	cfg.ShouldPing = func(_ context.Context, p pgxpool.ShouldPingParams) bool {
		return p.IdleDuration >= pingIdleAfter
	}
	if cfg.PingTimeout == 0 {
		cfg.PingTimeout = cc.ConnectTimeout
	}
	s := &Store{addr: address(cc.Config), log: o.log}
	// The pool connects lazily: setup's acquire is the first connection.
	if s.pool, err = pgxpool.NewWithConfig(ctx, cfg); err != nil {
		return nil, fmt.Errorf("open postgres store: %w", s.wrap(ctx, "connect", err, false))
	}
	if err := s.setup(ctx, o.migrate); err != nil {
		s.pool.Close()
		return nil, fmt.Errorf("open postgres store: %w", err)
	}
	s.log.Info("postgres store open", "addr", s.addr, "database", cc.Database, "max_conns", cfg.MaxConns,
		"max_conn_lifetime", cfg.MaxConnLifetime, "max_conn_idle_time", cfg.MaxConnIdleTime)
	return s, nil
}

// cmp returns a unless it is zero, else b.
func cmp(a, b time.Duration) time.Duration {
	if a != 0 {
		return a
	}
	return b
}

// setup checks the server and the schema on one connection acquired from
// the pool and held throughout (the migration lock belongs to its session;
// a connection that cannot release the lock is closed, and so dropped by
// the pool).
func (s *Store) setup(ctx context.Context, migrate bool) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("postgres connect: %w", err)
	}
	pc, err := s.pool.Acquire(ctx)
	if err != nil {
		return s.wrap(ctx, "connect", err, false)
	}
	defer pc.Release()
	c := pc.Conn()
	if err := checkServer(ctx, c); err != nil {
		return s.wrapSetup(ctx, err)
	}
	if migrate {
		_, err = migrateConn(ctx, c, s.log)
	} else {
		err = verifySchema(ctx, c)
	}
	return s.wrapSetup(ctx, err)
}

// wrapSetup keeps this package's own errors and maps driver errors.
func (s *Store) wrapSetup(ctx context.Context, err error) error {
	for _, own := range []error{ErrSchemaNewer, ErrSchemaDrift, ErrSchemaBehind, ErrUnsupportedServer} {
		if errors.Is(err, own) {
			return err
		}
	}
	return s.wrap(ctx, "setup", err, false)
}

// checkServer refuses servers that cannot hold the store faithfully: keys
// are compared bytewise as UTF-8 text, which needs the UTF8 encoding.
func checkServer(ctx context.Context, conn *pgx.Conn) error {
	var num int
	var enc string
	err := conn.QueryRow(ctx, `SELECT current_setting('server_version_num')::int, current_setting('server_encoding')`).Scan(&num, &enc)
	if err != nil {
		return err
	}
	if num < minServerVersion {
		return fmt.Errorf("%w: server version %d.%d, need 14 or later", ErrUnsupportedServer, num/10000, num%10000)
	}
	if enc != "UTF8" {
		return fmt.Errorf("%w: database encoding %s, need UTF8 (CREATE DATABASE ... ENCODING 'UTF8')", ErrUnsupportedServer, enc)
	}
	return nil
}

// ready refuses a call on a closed store or with a done context.
func (s *Store) ready(ctx context.Context, op string) error {
	if s.closed.Load() {
		return fmt.Errorf("postgres %s: %w", op, store.ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("postgres %s: %w", op, err)
	}
	return nil
}

// read runs an idempotent read, once more on another connection when the
// first one turns out dead (a server restarted since it was opened).
func (s *Store) read(ctx context.Context, fn func() error) error {
	err := fn()
	if err != nil && !errors.Is(err, pgx.ErrNoRows) && ctx.Err() == nil && !s.closed.Load() && connectionLost(err) {
		err = fn()
	}
	return err
}

// write runs a write, once more only when the driver knows nothing reached
// the server.
func (s *Store) write(ctx context.Context, fn func() error) error {
	err := fn()
	if err != nil && ctx.Err() == nil && !s.closed.Load() && pgconn.SafeToRetry(err) {
		err = fn()
	}
	return err
}

// Get implements store.KV.
func (s *Store) Get(ctx context.Context, key string) (store.Entry, error) {
	if err := store.ValidateKey(key); err != nil {
		return store.Entry{}, err
	}
	if err := s.ready(ctx, "get"); err != nil {
		return store.Entry{}, err
	}
	e := store.Entry{Key: key}
	err := s.read(ctx, func() error {
		return s.conn(ctx, func(c *pgx.Conn) error {
			return c.QueryRow(ctx, qGet, key).Scan(&e.Value, &e.Version)
		})
	})
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return store.Entry{}, fmt.Errorf("get %q: %w", key, store.ErrNotFound)
	case err != nil:
		return store.Entry{}, s.wrap(ctx, "get", err, false)
	}
	if e.Value == nil {
		e.Value = []byte{}
	}
	return e, nil
}

// Put implements store.KV.
func (s *Store) Put(ctx context.Context, key string, value []byte, o store.PutOptions) (int64, error) {
	if err := store.ValidateKey(key); err != nil {
		return 0, err
	}
	if err := store.CheckValue(value); err != nil {
		return 0, err
	}
	if err := s.ready(ctx, "put"); err != nil {
		return 0, err
	}
	if value == nil {
		value = []byte{} // nil would be NULL
	}
	var v int64
	q, args := qPut, []any{key, value}
	switch {
	case o.Check && o.Version == 0:
		q = qCreate
	case o.Check:
		q, args = qUpdate, append(args, o.Version)
	}
	err := s.write(ctx, func() error {
		return s.conn(ctx, func(c *pgx.Conn) error { return c.QueryRow(ctx, q, args...).Scan(&v) })
	})
	switch {
	case errors.Is(err, pgx.ErrNoRows) && o.Version == 0:
		return 0, fmt.Errorf("put %q: key exists: %w", key, store.ErrVersionConflict)
	case errors.Is(err, pgx.ErrNoRows):
		return 0, fmt.Errorf("put %q: key absent or not at version %d: %w", key, o.Version, store.ErrVersionConflict)
	case err != nil:
		return 0, s.wrap(ctx, fmt.Sprintf("put %q", key), err, true)
	}
	return v, nil
}

// Delete implements store.KV.
func (s *Store) Delete(ctx context.Context, key string, o store.DeleteOptions) error {
	if err := store.ValidateKey(key); err != nil {
		return err
	}
	if err := s.ready(ctx, "delete"); err != nil {
		return err
	}
	var cur int64
	var tag pgconn.CommandTag
	err := s.write(ctx, func() error {
		return s.conn(ctx, func(c *pgx.Conn) (err error) {
			switch {
			case !o.Check:
				tag, err = c.Exec(ctx, qDelete, key)
			case o.Version == 0:
				// Succeeds only when the key is absent: a read,
				// nothing to delete.
				err = c.QueryRow(ctx, qVersion, key).Scan(&cur)
			default:
				tag, err = c.Exec(ctx, qDeleteVersion, key, o.Version)
			}
			return err
		})
	})
	switch {
	case o.Check && o.Version == 0 && errors.Is(err, pgx.ErrNoRows):
		return nil
	case err != nil:
		return s.wrap(ctx, fmt.Sprintf("delete %q", key), err, true)
	case o.Check && o.Version == 0:
		return fmt.Errorf("delete %q: key exists at version %d: %w", key, cur, store.ErrVersionConflict)
	case o.Check && tag.RowsAffected() == 0:
		return fmt.Errorf("delete %q: key absent or not at version %d: %w", key, o.Version, store.ErrVersionConflict)
	}
	return nil
}

// List implements store.KV. One statement, so one snapshot.
func (s *Store) List(ctx context.Context, o store.ListOptions) ([]store.Entry, error) {
	limit, err := store.CheckList(o)
	if err != nil {
		return nil, err
	}
	if err := s.ready(ctx, "list"); err != nil {
		return nil, err
	}
	q, args := listQuery(o, limit)
	var out []store.Entry
	err = s.read(ctx, func() error {
		return s.conn(ctx, func(c *pgx.Conn) error {
			rows, err := c.Query(ctx, q, args...)
			if err != nil {
				return err
			}
			defer rows.Close()
			out = make([]store.Entry, 0, min(limit, 64))
			for rows.Next() {
				var e store.Entry
				if err := rows.Scan(&e.Key, &e.Value, &e.Version); err != nil {
					return err
				}
				if e.Value == nil {
					e.Value = []byte{}
				}
				out = append(out, e)
			}
			return rows.Err()
		})
	})
	if err != nil {
		return nil, s.wrap(ctx, "list", err, false)
	}
	return out, nil
}

// listQuery builds the range scan for o: from the larger of Prefix
// (inclusive) and After (exclusive), below the prefix's successor.
func listQuery(o store.ListOptions, limit int) (string, []any) {
	q := `SELECT key, value, version FROM avon_kv WHERE key >= $1`
	from := o.Prefix
	if o.After >= o.Prefix {
		q, from = `SELECT key, value, version FROM avon_kv WHERE key > $1`, o.After
	}
	args := []any{from, limit}
	if end, ok := prefixEnd(o.Prefix); ok {
		q += ` AND key < $3`
		args = append(args, end)
	}
	return q + ` ORDER BY key LIMIT $2`, args
}

// prefixEnd returns the smallest valid UTF-8 string above every string
// that starts with p, in bytewise order: p with its last code point
// incremented (skipping the surrogate range, dropping trailing U+10FFFF).
// ok is false when there is none (p empty, or all U+10FFFF). The result is
// valid UTF-8 without NUL, so the server accepts it as text.
func prefixEnd(p string) (string, bool) {
	for end := len(p); end > 0; {
		r, size := utf8.DecodeLastRuneInString(p[:end])
		end -= size
		if r == utf8.MaxRune || r == utf8.RuneError && size <= 1 {
			continue
		}
		r++
		if r == 0xD800 {
			r = 0xE000
		}
		return p[:end] + string(r), true
	}
	return "", false
}

// Ping implements store.KV: a round trip to the server.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.ready(ctx, "ping"); err != nil {
		return err
	}
	return s.wrap(ctx, "ping", s.read(ctx, func() error {
		return s.conn(ctx, func(c *pgx.Conn) error { return c.Ping(ctx) })
	}), false)
}

// Close implements store.KV. It refuses new calls (ErrClosed), waits for
// calls in flight to return their connections (each is bounded by its own
// context), closes every connection and stops the pool's health check.
// Calling it again does nothing.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.pool.Close()
	return nil
}

// PoolStat is a snapshot of the connection pool, for metrics.
type PoolStat struct {
	MaxConns int // the pool's bound
	// InUse: connections held by calls right now (or, for a moment every
	// DefaultHealthCheckPeriod, by the health check looking at idle ones).
	InUse int
	Idle  int // open connections waiting for a call
	// Dialled: connections opened since Open, failed attempts included;
	// it grows with server restarts and with age and idle closes.
	Dialled int64
	// Saturated: every connection is in use or being opened, so the next
	// call waits for one to come back.
	Saturated bool
	// Waits: calls since Open that found no idle connection and waited for
	// one to be released or opened; WaitTime is their total wait. A Waits
	// growing with load means the pool (or the server) is too small.
	Waits    int64
	WaitTime time.Duration
}

// Stat returns the connection pool's state. It stays callable after Close
// (InUse and Idle then read zero).
func (s *Store) Stat() PoolStat {
	st := s.pool.Stat()
	return PoolStat{
		MaxConns:  int(st.MaxConns()),
		InUse:     int(st.AcquiredConns()),
		Idle:      int(st.IdleConns()),
		Dialled:   st.NewConnsCount(),
		Saturated: st.TotalConns() >= st.MaxConns() && st.IdleConns() == 0,
		Waits:     st.EmptyAcquireCount(),
		WaitTime:  st.EmptyAcquireWaitTime(),
	}
}

// conn runs fn on a pooled connection. The pool drops the connection on
// release when fn left it broken, busy or inside a transaction.
func (s *Store) conn(ctx context.Context, fn func(c *pgx.Conn) error) error {
	c, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	return fn(c.Conn())
}

var _ store.KV = (*Store)(nil)
