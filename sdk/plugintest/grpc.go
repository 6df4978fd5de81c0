package plugintest

import (
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/avonzt/avon/sdk/host"
)

// Dial serves what register registers on a gRPC server on loopback (with
// opts) for the life of the test and returns a connection to it.
func Dial(t testing.TB, register func(*grpc.Server), opts ...grpc.ServerOption) *grpc.ClientConn {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(opts...)
	register(srv)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// ServeHost serves h as the host service on loopback gRPC, as the core
// does over the broker, and returns the connection a plugin's
// host.NewClient would use.
func ServeHost(t testing.TB, h host.Host, opts ...grpc.ServerOption) *grpc.ClientConn {
	t.Helper()
	return Dial(t, func(s *grpc.Server) { host.Register(s, h) }, opts...)
}
