// Package redisconn is what the Redis cache (core/cache/redis) and the
// Redis store (core/store/redisstore) share about their connection: the
// connection settings and their checks, the one way both build a go-redis
// client (github.com/redis/go-redis/v9), and the reading of the errors
// that client returns (errors.go).
//
// It knows nothing of keys, values, scripts or either package's errors:
// Settings.Normalize returns an error that the caller wraps with its own
// sentinel, and the error helpers answer questions (was it a server reply,
// was the command sent) that the caller turns into its own messages. It
// must not log, must not retry a command, and must not put the password in
// an error or in the text of Settings.
package redisconn

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// MaxKeyPrefix is the longest Settings.KeyPrefix, in bytes.
const MaxKeyPrefix = 64

// ErrInvalid is wrapped by every error of Settings.Normalize and
// Defaults.Check. Its text is not part of those errors' messages, which
// callers wrap with their own sentinel.
var ErrInvalid = errors.New("redisconn: invalid settings")

// invalidError is an error of Normalize: its message names the field and
// the problem only, and it matches ErrInvalid.
type invalidError string

func (e invalidError) Error() string        { return string(e) }
func (e invalidError) Is(target error) bool { return target == ErrInvalid }

func invalidf(format string, args ...any) error {
	return invalidError(fmt.Sprintf(format, args...))
}

// Settings are the connection settings of one client, as the callers'
// Options give them; the zero KeyPrefix and timeouts mean the caller's
// Defaults (see Normalize).
type Settings struct {
	Addr               string      // host:port; required
	Username, Password string      // AUTH, empty for none; the password is in no error and not in String
	DB                 int         // database number, 0 or more
	TLS                *tls.Config // TLS configuration; nil for none
	KeyPrefix          string      // starts every key: at most MaxKeyPrefix bytes of UTF-8 without control characters

	// DialTimeout, ReadTimeout and WriteTimeout bound each connection
	// attempt, reply and request, so that a hung server fails calls within
	// them even when the caller's ctx has no deadline.
	DialTimeout, ReadTimeout, WriteTimeout time.Duration

	PoolSize int // most connections kept; 0 for go-redis's default (10 per GOMAXPROCS)
}

// Defaults are what Normalize puts in the place of zero fields; each
// caller has its own.
type Defaults struct {
	KeyPrefix    string
	DialTimeout  time.Duration
	ReadTimeout  time.Duration
	WriteTimeout time.Duration
}

// Check reports whether d can serve as defaults: a key prefix that
// Normalize would accept and positive timeouts. A failure is the caller's
// programming error, reported by Normalize like a bad setting.
func (d Defaults) Check() error {
	if err := checkKeyPrefix(d.KeyPrefix); err != nil {
		return invalidf("default %v", err)
	}
	for _, t := range []struct {
		name string
		v    time.Duration
	}{
		{"dial timeout", d.DialTimeout},
		{"read timeout", d.ReadTimeout},
		{"write timeout", d.WriteTimeout},
	} {
		if t.v <= 0 {
			return invalidf("default %s %v is not positive", t.name, t.v)
		}
	}
	return nil
}

// Normalize checks s and fills its zero KeyPrefix and timeouts from
// defaults. On an error, which wraps ErrInvalid and names the setting
// ("empty address", "db -1 is negative"), s is left unchanged; the
// message never holds the password.
func (s *Settings) Normalize(defaults Defaults) error {
	if err := defaults.Check(); err != nil {
		return err
	}
	n := *s
	if n.Addr == "" {
		return invalidf("empty address")
	}
	if _, _, err := net.SplitHostPort(n.Addr); err != nil {
		return invalidf("address %q: %v", n.Addr, err)
	}
	if n.KeyPrefix == "" {
		n.KeyPrefix = defaults.KeyPrefix
	}
	if err := checkKeyPrefix(n.KeyPrefix); err != nil {
		return err
	}
	if n.DB < 0 {
		return invalidf("db %d is negative", n.DB)
	}
	for _, t := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"dial timeout", &n.DialTimeout, defaults.DialTimeout},
		{"read timeout", &n.ReadTimeout, defaults.ReadTimeout},
		{"write timeout", &n.WriteTimeout, defaults.WriteTimeout},
	} {
		switch {
		case *t.v < 0:
			return invalidf("%s %v is negative", t.name, *t.v)
		case *t.v == 0:
			*t.v = t.def
		}
	}
	if n.PoolSize < 0 {
		return invalidf("pool size %d is negative", n.PoolSize)
	}
	*s = n
	return nil
}

func checkKeyPrefix(p string) error {
	if len(p) > MaxKeyPrefix || !utf8.ValidString(p) || strings.IndexFunc(p, unicode.IsControl) >= 0 {
		return invalidf("key prefix %q: want at most %d bytes of UTF-8 without control characters", p, MaxKeyPrefix)
	}
	return nil
}

// Options returns the go-redis options of a client for s, which should
// have passed Normalize. Commands are never retried by the client (a
// retried write whose first reply was lost could run twice: a SET NX
// would then report a replay, a compare-and-set a conflict with itself),
// so each caller decides what a failure means. A new connection is
// dialled once, without retries (a refused dial fails the call at once);
// it speaks RESP2, sends no CLIENT SETINFO, takes its socket deadlines
// from the caller's ctx as well as from the timeouts, and takes no part in
// maintenance notifications.
func (s Settings) Options() *goredis.Options {
	return &goredis.Options{
		Addr:                  s.Addr,
		Username:              s.Username,
		Password:              s.Password,
		DB:                    s.DB,
		TLSConfig:             s.TLS,
		Protocol:              2,
		DialTimeout:           s.DialTimeout,
		ReadTimeout:           s.ReadTimeout,
		WriteTimeout:          s.WriteTimeout,
		ContextTimeoutEnabled: true,
		PoolSize:              s.PoolSize,
		MaxRetries:            -1,
		DialerRetries:         1,
		DisableIdentity:       true,
		MaintNotificationsConfig: &maintnotifications.Config{
			Mode: maintnotifications.ModeDisabled,
		},
	}
}

// NewClient returns a client for s (see Options). It does not connect:
// the first command does.
func NewClient(s Settings) *goredis.Client {
	return goredis.NewClient(s.Options())
}

// String describes s without the password: only whether one is set.
func (s Settings) String() string {
	pw := "none"
	if s.Password != "" {
		pw = "set"
	}
	return fmt.Sprintf("redis %s db %d user %q password %s tls %t key prefix %q timeouts dial %v read %v write %v pool %d",
		s.Addr, s.DB, s.Username, pw, s.TLS != nil, s.KeyPrefix, s.DialTimeout, s.ReadTimeout, s.WriteTimeout, s.PoolSize)
}

// GoString is String, so that %#v does not print the password either.
func (s Settings) GoString() string { return s.String() }
