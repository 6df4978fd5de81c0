package redisconn

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/avonzt/avon/internal/testsvc/redistest"
)

// quiet drops go-redis's own log lines (the refused dial); the errors
// reach the tests through the API.
type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}

func TestMain(m *testing.M) {
	goredis.SetLogger(quiet{})
	os.Exit(m.Run())
}

// replyError is an error reply as go-redis returns it: an error with the
// RedisError marker method.
type replyError string

func (e replyError) Error() string { return string(e) }
func (replyError) RedisError()     {}

var _ goredis.Error = replyError("")

func sysErr(op string, errno syscall.Errno) error {
	return &net.OpError{Op: op, Net: "tcp", Err: os.NewSyscallError(op, errno)}
}

func TestClassify(t *testing.T) {
	const (
		timeout = "i/o timeout"
		refused = "connection refused"
		reset   = "connection reset"
		closed  = "connection closed by the server"
		pool    = "no free connection in the pool"
	)
	for _, c := range []struct {
		name     string
		err      error
		reply    string // "" when not a server reply
		describe string
		notSent  bool
		dropped  bool
	}{
		{"LOADING reply", replyError("LOADING Redis is loading the dataset in memory"), "LOADING Redis is loading the dataset in memory", "LOADING Redis is loading the dataset in memory", false, false},
		{"MASTERDOWN reply", replyError("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'."), "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.", "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.", false, false},
		{"wrapped WRONGTYPE reply", fmt.Errorf("put: %w", replyError("WRONGTYPE Operation against a key holding the wrong kind of value")), "WRONGTYPE Operation against a key holding the wrong kind of value", "put: WRONGTYPE Operation against a key holding the wrong kind of value", false, false},
		{"go-redis NOSCRIPT", goredis.ErrNoScript, goredis.ErrNoScript.Error(), goredis.ErrNoScript.Error(), false, false},
		{"refused dial", sysErr("dial", syscall.ECONNREFUSED), "", refused, true, false},
		{"dial timeout", &net.OpError{Op: "dial", Net: "tcp", Err: os.ErrDeadlineExceeded}, "", timeout, true, false},
		{"read timeout", &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}, "", timeout, false, false},
		{"context deadline", context.DeadlineExceeded, "", timeout, false, false},
		{"reset", sysErr("read", syscall.ECONNRESET), "", reset, false, true},
		{"broken pipe", sysErr("write", syscall.EPIPE), "", reset, false, true},
		{"EOF", io.EOF, "", closed, false, true},
		{"wrapped unexpected EOF", fmt.Errorf("reading reply: %w", io.ErrUnexpectedEOF), "", closed, false, true},
		{"closed socket", &net.OpError{Op: "read", Net: "tcp", Err: net.ErrClosed}, "", "read tcp: use of closed network connection", false, true},
		{"pool timeout", goredis.ErrPoolTimeout, "", pool, true, false},
		{"pool exhausted", goredis.ErrPoolExhausted, "", goredis.ErrPoolExhausted.Error(), true, false},
		// The caller's own Close: the callers report it as closed before
		// asking anything else.
		{"client closed", goredis.ErrClosed, "", goredis.ErrClosed.Error(), false, false},
		{"other", errors.New("something else"), "", "something else", false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			reply, isReply := ServerReply(c.err)
			if reply != c.reply || isReply != (c.reply != "") {
				t.Errorf("ServerReply = %q, %t; want %q", reply, isReply, c.reply)
			}
			if got := Describe(c.err); got != c.describe {
				t.Errorf("Describe = %q; want %q", got, c.describe)
			}
			if got := NotSent(c.err); got != c.notSent {
				t.Errorf("NotSent = %t; want %t", got, c.notSent)
			}
			if got := ConnectionDropped(c.err); got != c.dropped {
				t.Errorf("ConnectionDropped = %t; want %t", got, c.dropped)
			}
		})
	}
}

// loopbackSettings are normalized settings for addr with short timeouts.
func loopbackSettings(t *testing.T, addr string) Settings {
	t.Helper()
	s := Settings{Addr: addr, ReadTimeout: 300 * time.Millisecond, WriteTimeout: 300 * time.Millisecond}
	if err := s.Normalize(testDefaults); err != nil {
		t.Fatal(err)
	}
	return s
}

func ping(t *testing.T, s Settings) error {
	t.Helper()
	c := NewClient(s)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return c.Ping(ctx).Err()
}

// TestRefusedDial dials a loopback port that was just closed.
func TestRefusedDial(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	err = ping(t, loopbackSettings(t, addr))
	if err == nil {
		t.Fatalf("PING to the closed port %s succeeded", addr)
	}
	if d := Describe(err); d != "connection refused" {
		t.Errorf("Describe(%v) = %q; want connection refused", err, d)
	}
	if !NotSent(err) || ConnectionDropped(err) {
		t.Errorf("refused dial %v: NotSent %t, ConnectionDropped %t; want true, false", err, NotSent(err), ConnectionDropped(err))
	}
	if _, ok := ServerReply(err); ok {
		t.Errorf("refused dial %v taken for a server reply", err)
	}
}

// fakeServer listens on loopback; each connection is handed to serve,
// which may keep it open. Connections and listener close at cleanup.
func fakeServer(t *testing.T, serve func(net.Conn)) (addr string, accepted *atomic.Int64) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted = new(atomic.Int64)
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return // the listener is closed
			}
			accepted.Add(1)
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			serve(c)
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return l.Addr().String(), accepted
}

// readCommand reads one whole command (the client's first, a HELLO), so
// that closing afterwards leaves nothing unread. It gives up on anything
// but a RESP array of bulk strings, past 1 KiB, or after 5 seconds.
func readCommand(c net.Conn) {
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var got []byte
	buf := make([]byte, 64)
	for len(got) < 1024 && !wholeCommand(got) {
		n, err := c.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			return
		}
	}
}

// wholeCommand reports whether b holds a complete "*N" array of N "$len"
// bulk strings.
func wholeCommand(b []byte) bool {
	lines := bytes.Split(b, []byte("\r\n"))
	if len(lines) < 2 || len(lines[0]) < 2 || lines[0][0] != '*' {
		return false
	}
	n, err := strconv.Atoi(string(lines[0][1:]))
	if err != nil {
		return false
	}
	// The header, two lines per argument, and the empty rest after the
	// last CRLF.
	return len(lines) >= 1+2*n+1
}

// TestDroppedConnection: a server that reads the command and closes the
// connection without a reply. The client tries once only (no retry of
// the command, no second dial).
func TestDroppedConnection(t *testing.T) {
	addr, accepted := fakeServer(t, func(c net.Conn) {
		readCommand(c)
		_ = c.Close()
	})
	err := ping(t, loopbackSettings(t, addr))
	if err == nil {
		t.Fatalf("PING answered by a closed connection succeeded")
	}
	if d := Describe(err); d != "connection closed by the server" {
		t.Errorf("Describe(%v) = %q; want connection closed by the server", err, d)
	}
	if !ConnectionDropped(err) || NotSent(err) {
		t.Errorf("dropped connection %v: ConnectionDropped %t, NotSent %t; want true, false", err, ConnectionDropped(err), NotSent(err))
	}
	if n := accepted.Load(); n != 1 {
		t.Errorf("the client made %d connections for one PING; want 1 (no retries)", n)
	}
}

// TestSilentServer: a server that reads the command and never answers;
// ReadTimeout ends the call.
func TestSilentServer(t *testing.T) {
	addr, accepted := fakeServer(t, readCommand)
	err := ping(t, loopbackSettings(t, addr))
	if err == nil {
		t.Fatalf("PING to a silent server succeeded")
	}
	if d := Describe(err); d != "i/o timeout" {
		t.Errorf("Describe(%v) = %q; want i/o timeout", err, d)
	}
	if NotSent(err) || ConnectionDropped(err) {
		t.Errorf("timeout %v: NotSent %t, ConnectionDropped %t; want false, false", err, NotSent(err), ConnectionDropped(err))
	}
	if n := accepted.Load(); n != 1 {
		t.Errorf("the client made %d connections for one PING; want 1 (no retries)", n)
	}
}

// TestRealServer runs the client against a real redis-server: the
// settings reach the connection, and the server's error replies are
// classified as replies.
func TestRealServer(t *testing.T) {
	srv := redistest.Start(t)
	s := Settings{Addr: srv.Addr(), DB: 3}
	if err := s.Normalize(testDefaults); err != nil {
		t.Fatal(err)
	}
	c := NewClient(s)
	t.Cleanup(func() { _ = c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	info, err := c.Do(ctx, "CLIENT", "INFO").Text()
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(info)
	if !slices.Contains(fields, "db=3") || !slices.Contains(fields, "resp=2") {
		t.Errorf("CLIENT INFO = %q; want db=3 and resp=2", info)
	}
	if strings.Contains(info, "lib-name=go-redis") {
		t.Errorf("CLIENT INFO = %q; the client announced itself (want no CLIENT SETINFO)", info)
	}

	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"WRONGTYPE": c.LPush(ctx, "k", "x").Err(),
		"NOSCRIPT":  c.EvalSha(ctx, strings.Repeat("0", 40), nil).Err(),
	} {
		reply, ok := ServerReply(err)
		if !ok || !strings.HasPrefix(reply, name+" ") {
			t.Errorf("ServerReply(%v) = %q, %t; want a %s reply", err, reply, ok, name)
		}
		if NotSent(err) || ConnectionDropped(err) {
			t.Errorf("reply %v: NotSent %t, ConnectionDropped %t; want false, false", err, NotSent(err), ConnectionDropped(err))
		}
	}

	// A wrong password is refused by a reply that does not repeat it.
	bad := s
	bad.Username, bad.Password = "nobody", password
	err = ping(t, bad)
	reply, ok := ServerReply(err)
	if !ok || strings.Contains(reply, password) || strings.Contains(Describe(err), password) {
		t.Errorf("wrong password: %v (reply %q, %t); want a reply without the password", err, reply, ok)
	}
}
