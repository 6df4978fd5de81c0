package host_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/avonzt/avon/sdk/errdef"
	"github.com/avonzt/avon/sdk/host"
	"github.com/avonzt/avon/sdk/plugintest"
	hostv1 "github.com/avonzt/avon/sdk/proto/host/v1"
)

// serve registers impl on a gRPC server on loopback and returns a client
// Host over it, the way a plugin sees the core.
func serve(t *testing.T, register func(*grpc.Server)) host.Host {
	t.Helper()
	return host.NewClient(dial(t, register), nil)
}

// dial serves register on a gRPC server on loopback (with opts) and
// returns a connection to it.
func dial(t testing.TB, register func(*grpc.Server), opts ...grpc.ServerOption) *grpc.ClientConn {
	t.Helper()
	return plugintest.Dial(t, register, opts...)
}

func TestCacheMemHost(t *testing.T) {
	h := plugintest.NewHost()
	plugintest.CacheSuite(t, h.Cache(), h.Cache())
}

func TestCacheOverGRPC(t *testing.T) {
	h := plugintest.NewHost()
	a := serve(t, func(s *grpc.Server) { host.Register(s, h) })
	b := serve(t, func(s *grpc.Server) { host.Register(s, h) })
	plugintest.CacheSuite(t, a.Cache(), b.Cache())
}

func TestCacheUnavailableCrossesTheWire(t *testing.T) {
	h := plugintest.NewHost()
	c := serve(t, func(s *grpc.Server) { host.Register(s, h) }).Cache()
	h.SetCacheFailure(true)
	if _, err := c.Consume(context.Background(), "n"); !errors.Is(err, host.ErrCacheUnavailable) {
		t.Fatalf("Consume with the cache down = %v, want ErrCacheUnavailable", err)
	}
	h.SetCacheFailure(false)
	if _, err := c.Consume(context.Background(), "n"); !errors.Is(err, host.ErrCacheMiss) {
		t.Fatalf("Consume = %v, want ErrCacheMiss", err)
	}
}

// A core older than host protocol minor 2 lacks the cache RPCs: the plugin
// sees errdef.ErrNotImplemented.
func TestCacheAgainstOlderCore(t *testing.T) {
	c := serve(t, func(s *grpc.Server) { hostv1.RegisterHostServer(s, hostv1.UnimplementedHostServer{}) }).Cache()
	_, err := c.Put(context.Background(), "k", nil, host.CachePutOptions{TTL: time.Second})
	if !errors.Is(err, errdef.ErrNotImplemented) {
		t.Fatalf("Put against an older core = %v, want ErrNotImplemented", err)
	}
}
