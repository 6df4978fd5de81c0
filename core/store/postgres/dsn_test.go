package postgres

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

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
// never shows the password it carries, whatever surrounds it.
func FuzzParseDSN(f *testing.F) {
	for _, s := range []string{
		"postgres://u:PW@h:5432/db", "postgres://u:PW@h:x/db", "host=h password=PW port=x",
		"host=h password='PW' sslmode=x", "postgresql://u:PW@/db?host=/tmp", "postgres://u:PW@[::1/db",
		"user=u password=PW dbname=d connect_timeout=x", "postgres://u:PW@h/d?pool_max_conns=x",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, dsn string) {
		cfg, n, err := parseDSN(dsn)
		if err != nil {
			if cfg != nil || !errors.Is(err, ErrInvalidDSN) {
				t.Fatalf("parseDSN(%q) = %v, %v", dsn, cfg, err)
			}
		} else if n < 1 {
			t.Fatalf("pool bound %d", n)
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
			if _, _, err := parseDSN(withPW); err != nil && strings.Contains(err.Error(), secret) {
				t.Fatalf("parseDSN(%q) error shows the password: %v", withPW, err)
			}
		}
	})
}
