package postgres

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/avonzt/avon/core/store"
)

const secret = "Zq7-s3cret-PW"

func TestDSNErrors(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name, dsn, want string
	}{
		{"empty", "", "empty"},
		{"blank", "   ", "empty"},
		{"bad port in URL", "postgres://avon:" + secret + "@db:notaport/avon", "port"},
		{"bad URL escape", "postgres://avon:" + secret + "@db/%zz", ""},
		{"bad port in pairs", "host=db port=abc password=" + secret, "port"},
		{"quoted password, bad port", "host=db port=x password='" + secret + "'", "port"},
		{"bad sslmode", "postgres://avon:" + secret + "@db/avon?sslmode=sometimes", "sslmode"},
		{"unterminated quote", "host='db password=" + secret, ""},
		{"bad pool_max_conns", "postgres://avon:" + secret + "@db/avon?pool_max_conns=lots", "pool_max_conns"},
		{"zero pool_max_conns", "postgres://avon:" + secret + "@db/avon?pool_max_conns=0", "pool_max_conns"},
		{"backquote", "postgres://avon:" + secret + "`@db:x/avon", ""},
		{"pool_max_conns too large", "host=db password=" + secret + " pool_max_conns=2000000", "pool_max_conns is not a number from 1 to"},
		{"unknown pool setting", "postgres://avon:" + secret + "@db/avon?pool_max_con=3", "unknown pool setting pool_max_con"},
		{"negative health check", "host=db password=" + secret + " pool_health_check_period=-1s", "pool_health_check_period is not a duration"},
		{"zero health check", "host=db password=" + secret + " pool_health_check_period=0", "pool_health_check_period"},
		{"zero idle time", "host=db password=" + secret + " pool_max_conn_idle_time=0s", "pool_max_conn_idle_time"},
		{"lifetime not a duration", "postgres://avon:" + secret + "@db/avon?pool_max_conn_lifetime=forever", "pool_max_conn_lifetime"},
		{"negative jitter", "postgres://avon:" + secret + "@db/avon?pool_max_conn_lifetime_jitter=-1m", "pool_max_conn_lifetime_jitter"},
		{"lifetime beyond a year", "postgres://avon:" + secret + "@db/avon?pool_max_conn_lifetime=9000h", "pool_max_conn_lifetime"},
		{"min above max", "host=db password=" + secret + " pool_max_conns=2 pool_min_conns=3", "must not exceed pool_max_conns (2)"},
		{"min idle above max", "host=db password=" + secret + " pool_max_conns=2 pool_min_idle_conns=5", "must not exceed"},
		{"pool value is the password", "host=db pool_max_conns=" + secret, "pool_max_conns"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, err := Open(ctx, c.dsn)
			if s != nil || !errors.Is(err, ErrInvalidDSN) {
				t.Fatalf("Open = %v, %v; want ErrInvalidDSN", s, err)
			}
			if strings.Contains(err.Error(), secret) {
				t.Fatalf("error echoes the password: %v", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not say what is wrong (%q)", err, c.want)
			}
			for _, f := range []func() error{
				func() error { _, err := Migrate(ctx, c.dsn, nil); return err },
				func() error { _, err := MigrationStatus(ctx, c.dsn); return err },
			} {
				if err := f(); !errors.Is(err, ErrInvalidDSN) || strings.Contains(err.Error(), secret) {
					t.Fatalf("migration entry point: %v", err)
				}
			}
		})
	}
}

// closedPort returns a loopback port nothing listens on.
func closedPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	return port
}

func TestOpenUnreachable(t *testing.T) {
	ctx := context.Background()
	port := strconv.Itoa(closedPort(t))
	for _, dsn := range []string{
		"postgres://avon:" + secret + "@127.0.0.1:" + port + "/avon?sslmode=disable",
		"host=127.0.0.1 port=" + port + " user=avon password=" + secret + " dbname=avon sslmode=disable",
	} {
		_, err := Open(ctx, dsn)
		if !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("want ErrUnavailable, got %v", err)
		}
		msg := err.Error()
		if !strings.Contains(msg, "127.0.0.1:"+port+": connection refused") || strings.Contains(msg, secret) {
			t.Fatalf("unclear or leaking message: %s", msg)
		}
		for _, f := range []func() error{
			func() error { _, err := Migrate(ctx, dsn, nil); return err },
			func() error { _, err := MigrationStatus(ctx, dsn); return err },
		} {
			if err := f(); !errors.Is(err, store.ErrUnavailable) || strings.Contains(err.Error(), secret) {
				t.Fatalf("migration entry point: %v", err)
			}
		}
	}
}

// TestConnectTimeout: a peer that accepts TCP but never speaks is given up
// on after the connect timeout, not the caller's (longer) deadline.
func TestConnectTimeout(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	go func() {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				_ = c.Close()
			}
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dsn := "postgres://avon@" + l.Addr().String() + "/avon?sslmode=disable"
	_, err = Open(ctx, dsn, WithConnectTimeout(200*time.Millisecond))
	if !errors.Is(err, store.ErrUnavailable) || ctx.Err() != nil {
		t.Fatalf("want ErrUnavailable from the connect timeout, got %v (ctx %v)", err, ctx.Err())
	}
	if !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("message does not say it timed out: %v", err)
	}
	// The caller's context still bounds Open when it is the shorter.
	short, cancel2 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel2()
	if _, err := Open(short, dsn); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("want DeadlineExceeded, got %v", err)
	}
}

func TestUnsupportedEncoding(t *testing.T) {
	s := server(t)
	name, err := s.NewDatabase("sqlascii")
	if err != nil {
		t.Fatal(err)
	}
	c := sqlConn(t, s.DSN("postgres"))
	execSQL(t, c, `DROP DATABASE `+name)
	execSQL(t, c, `CREATE DATABASE `+name+` ENCODING 'SQL_ASCII' TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'`)
	_, err = Open(context.Background(), s.DSN(name))
	if !errors.Is(err, ErrUnsupportedServer) || !strings.Contains(err.Error(), "SQL_ASCII") {
		t.Fatalf("want ErrUnsupportedServer naming the encoding, got %v", err)
	}
}

// FuzzParseDSN: no input panics; a refused DSN gives ErrInvalidDSN and
// never shows the password it carries, whatever surrounds it; an accepted
// one gives a pool configuration the pool can run.
func FuzzParseDSN(f *testing.F) {
	for _, s := range []string{
		"postgres://u:PW@h:5432/db", "postgres://u:PW@h:x/db", "host=h password=PW port=x",
		"host=h password='PW' sslmode=x", "postgresql://u:PW@/db?host=/tmp", "postgres://u:PW@[::1/db",
		"user=u password=PW dbname=d connect_timeout=x", "postgres://u:PW@h/d?pool_max_conns=x",
		"host=h pool_health_check_period=-1s", "host=h pool_min_conns=9 pool_max_conns=2",
		"postgres://h/d?pool_max_conn_lifetime=1m&pool_max_conn_lifetime_jitter=0s&pool_ping_timeout=1s",
		"host=h pool_max_conns= password=PW",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, dsn string) {
		cfg, err := parseDSN(dsn)
		if err != nil {
			if cfg != nil || !errors.Is(err, ErrInvalidDSN) {
				t.Fatalf("parseDSN(%q) = %v, %v", dsn, cfg, err)
			}
		} else if msg := runnable(cfg); msg != "" {
			t.Fatalf("parseDSN(%q): %s", dsn, msg)
		}
		// Put a recognisable password in the places a DSN carries one,
		// with the fuzzed text around it.
		for _, withPW := range []string{
			"postgres://u:" + secret + "@" + dsn,
			"postgresql://u:" + secret + "@h:5432/d?" + dsn,
			dsn + " password=" + secret,
			"password='" + secret + "' " + dsn,
		} {
			if !strings.Contains(withPW, secret) {
				continue
			}
			if _, err := parseDSN(withPW); err != nil && strings.Contains(err.Error(), secret) {
				t.Fatalf("parseDSN(%q) error shows the password: %v", withPW, err)
			}
		}
	})
}

// runnable returns what is wrong with cfg for the pool (a setting that
// would make it panic, spin or never connect), or "".
func runnable(cfg *pgxpool.Config) string {
	switch {
	case cfg.MaxConns < 1 || cfg.MaxConns > maxPoolConns:
		return fmt.Sprintf("pool bound %d", cfg.MaxConns)
	case cfg.MinConns < 0 || cfg.MinConns > cfg.MaxConns || cfg.MinIdleConns < 0 || cfg.MinIdleConns > cfg.MaxConns:
		return fmt.Sprintf("minimums %d, %d for a bound of %d", cfg.MinConns, cfg.MinIdleConns, cfg.MaxConns)
	case cfg.HealthCheckPeriod <= 0 || cfg.MaxConnIdleTime <= 0 || cfg.MaxConnLifetime <= 0:
		return fmt.Sprintf("health check every %v, idle limit %v, lifetime %v", cfg.HealthCheckPeriod, cfg.MaxConnIdleTime, cfg.MaxConnLifetime)
	case cfg.MaxConnLifetimeJitter < 0 || cfg.PingTimeout < 0:
		return fmt.Sprintf("jitter %v, ping timeout %v", cfg.MaxConnLifetimeJitter, cfg.PingTimeout)
	}
	for k := range cfg.ConnConfig.RuntimeParams {
		if strings.HasPrefix(k, "pool_") {
			return "pool setting " + k + " sent to the server"
		}
	}
	return ""
}
