package redisstore

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	goredis "github.com/redis/go-redis/v9"

	"github.com/avonzt/avon/core/store"
	"github.com/avonzt/avon/internal/redisconn"
)

// Defaults of Options.
const (
	DefaultKeyPrefix = "avon:kv:"
	// The timeouts bound each connection attempt, request and reply. A
	// request or reply may carry a value of store.MaxValueSize bytes;
	// raise them on links slower than about 100 Mbit/s.
	DefaultDialTimeout  = 5 * time.Second
	DefaultReadTimeout  = 5 * time.Second
	DefaultWriteTimeout = 5 * time.Second
	// MaxKeyPrefix is the longest KeyPrefix, in bytes.
	MaxKeyPrefix = redisconn.MaxKeyPrefix
)

// Options configures Open.
type Options struct {
	// Addr is the server's host:port. Required.
	Addr string
	// Username and Password authenticate (AUTH); empty for none. The
	// password appears in no error and no log line.
	Username string
	Password string
	// DB is the database number (0 by default).
	DB int
	// TLS, when not nil, makes the connection use TLS with this
	// configuration.
	TLS *tls.Config
	// KeyPrefix starts every key the store uses (default
	// DefaultKeyPrefix): at most MaxKeyPrefix bytes of valid UTF-8 without
	// control characters. See the package documentation for prefixes
	// sharing a server.
	KeyPrefix string
	// DialTimeout, ReadTimeout and WriteTimeout bound each connection
	// attempt, reply and request (defaults DefaultDialTimeout, ...), so a
	// hung server fails calls within them even when the caller's ctx has
	// no deadline.
	DialTimeout  time.Duration
	ReadTimeout  time.Duration
	WriteTimeout time.Duration
	// PoolSize is the most connections kept (0: go-redis's default, 10
	// per GOMAXPROCS).
	PoolSize int
	// Logger receives the open event and the durability warning (default:
	// no logging). Values and the password are never logged.
	Logger hclog.Logger
	// RequireDurable makes Open fail with ErrNotDurable when the server
	// can lose acknowledged writes or its settings cannot be read.
	RequireDurable bool
}

// defaults are the store's connection defaults.
var defaults = redisconn.Defaults{
	KeyPrefix:    DefaultKeyPrefix,
	DialTimeout:  DefaultDialTimeout,
	ReadTimeout:  DefaultReadTimeout,
	WriteTimeout: DefaultWriteTimeout,
}

// check validates o, fills in the defaults and returns the connection
// settings.
func (o *Options) check() (redisconn.Settings, error) {
	s := redisconn.Settings{Addr: o.Addr, Username: o.Username, Password: o.Password, DB: o.DB, TLS: o.TLS, KeyPrefix: o.KeyPrefix,
		DialTimeout: o.DialTimeout, ReadTimeout: o.ReadTimeout, WriteTimeout: o.WriteTimeout, PoolSize: o.PoolSize}
	if err := s.Normalize(defaults); err != nil {
		return s, fmt.Errorf("redis store: %v: %w", err, store.ErrInvalidArgument)
	}
	o.KeyPrefix, o.DialTimeout, o.ReadTimeout, o.WriteTimeout = s.KeyPrefix, s.DialTimeout, s.ReadTimeout, s.WriteTimeout
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	return s, nil
}

// Store is the Redis store. Its methods follow the store.KV contract; it
// is safe for concurrent use by many goroutines and many processes (core
// replicas) sharing one server.
type Store struct {
	opts   Options
	client *goredis.Client
	dur    Durability
	closed atomic.Bool

	// Key names, from opts.KeyPrefix (see the package documentation).
	counterKey string
	indexKey   string
	entryBase  string
}

// Open connects to the server, checks that it answers, reads its
// persistence settings (see Durability in the package documentation) and
// returns the store. ctx bounds the opening only. Options are checked
// first (store.ErrInvalidArgument); an unreachable server gives
// store.ErrUnavailable naming the address; with RequireDurable, a server
// that can lose writes gives ErrNotDurable.
func Open(ctx context.Context, opts Options) (*Store, error) {
	settings, err := opts.check()
	if err != nil {
		return nil, err
	}
	client := redisconn.NewClient(settings) // writes are never retried: see the package documentation
	s := &Store{
		opts:       opts,
		client:     client,
		counterKey: opts.KeyPrefix + "version",
		indexKey:   opts.KeyPrefix + "index",
		entryBase:  opts.KeyPrefix + "k:",
	}
	if err := s.setup(ctx); err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("open redis store: %w", err)
	}
	opts.Logger.Info("redis store open", "addr", opts.Addr, "db", opts.DB, "key_prefix", opts.KeyPrefix, "durable", s.dur.Durable())
	return s, nil
}

// setup pings the server and checks its durability settings.
func (s *Store) setup(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("redis store connect: %w", err)
	}
	if err := s.client.Ping(ctx).Err(); err != nil {
		return s.fail(ctx, "connect", err, false)
	}
	d, err := checkDurability(ctx, s.client)
	if err != nil {
		return s.fail(ctx, "read settings", err, false)
	}
	s.dur = d
	if d.Durable() {
		return nil
	}
	problems := strings.Join(d.Problems, "; ")
	if s.opts.RequireDurable {
		return fmt.Errorf("redis store: %s: %s: %w", s.opts.Addr, problems, ErrNotDurable)
	}
	s.opts.Logger.Warn("redis store: acknowledged writes can be lost on this server; use PostgreSQL, or run Redis with appendonly yes and appendfsync always",
		"addr", s.opts.Addr, "appendonly", d.AppendOnly, "appendfsync", d.AppendFsync,
		"no_appendfsync_on_rewrite", d.NoAppendFsyncOnRewrite, "maxmemory_policy", d.MaxmemoryPolicy, "problems", problems)
	return nil
}

// Addr returns the server address.
func (s *Store) Addr() string { return s.opts.Addr }

// Durability returns what Open found about the server's persistence.
func (s *Store) Durability() Durability {
	d := s.dur
	d.Problems = append([]string(nil), d.Problems...)
	return d
}

func (s *Store) entryKey(key string) string { return s.entryBase + key }

// ready refuses a call on a closed store or with a done context; call it
// after the arguments are checked.
func (s *Store) ready(ctx context.Context, op string) error {
	if s.closed.Load() {
		return fmt.Errorf("redis store %s: %w", op, store.ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("redis store %s: %w", op, err)
	}
	return nil
}

// read runs an idempotent read, once more when the connection turns out to
// have been dropped (a server restarted since the connection was made).
func (s *Store) read(ctx context.Context, fn func() error) error {
	err := fn()
	if err != nil && ctx.Err() == nil && !s.closed.Load() && redisconn.ConnectionDropped(err) {
		err = fn()
	}
	return err
}

// Scripts. Keys are passed in KEYS; entry keys read by the list script are
// built from ARGV, which ties the store to one server (no Redis Cluster).
var (
	// putScript: KEYS counter, index, entry; ARGV mode ("p" any, "c"
	// create, "u" update), expected version, value, key. Answers
	// {1, new version}, or {0, nil} (absent) / {0, version} (present) on
	// a conflict. Every check precedes the first write (INCR, which
	// itself checks the counter), so a refused script wrote nothing.
	putScript = goredis.NewScript(`
local ti = redis.call('TYPE', KEYS[2]).ok
if ti ~= 'zset' and ti ~= 'none' then
  return redis.error_reply('` + corruptKey + ` index key holds a ' .. ti)
end
local t = redis.call('TYPE', KEYS[3]).ok
if t ~= 'hash' and t ~= 'none' then
  return redis.error_reply('` + corruptKey + ` entry key holds a ' .. t)
end
local mode = ARGV[1]
if mode ~= 'p' then
  local cur = false
  if t == 'hash' then cur = redis.call('HGET', KEYS[3], 'v') or '' end
  if mode == 'c' and cur then return {0, cur} end
  if mode == 'u' and cur ~= ARGV[2] then return {0, cur} end
end
local n = redis.pcall('INCR', KEYS[1])
if type(n) == 'table' and n.err then
  return redis.error_reply('` + corruptKey + ` version counter: ' .. n.err)
end
local v = redis.call('GET', KEYS[1])
redis.call('HSET', KEYS[3], 'v', v, 'd', ARGV[3])
redis.call('ZADD', KEYS[2], 0, ARGV[4])
return {1, v}
`)

	// deleteScript: KEYS index, entry; ARGV mode ("d" any, "a" must be
	// absent, "u" at version), expected version, key. Answers {1, ""},
	// or a conflict as putScript does.
	deleteScript = goredis.NewScript(`
local ti = redis.call('TYPE', KEYS[1]).ok
if ti ~= 'zset' and ti ~= 'none' then
  return redis.error_reply('` + corruptKey + ` index key holds a ' .. ti)
end
local t = redis.call('TYPE', KEYS[2]).ok
if t ~= 'hash' and t ~= 'none' then
  return redis.error_reply('` + corruptKey + ` entry key holds a ' .. t)
end
local mode = ARGV[1]
if mode ~= 'd' then
  local cur = false
  if t == 'hash' then cur = redis.call('HGET', KEYS[2], 'v') or '' end
  if mode == 'a' then
    if cur then return {0, cur} end
    return {1, ''}
  end
  if cur ~= ARGV[2] then return {0, cur} end
end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[1], ARGV[3])
return {1, ''}
`)

	// listScript: KEYS index; ARGV lex min, lex max, limit, entry key
	// base. Answers {key, version, value, ...} (nil fields for an index
	// member without an entry).
	listScript = goredis.NewScript(`
local ks = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[1], ARGV[2], 'LIMIT', 0, ARGV[3])
local out = {}
for i = 1, #ks do
  local f = redis.call('HMGET', ARGV[4] .. ks[i], 'v', 'd')
  out[3*i-2] = ks[i]
  out[3*i-1] = f[1]
  out[3*i] = f[2]
end
return out
`)
)

// Get implements store.KV: one HMGET of the entry's hash.
func (s *Store) Get(ctx context.Context, key string) (store.Entry, error) {
	if err := store.ValidateKey(key); err != nil {
		return store.Entry{}, err
	}
	if err := s.ready(ctx, "get"); err != nil {
		return store.Entry{}, err
	}
	var fields []any
	err := s.read(ctx, func() (err error) {
		fields, err = s.client.HMGet(ctx, s.entryKey(key), "v", "d").Result()
		return err
	})
	if err != nil {
		return store.Entry{}, s.fail(ctx, fmt.Sprintf("get %q", key), err, false)
	}
	if len(fields) != 2 {
		return store.Entry{}, s.fail(ctx, fmt.Sprintf("get %q", key), corruptf("HMGET answered %d fields, want 2", len(fields)), false)
	}
	e, found, err := decodeEntry(key, fields[0], fields[1])
	switch {
	case err != nil:
		return store.Entry{}, s.fail(ctx, fmt.Sprintf("get %q", key), err, false)
	case !found:
		return store.Entry{}, fmt.Errorf("get %q: %w", key, store.ErrNotFound)
	}
	return e, nil
}

// Put implements store.KV: one script (see the package documentation).
func (s *Store) Put(ctx context.Context, key string, value []byte, o store.PutOptions) (int64, error) {
	if err := store.ValidateKey(key); err != nil {
		return 0, err
	}
	if err := store.CheckValue(value); err != nil {
		return 0, err
	}
	op := fmt.Sprintf("put %q", key)
	if err := s.ready(ctx, op); err != nil {
		return 0, err
	}
	if value == nil {
		value = []byte{}
	}
	mode := "p"
	switch {
	case o.Check && o.Version == 0:
		mode = "c"
	case o.Check:
		mode = "u"
	}
	reply, err := putScript.Run(ctx, s.client, []string{s.counterKey, s.indexKey, s.entryKey(key)},
		mode, formatVersion(o.Version), value, key).Result()
	if err != nil {
		return 0, s.fail(ctx, op, err, true)
	}
	r, err := decodeWrite(reply, true)
	switch {
	case err != nil:
		return 0, s.fail(ctx, op, err, false)
	case r.ok:
		return r.version, nil
	case !o.Check:
		return 0, s.fail(ctx, op, corruptf("unconditional put answered a conflict"), false)
	}
	return 0, conflict(op, o.Version, r)
}

// conflict describes a failed check.
func conflict(op string, want int64, r writeResult) error {
	switch {
	case want == 0:
		return fmt.Errorf("%s: key exists at version %d: %w", op, r.current, store.ErrVersionConflict)
	case r.exists:
		return fmt.Errorf("%s: key at version %d, not %d: %w", op, r.current, want, store.ErrVersionConflict)
	}
	return fmt.Errorf("%s: key absent, not at version %d: %w", op, want, store.ErrVersionConflict)
}

// Delete implements store.KV: one script.
func (s *Store) Delete(ctx context.Context, key string, o store.DeleteOptions) error {
	if err := store.ValidateKey(key); err != nil {
		return err
	}
	op := fmt.Sprintf("delete %q", key)
	if err := s.ready(ctx, op); err != nil {
		return err
	}
	mode := "d"
	switch {
	case o.Check && o.Version == 0:
		mode = "a"
	case o.Check:
		mode = "u"
	}
	reply, err := deleteScript.Run(ctx, s.client, []string{s.indexKey, s.entryKey(key)},
		mode, formatVersion(o.Version), key).Result()
	if err != nil {
		return s.fail(ctx, op, err, true)
	}
	r, err := decodeWrite(reply, false)
	switch {
	case err != nil:
		return s.fail(ctx, op, err, false)
	case r.ok:
		return nil
	case !o.Check:
		return s.fail(ctx, op, corruptf("unconditional delete answered a conflict"), false)
	}
	return conflict(op, o.Version, r)
}

// List implements store.KV: one script, so one snapshot.
func (s *Store) List(ctx context.Context, o store.ListOptions) ([]store.Entry, error) {
	limit, err := store.CheckList(o)
	if err != nil {
		return nil, err
	}
	if err := s.ready(ctx, "list"); err != nil {
		return nil, err
	}
	lo, hi := lexRange(o)
	var reply any
	err = s.read(ctx, func() (err error) {
		reply, err = listScript.Run(ctx, s.client, []string{s.indexKey}, lo, hi, strconv.Itoa(limit), s.entryBase).Result()
		return err
	})
	if err != nil {
		return nil, s.fail(ctx, "list", err, false)
	}
	es, err := decodeList(reply, o, limit)
	if err != nil {
		return nil, s.fail(ctx, "list", err, false)
	}
	return es, nil
}

// Ping implements store.KV: a PING round trip.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.ready(ctx, "ping"); err != nil {
		return err
	}
	err := s.read(ctx, func() error { return s.client.Ping(ctx).Err() })
	if err != nil {
		return s.fail(ctx, "ping", err, false)
	}
	return nil
}

// Close implements store.KV: it closes the connections. Calls in flight
// fail with store.ErrClosed.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	if err := s.client.Close(); err != nil && !errors.Is(err, goredis.ErrClosed) {
		return fmt.Errorf("redis store %s: close: %w", s.opts.Addr, err)
	}
	return nil
}

var _ store.KV = (*Store)(nil)
