// Package postgres is the store.KV backend for several core replicas
// sharing one PostgreSQL database (14 or later, UTF8 encoding), through
// jackc/pgx/v5 connections held in a small bounded pool of its own (idle
// connections pinged before reuse, broken ones dropped).
//
// Data model: one table, avon_kv (key text COLLATE "C", value bytea,
// version bigint), and one sequence, avon_kv_version, that every
// successful Put draws from, so versions are shared by all replicas, never
// reused, and a key's versions grow in commit order. Keys compare bytewise
// (the "C" collation is memcmp of UTF-8), which is the order List promises;
// List is one range scan on the primary key (key >= prefix AND key <
// successor of prefix), one statement, so one snapshot. Compare-and-set is
// a single conditional statement (INSERT ... ON CONFLICT DO NOTHING, UPDATE
// ... WHERE version = $v, DELETE ... WHERE version = $v), so it holds across
// replicas without explicit locks.
//
// It must not hold state of its own between calls (replicas share nothing
// but the database), interpret values, or log secrets: the DSN's password
// appears in no error and no log line.
//
// # Operations
//
// DSN. Either a URL or key=value pairs, as libpq accepts them:
//
//	postgres://avon:secret@db.internal:5432/avon?sslmode=verify-full&sslrootcert=/etc/avon/db-ca.pem
//	host=db.internal port=5432 dbname=avon user=avon sslmode=verify-full
//
// Passwords may also come from PGPASSWORD or a ~/.pgpass file, which keeps
// them out of config.hcl. A malformed DSN fails Open with ErrInvalidDSN and
// a message that names what is wrong without quoting the DSN.
//
// TLS. sslmode selects it: verify-full (the certificate chains to
// sslrootcert and names the host) is the setting for production;
// require encrypts without authenticating the server; disable is for
// loopback only. The pgx default, prefer, silently falls back to plain
// text and should not be used across a network. sslcert and sslkey give a
// client certificate when the server requires one.
//
// Pool sizing. Each replica holds at most WithMaxConns connections (or the
// DSN's pool_max_conns; default the greater of 4 and the number of CPUs).
// The server's max_connections must cover every replica's maximum plus
// the operators' own sessions; a few connections per CPU of the replica are
// plenty, since every call is one short statement. New connections are
// bounded by WithConnectTimeout (default 5 s) or the DSN's connect_timeout;
// each call is bounded by its context.
//
// ErrUnavailable. A call that cannot reach the server, or whose connection
// breaks, fails with an error wrapping store.ErrUnavailable, with a message
// naming the server and the cause ("postgres put "k": 10.0.0.5:5432:
// connection refused (nothing was written): store: backend unavailable").
// On a read, retry later. On a write it means the outcome is unknown unless
// the message says nothing was written: the statement may have committed
// just before the connection broke. Re-read the key; its version tells
// whether the write landed (versions are unique, so an equal version is
// this write). A write whose context ends while the server holds it is in
// the same state; its error wraps the context's error. The pool replaces
// broken connections by itself: there is no need to reopen the store once
// the server is back.
//
// Migrations. The schema lives in numbered SQL files compiled into the
// binary (migrations/NNNN_name.sql). Open applies pending ones unless
// WithoutMigrate is given; Migrate does the same for `avon migrate`, and
// MigrationStatus lists them. Each runs in its own transaction and is
// recorded in avon_schema_migrations with its SHA-256; replicas starting
// together serialize on a PostgreSQL advisory lock, so each migration runs
// once. A database whose recorded migration differs from the binary's file
// (ErrSchemaDrift), or that a newer binary migrated (ErrSchemaNewer), is
// refused rather than guessed at.
//
// Rollback policy: migrations are forward-only. There are no down
// migrations; a release never edits an applied file, it adds a new one. To
// go back to an older binary after its successor migrated the database,
// restore the backup taken before the upgrade (take one before every
// upgrade that adds a migration). With several replicas, upgrade them all:
// an old replica refuses a newer schema at its next start.
package postgres
