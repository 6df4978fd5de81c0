// Package redis is the cache.Cache shared by core replicas through Redis
// (github.com/redis/go-redis/v9). Every replica opens its own client on the
// same server; sessions, replay marks, tokens and rate-limit counters are
// Redis keys with server-side TTLs, and events travel over Redis pub/sub.
// It passes core/cache/cachetest and is tested against a real redis-server
// (internal/testsvc/redistest), including a paused, stopped and restarted
// server.
//
// # Key layout
//
// All keys and channels start with Options.KeyPrefix (default "avon:"):
//
//	<prefix>sess:<id>          session value            SET PX, GET+PTTL (script), PEXPIRE, DEL
//	<prefix>used:<set>:<id>    replay mark "1"          SET NX PX
//	<prefix>tok:<set>:<id>     one-time token value     SET PX, SET NX PX; GET+DEL, GET+PTTL (scripts); DEL
//	<prefix>rl:<key>           rate-limit counter       SET PX / INCR (script)
//	<prefix>ch:<channel>       pub/sub channel          PUBLISH, SUBSCRIBE
//
// Set names never contain ':' (cache.ValidateSet), so (set, id) pairs map
// to distinct keys. Pub/sub channels are global to the server, not per DB:
// deployments sharing one Redis need distinct prefixes, not just distinct
// DBs.
//
// # Atomicity and failures
//
// MarkUsed is one SET NX; ConsumeToken and Allow are Lua scripts, so each
// is atomic on the server whatever the number of replicas. Commands are
// never retried by the client: a retried SET NX whose first reply was lost
// would report a replay, and a retried consume would lose the token, so a
// failure is reported as is (cache.ErrUnavailable, with the address and
// the cause: "redis 127.0.0.1:6390: mark used: i/o timeout: cache
// unavailable") and the caller decides (replay checks refuse, rate limits
// fail open through cache.AllowFailOpen). Every command is bounded by the
// caller's ctx and by ReadTimeout/WriteTimeout, so a hung server fails a
// call within about a second. Broken connections are replaced on the next
// call; the client needs no reopening after the server comes back.
//
// # Pub/sub
//
// Each Subscription owns one go-redis PubSub and a goroutine that reads it,
// checks the connection with a PING when it has been quiet for
// HealthInterval, and on any failure drops the connection and subscribes
// again on a new one (backing off up to a second, until Close), then
// signals on Gaps: messages published while it was away are lost.
// Messages go into a buffer of SubscriberBuffer; when it is full a message
// is dropped and Gaps signals. Delivery is at most once.
//
// The package must not interpret values or log them.
package redis

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/avonzt/avon/core/cache"
	"github.com/avonzt/avon/internal/redisconn"
)

// Defaults of Options.
const (
	DefaultKeyPrefix        = "avon:"
	DefaultDialTimeout      = time.Second
	DefaultReadTimeout      = time.Second
	DefaultWriteTimeout     = time.Second
	DefaultHealthInterval   = time.Second
	DefaultSubscriberBuffer = 256
	// MaxKeyPrefix is the longest KeyPrefix, in bytes.
	MaxKeyPrefix = redisconn.MaxKeyPrefix
)

// Options configures Open.
type Options struct {
	// Addr is the server's host:port. Required.
	Addr string
	// Username and Password authenticate (AUTH); empty for none.
	Username string
	Password string
	// DB is the database number (0 by default).
	DB int
	// TLS, when not nil, makes the connection use TLS with this
	// configuration.
	TLS *tls.Config
	// KeyPrefix starts every key and channel (default DefaultKeyPrefix):
	// at most MaxKeyPrefix bytes of valid UTF-8 without control
	// characters.
	KeyPrefix string
	// DialTimeout, ReadTimeout and WriteTimeout bound each connection
	// attempt, reply and request (defaults one second each), so a hung
	// server fails calls within them even when the caller's ctx has no
	// deadline.
	DialTimeout  time.Duration
	ReadTimeout  time.Duration
	WriteTimeout time.Duration
	// PoolSize is the most connections kept per client (0: go-redis's
	// default, 10 per GOMAXPROCS).
	PoolSize int
	// HealthInterval is how long a subscription's connection may be quiet
	// before it is checked with a PING (default DefaultHealthInterval).
	HealthInterval time.Duration
	// SubscriberBuffer is each subscription's buffer, in messages
	// (default DefaultSubscriberBuffer).
	SubscriberBuffer int
}

// defaults are the cache's connection defaults.
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
		return s, fmt.Errorf("redis: %v: %w", err, cache.ErrInvalidArgument)
	}
	o.KeyPrefix, o.DialTimeout, o.ReadTimeout, o.WriteTimeout = s.KeyPrefix, s.DialTimeout, s.ReadTimeout, s.WriteTimeout
	switch {
	case o.HealthInterval < 0:
		return s, fmt.Errorf("redis: health interval %v is negative: %w", o.HealthInterval, cache.ErrInvalidArgument)
	case o.HealthInterval == 0:
		o.HealthInterval = DefaultHealthInterval
	}
	switch {
	case o.SubscriberBuffer < 0:
		return s, fmt.Errorf("redis: subscriber buffer %d is negative: %w", o.SubscriberBuffer, cache.ErrInvalidArgument)
	case o.SubscriberBuffer == 0:
		o.SubscriberBuffer = DefaultSubscriberBuffer
	}
	return s, nil
}

// Cache is a Redis client; it implements cache.Cache.
type Cache struct {
	opts   Options
	client *goredis.Client
	closed atomic.Bool

	// subs guards the open subscriptions; nil once closed.
	subs struct {
		sync.Mutex
		set map[*subscription]struct{}
	}
}

// Open connects to the server and checks it answers PING within ctx.
// Options are checked first (cache.ErrInvalidArgument); an unreachable
// server gives cache.ErrUnavailable.
func Open(ctx context.Context, opts Options) (*Cache, error) {
	settings, err := opts.check()
	if err != nil {
		return nil, err
	}
	client := redisconn.NewClient(settings) // never retries: see the package documentation
	c := &Cache{opts: opts, client: client}
	c.subs.set = make(map[*subscription]struct{})
	if err := cache.CheckContext(ctx); err != nil {
		_ = client.Close()
		return nil, err
	}
	if err := client.Ping(ctx).Err(); err != nil {
		err = c.fail(ctx, "open", err)
		_ = client.Close()
		return nil, err
	}
	return c, nil
}

// Addr returns the server address.
func (c *Cache) Addr() string { return c.opts.Addr }

func (c *Cache) key(kind, name string) string { return c.opts.KeyPrefix + kind + ":" + name }

func (c *Cache) setKey(kind, set, id string) string {
	return c.opts.KeyPrefix + kind + ":" + set + ":" + id
}

func (c *Cache) channel(name string) string { return c.opts.KeyPrefix + "ch:" + name }

// begin checks that the cache is open and ctx is not done; call it after
// the arguments are checked.
func (c *Cache) begin(ctx context.Context) error {
	if c.closed.Load() {
		return fmt.Errorf("redis %s: %w", c.opts.Addr, cache.ErrClosed)
	}
	return cache.CheckContext(ctx)
}

// fail maps a go-redis error of operation op to the cache's errors.
func (c *Cache) fail(ctx context.Context, op string, err error) error {
	addr := c.opts.Addr
	if c.closed.Load() && errors.Is(err, goredis.ErrClosed) {
		return fmt.Errorf("redis %s: %s: %w", addr, op, cache.ErrClosed)
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		if errors.Is(ctxErr, context.DeadlineExceeded) {
			return fmt.Errorf("redis %s: %s: no reply before the deadline: %w: %w", addr, op, ctxErr, cache.ErrUnavailable)
		}
		return fmt.Errorf("redis %s: %s: %w", addr, op, ctxErr)
	}
	if reply, ok := redisconn.ServerReply(err); ok {
		return fmt.Errorf("redis %s: %s: server replied %q: %w", addr, op, reply, cache.ErrUnavailable)
	}
	return fmt.Errorf("redis %s: %s: %s: %w", addr, op, redisconn.Describe(err), cache.ErrUnavailable)
}

func ms(d time.Duration) time.Duration {
	return time.Duration(cache.Millis(d)) * time.Millisecond
}

// Scripts. Keys are passed in KEYS so the scripts work on any prefix.
var (
	// getSession returns {value, pttl} or nil (sessions and PeekToken).
	getSession = goredis.NewScript(`
local v = redis.call('GET', KEYS[1])
if not v then return false end
return {v, redis.call('PTTL', KEYS[1])}
`)
	// consume returns the value and deletes the key, or nil.
	consume = goredis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v then redis.call('DEL', KEYS[1]) end
return v
`)
	// allow counts one call in a fixed window: ARGV[1] limit, ARGV[2]
	// window in ms. Returns {allowed (0/1), count, pttl}. A denied call
	// is not counted; a counter without a TTL (which the script never
	// leaves) starts a new window.
	allow = goredis.NewScript(`
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('SET', KEYS[1], 1, 'PX', ARGV[2])
  return {1, 1, tonumber(ARGV[2])}
end
local n = tonumber(redis.call('GET', KEYS[1]))
if n == nil then return redis.error_reply('rate-limit counter is not a number') end
if n >= tonumber(ARGV[1]) then return {0, n, ttl} end
n = redis.call('INCR', KEYS[1])
return {1, n, ttl}
`)
)

// PutSession implements cache.Cache.
func (c *Cache) PutSession(ctx context.Context, id string, value []byte, ttl time.Duration) error {
	if err := checkPut("session id", id, value, ttl); err != nil {
		return err
	}
	if err := c.begin(ctx); err != nil {
		return err
	}
	if value == nil {
		value = []byte{}
	}
	if err := c.client.Set(ctx, c.key("sess", id), value, ms(ttl)).Err(); err != nil {
		return c.fail(ctx, "put session", err)
	}
	return nil
}

func checkPut(what, id string, value []byte, ttl time.Duration) error {
	if err := cache.ValidateName(what, id); err != nil {
		return err
	}
	if err := cache.CheckValue(value); err != nil {
		return err
	}
	return cache.CheckTTL("ttl", ttl)
}

// GetSession implements cache.Cache.
func (c *Cache) GetSession(ctx context.Context, id string) ([]byte, time.Duration, error) {
	if err := cache.ValidateName("session id", id); err != nil {
		return nil, 0, err
	}
	if err := c.begin(ctx); err != nil {
		return nil, 0, err
	}
	res, err := getSession.Run(ctx, c.client, []string{c.key("sess", id)}).Slice()
	if errors.Is(err, goredis.Nil) {
		return nil, 0, fmt.Errorf("session %q: %w", id, cache.ErrNotFound)
	}
	if err != nil {
		return nil, 0, c.fail(ctx, "get session", err)
	}
	if len(res) != 2 {
		return nil, 0, fmt.Errorf("redis %s: get session: %d-element reply: %w", c.opts.Addr, len(res), cache.ErrUnavailable)
	}
	v, ok1 := res[0].(string)
	pttl, ok2 := res[1].(int64)
	if !ok1 || !ok2 {
		return nil, 0, fmt.Errorf("redis %s: get session: reply of types %T, %T: %w", c.opts.Addr, res[0], res[1], cache.ErrUnavailable)
	}
	if pttl <= 0 { // no TTL: never written by this package; treat as gone
		return nil, 0, fmt.Errorf("session %q has no TTL: %w", id, cache.ErrNotFound)
	}
	return []byte(v), time.Duration(pttl) * time.Millisecond, nil
}

// TouchSession implements cache.Cache.
func (c *Cache) TouchSession(ctx context.Context, id string, ttl time.Duration) error {
	if err := cache.ValidateName("session id", id); err != nil {
		return err
	}
	if err := cache.CheckTTL("ttl", ttl); err != nil {
		return err
	}
	if err := c.begin(ctx); err != nil {
		return err
	}
	ok, err := c.client.PExpire(ctx, c.key("sess", id), ms(ttl)).Result()
	if err != nil {
		return c.fail(ctx, "touch session", err)
	}
	if !ok {
		return fmt.Errorf("session %q: %w", id, cache.ErrNotFound)
	}
	return nil
}

// DeleteSession implements cache.Cache.
func (c *Cache) DeleteSession(ctx context.Context, id string) error {
	if err := cache.ValidateName("session id", id); err != nil {
		return err
	}
	if err := c.begin(ctx); err != nil {
		return err
	}
	if err := c.client.Del(ctx, c.key("sess", id)).Err(); err != nil {
		return c.fail(ctx, "delete session", err)
	}
	return nil
}

func checkSetID(set, id string) error {
	if err := cache.ValidateSet(set); err != nil {
		return err
	}
	return cache.ValidateName("id", id)
}

// MarkUsed implements cache.Cache. On any error first is false.
func (c *Cache) MarkUsed(ctx context.Context, set, id string, ttl time.Duration) (bool, error) {
	if err := checkSetID(set, id); err != nil {
		return false, err
	}
	if err := cache.CheckTTL("ttl", ttl); err != nil {
		return false, err
	}
	if err := c.begin(ctx); err != nil {
		return false, err
	}
	first, err := c.client.SetNX(ctx, c.setKey("used", set, id), "1", ms(ttl)).Result()
	if err != nil {
		return false, c.fail(ctx, "mark used", err)
	}
	return first, nil
}

// PutToken implements cache.Cache.
func (c *Cache) PutToken(ctx context.Context, set, id string, value []byte, ttl time.Duration) error {
	if err := cache.ValidateSet(set); err != nil {
		return err
	}
	if err := checkPut("token id", id, value, ttl); err != nil {
		return err
	}
	if err := c.begin(ctx); err != nil {
		return err
	}
	if value == nil {
		value = []byte{}
	}
	if err := c.client.Set(ctx, c.setKey("tok", set, id), value, ms(ttl)).Err(); err != nil {
		return c.fail(ctx, "put token", err)
	}
	return nil
}

// ConsumeToken implements cache.Cache.
func (c *Cache) ConsumeToken(ctx context.Context, set, id string) ([]byte, error) {
	if err := checkSetID(set, id); err != nil {
		return nil, err
	}
	if err := c.begin(ctx); err != nil {
		return nil, err
	}
	v, err := consume.Run(ctx, c.client, []string{c.setKey("tok", set, id)}).Text()
	if errors.Is(err, goredis.Nil) {
		return nil, fmt.Errorf("token %s/%q: %w", set, id, cache.ErrNotFound)
	}
	if err != nil {
		return nil, c.fail(ctx, "consume token", err)
	}
	return []byte(v), nil
}

// AddToken implements cache.Cache: one SET NX PX.
func (c *Cache) AddToken(ctx context.Context, set, id string, value []byte, ttl time.Duration) (bool, error) {
	if err := cache.ValidateSet(set); err != nil {
		return false, err
	}
	if err := checkPut("token id", id, value, ttl); err != nil {
		return false, err
	}
	if err := c.begin(ctx); err != nil {
		return false, err
	}
	if value == nil {
		value = []byte{}
	}
	added, err := c.client.SetNX(ctx, c.setKey("tok", set, id), value, ms(ttl)).Result()
	if err != nil {
		return false, c.fail(ctx, "add token", err)
	}
	return added, nil
}

// PeekToken implements cache.Cache: GET and PTTL in one script.
func (c *Cache) PeekToken(ctx context.Context, set, id string) ([]byte, time.Duration, error) {
	if err := checkSetID(set, id); err != nil {
		return nil, 0, err
	}
	if err := c.begin(ctx); err != nil {
		return nil, 0, err
	}
	res, err := getSession.Run(ctx, c.client, []string{c.setKey("tok", set, id)}).Slice()
	if errors.Is(err, goredis.Nil) {
		return nil, 0, fmt.Errorf("token %s/%q: %w", set, id, cache.ErrNotFound)
	}
	if err != nil {
		return nil, 0, c.fail(ctx, "peek token", err)
	}
	if len(res) != 2 {
		return nil, 0, fmt.Errorf("redis %s: peek token: %d-element reply: %w", c.opts.Addr, len(res), cache.ErrUnavailable)
	}
	v, ok1 := res[0].(string)
	pttl, ok2 := res[1].(int64)
	if !ok1 || !ok2 {
		return nil, 0, fmt.Errorf("redis %s: peek token: reply of types %T, %T: %w", c.opts.Addr, res[0], res[1], cache.ErrUnavailable)
	}
	if pttl <= 0 {
		return nil, 0, fmt.Errorf("token %s/%q has no TTL: %w", set, id, cache.ErrNotFound)
	}
	return []byte(v), time.Duration(pttl) * time.Millisecond, nil
}

// DeleteToken implements cache.Cache.
func (c *Cache) DeleteToken(ctx context.Context, set, id string) error {
	if err := checkSetID(set, id); err != nil {
		return err
	}
	if err := c.begin(ctx); err != nil {
		return err
	}
	if err := c.client.Del(ctx, c.setKey("tok", set, id)).Err(); err != nil {
		return c.fail(ctx, "delete token", err)
	}
	return nil
}

// Allow implements cache.Cache.
func (c *Cache) Allow(ctx context.Context, key string, limit int, window time.Duration) (cache.Decision, error) {
	if err := cache.CheckAllow(key, limit, window); err != nil {
		return cache.Decision{}, err
	}
	if err := c.begin(ctx); err != nil {
		return cache.Decision{}, err
	}
	res, err := allow.Run(ctx, c.client, []string{c.key("rl", key)}, limit, cache.Millis(window)).Int64Slice()
	if err != nil {
		return cache.Decision{}, c.fail(ctx, "allow", err)
	}
	if len(res) != 3 {
		return cache.Decision{}, fmt.Errorf("redis %s: allow: %d-element reply: %w", c.opts.Addr, len(res), cache.ErrUnavailable)
	}
	allowed, n, pttl := res[0] == 1, int(res[1]), time.Duration(res[2])*time.Millisecond
	if !allowed {
		return cache.Decision{RetryAfter: max(pttl, time.Millisecond)}, nil
	}
	return cache.Decision{Allowed: true, Remaining: max(limit-n, 0)}, nil
}

// Publish implements cache.Cache.
func (c *Cache) Publish(ctx context.Context, channel string, msg []byte) error {
	if err := cache.ValidateName("channel", channel); err != nil {
		return err
	}
	if err := cache.CheckValue(msg); err != nil {
		return err
	}
	if err := c.begin(ctx); err != nil {
		return err
	}
	if msg == nil {
		msg = []byte{}
	}
	if err := c.client.Publish(ctx, c.channel(channel), msg).Err(); err != nil {
		return c.fail(ctx, "publish", err)
	}
	return nil
}

// Ping implements cache.Cache.
func (c *Cache) Ping(ctx context.Context) error {
	if err := c.begin(ctx); err != nil {
		return err
	}
	if err := c.client.Ping(ctx).Err(); err != nil {
		return c.fail(ctx, "ping", err)
	}
	return nil
}

// Close implements cache.Cache: it closes the subscriptions, then the
// connections.
func (c *Cache) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	c.subs.Lock()
	subs := c.subs.set
	c.subs.set = nil
	c.subs.Unlock()
	for s := range subs {
		s.close()
	}
	if err := c.client.Close(); err != nil && !errors.Is(err, goredis.ErrClosed) {
		return fmt.Errorf("redis %s: close: %w", c.opts.Addr, err)
	}
	return nil
}

var _ cache.Cache = (*Cache)(nil)
