package netcfg

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// ReadTimeout bounds every wait for a reply datagram from the kernel.
	ReadTimeout = 5 * time.Second

	// bufSize is the receive buffer: the kernel fills dump datagrams up to
	// 32 KiB, single replies are smaller than a page for the links we ask
	// about. A larger datagram is reported, not cut.
	bufSize = 64 << 10

	// maxDatagrams bounds the datagrams read for one request (a dump of a
	// full Internet routing table fits many times over).
	maxDatagrams = 1 << 20

	// maxWakeups bounds the poll rounds that bring nothing for us (signals,
	// datagrams from senders other than the kernel) within one read.
	maxWakeups = 1024

	// dumpAttempts is how often a dump the kernel marks as interrupted
	// (NLM_F_DUMP_INTR: the table changed while it was read) is retried.
	dumpAttempts = 3
)

// Conn is a NETLINK_ROUTE socket. It configures the network namespace of
// the thread that called Open, for its whole life. Its methods are safe for
// concurrent use; requests are sent one at a time.
type Conn struct {
	mu      sync.Mutex // guards everything below; held for a whole request
	fd      int        // -1 once closed
	pid     uint32     // our port id, assigned by the kernel
	seq     uint32     // sequence number of the last request sent
	buf     []byte     // receive buffer
	timeout time.Duration
	dirty   bool // a reply was left unfinished: drain before the next request
}

// Open opens a NETLINK_ROUTE socket in the network namespace of the calling
// thread. Changes need CAP_NET_ADMIN in that namespace; without it they fail
// with ErrPermission.
func Open() (*Conn, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open: socket: %w: %w", ErrSocket, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("open: bind: %w: %w", ErrSocket, err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("open: getsockname: %w: %w", ErrSocket, err)
	}
	nl, ok := sa.(*unix.SockaddrNetlink)
	if !ok {
		unix.Close(fd)
		return nil, fmt.Errorf("open: getsockname: address of type %T: %w", sa, ErrSocket)
	}
	// Extended acks carry the kernel's reason for a refusal; capped acks do
	// not echo our request back. Kernels without them ignore nothing we
	// rely on, so failures here are not errors.
	_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_EXT_ACK, 1)
	_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1)
	return &Conn{fd: fd, pid: nl.Pid, buf: make([]byte, bufSize), timeout: ReadTimeout}, nil
}

// Close closes the socket. It waits for a request in progress to end (at
// most ReadTimeout per datagram). Closing twice returns nil.
func (c *Conn) Close() error {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fd < 0 {
		return nil
	}
	err := unix.Close(c.fd)
	c.fd = -1
	if err != nil {
		return fmt.Errorf("close: %w: %w", ErrSocket, err)
	}
	return nil
}

// errDumpInterrupted is returned by exchange when the kernel flagged the
// dump as inconsistent; dump retries.
var errDumpInterrupted = errors.New("dump interrupted")

// exchange sends one request and reads its reply. Data messages go to each
// (which must copy what it keeps: the payload aliases the receive buffer).
// A request with NLM_F_DUMP ends with NLMSG_DONE, any other with the
// acknowledgement it asks for. Messages of other sequence numbers (late
// replies to requests that timed out) are skipped. After each returns an
// error the rest of the reply is still read, so the socket stays in step.
func (c *Conn) exchange(typ, flags uint16, fixed []byte, attrs func(*request), each func(message) error) error {
	if c == nil {
		return ErrClosed
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fd < 0 {
		return ErrClosed
	}
	if c.dirty {
		c.drain()
	}
	dump := flags&unix.NLM_F_DUMP == unix.NLM_F_DUMP
	if !dump {
		flags |= unix.NLM_F_ACK
	}
	req := newRequest(typ, flags, fixed)
	if attrs != nil {
		attrs(req)
	}
	c.seq++
	if c.seq == 0 { // 0 is what unsolicited messages carry
		c.seq = 1
	}
	seq := c.seq
	if err := unix.Sendto(c.fd, req.bytes(seq, c.pid), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("send: %w: %w", ErrSocket, err)
	}
	st := replyState{seq: seq, pid: c.pid, dump: dump, each: each}
	for range maxDatagrams {
		n, err := c.recv()
		if err != nil {
			c.dirty = true
			return err
		}
		done, err := st.datagram(c.buf[:n])
		if done {
			// A reply cut short by a malformed message may have more
			// datagrams coming.
			c.dirty = errors.Is(err, ErrMalformed)
			return err
		}
	}
	c.dirty = true
	return fmt.Errorf("receive: more than %d datagrams: %w", maxDatagrams, ErrMalformed)
}

// drain reads and drops whatever is queued on the socket, so that a reply
// left unfinished (a timeout, a malformed datagram) neither confuses the
// next request nor keeps a dump running in the kernel, which would refuse
// the next dump with EBUSY: every read lets the kernel send the next part
// of a running dump. The caller holds c.mu.
func (c *Conn) drain() {
	for range maxDatagrams {
		_, _, _, _, err := unix.Recvmsg(c.fd, c.buf, nil, unix.MSG_DONTWAIT)
		if err != nil && !errors.Is(err, unix.EINTR) {
			break // EAGAIN: nothing left
		}
	}
	c.dirty = false
}

// replyState follows the reply to one request, datagram by datagram,
// without I/O.
type replyState struct {
	seq, pid    uint32 // of the request
	dump        bool   // the reply ends with NLMSG_DONE, not an ack
	each        func(message) error
	interrupted bool  // a message carried NLM_F_DUMP_INTR
	firstErr    error // of each; later messages are read but not passed on
}

// datagram handles one datagram of the reply. It reports done when the
// reply is over (or cannot be followed any further) and then the request's
// result. Messages of other sequence numbers or port ids are skipped.
func (s *replyState) datagram(b []byte) (done bool, err error) {
	msgs, err := parseMessages(b)
	if err != nil {
		return true, err
	}
	for _, m := range msgs {
		if m.Seq != s.seq || m.Pid != s.pid {
			continue
		}
		switch m.Type {
		case unix.NLMSG_NOOP:
			continue
		case unix.NLMSG_ERROR:
			r, err := parseError(m.header, m.data)
			if err != nil {
				return true, err
			}
			if r.errno != 0 {
				return true, kernelError(r)
			}
			if s.dump {
				continue // an ack is not the end of a dump
			}
			return true, s.firstErr
		case unix.NLMSG_DONE:
			r, err := parseDone(m.header, m.data)
			if err != nil {
				return true, err
			}
			if r.errno != 0 {
				return true, kernelError(r)
			}
			if s.interrupted && s.firstErr == nil {
				return true, errDumpInterrupted
			}
			return true, s.firstErr
		case unix.NLMSG_OVERRUN:
			return true, fmt.Errorf("receive: overrun: %w", ErrMalformed)
		}
		if m.Flags&unix.NLM_F_DUMP_INTR != 0 {
			s.interrupted = true
		}
		if s.each != nil && s.firstErr == nil {
			s.firstErr = s.each(m)
		}
	}
	return false, nil
}

// dump runs a dump request, retrying while the kernel reports it
// interrupted. reset is called before every attempt so that each can
// start from an empty result.
func (c *Conn) dump(typ uint16, fixed []byte, attrs func(*request), reset func(), each func(message) error) error {
	for range dumpAttempts {
		reset()
		err := c.exchange(typ, unix.NLM_F_DUMP, fixed, attrs, each)
		if !errors.Is(err, errDumpInterrupted) {
			return err
		}
	}
	return fmt.Errorf("dump: %d attempts: %w", dumpAttempts, ErrInterrupted)
}

// recv reads one datagram from the kernel into c.buf, waiting at most
// c.timeout. The caller holds c.mu.
func (c *Conn) recv() (int, error) {
	deadline := time.Now().Add(c.timeout)
	for range maxWakeups {
		wait := time.Until(deadline)
		if wait <= 0 {
			break
		}
		fds := []unix.PollFd{{Fd: int32(c.fd), Events: unix.POLLIN}}
		ready, err := unix.Poll(fds, int(wait.Milliseconds())+1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("receive: poll: %w: %w", ErrSocket, err)
		}
		if ready == 0 {
			continue
		}
		n, _, rflags, from, err := unix.Recvmsg(c.fd, c.buf, nil, unix.MSG_DONTWAIT)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("receive: %w: %w", ErrSocket, err)
		}
		if rflags&unix.MSG_TRUNC != 0 {
			return 0, fmt.Errorf("receive: datagram larger than %d bytes: %w", len(c.buf), ErrMalformed)
		}
		if sa, ok := from.(*unix.SockaddrNetlink); !ok || sa.Pid != 0 {
			continue // not from the kernel
		}
		return n, nil
	}
	return 0, fmt.Errorf("receive: %v: %w", c.timeout, ErrTimeout)
}

// kernelError maps a refusal to this package's errors, wrapping the errno.
func kernelError(r kernelReply) error {
	var kind error
	switch r.errno {
	case unix.EEXIST:
		kind = ErrExists
	case unix.ESRCH, unix.ENODEV, unix.EADDRNOTAVAIL:
		kind = ErrNotFound
	case unix.EPERM, unix.EACCES:
		kind = ErrPermission
	default:
		kind = ErrRefused
	}
	if r.msg != "" {
		return fmt.Errorf("%w (%w: %q)", kind, r.errno, r.msg)
	}
	return fmt.Errorf("%w (%w)", kind, r.errno)
}
