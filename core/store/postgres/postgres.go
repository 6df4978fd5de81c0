package postgres

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

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
// DSN's pool_max_conns, else the greater of 4 and the number of CPUs).
// Values below 1 are ignored.
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

// WithLogger sets the logger for migrations and pool events (default: no
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
	pool   *pool
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
	cfg, maxConns, err := parseDSN(dsn)
	if err != nil {
		return nil, err
	}
	if o.maxConns > 0 {
		maxConns = int(o.maxConns)
	}
	if o.connectTimeout > 0 || cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = cmp(o.connectTimeout, DefaultConnectTimeout)
	}
	if _, ok := cfg.RuntimeParams["application_name"]; !ok {
		cfg.RuntimeParams["application_name"] = "avon"
	}
	// A connection idle for a while is pinged before use; the ping gets
	// no longer than a new connection would.
	s := &Store{pool: newPool(cfg, maxConns, cfg.ConnectTimeout), addr: address(cfg.Config), log: o.log}
	if err := s.setup(ctx, o.migrate); err != nil {
		s.pool.close()
		return nil, fmt.Errorf("open postgres store: %w", err)
	}
	s.log.Info("postgres store open", "addr", s.addr, "database", cfg.Database, "max_conns", maxConns)
	return s, nil
}

// cmp returns a unless it is zero, else b.
func cmp(a, b time.Duration) time.Duration {
	if a != 0 {
		return a
	}
	return b
}

// setup checks the server and the schema on one connection.
func (s *Store) setup(ctx context.Context, migrate bool) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("postgres connect: %w", err)
	}
	c, err := s.pool.acquire(ctx)
	if err != nil {
		return s.wrap(ctx, "connect", err, false)
	}
	defer s.pool.release(c)
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

// parseDSN parses dsn into a connection configuration and the pool bound
// (pool_max_conns in the DSN, else the greater of 4 and the number of
// CPUs). Its errors wrap ErrInvalidDSN and never contain the password.
func parseDSN(dsn string) (*pgx.ConnConfig, int, error) {
	if strings.TrimSpace(dsn) == "" {
		return nil, 0, fmt.Errorf("%w: empty", ErrInvalidDSN)
	}
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %s", ErrInvalidDSN, parseReason(dsn, err))
	}
	maxConns := max(4, runtime.NumCPU())
	// Unknown settings become server parameters; this one is ours.
	if v, ok := cfg.RuntimeParams["pool_max_conns"]; ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1<<20 {
			return nil, 0, fmt.Errorf("%w: pool_max_conns %q is not a number from 1 to %d", ErrInvalidDSN, v, 1<<20)
		}
		maxConns = n
		delete(cfg.RuntimeParams, "pool_max_conns")
	}
	return cfg, maxConns, nil
}

// parseReason explains a parse failure without the DSN's text: the driver's
// message may quote the DSN, so the quoted part is cut and anything left
// that contains a password candidate is withheld.
func parseReason(dsn string, err error) string {
	msg := err.Error()
	var pce *pgconn.ParseConfigError
	if errors.As(err, &pce) {
		// "cannot parse `<dsn, password redacted>`: reason (cause)"
		const head = "cannot parse `"
		if rest, ok := strings.CutPrefix(msg, head); ok && !strings.Contains(dsn, "`") {
			if _, after, ok := strings.Cut(rest, "`: "); ok {
				msg = after
			}
		} else {
			msg = "malformed connection string"
		}
	}
	for _, q := range []string{strconv.Quote(dsn), dsn} {
		msg = strings.ReplaceAll(msg, q, "<dsn>")
	}
	// Causes quote pieces of the DSN ("parsing \"x\"", "found in \"...\""):
	// keep the explanation, drop the quoted text.
	msg = quoted.ReplaceAllStringFunc(msg, func(q string) string {
		if u, err := strconv.Unquote(q); err == nil && u != "" && strings.Contains(dsn, u) {
			return "<part of the DSN>"
		}
		if inner := q[1 : len(q)-1]; inner != "" && strings.Contains(dsn, inner) {
			return "<part of the DSN>"
		}
		return q
	})
	for _, pw := range passwordCandidates(dsn) {
		if strings.Contains(msg, pw) {
			return "malformed connection string (details withheld: they would show the password)"
		}
	}
	return msg
}

var quoted = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)

// passwordCandidates returns substrings of dsn that may be a password: the
// URL userinfo after ':' and every password=... value, quoted or not.
func passwordCandidates(dsn string) []string {
	var out []string
	add := func(s string) {
		if s = strings.Trim(s, `'" `); s != "" {
			out = append(out, s)
		}
	}
	if i := strings.Index(dsn, "://"); i >= 0 {
		rest := dsn[i+3:]
		if colon := strings.Index(rest, ":"); colon >= 0 {
			// The password ends at an '@': the first or the last one.
			if at := strings.Index(rest[colon:], "@"); at >= 0 {
				add(rest[colon+1 : colon+at])
			}
			if at := strings.LastIndex(rest, "@"); at > colon {
				add(rest[colon+1 : at])
			}
		}
	}
	for rest := dsn; ; {
		i := strings.Index(rest, "password")
		if i < 0 || len(out) > 16 {
			break
		}
		rest = rest[i+len("password"):]
		v := strings.TrimLeft(rest, " =")
		if end := strings.IndexAny(v, " &"); end >= 0 {
			v = v[:end]
		}
		add(v)
	}
	return out
}

// address names the server for messages: host:port, or the socket path.
func address(c pgconn.Config) string {
	if strings.HasPrefix(c.Host, "/") {
		return fmt.Sprintf("%s/.s.PGSQL.%d", c.Host, c.Port)
	}
	return net.JoinHostPort(c.Host, strconv.Itoa(int(c.Port)))
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

// Close implements store.KV. It waits for calls in flight to return their
// connections, then closes them all.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.pool.close()
	return nil
}

// Stat returns the connection pool's state (for metrics).
func (s *Store) Stat() PoolStat { return s.pool.stat() }

// conn runs fn on a pooled connection.
func (s *Store) conn(ctx context.Context, fn func(c *pgx.Conn) error) error {
	c, err := s.pool.acquire(ctx)
	if err != nil {
		return err
	}
	defer s.pool.release(c)
	return fn(c)
}

var _ store.KV = (*Store)(nil)
