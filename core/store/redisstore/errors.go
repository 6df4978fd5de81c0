package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/avonzt/avon/core/store"
	"github.com/avonzt/avon/internal/redisconn"
)

// Errors of this package, wrapped with context; match with errors.Is. Call
// errors also wrap the store package's sentinels.
var (
	// ErrNotDurable: Open with Options.RequireDurable found a server that
	// can lose acknowledged writes, or could not check (CONFIG GET
	// refused).
	ErrNotDurable = errors.New("redisstore: server does not keep acknowledged writes")
	// ErrCorrupt: data under the store's prefix does not have the
	// store's layout. Errors wrapping it also wrap store.ErrUnavailable.
	ErrCorrupt = errors.New("redisstore: corrupt data")
)

// corruptKey is the error-reply prefix the scripts use for a key of the
// wrong type.
const corruptKey = "AVONCORRUPT"

// corruptf returns an error wrapping ErrCorrupt.
func corruptf(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), ErrCorrupt)
}

// ctxDone returns ctx.Err(), or context.DeadlineExceeded once the deadline
// has passed: a socket deadline taken from ctx can expire a moment before
// ctx itself reports it.
func ctxDone(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
		return context.DeadlineExceeded
	}
	return nil
}

// fail maps an error of operation op onto the store's sentinels: ErrClosed
// after Close, an error wrapping ctx.Err() when the caller's context ended
// the call, ErrCorrupt (with ErrUnavailable) for data of the wrong type,
// ErrUnavailable otherwise. write says whether op writes, so the message
// can say whether the outcome is known.
func (s *Store) fail(ctx context.Context, op string, err error, write bool) error {
	addr := s.opts.Addr
	reply, isReply := redisconn.ServerReply(err)
	note := ""
	if write {
		switch {
		case isReply || redisconn.NotSent(err):
			note = " (nothing was written)"
		default:
			note = " (outcome unknown: re-read the key)"
		}
	}
	if s.closed.Load() {
		return fmt.Errorf("redis store %s: closed during the call%s: %w", op, note, store.ErrClosed)
	}
	if ctxErr := ctxDone(ctx); ctxErr != nil && !isReply {
		return fmt.Errorf("redis store %s: %s: call ended by its context%s: %w", op, addr, note, ctxErr)
	}
	switch {
	case errors.Is(err, ErrCorrupt):
		return fmt.Errorf("redis store %s: %s: %w: %w", op, addr, err, store.ErrUnavailable)
	case isReply && (strings.HasPrefix(reply, corruptKey) || strings.HasPrefix(reply, "WRONGTYPE")):
		return fmt.Errorf("redis store %s: %s: server replied %q%s: %w: %w", op, addr, reply, note, ErrCorrupt, store.ErrUnavailable)
	case isReply:
		return fmt.Errorf("redis store %s: %s: server replied %q%s: %w", op, addr, reply, note, store.ErrUnavailable)
	}
	return fmt.Errorf("redis store %s: %s: %s%s: %w", op, addr, redisconn.Describe(err), note, store.ErrUnavailable)
}
