//go:build !linux

package adminapi

import "net"

// peerCred is unsupported here: the admin socket refuses every caller.
func peerCred(*net.UnixConn) (PeerCred, bool) { return PeerCred{}, false }
