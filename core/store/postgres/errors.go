package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/avonzt/avon/core/store"
)

// Errors of this package, wrapped with context; match with errors.Is. Call
// errors (Get, Put, ...) use the store package's sentinels instead.
var (
	// ErrInvalidDSN: the DSN could not be parsed or names no database.
	ErrInvalidDSN = errors.New("postgres: invalid DSN")
	// ErrSchemaNewer: the database was migrated by a newer binary.
	ErrSchemaNewer = errors.New("postgres: database schema is newer than this binary")
	// ErrSchemaDrift: an applied migration differs from this binary's
	// copy (checksum or name), or the history has a gap.
	ErrSchemaDrift = errors.New("postgres: applied migration differs from this binary")
	// ErrSchemaBehind: Open WithoutMigrate found migrations not applied.
	ErrSchemaBehind = errors.New("postgres: database schema is not migrated")
	// ErrUnsupportedServer: the server's version or encoding cannot hold
	// the store (PostgreSQL 14 or later with UTF8 encoding is required).
	ErrUnsupportedServer = errors.New("postgres: unsupported server")
)

// describe turns a driver error into a short message for operators: what
// happened at which address, without the DSN (so never a password).
func describe(addr string, err error) string {
	var pe *pgconn.PgError
	var ce *pgconn.ConnectError
	var ne net.Error
	var reason string
	switch {
	case errors.As(err, &pe):
		reason = fmt.Sprintf("server error %s: %s", pe.Code, pe.Message)
	case errors.Is(err, syscall.ECONNREFUSED):
		reason = "connection refused"
	case errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE):
		reason = "connection reset"
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		reason = "connection closed by the server"
	case pgconn.Timeout(err) || (errors.As(err, &ne) && ne.Timeout()):
		reason = "timed out"
	case errors.As(err, &ce):
		// The connect error names user and database, then the cause.
		reason = "cannot connect: " + lastPart(ce.Unwrap().Error())
	default:
		reason = lastPart(err.Error())
	}
	if addr == "" {
		return reason
	}
	return addr + ": " + reason
}

// lastPart keeps the most specific part of a "a: b: c" chain of messages.
func lastPart(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndex(s, ": "); i >= 0 && i+2 < len(s) {
		s = s[i+2:]
	}
	return s
}

// connectionLost reports whether err means the connection (not the
// statement) failed, so that an idempotent read may try another one.
func connectionLost(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		// 08: connection exception; 57P01-03: the server is shutting
		// down or starting.
		return strings.HasPrefix(pe.Code, "08") || pe.Code == "57P01" || pe.Code == "57P02" || pe.Code == "57P03"
	}
	return !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
}

// wrap maps a driver error of operation op onto the store's sentinels:
// ctx.Err() when the caller's context ended the call, ErrClosed after
// Close, ErrUnavailable otherwise. For writes, write tells whether the
// statement may have reached the server, so the message can say whether
// the outcome is known.
func (s *Store) wrap(ctx context.Context, op string, err error, write bool) error {
	if err == nil {
		return nil
	}
	note := ""
	if write {
		if pgconn.SafeToRetry(err) {
			note = " (nothing was written)"
		} else {
			note = " (outcome unknown: re-read the key)"
		}
	}
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("postgres %s: %s: call ended by its context%s: %w", op, s.addr, note, ctx.Err())
	case s.closed.Load():
		return fmt.Errorf("postgres %s: %w", op, store.ErrClosed)
	}
	return fmt.Errorf("postgres %s: %s%s: %w", op, describe(s.addr, err), note, store.ErrUnavailable)
}
