// Package embedded is the single-node store.KV: one SQLite database file
// under the data directory, through the pure-Go modernc.org/sqlite driver
// (driver name "sqlite", no cgo).
//
// Durability: the journal is a WAL with synchronous=FULL, so a write whose
// Put, Delete or Apply returned nil has been fsynced to the WAL and survives a
// killed process (and a power cut on a disk that honours fsync). Open checks
// that both settings took effect and refuses the file otherwise.
//
// Concurrency: all writes go through one connection in BEGIN IMMEDIATE
// transactions, so compare-and-set checks and the version sequence are
// serialized, and concurrent writes are group-committed (one transaction
// and one fsync for many callers; see write). Apply (store.Batcher) is one
// queued write of several ops, all or nothing. Reads run on a small pool
// of read-only connections and see every committed write (WAL snapshots).
// Another process opening the same file is also safe (SQLite locking,
// busy_timeout), though the core never does so.
//
// Schema: versioned migrations recorded in schema_migrations; a file written
// by a newer binary is refused rather than guessed at.
//
// It must not be shared by several core replicas or placed on a network file
// system: replicas use PostgreSQL.
package embedded

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/avonzt/avon/core/store"
)

// migrations are applied in order; entry i is schema version i+1. Never
// edit an applied migration: append a new one.
var migrations = []string{
	// 1: the key/value table and the global version sequence.
	`CREATE TABLE kv (
		key     TEXT PRIMARY KEY,
		value   BLOB NOT NULL,
		version INTEGER NOT NULL CHECK (version > 0)
	) WITHOUT ROWID;
	CREATE TABLE seq (id INTEGER PRIMARY KEY CHECK (id = 1), v INTEGER NOT NULL);
	INSERT INTO seq (id, v) VALUES (1, 0);`,
}

// Option configures Open.
type Option func(*options)

type options struct {
	busyTimeout time.Duration
	readers     int
}

// WithBusyTimeout sets how long a connection waits for a lock held by
// another process before failing with store.ErrUnavailable (default 10s).
// Waits inside this process are bounded by each call's ctx instead.
func WithBusyTimeout(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.busyTimeout = d
		}
	}
}

// WithReaders sets the maximum number of read connections (default:
// GOMAXPROCS, at least 2).
func WithReaders(n int) Option {
	return func(o *options) {
		if n > 0 {
			o.readers = n
		}
	}
}

// Store is the embedded store. Its methods follow the store.KV contract.
type Store struct {
	path   string
	w      *sql.DB // exactly one connection, BEGIN IMMEDIATE: every write
	r      *sql.DB // read-only connections: Get, List, Ping
	get    *sql.Stmt
	ws     writeStmts // the write path's statements, prepared on w once
	closed atomic.Bool
	batch  batcher // group commit of writes
}

// Open opens the database at path, creating it (mode 0600, and its missing
// directories 0700) when absent, checks the journal settings, and applies
// pending migrations. ctx bounds the opening only.
func Open(ctx context.Context, path string, opts ...Option) (*Store, error) {
	o := options{busyTimeout: 10 * time.Second, readers: max(2, runtime.GOMAXPROCS(0))}
	for _, opt := range opts {
		opt(&o)
	}
	s, err := open(ctx, path, o)
	if err != nil {
		return nil, fmt.Errorf("open embedded store %s: %w", path, err)
	}
	return s, nil
}

func open(ctx context.Context, path string, o options) (*Store, error) {
	if path == "" {
		return nil, errors.New("empty path")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	// Create the file ourselves so it is 0600: SQLite would use 0644, and
	// it gives the -wal and -shm files the database file's mode.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	dsn := func(extra url.Values) string {
		q := url.Values{}
		q.Set("_busy_timeout", strconv.FormatInt(o.busyTimeout.Milliseconds(), 10))
		q.Set("_journal_mode", "WAL")
		q.Set("_synchronous", "FULL")
		for k, v := range extra {
			q[k] = v
		}
		return "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
	}
	w, err := sql.Open("sqlite", dsn(url.Values{"_txlock": {"immediate"}}))
	if err != nil {
		return nil, err
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	r, err := sql.Open("sqlite", dsn(url.Values{"_query_only": {"1"}}))
	if err != nil {
		_ = w.Close()
		return nil, err
	}
	r.SetMaxOpenConns(o.readers)
	r.SetMaxIdleConns(o.readers)
	s := &Store{path: path, w: w, r: r}
	if err := s.checkJournal(ctx); err != nil {
		_ = s.Close()
		return nil, err
	}
	if err := s.migrate(ctx); err != nil {
		_ = s.Close()
		return nil, err
	}
	// Get is the hot path: parse it once per connection, not per call.
	if s.get, err = r.PrepareContext(ctx, `SELECT value, version FROM kv WHERE key = ?`); err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("prepare: %w", err)
	}
	if err := s.ws.prepare(ctx, w); err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("prepare: %w", err)
	}
	return s, nil
}

// writeStmts are the statements of a group commit (commitGroup, apply,
// checkTx), prepared once on the write connection: SQLite parses and
// compiles a statement in tens of microseconds, several times per commit
// when each call passed its text. A transaction uses them through
// Tx.StmtContext, which finds them already prepared on the one write
// connection (and prepares them again by itself on a new one).
type writeStmts struct {
	savepoint, rollbackTo, release, check, seq, del, put *sql.Stmt
}

func (ws *writeStmts) prepare(ctx context.Context, w *sql.DB) error {
	for _, p := range []struct {
		dst **sql.Stmt
		sql string
	}{
		{&ws.savepoint, `SAVEPOINT w`},
		{&ws.rollbackTo, `ROLLBACK TO w`},
		{&ws.release, `RELEASE w`},
		{&ws.check, `SELECT version FROM kv WHERE key = ?`},
		{&ws.seq, `UPDATE seq SET v = v + ? WHERE id = 1 RETURNING v`},
		{&ws.del, `DELETE FROM kv WHERE key = ?`},
		{&ws.put, `INSERT INTO kv (key, value, version) VALUES (?, ?, ?)
			ON CONFLICT (key) DO UPDATE SET value = excluded.value, version = excluded.version`},
	} {
		st, err := w.PrepareContext(ctx, p.sql)
		if err != nil {
			return fmt.Errorf("%s: %w", strings.SplitN(p.sql, " ", 2)[0], err)
		}
		*p.dst = st
	}
	return nil
}

// close closes the prepared statements (those prepared).
func (ws *writeStmts) close() []error {
	var errs []error
	for _, st := range []*sql.Stmt{ws.savepoint, ws.rollbackTo, ws.release, ws.check, ws.seq, ws.del, ws.put} {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	return errs
}

// checkJournal refuses to run without the settings durability rests on
// (WAL can be refused by some file systems, silently keeping the old mode).
func (s *Store) checkJournal(ctx context.Context) error {
	var mode string
	var sync int
	if err := s.w.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil {
		return fmt.Errorf("read journal mode: %w", err)
	}
	if err := s.w.QueryRowContext(ctx, `PRAGMA synchronous`).Scan(&sync); err != nil {
		return fmt.Errorf("read synchronous: %w", err)
	}
	if !strings.EqualFold(mode, "wal") || sync != 2 {
		return fmt.Errorf("journal_mode=%s synchronous=%d, need wal and 2 (FULL)", mode, sync)
	}
	return nil
}

func (s *Store) migrate(ctx context.Context) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER PRIMARY KEY,
		applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
	)`); err != nil {
		return fmt.Errorf("create migrations table: %w", err)
	}
	var cur int
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&cur); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if cur > len(migrations) {
		return fmt.Errorf("schema version %d is newer than this binary's %d", cur, len(migrations))
	}
	for v := cur + 1; v <= len(migrations); v++ {
		if _, err := tx.ExecContext(ctx, migrations[v-1]); err != nil {
			return fmt.Errorf("migration %d: %w", v, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version) VALUES (?)`, v); err != nil {
			return fmt.Errorf("record migration %d: %w", v, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit migrations: %w", err)
	}
	return nil
}

// SchemaVersion returns the applied schema version.
func (s *Store) SchemaVersion(ctx context.Context) (int, error) {
	if err := s.ready(ctx); err != nil {
		return 0, err
	}
	var v int
	err := s.r.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&v)
	return v, s.wrap(ctx, "schema version", err)
}

// Path returns the database file's path.
func (s *Store) Path() string { return s.path }

// wrap maps a driver error onto the store's sentinels: the context's error
// when ctx ended the call, ErrClosed after Close, ErrUnavailable otherwise.
func (s *Store) wrap(ctx context.Context, op string, err error) error {
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return fmt.Errorf("embedded store %s: %v: %w", op, err, ctx.Err())
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("embedded store %s: %w", op, err)
	case s.closed.Load() || strings.Contains(err.Error(), "database is closed"):
		return fmt.Errorf("embedded store %s: %w", op, store.ErrClosed)
	}
	return fmt.Errorf("embedded store %s: %v: %w", op, err, store.ErrUnavailable)
}

func (s *Store) ready(ctx context.Context) error {
	if s.closed.Load() {
		return fmt.Errorf("embedded store: %w", store.ErrClosed)
	}
	return ctx.Err()
}

// Get implements store.KV.
func (s *Store) Get(ctx context.Context, key string) (store.Entry, error) {
	if err := store.ValidateKey(key); err != nil {
		return store.Entry{}, err
	}
	if err := s.ready(ctx); err != nil {
		return store.Entry{}, err
	}
	e := store.Entry{Key: key}
	err := s.get.QueryRowContext(ctx, key).Scan(&e.Value, &e.Version)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Entry{}, fmt.Errorf("get %q: %w", key, store.ErrNotFound)
	}
	if err != nil {
		return store.Entry{}, s.wrap(ctx, "get", err)
	}
	if e.Value == nil {
		e.Value = []byte{}
	}
	return e, nil
}

// checkTx enforces a compare-and-set condition inside tx.
func (s *Store) checkTx(ctx context.Context, tx *sql.Tx, key string, check bool, version int64) error {
	if !check {
		return nil
	}
	var cur int64
	err := tx.StmtContext(ctx, s.ws.check).QueryRowContext(ctx, key).Scan(&cur)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		if version != 0 {
			return fmt.Errorf("key %q absent, expected version %d: %w", key, version, store.ErrVersionConflict)
		}
		return nil
	case err != nil:
		return err
	case version == 0:
		return fmt.Errorf("key %q exists at version %d: %w", key, cur, store.ErrVersionConflict)
	case cur != version:
		return fmt.Errorf("key %q at version %d, expected %d: %w", key, cur, version, store.ErrVersionConflict)
	}
	return nil
}

// Writes are group-committed: concurrent Puts, Deletes and Applies share
// one transaction and one fsync. Each call is one queued item holding its
// ops (one for Put and Delete, a batch for Apply). The first writer to find
// no commit in progress leads: it takes the queued items (up to maxGroup,
// and up to maxGroupOps ops unless a single item holds more), applies each
// item's ops under its own SAVEPOINT (so a compare-and-set conflict or
// error in one item undoes that item whole, and only it), commits once,
// and hands each writer its own result; it goes on leading while writes
// keep queueing. A write is acknowledged only after the commit that holds
// it, so no acknowledged write is lost and no error is returned for a
// write that took effect.
const (
	maxGroup    = 256
	maxGroupOps = 4096
)

// writeOp is one write of a queued item.
type writeOp struct {
	key     string
	value   []byte // not nil for a put (the column is NOT NULL)
	del     bool
	check   bool
	version int64
}

// writeItem is one caller's queued write: its ops are applied all or
// nothing.
type writeItem struct {
	ctx   context.Context
	name  string // "put", "delete" or "apply", for messages
	ops   []writeOp
	batch bool // a failed check is reported as a *store.BatchError

	vs   []int64 // on success, one version per op (0 for a delete)
	err  error
	done chan struct{}
}

type batcher struct {
	mu      sync.Mutex
	queue   []*writeItem
	leading bool
}

// write queues it and returns once it is committed or refused.
func (s *Store) write(it *writeItem) {
	it.done = make(chan struct{})
	b := &s.batch
	b.mu.Lock()
	b.queue = append(b.queue, it)
	if b.leading {
		b.mu.Unlock()
		<-it.done
		return
	}
	b.leading = true
	for len(b.queue) > 0 {
		n := groupSize(b.queue)
		group := b.queue[:n:n]
		b.queue = b.queue[n:]
		b.mu.Unlock()
		s.commitGroup(group)
		b.mu.Lock()
	}
	b.leading = false
	b.mu.Unlock()
	<-it.done
}

// groupSize returns how many items at the head of a non-empty queue go into
// the next transaction: at most maxGroup, holding at most maxGroupOps ops
// between them unless the first alone holds more.
func groupSize(queue []*writeItem) int {
	n, ops := 1, len(queue[0].ops)
	for n < len(queue) && n < maxGroup && ops+len(queue[n].ops) <= maxGroupOps {
		ops += len(queue[n].ops)
		n++
	}
	return n
}

func (s *Store) commitGroup(group []*writeItem) {
	defer func() {
		for _, it := range group {
			close(it.done)
		}
	}()
	var live []*writeItem
	for _, it := range group {
		if err := s.ready(it.ctx); err != nil {
			it.err = err // never written
			continue
		}
		live = append(live, it)
	}
	if len(live) == 0 {
		return
	}
	// The group outlives any one caller's context; each caller waits for
	// its result (a write that took effect is never reported failed).
	ctx := context.Background()
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		for _, it := range live {
			it.err = s.wrap(it.ctx, it.name, err)
		}
		return
	}
	defer func() { _ = tx.Rollback() }()
	applied := live[:0:0]
	for _, it := range live {
		if _, err := tx.StmtContext(ctx, s.ws.savepoint).ExecContext(ctx); err != nil {
			it.err = s.wrap(it.ctx, it.name, err)
			continue
		}
		it.vs, it.err = s.apply(ctx, tx, it)
		if it.err != nil {
			it.vs = nil
			if _, err := tx.StmtContext(ctx, s.ws.rollbackTo).ExecContext(ctx); err != nil {
				// The transaction is unusable: fail every write of it.
				for _, o := range live {
					if o.err == nil {
						o.vs, o.err = nil, s.wrap(o.ctx, o.name, err)
					}
				}
				return
			}
		}
		if _, err := tx.StmtContext(ctx, s.ws.release).ExecContext(ctx); err != nil && it.err == nil {
			it.vs, it.err = nil, s.wrap(it.ctx, it.name, err)
		}
		if it.err == nil {
			applied = append(applied, it)
		}
	}
	// A failed commit is rolled back by the driver: no error reports a
	// write that took effect.
	if err := tx.Commit(); err != nil {
		for _, it := range applied {
			it.vs, it.err = nil, s.wrap(it.ctx, it.name, err)
		}
	}
}

// apply performs one item's writes inside the group's transaction: every
// check first (keys are distinct within an item, so this is the same as
// checking each op as it comes), then one draw of the item's versions
// from the sequence, then the writes in op order. On an error the caller
// rolls back to the item's savepoint.
func (s *Store) apply(ctx context.Context, tx *sql.Tx, it *writeItem) ([]int64, error) {
	puts := 0
	for i, op := range it.ops {
		if err := s.checkTx(ctx, tx, op.key, op.check, op.version); err != nil {
			if !errors.Is(err, store.ErrVersionConflict) {
				return nil, s.wrap(it.ctx, it.name, err)
			}
			if it.batch {
				return nil, &store.BatchError{Index: i, Key: op.key, Err: err}
			}
			return nil, err
		}
		if !op.del {
			puts++
		}
	}
	vs := make([]int64, len(it.ops))
	var next int64
	if puts > 0 {
		var last int64
		if err := tx.StmtContext(ctx, s.ws.seq).QueryRowContext(ctx, puts).Scan(&last); err != nil {
			return nil, s.wrap(it.ctx, it.name, err)
		}
		next = last - int64(puts) + 1
	}
	for i, op := range it.ops {
		if op.del {
			if _, err := tx.StmtContext(ctx, s.ws.del).ExecContext(ctx, op.key); err != nil {
				return nil, s.wrap(it.ctx, it.name, err)
			}
			continue
		}
		if _, err := tx.StmtContext(ctx, s.ws.put).ExecContext(ctx, op.key, op.value, next); err != nil {
			return nil, s.wrap(it.ctx, it.name, err)
		}
		vs[i] = next
		next++
	}
	return vs, nil
}

// Put implements store.KV.
func (s *Store) Put(ctx context.Context, key string, value []byte, o store.PutOptions) (int64, error) {
	if err := store.ValidateKey(key); err != nil {
		return 0, err
	}
	if err := store.CheckValue(value); err != nil {
		return 0, err
	}
	if err := s.ready(ctx); err != nil {
		return 0, err
	}
	it := &writeItem{ctx: ctx, name: "put", ops: []writeOp{{key: key, value: cloneValue(value), check: o.Check, version: o.Version}}}
	s.write(it)
	if it.err != nil {
		return 0, it.err
	}
	return it.vs[0], nil
}

// cloneValue copies a value to be written; nil becomes empty (NOT NULL).
func cloneValue(v []byte) []byte {
	return append(make([]byte, 0, len(v)), v...)
}

// Delete implements store.KV.
func (s *Store) Delete(ctx context.Context, key string, o store.DeleteOptions) error {
	if err := store.ValidateKey(key); err != nil {
		return err
	}
	if err := s.ready(ctx); err != nil {
		return err
	}
	it := &writeItem{ctx: ctx, name: "delete", ops: []writeOp{{key: key, del: true, check: o.Check, version: o.Version}}}
	s.write(it)
	return it.err
}

// Apply implements store.Batcher: the batch is one queued item, so it
// shares the group commit with concurrent Puts and Deletes, under a
// savepoint of its own (all or nothing). Its versions are consecutive.
func (s *Store) Apply(ctx context.Context, ops []store.Op) ([]int64, error) {
	if err := store.CheckBatch(ops); err != nil {
		return nil, err
	}
	if err := s.ready(ctx); err != nil {
		return nil, err
	}
	it := &writeItem{ctx: ctx, name: "apply", batch: true, ops: make([]writeOp, len(ops))}
	for i, op := range ops {
		w := writeOp{key: op.Key, del: op.Delete, check: op.Check, version: op.Version}
		if !op.Delete {
			w.value = cloneValue(op.Value)
		}
		it.ops[i] = w
	}
	s.write(it)
	if it.err != nil {
		return nil, it.err
	}
	return it.vs, nil
}

// List implements store.KV.
func (s *Store) List(ctx context.Context, o store.ListOptions) ([]store.Entry, error) {
	limit, err := store.CheckList(o)
	if err != nil {
		return nil, err
	}
	if err := s.ready(ctx); err != nil {
		return nil, err
	}
	// Keys are TEXT compared with the BINARY collation (memcmp of UTF-8),
	// which is Go's string order. Scan from the larger of Prefix and After
	// and stop at the first key outside the prefix.
	from, incl := o.Prefix, true
	if o.After >= o.Prefix {
		from, incl = o.After, false
	}
	q := `SELECT key, value, version FROM kv WHERE key > ? ORDER BY key LIMIT ?`
	if incl {
		q = `SELECT key, value, version FROM kv WHERE key >= ? ORDER BY key LIMIT ?`
	}
	rows, err := s.r.QueryContext(ctx, q, from, limit)
	if err != nil {
		return nil, s.wrap(ctx, "list", err)
	}
	defer func() { _ = rows.Close() }()
	out := make([]store.Entry, 0)
	for rows.Next() {
		var e store.Entry
		if err := rows.Scan(&e.Key, &e.Value, &e.Version); err != nil {
			return nil, s.wrap(ctx, "list", err)
		}
		if !strings.HasPrefix(e.Key, o.Prefix) {
			break
		}
		if e.Value == nil {
			e.Value = []byte{}
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, s.wrap(ctx, "list", err)
	}
	return out, nil
}

// Ping implements store.KV: it reads the sequence row.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.ready(ctx); err != nil {
		return err
	}
	var v int64
	return s.wrap(ctx, "ping", s.r.QueryRowContext(ctx, `SELECT v FROM seq WHERE id = 1`).Scan(&v))
}

// Close implements store.KV. The last connection to close checkpoints the
// WAL into the database file.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	errs := s.ws.close()
	if s.get != nil {
		errs = append(errs, s.get.Close())
	}
	if err := errors.Join(append(errs, s.r.Close(), s.w.Close())...); err != nil {
		return fmt.Errorf("close embedded store %s: %w", s.path, err)
	}
	return nil
}

var (
	_ store.KV      = (*Store)(nil)
	_ store.Batcher = (*Store)(nil)
)
