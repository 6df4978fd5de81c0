package pluginhost

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Invoke implements grpc.ClientConnInterface over the current process.
// A call while no process serves fails at once with *UnavailableError; a
// call in flight when the process dies ends with it. Every call is counted
// and timed per method.
func (i *Instance) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	mm := i.metrics.method(method)
	g := i.gen.Load()
	if g == nil {
		mm.calls.Inc()
		mm.errors.Inc()
		return &UnavailableError{Plugin: i.id, State: i.currentState()}
	}
	ctx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(g.ctx, func() { cancel(context.Cause(g.ctx)) })
	start := time.Now()
	err := g.conn.Invoke(ctx, method, args, reply, opts...)
	mm.latency.Observe(time.Since(start).Seconds())
	stop()
	mm.calls.Inc()
	if err != nil {
		mm.errors.Inc()
		err = i.transportError(ctx, g, err)
	}
	cancel(nil)
	return err
}

// NewStream implements grpc.ClientConnInterface. No AVON protocol streams
// yet; the method keeps the same fail-fast and lifetime rules.
func (i *Instance) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	g := i.gen.Load()
	if g == nil {
		return nil, &UnavailableError{Plugin: i.id, State: i.currentState()}
	}
	ctx, cancel := context.WithCancelCause(ctx)
	context.AfterFunc(g.ctx, func() { cancel(context.Cause(g.ctx)) })
	s, err := g.conn.NewStream(ctx, desc, method, opts...)
	if err != nil {
		cancel(nil)
		return nil, i.transportError(ctx, g, err)
	}
	return s, nil
}

// transportError turns a failure of the process or the connection into an
// *UnavailableError naming the plugin and wakes the supervisor. Errors the
// plugin returned in-band pass through for the shim to decode.
func (i *Instance) transportError(ctx context.Context, g *generation, err error) error {
	var ue *UnavailableError
	if cause := context.Cause(ctx); errors.As(cause, &ue) {
		return ue
	}
	if st, ok := status.FromError(err); ok && st.Code() == codes.Unavailable && !hasErrorInfo(st) {
		select {
		case i.wake <- struct{}{}:
		default:
		}
		return &UnavailableError{Plugin: i.id, State: i.currentState(), Cause: err}
	}
	return err
}

func hasErrorInfo(st *status.Status) bool { return len(st.Details()) > 0 }

var _ grpc.ClientConnInterface = (*Instance)(nil)
