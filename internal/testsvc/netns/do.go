package netns

import (
	"errors"
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

// Do runs fn on the calling goroutine with its OS thread switched into the
// namespace, then switches the thread back and returns fn's error.
//
// Sockets, TUN devices and netlink sockets created by fn belong to the
// namespace for their whole life and keep working after Do returns, from
// any goroutine. Goroutines fn starts do not run in the namespace, nor does
// anything that resolves names or dials through a helper goroutine: create
// the file descriptor in fn itself. Calls that look an interface up by name
// in the calling thread's namespace must run inside Do as well; wireguard-go's
// tun.Device.MTU is one. Do may nest, also across namespaces.
//
// If the thread cannot be switched back, Do returns an error wrapping
// ErrSwitch and leaves the goroutine locked to the thread, so the runtime
// destroys that thread when the goroutine exits instead of reusing it in the
// wrong namespace. Such a goroutine must end soon: in a test, t.Fatal.
// If fn panics the thread is switched back before the panic goes on.
func (ns *NS) Do(fn func() error) (err error) {
	if fn == nil {
		return fmt.Errorf("%w: nil function", ErrInvalid)
	}
	target, err := unix.Open(ns.Path(), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("%w: open %s: %v", ErrSwitch, ns.Path(), err)
	}
	defer unix.Close(target)

	runtime.LockOSThread()
	// The thread's own namespace: other threads of this process may differ.
	orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("%w: open the current namespace: %v", ErrSwitch, err)
	}
	defer unix.Close(orig)
	if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("%w: enter %s: %v", ErrSwitch, ns.name, err)
	}
	defer func() {
		if rerr := unix.Setns(orig, unix.CLONE_NEWNET); rerr != nil {
			// Stay locked: the thread dies with the goroutine.
			err = errors.Join(err, fmt.Errorf("%w: leave %s: %v", ErrSwitch, ns.name, rerr))
			return
		}
		runtime.UnlockOSThread()
	}()
	return fn()
}
