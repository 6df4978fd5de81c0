package redis

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/avonzt/avon/core/cache"
)

// Reconnection backoff of a subscription.
const (
	minBackoff = 50 * time.Millisecond
	maxBackoff = time.Second
)

// subscription is one Subscribe. Its goroutine (run) owns the reading side
// of ps and the sending side of out; Close stops it and waits for it.
type subscription struct {
	c        *Cache
	channels []string // full channel names, prefix included
	out      chan cache.Message
	gaps     chan struct{}
	done     chan struct{} // closed by close
	exited   chan struct{} // closed when run returns
	dropped  atomic.Uint64

	// mu guards ps and closed: close swaps nothing, it closes ps to unblock
	// a read in progress; run replaces ps after a reconnect.
	mu     sync.Mutex
	ps     *goredis.PubSub
	closed bool
}

func (s *subscription) C() <-chan cache.Message { return s.out }
func (s *subscription) Gaps() <-chan struct{}   { return s.gaps }

// Dropped returns how many messages were dropped on a full buffer.
func (s *subscription) Dropped() uint64 { return s.dropped.Load() }

// Close implements cache.Subscription.
func (s *subscription) Close() error {
	s.c.subs.Lock()
	delete(s.c.subs.set, s)
	s.c.subs.Unlock()
	s.close()
	return nil
}

func (s *subscription) close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		<-s.exited
		return
	}
	s.closed = true
	close(s.done)
	ps := s.ps
	s.mu.Unlock()
	if ps != nil {
		_ = ps.Close()
	}
	<-s.exited
}

// Subscribe implements cache.Cache.
func (c *Cache) Subscribe(ctx context.Context, channels ...string) (cache.Subscription, error) {
	names, err := cache.CheckChannels(channels)
	if err != nil {
		return nil, err
	}
	if err := c.begin(ctx); err != nil {
		return nil, err
	}
	s := &subscription{
		c:      c,
		out:    make(chan cache.Message, c.opts.SubscriberBuffer),
		gaps:   make(chan struct{}, 1),
		done:   make(chan struct{}),
		exited: make(chan struct{}),
	}
	for _, n := range names {
		s.channels = append(s.channels, c.channel(n))
	}
	ps, err := s.connect(ctx)
	if err != nil {
		return nil, err
	}
	s.ps = ps

	c.subs.Lock()
	if c.subs.set == nil {
		c.subs.Unlock()
		_ = ps.Close()
		return nil, fmt.Errorf("redis %s: subscribe: %w", c.opts.Addr, cache.ErrClosed)
	}
	c.subs.set[s] = struct{}{}
	c.subs.Unlock()
	go s.run()
	return s, nil
}

// connect subscribes on a new connection and waits until the server has
// confirmed every channel, so that messages published afterwards reach it.
func (s *subscription) connect(ctx context.Context) (*goredis.PubSub, error) {
	c := s.c
	ctx, cancel := context.WithTimeout(ctx, c.opts.DialTimeout+c.opts.WriteTimeout+c.opts.ReadTimeout)
	defer cancel()
	ps := c.client.Subscribe(ctx, s.channels...)
	pending := make(map[string]bool, len(s.channels))
	for _, ch := range s.channels {
		pending[ch] = true
	}
	for len(pending) > 0 {
		msg, err := ps.ReceiveTimeout(ctx, c.opts.ReadTimeout)
		if err != nil {
			_ = ps.Close()
			return nil, c.fail(ctx, "subscribe", err)
		}
		switch m := msg.(type) {
		case *goredis.Subscription:
			if m.Kind == "subscribe" {
				delete(pending, m.Channel)
			}
		case *goredis.Message:
			// Cannot arrive before its channel's confirmation; deliver
			// nothing here to keep the order simple.
		}
	}
	return ps, nil
}

// run reads messages until Close, reconnecting on any failure.
func (s *subscription) run() {
	defer close(s.exited)
	defer close(s.out)
	c := s.c
	pinged := false // a health PING is waiting for its reply
	for {
		s.mu.Lock()
		ps, closed := s.ps, s.closed
		s.mu.Unlock()
		if closed {
			return
		}
		msg, err := ps.ReceiveTimeout(context.Background(), c.opts.HealthInterval)
		if err != nil {
			if s.isClosed() {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && !pinged {
				ctx, cancel := context.WithTimeout(context.Background(), c.opts.WriteTimeout)
				err = ps.Ping(ctx)
				cancel()
				if err == nil {
					pinged = true
					continue
				}
			}
			// The connection is dead or hung: start over on a new one.
			_ = ps.Close()
			if !s.reconnect() {
				return
			}
			pinged = false
			s.gap()
			continue
		}
		pinged = false // any reply shows the connection is alive
		if m, ok := msg.(*goredis.Message); ok {
			name, _ := strings.CutPrefix(m.Channel, c.opts.KeyPrefix+"ch:")
			s.deliver(cache.Message{Channel: name, Payload: []byte(m.Payload)})
		}
	}
}

func (s *subscription) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// reconnect subscribes again, backing off between attempts, until it
// succeeds (true) or the subscription is closed (false).
func (s *subscription) reconnect() bool {
	backoff := minBackoff
	for {
		timer := time.NewTimer(backoff)
		select {
		case <-s.done:
			timer.Stop()
			return false
		case <-timer.C:
		}
		// Close cancels an attempt in progress.
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			select {
			case <-s.done:
				cancel()
			case <-ctx.Done():
			}
		}()
		ps, err := s.connect(ctx)
		cancel()
		if err == nil {
			s.mu.Lock()
			if s.closed {
				s.mu.Unlock()
				_ = ps.Close()
				return false
			}
			s.ps = ps
			s.mu.Unlock()
			return true
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// deliver hands m to the consumer without blocking; a full buffer drops it.
func (s *subscription) deliver(m cache.Message) {
	select {
	case s.out <- m:
	default:
		s.dropped.Add(1)
		s.gap()
	}
}

func (s *subscription) gap() {
	select {
	case s.gaps <- struct{}{}:
	default:
	}
}
