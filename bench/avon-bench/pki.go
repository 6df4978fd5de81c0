package main

import (
	"github.com/avonzt/avon/core/handshake/handshaketest"
)

// The benchmark's PKI: keys derived from labels, so the gateway child
// derives the gateway's key itself and only needs the root certificate.
const (
	labelPrefix = "avon-bench key: "
	pkiName     = "AVON Bench"
)

// gatewayKey is the gateway's ML-DSA-65 key.
func gatewayKey() *handshaketest.Key { return handshaketest.KeyFromLabel(labelPrefix + "gateway") }

// agentKey is agent id's ML-DSA-65 key.
func agentKey(id string) *handshaketest.Key {
	return handshaketest.KeyFromLabel(labelPrefix + "agent " + id)
}
