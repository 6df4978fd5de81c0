package postgres

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Pool defaults, for the settings neither the DSN nor an Option gives.
const (
	// DefaultMaxConnLifetime: a connection is closed once this old (plus
	// a random part of up to a sixth of it, drawn per connection, so the
	// pool's connections do not all go at once): long-lived replicas then
	// follow a server moved behind a proxy or a DNS name, and the server
	// gets its per-session memory back.
	DefaultMaxConnLifetime = time.Hour
	// DefaultMaxConnIdleTime: a connection idle this long is closed by the
	// health check, so a pool shrinks back after a burst.
	DefaultMaxConnIdleTime = 5 * time.Minute
	// DefaultHealthCheckPeriod: how often idle connections are checked
	// for age and idleness.
	DefaultHealthCheckPeriod = 15 * time.Second
)

// pingIdleAfter: a connection idle this long is pinged before it is handed
// out, so a server restart costs no failed call on a connection that died
// while idle.
const pingIdleAfter = time.Second

// Bounds of the DSN's pool settings.
const (
	maxPoolConns   = 1 << 20
	maxPoolSetting = 365 * 24 * time.Hour
)

// poolSettings are the DSN parameters that configure the pool rather than
// the server session, with what each accepts. Any other pool_ parameter is
// refused: unrecognised parameters go to the server, which would refuse
// the connection at the first call instead of at Open.
var poolSettings = map[string]poolSetting{
	"pool_max_conns":                {count: true, least: 1},
	"pool_min_conns":                {count: true},
	"pool_min_idle_conns":           {count: true},
	"pool_max_conn_lifetime":        {least: int64(time.Millisecond)},
	"pool_max_conn_lifetime_jitter": {},
	"pool_max_conn_idle_time":       {least: int64(time.Millisecond)},
	"pool_health_check_period":      {least: int64(time.Millisecond)},
	"pool_ping_timeout":             {least: int64(time.Millisecond)},
}

// poolSetting: a connection count from least to maxPoolConns, or a
// duration from least (nanoseconds) to maxPoolSetting.
type poolSetting struct {
	count bool
	least int64
}

// check reports whether v is acceptable and, if not, what is.
func (ps poolSetting) check(v string) (ok bool, want string) {
	if ps.count {
		n, err := strconv.Atoi(v)
		return err == nil && int64(n) >= ps.least && n <= maxPoolConns,
			fmt.Sprintf("a number from %d to %d", ps.least, maxPoolConns)
	}
	d, err := time.ParseDuration(v)
	return err == nil && int64(d) >= ps.least && d <= maxPoolSetting,
		fmt.Sprintf("a duration from %v to %v (like 30s or 1h)", time.Duration(ps.least), maxPoolSetting)
}

// parseDSN parses dsn into the pool's configuration: pool_max_conns in the
// DSN, else the greater of 4 and the number of CPUs; this package's
// defaults for the other pool settings the DSN leaves out. Its errors wrap
// ErrInvalidDSN and never contain the password.
func parseDSN(dsn string) (*pgxpool.Config, error) {
	if strings.TrimSpace(dsn) == "" {
		return nil, fmt.Errorf("%w: empty", ErrInvalidDSN)
	}
	// The connection settings alone first: which pool settings the DSN
	// gives, checked with this package's bounds before the pool reads
	// them.
	cc, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrInvalidDSN, parseReason(dsn, err))
	}
	var keys []string
	for k := range cc.RuntimeParams {
		if strings.HasPrefix(k, "pool_") {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	given := map[string]bool{}
	for _, k := range keys {
		ps, known := poolSettings[k]
		if !known {
			return nil, fmt.Errorf("%w: %s", ErrInvalidDSN, withhold(dsn, "unknown pool setting "+k))
		}
		if ok, want := ps.check(cc.RuntimeParams[k]); !ok {
			return nil, fmt.Errorf("%w: %s", ErrInvalidDSN, withhold(dsn, k+" is not "+want))
		}
		given[k] = true
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrInvalidDSN, parseReason(dsn, err))
	}
	if !given["pool_max_conns"] {
		cfg.MaxConns = int32(max(4, runtime.NumCPU()))
	}
	if cfg.MinConns > cfg.MaxConns || cfg.MinIdleConns > cfg.MaxConns {
		return nil, fmt.Errorf("%w: pool_min_conns and pool_min_idle_conns must not exceed pool_max_conns (%d)", ErrInvalidDSN, cfg.MaxConns)
	}
	if !given["pool_max_conn_lifetime"] {
		cfg.MaxConnLifetime = DefaultMaxConnLifetime
	}
	if !given["pool_max_conn_lifetime_jitter"] {
		cfg.MaxConnLifetimeJitter = cfg.MaxConnLifetime / 6
	}
	if !given["pool_max_conn_idle_time"] {
		cfg.MaxConnIdleTime = DefaultMaxConnIdleTime
	}
	if !given["pool_health_check_period"] {
		cfg.HealthCheckPeriod = DefaultHealthCheckPeriod
	}
	if !given["pool_ping_timeout"] {
		cfg.PingTimeout = 0 // Open sets the connect timeout
	}
	return cfg, nil
}

// withhold returns msg, or a fixed text when msg would show a password
// candidate of dsn.
func withhold(dsn, msg string) string {
	for _, pw := range passwordCandidates(dsn) {
		if strings.Contains(msg, pw) {
			return "malformed connection string (details withheld: they would show the password)"
		}
	}
	return msg
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
	return withhold(dsn, msg)
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
