package postgres

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"sort"
	"strconv"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5"
)

// migrationFiles are the schema migrations, applied in the order of their
// numbers: migrations/NNNN_name.sql, numbered from 0001 without gaps.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

// migrationLock is the advisory lock key that serializes migrations among
// core replicas ("avon_mig" in ASCII).
const migrationLock int64 = 0x61766f6e5f6d6967

// migrationsTable records applied migrations.
const createMigrationsTable = `CREATE TABLE IF NOT EXISTS avon_schema_migrations (
	version    integer     PRIMARY KEY CHECK (version > 0),
	name       text        NOT NULL,
	checksum   text        NOT NULL,
	applied_at timestamptz NOT NULL DEFAULT now()
)`

// MigrationInfo describes one migration, known to this binary, recorded in
// the database, or both.
type MigrationInfo struct {
	Version   int       // 1, 2, ...
	Name      string    // file name without ".sql", e.g. "0001_kv"
	Checksum  string    // hex SHA-256: this binary's file, else the recorded one
	Known     bool      // this binary has the migration
	Applied   bool      // the database records it
	AppliedAt time.Time // when it was applied; zero when not applied
	// Drift: the recorded name or checksum differs from this binary's
	// file. Open and Migrate refuse such a database.
	Drift bool
}

type migration struct {
	version  int
	name     string
	sql      string
	checksum string
}

var migrationName = regexp.MustCompile(`^([0-9]{4})_([a-z0-9_]+)\.sql$`)

// loadMigrations reads migrations/*.sql from fsys and checks their names
// and numbering.
func loadMigrations(fsys fs.FS) ([]migration, error) {
	names, err := fs.Glob(fsys, "migrations/*")
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	var out []migration
	for _, p := range names {
		base := path.Base(p)
		m := migrationName.FindStringSubmatch(base)
		if m == nil {
			return nil, fmt.Errorf("migration file %s: name is not NNNN_name.sql", base)
		}
		v, _ := strconv.Atoi(m[1])
		if v != len(out)+1 {
			return nil, fmt.Errorf("migration file %s: number %d, want %d (numbered from 0001 without gaps)", base, v, len(out)+1)
		}
		b, err := fs.ReadFile(fsys, p)
		if err != nil {
			return nil, err
		}
		sum := sha256.Sum256(b)
		out = append(out, migration{version: v, name: base[:len(base)-len(".sql")], sql: string(b), checksum: hex.EncodeToString(sum[:])})
	}
	if len(out) == 0 {
		return nil, errors.New("no migration files")
	}
	return out, nil
}

// knownMigrations are this binary's migrations. The files are compiled in,
// so an error here is a build mistake, which TestMigrationFiles catches.
func knownMigrations() ([]migration, error) {
	ms, err := loadMigrations(migrationFiles)
	if err != nil {
		return nil, fmt.Errorf("embedded migrations: %w", err)
	}
	return ms, nil
}

// Migrate applies pending migrations to the database at dsn and returns the
// names of those it applied, in order (none when the schema is current).
// It is safe to run from several processes at once: a PostgreSQL advisory
// lock lets one migrate while the others wait, then find nothing to do.
// Each migration runs in its own transaction and is recorded in
// avon_schema_migrations with its checksum. It refuses (ErrSchemaNewer) a
// database migrated by a newer binary and (ErrSchemaDrift) one whose
// applied migrations differ from this binary's. log may be nil.
func Migrate(ctx context.Context, dsn string, log hclog.Logger) (applied []string, err error) {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	conn, addr, err := connect(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer closeConn(conn)
	if err := checkServer(ctx, conn); err != nil {
		return nil, setupError(ctx, addr, "migrate", err)
	}
	applied, err = migrateConn(ctx, conn, log)
	if err != nil {
		return applied, setupError(ctx, addr, "migrate", err)
	}
	return applied, nil
}

// MigrationStatus lists this binary's migrations and those recorded in the
// database at dsn, by version, without changing anything.
func MigrationStatus(ctx context.Context, dsn string) ([]MigrationInfo, error) {
	conn, addr, err := connect(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer closeConn(conn)
	infos, err := status(ctx, conn)
	if err != nil {
		return nil, setupError(ctx, addr, "migration status", err)
	}
	return infos, nil
}

// connect opens one connection for Migrate and MigrationStatus.
func connect(ctx context.Context, dsn string) (*pgx.Conn, string, error) {
	cfg, err := parseDSN(dsn)
	if err != nil {
		return nil, "", err
	}
	cc := cfg.ConnConfig
	if cc.ConnectTimeout == 0 {
		cc.ConnectTimeout = DefaultConnectTimeout
	}
	addr := address(cc.Config)
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return nil, addr, setupError(ctx, addr, "connect", err)
	}
	return conn, addr, nil
}

func closeConn(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = conn.Close(ctx)
}

// setupError is Store.wrapSetup for the functions without a Store.
func setupError(ctx context.Context, addr, op string, err error) error {
	s := &Store{addr: addr}
	return s.wrapSetup(ctx, fmt.Errorf("%s: %w", op, err))
}

type record struct {
	version   int
	name      string
	checksum  string
	appliedAt time.Time
}

// readRecords returns the recorded migrations by version; exists is false
// when the table does not exist yet.
func readRecords(ctx context.Context, conn *pgx.Conn) (recs []record, exists bool, err error) {
	if err := conn.QueryRow(ctx, `SELECT to_regclass('avon_schema_migrations') IS NOT NULL`).Scan(&exists); err != nil || !exists {
		return nil, false, err
	}
	rows, err := conn.Query(ctx, `SELECT version, name, checksum, applied_at FROM avon_schema_migrations ORDER BY version`)
	if err != nil {
		return nil, true, err
	}
	defer rows.Close()
	for rows.Next() {
		var r record
		if err := rows.Scan(&r.version, &r.name, &r.checksum, &r.appliedAt); err != nil {
			return nil, true, err
		}
		recs = append(recs, r)
	}
	return recs, true, rows.Err()
}

// checkHistory compares the recorded migrations with known ones: a newer
// schema, a changed migration or a gap is an error. It returns the number
// applied.
func checkHistory(recs []record, known []migration) (int, error) {
	latest := known[len(known)-1]
	for _, r := range recs {
		if r.version > len(known) {
			last := recs[len(recs)-1]
			return 0, fmt.Errorf("%w: the database is at migration %d (%s), this binary knows up to %d (%s): run a binary at least as new, or restore a backup taken before the upgrade",
				ErrSchemaNewer, last.version, last.name, latest.version, latest.name)
		}
	}
	for i, r := range recs {
		if r.version != i+1 {
			return 0, fmt.Errorf("%w: migration history has a gap: %d recorded after %d", ErrSchemaDrift, r.version, i)
		}
		m := known[i]
		if r.name != m.name || r.checksum != m.checksum {
			return 0, fmt.Errorf("%w: migration %s was applied as %s with checksum %.12s…, this binary's has checksum %.12s…: applied migrations must never be edited",
				ErrSchemaDrift, m.name, r.name, r.checksum, m.checksum)
		}
	}
	return len(recs), nil
}

// migrateConn applies pending migrations on conn under the advisory lock.
func migrateConn(ctx context.Context, conn *pgx.Conn, log hclog.Logger) (applied []string, err error) {
	known, err := knownMigrations()
	if err != nil {
		return nil, err
	}
	return migrateWith(ctx, conn, known, log)
}

func migrateWith(ctx context.Context, conn *pgx.Conn, known []migration, log hclog.Logger) (applied []string, err error) {
	// Session lock: waits for a replica that is migrating. Should ctx end
	// the wait, the driver closes the connection, which releases it.
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, migrationLock); err != nil {
		return nil, fmt.Errorf("take migration lock: %w", err)
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, uerr := conn.Exec(uctx, `SELECT pg_advisory_unlock($1)`, migrationLock); uerr != nil && !conn.IsClosed() {
			// A lock we cannot release would block every replica:
			// drop the session instead.
			_ = conn.Close(uctx)
		}
	}()
	if _, err := conn.Exec(ctx, createMigrationsTable); err != nil {
		return nil, fmt.Errorf("create avon_schema_migrations: %w", err)
	}
	recs, _, err := readRecords(ctx, conn)
	if err != nil {
		return nil, fmt.Errorf("read avon_schema_migrations: %w", err)
	}
	done, err := checkHistory(recs, known)
	if err != nil {
		return nil, err
	}
	for _, m := range known[done:] {
		start := time.Now()
		if err := applyOne(ctx, conn, m); err != nil {
			return applied, fmt.Errorf("migration %s: %w", m.name, err)
		}
		applied = append(applied, m.name)
		log.Info("applied migration", "migration", m.name, "checksum", m.checksum, "duration", time.Since(start))
	}
	return applied, nil
}

// applyOne runs m and records it in one transaction: both or neither.
func applyOne(ctx context.Context, conn *pgx.Conn, m migration) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(context.Background()) }()
	if _, err := tx.Exec(ctx, m.sql); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO avon_schema_migrations (version, name, checksum) VALUES ($1, $2, $3)`,
		m.version, m.name, m.checksum); err != nil {
		return fmt.Errorf("record: %w", err)
	}
	return tx.Commit(ctx)
}

// verifySchema checks, without migrating, that every known migration is
// applied and unchanged and nothing newer is.
func verifySchema(ctx context.Context, conn *pgx.Conn) error {
	known, err := knownMigrations()
	if err != nil {
		return err
	}
	recs, _, err := readRecords(ctx, conn)
	if err != nil {
		return err
	}
	done, err := checkHistory(recs, known)
	if err != nil {
		return err
	}
	if done < len(known) {
		return fmt.Errorf("%w: %d of %d migrations applied, next is %s: run `avon migrate` (or open without WithoutMigrate)",
			ErrSchemaBehind, done, len(known), known[done].name)
	}
	return nil
}

// status merges known and recorded migrations.
func status(ctx context.Context, conn *pgx.Conn) ([]MigrationInfo, error) {
	known, err := knownMigrations()
	if err != nil {
		return nil, err
	}
	recs, _, err := readRecords(ctx, conn)
	if err != nil {
		return nil, err
	}
	byVersion := map[int]*MigrationInfo{}
	var out []MigrationInfo
	for _, m := range known {
		out = append(out, MigrationInfo{Version: m.version, Name: m.name, Checksum: m.checksum, Known: true})
	}
	for i := range out {
		byVersion[out[i].Version] = &out[i]
	}
	var unknown []MigrationInfo
	for _, r := range recs {
		if mi, ok := byVersion[r.version]; ok {
			mi.Applied, mi.AppliedAt = true, r.appliedAt
			mi.Drift = r.name != mi.Name || r.checksum != mi.Checksum
			continue
		}
		unknown = append(unknown, MigrationInfo{Version: r.version, Name: r.name, Checksum: r.checksum, Applied: true, AppliedAt: r.appliedAt})
	}
	out = append(out, unknown...)
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, nil
}
