// Package postgres is the store.KV backend for several core replicas
// sharing one PostgreSQL database (14 or later, UTF8 encoding), through a
// bounded pool of jackc/pgx/v5 connections (pgxpool): idle connections are
// pinged before reuse, broken ones dropped, old and long-idle ones closed.
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
// replicas without explicit locks. Apply (store.Batcher) runs the same
// statements for its ops in one READ COMMITTED transaction, sent as one
// pipeline, and rolls back on the first failed check. Every check holds
// until COMMIT: the conditional statements lock the rows they match, and a
// delete that requires its key absent inserts (and removes again) an
// uncommitted placeholder, so a concurrent insert of the key waits for the
// batch instead of slipping in under it.
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
// plenty, since every call is one short statement. Connections are opened
// on demand (none at Open beyond the one that checks the schema), and:
//
//   - closed once older than DefaultMaxConnLifetime (1 h, plus a random
//     part of up to a sixth of it per connection, so they do not all go at
//     once); pool_max_conn_lifetime and pool_max_conn_lifetime_jitter in
//     the DSN change it. Long-lived replicas thereby follow a server moved
//     behind a proxy or a DNS name;
//   - closed when idle longer than DefaultMaxConnIdleTime (5 min;
//     pool_max_conn_idle_time), so a replica shrinks back after a burst;
//   - pinged before reuse when idle for a second or more, bounded by the
//     connect timeout (pool_ping_timeout), so connections that died while
//     idle (a server restart, a proxy's idle timeout) cost no failed call.
//
// A health check runs every DefaultHealthCheckPeriod (15 s;
// pool_health_check_period) and also keeps pool_min_conns and
// pool_min_idle_conns open when the DSN asks for them (default none). Any
// other pool_ parameter, or a value out of range, fails Open with
// ErrInvalidDSN. New connections are bounded by WithConnectTimeout
// (default 5 s) or the DSN's connect_timeout; each call is bounded by its
// context. Stat reports the pool for metrics; a growing PoolStat.Waits
// means calls queue for connections.
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
// the same state; its error wraps the context's error. A read is tried
// once more on another connection when its connection turns out dead; a
// write only when the driver knows nothing was sent. The pool replaces
// broken connections by itself: there is no need to reopen the store once
// the server is back. After Close every call fails with store.ErrClosed.
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
