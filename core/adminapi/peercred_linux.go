package adminapi

import (
	"net"

	"golang.org/x/sys/unix"
)

func peerCred(c *net.UnixConn) (PeerCred, bool) {
	raw, err := c.SyscallConn()
	if err != nil {
		return PeerCred{}, false
	}
	var cred *unix.Ucred
	if err := raw.Control(func(fd uintptr) { cred, _ = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) }); err != nil || cred == nil {
		return PeerCred{}, false
	}
	return PeerCred{UID: cred.Uid, GID: cred.Gid, PID: cred.Pid}, true
}
