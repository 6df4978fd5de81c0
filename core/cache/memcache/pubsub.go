package memcache

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/avonzt/avon/core/cache"
)

// subscription is one subscriber on the bus.
type subscription struct {
	c        *Cache
	channels []string
	ch       chan cache.Message
	gaps     chan struct{}
	dropped  atomic.Uint64
	once     sync.Once
}

func (s *subscription) C() <-chan cache.Message { return s.ch }
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

// close leaves the bus and closes the channel; Publish sends under the bus
// lock, so nothing is sent on the closed channel.
func (s *subscription) close() {
	s.once.Do(func() {
		b := s.c.b
		b.bus.Lock()
		for _, name := range s.channels {
			set := b.bus.subs[name]
			delete(set, s)
			if len(set) == 0 {
				delete(b.bus.subs, name)
			}
		}
		close(s.ch)
		b.bus.Unlock()
	})
}

// deliver hands m to s without blocking. The caller holds the bus lock.
func (s *subscription) deliver(m cache.Message) {
	select {
	case s.ch <- m:
	default:
		s.dropped.Add(1)
		select {
		case s.gaps <- struct{}{}:
		default:
		}
	}
}

// Subscribe implements cache.Cache.
func (c *Cache) Subscribe(ctx context.Context, channels ...string) (cache.Subscription, error) {
	chs, err := cache.CheckChannels(channels)
	if err != nil {
		return nil, err
	}
	if err := c.begin(ctx); err != nil {
		return nil, err
	}
	s := &subscription{
		c:        c,
		channels: chs,
		ch:       make(chan cache.Message, c.b.opts.SubscriberBuffer),
		gaps:     make(chan struct{}, 1),
	}
	// Join the bus while holding the view's lock, so a concurrent Close
	// either sees s (and closes it) or makes this call fail.
	c.subs.Lock()
	defer c.subs.Unlock()
	if c.subs.set == nil {
		return nil, fmt.Errorf("memcache: %w", cache.ErrClosed)
	}
	c.subs.set[s] = struct{}{}
	b := c.b
	b.bus.Lock()
	for _, name := range chs {
		set := b.bus.subs[name]
		if set == nil {
			set = make(map[*subscription]struct{})
			b.bus.subs[name] = set
		}
		set[s] = struct{}{}
	}
	b.bus.Unlock()
	return s, nil
}

// Publish implements cache.Cache. It never blocks on a slow subscriber.
func (c *Cache) Publish(ctx context.Context, channel string, msg []byte) error {
	if err := cache.ValidateName("channel", channel); err != nil {
		return err
	}
	if err := cache.CheckValue(msg); err != nil {
		return err
	}
	if err := c.begin(ctx); err != nil {
		return err
	}
	b := c.b
	b.bus.Lock()
	defer b.bus.Unlock()
	for s := range b.bus.subs[channel] {
		s.deliver(cache.Message{Channel: channel, Payload: clone(msg)})
	}
	return nil
}
