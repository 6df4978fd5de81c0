package redisconn

import (
	"errors"
	"io"
	"net"
	"syscall"

	goredis "github.com/redis/go-redis/v9"
)

// A go-redis call fails in one of two ways: the server answered with an
// error reply (ServerReply: it received the command and refused it, or
// said it cannot serve now, as LOADING or MASTERDOWN do), or no answer
// came (Describe names the transport failure: refused dial, timeout,
// reset or closed connection, no free connection in the pool). The
// callers report both as their backend being unavailable; NotSent and
// ConnectionDropped say what is known about a command that got no answer.

// ServerReply returns the text of the server's error reply, if err is one
// ("WRONGTYPE ...", "LOADING ...", a script's error).
func ServerReply(err error) (string, bool) {
	var rerr goredis.Error
	if errors.As(err, &rerr) {
		return rerr.Error(), true
	}
	return "", false
}

// Describe names a transport failure briefly ("i/o timeout", "connection
// refused", "connection reset", "connection closed by the server", "no
// free connection in the pool"), or returns err's own text.
func Describe(err error) string {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return "i/o timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE):
		return "connection reset"
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed by the server"
	case errors.Is(err, goredis.ErrPoolTimeout):
		return "no free connection in the pool"
	}
	return err.Error()
}

// NotSent reports whether err means the command certainly never reached
// the server: no connection could be made (a failed dial) or taken from
// the pool. A server reply is not included: the server did receive the
// command.
func NotSent(err error) bool {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" {
		return true
	}
	return errors.Is(err, goredis.ErrPoolTimeout) || errors.Is(err, goredis.ErrPoolExhausted)
}

// ConnectionDropped reports whether err means the connection was found
// broken without an answer (closed or reset, as after a server restart),
// so that an idempotent command may be tried once on a new connection.
// Timeouts are not included: on a hung server another try would only
// double the wait.
func ConnectionDropped(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, net.ErrClosed)
}
