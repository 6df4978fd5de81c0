package handshake

import "golang.org/x/crypto/curve25519"

func x25519(scalar, point []byte) ([]byte, error) { return curve25519.X25519(scalar, point) }
