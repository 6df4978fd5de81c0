// Package embedded is the single-node store: one SQLite database file
// (pure Go driver, no cgo) under the data directory. WAL journal with
// synchronous=FULL makes every committed write survive a killed process or
// a power cut; one writer connection serializes writes, readers run
// concurrently. Versions come from one sequence row, so they strictly
// increase across the whole store.
//
// It must not be shared by several core replicas: those use PostgreSQL.
package embedded

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"

	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/avonzt/avon/core/store"
)

// migrations are applied in order; each entry's index+1 is its version.
// Never edit an applied migration: append a new one.
var migrations = []string{
	`CREATE TABLE kv (
		key     TEXT PRIMARY KEY,
		value   BLOB NOT NULL,
		version INTEGER NOT NULL
	) WITHOUT ROWID;
	CREATE TABLE seq (id INTEGER PRIMARY KEY CHECK (id = 1), v INTEGER NOT NULL);
	INSERT INTO seq (id, v) VALUES (1, 0);`,
}

// Store is the embedded store.
type Store struct {
	path   string
	w      *sql.DB // one connection: all writes
	r      *sql.DB // readers
	closed atomic.Bool
}

// Open opens (creating if needed) the database at path and applies
// migrations. The file is created 0600 and its directory 0700.
func Open(ctx context.Context, path string) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open embedded store %s: %w", path, err)
	}
	if f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600); err != nil {
		return nil, fmt.Errorf("open embedded store %s: %w", path, err)
	} else {
		f.Close()
	}
	dsn := func(extra string) string {
		q := url.Values{}
		q.Add("_pragma", "journal_mode(WAL)")
		q.Add("_pragma", "synchronous(FULL)")
		q.Add("_pragma", "busy_timeout(10000)")
		q.Add("_pragma", "foreign_keys(ON)")
		s := "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
		if extra != "" {
			s += "&" + extra
		}
		return s
	}
	w, err := sql.Open("sqlite", dsn("_txlock=immediate"))
	if err != nil {
		return nil, fmt.Errorf("open embedded store %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	r, err := sql.Open("sqlite", dsn(""))
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("open embedded store %s: %w", path, err)
	}
	r.SetMaxOpenConns(8)
	s := &Store{path: path, w: w, r: r}
	if err := s.migrate(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("open embedded store %s: %w", path, err)
	}
	return s, nil
}

func (s *Store) migrate(ctx context.Context) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)`); err != nil {
		return fmt.Errorf("migrations table: %w", err)
	}
	var cur int
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&cur); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if cur > len(migrations) {
		return fmt.Errorf("database schema version %d is newer than this binary's %d", cur, len(migrations))
	}
	for v := cur + 1; v <= len(migrations); v++ {
		if _, err := tx.ExecContext(ctx, migrations[v-1]); err != nil {
			return fmt.Errorf("migration %d: %w", v, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version) VALUES (?)`, v); err != nil {
			return fmt.Errorf("record migration %d: %w", v, err)
		}
	}
	return tx.Commit()
}

// SchemaVersion returns the applied schema version.
func (s *Store) SchemaVersion(ctx context.Context) (int, error) {
	var v int
	err := s.r.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&v)
	return v, err
}

func (s *Store) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("embedded store %s: %w", op, err)
	}
	if s.closed.Load() || strings.Contains(err.Error(), "database is closed") {
		return fmt.Errorf("embedded store %s: %w", op, store.ErrClosed)
	}
	return fmt.Errorf("embedded store %s: %v: %w", op, err, store.ErrUnavailable)
}

func (s *Store) ready(ctx context.Context) error {
	if s.closed.Load() {
		return store.ErrClosed
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
	err := s.r.QueryRowContext(ctx, `SELECT value, version FROM kv WHERE key = ?`, key).Scan(&e.Value, &e.Version)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Entry{}, fmt.Errorf("get %q: %w", key, store.ErrNotFound)
	}
	if err != nil {
		return store.Entry{}, s.wrap("get", err)
	}
	if e.Value == nil {
		e.Value = []byte{}
	}
	return e, nil
}

// checkTx enforces a compare-and-set condition inside tx.
func checkTx(ctx context.Context, tx *sql.Tx, key string, check bool, version int64) error {
	if !check {
		return nil
	}
	var cur int64
	err := tx.QueryRowContext(ctx, `SELECT version FROM kv WHERE key = ?`, key).Scan(&cur)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		if version != 0 {
			return fmt.Errorf("key %q absent, expected version %d: %w", key, version, store.ErrVersionConflict)
		}
		return nil
	case err != nil:
		return err
	case version == 0 || cur != version:
		return fmt.Errorf("key %q at version %d, expected %d: %w", key, cur, version, store.ErrVersionConflict)
	}
	return nil
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
	if value == nil {
		value = []byte{}
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return 0, s.wrap("put", err)
	}
	defer tx.Rollback()
	if err := checkTx(ctx, tx, key, o.Check, o.Version); err != nil {
		if errors.Is(err, store.ErrVersionConflict) {
			return 0, err
		}
		return 0, s.wrap("put", err)
	}
	var v int64
	if err := tx.QueryRowContext(ctx, `UPDATE seq SET v = v + 1 WHERE id = 1 RETURNING v`).Scan(&v); err != nil {
		return 0, s.wrap("put", err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO kv (key, value, version) VALUES (?, ?, ?)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value, version = excluded.version`, key, value, v); err != nil {
		return 0, s.wrap("put", err)
	}
	if err := tx.Commit(); err != nil {
		return 0, s.wrap("put", err)
	}
	return v, nil
}

// Delete implements store.KV.
func (s *Store) Delete(ctx context.Context, key string, o store.DeleteOptions) error {
	if err := store.ValidateKey(key); err != nil {
		return err
	}
	if err := s.ready(ctx); err != nil {
		return err
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return s.wrap("delete", err)
	}
	defer tx.Rollback()
	if err := checkTx(ctx, tx, key, o.Check, o.Version); err != nil {
		if errors.Is(err, store.ErrVersionConflict) {
			return err
		}
		return s.wrap("delete", err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM kv WHERE key = ?`, key); err != nil {
		return s.wrap("delete", err)
	}
	return s.wrap("delete", tx.Commit())
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
	// Keys sort bytewise (BINARY collation); scan from the larger of the
	// prefix and After, stop at the first key without the prefix.
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
		return nil, s.wrap("list", err)
	}
	defer rows.Close()
	out := make([]store.Entry, 0)
	for rows.Next() {
		var e store.Entry
		if err := rows.Scan(&e.Key, &e.Value, &e.Version); err != nil {
			return nil, s.wrap("list", err)
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
		return nil, s.wrap("list", err)
	}
	return out, nil
}

// Ping implements store.KV.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.ready(ctx); err != nil {
		return err
	}
	var one int
	return s.wrap("ping", s.r.QueryRowContext(ctx, `SELECT 1 FROM seq WHERE id = 1`).Scan(&one))
}

// Close closes the database.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	return errors.Join(s.r.Close(), s.w.Close())
}

var _ store.KV = (*Store)(nil)
