// Package redisstore is the store.KV backend on a Redis server (standalone
// or a primary with Lua scripting; not Redis Cluster), through
// github.com/redis/go-redis/v9. It passes core/store/storetest against a
// real redis-server, like the embedded and PostgreSQL backends.
//
// The PostgreSQL backend (core/store/postgres) is the recommended durable
// store shared by several core replicas. This one is for deployments that
// already run Redis configured for durability (see Durability below):
// Redis with its default settings loses acknowledged writes on a crash.
//
// It must not interpret values, cache entries between calls, retry a write,
// or log values or the password.
//
// # Data layout
//
// Every key starts with Options.KeyPrefix (P, default "avon:kv:"):
//
//	P version      string   the version counter (INCR); never decreases
//	P index        zset     every stored key, score 0
//	P k:<key>      hash     one entry: field v = its version in decimal,
//	                        field d = its value (binary-safe bytes)
//
// The index and the entries change together, in one script, so a key is in
// the index exactly when its hash exists. Stores sharing one server and DB
// need prefixes neither of which starts with the other ("avon:kv:" and
// "avon:kv:b:" collide). Entries have no TTL: a maxmemory-policy of
// volatile-* never evicts them, allkeys-* would (see Durability).
//
// # Atomicity
//
// Put and Delete are Lua scripts, sent with EVALSHA and again with EVAL
// only when the server answers NOSCRIPT (it then ran nothing). A script
// runs alone on the server, so compare-and-set holds across any number of
// replicas without locks: the script checks the condition (the entry's
// stored version text against the expected one, compared as exact decimal
// strings), and only then draws the next version with INCR on the counter
// and writes the hash and the index. Every check comes before the first
// write, and a server that refuses writes (out of memory, read-only
// replica, failed persistence) refuses at that first write, so a refused
// script has written nothing. Versions come from the single counter, so
// they are shared by all replicas, strictly increasing and never reused
// (while the server keeps its data: see Durability).
//
// Apply (store.Batcher) is one script for the whole batch: it checks every
// op (the types of its keys, then its condition, as the single-op scripts
// do) before the first write, and answers the index of the first failed
// check; then it draws the batch's versions with one INCRBY, which fails
// whole on a corrupt or exhausted counter, and writes every op as Put and
// Delete do, so the index and the entries stay in step. The versions are
// handed out in op order as exact decimal text (a Lua number would round
// them above 2^53).
//
// # List snapshot
//
// List is one script: ZRANGEBYLEX on the index (members of equal score
// are ordered by memcmp, which is the bytewise order the store promises)
// from the larger of Prefix (inclusive) and After (exclusive) to the
// prefix's bytewise successor (exclusive), LIMIT Limit, then HMGET of each
// entry, all inside the script, so the page is one consistent snapshot.
// A page holds at most store.MaxLimit entries of at most store.MaxValueSize
// bytes each; the reply is built in the server's memory before it is sent,
// so callers of List on large values should use small limits.
//
// # Durability
//
// Redis acknowledges a write before it is on disk unless the server runs
// with appendonly yes and appendfsync always (and no-appendfsync-on-rewrite
// no, the default). With appendfsync everysec a crash loses up to a second
// of acknowledged writes; with no AOF (the default) it loses everything
// since the last RDB snapshot, and the version counter restarts lower, so
// versions are handed out again. A maxmemory-policy of allkeys-* evicts
// entries at the memory limit. Failover to an asynchronous replica loses
// the writes it had not received.
//
// Open reads appendonly, appendfsync, no-appendfsync-on-rewrite and
// maxmemory-policy with CONFIG GET. When acknowledged writes can be lost it
// logs a warning on Options.Logger naming the settings to change; with
// Options.RequireDurable it fails instead, with an error wrapping
// ErrNotDurable. A server that refuses CONFIG GET (renamed command, ACL)
// cannot be checked: a warning, or ErrNotDurable under RequireDurable.
// Store.Durability reports what Open found. The check is made once, at
// Open: a later CONFIG SET is not seen.
//
// # Errors
//
// Call errors wrap the store package's sentinels. A call that cannot reach
// the server, or whose connection breaks, fails with store.ErrUnavailable
// and a message naming the server and the cause:
//
//	redis store put "k": 127.0.0.1:6379: connection refused (nothing was written): store: backend unavailable
//
// For a write the message says whether the outcome is known: "nothing was
// written" when the command never reached the server or the server refused
// it, "outcome unknown: re-read the key" when the connection failed after
// sending (the script may have run). Versions are unique, so re-reading
// the key tells whether the write landed. Writes are never retried by the
// client, since a retried compare-and-set whose first reply was lost would
// report a conflict against its own write. A read whose connection turns
// out dead before any reply is tried once more on a new connection.
//
// Every command is bounded by the caller's ctx and by ReadTimeout and
// WriteTimeout, so a hung server fails calls in bounded time even without
// a deadline; a call ended by its ctx returns an error wrapping ctx.Err().
// Broken connections are replaced on the next call: the store needs no
// reopening once the server is back.
//
// An entry that does not have the layout above (written by something
// else, or damaged) gives an error wrapping both ErrCorrupt and
// store.ErrUnavailable, never a panic and never a wrong value.
package redisstore
