package pluginhost

import (
	"context"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Invoke implements grpc.ClientConnInterface over the current process.
// A call while no process serves fails at once with *UnavailableError. A
// call in flight when the process dies or is killed ends with it: the
// process's socket closes (or the host closes the connection), gRPC fails
// the call, and transportError names the plugin. No per-call context is
// derived: that would cost more than the rest of the host's overhead.
// Every call is counted and timed per method.
func (i *Instance) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	mm := i.metrics.method(method)
	mm.calls.Inc()
	g := i.gen.Load()
	if g == nil {
		mm.errors.Inc()
		return &UnavailableError{Plugin: i.id, State: i.currentState()}
	}
	start := time.Now()
	err := g.conn.Invoke(ctx, method, args, reply, opts...)
	mm.latency.Observe(time.Since(start).Seconds())
	if err != nil {
		mm.errors.Inc()
		err = i.transportError(ctx, g, err)
	}
	return err
}

// NewStream implements grpc.ClientConnInterface. No AVON protocol streams
// yet; the method keeps the same fail-fast and lifetime rules.
func (i *Instance) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	g := i.gen.Load()
	if g == nil {
		return nil, &UnavailableError{Plugin: i.id, State: i.currentState()}
	}
	s, err := g.conn.NewStream(ctx, desc, method, opts...)
	if err != nil {
		return nil, i.transportError(ctx, g, err)
	}
	return s, nil
}

// transportError turns a failure of the process or the connection into an
// *UnavailableError naming the plugin and wakes the supervisor. Errors the
// plugin returned in-band pass through for the shim to decode.
func (i *Instance) transportError(ctx context.Context, g *generation, err error) error {
	st, ok := status.FromError(err)
	if !ok || hasErrorInfo(st) {
		return err // in-band plugin error, or not from gRPC
	}
	gone := st.Code() == codes.Unavailable ||
		// The host closed the connection (kill, stop) under a live caller.
		(st.Code() == codes.Canceled && ctx.Err() == nil) ||
		g.ctx.Err() != nil
	if !gone {
		return err
	}
	select {
	case i.wake <- struct{}{}:
	default:
	}
	return &UnavailableError{Plugin: i.id, State: i.currentState(), Cause: err}
}

func hasErrorInfo(st *status.Status) bool { return len(st.Details()) > 0 }

var _ grpc.ClientConnInterface = (*Instance)(nil)
