package adminapi

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
)

// PeerCred is the kernel's account of the process at the other end of a
// unix socket (SO_PEERCRED).
type PeerCred struct {
	UID, GID uint32
	PID      int32
}

type peerCredKey struct{}

// PeerConnContext is an http.Server ConnContext for a unix socket listener:
// it records the peer's credentials from the kernel in the connection's
// context, where PeerCredAuthenticator finds them. On other connections,
// or where the kernel does not tell, it records nothing (and the
// authenticator refuses).
func PeerConnContext(ctx context.Context, c net.Conn) context.Context {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return ctx
	}
	cred, ok := peerCred(uc)
	if !ok {
		return ctx
	}
	return context.WithValue(ctx, peerCredKey{}, cred)
}

// PeerCredOf returns the credentials PeerConnContext recorded.
func PeerCredOf(ctx context.Context) (PeerCred, bool) {
	c, ok := ctx.Value(peerCredKey{}).(PeerCred)
	return c, ok
}

// PeerCredAuthenticator authenticates the callers of the local admin
// socket by their uid as the kernel reports it. The socket is 0600 in the
// 0700 data dir, so only the core's own user and root can connect at all;
// this check is the second wall. A caller whose uid is allowed holds every
// scope; its Actor is "local-admin:uid=U,pid=P".
type PeerCredAuthenticator struct {
	// UIDs allowed; empty means root and the core's own uid.
	UIDs []uint32
}

// Authenticate implements Authenticator.
func (a PeerCredAuthenticator) Authenticate(r *http.Request, _ Scope) (Principal, error) {
	cred, ok := PeerCredOf(r.Context())
	if !ok {
		return Principal{}, fmt.Errorf("%w: no peer credentials on this connection", ErrUnauthenticated)
	}
	allowed := a.UIDs
	if len(allowed) == 0 {
		allowed = []uint32{0, uint32(os.Getuid())}
	}
	if !slices.Contains(allowed, cred.UID) {
		return Principal{}, fmt.Errorf("%w: uid %d may not administer this core", ErrForbidden, cred.UID)
	}
	return Principal{Actor: fmt.Sprintf("local-admin:uid=%d,pid=%d", cred.UID, cred.PID), Scopes: []Scope{ScopeRead, ScopeWrite}}, nil
}

var _ Authenticator = PeerCredAuthenticator{}
